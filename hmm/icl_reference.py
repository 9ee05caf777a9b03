"""References for the in-context learner (H4): features, in-context moments, gradient descent, r-gram limits.

The H4 construction (``constructions/icl.py``) is a reconstruction in the spirit of Hao et al. 2025 (upper layers
doing in-context gradient descent, one step per layer), von Oswald et al. 2023 and Bai et al. 2023. It learns a
linear map ``W`` from window features to next-token vectors by least squares on the context. This module computes,
without any Transformer, everything it must reproduce:

* **Stream.** A context ``[demo_1, ..., demo_n, test]`` becomes the stream ``BOS d_1 SEP d_2 SEP ... SEP test``
  (position 0 is BOS). The hidden state of the HMM resets at every SEP, so windows never reach across a SEP/BOS:
  a lag that would cross the segment start holds the *pad* symbol instead (the window is "handled, not
  excluded": the first tokens of every segment are training pairs too, with pad-prefixed windows).
* **Training pairs.** Every observation token ``v`` is one pair ``(x_v, y_v)``: ``x_v`` is the feature of the
  r-token window ending at ``v - 1`` (lags ``1..r``), ``y_v = e_{token_v}``. The query at position ``q`` uses the
  feature of the window ending at ``q`` (lags ``0..r-1``) and is trained on all pairs at positions ``<= q``
  (the causal mask; the test segment's own earlier tokens are training data too, so every position's output is a
  legitimate causal prediction of the next token).
* **Features.** ``"pattern"``: one-hot of the whole window pattern. Patterns are length-r windows over
  ``{0..V-1}`` whose pads form the older end, so ``d_x = sum_{j=0..r} V^j``. Least squares on these features is
  the empirical r-gram conditional frequency. ``"concat"``: concatenated per-lag one-hots over ``V + 1`` symbols
  (pad included), ``d_x = r (V + 1)``: an additive (linear-probability) model that cannot represent interactions
  between lags, so its K -> inf limit is *not* the r-gram frequency and its masses can be negative.
* **Moments.** ``A_q = mean_{v <= q, train} x_v x_v^T`` (d_x, d_x), ``B_q = mean x_v y_v^T`` (d_x, V).
* **GD.** ``W_0 = 0``, ``W_{k+1} = W_k - eta (A W_k - B)``, so ``W_K = sum_{i<K} eta (I - eta A)^i B
  = [I - (I - eta A)^K] A^+ B`` (B lies in the range of A). Masses ``z_q = W_K^T x_q``.

Exact mode: pass ``dtype=object`` (Fractions); every function here is then exact. Float mode: ``np.float64``
(default) or any numpy float dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple, Sequence

import numpy as np

from hmm.errors import HmmtxError
from hmm.mixture import SEP, HMMMixture, bayes_predictive, validate_context
from hmm.model import HMM

#: Stream codes for the non-observation positions (observations are 0..V-1).
BOS_CODE = -2
SEP_CODE = SEP  # -1
FEATURE_KINDS = ("pattern", "concat")


# ---------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ICLFeatures:
    """The window feature map.

    Fields:
        vocab_size: V (observation symbols)
        r:          window length (number of lags the feature looks at), r >= 1
        kind:       ``"pattern"`` (one-hot of the window, d_x = sum_{j<=r} V^j) or ``"concat"`` (per-lag one-hots
                    over V + 1 symbols with pad, d_x = r (V + 1))
    """

    vocab_size: int
    r: int
    kind: str = "pattern"

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, (int, np.integer)) or self.vocab_size < 1:
            raise HmmtxError(f"vocab_size must be a positive integer, got {self.vocab_size!r}")
        if not isinstance(self.r, (int, np.integer)) or self.r < 1:
            raise HmmtxError(f"r (window length) must be a positive integer, got {self.r!r}")
        if self.kind not in FEATURE_KINDS:
            raise HmmtxError(f"feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.dim > 200_000:
            raise HmmtxError(f"feature dimension d_x = {self.dim} (V = {self.vocab_size}, r = {self.r}) is too large")

    @property
    def dim(self) -> int:
        V, r = int(self.vocab_size), int(self.r)
        if self.kind == "pattern":
            return sum(V**j for j in range(r + 1))
        return r * (V + 1)

    def pattern_offset(self, j: int) -> int:
        """First index of the patterns with exactly j real tokens (and r - j pads)."""
        return sum(int(self.vocab_size) ** i for i in range(j))

    def index(self, lags: Sequence[int | None]) -> int:
        """Pattern index of a window given by lags (``lags[0]`` most recent, None = pad; pads only at the old end)."""
        if self.kind != "pattern":
            raise HmmtxError("index() is defined for pattern features only")
        lags = _check_lags(lags, self.r, self.vocab_size)
        j = sum(1 for t in lags if t is not None)
        return self.pattern_offset(j) + sum(int(lags[l]) * int(self.vocab_size) ** l for l in range(j))

    def window_of(self, index: int) -> tuple[int | None, ...]:
        """Inverse of :meth:`index` (pattern features)."""
        if self.kind != "pattern":
            raise HmmtxError("window_of() is defined for pattern features only")
        if not 0 <= index < self.dim:
            raise HmmtxError(f"pattern index {index} out of range [0, {self.dim})")
        V = int(self.vocab_size)
        j = max(jj for jj in range(self.r + 1) if self.pattern_offset(jj) <= index)
        rest = index - self.pattern_offset(j)
        lags: list[int | None] = []
        for _ in range(j):
            lags.append(rest % V)
            rest //= V
        return tuple(lags) + (None,) * (self.r - j)

    def active(self, lags: Sequence[int | None]) -> list[int]:
        """Indices of the feature vector's ones (one index for pattern features, r for concat)."""
        lags = _check_lags(lags, self.r, self.vocab_size)
        if self.kind == "pattern":
            return [self.index(lags)]
        V1 = int(self.vocab_size) + 1
        return [l * V1 + (int(self.vocab_size) if t is None else int(t)) for l, t in enumerate(lags)]

    def vector(self, lags: Sequence[int | None], dtype: Any = np.float64) -> np.ndarray:
        """The feature (d_x,) of one window, 0/1 entries of ``dtype`` (``object`` -> Fractions)."""
        out = _zeros((self.dim,), dtype)
        for i in self.active(lags):
            out[i] = _one(dtype)
        return out


