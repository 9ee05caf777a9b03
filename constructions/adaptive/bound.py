"""Claimed bound of the adaptive-memory construction (derivation: ``docs/constructions/adaptive_memory.md`` §4).

Score gaps. For a memory head whose query carries lag ``g``, the score at lag ``s`` is, up to a constant of the
query, ``sc_g(s) = b(s) - (P/g) s`` (log variant) or ``-kappa (s - g)^2`` (lin variant), and
``Delta_g(s) = sc_g(g) - sc_g(s) > 0`` for every ``s != g`` (:func:`gaps`, rigorous lower bounds in float64).

Leakage. Softmax with inverse temperature beta over the keys ``s = 0..u`` (``u`` = padded query position) puts weight
``1 - w_g = E / (1 + E)``, ``E = sum_{s != g} exp(-beta Delta_g(s)) <= u exp(-beta gap_g)`` off the target.

Propagation. Fetched value: ``|mval_k - v_{t-g}| <= 2 xmax leak_k``; fetched symbol one-hot: every coordinate within
``leak_k`` of the exact one. The snap lookup of a later lag is exact while the leakages of the symbols it reads sum to
``<= 1/3`` (Type II; checked per position, else the bound is infinite). Readout: ``|y - f| <= sum_k L_k 2 xmax
leak_k + E_ffn`` (``L_k`` the readout network's Lipschitz constant in memory k, ``E_ffn`` its approximation error).
Hard attention: leak 0 (exact); float modes add the stated round-off allowance of :func:`roundoff_terms`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from constructions.adaptive.info import AdaptiveModelInfo, info_of
from constructions.adaptive.spec import AdaptiveSpec, check_tokens, reference
from constructions.transformer import BoundReport, ConstructedTransformer
from hmm.errors import HmmtxError

_U = {"float64": 2.0**-53, "float32": 2.0**-24, "exact": 0.0}
#: Snap-lookup tolerance: total leakage of the fetched symbols a lag reads (see module docstring).
SNAP_TOLERANCE = 1.0 / 3.0


def gaps(spec: AdaptiveSpec, g: int, n: int, mask: Fraction | None = None) -> np.ndarray:
    """``Delta_g(s)`` for ``s = 0..n-1``: rigorous float64 lower bounds of the exact score gaps (``Delta_g(g) = 0``).

    log: ``Delta_g(s) = (b(g) - P) - (b(s) - P s / g)`` with the exact table ``b`` (``b(0)`` = the mask);
    lin: ``kappa (s - g)^2``.
    """
    s = np.arange(n, dtype=np.float64)
    if spec.rpe == "lin":
        kap = float(spec.sharpness)
        d = kap * (s - g) ** 2
        return d * (1 - 2.0**-50)
    P = float(spec.sharpness)
    b = _bias_float(spec, n)
    top = b[g] - P
    d = top - (b - P * s / g)
    if mask is not None and n > 0:
        d[0] = top - float(mask)
    mag = abs(top) + np.abs(b) + P * s / g + (abs(float(mask)) if mask is not None else 0.0)
    out = d - 8 * 2.0**-53 * mag
    if g < n:
        out[g] = 0.0
    return out


_BIAS: dict = {}


def _bias_float(spec: AdaptiveSpec, n: int) -> np.ndarray:
    """The log table ``b(s) = fl(P log s)`` as float64 (its exact Fraction values are these floats)."""
    key = (spec.sharpness, n)
    hit = _BIAS.get(key)
    if hit is None:
        P = float(spec.sharpness)
        hit = np.array([0.0] + [P * math.log(s) if s > 1 else 0.0 for s in range(1, n)], dtype=np.float64)
        _BIAS.clear()
        _BIAS[key] = hit
    return hit


def min_gap(spec: AdaptiveSpec, g: int, n: int, mask: Fraction | None = None) -> float:
    """``gap_g = min_{s != g, s < n} Delta_g(s)`` (lower bound)."""
    d = gaps(spec, g, n, mask)
    d = np.delete(d, g) if g < n else d
    return float(d.min()) if d.size else math.inf


def leak_curve(spec: AdaptiveSpec, g: int, n: int, beta: float, mask: Fraction | None = None,
               shrink: np.ndarray | float = 0.0) -> np.ndarray:
    """``leak[u]`` (``u = 0..n-1``): upper bound of the softmax weight off lag ``g`` when the keys are lags ``0..u``
    (``u >= g``), with every gap reduced by ``shrink`` (the float score allowance). ``E / (1 + E)`` rounded up."""
    d = gaps(spec, g, n, mask) - shrink
    with np.errstate(over="ignore"):
        terms = np.exp(-beta * d)  # a negative (shrunk) gap may overflow to inf: leakage 1 there
    if g < n:
        terms[g] = 0.0
    E = np.cumsum(terms) * (1 + (n + 16) * 2.0**-52)
    with np.errstate(invalid="ignore"):
        leak = np.where(np.isfinite(E), E / (1 + E) * (1 + 1e-12), 1.0)
    return np.minimum(leak, 1.0)


class PositionBounds(NamedTuple):
    """Per-position parts (N, T): ``y``, ``memory`` (max over k), ``lag``, and ``leak`` (N, T, M), ``snap_ok`` (bool)."""

    y: np.ndarray
    memory: np.ndarray
    lag: np.ndarray
    leak: np.ndarray
    snap_ok: bool


class Roundoff(NamedTuple):
    """Stated float allowances (0 in exact mode): ``score`` (per unit of the logit magnitude bound ``Lambda(u)``),
    ``mval`` and ``msym`` (per key), ``y`` (readout FFN), ``lag`` (relative)."""

    u: float
    score_factor: float
    ffn: float


def logit_magnitude(spec: AdaptiveSpec, u: np.ndarray, g: int = 1) -> np.ndarray:
    """``Lambda_g(u)``: a bound on ``|q.k| + |b|`` over the keys of a query at padded position ``u`` whose lag is
    ``g`` (log: ``(P/g) u + P log u + P + 64``; lin: ``3 kappa u^2 + 2 |p| u + 1``, the same for every g)."""
    P = float(spec.sharpness)
    if spec.rpe == "log":
        return P / g * u + P * np.log(np.maximum(u, 1)) + P + 64
    p = abs(float(spec.lin_slope))
    return 3 * P * u * u + 2 * p * u + 1


def roundoff_terms(info: AdaptiveModelInfo, mode: str, width: int) -> Roundoff:
    """``u`` = unit round-off; per-logit score allowance ``(16 + 8a^2) u Lambda_g(u)``, ``a`` the largest lag arity:
    q and k entries are sums of at most 3 exact products (``gamma_3`` each), the dot product of at most 2 terms plus
    the bias (``gamma_3``), beta scaling and the max subtraction (``2u``): ``9u`` to first order, plus a relative
    ``~ (6a^2 + 6a + 2) u`` on the query from the snap units (the sum S of ``a`` rounded one-hot coordinates, then
    ``(3S - 3a + 2) - (3S - 3a + 1)``); stated with slack, not certified.
    Readout FFN ``4 u sum_j |a_j| (|W_j|_1 + |b_j|) (D + 8)``."""
    u = _U[mode]
    a_max = max(g.arity for g in info.spec.lags)
    net = info.readout.net
    ffn = 4 * u * float(np.sum(np.abs(net.a) * (np.abs(net.W).sum(axis=1) + np.abs(net.b)))) * (width + 8)
    return Roundoff(u, (16 + 8 * a_max * a_max) * u, ffn)


def position_bounds(model: ConstructedTransformer, tokens: Any, mode: str) -> PositionBounds:
    """The bound at every position (see the module docstring), from the true lags of the exact reference."""
    info = info_of(model)
    spec = info.spec
    attention, beta = model.attention, model.beta
    tok = check_tokens(spec, tokens)
    N, T = tok.shape
    lags = reference(spec, tok._replace(single=False), exact=False).lag
    pad = spec.padding
    n = pad + T
    xmax = float(max(abs(v) for v in tok.values.ravel())) if tok.values.size else 0.0
    ro = roundoff_terms(info, mode, model.layout.width)
    curves: dict[int, np.ndarray] = {}
    for g in np.unique(lags):
        g = int(g)
        # every query of these sequences sits at u <= n - 1 and Lambda grows with u: one (conservative) allowance
        shrink = float(2 * ro.score_factor * logit_magnitude(spec, np.array([n - 1.0]), g)[0])
        if attention == "hard":
            d = gaps(spec, g, n, info.mask) - shrink
            d[g] = np.inf
            # hard attention picks lag g at query u iff every other key 0..u has a positive (rounded) gap
            bad = np.minimum.accumulate(d) <= 0
            curves[g] = np.where(bad, np.inf, 0.0)
        else:
            curves[g] = leak_curve(spec, g, n, float(beta), info.mask, shrink)
    M = spec.M
    leak = np.zeros((N, T, M))
    for k in range(M):
        for nn in range(N):
            for t in range(T):
                leak[nn, t, k] = curves[int(lags[nn, t, k])][pad + t]
    # per-key float error of the weighted sums (softmax: weights' relative error ~ (n + 10) u; hard: gather, exact)
    mix = 0.0 if attention == "hard" else 2 * (n + 10) * ro.u
    memory = 2 * xmax * leak + mix * max(xmax, 1e-300)
    L = np.asarray(info.readout.net.lipschitz[1:], dtype=np.float64)
    y = memory @ L + info.readout.net.ffn_error + ro.ffn
    snap_ok = True
    for k, known in enumerate(info.schedule.known):
        if known:
            tot = leak[..., list(known)].sum(axis=-1) + len(known) * (mix + 8 * ro.u)
            if np.any(tot > SNAP_TOLERANCE):
                snap_ok = False
    a = max(g.arity for g in spec.lags)
    # lags in softmax mode: g (u1 - u2) with |(u1 - u2) - 1| <= (6a^2 + 6a + 2) u (see roundoff_terms); stated x 4/3
    lag_allow = (8 * a * a + 8 * a + 8) * ro.u * spec.lag_range if attention != "hard" else 0.0
    lag = np.full((N, T), lag_allow)
    return PositionBounds(y, memory.max(axis=-1), lag, leak, snap_ok)


def gap_formula(spec: AdaptiveSpec) -> float:
    """The proved smallest score gap over the lags ``1..T`` (exact arithmetic): ``P (1/(2T^2) - 1/(3T^3))`` (log; the
    neighbours of the longest lag; the masked lag 0 has ``P log g + 64``), ``kappa`` (lin)."""
    P, T = float(spec.sharpness), spec.lag_range
    if spec.rpe == "lin":
        return P
    return min(P * (1 / (2 * T * T) - 1 / (3 * T**3)) if T > 1 else P * (1 - math.log(2)), 64.0)


def closed_form_bound(spec: AdaptiveSpec, n: int, beta: float, xmax: float = 1.0) -> float:
    """The claimed bound in closed form, as a function of the lag range T (through the gap), beta, the window ``n``
    (keys), the readout (Lipschitz constants ``L_k``; its FFN error ``E_ffn(m)`` for width m) and the head count
    (one head per memory: H = M in Type I, 1 per layer in Type II; more heads do not enter)::

        sup_t |y_t - f| <= 2 xmax (n - 1) e^(-beta gap_T) sum_k L_k + E_ffn(m)

    (exact arithmetic; the Type II snap lookups need ``(M - 1)(n - 1) e^(-beta gap_T) <= 1/3``, else ``inf``).
    :func:`position_bounds` evaluates the exact leakage sums instead, which are never larger."""
    from constructions.adaptive.readout import readout_for

    net = readout_for(spec).net
    leak = min(1.0, (n - 1) * math.exp(-beta * gap_formula(spec)))
    if spec.kind == "type2" and (spec.M - 1) * leak > SNAP_TOLERANCE:
        return math.inf
    return 2 * xmax * leak * float(np.sum(net.lipschitz[1:])) + net.ffn_error


def trivial_bound(info: AdaptiveModelInfo, xmax: float) -> float:
    """Holds for any attention weights (fetched values are convex combinations): readout ``sum_k L_k 2 xmax + E_ffn``,
    memories ``2 xmax``, lags ``T - 1`` (lookups return lags in 1..T when the snap margin holds)."""
    L = np.asarray(info.readout.net.lipschitz[1:], dtype=np.float64)
    return float(max(2 * xmax * L.sum() + info.readout.net.ffn_error, 2 * xmax, info.spec.lag_range - 1))


def claimed_bound(model: ConstructedTransformer, tokens: Any, mode: str = "float64") -> BoundReport:
    """max over positions and the outputs ``y``, ``memory``, ``lag`` of the bound above, for ``tokens`` in ``mode``."""
    info = info_of(model)
    if mode == "exact" and model.attention != "hard":
        raise HmmtxError("exact mode runs hard attention only")
    tok = check_tokens(info.spec, tokens)
    xmax = float(max(abs(v) for v in tok.values.ravel())) if tok.values.size else 0.0
    full = 2 if info.spec.kind == "type1" else info.spec.M + 1
    trivial = trivial_bound(info, xmax)
    if info.schedule.layers < full:
        return BoundReport(math.inf, math.inf, 0.0, trivial, f"greedy shallow model ({info.schedule.layers} < {full} "
                           "layers): guessed lags, no bound claimed")
    pb = position_bounds(model, tok, mode)
    if not pb.snap_ok:
        return BoundReport(math.inf, math.inf, 0.0, trivial, "fetched-symbol leakage exceeds the snap tolerance 1/3 at "
                           "some position: nested lags are not guaranteed (raise beta)")
    total = float(max(pb.y.max(), pb.memory.max(), pb.lag.max()))
    if not math.isfinite(total):
        return BoundReport(math.inf, math.inf, 0.0, trivial, "hard attention: a rounded score gap is not positive "
                           f"({mode}); no bound")
    ro = roundoff_terms(info, mode, model.layout.width)
    L = np.asarray(info.readout.net.lipschitz[1:], dtype=np.float64)
    leak_part = float(max((2 * xmax * pb.leak).max(), (2 * xmax * pb.leak @ L).max() + info.readout.net.ffn_error))
    leak_part = min(leak_part, total)
    kind = "hard attention: the rounded score gaps are positive, the argmax is the target lag" if model.attention == "hard" \
        else f"softmax beta={model.beta:g}: max leakage {pb.leak.max():.3e} (<= u e^(-beta gap))"
    return BoundReport(total, leak_part, total - leak_part, trivial,
                       f"{kind}; readout Lipschitz x 2 xmax x leakage + FFN error {info.readout.net.ffn_error:.2e}; "
                       f"round-off allowance {total - leak_part:.2e} ({mode})")


__all__ = ["gap_formula", "closed_form_bound", "gaps", "min_gap", "leak_curve", "position_bounds", "claimed_bound", "trivial_bound", "roundoff_terms",
           "logit_magnitude", "SNAP_TOLERANCE", "PositionBounds"]
