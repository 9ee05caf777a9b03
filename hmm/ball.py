"""Rigorous enclosures of the exact references in ball arithmetic (python-flint ``arb``): long-sequence oracles.

The exact references (:func:`hmm.reference.forward_filter_exact`, :func:`hmm.mixture.bayes_predictive_exact`)
keep un-normalised rationals whose numerators and denominators grow with every step (~30-60 bits a step on an
ill-conditioned HMM: ~10^5 bits per number at T = 4096, minutes per sequence). For long sequences this module runs
the **same recursions** over balls (midpoint, radius): every operation returns a ball guaranteed to contain the
exact result for every point of its inputs, and every parameter enters as the ball of its exact rational value, so
each returned ball **contains the exact rational reference** (a proof by induction over the operations, not an
estimate). The vector is rescaled by a power of two after every step (exact: no rounding); the outputs are
ratios (homogeneous of degree 0 in it), so rescaling changes no exact output and keeps every number near 1: radii
stay around ``T S 2^-prec`` relative (``prec`` = 256 bits by default, ~1e-73 at T = 4096). Ratios are evaluated
by monotonicity (``a / (a + rest)`` from the end points), so a one-entry support gives exactly 1 and exact
(dyadic) inputs give exact outputs wherever the result is representable.

How a ball reference is used (:mod:`constructions.certified`): a construction's certified enclosure ``C`` contains
the exact reference ``e`` whenever ``C`` contains the reference ball ``R`` (``e in R subset C``); and
``|f - e| <= |f - mid R| + rad R`` is a rigorous upper bound on a float output's error, tight to ``2 rad R``.
Tested against the Fraction references (every exact value inside its ball) in
``tests/test_hmm/test_ball_reference.py``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.fastq import require

#: Default working precision (bits) of the reference balls.
REFERENCE_PREC = 256


class precision:
    """Context manager: ``flint.ctx.prec = bits`` inside, the previous precision restored on exit."""

    def __init__(self, bits: int) -> None:
        if int(bits) < 2:
            raise HmmtxError(f"ball precision must be at least 2 bits, got {bits!r}")
        self.bits = int(bits)

    def __enter__(self) -> "precision":
        f = require()
        self.old = f.ctx.prec
        f.ctx.prec = self.bits
        return self

    def __exit__(self, *exc: Any) -> None:
        require().ctx.prec = self.old


def ball(v: Any) -> Any:
    """The ball of an exact rational (Fraction, int, or a float converted exactly) at the current precision."""
    f = require()
    q = v if isinstance(v, Fraction) else Fraction(v)
    return f.arb(f.fmpq(q.numerator, q.denominator))


class BallFilterResult(NamedTuple):
    """Balls containing :func:`hmm.reference.forward_filter_exact`'s outputs (object arrays of ``flint.arb``).

    Fields:
        filtered_probs:   (T, S) ``P(z_t | x_0..x_t)``
        predicted_probs:  (T, S) ``P(z_t | x_0..x_{t-1})``
        next_token_probs: (T, V) ``P(x_{t+1} | x_0..x_t)``
        prec:             working precision in bits
    """

    filtered_probs: np.ndarray
    predicted_probs: np.ndarray
    next_token_probs: np.ndarray
    prec: int


class BallMixtureResult(NamedTuple):
    """Balls containing :func:`hmm.mixture.bayes_predictive_exact`'s outputs (object arrays of ``flint.arb``).

    Fields:
        next_token_probs: (T, V) Bayes predictive of the next observation
        task_posterior:   (T, K) ``P(task = k | stream so far)``
        state_predicted:  (T, S_tot) ``P(task, z_next | stream so far)``
        prec:             working precision in bits
    """

    next_token_probs: np.ndarray
    task_posterior: np.ndarray
    state_predicted: np.ndarray
    prec: int


def _total(v: list, what: str, t: int) -> Any:
    """``sum(v)``, which must be provably positive (it is, for a sequence of positive probability)."""
    s = sum(v[1:], v[0])
    if not s > 0:
        raise HmmtxError(f"ball reference: the {what} at position {t} is not provably positive ({s.str(5)})")
    return s


def _ratio(a: Any, rest: Any) -> Any:
    """A ball containing ``a / (a + rest)`` for all non-negative points of the balls ``a`` and ``rest``:
    increasing in ``a`` and decreasing in ``rest``, so the end points are ``a_lo / (a_lo + rest_hi)`` and
    ``a_hi / (a_hi + rest_lo)`` (dependency-free, unlike ``a / sum``, and exactly 1 when ``rest`` is exactly 0)."""
    if rest.is_zero():
        return ball(1)
    if a.is_zero():
        return ball(0)
    zero = ball(0)
    a_lo, a_hi = max(a.lower(), zero), a.upper()
    r_lo, r_hi = max(rest.lower(), zero), rest.upper()
    return (a_lo / (a_lo + r_hi)).union(a_hi / (a_hi + r_lo))


def _normalised(v: list) -> list:
    """Balls containing ``v_i / sum(v)`` (see :func:`_ratio`; exact zeros stay exact zeros)."""
    zero = ball(0)
    return [_ratio(a, sum((b for j, b in enumerate(v) if j != i), zero)) for i, a in enumerate(v)]


def _weighted(w: list, col: list) -> Any:
    """``sum_j w_j col_j`` for normalised weights ``w`` (balls) and exact values ``col`` (a convex combination)."""
    return sum((wj * c for wj, c in zip(w, col) if not c.is_zero() and not wj.is_zero()), ball(0))


def _rescaled(v: list, total: Any) -> list:
    """``v * 2^-k`` with ``2^-k`` the power of two that brings ``total`` into [1/2, 1): every output is a ratio of
    entries of ``v``, so a positive scale changes none of them; a power of two is exact (no rounding, no radius),
    and keeps the numbers near 1 (dividing by the ball ``total`` itself would add its relative radius to every
    entry and double the radii every step)."""
    f = require()
    m, e = total.mid().man_exp()
    k = int(e) + int(m).bit_length()
    scale = f.arb(f.fmpq(1, 2**k)) if k >= 0 else f.arb(2 ** (-k))
    return [a * scale for a in v]


def _objects(rows: list[list]) -> np.ndarray:
    out = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
    for t, r in enumerate(rows):
        out[t, :] = r
    return out


def _filter_one(hmm: Any, x: np.ndarray) -> tuple:
    """The recursion of :func:`hmm.reference._forward_filter_exact_one` over balls, rescaled every step."""
    h = hmm.as_exact()
    S, V = h.num_states, h.num_obs
    A = [[ball(v) for v in row] for row in h.transition_matrix.tolist()]
    B = [[ball(v) for v in row] for row in h.emission_probs.tolist()]
    alpha = [ball(v) for v in h.initial_probs.tolist()]  # proportional to P(x_0..x_{t-1}, z_t)
    filt, pred, nxt = [], [], []
    for t, o in enumerate(x.tolist()):
        _total(alpha, "predicted mass", t)
        pred.append(_normalised(alpha))
        joint = [alpha[i] * B[i][o] for i in range(S)]
        if all(j.is_zero() for j in joint):
            raise HmmtxError(f"tokens: the sequence has probability zero under this HMM (token {o} at position {t} "
                             "cannot be emitted)")
        _total(joint, "joint mass", t)
        filt.append(_normalised(joint))
        alpha = [sum((joint[i] * A[i][j] for i in range(S) if not A[i][j].is_zero()), ball(0)) for j in range(S)]
        mass = _total(alpha, "predicted mass", t + 1)
        w = _normalised(alpha)
        nxt.append([_weighted(w, [B[j][v] for j in range(S)]) for v in range(V)])
        alpha = _rescaled(alpha, mass)
    return _objects(filt), _objects(pred), _objects(nxt)


def forward_filter_ball(hmm: Any, tokens: Any, *, prec: int = REFERENCE_PREC) -> BallFilterResult:
    """Balls containing the exact forward filter's outputs for one sequence (T,) (or a batch (N, T): arrays gain
    a leading N). A sequence of probability zero raises HmmtxError, as the exact filter does."""
    require()
    x = hmm.check_tokens(tokens)
    with precision(prec):
        if x.ndim == 2:
            h = hmm.as_exact()
            parts = [_filter_one(h, row) for row in x]
            return BallFilterResult(*(np.stack([p[i] for p in parts]) for i in range(3)), int(prec))
        return BallFilterResult(*_filter_one(hmm, x), int(prec))


def bayes_predictive_ball(mixture: Any, segments: Any, *, prec: int = REFERENCE_PREC) -> BallMixtureResult:
    """Balls containing :func:`hmm.mixture.bayes_predictive_exact`'s outputs (the same recursion over the joint
    (task, state) space, SEP resets included), rescaled by the total mass after every item."""
    from hmm.mixture import SEP, flatten_context, validate_context

    require()
    m = mixture.as_exact()
    items = flatten_context(validate_context(segments, m.num_obs))
    start, A, B, pi = m.joint_arrays(object)
    slices = m.block_slices
    S_tot, V = len(start), m.num_obs
    with precision(prec):
        Ab = [[ball(v) for v in row] for row in A.tolist()]
        Bb = [[ball(v) for v in row] for row in B.tolist()]
        pib = [ball(v) for v in pi.tolist()]
        alpha = [ball(v) for v in start.tolist()]
        nxt, post, pred = [], [], []
        for n, x in enumerate(items.tolist()):
            if x == SEP:
                alpha = [sum(alpha[sl][1:], alpha[sl][0]) * p for sl in slices for p in pib[sl]]
            else:
                joint = [alpha[i] * Bb[i][x] for i in range(S_tot)]
                if all(j.is_zero() for j in joint):
                    raise HmmtxError(f"context: probability zero under every task (token {x} at stream position {n} "
                                     "cannot be emitted)")
                alpha = [sum((joint[i] * Ab[i][j] for i in range(S_tot) if not Ab[i][j].is_zero()), ball(0))
                         for j in range(S_tot)]
            total = _total(alpha, "mixture mass", n)
            pred.append(_normalised(alpha))
            post.append(_normalised([sum(alpha[sl][1:], alpha[sl][0]) for sl in slices]))
            nxt.append([_weighted(pred[-1], [Bb[j][v] for j in range(S_tot)]) for v in range(V)])
            alpha = _rescaled(alpha, total)
    return BallMixtureResult(_objects(nxt), _objects(post), _objects(pred), int(prec))


def _dyadic(v: Any) -> Any:
    """An exact finite arb (a midpoint or a radius) as ``flint.fmpq``."""
    f = require()
    m, e = v.man_exp()
    return f.fmpq(m) * f.fmpq(2) ** int(e) if e >= 0 else f.fmpq(m, f.fmpz(2) ** int(-e))


def interval(b: Any) -> tuple[Any, Any]:
    """The ball ``b`` as the exact rational interval ``(mid - rad, mid + rad)`` (``flint.fmpq``; midpoint and
    radius of an arb are dyadic). HmmtxError for an infinite or NaN ball."""
    if not b.is_finite():
        raise HmmtxError(f"ball reference: the ball {b.str(5)} is not finite")
    m, r = _dyadic(b.mid()), _dyadic(b.rad())
    return m - r, m + r


def contains_exact(balls: Any, exact: Any) -> bool:
    """True when every exact rational of ``exact`` lies in the ball of ``balls`` at the same index (decided in
    exact rational arithmetic: no conversion of the rational to a ball, so no false negatives)."""
    from hmm.fastq import to_fmpq

    b = np.asarray(balls, dtype=object)
    e = np.asarray(exact, dtype=object)
    if b.shape != e.shape:
        raise HmmtxError(f"ball reference: shapes differ ({b.shape} balls, {e.shape} exact values)")
    for bb, v in zip(b.ravel(), e.ravel()):
        lo, hi = interval(bb)
        q = to_fmpq(v)
        if not lo <= q <= hi:
            return False
    return True


def is_ball(v: Any) -> bool:
    """True for a ``flint.arb`` (a ball reference value) rather than an exact rational."""
    return hasattr(v, "rad") and hasattr(v, "mid")


__all__ = ["REFERENCE_PREC", "precision", "ball", "BallFilterResult", "BallMixtureResult", "forward_filter_ball",
           "bayes_predictive_ball", "interval", "contains_exact", "is_ball"]
