"""A zoo of named HMM families, seeded and parameterised, with exact (rational) variants.

Use :func:`make` for one HMM and :func:`make_mixture` for a mixture of tasks; :data:`FAMILIES` lists every family
with its description, default parameters and properties. Every builder returns a validated Moore :class:`HMM`.

Random families (``dirichlet``, ``sticky``, ``cyclic``, ``low_rank``, ``observable``) draw from
``numpy.random.default_rng(seed)``: the same seed gives the same HMM. With ``rational=True`` every random row is
rounded to a small common denominator (largest-remainder rounding, so rows sum to 1 exactly; rows that must be
strictly positive keep every entry >= 1/denominator) and the HMM is exact. Structural parameters (``eps``,
``noise``, the classic processes' parameters) are read as ``Fraction(str(value))`` in rational mode (0.15 -> 3/20);
passing Fractions or strings such as ``"3/20"`` also makes the classic processes exact.

Classic processes (mess3, rrxor, even, golden mean, z1r) are defined as Mealy machines (:mod:`hmm.mealy`) as in the
belief-state literature and converted with :func:`hmm.mealy.mealy_to_moore`: mess3 and golden mean factorise
through the next state, so they keep 3 and 2 states; z1r factorises through the current state and keeps 3; rrxor
and even use the pair-state construction. Their initial distribution is the stationary one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from hmm.diagnostics import stationary_distribution
from hmm.errors import HmmtxError
from hmm.mealy import MealyHMM, mealy_to_moore
from hmm.mixture import HMMMixture
from hmm.model import HMM
from hmm.sampling import _rng


@dataclass(frozen=True)
class Family:
    """One zoo family.

    Fields:
        name:              registry key
        description:       one line
        builder:           ``builder(S, V, rng, rational, **params) -> HMM`` (internal; use :func:`make`)
        params:            parameter names -> defaults
        mixing:            with default parameters, the hidden chain is irreducible and aperiodic (the filter
                           forgets its initial condition)
        strictly_positive: with default parameters, every entry of A is > 0 (so Delta(A) < inf, tau(A) < 1)
        fixed_size:        (S, V) of the Moore form for the classic processes; None for families of any size
        default_size:      (S, V) used when num_states / num_obs are not given
    """

    name: str
    description: str
    builder: Callable[..., HMM]
    params: dict[str, Any] = field(default_factory=dict)
    mixing: bool = True
    strictly_positive: bool = True
    fixed_size: tuple[int, int] | None = None
    default_size: tuple[int, int] = (4, 3)


# ---------------------------------------------------------------------------------------------- helpers
def _frac(value: Any, name: str) -> Fraction:
    try:
        return value if isinstance(value, Fraction) else Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise HmmtxError(f"parameter {name}: cannot read {value!r} as a number") from None


def _num(value: Any, name: str) -> float:
    """float value of a parameter given as a number, a Fraction or a string such as ``"3/20"``."""
    if isinstance(value, str):
        return float(_frac(value, name))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise HmmtxError(f"parameter {name}: cannot read {value!r} as a number") from None


def _check_prob(value: Any, name: str, *, low_open: bool = False, high_open: bool = False) -> None:
    v = _num(value, name)
    lo_ok = v > 0 if low_open else v >= 0
    hi_ok = v < 1 if high_open else v <= 1
    if not (lo_ok and hi_ok and math.isfinite(v)):
        lo = "(0" if low_open else "[0"
        hi = "1)" if high_open else "1]"
        raise HmmtxError(f"parameter {name} = {value} must lie in {lo}, {hi}")


def _positive(value: Any, name: str) -> float:
    v = _num(value, name)
    if not (v > 0 and math.isfinite(v)):
        raise HmmtxError(f"parameter {name} = {value} must be a positive number")
    return v


def _dirichlet(rng: np.random.Generator, conc: float, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) matrix of i.i.d. Dirichlet(conc, ..., conc) rows (float64)."""
    out = rng.dirichlet(np.full(cols, conc), size=rows)
    return out / out.sum(axis=1, keepdims=True)


