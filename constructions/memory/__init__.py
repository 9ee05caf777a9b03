"""Memory-kernel constructions of Wang & E (2024), W1 (fixed sparse memories) and W3 (kernel memories).

A reconstruction in the spirit of Wang & E (NeurIPS 2024, arXiv 2402.00522); see ``docs/constructions/memory_kernels.md``.

* :mod:`constructions.memory.kernels`: DP-free lin/log RPE head kernels, target kernels, fitted output weights
  (float64 Chebyshev fit, exact monomial weights), the exact l1 error with tail bound.
* :mod:`constructions.memory.t5`: T5's bucketed relative position (the paper's Table 1).
* :mod:`constructions.memory.rates`: error-vs-H sweeps and fitted rates (``hmmtx memory-table``).
* :mod:`constructions.memory.model`: the single-layer DP-free Transformer (torch) for W1/W3 with its bound.
"""