def _check_lags(lags: Sequence[int | None], r: int, V: int) -> tuple[int | None, ...]:
    lags = tuple(None if t is None else int(t) for t in lags)
    if len(lags) != r:
        raise HmmtxError(f"window has {len(lags)} lags, expected r = {r}")
    seen_pad = False
    for l, t in enumerate(lags):
        if t is None:
            seen_pad = True
        elif seen_pad:
            raise HmmtxError(f"window {lags}: a real token at lag index {l} follows a pad (pads are the old end)")
        elif not 0 <= t < V:
            raise HmmtxError(f"window {lags}: token {t} out of range [0, {V})")
    return lags


def _zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    if dtype is object:
        out = np.empty(shape, dtype=object)
        out.fill(Fraction(0))
        return out
    return np.zeros(shape, dtype=dtype)


def _one(dtype: Any) -> Any:
    return Fraction(1) if dtype is object else 1


def _as_scalar(value: Any, dtype: Any, name: str) -> Any:
    if dtype is object:
        try:
            return Fraction(value) if not isinstance(value, str) else Fraction(value.strip())
        except (TypeError, ValueError, ZeroDivisionError):
            raise HmmtxError(f"{name}: cannot read {value!r} as an exact rational") from None
    try:
        v = float(Fraction(value)) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise HmmtxError(f"{name}: cannot read {value!r} as a number") from None
    if not np.isfinite(v):
        raise HmmtxError(f"{name}: {v!r} is not finite")
    return np.dtype(dtype).type(v)