def round_rows(P: np.ndarray, denominator: int, *, positive: bool) -> np.ndarray:
    """Round the rows of a stochastic matrix to Fractions ``c / denominator`` summing to 1 exactly.

    Largest-remainder rounding; with ``positive`` every entry gets at least ``1 / denominator`` first (which needs
    ``denominator >= number of columns``). Returns an object array of Fractions of P's shape.
    """
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    n = P.shape[-1]
    floor_count = 1 if positive else 0
    free = denominator - floor_count * n
    if free < 0:
        raise HmmtxError(f"denominator {denominator} is too small for strictly positive rows of {n} entries")
    target = P * free
    base = np.floor(target).astype(np.int64)
    rest = free - base.sum(axis=1)
    order = np.argsort(-(target - base), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(n)[None, :].repeat(P.shape[0], 0), axis=1)
    counts = base + floor_count + (ranks < rest[:, None])
    out = np.empty(P.shape, dtype=object)
    for idx in np.ndindex(P.shape):
        out[idx] = Fraction(int(counts[idx]), denominator)
    return out


def _auto_denominator(n: int, denominator: int | None) -> int:
    return max(8, 4 * n) if denominator in (None, 0) else int(denominator)


def _stoch(rng: np.random.Generator, conc: float, rows: int, cols: int, rational: bool, den: int | None) -> np.ndarray:
    P = _dirichlet(rng, conc, rows, cols)
    return round_rows(P, _auto_denominator(cols, den), positive=True) if rational else P


def _initial(kind: str, S: int, A: np.ndarray, rng: np.random.Generator, rational: bool, den: int | None) -> np.ndarray:
    if kind == "uniform":
        return np.array([Fraction(1, S)] * S, dtype=object) if rational else np.full(S, 1.0 / S)
    if kind == "random":
        return _stoch(rng, 1.0, 1, S, rational, den)[0]
    if kind == "stationary":
        mu = stationary_distribution(A)
        if not rational:
            if mu.min() < -1e-12:  # pragma: no cover - a stationary distribution is non-negative
                raise HmmtxError(f"stationary distribution has a negative entry {mu.min()}")
            mu = np.clip(mu, 0.0, None)  # least-squares round-off (|x| <= 1e-12) on zero entries
            mu = mu / mu.sum()
        return mu
    raise HmmtxError(f"parameter initial = {kind!r} must be one of 'random', 'uniform', 'stationary'")


def _build(pi: np.ndarray, A: np.ndarray, B: np.ndarray, name: str) -> HMM:
    return HMM.from_arrays(pi.tolist(), A.tolist(), B.tolist(), exact=pi.dtype == object, name=name)


# ---------------------------------------------------------------------------------------------- random families
def _dirichlet_family(S, V, rng, rational, *, concentration, emission_concentration, initial, denominator):
    conc = _positive(concentration, "concentration")
    econc = conc if emission_concentration is None else _positive(emission_concentration, "emission_concentration")
    A = _stoch(rng, conc, S, S, rational, denominator)
    B = _stoch(rng, econc, S, V, rational, denominator)
    pi = _initial(initial, S, A, rng, rational, denominator)
    return _build(pi, A, B, f"dirichlet(S={S}, V={V}, concentration={concentration})")


def _sticky(S, V, rng, rational, *, eps, emission_concentration, initial, denominator):
    _check_prob(eps, "eps")
    e = _frac(eps, "eps") if rational else _num(eps, "eps")
    one = Fraction(1) if rational else 1.0
    # A = (1 - eps) I + eps/(S-1) (J - I): near identity, ||A - I||_max <= eps, strictly positive for eps > 0.
    if S == 1:
        A = np.array([[one]], dtype=object if rational else np.float64)
    else:
        A = np.full((S, S), e / (S - 1), dtype=object if rational else np.float64)
        for i in range(S):
            A[i, i] = one - e
    B = _stoch(rng, _positive(emission_concentration, "emission_concentration"), S, V, rational, denominator)
    pi = _initial(initial, S, A, rng, rational, denominator)
    return _build(pi, A, B, f"sticky(S={S}, V={V}, eps={eps})")


def _cyclic(S, V, rng, rational, *, eps, permutation, emission_concentration, initial, denominator):
    _check_prob(eps, "eps")
    if permutation == "cycle":
        perm = (np.arange(S) + 1) % S
    elif permutation == "random":
        perm = rng.permutation(S)
    else:
        raise HmmtxError(f"parameter permutation = {permutation!r} must be 'cycle' or 'random'")
    e = _frac(eps, "eps") if rational else _num(eps, "eps")
    one = Fraction(1) if rational else 1.0
    # A = (1 - eps) P + eps/S J: a permutation (period S for 'cycle') plus uniform restarts with probability eps.
    A = np.full((S, S), e / S, dtype=object if rational else np.float64)
    for i in range(S):
        A[i, perm[i]] += one - e
    B = _stoch(rng, _positive(emission_concentration, "emission_concentration"), S, V, rational, denominator)
    pi = _initial(initial, S, A, rng, rational, denominator)
    return _build(pi, A, B, f"cyclic(S={S}, V={V}, eps={eps}, permutation={permutation})")


