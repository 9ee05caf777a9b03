"""Training experiments that test the papers' claims (small scale, CPU, deterministic from a seed).

* :mod:`verify.experiments.wang_e_model` — the model family of Wang & E's hypothesis class (L layers, H heads, FFN
  width m or none, DP or DP-free attention, lin/log-type or T5-bucket RPE) and its seeded trainer.
* :mod:`verify.experiments.wang_e_tasks` — the synthetic targets (sparse Boolean, complex readout, memory kernels)
  and the language-modelling stand-in.
* :mod:`verify.experiments.wang_e` — Tables 2-8: grids, seeds, aggregation, JSON and plots
  (``hmmtx experiment wang-e``).
"""
