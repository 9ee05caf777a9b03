"""Diagnostics of an HMM: stationary distribution, mixing and contraction coefficients, observability.

Definitions (``A`` row-stochastic (S, S), or any non-negative (m, n) matrix where stated; ``B`` (S, V)):

* stationary distribution ``mu``: ``mu A = mu``, ``sum(mu) = 1`` (must be unique, i.e. ``rank(A^T - I) = S - 1``).
* projective (Hilbert) diameter ``Delta(A) = max_{i,j,k,l} log(A_ik A_jl / (A_il A_jk))`` over rows ``i, j`` and
  columns ``k, l``; ``+inf`` when ``A`` has a zero entry (the convention of SPEC §2), ``0`` for one row or one column.
  For rows ``i, j`` the inner maximum is ``max_k r_k / min_k r_k`` with ``r_k = A_ik / A_jk``, so the whole thing costs
  ``O(m^2 n)`` (vectorised) instead of ``O(m^2 n^2)``.
* Birkhoff contraction ``tau(A) = tanh(Delta(A) / 4)`` (``1`` when ``Delta = inf``). Birkhoff's theorem: for positive
  row vectors ``p, q``, ``d_H(p A, q A) <= tau(A) d_H(p, q)`` in the Hilbert projective metric
  ``d_H(p, q) = log max_k(p_k / q_k) - log min_k(p_k / q_k)``. Writing ``r = exp(Delta)`` (the largest cross-ratio),
  ``tau = (sqrt(r) - 1) / (sqrt(r) + 1)``.
* Dobrushin coefficient ``delta(A) = 1/2 max_{i,j} ||A_i - A_j||_1``; for probability vectors ``p, q``:
  ``||p A - q A||_1 <= delta(A) ||p - q||_1``.
* ``sigma_min(B)``: the S-th largest singular value of ``B`` (S, V), i.e. ``min_{|u|=1} |B^T u|``; it is ``0`` when
  ``V < S`` (then distinct beliefs can give the same emission distribution). Large ``sigma_min`` = observable HMM.

Exact inputs (object arrays of Fractions, or exact HMMs) give exact results where the quantity is rational
(stationary distribution, Dobrushin coefficient, the largest cross-ratio ``exp(Delta)``); the logarithm and ``tanh``
are evaluated in float64, or to any precision with :mod:`mpmath` (:func:`projective_diameter_mp`,
:func:`birkhoff_contraction_mp`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.model import HMM


def _as_matrix(A: Any, name: str) -> np.ndarray:
    """Accept an HMM (its transition matrix), an object array of Fractions, or anything float-convertible."""
    if isinstance(A, HMM):
        return A.transition_matrix
    if isinstance(A, np.ndarray) and A.dtype == object:
        arr = A
    else:
        try:
            arr = np.asarray(A, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise HmmtxError(f"{name}: cannot read as a numeric matrix ({exc})") from None
        if not np.all(np.isfinite(arr)):
            raise HmmtxError(f"{name}: contains NaN or infinite entries")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise HmmtxError(f"{name}: expected a non-empty 2-D matrix, got shape {arr.shape}")
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise HmmtxError(f"{name}{list(idx)}: negative entry {arr[idx]}")
    return arr


def _is_exact(arr: np.ndarray) -> bool:
    return arr.dtype == object


# ---------------------------------------------------------------------------------------------- stationary
def stationary_distribution(A: Any) -> np.ndarray:
    """Unique stationary distribution ``mu`` (S,) with ``mu A = mu``.

    Float inputs: the GTH algorithm (Grassmann, Taksar & Heyman 1985) on the unique closed class, float64; it
    subtracts nothing, so it stays accurate for nearly decomposable chains (sticky, eps = 1e-13), where least
    squares on ``[A^T - I; 1^T]`` loses about ``1 / eps`` digits. Transient states get mass 0. Exact inputs
    (Fractions or an exact HMM): exact Gauss-Jordan elimination, returning an object array of Fractions. Raises
    :class:`HmmtxError` when the stationary distribution is not unique (several closed classes).
    """
    M = _as_matrix(A, "transition_matrix")
    S = M.shape[0]
    if M.shape != (S, S):
        raise HmmtxError(f"transition_matrix: expected a square matrix, got shape {M.shape}")
    if _is_exact(M):
        return _stationary_exact(M)
    # Uniqueness is a property of the support graph (one closed communicating class), not of a numerical rank,
    # which misjudges nearly-identity chains (sticky with eps = 1e-13 is strictly positive, hence unique).
    classes = _closed_classes(np.asarray(M, dtype=np.float64) > 0)
    if len(classes) != 1:
        raise HmmtxError("transition_matrix: the stationary distribution is not unique (several closed classes)")
    cls = classes[0]
    mu = np.zeros(S)
    mu[cls] = _gth(np.asarray(M, dtype=np.float64)[np.ix_(cls, cls)])
    return mu


def _gth(P: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible stochastic matrix by GTH state reduction (no subtractions)."""
    P = P.copy()
    n = P.shape[0]
    for k in range(n - 1, 0, -1):
        s = P[k, :k].sum()  # > 0 for an irreducible chain: state k must reach the lower states
        P[:k, k] /= s
        P[:k, :k] += np.outer(P[:k, k], P[k, :k])
    x = np.zeros(n)
    x[0] = 1.0
    for j in range(1, n):
        x[j] = x[:j] @ P[:j, j]
    return x / x.sum()