def _low_rank(S, V, rng, rational, *, rank, concentration, emission_concentration, initial, denominator):
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise HmmtxError(f"parameter rank = {rank!r} must be an integer")
    d = int(rank)
    if not 1 <= d <= S:
        raise HmmtxError(f"parameter rank = {rank} must satisfy 1 <= rank <= num_states = {S}")
    conc = _positive(concentration, "concentration")
    # A = Phi G with Phi (S, d) and G (d, S) row-stochastic: rows of A sum to 1 and rank(A) <= d. Generic draws
    # have rank exactly d; a draw (or rounding) that loses rank is redrawn from the same generator.
    for _ in range(20):
        Phi = _stoch(rng, conc, S, d, rational, denominator)
        G = _stoch(rng, conc, d, S, rational, denominator)
        A = Phi.dot(G)
        if np.linalg.matrix_rank(np.array(A.tolist(), dtype=np.float64), tol=1e-9) == d:
            break
    else:  # pragma: no cover - vanishingly unlikely
        raise HmmtxError(f"low_rank: could not draw a transition matrix of rank {d}; try another seed")
    econc = conc if emission_concentration is None else _positive(emission_concentration, "emission_concentration")
    B = _stoch(rng, econc, S, V, rational, denominator)
    pi = _initial(initial, S, A, rng, rational, denominator)
    return _build(pi, A, B, f"low_rank(S={S}, V={V}, rank={d})")


def _observable(S, V, rng, rational, *, noise, concentration, initial, denominator):
    if V < S:
        raise HmmtxError(f"observable: needs num_obs >= num_states (got V = {V} < S = {S})")
    _check_prob(noise, "noise", high_open=True)
    e = _frac(noise, "noise") if rational else _num(noise, "noise")
    one = Fraction(1) if rational else 1.0
    # B = (1 - noise) E + noise/V J with E an injective state -> symbol map (a seeded random one). Then
    # B B^T = (1 - noise)^2 I + c 1 1^T (c >= 0), so sigma_min(B) = 1 - noise exactly for S >= 2 (>= for S = 1).
    cols = rng.permutation(V)[:S]
    B = np.full((S, V), e / V, dtype=object if rational else np.float64)
    for i in range(S):
        B[i, cols[i]] += one - e
    A = _stoch(rng, _positive(concentration, "concentration"), S, S, rational, denominator)
    pi = _initial(initial, S, A, rng, rational, denominator)
    return _build(pi, A, B, f"observable(S={S}, V={V}, noise={noise})")


# ---------------------------------------------------------------------------------------------- classic processes
def _mealy_params(rational: bool, **kv: Any) -> tuple[bool, dict[str, Any]]:
    exact = rational or any(isinstance(v, (Fraction, str)) for v in kv.values())
    return exact, {k: (_frac(v, k) if exact else _num(v, k)) for k, v in kv.items()}


def _mealy(pi: Any, T: list, exact: bool, name: str) -> MealyHMM:
    return MealyHMM.from_arrays(pi, T, exact=exact, name=name)


def _with_stationary(T: list, exact: bool, name: str) -> MealyHMM:
    """Mealy machine started in the stationary distribution of its state chain ``sum_x T[x]``."""
    Tm = np.array(T, dtype=object if exact else np.float64)
    mu = stationary_distribution(Tm.sum(axis=0))
    if not exact:
        mu = np.clip(mu, 0.0, None)  # least-squares round-off can give -1e-17 on zero entries; renormalised next
        mu = mu / mu.sum()
    return _mealy(mu.tolist(), T, exact, name)


