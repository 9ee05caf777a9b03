"""hmmtx verification: comparisons, bounds bookkeeping, sweeps, probes, reports and the CLI."""
