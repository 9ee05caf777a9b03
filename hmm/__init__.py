"""hmmtx HMM core: the model type, validation, exact references, mixtures, sampling, zoo and diagnostics."""

from hmm.errors import HmmtxError
from hmm.model import HMM, validate_tokens
from hmm.reference import (
    FilterResult,
    brute_force_filter,
    forward_filter,
    forward_filter_exact,
    forward_filter_torch,
    sequence_probability_exact,
)

__all__ = [
    "HmmtxError",
    "HMM",
    "validate_tokens",
    "FilterResult",
    "forward_filter",
    "forward_filter_torch",
    "forward_filter_exact",
    "sequence_probability_exact",
    "brute_force_filter",
]

from hmm.mixture import HMMMixture, MixtureResult, bayes_predictive, bayes_predictive_exact  # noqa: E402

__all__ += ["HMMMixture", "MixtureResult", "bayes_predictive", "bayes_predictive_exact"]