# ---------------------------------------------------------------------------------------------- stream
class StreamFeatures(NamedTuple):
    """Per-position quantities of the stream ``BOS d_1 SEP ... SEP test`` (P positions, BOS at 0).

    Fields:
        codes:      (P,) int64: observation ids, :data:`BOS_CODE` at 0, :data:`SEP_CODE` at SEPs
        is_train:   (P,) bool: True at observation tokens (each is one training pair)
        X_prev:     (P, d_x) feature of the window ending at ``v - 1`` (lags 1..r; zero rows where not is_train)
        Y:          (P, V) one-hot of the observation (zero rows at BOS/SEP)
        X_cur:      (P, d_x) query feature: window ending at ``q`` (lags 0..r-1; all pads at BOS/SEP)
        lags_prev:  P tuples of r lags (None = pad) behind X_prev
        lags_cur:   P tuples of r lags behind X_cur
        segment:    (P,) int64 segment index of each position (BOS -> -1, a SEP belongs to the segment it opens)
    """

    codes: np.ndarray
    is_train: np.ndarray
    X_prev: np.ndarray
    Y: np.ndarray
    X_cur: np.ndarray
    lags_prev: tuple
    lags_cur: tuple
    segment: np.ndarray


def stream_codes(segments: Any, vocab_size: int) -> np.ndarray:
    """``[BOS, d_1..., SEP, d_2..., SEP, test...]`` as int64 codes (validated)."""
    segs = validate_context(segments, vocab_size)
    parts = [np.array([BOS_CODE], dtype=np.int64)]
    for i, s in enumerate(segs):
        if i:
            parts.append(np.array([SEP_CODE], dtype=np.int64))
        parts.append(np.asarray(s, dtype=np.int64))
    return np.concatenate(parts)


def _window(codes: np.ndarray, end: int, r: int) -> tuple[int | None, ...]:
    """Lags 0..r-1 of the window ending at ``end`` (inclusive); pads once a BOS/SEP (or the start) is reached."""
    out: list[int | None] = []
    stopped = False
    for l in range(r):
        p = end - l
        if stopped or p < 0 or codes[p] < 0:
            stopped = True
            out.append(None)
        else:
            out.append(int(codes[p]))
    return tuple(out)


def stream_features(segments: Any, feats: ICLFeatures, dtype: Any = np.float64) -> StreamFeatures:
    """Features of every stream position (see :class:`StreamFeatures`)."""
    codes = stream_codes(segments, feats.vocab_size)
    P, d, V = len(codes), feats.dim, int(feats.vocab_size)
    X_prev, X_cur, Y = _zeros((P, d), dtype), _zeros((P, d), dtype), _zeros((P, V), dtype)
    one = _one(dtype)
    is_train = codes >= 0
    lp, lc = [], []
    segment = np.where(codes == BOS_CODE, -1, np.cumsum(codes == SEP_CODE))
    for p in range(P):
        cur = _window(codes, p, feats.r)
        prev = _window(codes, p - 1, feats.r) if is_train[p] else (None,) * feats.r
        lc.append(cur)
        lp.append(prev)
        for i in feats.active(cur):
            X_cur[p, i] = one
        if is_train[p]:
            for i in feats.active(prev):
                X_prev[p, i] = one
            Y[p, codes[p]] = one
    return StreamFeatures(codes, is_train, X_prev, Y, X_cur, tuple(lp), tuple(lc), segment.astype(np.int64))


# ---------------------------------------------------------------------------------------------- moments
class Moments(NamedTuple):
    """In-context second moments at every query position (P positions).

    Fields:
        A:     (P, d_x, d_x) ``mean_{v <= q, train} x_v x_v^T`` (zero where no training pair precedes q)
        B:     (P, d_x, V)   ``mean_{v <= q, train} x_v y_v^T``
        count: (P,) int64 number of training pairs at positions <= q
    """

    A: np.ndarray
    B: np.ndarray
    count: np.ndarray


