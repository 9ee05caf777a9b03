"""hmmtx HMM core: the model type, validation, exact references, mixtures, sampling, zoo and diagnostics.

Conventions (dynamax / hmmlearn names, time 0-indexed): ``initial_probs`` (S,), ``transition_matrix`` A (S, S)
with ``A[i, j] = P(z_{t+1}=j | z_t=i)``, ``emission_probs`` B (S, V). See docs/hmm.md.
"""

from hmm import diagnostics, zoo
from hmm.errors import HmmtxError
from hmm.mealy import MealyHMM, mealy_forward_filter, mealy_to_moore, moore_to_mealy
from hmm.mixture import HMMMixture, MixtureResult, bayes_predictive, bayes_predictive_exact
from hmm.model import HMM, validate_tokens
from hmm.reference import (
    FilterResult,
    brute_force_filter,
    forward_filter,
    forward_filter_exact,
    forward_filter_torch,
    sequence_probability_exact,
)
from hmm.sampling import ContextSample, Sample, TrainingArrays, context_training_arrays, sample, sample_contexts
from hmm.window import a_posteriori_bound, a_priori_bound, window_curve, window_filter, window_filter_exact

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
    "HMMMixture",
    "MixtureResult",
    "bayes_predictive",
    "bayes_predictive_exact",
    "Sample",
    "ContextSample",
    "TrainingArrays",
    "sample",
    "sample_contexts",
    "context_training_arrays",
    "MealyHMM",
    "moore_to_mealy",
    "mealy_to_moore",
    "mealy_forward_filter",
    "window_filter",
    "window_filter_exact",
    "a_priori_bound",
    "a_posteriori_bound",
    "window_curve",
    "diagnostics",
    "zoo",
]