def _closed_classes(support: np.ndarray) -> list[np.ndarray]:
    """Closed communicating classes (index arrays) of the directed graph ``i -> j`` iff ``support[i, j]``."""
    S = support.shape[0]
    reach = support.astype(bool) | np.eye(S, dtype=bool)
    for _ in range(max(1, int(np.ceil(np.log2(max(S, 2)))) + 1)):  # transitive closure by repeated squaring
        reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
    mutual = reach & reach.T
    closed = []
    seen = np.zeros(S, dtype=bool)
    for i in range(S):
        if seen[i]:
            continue
        cls = mutual[i]
        seen |= cls
        # closed: nothing reachable from the class lies outside it
        if not np.any(reach[cls] & ~cls):
            closed.append(np.flatnonzero(cls))
    return closed


def _stationary_exact(M: np.ndarray) -> np.ndarray:
    S = M.shape[0]
    # Equations: for each j, sum_i mu_i (A_ij - [i == j]) = 0 (drop one, it is implied), plus sum_i mu_i = 1.
    rows = [[Fraction(M[i, j]) - (1 if i == j else 0) for i in range(S)] + [Fraction(0)] for j in range(S)]
    rows.append([Fraction(1)] * S + [Fraction(1)])
    # Gauss-Jordan on the (S+1) x (S+1) augmented system; it has rank S iff mu is unique.
    n_rows, piv_row, pivots = len(rows), 0, []
    for col in range(S):
        p = next((r for r in range(piv_row, n_rows) if rows[r][col] != 0), None)
        if p is None:
            continue
        rows[piv_row], rows[p] = rows[p], rows[piv_row]
        pv = rows[piv_row][col]
        rows[piv_row] = [v / pv for v in rows[piv_row]]
        for r in range(n_rows):
            if r != piv_row and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[piv_row])]
        pivots.append(col)
        piv_row += 1
    if len(pivots) != S:
        raise HmmtxError("transition_matrix: the stationary distribution is not unique (several closed classes)")
    mu = np.empty(S, dtype=object)
    for r, col in enumerate(pivots):
        mu[col] = rows[r][S]
    return mu