def in_context_moments(sf: StreamFeatures, dtype: Any = np.float64) -> Moments:
    """Prefix means of ``x x^T`` and ``x y^T`` over training pairs (exact when ``dtype is object``)."""
    P, d = sf.X_prev.shape
    V = sf.Y.shape[1]
    A, B = _zeros((P, d, d), dtype), _zeros((P, d, V), dtype)
    count = np.cumsum(sf.is_train).astype(np.int64)
    if dtype is object:
        Sa, Sb = _zeros((d, d), object), _zeros((d, V), object)
        for p in range(P):
            if sf.is_train[p]:
                x, y = sf.X_prev[p], sf.Y[p]
                Sa = Sa + np.outer(x, x)
                Sb = Sb + np.outer(x, y)
            if count[p]:
                A[p] = Sa / Fraction(int(count[p]))
                B[p] = Sb / Fraction(int(count[p]))
        return Moments(A, B, count)
    X = sf.X_prev.astype(dtype) * sf.is_train[:, None]
    Yf = sf.Y.astype(dtype)
    SA = np.cumsum(X[:, :, None] * X[:, None, :], axis=0)
    SB = np.cumsum(X[:, :, None] * Yf[:, None, :], axis=0)
    n = np.maximum(count, 1).astype(dtype)
    A[:] = SA / n[:, None, None]
    B[:] = SB / n[:, None, None]
    return Moments(A, B, count)


# ---------------------------------------------------------------------------------------------- gradient descent
def _check_gd(eta: Any, K: int, dtype: Any) -> Any:
    if not isinstance(K, (int, np.integer)) or K < 0:
        raise HmmtxError(f"K (number of gradient-descent steps) must be a non-negative integer, got {K!r}")
    eta = _as_scalar(eta, dtype, "eta")
    if not eta > 0:
        raise HmmtxError(f"eta (step size) must be positive, got {eta}")
    return eta


def gd_iterates(A: np.ndarray, B: np.ndarray, eta: Any, K: int, dtype: Any = np.float64) -> list[np.ndarray]:
    """Explicit full-batch GD ``W_{k+1} = W_k - eta (A W_k - B)`` from ``W_0 = 0``; returns ``[W_0, ..., W_K]``.

    Shapes: A (..., d, d), B (..., d, V); each W (..., d, V). Exact when ``dtype is object``.
    """
    eta = _check_gd(eta, K, dtype)
    W = _zeros(B.shape, dtype)
    out = [W]
    for _ in range(K):
        W = W - eta * (A @ W - B)
        out.append(W)
    return out


def gd_closed_form(A: np.ndarray, B: np.ndarray, eta: float, K: int) -> np.ndarray:
    """Float closed form ``[I - (I - eta A)^K] A^+ B`` through the eigendecomposition of the symmetric A.

    ``f(lam) = (1 - (1 - eta lam)^K) / lam`` on eigenvalues above ``d * eps * lam_max`` (the pseudo-inverse's
    numerical range), 0 below it; the numerator is ``-expm1(K log1p(-eta lam))`` when ``eta lam < 1`` (no
    cancellation for small ``eta lam``). Shapes: A (..., d, d), B (..., d, V) -> (..., d, V), float64.
    """
    eta = float(_check_gd(eta, K, np.float64))
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    lam, U = np.linalg.eigh(A)
    lam_max = np.max(np.abs(lam), axis=-1, keepdims=True)
    tol = A.shape[-1] * np.finfo(np.float64).eps * np.maximum(lam_max, 1e-300)
    rng = lam > tol
    x = eta * lam
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        num = np.where(x < 1.0, -np.expm1(K * np.log1p(-np.where(x < 1.0, x, 0.0))), 1.0 - (1.0 - x) ** K)
        f = np.where(rng, num / np.where(rng, lam, 1.0), 0.0)
    return U @ (f[..., :, None] * (np.swapaxes(U, -1, -2) @ B))