def mess3_mealy(x: Any = 0.15, a: Any = 0.6, rational: bool = False) -> MealyHMM:
    """mess3, Mealy form, 3 states: the definition used by the belief-geometry code bases (e.g.
    epsilon-transformers, which attributes it to Marzen & Crutchfield 2017, arXiv 1702.08565).

    With ``b = (1 - a)/2`` and ``y = 1 - 2x``, ``T[x][i, j]`` (symbol first, then current and next state) is::

        T[0] = [[a y, b x, b x], [a x, b y, b x], [a x, b x, b y]]
        T[1] = [[b y, a x, b x], [b x, a y, b x], [b x, a x, b y]]
        T[2] = [[b y, b x, a x], [b x, b y, a x], [b x, b x, a y]]

    i.e. ``T[v][i, j] = A[i, j] C[j, v]`` with ``A = y I + x (J - I)`` and ``C = a I + b (J - I)``.
    """
    exact, p = _mealy_params(rational, x=x, a=a)
    x_, a_ = p["x"], p["a"]
    _check_prob(x_, "x")
    _check_prob(a_, "a")
    if float(x_) > 0.5:
        raise HmmtxError(f"parameter x = {x} must be at most 1/2 (y = 1 - 2x >= 0)")
    b, y = (1 - a_) / 2, 1 - 2 * x_
    ay, bx, by, ax = a_ * y, b * x_, b * y, a_ * x_
    T = [
        [[ay, bx, bx], [ax, by, bx], [ax, bx, by]],
        [[by, ax, bx], [bx, ay, bx], [bx, ax, by]],
        [[by, bx, ax], [bx, by, ax], [bx, bx, ay]],
    ]
    return _with_stationary(T, exact, f"mess3(x={x}, a={a})")


def rrxor_mealy(pR1: Any = 0.5, pR2: Any = 0.5, rational: bool = False) -> MealyHMM:
    """Random-random-XOR: two random bits then their XOR, repeated. States ``S, 0, 1, T, F`` (indices 0..4).

    ``S -0|pR1-> "0"``, ``S -1|1-pR1-> "1"``; ``"0" -0|pR2-> F``, ``"0" -1|1-pR2-> T``; ``"1" -0|pR2-> T``,
    ``"1" -1|1-pR2-> F``; ``T -1|1-> S``; ``F -0|1-> S`` (``T``/``F``: the XOR is 1/0).
    """
    exact, p = _mealy_params(rational, pR1=pR1, pR2=pR2)
    r1, r2 = p["pR1"], p["pR2"]
    _check_prob(r1, "pR1")
    _check_prob(r2, "pR2")
    z = Fraction(0) if exact else 0.0
    T = [[[z] * 5 for _ in range(5)] for _ in range(2)]
    S_, Z_, O_, T_, F_ = range(5)
    T[0][S_][Z_], T[1][S_][O_] = r1, 1 - r1
    T[0][Z_][F_], T[1][Z_][T_] = r2, 1 - r2
    T[0][O_][T_], T[1][O_][F_] = r2, 1 - r2
    T[1][T_][S_] = 1 + z
    T[0][F_][S_] = 1 + z
    return _with_stationary(T, exact, f"rrxor(pR1={pR1}, pR2={pR2})")


def even_mealy(p: Any = 0.5, rational: bool = False) -> MealyHMM:
    """Even process: blocks of 1s have even length. ``A -0|p-> A``, ``A -1|1-p-> B``, ``B -1|1-> A``."""
    exact, q = _mealy_params(rational, p=p)
    p_ = q["p"]
    _check_prob(p_, "p", low_open=True, high_open=True)
    z = Fraction(0) if exact else 0.0
    T = [[[p_, z], [z, z]], [[z, 1 - p_], [1 + z, z]]]
    return _with_stationary(T, exact, f"even(p={p})")


def golden_mean_mealy(p: Any = 0.5, rational: bool = False) -> MealyHMM:
    """Golden mean process: no two consecutive 0s. ``A -1|p-> A``, ``A -0|1-p-> B``, ``B -1|1-> A``."""
    exact, q = _mealy_params(rational, p=p)
    p_ = q["p"]
    _check_prob(p_, "p", low_open=True, high_open=True)
    z = Fraction(0) if exact else 0.0
    T = [[[z, 1 - p_], [z, z]], [[p_, z], [1 + z, z]]]
    return _with_stationary(T, exact, f"golden_mean(p={p})")


def z1r_mealy(p: Any = 0.5, rational: bool = False) -> MealyHMM:
    """Zero-one-random: emits 0, then 1, then a random bit (0 with probability p), repeated. States ``Z, O, R``.

    ``Z -0|1-> O``, ``O -1|1-> R``, ``R -0|p-> Z``, ``R -1|1-p-> Z``. The symbol and the next state are independent
    given the current state, so the Moore form keeps the 3 states (period 3).
    """
    exact, q = _mealy_params(rational, p=p)
    p_ = q["p"]
    _check_prob(p_, "p")
    z = Fraction(0) if exact else 0.0
    Z_, O_, R_ = range(3)
    T = [[[z] * 3 for _ in range(3)] for _ in range(2)]
    T[0][Z_][O_] = 1 + z
    T[1][O_][R_] = 1 + z
    T[0][R_][Z_], T[1][R_][Z_] = p_, 1 - p_
    return _with_stationary(T, exact, f"z1r(p={p})")


