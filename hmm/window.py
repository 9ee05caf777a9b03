"""The window (restarted, fixed-memory) filter and its error bounds (SPEC §4 H2).

**Convention.** For a window length ``r >= 1`` the window filter at position ``t`` looks only at the last ``r``
tokens ``x_s..x_t`` with ``s = t - r + 1``:

* if ``s >= 1`` (the window does not reach the sequence start) the hidden state ``z_s`` at the window's *first*
  position gets the reference prior ``mu`` (``P(z_s = i) = mu_i``, *before* ``x_s`` is observed), and
  ``window_filtered_t ∝ mu^T D_{x_s} A D_{x_{s+1}} ... A D_{x_t}`` (``D_x = diag(B[:, x])``: ``r`` emissions and
  ``r - 1`` transitions);
* if ``s <= 0`` (``t <= r - 1``: the window reaches BOS) it covers the whole prefix ``x_0..x_t`` and uses
  ``initial_probs`` as the prior of ``z_0``: there it *is* the exact filter.

``window_next_token_t = window_filtered_t^T A B``. The reference prior is ``"stationary"`` (default: the stationary
distribution of ``A``), ``"uniform"``, or a given probability vector; it must have full support (every entry > 0),
so that a window has probability zero under ``mu`` only when it is impossible under every prior.

**Bounds** (derived in ``docs/constructions/window_filter.md``). With ``Delta = Delta(A)``, ``tau = tanh(Delta/4)``
and ``delta_mu = max_i d_H(A_i, mu)`` (the Hilbert distance from the prior to the rows of ``A``, which contain every
true prior ``P(z_s | x_<s) = filtered_{s-1} A``):

    ||filtered_t - window_filtered_t||_1 <= 2 tanh( d_r / 4 ),     d_r = min(Delta tau^(r-2) [r >= 2], delta_mu tau^(r-1))
    ||next_t - window_next_t||_1         <= 2 tanh( tau d_r / 4 )

``Delta tau^(r-2)`` is SPEC §4's prior-free form; for the stationary prior ``delta_mu <= Delta`` so the bound gains
one factor ``tau``. When ``A`` has a zero entry ``Delta = inf`` and there is no a-priori bound (said in words). The
a-posteriori bound uses the window's own product: the true belief is a convex combination of the normalised rows of
``A D_{x_s} A ... A D_{x_t}`` (the beliefs reachable from any true prior), so its L1 distance to the window belief is
at most the largest distance from the window belief to one of those rows. It needs no positivity.

Float results carry round-off; :func:`roundoff_allowance` is the stated allowance used when a float error is compared
with a bound. Exact variants (Fractions, with bounds evaluated by :mod:`mpmath`) check bounds below round-off.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.model import HMM

PRIOR_NAMES = ("stationary", "uniform")


# ---------------------------------------------------------------------------------------------- validation
def check_window_length(r: Any, name: str = "r") -> int:
    """``r`` must be an integer >= 1."""
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
        raise HmmtxError(f"{name}: the window length must be an integer >= 1, got {r!r}")
    if int(r) < 1:
        raise HmmtxError(f"{name}: the window length must be >= 1, got {int(r)}")
    return int(r)


def resolve_prior(hmm: HMM, prior: Any = "stationary", *, exact: bool | None = None) -> np.ndarray:
    """The reference prior ``mu`` (S,) of the window's first hidden state.

    Args:
        prior: ``"stationary"`` (stationary distribution of ``A``), ``"uniform"``, or a probability vector (numbers
            or ``"p/q"`` strings).
        exact: return Fractions (object array) when True, float64 when False; default: as the HMM.

    Raises :class:`HmmtxError` when the prior is malformed, not unique (reducible ``A``) or lacks full support.
    """
    from hmm.model import check_stochastic, to_float_array, to_fraction_array

    exact = hmm.exact if exact is None else bool(exact)
    S = hmm.num_states
    if isinstance(prior, str):
        key = prior.strip().lower()
        if key == "stationary":
            from hmm.diagnostics import stationary_distribution

            A = hmm.as_exact().transition_matrix if exact else hmm.as_float().transition_matrix
            mu = stationary_distribution(A)
            if not exact:
                mu = np.asarray(mu, dtype=np.float64)
                mu = mu / mu.sum()
        elif key == "uniform":
            mu = np.array([Fraction(1, S)] * S, dtype=object) if exact else np.full(S, 1.0 / S)
        else:
            raise HmmtxError(f"prior: expected 'stationary', 'uniform' or a probability vector, got {prior!r}")
        name = f"prior ({key})"
    else:
        conv = to_fraction_array if exact else to_float_array
        mu = conv(prior if not isinstance(prior, np.ndarray) else prior.tolist(), "prior", 1)
        if mu.shape != (S,):
            raise HmmtxError(f"prior has {mu.shape[0]} entries, expected {S} (one per hidden state)")
        check_stochastic(mu, "prior")
        name = "prior"
    bad = [i for i in range(S) if not mu[i] > 0]
    if bad:
        raise HmmtxError(
            f"{name}: entry {bad[0]} is {mu[bad[0]]}; the window filter needs a prior with full support (every entry "
            "> 0) so that only impossible windows get probability zero (try --prior uniform)"
        )
    return mu


def parse_prior(text: Any) -> Any:
    """CLI ``--prior`` value: ``"stationary"``, ``"uniform"`` or probabilities ``"1/2,1/4,1/4"`` (a list of strings,
    validated later by :func:`resolve_prior`); non-strings pass through."""
    if not isinstance(text, str):
        return text
    t = text.strip()
    if t.lower() in PRIOR_NAMES:
        return t.lower()
    parts = t.replace(",", " ").split()
    if not parts:
        raise HmmtxError("--prior: expected 'stationary', 'uniform' or probabilities such as '1/2,1/4,1/4'")
    return parts


# ---------------------------------------------------------------------------------------------- references
class WindowResult(NamedTuple):
    """Window-filter output (N sequences of length T; no N axis for a single sequence).

    Fields:
        filtered_probs:   (N, T, S) ``P_mu(z_t | x_{t-r+1..t})`` (exact filter where the window reaches the start)
        next_token_probs: (N, T, V) ``window_filtered_t^T A B``
        window_start:     (T,) int, ``max(0, t - r + 1)``: first position of each window
        reaches_start:    (T,) bool, ``t <= r - 1``: prior = ``initial_probs``, the result equals the exact filter
    """

    filtered_probs: Any
    next_token_probs: Any
    window_start: np.ndarray
    reaches_start: np.ndarray


def _window_index(T: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(T)
    return np.maximum(t - r + 1, 0), t <= r - 1


def _impossible(t: int, seq: int | None, r: int) -> HmmtxError:
    where = f"position {t}" + (f" of sequence {seq}" if seq is not None else "")
    return HmmtxError(
        f"tokens: the window of length {r} ending at {where} has probability zero under this HMM "
        "(the sequence is impossible)"
    )


def window_filter(hmm: HMM, tokens: Any, r: int, prior: Any = "stationary", dtype: Any = np.float64, *,
                  observer: Any = None) -> WindowResult:
    """Batched, vectorised window filter in numpy (every window advanced in lock-step, ``r`` steps; the step order of
    the Transformer's product readout, see :func:`_chain`).

    Args:
        tokens: (T,) or (N, T) token ids.
        r: window length (>= 1).
        prior: reference prior, see :func:`resolve_prior` (a given array is used as is, rounded to ``dtype``).
        dtype: numpy float dtype for every operation.
        observer: optional object with methods ``prior``, ``marker``, ``step``, ``final`` called with the chain's
            intermediate arrays (:func:`_chain`); the window round-off bound's underflow tracker
            (:class:`constructions.window_roundoff.UnderflowTracker`) is one.
    """
    r = check_window_length(r)
    x = hmm.check_tokens(tokens)
    single = x.ndim == 1
    filt, nxt = _chain(hmm, x[None] if single else x, r, prior, dtype, observer, single)
    start, reaches = _window_index(x.shape[-1], r)
    if single:
        return WindowResult(filt[0], nxt[0], start, reaches)
    return WindowResult(filt, nxt, start, reaches)


def _chain(hmm: HMM, x: np.ndarray, r: int, prior: Any, dtype: Any, observer: Any, single: bool) -> tuple:
    """The window chain on (N, T) tokens: ``(filtered, next_token)``.

    Every window is advanced in lock-step, one token per step, in the order of the Transformer's product readout:
    ``z = (p * B[:, x]) @ A`` (unnormalised), ``p = z / sum z``; the last token gives the pre-normalisation belief
    ``joint = p * B[:, x_t]`` and prediction ``joint @ A``, each normalised, and ``next = pred @ B``. A window
    that reaches the start begins from ``pi`` at ``z_0``; the steps before its first token are where the
    Transformer applies the marker operator ``1 pi^T`` (``observer.marker(idx)``, idx = those windows).
    ``observer.prior(p)``, ``observer.step(idx, xs, p, z, c)`` (tokens, inputs of windows ``idx``, their ``z`` and
    its sum ``c``) and ``observer.final(x, p, joint, pred)`` see every intermediate array.
    """
    N, T = x.shape
    pi, A, B = hmm.arrays(dtype)
    mu = np.asarray(resolve_prior(hmm, prior, exact=False), dtype=dtype)
    Bt = np.ascontiguousarray(B.T)
    _, reaches = _window_index(T, r)
    t = np.arange(T)
    # p[n, t] = current (normalised) belief of window t; windows reaching the start begin from pi at z_0.
    p = np.where(reaches[None, :, None], pi[None, None, :], mu[None, None, :]).astype(dtype)
    p = np.broadcast_to(p, (N, T, A.shape[0])).copy()
    if observer is not None:
        observer.prior(p)

    def impossible(c: np.ndarray, idx: np.ndarray) -> HmmtxError:
        n, j = (int(v[0]) for v in np.nonzero(~(c > 0)))
        return _impossible(int(idx[j]), None if single else n, r)

    for k in range(r - 1):
        pos = t - r + 1 + k  # position of the window's k-th token (< 0: not yet started, a marker step)
        idx = np.where(pos >= 0)[0]
        if observer is not None and idx.size < T:
            observer.marker(np.where(pos < 0)[0])
        if idx.size == 0:
            continue
        Bx = Bt[x[:, pos[idx]]]
        z = (p[:, idx] * Bx) @ A
        c = z.sum(axis=2)
        if observer is not None:
            observer.step(idx, x[:, pos[idx]], p[:, idx], z, c)
        if not np.all(c > 0):
            raise impossible(c, idx)
        p[:, idx] = z / c[..., None]
    Bx = Bt[x]  # the last token (k = r - 1) is x_t itself
    joint = p * Bx
    pred = joint @ A
    if observer is not None:
        observer.final(x, p, joint, pred)
    c = joint.sum(axis=2)
    if not np.all(c > 0):
        raise impossible(c, t)
    filt = joint / c[..., None]
    pred = pred / pred.sum(axis=2)[..., None]
    return filt, pred @ B


def window_filter_exact(hmm: HMM, tokens: Any, r: int, prior: Any = "stationary") -> WindowResult:
    """Exact window filter over Fractions (float HMMs converted exactly); a batch is done one sequence at a time."""
    r = check_window_length(r)
    x = hmm.check_tokens(tokens)
    if x.ndim == 2:
        parts = [window_filter_exact(hmm, row, r, prior) for row in x]
        return WindowResult(
            np.stack([p.filtered_probs for p in parts]),
            np.stack([p.next_token_probs for p in parts]),
            parts[0].window_start,
            parts[0].reaches_start,
        )
    h = hmm.as_exact()
    S, V, T = h.num_states, h.num_obs, len(x)
    A = h.transition_matrix.tolist()
    B = h.emission_probs.tolist()
    AB = [[sum((A[i][j] * B[j][v] for j in range(S)), Fraction(0)) for v in range(V)] for i in range(S)]
    mu = list(resolve_prior(h, prior, exact=True))
    pi = list(h.initial_probs)
    start, reaches = _window_index(T, r)
    xs = x.tolist()
    filt, nxt = [], []
    for t in range(T):
        alpha = list(pi if reaches[t] else mu)
        for k, pos in enumerate(range(int(start[t]), t + 1)):
            o = xs[pos]
            alpha = [alpha[i] * B[i][o] for i in range(S)]
            if pos < t:
                alpha = [sum((alpha[i] * A[i][j] for i in range(S)), Fraction(0)) for j in range(S)]
        mass = sum(alpha, Fraction(0))
        if mass == 0:
            raise _impossible(t, None, r)
        f = [a / mass for a in alpha]
        filt.append(f)
        nxt.append([sum((f[i] * AB[i][v] for i in range(S)), Fraction(0)) for v in range(V)])
    obj = lambda rows: np.array(rows, dtype=object)  # noqa: E731
    return WindowResult(obj(filt), obj(nxt), start, reaches)


# ---------------------------------------------------------------------------------------------- a-priori bound
class AprioriBound(NamedTuple):
    """Sequence-independent bounds on the window filter's error, valid at every position ``t``.

    Fields (floats, or :class:`mpmath.mpf` when computed with ``dps``; ``None`` where no bound exists):
        filtered:     bound on ``||filtered_t - window_filtered_t||_1``: ``2 tanh(d_r / 4)``
        next_token:   bound on ``||next_t - window_next_t||_1``: ``2 tanh(tau d_r / 4)``
        spec_form:    SPEC §4's prior-free form ``2 tanh(Delta tau^(r-2) / 4)`` (None for r < 2 or Delta = inf)
        hilbert:      ``d_r = min(Delta tau^(r-2) [r >= 2], delta_mu tau^(r-1))``, the Hilbert-metric bound
        Delta:        projective diameter of A (inf when A has a zero)
        tau:          Birkhoff contraction ``tanh(Delta/4)`` (1 when A has a zero)
        prior_distance: ``delta_mu = max_i d_H(A_i, mu)`` (inf when A has a zero)
        r:            window length
        note:         the bound in words, or why there is none
    """

    filtered: Any
    next_token: Any
    spec_form: Any
    hilbert: Any
    Delta: Any
    tau: Any
    prior_distance: Any
    r: int
    note: str


def _max_ratio_exact(num: list[Fraction], den: list[Fraction]) -> Fraction:
    return max(a / b for a, b in zip(num, den))


def a_priori_bound(hmm: HMM, r: int, prior: Any = "stationary", *, dps: int | None = None) -> AprioriBound:
    """The a-priori (Birkhoff) bound for window length ``r`` and reference prior ``prior``.

    With ``dps`` the bound is evaluated with :mod:`mpmath` at ``dps`` digits from the *exact* matrix (cross-ratios are
    exact Fractions; only ``log``/``tanh`` are rounded, at ``dps`` digits) for comparison with exact errors below
    float64 round-off. Without it, float64 (relative error a few ulps).
    """
    from hmm.diagnostics import projective_diameter, projective_diameter_mp

    r = check_window_length(r)
    h = hmm.as_exact() if dps is not None else hmm.as_float()
    A = h.transition_matrix
    mu = resolve_prior(h, prior, exact=dps is not None)
    if dps is not None:
        import mpmath

        ctx = mpmath.mp.clone()
        ctx.dps = dps + 10
        log, tanh, inf = ctx.log, ctx.tanh, ctx.inf
        Delta = projective_diameter_mp(A, dps=dps + 10)
        if Delta == mpmath.inf:
            Delta = inf
        if any(v == 0 for v in A.ravel()):
            dmu = inf
        else:
            rows = [list(row) for row in A.tolist()]
            mus = list(mu)
            ratios = [_max_ratio_exact(row, mus) * _max_ratio_exact(mus, row) for row in rows]
            big = max(ratios)
            dmu = log(ctx.mpf(big.numerator)) - log(ctx.mpf(big.denominator))
        tau = ctx.mpf(1) if Delta == inf else tanh(Delta / 4)
    else:
        log, tanh, inf = math.log, math.tanh, math.inf
        Af = np.asarray(A, dtype=np.float64)
        Delta = projective_diameter(Af)
        if np.any(Af == 0):
            dmu = inf
        else:
            L = np.log(Af) - np.log(np.asarray(mu, dtype=np.float64))[None, :]
            dmu = float(np.max(L.max(axis=1) - L.min(axis=1)))
        tau = 1.0 if math.isinf(Delta) else math.tanh(Delta / 4)
    cands = []
    if r >= 2 and Delta != inf:
        cands.append(Delta * tau ** (r - 2))
    if dmu != inf:
        cands.append(dmu * tau ** (r - 1))
    spec = 2 * tanh(Delta * tau ** (r - 2) / 4) if (r >= 2 and Delta != inf) else None
    if not cands:
        if Delta == inf:
            note = (
                "no a-priori bound: A has a zero entry, so Delta(A) = inf and tau(A) = 1 (Birkhoff's theorem gives no "
                "contraction); use the a-posteriori bound from the window's own product"
            )
        else:
            note = "no a-priori bound for r = 1 without a finite prior distance"
        return AprioriBound(None, None, None, None, Delta, tau, dmu, r, note)
    d = min(cands)
    filt = 2 * tanh(d / 4)
    nxt = 2 * tanh(tau * d / 4)
    if dps is not None:
        import mpmath

        with mpmath.workdps(dps):
            filt, nxt, d = +filt, +nxt, +d
            spec = +spec if spec is not None else None
    note = (
        f"Birkhoff: d_H <= min(Delta tau^(r-2), delta_mu tau^(r-1)) = {float(d):.3e} "
        f"(Delta = {float(Delta):.4g}, tau = {float(tau):.4g}, delta_mu = {float(dmu):.4g})"
    )
    t = float(tau)
    if t > 0.9:
        note += f"; tau = {t:.6g} is close to 1 (slow mixing / sticky A), so the bound decays very slowly in r"
        if 0 < t < 1:
            need = 2 + math.log(4 * math.atanh(0.005) / float(Delta)) / math.log(t)
            note += f" (about r = {max(need, 2):.0f} tokens for a bound of 1e-2)"
    return AprioriBound(filt, nxt, spec, d, Delta, tau, dmu, r, note)


# ---------------------------------------------------------------------------------------------- a-posteriori bound
class PosterioriBound(NamedTuple):
    """Per-position bounds from the window's own product matrix (0 where the window reaches the start).

    Fields (shapes (N, T), or (T,) for one sequence):
        filtered:   ``max_i ||v_i - w_t||_1`` over the normalised rows ``v_i`` of ``A D_{x_s} A ... A D_{x_t}``
                    (the beliefs reachable from the possible true priors), ``w_t`` the window belief
        next_token: ``max_i ||(v_i - w_t) A B||_1``
        hilbert_diameter: Hilbert diameter of the ``v_i`` (inf when their supports differ); ``2 tanh(diam / 4)`` is
                    the weaker, Hilbert-metric form of the same bound (None unless requested)
    """

    filtered: Any
    next_token: Any
    hilbert_diameter: Any


def a_posteriori_bound(
    hmm: HMM,
    tokens: Any,
    r: int,
    prior: Any = "stationary",
    dtype: Any = np.float64,
    *,
    window: WindowResult | None = None,
    with_hilbert: bool = False,
) -> PosterioriBound:
    """A-posteriori bound for every position of every sequence (float, vectorised over windows).

    Valid for any HMM (zeros allowed): for ``s = t - r + 1 >= 1`` the true prior of ``z_s`` is ``filtered_{s-1} A``,
    a convex combination of the rows ``A_i``, so the true belief at ``t`` is a convex combination of the normalised
    non-zero rows ``v_i`` of ``A M`` (``M = D_{x_s} A ... A D_{x_t}``); the L1 norm is convex, so the distance from the
    window belief ``w_t`` is at most ``max_i ||v_i - w_t||_1``; likewise after the linear map ``A B``.
    """
    r = check_window_length(r)
    x = hmm.check_tokens(tokens)
    single = x.ndim == 1
    x = x[None] if single else x
    N, T = x.shape
    _, A, B = hmm.arrays(dtype)
    S = A.shape[0]
    if window is None:
        window = window_filter(hmm, x, r, prior, dtype)
    w = np.asarray(window.filtered_probs)
    w = w[None] if w.ndim == 2 else w
    filt = np.zeros((N, T), dtype=dtype)
    nxt = np.zeros((N, T), dtype=dtype)
    hil = np.zeros((N, T), dtype=np.float64) if with_hilbert else None
    if T > r:
        ts = np.arange(r, T)  # windows with s = t - r + 1 >= 1
        Bt = np.ascontiguousarray(B.T)
        P = np.broadcast_to(A, (N, len(ts), S, S)).copy()  # row i: belief from prior A_i
        for k in range(r):
            P = P * Bt[x[:, ts - r + 1 + k]][:, :, None, :]
            c = P.sum(axis=3, keepdims=True)
            P = np.divide(P, c, out=np.zeros_like(P), where=c > 0)
            if k < r - 1:
                P = P @ A
        valid = c[..., 0] > 0  # (N, nt, S)
        diff = P - w[:, ts, None, :]
        d1 = np.where(valid, np.abs(diff).sum(axis=3), 0)
        d2 = np.where(valid, np.abs(diff @ (A @ B)).sum(axis=3), 0)
        filt[:, ts] = d1.max(axis=2)
        nxt[:, ts] = d2.max(axis=2)
        if with_hilbert:
            with np.errstate(divide="ignore"):
                L = np.log(P)
            diam = np.zeros(valid.shape[:2])
            for i in range(S):
                for j in range(i + 1, S):
                    both = valid[..., i] & valid[..., j]
                    same = np.all((P[..., i, :] > 0) == (P[..., j, :] > 0), axis=-1)
                    sup = P[..., i, :] > 0
                    dl = np.where(sup, L[..., i, :] - L[..., j, :], 0.0)
                    dl_max = np.where(sup, dl, -np.inf).max(axis=-1)
                    dl_min = np.where(sup, dl, np.inf).min(axis=-1)
                    dij = np.where(same, dl_max - dl_min, np.inf)
                    diam = np.where(both, np.maximum(diam, dij), diam)
            hil[:, ts] = diam
    if single:
        return PosterioriBound(filt[0], nxt[0], hil[0] if with_hilbert else None)
    return PosterioriBound(filt, nxt, hil)


def a_posteriori_bound_exact(hmm: HMM, tokens: Any, r: int, prior: Any = "stationary") -> PosterioriBound:
    """The same a-posteriori bound in exact Fractions for one sequence (T,); ``hilbert_diameter`` is None."""
    r = check_window_length(r)
    x = hmm.check_tokens(tokens)
    if x.ndim != 1:
        raise HmmtxError(f"tokens: expected one sequence of shape (T,), got {x.shape}")
    h = hmm.as_exact()
    S, V, T = h.num_states, h.num_obs, len(x)
    A = h.transition_matrix.tolist()
    B = h.emission_probs.tolist()
    AB = [[sum((A[i][j] * B[j][v] for j in range(S)), Fraction(0)) for v in range(V)] for i in range(S)]
    w = window_filter_exact(h, x, r, prior).filtered_probs
    zero = Fraction(0)
    filt = np.array([zero] * T, dtype=object)
    nxt = np.array([zero] * T, dtype=object)
    xs = x.tolist()
    for t in range(r, T):
        best1, best2 = zero, zero
        for i in range(S):
            v = list(A[i])
            for pos in range(t - r + 1, t + 1):
                v = [v[a] * B[a][xs[pos]] for a in range(S)]
                if pos < t:
                    v = [sum((v[a] * A[a][b] for a in range(S)), zero) for b in range(S)]
            m = sum(v, zero)
            if m == 0:
                continue
            d = [v[a] / m - w[t][a] for a in range(S)]
            best1 = max(best1, sum((abs(e) for e in d), zero))
            best2 = max(best2, sum((abs(sum((d[a] * AB[a][o] for a in range(S)), zero)) for o in range(V)), zero))
        filt[t], nxt[t] = best1, best2
    return PosterioriBound(filt, nxt, None)


# ---------------------------------------------------------------------------------------------- errors
def roundoff_allowance(num_states: int, T: int, r: int, dtype: Any = np.float64) -> float:
    """Stated allowance for float round-off when a float-measured L1 error is compared with a bound.

    Every step of a normalised forward filter (multiply by ``B[:, x]``, divide by the sum, multiply by ``A``) changes
    each entry by a relative amount of at most about ``(S + 3) eps`` (all terms are non-negative, so there is no
    cancellation); a relative perturbation ``e`` moves a vector by at most ``2e`` in the Hilbert metric, Bayes steps
    are Hilbert isometries and ``A`` is non-expanding, so after ``T`` steps the Hilbert error is at most
    ``2 (S + 3) T eps`` and the L1 error at most half of that. Measured errors involve two filters (``T`` and ``r``
    steps), the bound itself and the vertices of the a-posteriori bound; the allowance doubles the sum:
    ``4 (S + 3) (T + r + 2) eps``.
    """
    eps = float(np.finfo(dtype).eps)
    return 4.0 * (num_states + 3) * (T + r + 2) * eps


def exact_le(measured: Any, bound: Any, dps: int = 50) -> bool:
    """``measured <= bound`` for an exact Fraction ``measured`` and an mpmath ``bound`` evaluated at ``dps`` digits.

    The bound carries a relative rounding allowance of ``10^-(dps - 10)`` (``log``/``tanh`` evaluated at ``dps``
    digits); the Fraction is converted with ``dps + 20`` digits.
    """
    import mpmath

    with mpmath.workdps(dps + 20):
        m = mpmath.mpf(Fraction(measured).numerator) / mpmath.mpf(Fraction(measured).denominator)
        return bool(m <= mpmath.mpf(bound) * (1 + mpmath.mpf(10) ** (-(dps - 10))))


class WindowError(NamedTuple):
    """Measured window-filter error per position (shapes (N, T), or (T,) for one sequence).

    Fields:
        filtered:   ``||filtered_t - window_filtered_t||_1``
        next_token: ``||next_t - window_next_t||_1``
    """

    filtered: Any
    next_token: Any


def window_error(hmm: HMM, tokens: Any, r: int, prior: Any = "stationary", dtype: Any = np.float64) -> WindowError:
    """Float L1 errors of the window filter against the full forward filter."""
    from hmm.reference import forward_filter

    full = forward_filter(hmm, tokens, dtype)
    win = window_filter(hmm, tokens, r, prior, dtype)
    return WindowError(
        np.abs(full.filtered_probs - win.filtered_probs).sum(axis=-1),
        np.abs(full.next_token_probs - win.next_token_probs).sum(axis=-1),
    )


def window_error_exact(hmm: HMM, tokens: Any, r: int, prior: Any = "stationary") -> WindowError:
    """Exact (Fraction) L1 errors for one sequence (T,)."""
    from hmm.reference import forward_filter_exact

    full = forward_filter_exact(hmm, tokens)
    win = window_filter_exact(hmm, tokens, r, prior)
    l1 = lambda a, b: np.array([sum((abs(u - v) for u, v in zip(p, q)), Fraction(0)) for p, q in zip(a, b)],  # noqa: E731
                               dtype=object)
    return WindowError(l1(full.filtered_probs, win.filtered_probs), l1(full.next_token_probs, win.next_token_probs))



# ---------------------------------------------------------------------------------------------- error vs r
class WindowCurve(NamedTuple):
    """Memory error of the window filter and both bounds against the window length ``r = 1..r_max``.

    Per-r arrays (length ``r_max``; L1 norms; ``nan`` where no a-priori bound exists):
        r:                     1..r_max
        max_error, mean_error: max / mean over sampled sequences and positions ``t >= r`` of
                               ``||filtered_t - window_filtered_t||_1`` (positions ``t < r`` are exact)
        max_error_next:        the same max for next-token probabilities
        a_priori, a_priori_next: the a-priori bounds (filtered / next-token)
        a_posteriori:          max over positions of the a-posteriori bound (filtered)
        a_posteriori_next:     the same for next-token probabilities
        allowance:             the stated round-off allowance of each comparison
        check:                 per r: ``"float"`` (float comparison), ``"exact"`` (a-priori bound below
                               ``max(1e-13, 10 allowance)``: checked in exact Fractions on a short prefix of the
                               first sequence against the mpmath bound) or ``"none"`` (no a-priori bound)
        holds:                 per r: measured <= every bound (+ allowance; exactly where ``check == "exact"``)
    Scalars:
        Delta, tau, prior_distance: of A and the prior (inf / 1 / inf when A has zeros)
        rate:                  fitted geometric decay rate of ``mean_error`` in r (``exp`` of the least-squares slope
                               of ``log mean_error`` over the r with ``mean_error > 1e3 * allowance``; nan if < 3)
        note:                  the a-priori bound's note, in words
        params:                JSON-ready run parameters
    """

    r: np.ndarray
    max_error: np.ndarray
    mean_error: np.ndarray
    max_error_next: np.ndarray
    a_priori: np.ndarray
    a_priori_next: np.ndarray
    a_posteriori: np.ndarray
    a_posteriori_next: np.ndarray
    allowance: np.ndarray
    check: tuple
    holds: np.ndarray
    Delta: float
    tau: float
    prior_distance: float
    rate: float
    note: str
    params: dict

    def as_dict(self) -> dict:
        """JSON-ready (``nan``/``inf`` become None)."""

        def clean(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return [clean(x) for x in v.tolist()]
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, (float, np.floating)):
                return float(v) if math.isfinite(v) else None
            if isinstance(v, np.bool_):
                return bool(v)
            return v

        return {k: clean(v) if k != "params" else v for k, v in self._asdict().items()}


#: Bounds below this (or below 10x the round-off allowance) are checked in exact arithmetic.
EXACT_CHECK_BELOW = 1e-13


def window_curve(
    hmm: HMM,
    r_max: int,
    *,
    prior: Any = "stationary",
    num_sequences: int = 16,
    length: int = 200,
    seed: int = 0,
    tokens: Any = None,
    exact_check: bool = True,
) -> WindowCurve:
    """Measure the window filter's error and both bounds for ``r = 1..r_max`` on sequences sampled from ``hmm``
    (or on ``tokens`` (N, T) when given). See :class:`WindowCurve`."""
    from hmm.sampling import sample

    r_max = check_window_length(r_max, "--r-max")
    for val, nm in ((num_sequences, "--seqs"), (length, "--length")):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise HmmtxError(f"{nm} must be a positive integer, got {val!r}")
    h = hmm.as_float()
    if tokens is None:
        x = sample(h, int(num_sequences), int(length), seed=seed).tokens
    else:
        x = h.check_tokens(tokens)
        x = x[None] if x.ndim == 1 else x
    N, T = x.shape
    if T <= r_max:
        raise HmmtxError(f"--length {T} must exceed --r-max {r_max} (positions t < r are exact, nothing to measure)")
    resolve_prior(h, prior)  # validate once, early
    S = h.num_states
    rows = {k: np.full(r_max, np.nan) for k in ("max_error", "mean_error", "max_error_next", "a_priori",
                                                 "a_priori_next", "a_posteriori", "a_posteriori_next", "allowance")}
    check, holds = [], np.zeros(r_max, dtype=bool)
    pri = None
    for i, r in enumerate(range(1, r_max + 1)):
        err = window_error(h, x, r, prior)
        post = a_posteriori_bound(h, x, r, prior)
        pri = a_priori_bound(h, r, prior)
        alw = roundoff_allowance(S, T, r)
        tail = err.filtered[:, r:]
        rows["max_error"][i] = tail.max()
        rows["mean_error"][i] = tail.mean()
        rows["max_error_next"][i] = err.next_token[:, r:].max()
        rows["a_posteriori"][i] = post.filtered.max()
        rows["a_posteriori_next"][i] = post.next_token.max()
        rows["allowance"][i] = alw
        ok = bool(np.all(err.filtered <= post.filtered + alw) and np.all(err.next_token <= post.next_token + alw))
        if pri.filtered is None:
            check.append("none")
        else:
            rows["a_priori"][i] = float(pri.filtered)
            rows["a_priori_next"][i] = float(pri.next_token)
            if exact_check and float(pri.filtered) < max(EXACT_CHECK_BELOW, 10 * alw):
                check.append("exact")
                hx = hmm.as_exact()
                mp = a_priori_bound(hx, r, prior, dps=50)
                ex = window_error_exact(hx, x[0, : min(T, r + 6)], r, prior)
                ok = ok and all(exact_le(v, mp.filtered) for v in ex.filtered) and \
                    all(exact_le(v, mp.next_token) for v in ex.next_token)
            else:
                check.append("float")
                ok = ok and rows["max_error"][i] <= pri.filtered + alw and rows["max_error_next"][i] <= pri.next_token + alw
        holds[i] = ok
    me, al = rows["mean_error"], rows["allowance"]
    use = np.isfinite(me) & (me > 1e3 * al)
    rate = float("nan")
    if use.sum() >= 3:
        slope = np.polyfit(np.arange(1, r_max + 1)[use], np.log(me[use]), 1)[0]
        rate = float(np.exp(slope))
    params = {"r_max": r_max, "prior": prior if isinstance(prior, str) else [str(v) for v in np.asarray(prior).tolist()],
              "num_sequences": int(N), "length": int(T), "seed": seed, "S": S, "V": h.num_obs,
              "hmm_name": hmm.name}
    return WindowCurve(np.arange(1, r_max + 1), rows["max_error"], rows["mean_error"], rows["max_error_next"],
                       rows["a_priori"], rows["a_priori_next"], rows["a_posteriori"], rows["a_posteriori_next"],
                       rows["allowance"], tuple(check), holds, float(pri.Delta), float(pri.tau),
                       float(pri.prior_distance), rate, pri.note, params)

__all__ = [
    "PRIOR_NAMES",
    "check_window_length",
    "resolve_prior",
    "parse_prior",
    "WindowResult",
    "window_filter",
    "window_filter_exact",
    "AprioriBound",
    "a_priori_bound",
    "PosterioriBound",
    "a_posteriori_bound",
    "a_posteriori_bound_exact",
    "roundoff_allowance",
    "exact_le",
    "WindowError",
    "window_error",
    "window_error_exact",
    "WindowCurve",
    "window_curve",
    "EXACT_CHECK_BELOW",
]