# ---------------------------------------------------------------------------------------------- Hilbert / Birkhoff
def max_cross_ratio(A: Any) -> float | Fraction:
    """``exp(Delta(A)) = max_{i,j,k,l} A_ik A_jl / (A_il A_jk)``: exact Fraction for exact input, else float64.

    ``inf`` (float) when ``A`` has a zero entry; ``1`` for a single row or column.
    """
    M = _as_matrix(A, "matrix")
    if np.any(M == 0):
        return math.inf
    m, n = M.shape
    if m == 1 or n == 1:
        return Fraction(1) if _is_exact(M) else 1.0
    if _is_exact(M):
        rows = [[Fraction(v) for v in r] for r in M.tolist()]
        best = Fraction(1)
        for i in range(m):
            for j in range(i + 1, m):
                ratios = [a / b for a, b in zip(rows[i], rows[j])]
                best = max(best, max(ratios) / min(ratios))
        return best
    return float(np.exp(projective_diameter(M)))


def projective_diameter(A: Any) -> float:
    """``Delta(A)`` in float64 (vectorised over all row pairs; ``inf`` if any entry is zero).

    Exact inputs are evaluated as ``log`` of the exact largest cross-ratio (one rounding).
    """
    M = _as_matrix(A, "matrix")
    if np.any(M == 0):
        return math.inf
    m, n = M.shape
    if m == 1 or n == 1:
        return 0.0
    if _is_exact(M):
        r = max_cross_ratio(M)
        return math.log(r.numerator) - math.log(r.denominator)
    L = np.log(M)
    D = L[:, None, :] - L[None, :, :]  # (m, m, n): log(A_ik / A_jk)
    return float(np.max(D.max(axis=2) - D.min(axis=2)))


def birkhoff_contraction(A: Any) -> float:
    """``tau(A) = tanh(Delta(A) / 4)`` in float64 (``1.0`` when ``Delta = inf``); always in ``[0, 1]``."""
    d = projective_diameter(A)
    return 1.0 if math.isinf(d) else math.tanh(d / 4.0)


def _exact_cross_ratio(A: Any) -> Any:
    """``max_cross_ratio`` of ``A`` taken exactly (float entries converted with ``Fraction(float)``)."""
    M = _as_matrix(A, "matrix")
    if not _is_exact(M):
        M = np.array([[Fraction(float(v)) for v in r] for r in M], dtype=object)
    return max_cross_ratio(M)


def projective_diameter_mp(A: Any, dps: int = 50) -> Any:
    """``Delta(A)`` as an :class:`mpmath.mpf` with ``dps`` decimal digits (``mpmath.inf`` when ``A`` has zeros).

    Exact inputs: the exact largest cross-ratio, then one ``log`` at ``dps`` digits (correct to about ``dps``
    digits). Float inputs are first converted exactly (``Fraction(float)``).
    """
    import mpmath

    r = _exact_cross_ratio(A)
    with mpmath.workdps(dps + 10):
        if r == math.inf:
            return mpmath.inf
        val = mpmath.log(mpmath.mpf(r.numerator)) - mpmath.log(mpmath.mpf(r.denominator))
    with mpmath.workdps(dps):
        return +val


def birkhoff_contraction_mp(A: Any, dps: int = 50) -> Any:
    """``tau(A) = (sqrt(r) - 1) / (sqrt(r) + 1)`` with ``r = exp(Delta)``, as an mpf with ``dps`` digits (1 if zeros)."""
    import mpmath

    r = _exact_cross_ratio(A)
    with mpmath.workdps(dps + 10):
        if r == math.inf:
            return mpmath.mpf(1)
        s = mpmath.sqrt(mpmath.mpf(r.numerator) / mpmath.mpf(r.denominator))
        val = (s - 1) / (s + 1)
    with mpmath.workdps(dps):
        return +val


