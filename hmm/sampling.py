"""Seeded, batched sampling from HMMs and from mixtures of HMMs in the in-context (SEP) format.

Everything is vectorised over sequences (a Python loop runs over time steps only, and over tasks for mixtures).
Randomness comes from one ``numpy.random.Generator`` (``seed`` may be an int or a Generator); the same int seed
gives the same sample. Draws use inverse-CDF sampling with one uniform per sequence and step; zero-probability
entries can never be drawn (the CDF is forced to exactly 1 from the last positive entry on, so float round-off in
the cumulative sum cannot select a trailing zero-probability state).

Draw order (documented so that other code can reproduce it): ``z_0``; then for ``t = 0..T-1``: ``x_t``, and
``z_{t+1}`` for ``t < T-1``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.mixture import SEP, HMMMixture
from hmm.model import HMM


class Sample(NamedTuple):
    """N sampled sequences of length T.

    Fields:
        states: (N, T) int64 hidden states ``z_t``
        tokens: (N, T) int64 observations ``x_t``
    """

    states: np.ndarray
    tokens: np.ndarray


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HmmtxError(f"seed must be a non-negative integer or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise HmmtxError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _cdf(P: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sums (float64), set to exactly 1.0 from each row's last positive entry on."""
    P = np.asarray(P, dtype=np.float64)
    C = np.cumsum(P, axis=-1)
    n = P.shape[-1]
    last = n - 1 - np.argmax((P > 0)[..., ::-1], axis=-1)  # index of the last positive entry per row
    C[np.arange(n) >= last[..., None]] = 1.0
    return C


