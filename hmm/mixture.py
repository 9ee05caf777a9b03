"""Mixtures of HMMs ("tasks") in the in-context format, with the exact Bayes predictive.

Context format (SPEC §2): ``BOS demo_1 SEP demo_2 SEP ... SEP test``. The task ``k ~ task_prior`` is drawn once
for the whole context; the hidden state is redrawn from ``tasks[k].initial_probs`` at the start of every segment
(SEP resets it). A context is given as a list of segments (1-D integer arrays); the *flattened stream* is the
segments joined by a SEP marker (:data:`SEP`), BOS excluded. Results have one row per item of that stream.

The references work on the joint (task, state) space of size ``sum_k S_k`` (blocks in task order):
``p[k, i] = P(task = k, z_next = i | stream so far)``, where ``z_next`` is the hidden state that will emit the next
observation. An observation ``x`` multiplies by ``B_k[:, x]``, renormalises and steps with ``A_k``; a SEP replaces
each block by its mass times ``initial_probs_k``. Block masses are the task posterior.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple, Sequence

import numpy as np

from hmm.errors import HmmtxError
from hmm.model import HMM, _fix_rows, _is_exact_input, check_stochastic, to_float_array, to_fraction_array, validate_tokens
from hmm.reference import _frac_log

#: Marker for SEP in a flattened stream (constructions map it to their own vocabulary id).
SEP = -1


@dataclass(frozen=True, eq=False)
class HMMMixture:
    """A prior over K HMM tasks sharing one observation alphabet of size V.

    Fields:
        task_prior: (K,) ``P(task = k)`` (float64, or Fractions when exact)
        tasks:      K HMMs, all with the same V (their state counts may differ), all exact or all float
    """

    task_prior: np.ndarray
    tasks: tuple[HMM, ...]

    def __post_init__(self) -> None:
        rho, tasks = self.task_prior, self.tasks
        if not isinstance(rho, np.ndarray) or rho.ndim != 1:
            raise HmmtxError(f"task_prior: expected a 1-D numpy array, got shape {getattr(rho, 'shape', None)}")
        if len(tasks) == 0:
            raise HmmtxError("tasks: the mixture needs at least one task")
        if rho.shape[0] != len(tasks):
            raise HmmtxError(f"task_prior has {rho.shape[0]} entries but there are {len(tasks)} tasks")
        for k, h in enumerate(tasks):
            if not isinstance(h, HMM):
                raise HmmtxError(f"tasks[{k}]: expected an HMM, got {type(h).__name__}")
            if h.num_obs != tasks[0].num_obs:
                raise HmmtxError(f"tasks[{k}] has V = {h.num_obs} observation symbols, tasks[0] has {tasks[0].num_obs}")
            if h.exact != (rho.dtype == object):
                raise HmmtxError(f"tasks[{k}] and task_prior must be both exact or both float")
        check_stochastic(rho, "task_prior")
        rho.flags.writeable = False

    @classmethod
    def from_arrays(cls, task_prior: Any, tasks: Sequence[HMM], *, exact: bool | None = None) -> "HMMMixture":
        tasks = tuple(tasks)
        prior_exact = _is_exact_input(task_prior)
        if exact is None:
            exact = prior_exact or any(isinstance(h, HMM) and h.exact for h in tasks)
        if exact and not prior_exact:
            # An all-number prior in an exact mixture is a float component, converted like a float task: its exact
            # binary image with the round-off of its sum moved into the largest entry (HMM.as_exact).
            # The float prior is validated as a float array first (entries >= 0, sum 1 within ROW_SUM_TOL): only
            # the round-off of a valid prior is moved, never a prior that is wrong (e.g. [0.4, 0.5] or [0, 0]).
            floats = to_float_array(task_prior, "task_prior", 1)
            check_stochastic(floats, "task_prior")
            rho = _fix_rows(to_fraction_array(floats.tolist(), "task_prior", 1))
        else:
            rho = (to_fraction_array if exact else to_float_array)(task_prior, "task_prior", 1)
        tasks = tuple((h.as_exact() if exact else h.as_float()) if isinstance(h, HMM) else h for h in tasks)
        return cls(rho, tasks)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_obs(self) -> int:
        return self.tasks[0].num_obs

    @property
    def exact(self) -> bool:
        return self.task_prior.dtype == object

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return tuple(h.num_states for h in self.tasks)

    @property
    def block_slices(self) -> tuple[slice, ...]:
        """Slices of each task's states in the joint (task, state) space of size ``sum_k S_k``."""
        out, start = [], 0
        for s in self.state_sizes:
            out.append(slice(start, start + s))
            start += s
        return tuple(out)

    def as_exact(self) -> "HMMMixture":
        if self.exact:
            return self
        # like HMM.as_exact: the exact binary image, the round-off of the prior's sum moved into its largest entry
        rho = _fix_rows(to_fraction_array(self.task_prior.tolist(), "task_prior", 1))
        return HMMMixture(rho, tuple(h.as_exact() for h in self.tasks))

    def as_float(self) -> "HMMMixture":
        if not self.exact:
            return self
        return HMMMixture(np.array(self.task_prior.tolist(), dtype=np.float64), tuple(h.as_float() for h in self.tasks))

    def joint_arrays(self, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Block form: ``(start (S_tot,) = rho ⊗ pi, A_blockdiag (S_tot,S_tot), B_stacked (S_tot,V), pi_stacked (S_tot,))``."""
        m = self.as_exact() if dtype is object else self.as_float()
        S_tot, V = sum(m.state_sizes), m.num_obs
        zero = Fraction(0) if dtype is object else 0.0
        A = np.full((S_tot, S_tot), zero, dtype=dtype)
        B = np.empty((S_tot, V), dtype=dtype)
        pi = np.empty(S_tot, dtype=dtype)
        start = np.empty(S_tot, dtype=dtype)
        for k, (h, sl) in enumerate(zip(m.tasks, m.block_slices)):
            A[sl, sl] = h.transition_matrix
            B[sl] = h.emission_probs
            pi[sl] = h.initial_probs
            start[sl] = m.task_prior[k] * h.initial_probs
        return start, A, B, pi

    def to_dict(self, exact: bool | None = None) -> dict[str, Any]:
        exact = self.exact if exact is None else exact
        rho = self.as_exact().task_prior if exact else self.as_float().task_prior
        return {
            "task_prior": [str(v) for v in rho] if exact else rho.tolist(),
            "tasks": [h.to_dict(exact) for h in self.tasks],
        }

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "float64"
        return f"HMMMixture(K={self.num_tasks}, V={self.num_obs}, S={list(self.state_sizes)}, {kind})"


class MixtureResult(NamedTuple):
    """Bayes predictive over a flattened in-context stream of N items (observations and SEPs, BOS excluded).

    Fields:
        next_token_probs: (N, V) ``P(next observation | items 0..n)``; after a SEP the next observation starts a
                          new segment
        task_posterior:   (N, K) ``P(task = k | items 0..n)``
        state_predicted:  (N, S_tot) ``P(task = k, z_next = i | items 0..n)`` in the block layout of
                          :attr:`HMMMixture.block_slices`
        marginal_loglik:  float ``log P(all observations in the context)``
        is_sep:           (N,) bool, True at SEP items
    """

    next_token_probs: Any
    task_posterior: Any
    state_predicted: Any
    marginal_loglik: float
    is_sep: np.ndarray


def validate_context(segments: Any, vocab_size: int, *, max_len: int | None = None) -> list[np.ndarray]:
    """Check a context: a non-empty list of non-empty token segments with ids in ``[0, vocab_size)``."""
    if isinstance(segments, np.ndarray) and segments.ndim == 1 and segments.dtype != object:
        segments = [segments]
    if not isinstance(segments, (list, tuple)) or len(segments) == 0:
        raise HmmtxError("context: expected a non-empty list of token segments")
    out = []
    for i, seg in enumerate(segments):
        try:
            out.append(validate_tokens(seg, vocab_size, name=f"context segment {i}"))
        except HmmtxError as exc:
            raise HmmtxError(str(exc)) from None
        if out[-1].ndim != 1:
            raise HmmtxError(f"context segment {i}: expected a 1-D token sequence, got shape {out[-1].shape}")
    n = stream_length(out)
    if max_len is not None and n > max_len:
        raise HmmtxError(f"context: stream length {n} (tokens and SEPs) exceeds max_len {max_len}")
    return out


def stream_length(segments: Sequence[np.ndarray]) -> int:
    return sum(len(s) for s in segments) + len(segments) - 1


def flatten_context(segments: Sequence[np.ndarray], sep: int = SEP) -> np.ndarray:
    """Join segments with ``sep`` between them: ``[d1..., sep, d2..., sep, test...]`` (int64, BOS excluded)."""
    parts: list[np.ndarray] = []
    for i, seg in enumerate(segments):
        if i:
            parts.append(np.array([sep], dtype=np.int64))
        parts.append(np.asarray(seg, dtype=np.int64))
    return np.concatenate(parts)


def bayes_predictive(mixture: HMMMixture, segments: Any, dtype: Any = np.float64) -> MixtureResult:
    """Float Bayes predictive (scaled, renormalised at every item). See :class:`MixtureResult`."""
    segs = validate_context(segments, mixture.num_obs)
    items = flatten_context(segs)
    start, A, B, pi = (a.astype(dtype) for a in mixture.joint_arrays(np.float64))
    slices = mixture.block_slices
    N, K, V = len(items), mixture.num_tasks, mixture.num_obs
    nxt = np.empty((N, V), dtype=dtype)
    post = np.empty((N, K), dtype=dtype)
    pred = np.empty((N, len(start)), dtype=dtype)
    p, loglik = start, 0.0
    for n, x in enumerate(items.tolist()):
        if x == SEP:
            p = np.concatenate([p[sl].sum() * pi[sl] for sl in slices])
        else:
            joint = p * B[:, x]
            c = joint.sum()
            if not c > 0:
                raise HmmtxError(
                    f"context: probability zero under every task (token {x} at stream position {n} cannot be emitted)"
                )
            loglik += float(np.log(c))
            p = (joint / c) @ A
        pred[n] = p
        post[n] = [p[sl].sum() for sl in slices]
        nxt[n] = p @ B
    return MixtureResult(nxt, post, pred, loglik, items == SEP)


#: Exact backends of :func:`bayes_predictive_exact` (as :data:`hmm.reference.EXACT_BACKENDS`).
EXACT_BACKENDS = ("auto", "fraction", "flint")


def _zero_context_error(n: int, x: int) -> HmmtxError:
    return HmmtxError(f"context: probability zero under every task (token {x} at stream position {n} cannot be emitted)")


def bayes_predictive_exact(mixture: HMMMixture, segments: Any, *, backend: str = "auto") -> MixtureResult:
    """Exact Bayes predictive over Fractions (float mixtures converted exactly). Object arrays of Fractions.

    ``backend``: ``"fraction"`` (the readable recursion below), ``"flint"`` (:func:`hmm.fastq.bayes_predictive_rows`:
    FLINT integer vectors, entries reduced to lowest terms on demand; equal entry for entry, tested bit for bit) or
    ``"auto"`` (flint when installed).
    """
    from hmm import fastq

    if backend not in EXACT_BACKENDS:
        raise HmmtxError(f"exact backend must be one of {', '.join(EXACT_BACKENDS)}, got {backend!r}")
    m = mixture.as_exact()
    segs = validate_context(segments, m.num_obs)
    items = flatten_context(segs)
    if backend == "flint" or (backend == "auto" and fastq.available()):
        nxt, post, pred, lik = fastq.bayes_predictive_rows(m, items.tolist(), _zero_context_error)
        return MixtureResult(nxt, post, pred, _frac_log(lik), items == SEP)
    start, A, B, pi = m.joint_arrays(object)
    slices = m.block_slices
    S_tot, V = len(start), m.num_obs
    Al, Bl = A.tolist(), B.tolist()
    zero = Fraction(0)
    alpha = list(start)  # un-normalised P(items so far, task, z_next)
    nxt, post, pred = [], [], []
    for n, x in enumerate(items.tolist()):
        if x == SEP:
            new = []
            for sl in slices:
                mass = sum(alpha[sl], zero)
                new.extend(mass * v for v in pi[sl])
            alpha = new
        else:
            joint = [alpha[i] * Bl[i][x] for i in range(S_tot)]
            if not any(joint):
                raise _zero_context_error(n, x)
            # A is block-diagonal, so only in-block terms contribute; the full sum keeps the code obviously right.
            alpha = [sum((joint[i] * Al[i][j] for i in range(S_tot) if Al[i][j]), zero) for j in range(S_tot)]
        total = sum(alpha, zero)
        pred.append([a / total for a in alpha])
        post.append([sum(alpha[sl], zero) / total for sl in slices])
        nxt.append([sum((alpha[j] * Bl[j][v] for j in range(S_tot)), zero) / total for v in range(V)])
    lik = sum(alpha, zero)
    obj = lambda rows: np.array(rows, dtype=object)  # noqa: E731
    return MixtureResult(obj(nxt), obj(post), obj(pred), _frac_log(lik), items == SEP)


__all__ = [
    "SEP",
    "HMMMixture",
    "MixtureResult",
    "validate_context",
    "flatten_context",
    "stream_length",
    "bayes_predictive",
    "bayes_predictive_exact",
]
