"""DP-free relative-position heads as memory kernels, and fitting their output weights (Wang & E, W1/W3).

Reconstruction in the spirit of Wang & E (2024), §3.0(c) of ``shared/papers/wang_e2024_expressive.md``: the paper's
full text was not available, so the conventions below are ours and are stated where they matter.

Conventions
-----------
* Lags ``s = 1, 2, 3, ...`` (the token ``s`` steps back). Lag 0 is masked in every memory head: the current token is
  carried by the residual stream (the notes' first option; log-type needs it since ``-log 0`` is undefined).
* A DP-free head has no query/key term; its score at lag ``s`` is the RPE bias ``p * phi(s)``:

  - lin-type ``phi(s) = -s``: weight ``w_p(s) = e^{-p s}``, infinite-past normaliser ``Z_p = 1/(e^p - 1)``;
  - log-type ``phi(s) = -log s``: weight ``w_p(s) = s^{-p}``, ``Z_p = zeta(p)`` (needs ``p > 1``).

  The head kernel (attention weight at lag ``s`` with an infinite past) is ``a_p(s) = w_p(s) / Z_p``.
* A head grid has exponents ``p_k = p0 + beta (k - 1)``, ``k = 1..H``. With ``u = e^{-beta s}`` (lin) or
  ``u = s^{-beta}`` (log), ``w_{p_k}(s) = w_{p0}(s) u^{k-1}``, so a combination ``K = sum_k c_k a_{p_k}`` is
  ``K(s) = w_{p0}(s) Q(u_s)`` with the polynomial ``Q(u) = sum_k (c_k / Z_{p_k}) u^{k-1}`` of degree ``H - 1``.
  This is the notes' central mechanism: the RPE turns kernel approximation into polynomial approximation in ``u``.
* Fitting: ``Q`` is parameterised in the shifted Chebyshev basis ``T_j(2u - 1)`` on ``[0, 1]`` (well conditioned in
  float64) and fitted by iteratively reweighted least squares towards the least l1 error over the lags
  (direct lags plus aggregated tail blocks). The head output weights ``c_k`` (the monomial coefficients, which are
  huge: the reason the notes ask for high precision) are then obtained **exactly**: the Chebyshev coefficients are
  float64 numbers, i.e. dyadic rationals, and the shifted Chebyshev polynomials have integer coefficients.
* Error: for the linear memory-extraction map ``x -> sum_s K(s) x_{t-s}`` the sup over inputs ``|x| <= 1`` is the l1
  norm ``sum_s |K(s) - rho(s)|`` (attained by ``x_{t-s} = sign(K(s) - rho(s))``). :func:`l1_error` computes it in
  fixed-point big-integer arithmetic (Horner in ``u`` with a proved rounding bound) over lags ``1..S`` and adds a
  tail bound for ``s > S``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple

import mpmath
import numpy as np

from hmm.errors import HmmtxError

RPE_TYPES = ("lin", "log")


class LinRPE:
    """lin-type RPE: ``phi(s) = s``, head weight ``w_p(s) = e^{-p s}``, infinite-past normaliser ``1/(e^p - 1)``."""

    name = "lin"

    @staticmethod
    def phi(s: np.ndarray) -> np.ndarray:
        return s

    @staticmethod
    def phi_scalar(s: float) -> float:
        """``phi`` of one float lag (``math`` functions, as the bias tables use)."""
        return s

    @staticmethod
    def weight(p: float, s: np.ndarray) -> np.ndarray:
        """``w_p(s)`` at float64 lags ``s`` (any shape)."""
        return np.exp(-p * s)

    @staticmethod
    def weight_mp(p: Any, s: Any) -> Any:
        return mpmath.exp(-p * s)

    @staticmethod
    def normaliser_mp(p: Any) -> Any:
        return 1 / mpmath.expm1(p)


class LogRPE:
    """log-type RPE: ``phi(s) = log s``, head weight ``w_p(s) = s^{-p}``, infinite-past normaliser ``zeta(p)``."""

    name = "log"

    @staticmethod
    def phi(s: np.ndarray) -> np.ndarray:
        return np.log(s)

    @staticmethod
    def phi_scalar(s: float) -> float:
        """``phi`` of one float lag (``math`` functions, as the bias tables use)."""
        return math.log(s)

    @staticmethod
    def weight(p: float, s: np.ndarray) -> np.ndarray:
        """``w_p(s)`` at float64 lags ``s`` (any shape)."""
        return s ** (-float(p))

    @staticmethod
    def weight_mp(p: Any, s: Any) -> Any:
        return mpmath.power(s, -p)

    @staticmethod
    def normaliser_mp(p: Any) -> Any:
        return _zeta_cached(p, mpmath.mp.prec)


#: The RPE kinds by name (``HeadGrid.rpe`` holds the name; :func:`rpe_kind` gives the behaviour).
RPE_KINDS: dict[str, Any] = {"lin": LinRPE, "log": LogRPE}


def rpe_kind(name: str) -> Any:
    """The :class:`LinRPE` / :class:`LogRPE` of an RPE type name (HmmtxError for others)."""
    try:
        return RPE_KINDS[name]
    except KeyError:
        raise HmmtxError(f"rpe type {name!r} unknown (expected one of {', '.join(RPE_TYPES)})") from None
TARGET_KINDS = ("exp", "power", "spike")

_FIT_DIRECT = 512  # lags fitted one row each; beyond, exact block sums
# Ratio of consecutive tail blocks (lags beyond the exactly summed range).
_TAIL_RATIO = 1.15


# ---------------------------------------------------------------------------------------------- grids and targets
@dataclass(frozen=True)
class HeadGrid:
    """``H`` DP-free heads of one RPE type with exponents ``p_k = p0 + beta (k-1)``."""

    rpe: str
    H: int
    p0: float
    beta: float

    def __post_init__(self) -> None:
        if self.rpe not in RPE_TYPES:
            raise HmmtxError(f"rpe type {self.rpe!r} unknown (expected one of {', '.join(RPE_TYPES)})")
        if not isinstance(self.H, (int, np.integer)) or isinstance(self.H, bool) or self.H < 1:
            raise HmmtxError(f"number of heads H={self.H!r} must be a positive integer")
        for name in ("p0", "beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise HmmtxError(f"head grid {name}={v!r} must be a finite number")
        if self.beta <= 0:
            raise HmmtxError(f"head grid spacing beta={self.beta} must be > 0")
        if self.rpe == "lin" and self.p0 <= 0:
            raise HmmtxError(f"lin-type base exponent p0={self.p0} must be > 0 (kernel e^(-p s) must be summable)")
        if self.rpe == "log" and self.p0 <= 1:
            raise HmmtxError(f"log-type base exponent p0={self.p0} must be > 1 (kernel s^(-p) must be summable)")

    @property
    def exponents(self) -> np.ndarray:
        """(H,) float64 exponents ``p_k``."""
        return self.p0 + self.beta * np.arange(self.H, dtype=np.float64)

    def exponents_mp(self) -> list:
        return [mpmath.mpf(self.p0) + mpmath.mpf(self.beta) * k for k in range(self.H)]

    def with_heads(self, H: int) -> "HeadGrid":
        return HeadGrid(self.rpe, int(H), self.p0, self.beta)


@dataclass(frozen=True)
class TargetKernel:
    """A target memory kernel on lags ``s >= 1`` with unit l1 norm.

    * ``exp``   ``rho(s) = (e^lam - 1) e^{-lam s}``      (light-tailed; ``param = lam > 0``)
    * ``power`` ``rho(s) = s^{-alpha} / zeta(alpha)``     (heavy-tailed; ``param = alpha > 1``)
    * ``spike`` ``rho(s) = 1[s = T]``                     (a fixed memory at lag ``T``, Task I; ``param = T >= 1``)
    """

    kind: str
    param: float

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise HmmtxError(f"target kernel {self.kind!r} unknown (expected one of {', '.join(TARGET_KINDS)})")
        v = self.param
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise HmmtxError(f"{self.kind} kernel parameter {v!r} must be a finite number")
        if self.kind == "exp" and v <= 0:
            raise HmmtxError(f"exponential kernel rate lam={v} must be > 0")
        if self.kind == "power" and v <= 1:
            raise HmmtxError(f"power-law kernel exponent alpha={v} must be > 1 (summable)")
        if self.kind == "spike" and (v < 1 or int(v) != v):
            raise HmmtxError(f"spike lag T={v} must be an integer >= 1")

    @property
    def label(self) -> str:
        if self.kind == "exp":
            return f"exp(lam={self.param:g})"
        if self.kind == "power":
            return f"power(alpha={self.param:g})"
        return f"spike(T={int(self.param)})"

    def values(self, s: np.ndarray) -> np.ndarray:
        """float64 ``rho(s)`` for integer lags ``s >= 1``."""
        s = np.asarray(s, dtype=np.float64)
        if self.kind == "exp":
            return math.expm1(self.param) * np.exp(-self.param * s)
        if self.kind == "power":
            return s ** (-self.param) / _zeta_float(self.param)
        return (s == int(self.param)).astype(np.float64)

    def values_mp(self, S: int) -> list:
        """``[rho(1), ..., rho(S)]`` as mpf at the current precision."""
        return list(_target_mp(self.kind, self.param, int(S), mpmath.mp.prec))

    def tail_mass_mp(self, S: int):
        """``sum_{s > S} |rho(s)|`` exactly (closed form / Hurwitz zeta)."""
        lam = mpmath.mpf(self.param)
        if self.kind == "exp":
            return mpmath.expm1(lam) * mpmath.exp(-lam * (S + 1)) / (-mpmath.expm1(-lam))
        if self.kind == "power":
            return mpmath.zeta(lam, S + 1) / mpmath.zeta(lam)
        return mpmath.mpf(0) if int(self.param) <= S else mpmath.mpf(1)

    def block_mass(self, a: float, b: float) -> float:
        """float64 ``sum_{a <= s < b} rho(s)`` (``b`` may be inf); used only to build fitting rows."""
        if self.kind == "spike":
            T = int(self.param)
            return 1.0 if a <= T < b else 0.0
        return float(_weight_block(self.kind, self.param, a, b) / (_norm_float(self.kind, self.param)))


@lru_cache(maxsize=64)
def _target_mp(kind: str, param: float, S: int, prec: int) -> tuple:
    with mpmath.workprec(prec):
        out = []
        if kind == "exp":
            lam = mpmath.mpf(param)
            c = mpmath.expm1(lam)
            out = [c * mpmath.exp(-lam * s) for s in range(1, S + 1)]
        elif kind == "power":
            a = mpmath.mpf(param)
            z = mpmath.zeta(a)
            out = [mpmath.power(s, -a) / z for s in range(1, S + 1)]
        else:
            T = int(param)
            out = [mpmath.mpf(1 if s == T else 0) for s in range(1, S + 1)]
        return tuple(out)


def _norm_float(kind: str, param: float) -> float:
    """Reciprocal of the target normaliser in the ``_weight_block`` units (exp: 1/(e^lam-1); power: zeta)."""
    if kind == "exp":
        return 1.0 / math.expm1(param)
    return _zeta_float(param)


@lru_cache(maxsize=256)
def _zeta_float(p: float) -> float:
    return float(mpmath.zeta(p))


@lru_cache(maxsize=4096)
def _weight_block(kind_or_rpe: str, p: float, a: float, b: float) -> float:
    """``sum_{a <= s < b}`` of ``e^{-p s}`` (lin/exp) or ``s^{-p}`` (log/power), float64; ``b`` may be inf."""
    if kind_or_rpe in ("lin", "exp"):
        hi = 0.0 if math.isinf(b) else math.exp(-p * b)
        return (math.exp(-p * a) - hi) / (-math.expm1(-p))
    hi = 0.0 if math.isinf(b) else _hurwitz(p, b)
    return _hurwitz(p, a) - hi


def _hurwitz(p: float, a: float) -> float:
    """float64 Hurwitz zeta ``sum_{s >= a} s^{-p}`` (``a`` integer-valued); Euler-Maclaurin for large ``a``.

    For ``a >= 200``: ``a^{1-p}/(p-1) + a^{-p}/2 + p a^{-p-1}/12 - p(p+1)(p+2) a^{-p-3}/720``, relative error below
    ``1e-16`` there (next term ~ ``p^5 a^{-p-5}/30240``).
    """
    if a < 200:
        return float(mpmath.zeta(p, a))
    return (
        a ** (1 - p) / (p - 1)
        + 0.5 * a ** (-p)
        + p * a ** (-p - 1) / 12
        - p * (p + 1) * (p + 2) * a ** (-p - 3) / 720
    )


# ---------------------------------------------------------------------------------------------- head kernels
def head_weight(rpe: str, p, s):
    """Unnormalised head weight ``w_p(s)`` (float64 arrays or mpf): ``e^{-p s}`` (lin) or ``s^{-p}`` (log)."""
    kind = rpe_kind(rpe)
    if isinstance(p, mpmath.mpf) or isinstance(s, mpmath.mpf):
        return kind.weight_mp(p, s)
    return kind.weight(p, np.asarray(s, dtype=np.float64))


def head_normaliser_mp(rpe: str, p):
    """Infinite-past normaliser ``Z_p = sum_{s>=1} w_p(s)``: ``1/(e^p - 1)`` (lin) or ``zeta(p)`` (log)."""
    return rpe_kind(rpe).normaliser_mp(mpmath.mpf(p))


@lru_cache(maxsize=2048)
def _zeta_cached(p, prec: int):
    with mpmath.workprec(prec):
        return mpmath.zeta(p)


def head_kernel(rpe: str, p: float, s: np.ndarray) -> np.ndarray:
    """float64 infinite-past head kernel ``a_p(s) = w_p(s) / Z_p`` at lags ``s >= 1``."""
    return head_weight(rpe, p, s) / float(head_normaliser_mp(rpe, p))


def rpe_bias(rpe: str, p: float, lags: np.ndarray) -> np.ndarray:
    """The head's RPE bias ``p * phi(s)`` at the given lags; ``-inf`` at lag 0 (masked, see module docstring).

    lin: ``-p s``; log: ``-p log s``. Softmax over the admissible lags of this bias is the head's kernel.
    """
    lags = np.asarray(lags, dtype=np.float64)
    out = np.full(lags.shape, -np.inf)
    pos = lags >= 1
    out[pos] = -p * rpe_kind(rpe).phi(lags[pos])
    return out


def u_of_lag(grid: HeadGrid, s):
    """The polynomial variable ``u``: ``e^{-beta s}`` (lin) or ``s^{-beta}`` (log); float64 or mpf."""
    kind = rpe_kind(grid.rpe)
    if isinstance(s, mpmath.mpf):
        return kind.weight_mp(mpmath.mpf(grid.beta), s)
    return kind.weight(grid.beta, np.asarray(s, dtype=np.float64))


# ---------------------------------------------------------------------------------------------- Chebyshev <-> monomial
@lru_cache(maxsize=8)
def _shifted_chebyshev_int(n: int) -> tuple:
    """Integer coefficient rows of ``T_j(2u - 1)``, ``j < n`` (row j: coefficients of u^0..u^j)."""
    rows = [[1]]
    if n > 1:
        rows.append([-1, 2])
    for j in range(2, n):
        prev, prev2 = rows[-1], rows[-2]
        new = [0] * (j + 1)
        for k, c in enumerate(prev):  # 2 (2u - 1) T_{j-1}
            new[k] -= 2 * c
            new[k + 1] += 4 * c
        for k, c in enumerate(prev2):
            new[k] -= c
        rows.append(new)
    return tuple(tuple(r) for r in rows[:n])


def chebyshev_to_monomial(cheb: np.ndarray) -> tuple[list[int], int]:
    """Exact monomial coefficients of ``sum_j cheb[j] T_j(2u - 1)``.

    Returns ``(B, E)`` with integers ``B[k]`` such that the coefficient of ``u^k`` is exactly ``B[k] / 2^E``
    (float64 inputs are dyadic rationals, and shifted Chebyshev polynomials have integer coefficients).
    """
    cheb = np.asarray(cheb, dtype=np.float64)
    n = cheb.shape[0]
    fracs = [Fraction(float(c)) for c in cheb]
    E = max((f.denominator.bit_length() - 1 for f in fracs), default=0)
    nums = [f.numerator * (1 << (E - (f.denominator.bit_length() - 1))) for f in fracs]
    rows = _shifted_chebyshev_int(n)
    B = [0] * n
    for j, g in enumerate(nums):
        if g == 0:
            continue
        for k, c in enumerate(rows[j]):
            B[k] += g * c
    return B, E


def _cheb_design(u: np.ndarray, n: int) -> np.ndarray:
    """(len(u), n) matrix of ``T_j(2u - 1)``."""
    return np.polynomial.chebyshev.chebvander(2.0 * np.asarray(u, dtype=np.float64) - 1.0, n - 1)


# ---------------------------------------------------------------------------------------------- fitting
class KernelFit(NamedTuple):
    """Fitted output weights of ``H`` DP-free heads approximating a target kernel.

    ``cheb`` (H,): Chebyshev coefficients of ``Q`` (float64, the fitted object). ``mono_int``/``mono_exp``: exact
    monomial coefficients ``B_k / 2^E`` of ``Q``. ``weights_mp`` (H,): head output weights ``c_k = B_k 2^{-E} Z_k``
    (mpf, high precision); ``weights`` the same rounded to float64 (inf where they overflow).
    """

    grid: HeadGrid
    target: TargetKernel
    cheb: np.ndarray
    mono_int: list
    mono_exp: int
    weights_mp: list
    weights: np.ndarray
    max_abs_weight: float  # max_k |c_k| in float64 (inf when it overflows; see log10_max_weight)
    log10_max_weight: float
    log10_weight_l1: float
    fit_rows: int
    irls_iters: int


def _tail_blocks(S: int) -> list[tuple[float, float]]:
    """Geometric lag blocks ``[a, b)`` covering ``S+1 .. ~S*1e13``; the last one extends to infinity."""
    edges = [float(S + 1)]
    far = float(S) * 1e13
    while edges[-1] < far:
        edges.append(float(math.ceil(edges[-1] * _TAIL_RATIO + 1)))
    blocks = list(zip(edges[:-1], edges[1:]))
    blocks.append((edges[-1], math.inf))
    return blocks


_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


def _block_nodes(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature for ``sum_{a <= s < b} f(s) ~ int_{a-1/2}^{b-1/2} f``: 8 Gauss-Legendre nodes in ``log s``.

    (Only used to build fitting rows for lags beyond the exactly summed range.) For ``b = inf`` the nodes cover
    ``[a, 1e6 a]`` in log scale; the remaining mass is carried by a ``u = 0`` row.
    """
    lo = a - 0.5
    hi = (b - 0.5) if math.isfinite(b) else a * 1e6
    la, lb = math.log(lo), math.log(hi)
    x = 0.5 * (lb - la) * _GL_X + 0.5 * (lb + la)
    s = np.exp(x)
    return s, 0.5 * (lb - la) * _GL_W * s  # ds = s dlog s