def _draw(cdf_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse CDF: index k with ``cdf[k-1] <= u < cdf[k]`` for each row (cdf_rows (N, n), u (N,))."""
    return (cdf_rows <= u[:, None]).sum(axis=1).astype(np.int64)


def sample(hmm: HMM, num_sequences: int, length: int, seed: Any = 0) -> Sample:
    """Draw ``num_sequences`` independent sequences of ``length`` steps from ``hmm``.

    Args:
        hmm: the model (exact models are sampled with their float64 probabilities).
        num_sequences: N >= 1.
        length: T >= 1.
        seed: int or ``numpy.random.Generator``.

    Returns:
        :class:`Sample` with ``states`` and ``tokens`` of shape (N, T).
    """
    if not isinstance(hmm, HMM):
        raise HmmtxError(f"sample: expected an HMM, got {type(hmm).__name__}")
    N = _count(num_sequences, "num_sequences")
    T = _count(length, "length")
    rng = _rng(seed)
    pi, A, B = hmm.arrays(np.float64)
    c_pi, c_A, c_B = _cdf(pi), _cdf(A), _cdf(B)
    states = np.empty((N, T), dtype=np.int64)
    tokens = np.empty((N, T), dtype=np.int64)
    z = _draw(np.broadcast_to(c_pi, (N, len(pi))), rng.random(N))
    for t in range(T):
        states[:, t] = z
        tokens[:, t] = _draw(c_B[z], rng.random(N))
        if t < T - 1:
            z = _draw(c_A[z], rng.random(N))
    return Sample(states, tokens)


class ContextSample(NamedTuple):
    """N in-context sequences ``BOS demo_1 SEP ... SEP demo_D SEP test`` from a mixture (task fixed per context).

    Fields:
        tasks:       (N,)       task index k of each context
        demo_tokens: (N, D, L)  observations of the D demonstrations (each of length L)
        demo_states: (N, D, L)  their hidden states (ids local to the context's task)
        test_tokens: (N, Lt)    observations of the test segment
        test_states: (N, Lt)    its hidden states

    The hidden state is redrawn from the task's ``initial_probs`` at the start of every segment (SEP resets it),
    exactly as :mod:`hmm.mixture` assumes.
    """

    tasks: np.ndarray
    demo_tokens: np.ndarray
    demo_states: np.ndarray
    test_tokens: np.ndarray
    test_states: np.ndarray

    @property
    def num_contexts(self) -> int:
        return int(self.tasks.shape[0])

    def segments(self, n: int) -> list[np.ndarray]:
        """Context ``n`` as the list of segments that :func:`hmm.mixture.bayes_predictive` takes."""
        return [d for d in self.demo_tokens[n]] + [self.test_tokens[n]]


def sample_contexts(
    mixture: HMMMixture,
    num_contexts: int,
    num_demos: int,
    demo_len: int,
    test_len: int,
    seed: Any = 0,
) -> ContextSample:
    """Sample contexts: ``k ~ task_prior``, then ``num_demos`` demonstrations of ``demo_len`` steps and one test
    segment of ``test_len`` steps, all from ``tasks[k]``, each segment started afresh from ``initial_probs``.

    Shapes: see :class:`ContextSample`. ``num_demos`` may be 0 (the context is the test segment alone).
    Vectorised: one batched :func:`sample` call per task and segment kind.
    """
    if not isinstance(mixture, HMMMixture):
        raise HmmtxError(f"sample_contexts: expected an HMMMixture, got {type(mixture).__name__}")
    N = _count(num_contexts, "num_contexts")
    D = _count(num_demos, "num_demos", minimum=0)
    L = _count(demo_len, "demo_len")
    Lt = _count(test_len, "test_len")
    rng = _rng(seed)
    rho = np.array(mixture.task_prior.tolist(), dtype=np.float64)
    tasks = _draw(np.broadcast_to(_cdf(rho), (N, len(rho))), rng.random(N))
    demo_tokens = np.zeros((N, D, L), dtype=np.int64)
    demo_states = np.zeros((N, D, L), dtype=np.int64)
    test_tokens = np.zeros((N, Lt), dtype=np.int64)
    test_states = np.zeros((N, Lt), dtype=np.int64)
    for k, h in enumerate(mixture.tasks):
        idx = np.nonzero(tasks == k)[0]
        if idx.size == 0:
            continue
        if D:
            s = sample(h, idx.size * D, L, rng)
            demo_tokens[idx] = s.tokens.reshape(idx.size, D, L)
            demo_states[idx] = s.states.reshape(idx.size, D, L)
        s = sample(h, idx.size, Lt, rng)
        test_tokens[idx] = s.tokens
        test_states[idx] = s.states
    return ContextSample(tasks, demo_tokens, demo_states, test_tokens, test_states)


class TrainingArrays(NamedTuple):
    """Flat arrays for training a sequence model on in-context data (N contexts, flattened length Lf).

    Layout of each row of ``tokens``: ``[BOS, demo_1 (L), SEP, demo_2, SEP, ..., demo_D, SEP, test (Lt)]``, so
    ``Lf = 1 + D (L + 1) + Lt``. Vocabulary: observations ``0..V-1``, ``sep_id = V``, ``bos_id = V + 1``.

    Fields:
        tokens:      (N, Lf) int64 model inputs/targets (train on ``tokens[:, :-1] -> tokens[:, 1:]``)
        target_mask: (N, Lf) bool, True where ``tokens[:, t]`` is an observation (SEP and BOS are deterministic;
                     mask them out of the loss if desired)
        segment_ids: (N, Lf) int64, segment index (BOS counts as segment 0, a SEP belongs to the segment it ends)
        positions:   (N, Lf) int64, position inside the segment (BOS -1, SEP = L)
        stream:      (N, Lf - 1) int64, the context as :func:`hmm.mixture.flatten_context` writes it: BOS dropped,
                     SEP written as :data:`hmm.mixture.SEP` (-1). Row ``n`` of :func:`hmm.mixture.bayes_predictive`
                     on that context is ``P(next observation | stream[:n+1])`` = ``P(tokens[n + 2] | tokens[:n + 2])``
                     when ``tokens[n + 2]`` is an observation; i.e. the model output at input position ``t >= 1``
                     corresponds to Bayes row ``t - 1``.
        tasks:       (N,) task index
        vocab_size:  V + 2
        sep_id:      V
        bos_id:      V + 1
    """

    tokens: np.ndarray
    target_mask: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    stream: np.ndarray
    tasks: np.ndarray
    vocab_size: int
    sep_id: int
    bos_id: int


def context_training_arrays(contexts: ContextSample, num_obs: int) -> TrainingArrays:
    """Flatten a :class:`ContextSample` into :class:`TrainingArrays` (vectorised; see the layout there)."""
    V = _count(num_obs, "num_obs")
    if contexts.demo_tokens.size and contexts.demo_tokens.max() >= V or contexts.test_tokens.max() >= V:
        raise HmmtxError(f"context_training_arrays: tokens exceed num_obs = {V}")
    N, D, L = contexts.demo_tokens.shape
    Lt = contexts.test_tokens.shape[1]
    sep_id, bos_id = V, V + 1
    demos = np.concatenate([contexts.demo_tokens, np.full((N, D, 1), sep_id, dtype=np.int64)], axis=2)  # (N, D, L+1)
    tokens = np.concatenate(
        [np.full((N, 1), bos_id, dtype=np.int64), demos.reshape(N, D * (L + 1)), contexts.test_tokens], axis=1
    )
    seg_demo = np.repeat(np.arange(D, dtype=np.int64), L + 1)
    pos_demo = np.tile(np.arange(L + 1, dtype=np.int64), D)
    seg_row = np.concatenate([[0], seg_demo, np.full(Lt, D, dtype=np.int64)])
    pos_row = np.concatenate([[-1], pos_demo, np.arange(Lt, dtype=np.int64)])
    stream = tokens[:, 1:].copy()
    stream[stream == sep_id] = SEP
    return TrainingArrays(
        tokens=tokens,
        target_mask=tokens < V,
        segment_ids=np.broadcast_to(seg_row, tokens.shape).copy(),
        positions=np.broadcast_to(pos_row, tokens.shape).copy(),
        stream=stream,
        tasks=contexts.tasks.copy(),
        vocab_size=V + 2,
        sep_id=sep_id,
        bos_id=bos_id,
    )


__all__ = ["Sample", "sample", "ContextSample", "sample_contexts", "TrainingArrays", "context_training_arrays"]
