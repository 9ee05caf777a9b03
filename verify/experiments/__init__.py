"""Training experiments that test the papers' claims (small scale, CPU, deterministic from a seed).

* :mod:`verify.experiments.wang_e_model` — the model family of Wang & E's hypothesis class (L layers, H heads, FFN
  width m or none, DP or DP-free attention, lin/log-type or T5-bucket RPE) and its seeded trainer.
* :mod:`verify.experiments.wang_e_tasks` — the synthetic targets (sparse Boolean, complex readout, memory kernels)
  and the language-modelling stand-in.
* :mod:`verify.experiments.wang_e` — Tables 2-8: grids, seeds, aggregation, JSON and plots
  (``hmmtx experiment wang-e``).

Experiment grids (``hmmtx experiment grid`` / ``table``): training + probing runs (configs x seeds) described in one
file, run resumably on local worker processes or a Dask distributed cluster, aggregated over seeds with t-based
confidence intervals:

* :mod:`verify.experiments.spec` — the grid file; :mod:`verify.experiments.work` — one run, executed in a worker;
  :mod:`verify.experiments.runner` — scheduling, the result store, progress bars;
  :mod:`verify.experiments.tables` and :mod:`verify.experiments.markdown` — aggregation over seeds.
"""