def _fit_rows(grid: HeadGrid, target: TargetKernel, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Fitting rows ``(V, y)``: ``V @ cheb ~ y`` in l1, with ``V[i, j] = sum (weights) w_{p0}(s) T_j(2 u_s - 1)``.

    One row per lag up to ``max(512, T + 16)``, then exact block sums of consecutive lags (ratio 1.05) up to ``S``,
    then one quadrature row per tail block beyond ``S`` (8 nodes each), then a ``u = 0`` row carrying what is left
    beyond ``~S*1e19``.
    """
    H = grid.H
    s = np.arange(1, S + 1, dtype=np.float64)
    V = _cheb_design(u_of_lag(grid, s), H) * head_weight(grid.rpe, grid.p0, s)[:, None]
    y = target.values(s)
    # Lags beyond the direct range are summed exactly in blocks (ratio 1.05) to keep the least-squares problems small
    # (multi-threaded BLAS is slow on big ones here); a block row is exact: sum of its lags' rows.
    direct = min(S, max(_FIT_DIRECT, (int(target.param) + 16) if target.kind == "spike" else 0))
    edges = list(range(direct))
    e = direct
    while e < S:
        edges.append(e)
        e = max(e + 1, int(e * 1.05))
    V = np.add.reduceat(V, edges, axis=0)
    y = np.add.reduceat(y, edges)
    rows, ys = [V], [y]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        nodes = [_block_nodes(a, b) for a, b in _tail_blocks(S)]  # 8 nodes per block, all blocks at once
        sn = np.concatenate([n[0] for n in nodes])
        wn = np.concatenate([n[1] for n in nodes])
        w0 = head_weight(grid.rpe, grid.p0, sn) * wn
        starts = np.arange(0, len(sn), 8)
        blk = np.add.reduceat(_cheb_design(u_of_lag(grid, sn), H) * w0[:, None], starts, axis=0)
        yb = np.add.reduceat(target.values(sn) * wn, starts)
        live = np.add.reduceat(w0, starts) > 0
        rows.append(blk[live])
        ys.append(yb[live])
        rest = _weight_block(grid.rpe, grid.p0, _tail_blocks(S)[-1][0] * 1e6, math.inf)
        if rest > 0:
            rows.append(_cheb_design(np.zeros(1), H) * rest)
            ys.append(np.zeros(1))
    V = np.concatenate(rows)
    y = np.concatenate(ys)
    ok = np.all(np.isfinite(V), axis=1) & np.isfinite(y)
    big = np.abs(V).max(axis=1) + np.abs(y)
    ok &= big > 1e-60 * float(big.max())  # rows with no weight left (lin tail) carry no information
    return V[ok], y[ok]


def default_lags(grid: HeadGrid, target: TargetKernel) -> int:
    """Lags summed exactly by :func:`l1_error` (the rest is covered by the tail bound)."""
    T = int(target.param) if target.kind == "spike" else 0
    if grid.rpe == "lin":
        # w_{p0}(s) = e^{-p0 s} < e^{-90} beyond this: the tail bound covers the rest
        return int(min(4000, max(64, math.ceil(90 / grid.p0)))) + 4 * T
    return max(4000, 4 * T)


def fit_kernel(target: TargetKernel, grid: HeadGrid, *, S: int | None = None, irls_iters: int = 30) -> KernelFit:
    """Fit the output weights of ``grid``'s heads so that ``sum_k c_k a_{p_k}`` approximates ``target`` in l1.

    Iteratively reweighted least squares (weights ``1/max(|r|, tau)``, ``tau`` shrinking) in the Chebyshev basis
    over the rows of :func:`_fit_rows`; the best iterate by weighted l1 residual is kept.
    """
    S = default_lags(grid, target) if S is None else int(S)
    if S < 1:
        raise HmmtxError(f"lag range S={S} must be >= 1")
    with _one_blas_thread():
        return _fit_kernel(target, grid, S, irls_iters)


def _one_blas_thread():
    """Small least-squares problems run far faster single-threaded on a loaded machine (threadpoolctl if present)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _fit_kernel(target: TargetKernel, grid: HeadGrid, S: int, irls_iters: int) -> KernelFit:
    V, y = _fit_rows(grid, target, S)
    scale = np.linalg.norm(V, axis=0)
    scale[scale == 0] = 1.0
    Vs = V / scale
    coef, *_ = np.linalg.lstsq(Vs, y, rcond=None)
    best = coef
    best_obj = float(np.abs(Vs @ coef - y).sum())
    r = Vs @ coef - y
    tau = max(float(np.abs(r).max()), 1e-300)
    stall = 0
    done = 0
    for _ in range(irls_iters):
        done += 1
        om = 1.0 / np.sqrt(np.maximum(np.abs(r), tau))
        coef, *_ = np.linalg.lstsq(Vs * om[:, None], y * om, rcond=None)
        r = Vs @ coef - y
        obj = float(np.abs(r).sum())
        if obj < best_obj * (1 - 1e-3):
            stall = 0
        else:
            stall += 1
        if obj < best_obj:
            best, best_obj = coef, obj
        if stall >= 4:  # no 0.1% progress in 4 iterations: converged (or stuck)
            break
        tau = max(tau * 0.3, 1e-18 * max(best_obj, 1e-300))
    cheb = best / scale
    return _finish_fit(grid, target, cheb, len(y), done)


def fit_from_chebyshev(target: TargetKernel, grid: HeadGrid, cheb: np.ndarray) -> KernelFit:
    """A :class:`KernelFit` for given Chebyshev coefficients of ``Q`` (e.g. a single matched head)."""
    cheb = np.asarray(cheb, dtype=np.float64)
    if cheb.shape != (grid.H,):
        raise HmmtxError(f"chebyshev coefficients have shape {cheb.shape}, expected ({grid.H},) for H={grid.H}")
    return _finish_fit(grid, target, cheb, 0, 0)


def single_head_fit(target: TargetKernel, rpe: str) -> KernelFit:
    """One head whose exponent matches the target (exp with lin, power with log): exact by construction.

    ``K = c a_p`` with ``p = lam`` (lin) or ``p = alpha`` (log) and ``c = 1`` since both kernels have unit l1 norm.
    """
    if (target.kind, rpe) not in (("exp", "lin"), ("power", "log")):
        raise HmmtxError(f"a single {rpe}-type head matches only {'exp' if rpe == 'lin' else 'power'} targets")
    grid = HeadGrid(rpe, 1, float(target.param), 1.0)
    # Q(u) = c / Z_p with c = 1: rho(s) = w_p(s)/Z_p exactly (both normalised).
    z = head_normaliser_mp(rpe, target.param)
    return fit_from_chebyshev(target, grid, np.array([float(1 / z)]))


def _finish_fit(grid: HeadGrid, target: TargetKernel, cheb: np.ndarray, rows: int, iters: int) -> KernelFit:
    B, E = chebyshev_to_monomial(cheb)
    # c_k = b_k Z_k: b_k exact, Z_k to 160 bits, so c_k carries ~48 significant digits (the exact l1 error uses b).
    with mpmath.workprec(160):
        c = [
            mpmath.ldexp(mpmath.mpf(B[k]), -E) * _normaliser_160(grid.rpe, grid.p0, grid.beta, k)
            for k in range(grid.H)
        ]
        mx = max(abs(x) for x in c)
        l1 = mpmath.fsum(abs(x) for x in c)
        lmx = float(mpmath.log10(mx)) if mx > 0 else -math.inf
        ll1 = float(mpmath.log10(l1)) if l1 > 0 else -math.inf
    weights = np.array([float(x) if abs(x) < 1e308 else math.copysign(math.inf, x) for x in c])
    return KernelFit(grid, target, cheb, B, E, c, weights, float(np.max(np.abs(weights))), lmx, ll1, rows, iters)


@lru_cache(maxsize=8192)
def _normaliser_160(rpe: str, p0: float, beta: float, k: int):
    with mpmath.workprec(160):
        return head_normaliser_mp(rpe, mpmath.mpf(p0) + mpmath.mpf(beta) * k)


# ---------------------------------------------------------------------------------------------- exact l1 error
class L1Error(NamedTuple):
    """``sum_{s>=1} |K(s) - rho(s)|`` of a fit.

    ``finite``: the exact sum over lags ``1..S`` (fixed point, rigorous rounding bound ``rounding``);
    ``tail``: a bound on the lags ``s > S`` (see :func:`l1_error`); ``total = finite + tail + rounding`` (an upper
    bound); ``finite`` is a lower bound. ``kernel_l1`` is ``sum_{s<=S} |K(s)|``.
    """

    finite: float
    tail: float
    rounding: float
    total: float
    S: int
    kernel_l1: float
    tail_method: str


@lru_cache(maxsize=32)
def _lag_tables(rpe: str, p0: float, beta: float, S: int, P: int) -> tuple[np.ndarray, list]:
    """Fixed-point ``floor(u_s 2^P)`` (object array) and mpf ``w_{p0}(s)`` for ``s = 1..S``."""
    kind = rpe_kind(rpe)
    with mpmath.workprec(P + 40):
        b = mpmath.mpf(beta)
        p = mpmath.mpf(p0)
        ufp, w0 = [], []
        scale = mpmath.mpf(2) ** P
        for s in range(1, S + 1):
            sm = mpmath.mpf(s)
            u = kind.weight_mp(b, sm)
            ufp.append(int(mpmath.floor(u * scale)))
        with mpmath.workprec(160):
            for s in range(1, S + 1):
                sm = mpmath.mpf(s)
                w0.append(kind.weight_mp(p, sm))
    return np.array(ufp, dtype=object), w0


def _fixed_point_bits(fit: KernelFit) -> int:
    top = max((abs(b).bit_length() for b in fit.mono_int), default=1) - fit.mono_exp
    P = max(160, top + 160, fit.mono_exp)
    return int(256 * math.ceil(P / 256))  # round up so the lag tables are shared between fits


_F = 200  # fixed-point bits of w0 and rho in the l1 sum


@lru_cache(maxsize=64)
def _w0_rho_fixed(rpe: str, p0: float, kind: str, param: float, S: int) -> tuple[np.ndarray, np.ndarray]:
    """``floor(w_{p0}(s) 2^F)`` and ``round(rho(s) 2^F)`` for ``s = 1..S`` (object arrays of ints)."""
    with mpmath.workprec(_F + 40):
        scale = mpmath.mpf(2) ** _F
        p = mpmath.mpf(p0)
        W0 = [int(mpmath.floor(rpe_kind(rpe).weight_mp(p, s) * scale))
              for s in range(1, S + 1)]
        R0 = [int(mpmath.nint(r * scale)) for r in _target_mp(kind, param, S, _F + 40)]
    return np.array(W0, dtype=object), np.array(R0, dtype=object)


def _horner_fixed(fit: KernelFit, S: int) -> tuple[np.ndarray, int, float, list]:
    """``(acc, P, qerr, w0)``: ``acc[s-1] ~ Q(u_s) 2^P`` by fixed-point Horner, ``|acc 2^-P - Q| <= qerr``, and
    ``w0[s-1]`` the base head weight of lag ``s`` (mpf).

    Horner in fixed point: ``acc <- floor(acc * u / 2^P) + b``; each step errs by < ``(1 + |acc|) 2^{-P}``, so
    ``|Q_hat - Q| <= H (1 + sum|b|) 2^{-P}`` since ``|u| <= 1``.
    """
    P = _fixed_point_bits(fit)
    ufp, w0 = _lag_tables(fit.grid.rpe, fit.grid.p0, fit.grid.beta, int(S), P)
    shift = P - fit.mono_exp
    B = [b << shift for b in fit.mono_int]
    acc = np.full(len(ufp), B[-1], dtype=object)
    for b in reversed(B[:-1]):
        acc = ((acc * ufp) >> P) + b
    with mpmath.workprec(64):
        sum_b = mpmath.fsum(abs(mpmath.mpf(b)) for b in fit.mono_int) / mpmath.mpf(2) ** fit.mono_exp
        qerr = float(fit.grid.H * (1 + sum_b) * mpmath.mpf(2) ** (-P))
    return acc, P, qerr, w0


def kernel_values_exact(fit: KernelFit, S: int) -> tuple[list, float]:
    """``K(1..S)`` as mpf (160-bit) plus the rigorous absolute rounding bound on each value's ``Q`` part
    (fixed-point Horner, :func:`_horner_fixed`)."""
    acc, P, qerr, w0 = _horner_fixed(fit, S)
    with mpmath.workprec(160):
        scale = mpmath.mpf(2) ** (-P)
        K = [w0[i] * (mpmath.mpf(int(acc[i])) * scale) for i in range(len(w0))]
    return K, qerr


def kernel_values_float(fit: KernelFit, s: np.ndarray) -> np.ndarray:
    """float64 ``K(s)`` by Clenshaw in the Chebyshev basis (stable: no huge monomial weights involved)."""
    s = np.asarray(s, dtype=np.float64)
    u = u_of_lag(fit.grid, s)
    return head_weight(fit.grid.rpe, fit.grid.p0, s) * np.polynomial.chebyshev.chebval(2 * u - 1, fit.cheb)


def _tail_bound(fit: KernelFit, S: int) -> tuple[float, str]:
    """Bound on ``sum_{s > S} |K(s) - rho(s)|`` from blockwise sups (grid estimates) times exact block masses.

    For each tail block ``[a, b)``: ``sum_block w_{p0} |Q - q| <= W_block * max_block |Q - q|`` with
    ``q = rho / w_{p0}``; where that is larger (or ``q`` is unbounded: lin heads, heavier target) the block uses
    ``sum_block rho + W_block * max_block |Q|`` instead. The block maxima are taken over 9 points per block
    (both ends and 7 interior points, in log-lag) and inflated by 1%; the last block (to infinity) uses 40 points
    and the ``u -> 0`` limit. An estimate, not a proof; reported apart from the exact part.
    """
    g = fit.grid
    blocks = _tail_blocks(S)
    finite = blocks[:-1]
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        a = np.array([x for x, _ in finite])
        hi = np.array([y - 1 for _, y in finite])
        sn = np.exp(np.linspace(np.log(a), np.log(hi), 9, axis=1))  # (nblocks, 9)
        W = np.array([_weight_block(g.rpe, g.p0, x, y) for x, y in finite])
        mass = np.array([fit.target.block_mass(x, y) for x, y in finite])
        u = u_of_lag(g, sn)
        Q = np.polynomial.chebyshev.chebval(2 * u - 1, fit.cheb)
        q = _q_values(fit, sn, head_weight(g.rpe, g.p0, sn))
        d = np.abs(Q - q).max(axis=1)
        via_q = np.where(np.isfinite(d), W * d * 1.01, np.inf)
        via_rho = mass + W * np.abs(Q).max(axis=1) * 1.01
        use_q = via_q <= via_rho
        total = float(np.sum(np.where(use_q, via_q, via_rho)))
        methods = set(["W*sup|Q-q|"] if use_q.any() else []) | set(["rho+W*sup|Q|"] if (~use_q).any() else [])
        # last block [a, inf)
        a_last = blocks[-1][0]
        sl = a_last * np.geomspace(1, 1e300 / a_last, 40)
        wl = head_weight(g.rpe, g.p0, sl)
        keep = wl > 0  # where w underflows, rho/w is 0/0: those lags are represented by the u -> 0 limit
        ul = np.concatenate([u_of_lag(g, sl)[keep], [0.0]])
        ql = np.concatenate([_q_values(fit, sl[keep], wl[keep]), [_q_at_zero(fit)]])
        Ql = np.polynomial.chebyshev.chebval(2 * ul - 1, fit.cheb)
        Wl = _weight_block(g.rpe, g.p0, a_last, math.inf)
        dl = np.abs(Ql - ql)
        vq = Wl * float(np.max(dl)) * 1.01 if np.all(np.isfinite(dl)) else math.inf
        vr = fit.target.block_mass(a_last, math.inf) + Wl * float(np.max(np.abs(Ql))) * 1.01
        total += min(vq, vr)
        methods.add("W*sup|Q-q|" if vq <= vr else "rho+W*sup|Q|")
    return total, "+".join(sorted(methods))


def _q_values(fit: KernelFit, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``q = rho / w_{p0}`` at lags ``s``; closed forms for the matched pairs (no 0/0 or cancellation far out)."""
    g, t = fit.grid, fit.target
    if t.kind == "power" and g.rpe == "log":
        return np.power(s, g.p0 - t.param) / _zeta_float(t.param)
    if t.kind == "exp" and g.rpe == "lin":
        return math.expm1(t.param) * np.exp(-(t.param - g.p0) * s)
    return t.values(s) / w


def _q_at_zero(fit: KernelFit) -> float:
    """``lim_{u -> 0} q(u)`` with ``q = rho / w_{p0}`` (``s -> infinity``)."""
    g, t = fit.grid, fit.target
    if t.kind == "spike":
        return 0.0
    if g.rpe == "log":
        if t.kind == "exp":
            return 0.0
        d = g.p0 - t.param
        return 0.0 if d < 0 else (1 / float(mpmath.zeta(t.param)) if d == 0 else math.inf)
    # lin heads: exp target decays like e^{-(lam - p0) s}; power target never beats an exponential
    if t.kind == "exp":
        d = g.p0 - t.param
        return 0.0 if d < 0 else (math.expm1(t.param) if d == 0 else math.inf)
    return math.inf


def l1_error(fit: KernelFit, S: int | None = None) -> L1Error:
    """The exact sup-over-inputs error of the memory-extraction map: ``sum_{s>=1} |K(s) - rho(s)|``.

    Lags ``1..S`` are summed exactly (fixed-point Horner, rigorous rounding bound, 160-bit mpf sums). Lags ``s > S``
    are bounded blockwise by :func:`_tail_bound` (exact block masses times grid-estimated sups; reported apart as
    ``tail``).
    """
    S = default_lags(fit.grid, fit.target) if S is None else int(S)
    acc, P, qerr, _ = _horner_fixed(fit, S)
    W0, R0 = _w0_rho_fixed(fit.grid.rpe, fit.grid.p0, fit.target.kind, fit.target.param, S)
    # K(s) 2^F = floor(acc * W0 / 2^P): acc = Q 2^P (error qerr 2^P), W0 = w0 2^F (error 1), R0 = rho 2^F (error 1/2)
    Kf = (acc * W0) >> P
    finite_int = int(np.sum(np.abs(Kf - R0)))
    kl1_int = int(np.sum(np.abs(Kf)))
    with mpmath.workprec(160):
        scale = mpmath.mpf(2) ** (-_F)
        fin = float(mpmath.mpf(finite_int) * scale)
        kl1 = float(mpmath.mpf(kl1_int) * scale)
        qmax = float(mpmath.mpf(int(np.max(np.abs(acc)))) * mpmath.mpf(2) ** (-P)) + qerr
        # per lag: |w0| qerr + (|Q| + 1) 2^-F (W0 and the product's floor) + 2^-F (R0 rounding)
        wsum = float(mpmath.fsum(_lag_tables(fit.grid.rpe, fit.grid.p0, fit.grid.beta, S, P)[1]))
        rounding = qerr * wsum + S * (qmax + 2) * 2.0**-_F
    tail, method = _tail_bound(fit, S)
    return L1Error(fin, float(tail), float(rounding), fin + float(tail) + float(rounding), S, kl1, method)


def l1_error_float(fit: KernelFit, S: int | None = None) -> float:
    """Fast float64 estimate of the l1 error over lags ``1..S`` plus the same tail term (for searches only)."""
    S = default_lags(fit.grid, fit.target) if S is None else int(S)
    s = np.arange(1, S + 1, dtype=np.float64)
    fin = float(np.abs(kernel_values_float(fit, s) - fit.target.values(s)).sum())
    return fin + _tail_bound(fit, S)[0]


def error_signs(fit: KernelFit, S: int) -> np.ndarray:
    """``sign(K(s) - rho(s))`` for ``s = 1..S`` (float64 array of -1/0/1) from the exact fixed-point values."""
    acc, P, _, _ = _horner_fixed(fit, S)
    W0, R0 = _w0_rho_fixed(fit.grid.rpe, fit.grid.p0, fit.target.kind, fit.target.param, S)
    d = ((acc * W0) >> P) - R0
    return np.array([(v > 0) - (v < 0) for v in d], dtype=np.float64)


def worst_case_input(fit: KernelFit, S: int) -> np.ndarray:
    """The input attaining the finite part of the l1 error: ``x_{t-s} = sign(K(s) - rho(s))``, ``s = 1..S``.

    Returned in time order (oldest first), length ``S + 1`` with the current token ``x_t = 0`` last.
    """
    return np.concatenate([error_signs(fit, S)[::-1], [0.0]])


def attained_error(fit: KernelFit, S: int | None = None) -> tuple[float, float]:
    """``(value, allowance)``: the extraction error on the worst-case input ``x_{t-s} = sign(K - rho)(s)``,
    evaluated independently in float64 (Clenshaw kernel, numpy target), and its float round-off allowance
    ``2 H^2 u sum_j |cheb_j| sum_s w0(s) + 4 S u sum_s (|K| + |rho|)`` (Clenshaw's forward error is at most
    ~``H^2 u sum|cheb|`` on ``[-1, 1]``; the rest is the products, subtraction and the sum). ``value`` equals
    :attr:`L1Error.finite` within the allowance: the sup over inputs is attained."""
    S = default_lags(fit.grid, fit.target) if S is None else int(S)
    s = np.arange(1, S + 1, dtype=np.float64)
    Kf = kernel_values_float(fit, s)
    rho = fit.target.values(s)
    u = 2.0**-53
    w0 = head_weight(fit.grid.rpe, fit.grid.p0, s)
    allow = 2 * fit.grid.H**2 * u * float(np.sum(np.abs(fit.cheb))) * float(np.sum(w0)) + 4 * S * u * float(
        np.sum(np.abs(Kf) + np.abs(rho)))
    return float(np.dot(error_signs(fit, S), Kf - rho)), allow


@lru_cache(maxsize=128)
def gram_condition(grid: HeadGrid, dps: int | None = None) -> float:
    """2-norm condition number of the head kernels ``a_{p_k}`` as vectors in ``l2(lags >= 1)``.

    ``sqrt(lambda_max / lambda_min)`` of the exact Gram matrix ``G_ij = sum_s a_i(s) a_j(s)`` (closed forms:
    ``1/(e^{p_i+p_j} - 1)`` (lin), ``zeta(p_i + p_j)`` (log), times the normalisers), in mpmath.
    """
    H = grid.H
    dps = dps or max(30, 3 * H + 20)
    with mpmath.workdps(dps):
        ps = grid.exponents_mp()
        Z = [head_normaliser_mp(grid.rpe, p) for p in ps]
        G = mpmath.matrix(H, H)
        for i in range(H):
            for j in range(i, H):
                q = ps[i] + ps[j]
                v = rpe_kind(grid.rpe).normaliser_mp(q) / (Z[i] * Z[j])
                G[i, j] = v
                G[j, i] = v
        ev = mpmath.eigsy(G, eigvals_only=True)
        ev = sorted(ev)
        if ev[0] <= 0:
            return math.inf
        return float(mpmath.sqrt(ev[-1] / ev[0]))


def finite_window_kernel(fit: KernelFit, t: int) -> list:
    """Effective kernel of the heads at position ``t`` of a finite sequence (mpf, lags ``1..t``).

    The softmax normalises over the admissible lags ``1..t`` only: ``K_t(s) = sum_k c_k w_{p_k}(s) / Z_k(t)``,
    ``Z_k(t) = sum_{j=1..t} w_{p_k}(j)``. Position 0 has no admissible lag: every memory head outputs 0 there.
    Computed with 160-bit numbers from the ~48-digit weights: meaningful while ``sum|c_k|`` stays below ~1e30.
    """
    t = int(t)
    if t < 1:
        return []
    with mpmath.workprec(160):
        ps = fit.grid.exponents_mp()
        out = [mpmath.mpf(0)] * t
        for k, p in enumerate(ps):
            w = [head_weight(fit.grid.rpe, p, mpmath.mpf(s)) for s in range(1, t + 1)]
            Z = mpmath.fsum(w)
            ck = fit.weights_mp[k]
            for i in range(t):
                out[i] += ck * w[i] / Z
        return out


__all__ = [
    "RPE_TYPES",
    "TARGET_KINDS",
    "HeadGrid",
    "TargetKernel",
    "KernelFit",
    "L1Error",
    "head_weight",
    "head_normaliser_mp",
    "head_kernel",
    "rpe_bias",
    "u_of_lag",
    "chebyshev_to_monomial",
    "fit_kernel",
    "fit_from_chebyshev",
    "single_head_fit",
    "default_lags",
    "l1_error",
    "l1_error_float",
    "kernel_values_exact",
    "kernel_values_float",
    "worst_case_input",
    "error_signs",
    "attained_error",
    "gram_condition",
    "finite_window_kernel",
]
