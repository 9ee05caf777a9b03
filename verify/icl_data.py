"""In-context mixture data as token streams, with batched Bayes references, for training and probing.

A context is ``BOS demo_1 SEP demo_2 SEP ... SEP demo_n SEP test`` (SPEC §2). Here every context of a batch has the
same layout: ``n_demos`` demonstrations of ``demo_len`` observations and one test segment of ``test_len``
observations, so the stream length is ``T = 1 + n_demos * (demo_len + 1) + test_len`` and the test segment occupies
the last ``test_len`` positions. Token ids in a stream: observations ``0..V-1``, ``SEP = V``, ``BOS = V + 1``.

:func:`mixture_references` is a batched (over contexts) version of :func:`hmm.mixture.bayes_predictive` that also
returns the *filtered* joint (task, state) posterior, which the probes regress on; it is checked against
``bayes_predictive`` in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture


@dataclass(frozen=True)
class ContextLayout:
    """Fixed in-context layout: ``n_demos`` demonstrations of ``demo_len`` tokens, then ``test_len`` test tokens."""

    n_demos: int
    demo_len: int
    test_len: int

    def __post_init__(self) -> None:
        if self.n_demos < 0:
            raise HmmtxError(f"n_demos must be >= 0, got {self.n_demos}")
        if self.demo_len < 1 and self.n_demos > 0:
            raise HmmtxError(f"demo_len must be >= 1 when n_demos = {self.n_demos} > 0, got {self.demo_len}")
        if self.test_len < 1:
            raise HmmtxError(f"test_len must be >= 1, got {self.test_len}")

    @property
    def length(self) -> int:
        """Stream length ``T`` including BOS and the SEPs."""
        return 1 + self.n_demos * (self.demo_len + 1) + self.test_len

    @property
    def segment_lengths(self) -> tuple[int, ...]:
        return (self.demo_len,) * self.n_demos + (self.test_len,)

    def positions(self) -> "StreamIndex":
        """Per-position bookkeeping of the stream (identical for every context of this layout)."""
        T = self.length
        seg = np.full(T, -1, dtype=np.int64)  # -1 at BOS; segment id of observations and of the SEP closing a demo
        off = np.full(T, -1, dtype=np.int64)  # offset inside the segment; demo_len for a SEP; -1 at BOS
        is_obs = np.zeros(T, dtype=bool)
        is_sep = np.zeros(T, dtype=bool)
        t = 1
        for s, n in enumerate(self.segment_lengths):
            seg[t : t + n] = s
            off[t : t + n] = np.arange(n)
            is_obs[t : t + n] = True
            t += n
            if s < self.n_demos:
                seg[t], off[t], is_sep[t] = s, n, True
                t += 1
        return StreamIndex(seg, off, is_obs, is_sep, seg == self.n_demos)


class StreamIndex(NamedTuple):
    """Bookkeeping of a :class:`ContextLayout`'s stream, arrays of shape (T,).

    Fields:
        segment: segment id (0..n_demos-1 demos, n_demos = test) of observations and of the SEP closing a demo;
                 -1 at BOS
        offset:  offset inside the segment (a closing SEP has offset ``demo_len``); -1 at BOS
        is_obs:  observation positions
        is_sep:  SEP positions
        is_test: test-segment positions
    """

    segment: np.ndarray
    offset: np.ndarray
    is_obs: np.ndarray
    is_sep: np.ndarray
    is_test: np.ndarray


class ContextBatch(NamedTuple):
    """N sampled contexts in stream form (T = layout length).

    Fields:
        tokens: (N, T) int64 stream ids (observations 0..V-1, SEP = V, BOS = V + 1)
        states: (N, T) int64 hidden state that emitted each observation; -1 at BOS / SEP
        task:   (N,)   int64 task id of each context
        layout: the :class:`ContextLayout`
        vocab_size: V (observation alphabet size)
    """

    tokens: np.ndarray
    states: np.ndarray
    task: np.ndarray
    layout: ContextLayout
    vocab_size: int

    @property
    def sep_id(self) -> int:
        return self.vocab_size

    @property
    def bos_id(self) -> int:
        return self.vocab_size + 1

    def segments(self, i: int) -> list[np.ndarray]:
        """Context ``i`` as a list of observation segments (the :mod:`hmm.mixture` format)."""
        idx = self.layout.positions()
        return [self.tokens[i, idx.is_obs & (idx.segment == s)] for s in range(self.layout.n_demos + 1)]


def _padded_tasks(mixture: HMMMixture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pi (K,S), A (K,S,S), B (K,S,V)) float64, padded to the largest state count with unreachable states."""
    m = mixture.as_float()
    K, S, V = m.num_tasks, max(m.state_sizes), m.num_obs
    pi = np.zeros((K, S))
    A = np.zeros((K, S, S))
    B = np.zeros((K, S, V))
    for k, h in enumerate(m.tasks):
        s = h.num_states
        pi[k, :s] = h.initial_probs
        A[k, :s, :s] = h.transition_matrix
        A[k, s:, s:] = np.eye(S - s)  # padding rows stay stochastic; they carry zero mass forever
        B[k, :s] = h.emission_probs
        B[k, s:] = 1.0 / V
    return pi, A, B