def hilbert_distance(p: Any, q: Any) -> float:
    """Hilbert projective distance ``log max_k(p_k/q_k) - log min_k(p_k/q_k)`` of positive vectors (float64)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise HmmtxError(f"hilbert_distance: expected two vectors of one shape, got {p.shape} and {q.shape}")
    if np.any(p <= 0) or np.any(q <= 0):
        return math.inf
    r = np.log(p) - np.log(q)
    return float(r.max() - r.min())


# ---------------------------------------------------------------------------------------------- Dobrushin
def dobrushin_coefficient(A: Any) -> float | Fraction:
    """``delta(A) = 1/2 max_{i,j} ||A_i - A_j||_1`` (float64, or an exact Fraction for exact input)."""
    M = _as_matrix(A, "matrix")
    if _is_exact(M):
        rows = [[Fraction(v) for v in r] for r in M.tolist()]
        best = Fraction(0)
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                best = max(best, sum((abs(a - b) for a, b in zip(rows[i], rows[j])), Fraction(0)))
        return best / 2
    D = np.abs(M[:, None, :] - M[None, :, :]).sum(axis=2)
    return float(0.5 * D.max())


# ---------------------------------------------------------------------------------------------- observability
def sigma_min(B: Any) -> float:
    """S-th largest singular value of the emission matrix ``B`` (S, V) (``0.0`` when ``V < S``); float64."""
    if isinstance(B, HMM):
        B = B.emission_probs
    M = _as_matrix(B, "emission_probs")
    if _is_exact(M):
        M = M.astype(np.float64)
    S, V = M.shape
    if V < S:
        return 0.0
    return float(np.linalg.svd(M, compute_uv=False)[S - 1])


# ---------------------------------------------------------------------------------------------- summary
class HMMSummary(NamedTuple):
    """One-line diagnostics of an HMM (float64 numbers; ``stationary`` is exact for exact HMMs).

    Fields:
        num_states, num_obs: S, V
        exact:               True for an exact HMM
        stationary:          (S,) stationary distribution of A, or None when it is not unique
        projective_diameter: Delta(A) (inf if A has zeros)
        birkhoff_contraction: tau(A) = tanh(Delta/4)
        dobrushin:           Dobrushin coefficient of A
        sigma_min_emission:  sigma_min(B)
        strictly_positive:   all entries of A > 0
        min_transition:      smallest entry of A
        transition_rank:     numerical rank of A (float64 SVD, tol 1e-10)
    """

    num_states: int
    num_obs: int
    exact: bool
    stationary: Any
    projective_diameter: float
    birkhoff_contraction: float
    dobrushin: float
    sigma_min_emission: float
    strictly_positive: bool
    min_transition: float
    transition_rank: int


def summary(hmm: HMM) -> HMMSummary:
    """Compute every diagnostic of ``hmm`` (see :class:`HMMSummary`)."""
    if not isinstance(hmm, HMM):
        raise HmmtxError(f"summary: expected an HMM, got {type(hmm).__name__}")
    A = hmm.transition_matrix
    Af = hmm.as_float().transition_matrix
    try:
        mu = stationary_distribution(A)
    except HmmtxError:
        mu = None
    return HMMSummary(
        num_states=hmm.num_states,
        num_obs=hmm.num_obs,
        exact=hmm.exact,
        stationary=mu,
        projective_diameter=projective_diameter(A),
        birkhoff_contraction=birkhoff_contraction(A),
        dobrushin=float(dobrushin_coefficient(A)),
        sigma_min_emission=sigma_min(hmm.emission_probs),
        strictly_positive=bool(np.all(Af > 0)),
        min_transition=float(Af.min()),
        transition_rank=int(np.linalg.matrix_rank(Af, tol=1e-10)),
    )


__all__ = [
    "stationary_distribution",
    "max_cross_ratio",
    "projective_diameter",
    "projective_diameter_mp",
    "birkhoff_contraction",
    "birkhoff_contraction_mp",
    "hilbert_distance",
    "dobrushin_coefficient",
    "sigma_min",
    "HMMSummary",
    "summary",
]
