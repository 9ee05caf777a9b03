"""Exact references for HMM filtering: numpy (batched), torch, exact rationals and brute-force enumeration.

All executors return a :class:`FilterResult` with the same fields and conventions:

* ``filtered_probs[t]   = P(z_t | x_0..x_t)``
* ``predicted_probs[t]  = P(z_t | x_0..x_{t-1})`` (``predicted_probs[0] = initial_probs``)
* ``next_token_probs[t] = P(x_{t+1} | x_0..x_t)``
* ``marginal_loglik     = log P(x_0..x_{T-1})``

Floating-point filters are the scaled forward algorithm, normalised at every step (never an un-normalised product,
which underflows). The exact filter keeps un-normalised Fractions and divides only for output. A sequence of
probability zero raises :class:`~hmm.errors.HmmtxError` naming the first position at which it became impossible.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.model import HMM


class FilterResult(NamedTuple):
    """Result of forward filtering (shapes for a batch of N sequences of length T; no N for a single sequence).

    Fields:
        filtered_probs:   (N, T, S) ``P(z_t | x_0..x_t)``
        predicted_probs:  (N, T, S) ``P(z_t | x_0..x_{t-1})``
        next_token_probs: (N, T, V) ``P(x_{t+1} | x_0..x_t)``
        marginal_loglik:  (N,)      ``log P(x_0..x_{T-1})`` (a float for exact results, computed from the exact
                                    probability)

    Arrays are numpy float arrays, torch tensors (torch executor) or object arrays of Fractions (exact executors).
    """

    filtered_probs: Any
    predicted_probs: Any
    next_token_probs: Any
    marginal_loglik: Any


def _zero_prob_error(t: int, seq: int | None, token: int) -> HmmtxError:
    where = f"position {t}" + (f" of sequence {seq}" if seq is not None else "")
    return HmmtxError(
        f"tokens: the sequence has probability zero under this HMM (token {token} at {where} cannot be emitted)"
    )


def forward_filter(hmm: HMM, tokens: Any, dtype: Any = np.float64) -> FilterResult:
    """Batched scaled forward filter in numpy.

    Args:
        hmm: the model (exact models are rounded to ``dtype``).
        tokens: (T,) or (N, T) integer token ids.
        dtype: ``np.float64`` or ``np.float32``; every operation runs in that precision.

    Returns:
        :class:`FilterResult` with numpy arrays of ``dtype`` (``marginal_loglik`` is accumulated in float64). The
        (N, T, .) arrays are transposed views of (T, ., N) buffers (not C-contiguous); copy them if that matters.

    The loop over time does four array operations per step (multiply, sum, divide, matmul) on state-major buffers
    of shape (T, S, N) (sequences on the fast axis); the next-token probabilities (one matmul), the log-likelihood
    and the zero-probability check are done after it.
    """
    x = hmm.check_tokens(tokens)
    single = x.ndim == 1
    x = x[None] if single else x
    N, T = x.shape
    pi, A, B = hmm.arrays(dtype)
    S, V = B.shape
    # (S, T, N): lik[:, t, n] = B[:, x[n, t]]; one gather (np.take with a contiguous index is ~10x faster than
    # fancy indexing here); lik[:, t] is an (S, N) view.
    lik = np.take(B, np.ascontiguousarray(x.T), axis=1)
    At = np.ascontiguousarray(A.T)
    filt = np.empty((T, S, N), dtype=dtype)
    pred = np.empty((T + 1, S, N), dtype=dtype)  # pred[t] = P(z_t | x_<t); pred[T] feeds the last next-token row
    c = np.empty((T, 1, N), dtype=dtype)  # c[t] = P(x_t | x_<t)
    pred[0] = pi[:, None]
    # A zero c[t] gives 0/0 = NaN from then on; it is detected (and reported at its first position) after the loop.
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(T):
            f = filt[t]
            np.multiply(pred[t], lik[:, t], out=f)
            np.add.reduce(f, axis=0, out=c[t], keepdims=True)
            np.divide(f, c[t], out=f)
            np.matmul(At, f, out=pred[t + 1])  # P(z_{t+1} | x_0..x_t) = A^T filtered
    ok = c[:, 0, :] > 0  # (T, N)
    if not ok.all():
        t0 = int(np.argmax(~ok.all(axis=1)))
        n = int(np.argmin(ok[t0]))
        raise _zero_prob_error(t0, None if single else n, int(x[n, t0]))
    nxt = np.matmul(np.ascontiguousarray(B.T), pred[1:])  # (T, V, N): P(x_{t+1} | x_0..x_t) = B^T P(z_{t+1} | ...)
    loglik = np.log(c[:, 0, :].astype(np.float64)).sum(axis=0)
    filt, pred, nxt = (a.transpose(2, 0, 1) for a in (filt, pred[:-1], nxt))  # views of shape (N, T, .)
    if single:
        return FilterResult(filt[0], pred[0], nxt[0], float(loglik[0]))
    return FilterResult(filt, pred, nxt, loglik)


def forward_filter_torch(hmm: HMM, tokens: Any, dtype: Any = None, device: Any = None) -> FilterResult:
    """The same scaled forward filter in torch (``dtype`` defaults to ``torch.float64``); returns torch tensors."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    x = hmm.check_tokens(tokens)
    single = x.ndim == 1
    x = torch.as_tensor(x[None] if single else x, device=device)
    N, T = x.shape
    pi_np, A_np, B_np = hmm.arrays(np.float64)
    pi = torch.as_tensor(pi_np, dtype=dtype, device=device)
    A = torch.as_tensor(A_np, dtype=dtype, device=device)
    B = torch.as_tensor(B_np, dtype=dtype, device=device)
    Bt = B.T.contiguous()
    lik = Bt[x]  # (N, T, S): one gather for all positions
    filt, pred, nxt = [], [], []
    loglik = torch.zeros(N, dtype=torch.float64, device=device)
    p = pi.expand(N, -1)
    for t in range(T):
        pred.append(p)
        joint = p * lik[:, t]
        c = joint.sum(dim=1)
        if not bool(torch.all(c > 0)):
            n = int(torch.argmin((c > 0).to(torch.int8)))
            raise _zero_prob_error(t, None if single else n, int(x[n, t]))
        f = joint / c[:, None]
        filt.append(f)
        loglik = loglik + torch.log(c.to(torch.float64))
        p = f @ A
        nxt.append(p @ B)
    out = FilterResult(torch.stack(filt, 1), torch.stack(pred, 1), torch.stack(nxt, 1), loglik)
    if single:
        return FilterResult(out.filtered_probs[0], out.predicted_probs[0], out.next_token_probs[0], float(loglik[0]))
    return out