def gd_closed_form_exact(A: np.ndarray, B: np.ndarray, eta: Any, K: int) -> np.ndarray:
    """Exact ``sum_{i<K} eta (I - eta A)^i B`` (= ``[I - (I - eta A)^K] A^+ B`` since B is in the range of A).

    Pseudo-inverse-free and independent of the step-by-step iteration: the geometric matrix series is summed by
    binary doubling, ``S_{2n} = S_n + M^n S_n`` and ``S_{n+1} = I + M S_n`` with ``M = I - eta A``. One (d, d) A and
    (d, V) B of Fractions (or numbers, converted exactly).
    """
    eta = _check_gd(eta, K, object)
    A = _to_frac(A, "A")
    B = _to_frac(B, "B")
    d = A.shape[0]
    if A.shape != (d, d) or B.ndim != 2 or B.shape[0] != d:
        raise HmmtxError(f"A has shape {A.shape} and B has shape {B.shape}: expected (d, d) and (d, V)")
    I = _eye(d)
    M = I - eta * A
    S, P = _zeros((d, d), object), I  # S_n = sum_{i<n} M^i, P = M^n
    for bit in bin(K)[2:] if K else "":
        S, P = S + P @ S, P @ P  # n -> 2n
        if bit == "1":
            S, P = I + M @ S, M @ P  # n -> n + 1
    return eta * (S @ B)


def _eye(d: int) -> np.ndarray:
    I = _zeros((d, d), object)
    for i in range(d):
        I[i, i] = Fraction(1)
    return I