def _classic(mealy_fn: Callable[..., MealyHMM]) -> Callable[..., HMM]:
    def build(S, V, rng, rational, **params):
        return mealy_to_moore(mealy_fn(rational=rational, **params)).hmm

    return build


MEALY_PROCESSES: dict[str, Callable[..., MealyHMM]] = {
    "mess3": mess3_mealy,
    "rrxor": rrxor_mealy,
    "even": even_mealy,
    "golden_mean": golden_mean_mealy,
    "z1r": z1r_mealy,
}

_RANDOM_COMMON = {"initial": "random", "denominator": None}

#: name -> :class:`Family`
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "dirichlet",
            "rows of A and B i.i.d. Dirichlet(concentration); initial random",
            _dirichlet_family,
            {"concentration": 1.0, "emission_concentration": None, **_RANDOM_COMMON},
        ),
        Family(
            "sticky",
            "A = (1-eps) I + eps/(S-1) (J - I) (near identity); B Dirichlet",
            _sticky,
            {"eps": 0.05, "emission_concentration": 1.0, **_RANDOM_COMMON},
        ),
        Family(
            "cyclic",
            "A = (1-eps) P + eps/S J, P the cycle i -> i+1 (or a random permutation); B Dirichlet",
            _cyclic,
            {"eps": 0.0, "permutation": "cycle", "emission_concentration": 1.0, **_RANDOM_COMMON},
            mixing=False,
            strictly_positive=False,
        ),
        Family(
            "low_rank",
            "A = Phi G with Phi (S,d), G (d,S) Dirichlet row-stochastic: rank(A) = d",
            _low_rank,
            {"rank": 2, "concentration": 1.0, "emission_concentration": None, **_RANDOM_COMMON},
        ),
        Family(
            "observable",
            "B = (1-noise) E + noise/V J, E injective state->symbol: sigma_min(B) = 1 - noise; A Dirichlet",
            _observable,
            {"noise": 0.1, "concentration": 1.0, **_RANDOM_COMMON},
            default_size=(4, 4),
        ),
        Family(
            "mess3",
            "mess3 (as in the belief-geometry code bases, after Marzen & Crutchfield 2017); Moore form via w_t = z_{t+1}",
            _classic(mess3_mealy),
            {"x": 0.15, "a": 0.6},
            fixed_size=(3, 3),
            default_size=(3, 3),
        ),
        Family(
            "rrxor",
            "random-random-XOR, 5 Mealy states; Moore form on 8 (state, symbol) pairs; period 3",
            _classic(rrxor_mealy),
            {"pR1": 0.5, "pR2": 0.5},
            mixing=False,
            strictly_positive=False,
            fixed_size=(8, 2),
            default_size=(8, 2),
        ),
        Family(
            "even",
            "even process (even blocks of 1s); Moore form on 3 (state, symbol) pairs",
            _classic(even_mealy),
            {"p": 0.5},
            strictly_positive=False,
            fixed_size=(3, 2),
            default_size=(3, 2),
        ),
        Family(
            "golden_mean",
            "golden mean process (no 00); the symbol is fixed by the state entered, so 2 Moore states",
            _classic(golden_mean_mealy),
            {"p": 0.5},
            strictly_positive=False,
            fixed_size=(2, 2),
            default_size=(2, 2),
        ),
        Family(
            "z1r",
            "zero-one-random: 0, 1, then a random bit (0 w.p. p), repeated; 3 Moore states; period 3",
            _classic(z1r_mealy),
            {"p": 0.5},
            mixing=False,
            strictly_positive=False,
            fixed_size=(3, 2),
            default_size=(3, 2),
        ),
    ]
}


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise HmmtxError(f"unknown HMM family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def _size(fam: Family, num_states: int | None, num_obs: int | None) -> tuple[int, int]:
    S = fam.default_size[0] if num_states is None else num_states
    V = fam.default_size[1] if num_obs is None else num_obs
    for val, nm in ((S, "num_states"), (V, "num_obs")):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise HmmtxError(f"{nm} must be a positive integer, got {val!r}")
    if fam.fixed_size is not None and (S, V) != fam.fixed_size:
        raise HmmtxError(
            f"{fam.name} has num_states = {fam.fixed_size[0]} and num_obs = {fam.fixed_size[1]} (Moore form); "
            f"got num_states = {S}, num_obs = {V}"
        )
    return int(S), int(V)


def _params(fam: Family, params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(fam.params)
    if unknown:
        raise HmmtxError(f"{fam.name}: unknown parameter(s) {sorted(unknown)}; parameters: {sorted(fam.params)}")
    return {**fam.params, **params}


def make(
    name: str,
    num_states: int | None = None,
    num_obs: int | None = None,
    seed: int | np.random.Generator = 0,
    rational: bool = False,
    **params: Any,
) -> HMM:
    """Build one HMM of family ``name`` (see :data:`FAMILIES` for parameters and defaults).

    Args:
        num_states, num_obs: sizes (defaults per family; fixed for the classic processes).
        seed: int seed or a numpy Generator; the same int gives the same HMM.
        rational: exact HMM with small-denominator rationals (see the module docstring).
        params: family parameters, e.g. ``eps=0.01`` for ``sticky``, ``x=0.15, a=0.6`` for ``mess3``.
    """
    fam = _family(name)
    S, V = _size(fam, num_states, num_obs)
    rng = _rng(seed)
    return fam.builder(S, V, rng, bool(rational), **_params(fam, params))


def make_mealy(name: str, rational: bool = False, **params: Any) -> MealyHMM:
    """The Mealy form of a classic process (``mess3``, ``rrxor``, ``even``, ``golden_mean``)."""
    if name not in MEALY_PROCESSES:
        raise HmmtxError(f"no Mealy form for {name!r}; classic processes: {', '.join(MEALY_PROCESSES)}")
    _params(_family(name), params)
    return MEALY_PROCESSES[name](rational=rational, **params)


def make_mixture(
    name: str,
    num_tasks: int,
    num_states: int | None = None,
    num_obs: int | None = None,
    seed: int = 0,
    rational: bool = False,
    task_prior: str | Any = "uniform",
    **params: Any,
) -> HMMMixture:
    """A mixture of ``num_tasks`` HMMs of one family, task ``k`` built with its own seed (spawned from ``seed``).

    A parameter given as a list or tuple of length ``num_tasks`` is used per task (e.g. ``x=[0.05, 0.15, 0.3]``
    for a mixture of mess3 processes). ``task_prior``: ``"uniform"``, ``"random"`` (Dirichlet(1)) or explicit
    probabilities.
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise HmmtxError(f"num_tasks must be a positive integer, got {num_tasks!r}")
    K = int(num_tasks)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HmmtxError(f"seed must be a non-negative integer, got {seed!r}")
    children = np.random.SeedSequence(int(seed)).spawn(K + 1)
    tasks = []
    for k in range(K):
        pk = {}
        for key, val in params.items():
            if isinstance(val, (list, tuple)):
                if len(val) != K:
                    raise HmmtxError(f"parameter {key}: {len(val)} per-task values for {K} tasks")
                pk[key] = val[k]
            else:
                pk[key] = val
        tasks.append(make(name, num_states, num_obs, seed=np.random.default_rng(children[k]), rational=rational, **pk))
    exact = all(h.exact for h in tasks)  # rational=True, or exact parameters of a classic process
    if isinstance(task_prior, str):
        if task_prior == "uniform":
            rho = [Fraction(1, K)] * K if exact else [1.0 / K] * K
        elif task_prior == "random":
            P = _dirichlet(np.random.default_rng(children[K]), 1.0, 1, K)
            rho = round_rows(P, _auto_denominator(K, None), positive=True)[0].tolist() if exact else P[0].tolist()
        else:
            raise HmmtxError(f"task_prior = {task_prior!r} must be 'uniform', 'random' or a list of probabilities")
    else:
        rho = list(task_prior)
    if not exact:
        tasks = [h.as_float() for h in tasks]
    return HMMMixture.from_arrays(rho, tasks, exact=exact)


__all__ = [
    "Family",
    "FAMILIES",
    "MEALY_PROCESSES",
    "make",
    "make_mealy",
    "make_mixture",
    "round_rows",
    "mess3_mealy",
    "rrxor_mealy",
    "even_mealy",
    "golden_mean_mealy",
    "z1r_mealy",
]