def _frac_log(p: Fraction) -> float:
    """log of a positive Fraction with arbitrarily large numerator/denominator (no float overflow)."""
    return math.log(p.numerator) - math.log(p.denominator)


def _normalise_exact(v: list[Fraction]) -> list[Fraction]:
    s = sum(v, Fraction(0))
    return [a / s for a in v]


#: Exact backends of :func:`forward_filter_exact`: the readable Fraction recursion and python-flint's rationals.
EXACT_BACKENDS = ("auto", "fraction", "flint")


def forward_filter_exact(hmm: HMM, tokens: Any, *, backend: str = "auto") -> FilterResult:
    """Exact forward filter over Fractions (float HMMs are converted exactly).

    Args:
        tokens: (T,) or (N, T); a batch is filtered one sequence at a time.
        backend: ``"fraction"`` (the readable reference below), ``"flint"`` (:mod:`hmm.fastq`: the recursion on
            FLINT integer vectors, entries reduced to lowest terms only on demand; about 300x faster at S = 16,
            T = 2048; equal entry for entry, tested bit for bit) or ``"auto"`` (flint when installed).

    Returns:
        :class:`FilterResult` of object arrays of Fractions (``hmm.fastq.LazyFraction`` s, a Fraction subclass,
        from the flint backend); ``marginal_loglik`` is a float (or (N,) floats).
    """
    from hmm import fastq

    if backend not in EXACT_BACKENDS:
        raise HmmtxError(f"exact backend must be one of {', '.join(EXACT_BACKENDS)}, got {backend!r}")
    one = _forward_filter_exact_one
    if backend == "flint" or (backend == "auto" and fastq.available()):
        one = _forward_filter_exact_flint
    x = hmm.check_tokens(tokens)
    if x.ndim == 2:
        h = hmm.as_exact()  # convert a float HMM once for the whole batch
        parts = [one(h, row, n) for n, row in enumerate(x)]
        return FilterResult(
            np.stack([r.filtered_probs for r in parts]),
            np.stack([r.predicted_probs for r in parts]),
            np.stack([r.next_token_probs for r in parts]),
            np.array([r.marginal_loglik for r in parts], dtype=np.float64),
        )
    return one(hmm, x, None)


def _forward_filter_exact_flint(hmm: HMM, x: np.ndarray, seq: int | None) -> FilterResult:
    """The same recursion in python-flint rationals (:func:`hmm.fastq.forward_filter_rows`), bit-identical."""
    from hmm import fastq

    filt, pred, nxt, lik = fastq.forward_filter_rows(hmm, x, lambda t, o: _zero_prob_error(t, seq, o))
    return FilterResult(filt, pred, nxt, _frac_log(lik))