def _to_frac(a: Any, name: str) -> np.ndarray:
    arr = np.array(a, dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        v = arr[idx]
        try:
            out[idx] = Fraction(v) if not isinstance(v, float) else Fraction(float(v))
        except (TypeError, ValueError):
            raise HmmtxError(f"{name}{list(idx)}: cannot convert {v!r} to an exact rational") from None
    return out


def pattern_closed_form(sf: StreamFeatures, feats: ICLFeatures, eta: Any, K: int, dtype: Any = np.float64) -> np.ndarray:
    """Pattern features only: masses ``z_q[o] = [1 - (1 - eta c_w)^K] n(w -> o) / n(w)`` with ``w`` the query's
    pattern, ``n`` counts over training pairs ``<= q`` and ``c_w = n(w) / N_q``; 0 when ``n(w) = 0``.

    A third, count-based route to the same numbers (A is diagonal for one-hot features). (P, V).
    """
    if feats.kind != "pattern":
        raise HmmtxError("pattern_closed_form needs pattern features")
    eta = _check_gd(eta, K, dtype)
    P, V = len(sf.codes), int(feats.vocab_size)
    out = _zeros((P, V), dtype)
    counts: dict[int, list[int]] = {}
    N = 0
    for p in range(P):
        if sf.is_train[p]:
            w = feats.index(sf.lags_prev[p])
            counts.setdefault(w, [0] * V)[int(sf.codes[p])] += 1
            N += 1
        w = feats.index(sf.lags_cur[p])
        if N and w in counts:
            nw = sum(counts[w])
            c = (Fraction(nw, N) if dtype is object else np.dtype(dtype).type(nw / N))
            factor = 1 - (1 - eta * c) ** K
            for o in range(V):
                out[p, o] = factor * (Fraction(counts[w][o], nw) if dtype is object else counts[w][o] / nw)
    return out


def least_squares_limit(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``W_inf = A^+ B`` (float64 pseudo-inverse; the K -> inf limit of GD when ``0 < eta < 2 / lam_max``)."""
    return np.linalg.pinv(np.asarray(A, dtype=np.float64), hermitian=True) @ np.asarray(B, dtype=np.float64)


def empirical_rgram(segments: Any, vocab_size: int, r: int, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Empirical r-gram conditional frequencies at every stream position (the K -> inf limit for pattern features).

    ``freq[q, o] = n(w_q -> o) / n(w_q)`` with ``w_q`` the window ending at q (lags 0..r-1, pad-aware) and counts
    over observation tokens at positions ``<= q`` whose preceding window is ``w_q``. Computed from raw windows by a
    dictionary (no feature vectors). Returns ``(freq (P, V), seen (P,) bool)``; unseen rows are zero.
    """
    codes = stream_codes(segments, vocab_size)
    P, V = len(codes), int(vocab_size)
    freq, seen = _zeros((P, V), dtype), np.zeros(P, dtype=bool)
    counts: dict[tuple, list[int]] = {}
    for p in range(P):
        if codes[p] >= 0:
            counts.setdefault(_window(codes, p - 1, r), [0] * V)[int(codes[p])] += 1
        c = counts.get(_window(codes, p, r))
        if c:
            n = sum(c)
            seen[p] = True
            for o in range(V):
                freq[p, o] = Fraction(c[o], n) if dtype is object else c[o] / n
    return freq, seen


# ---------------------------------------------------------------------------------------------- predictions
class ICLReference(NamedTuple):
    """The reference run of the in-context learner at every stream position (P positions).

    Fields:
        masses:   (P, V) ``W_K(q)^T x_q`` (unnormalised next-token masses; may be negative for concat features)
        W:        (P, d_x, V) ``W_K`` at every query
        moments:  :class:`Moments`
        features: :class:`StreamFeatures`
    """

    masses: np.ndarray
    W: np.ndarray
    moments: Moments
    features: StreamFeatures


def icl_reference(
    segments: Any, feats: ICLFeatures, eta: Any, K: int, dtype: Any = np.float64, *, method: str = "closed"
) -> ICLReference:
    """Masses of the in-context learner at every position. ``method``: ``"closed"`` (float eigh closed form, or the
    exact doubling series for ``dtype=object``) or ``"iterate"`` (explicit GD)."""
    if method not in ("closed", "iterate"):
        raise HmmtxError(f"method must be 'closed' or 'iterate', got {method!r}")
    sf = stream_features(segments, feats, dtype)
    mom = in_context_moments(sf, dtype)
    if method == "iterate":
        W = gd_iterates(mom.A, mom.B, eta, K, dtype)[-1]
    elif dtype is object:
        W = np.stack([gd_closed_form_exact(mom.A[p], mom.B[p], eta, K) for p in range(len(sf.codes))])
    else:
        W = gd_closed_form(mom.A, mom.B, float(eta), K).astype(dtype)
    masses = np.einsum("pd,pdv->pv", sf.X_cur, W) if dtype is not object else _obj_readout(sf.X_cur, W)
    return ICLReference(masses, W, mom, sf)


def _obj_readout(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    return np.stack([X[p] @ W[p] for p in range(X.shape[0])])


class NormalisedPrediction(NamedTuple):
    """Masses turned into next-token probabilities, with every irregularity reported (never silently fixed).

    Fields:
        probs:          (..., V) ``z / sum(z)`` where ``sum(z) > 0`` and no entry is negative; otherwise the
                        stated fallback (see :func:`normalise_masses`)
        status:         (...,) int8: 0 = ok, 1 = zero total mass (uniform fallback), 2 = negative entries
                        (``policy="report"``: raw ``z / sum z`` kept; ``"clip"``: ``max(z, 0)`` renormalised)
        negative_mass:  (...,) total of the negative entries of z (0 when none)
    """

    probs: np.ndarray
    status: np.ndarray
    negative_mass: np.ndarray


STATUS_OK, STATUS_ZERO, STATUS_NEGATIVE = 0, 1, 2


def normalise_masses(z: np.ndarray, *, policy: str = "report", zero_tol: float = 0.0) -> NormalisedPrediction:
    """Normalise masses ``z`` (..., V) to probabilities; float only.

    * all entries >= 0 and ``sum > zero_tol``: ``z / sum(z)`` (status 0);
    * ``sum(z) <= zero_tol`` with no negative entries (the query's window was never seen, so W_K^T x = 0): the
      uniform distribution, status 1 — the learner has no information; it is counted, not hidden;
    * negative entries: status 2; ``policy="report"`` keeps ``z / sum(z)`` when ``sum > zero_tol`` (a signed
      vector, not a distribution; uniform if the sum is not positive), ``policy="clip"`` uses ``max(z, 0)``
      renormalised (uniform if all mass is clipped). Either way ``negative_mass`` records what was there.
    """
    if policy not in ("report", "clip"):
        raise HmmtxError(f"policy must be 'report' or 'clip', got {policy!r}")
    z = np.asarray(z, dtype=np.float64)
    V = z.shape[-1]
    neg = np.minimum(z, 0.0).sum(axis=-1)
    has_neg = (z < 0).any(axis=-1)
    work = np.maximum(z, 0.0) if policy == "clip" else z
    s = work.sum(axis=-1)
    good = s > zero_tol
    with np.errstate(divide="ignore", invalid="ignore"):
        probs = np.where(good[..., None], work / np.where(good, s, 1.0)[..., None], 1.0 / V)
    status = np.where(has_neg, STATUS_NEGATIVE, np.where(good, STATUS_OK, STATUS_ZERO)).astype(np.int8)
    return NormalisedPrediction(probs, status, neg)


# ---------------------------------------------------------------------------------------------- optimisation bound
class OptimisationBound(NamedTuple):
    """The K-step optimisation error of GD from 0 on ``0.5 tr(W^T A W) - tr(W^T B)`` (see docs/constructions/icl.md).

    Fields:
        rho:        ``max_{lam in spec(A), lam > 0} |1 - eta lam|`` (contraction factor on range(A))
        lam_min:    smallest positive eigenvalue of A
        lam_max:    largest eigenvalue of A
        factor:     ``rho^K``: ``||W_K - W_inf||_F <= rho^K ||W_inf||_F`` (W_inf = A^+ B)
        w_inf_norm: ``||W_inf||_F``
        bound:      ``rho^K ||W_inf||_F``
        converges:  ``0 < eta lam_max < 2``
    """

    rho: float
    lam_min: float
    lam_max: float
    factor: float
    w_inf_norm: float
    bound: float
    converges: bool


def optimisation_bound(A: np.ndarray, B: np.ndarray, eta: float, K: int) -> OptimisationBound:
    """Spectral bound on ``||W_K - W_inf||_F`` for one (d, d) A and (d, V) B (float64)."""
    eta = float(_check_gd(eta, K, np.float64))
    A = np.asarray(A, dtype=np.float64)
    lam = np.linalg.eigvalsh(A)
    lam_max = float(lam.max()) if lam.size else 0.0
    pos = lam[lam > A.shape[0] * np.finfo(np.float64).eps * max(lam_max, 1e-300)]
    if pos.size == 0:
        return OptimisationBound(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, True)
    rho = float(np.max(np.abs(1.0 - eta * pos)))
    w_inf = least_squares_limit(A, B)
    wn = float(np.linalg.norm(w_inf))
    return OptimisationBound(rho, float(pos.min()), lam_max, rho**K, wn, rho**K * wn, bool(0 < eta * lam_max < 2))


# ---------------------------------------------------------------------------------------------- statistical targets
def true_task_predictive(task: HMM, test: Any) -> np.ndarray:
    """``P_k(x_next | test segment)`` (V,) under the true task (the state resets at the segment start)."""
    from hmm.reference import forward_filter

    return forward_filter(task.as_float(), np.asarray(test, dtype=np.int64)).next_token_probs[-1]


def bayes_mixture_predictive(mixture: HMMMixture, segments: Any) -> np.ndarray:
    """The Bayes predictive of H3 after the whole context (V,): ``hmm.mixture.bayes_predictive`` at the last item."""
    return bayes_predictive(mixture, segments).next_token_probs[-1]


__all__ = [
    "BOS_CODE",
    "SEP_CODE",
    "FEATURE_KINDS",
    "ICLFeatures",
    "StreamFeatures",
    "stream_codes",
    "stream_features",
    "Moments",
    "in_context_moments",
    "gd_iterates",
    "gd_closed_form",
    "gd_closed_form_exact",
    "pattern_closed_form",
    "least_squares_limit",
    "empirical_rgram",
    "ICLReference",
    "icl_reference",
    "NormalisedPrediction",
    "STATUS_OK",
    "STATUS_ZERO",
    "STATUS_NEGATIVE",
    "normalise_masses",
    "OptimisationBound",
    "optimisation_bound",
    "true_task_predictive",
    "bayes_mixture_predictive",
]