def sample_context_batch(mixture: HMMMixture, layout: ContextLayout, n: int, rng: np.random.Generator) -> ContextBatch:
    """Sample ``n`` contexts with :func:`hmm.sampling.sample_contexts` (task ``k ~ task_prior`` per context, the
    hidden state reset at every segment) and lay them out as token streams. Deterministic given ``rng``'s state."""
    from hmm.sampling import sample_contexts

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise HmmtxError(f"number of contexts must be an integer >= 1, got {n!r}")
    cs = sample_contexts(mixture, int(n), layout.n_demos, max(layout.demo_len, 1), layout.test_len, seed=rng)
    V = mixture.num_obs
    idx = layout.positions()
    tokens = np.empty((n, layout.length), dtype=np.int64)
    states = np.full((n, layout.length), -1, dtype=np.int64)
    tokens[:, 0] = V + 1
    tokens[:, idx.is_sep] = V
    for s in range(layout.n_demos):
        where = idx.is_obs & (idx.segment == s)
        tokens[:, where] = cs.demo_tokens[:, s]
        states[:, where] = cs.demo_states[:, s]
    tokens[:, idx.is_test] = cs.test_tokens
    states[:, idx.is_test] = cs.test_states
    return ContextBatch(tokens, states, np.asarray(cs.tasks, dtype=np.int64), layout, V)


class MixtureReferences(NamedTuple):
    """Exact (float64) Bayes quantities for every stream position of a :class:`ContextBatch`.

    Fields:
        next_token_probs: (N, T, V) ``P(next observation | stream items 0..t)`` (t = 0 is BOS: the first token's law)
        task_posterior:   (N, T, K) ``P(task | items 0..t)``
        filtered_joint:   (N, T, K, S) ``P(task, z_t | items 0..t)`` at observations; at BOS / SEP it is the
                          predicted joint of the next segment's first state
        filtered_state:   (N, T, S) ``P(z_t | items 0..t)`` summed over tasks (states padded to max S)
        task_pair_laws:   (K, V * V) each task's token-pair law ``P_k(x_1 = a, x_2 = b)`` flattened (row ``a``,
                          column ``b``): a continuous task descriptor that the task-law probe regresses
    """

    next_token_probs: np.ndarray
    task_posterior: np.ndarray
    filtered_joint: np.ndarray
    filtered_state: np.ndarray
    task_pair_laws: np.ndarray


def mixture_references(mixture: HMMMixture, batch: ContextBatch) -> MixtureReferences:
    """Batched Bayes filter over (task, state), normalised at every item (the same recursion as
    :func:`hmm.mixture.bayes_predictive`, vectorised over the N contexts)."""
    pi, A, B = _padded_tasks(mixture)
    rho = np.asarray(mixture.as_float().task_prior, dtype=np.float64)
    tokens = batch.tokens
    N, T = tokens.shape
    K, S, V = B.shape
    nxt = np.empty((N, T, V))
    post = np.empty((N, T, K))
    filt = np.empty((N, T, K, S))
    p = np.broadcast_to(rho[:, None] * pi, (N, K, S)).copy()  # predicted joint of the next observation's state
    for t in range(T):
        x = tokens[:, t]
        obs = x < V
        if t > 0:
            sep = x == V
            if np.any(obs):
                joint = p * B[:, :, np.clip(x, 0, V - 1)].transpose(2, 0, 1)  # (N, K, S)
                c = joint.sum(axis=(1, 2))
                bad = obs & ~(c > 0)
                if np.any(bad):
                    i = int(np.argmax(bad))
                    raise HmmtxError(
                        f"context {i}: probability zero under every task (token {int(x[i])} at stream position {t})"
                    )
                f_obs = joint / np.where(c > 0, c, 1.0)[:, None, None]
            else:
                f_obs = p
            mass = p.sum(axis=2, keepdims=True)
            f_sep = mass * pi[None]
            f = np.where(obs[:, None, None], f_obs, np.where(sep[:, None, None], f_sep, p))
        else:
            f = p
        filt[:, t] = f
        post[:, t] = f.sum(axis=2)
        # step to the next observation's state: observations move with A_k, BOS / SEP already hold the start state
        p = np.where(obs[:, None, None], np.einsum("nks,kst->nkt", f, A), f) if t > 0 else f
        nxt[:, t] = np.einsum("nks,ksv->nv", p, B)
    return MixtureReferences(nxt, post, filt, filt.sum(axis=2), task_pair_laws(mixture))


def task_pair_laws(mixture: HMMMixture) -> np.ndarray:
    """(K, V * V) float64: ``P_k(x_1 = a, x_2 = b) = sum_{i,j} pi_i B_ia A_ij B_jb`` for every task ``k``, the law of
    a segment's first two observations, flattened row-major. It identifies a task by what it emits (independent of
    how its hidden states are labelled), so it can be regressed for any number of tasks."""
    pi, A, B = _padded_tasks(mixture)
    law = np.einsum("ki,kia,kij,kjb->kab", pi, B, A, B)  # (K, V, V)
    return law.reshape(law.shape[0], -1)  # (K, V * V)


def unigram_probs(batch: ContextBatch) -> np.ndarray:
    """Empirical frequency (V,) of the observations in ``batch`` (the best constant predictor in hindsight)."""
    obs = batch.tokens[batch.tokens < batch.vocab_size]
    return np.bincount(obs, minlength=batch.vocab_size).astype(np.float64) / obs.size


def target_mask(batch: ContextBatch) -> np.ndarray:
    """(N, T) bool: positions t whose *next* stream item is an observation (where next-token losses count)."""
    nxt = np.zeros_like(batch.tokens, dtype=bool)
    nxt[:, :-1] = batch.tokens[:, 1:] < batch.vocab_size
    return nxt


#: Former name (it collided with :class:`constructions.layout.Layout`, the residual layout).
Layout = ContextLayout

__all__ = [
    "ContextLayout",
    "Layout",
    "StreamIndex",
    "ContextBatch",
    "sample_context_batch",
    "MixtureReferences",
    "mixture_references",
    "task_pair_laws",
    "unigram_probs",
    "target_mask",
]