def _forward_filter_exact_one(hmm: HMM, x: np.ndarray, seq: int | None) -> FilterResult:
    """One sequence (T,) of validated tokens; ``seq`` (its index in a batch) only names it in errors."""
    h = hmm.as_exact()
    S, V = h.num_states, h.num_obs
    A = h.transition_matrix.tolist()
    B = h.emission_probs.tolist()
    alpha = list(h.initial_probs.tolist())  # un-normalised P(x_0..x_{t-1}, z_t)
    filt, pred, nxt = [], [], []
    for t, o in enumerate(x.tolist()):
        pred.append(_normalise_exact(alpha))
        joint = [alpha[i] * B[i][o] for i in range(S)]
        if not any(joint):
            raise _zero_prob_error(t, seq, o)
        filt.append(_normalise_exact(joint))
        alpha = [sum((joint[i] * A[i][j] for i in range(S)), Fraction(0)) for j in range(S)]
        mass = sum(alpha, Fraction(0))
        nxt.append([sum((alpha[j] * B[j][v] for j in range(S)), Fraction(0)) / mass for v in range(V)])
    lik = sum(alpha, Fraction(0))  # P(x_0..x_{T-1}) since rows of A sum to 1
    obj = lambda rows: np.array(rows, dtype=object)  # noqa: E731
    return FilterResult(obj(filt), obj(pred), obj(nxt), _frac_log(lik))


def sequence_probability_exact(hmm: HMM, tokens: Any) -> Fraction:
    """``P(x_0..x_{T-1})`` as an exact Fraction (0 for impossible sequences; no error)."""
    x = hmm.check_tokens(tokens)
    if x.ndim != 1:
        raise HmmtxError(f"tokens: expected one sequence of shape (T,), got {x.shape}")
    h = hmm.as_exact()
    S = h.num_states
    A = h.transition_matrix.tolist()
    B = h.emission_probs.tolist()
    alpha = list(h.initial_probs.tolist())
    for o in x.tolist():
        joint = [alpha[i] * B[i][o] for i in range(S)]
        alpha = [sum((joint[i] * A[i][j] for i in range(S)), Fraction(0)) for j in range(S)]
    return sum(alpha, Fraction(0))


#: Largest number of paths brute_force_filter agrees to enumerate.
BRUTE_FORCE_MAX_PATHS = 200_000


def brute_force_filter(hmm: HMM, tokens: Any) -> FilterResult:
    """The oracle for the oracle: enumerate all ``S^(T+1)`` hidden paths ``z_0..z_T`` exactly.

    ``P(x_0..x_t, z_t, z_{t+1}) = sum over full paths of pi(z_0) prod_{s<=t} B(z_s, x_s) prod_{s<T} A(z_s, z_{s+1})``
    (the transitions after ``t+1`` sum to one), from which every field follows by marginalising and normalising.
    Shares no code with the forward filters.
    """
    x = hmm.check_tokens(tokens)
    if x.ndim != 1:
        raise HmmtxError(f"tokens: brute force takes one sequence of shape (T,), got {x.shape}")
    h = hmm.as_exact()
    S, V, T = h.num_states, h.num_obs, len(x)
    if S ** (T + 1) > BRUTE_FORCE_MAX_PATHS:
        raise HmmtxError(f"brute force over S^(T+1) = {S}^{T + 1} paths exceeds the limit {BRUTE_FORCE_MAX_PATHS}")
    pi, A, B = h.initial_probs, h.transition_matrix, h.emission_probs
    zero = Fraction(0)
    # joint_now[t][i] = P(x_0..x_t, z_t=i); joint_next[t][j] = P(x_0..x_t, z_{t+1}=j); prior[t][i] = P(x_<t, z_t=i)
    joint_now = [[zero] * S for _ in range(T)]
    joint_next = [[zero] * S for _ in range(T)]
    prior = [[zero] * S for _ in range(T)]
    for z in itertools.product(range(S), repeat=T + 1):
        trans = Fraction(1)
        for s in range(T):
            trans *= A[z[s], z[s + 1]]
        if trans == 0 or pi[z[0]] == 0:
            continue
        w = pi[z[0]] * trans
        for t in range(T):
            prior[t][z[t]] += w
            w = w * B[z[t], x[t]]
            if w == 0:
                break
            joint_now[t][z[t]] += w
            joint_next[t][z[t + 1]] += w
    if not any(joint_now[T - 1]):
        t0 = next(t for t in range(T) if not any(joint_now[t]))
        raise _zero_prob_error(t0, None, int(x[t0]))
    filt = [_normalise_exact(r) for r in joint_now]
    pred = [_normalise_exact(r) for r in prior]
    nxt = []
    for r in joint_next:
        m = [sum((r[j] * B[j, v] for j in range(S)), zero) for v in range(V)]
        nxt.append(_normalise_exact(m))
    obj = lambda rows: np.array(rows, dtype=object)  # noqa: E731
    return FilterResult(obj(filt), obj(pred), obj(nxt), _frac_log(sum(joint_now[T - 1], zero)))


__all__ = [
    "FilterResult",
    "forward_filter",
    "forward_filter_torch",
    "forward_filter_exact",
    "sequence_probability_exact",
    "brute_force_filter",
    "BRUTE_FORCE_MAX_PATHS",
]
