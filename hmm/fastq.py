"""Fast exact rationals: the python-flint backend of the exact references.

``fractions.Fraction`` stays the readable reference (:func:`hmm.reference.forward_filter_exact` with
``backend="fraction"``); :func:`forward_filter_rows` computes the same recursion on integer vectors with FLINT's
``fmpz_mat`` (A, B and pi scaled to integers by their least common denominators, the scale kept apart) and returns
the same :class:`~hmm.reference.FilterResult`, entry for entry equal to the Fraction recursion's (tested bit for
bit). Its entries are :class:`LazyFraction` s: Fractions whose reduction to lowest terms (one gcd of two integers of
up to thousands of digits, the dominant cost of any eager exact filter) happens only when the numerator or
denominator is asked for; ``==``, ``float()`` and ``bool()`` do not need it (``docs/performance.md``: the
integer recursion alone is ~300x faster than Fractions at S = 16, T = 2048; reducing every entry afterwards, one
full-size gcd per row, costs a few times the recursion). Chosen over gmpy2 ``mpq`` by measurement (``docs/design-decisions.md``).

Conversions: ``to_fmpq`` / ``to_fraction`` (both exact; FLINT keeps fractions in lowest terms, so the Fraction is
built without a second gcd).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from hmm.errors import HmmtxError

try:  # python-flint is a dependency of the `exact` extra (installed by the `test` extra)
    import flint as _flint
except ImportError:  # pragma: no cover - exercised only without the extra
    _flint = None


def available() -> bool:
    """True when python-flint is installed."""
    return _flint is not None


def require() -> Any:
    """The ``flint`` module, or HmmtxError naming the extra to install."""
    if _flint is None:
        raise HmmtxError("the fast exact backend needs python-flint: pip install 'hmmtx[exact]' (or python-flint)")
    return _flint


class _RowDenominator:
    """The shared denominator ``s`` of one output row (an ``fmpz``) and the row's numerators: its Python ``int``
    and the row's reduction modulus ``G`` are made once, on demand.

    ``G = gcd(s, prod_{p_j != 0} p_j mod s)``: every ``gcd(p_i, s)`` (``p_i != 0``) divides it, and it divides ``s``,
    so ``gcd(p_i, s) = gcd(p_i, G)``. One full-size gcd per row instead of one per entry; ``G`` is usually tiny.
    """

    __slots__ = ("z", "row", "_int", "_g")

    def __init__(self, z: Any, row: list) -> None:
        self.z, self.row = z, row
        self._int: int | None = None
        self._g: Any = None

    @property
    def int(self) -> int:
        if self._int is None:
            self._int = int(self.z)
        return self._int

    @property
    def g(self) -> Any:
        if self._g is None:
            prod = self.z.__class__(1)
            for p in self.row:
                if p:
                    prod = prod * p % self.z
            self._g = self.z.gcd(prod)
        return self._g


class LazyFraction(Fraction):
    """An exact rational ``p / q`` (``p`` an ``fmpz``, ``q`` a row's shared denominator) that is reduced to lowest
    terms only when its ``numerator`` / ``denominator`` are asked for (one gcd, then cached).

    It *is* a :class:`fractions.Fraction` (``isinstance`` holds, arithmetic and hashing give exactly what the
    reduced Fraction gives); what it saves is the gcd of every output entry when the caller does not need the
    canonical pair: ``==`` against a Fraction or another LazyFraction compares cross products (two products
    instead of a gcd; equal rationals have equal lowest terms, so this is bit-for-bit equality), ``float()``
    divides the unreduced integers (Python's int true division is correctly rounded, so the float is the same),
    ``bool()`` tests ``p``. Pickling and ``copy`` give a plain Fraction / the same object.
    """

    __slots__ = ("_p", "_q", "_pair")

    @classmethod
    def _make(cls, p: Any, q: _RowDenominator) -> "LazyFraction":
        self = object.__new__(cls)
        self._p, self._q, self._pair = p, q, None
        return self

    def __new__(cls, numerator: Any = 0, denominator: Any = None) -> "LazyFraction":  # noqa: D102
        fmpz = require().fmpz
        if type(numerator) is int and type(denominator) is int and denominator != 0:  # kept unreduced
            sign = -1 if denominator < 0 else 1
            p = fmpz(sign * numerator)
            return cls._make(p, _RowDenominator(fmpz(sign * denominator), [p]))
        f = Fraction(numerator) if denominator is None else Fraction(numerator, denominator)
        p = fmpz(f.numerator)
        return cls._make(p, _RowDenominator(fmpz(f.denominator), [p]))

    def _reduced(self) -> tuple[int, int]:
        if self._pair is None:
            if not self._p:
                self._pair = (0, 1)
            else:
                g = self._p.gcd(self._q.g)  # = gcd(p, q) (see _RowDenominator)
                self._pair = (int(self._p // g), self._q.int if g == 1 else int(self._q.z // g))
        return self._pair

    _numerator = property(lambda self: self._reduced()[0])
    _denominator = property(lambda self: self._reduced()[1])

    def __eq__(self, other: Any) -> Any:
        if isinstance(other, LazyFraction):
            return self._p * other._q.z == other._p * self._q.z
        if isinstance(other, Fraction) or type(other) is int:
            if self._pair is not None:
                return self._pair == (other.numerator, other.denominator)
            return self._p * other.denominator == self._q.z * other.numerator
        return Fraction.__eq__(self, other)

    __hash__ = Fraction.__hash__

    def __float__(self) -> float:
        return int(self._p) / self._q.int

    def __bool__(self) -> bool:
        return bool(self._p)

    def __reduce__(self) -> tuple:
        return (Fraction, self._reduced())

    def __copy__(self) -> "LazyFraction":
        return self

    def __deepcopy__(self, memo: Any) -> "LazyFraction":
        return self


def to_fmpq(v: Any) -> Any:
    """An exact rational (Fraction, int, float converted exactly) as ``flint.fmpq``."""
    f = require()
    v = v if isinstance(v, Fraction) else Fraction(v)
    return f.fmpq(v.numerator, v.denominator)


def to_fraction(q: Any) -> Fraction:
    """``flint.fmpq`` (or ``fmpz``) -> Fraction, without re-reducing (FLINT keeps lowest terms)."""
    if not hasattr(q, "q"):
        return Fraction(int(q))
    p, d = int(q.p), int(q.q)
    try:
        return Fraction(p, d, _normalize=False)  # Python 3.11
    except TypeError:  # pragma: no cover - Python >= 3.12
        maker = getattr(Fraction, "_from_coprime_ints", None)
        return maker(p, d) if maker is not None else Fraction(p, d)


def fmpq_matrix(a: Any) -> Any:
    """A 2-D array of exact rationals as ``flint.fmpq_mat``."""
    f = require()
    a = np.asarray(a, dtype=object)
    r, c = a.shape
    return f.fmpq_mat(r, c, [to_fmpq(v) for v in a.ravel()])


def normalised_fractions(row: Any) -> list[Fraction] | None:
    """``[v / sum(row)]`` for a row of Fractions, computed in FLINT (fast gcds on huge numbers); None when the
    sum is zero or python-flint is missing (the caller then divides in Fractions itself)."""
    if _flint is None:
        return None
    q = [to_fmpq(v) for v in row]
    s = sum(q, _flint.fmpq(0))
    if s == 0:
        return None
    return [to_fraction(v / s) for v in q]


def integer_matrix(m: Any) -> tuple[Any, int]:
    """A 2-D array of non-negative exact rationals as ``(N, d)``: an ``fmpz_mat`` N and the least common
    denominator ``d`` of its entries, ``m = N / d`` exactly."""
    f = require()
    rows = [[v if isinstance(v, Fraction) else Fraction(v) for v in r] for r in np.asarray(m, dtype=object).tolist()]
    d = math.lcm(*(v.denominator for r in rows for v in r))
    return f.fmpz_mat([[v.numerator * (d // v.denominator) for v in r] for r in rows]), d


def _lazy_row(entries: list, den: Any) -> list:
    q = _RowDenominator(den, entries)
    return [LazyFraction._make(p, q) for p in entries]


def forward_filter_rows(hmm: Any, x: np.ndarray, on_zero: Any) -> tuple:
    """One sequence (T,) of validated tokens: the recursion of :func:`hmm.reference._forward_filter_exact_one` on
    integer vectors, with the common scale kept apart.

    With ``pi = n_pi / d_pi``, ``A = N_A / d_A``, ``B = N_B / d_B`` (least common denominators), the integer row
    ``a_t = d_pi (d_A d_B)^t alpha_t`` follows ``a_{t+1} = (a_t o N_B[:, x_t]) N_A`` (FLINT ``fmpz_mat``
    products); one product ``a_t [N_B | 1]`` gives the next-token numerators and the sums. Every output is a ratio
    of the step's integers (``pred_t = a_t / 1^T a_t``, ``filt_t = j_t / 1^T j_t``,
    ``next_t = a_{t+1} N_B / (d_B 1^T a_{t+1})``): the scale cancels, no gcd is taken during the recursion, and
    each entry is a :class:`LazyFraction` (reduced to lowest terms only when asked for; equal, bit for bit, to the
    Fraction recursion's output; tested).

    Returns ``(filtered, predicted, next_token, likelihood)``: three (T, .) object arrays of LazyFractions and the
    Fraction ``P(x)``; ``on_zero(t, token)`` returns the exception raised when the sequence has probability zero.
    """
    f = require()
    h = hmm.as_exact()
    S, V = h.num_states, h.num_obs
    NA, dA = integer_matrix(h.transition_matrix)
    NB, dB = integer_matrix(h.emission_probs)
    npi, dpi = integer_matrix(np.asarray(h.initial_probs, dtype=object)[None, :])
    b = NB.entries()
    NB1 = f.fmpz_mat(S, V + 1, [b[i * V + v] if v < V else 1 for i in range(S) for v in range(V + 1)])
    cols = [[b[i * V + o] for i in range(S)] for o in range(V)]
    a = npi.entries()
    p = (npi * NB1).entries()
    filt, pred, nxt = [], [], []
    for t, o in enumerate(x.tolist()):
        pred.append(_lazy_row(a, p[V]))
        if p[o] == 0:  # 1^T j_t = a_t N_B[:, o]; entries are >= 0, so all of j_t is zero
            raise on_zero(t, o)
        j = [ai * bi for ai, bi in zip(a, cols[o])]
        filt.append(_lazy_row(j, p[o]))
        am = f.fmpz_mat(1, S, j) * NA
        p = (am * NB1).entries()
        nxt.append(_lazy_row(p[:V], p[V] * dB))
        a = am.entries()
    lik = Fraction(int(p[V]), dpi * (dA * dB) ** len(x))  # P(x) = 1^T alpha_T (rows of A sum to one)
    obj = lambda rows, n: np.array(rows, dtype=object).reshape(len(rows), n)  # noqa: E731
    return obj(filt, S), obj(pred, S), obj(nxt, V), lik


def bayes_predictive_rows(mixture: Any, items: list, on_zero: Any) -> tuple:
    """The exact Bayes predictive of :func:`hmm.mixture.bayes_predictive_exact` on integer vectors (the same
    scaling as :func:`forward_filter_rows`): ``a <- (a o N_B[:, x]) N_A`` at an observation (scale ``d_A d_B``),
    ``a[block k] <- (1^T a[block k]) N_pi[block k]`` at a SEP (scale ``d_pi``); one product ``a [N_B | 1 | E]``
    (``E`` the block indicators) gives the next-token numerators, the total and the task masses of the item.

    ``items``: the flattened stream (observations, ``SEP`` = -1). Returns ``(next_token, task_posterior,
    state_predicted, likelihood)``: (N, V), (N, K), (N, S_tot) object arrays of :class:`LazyFraction` s and the
    Fraction likelihood; ``on_zero(n, token)`` returns the exception raised when no task can emit an observation.
    """
    f = require()
    start, A, B, pi = mixture.joint_arrays(object)
    S, V, K = len(start), mixture.num_obs, mixture.num_tasks
    NA, dA = integer_matrix(A)
    NB, dB = integer_matrix(B)
    Npi, dpi = integer_matrix(np.asarray(pi, dtype=object)[None, :])
    Nst, dst = integer_matrix(np.asarray(start, dtype=object)[None, :])
    block = [k for k, sl in enumerate(mixture.block_slices) for _ in range(sl.start, sl.stop)]
    b, npi = NB.entries(), Npi.entries()
    ext = f.fmpz_mat(S, V + 1 + K, [b[i * V + c] if c < V else (1 if c == V or c - V - 1 == block[i] else 0)
                                    for i in range(S) for c in range(V + 1 + K)])
    cols = [[b[i * V + o] for i in range(S)] for o in range(V)]
    a = Nst.entries()
    p = (Nst * ext).entries()
    scale = dst
    nxt, post, pred = [], [], []
    for n, x in enumerate(items):
        if x < 0:  # SEP: every task restarts from its initial law, keeping its mass
            mass = p[V + 1:]
            a = [mass[block[i]] * npi[i] for i in range(S)]
            scale *= dpi
            am = f.fmpz_mat(1, S, a)
        else:
            if p[x] == 0:  # 1^T (a o N_B[:, x]) = (a N_B)[x]; entries are >= 0
                raise on_zero(n, x)
            am = f.fmpz_mat(1, S, [ai * bi for ai, bi in zip(a, cols[x])]) * NA
            scale *= dA * dB
            a = am.entries()
        p = (am * ext).entries()
        pred.append(_lazy_row(a, p[V]))
        post.append(_lazy_row(p[V + 1:], p[V]))
        nxt.append(_lazy_row(p[:V], p[V] * dB))
    lik = Fraction(int(p[V]), scale)
    obj = lambda rows, m: np.array(rows, dtype=object).reshape(len(rows), m)  # noqa: E731
    return obj(nxt, V), obj(post, K), obj(pred, S), lik


def reduce_all(a: Any) -> None:
    """Reduce every LazyFraction of an object array to lowest terms now (what an eager backend pays up front)."""
    for v in np.asarray(a, dtype=object).ravel():
        v.numerator  # noqa: B018 - the property reduces and caches


__all__ = [
    "available",
    "require",
    "LazyFraction",
    "normalised_fractions",
    "to_fmpq",
    "to_fraction",
    "fmpq_matrix",
    "integer_matrix",
    "forward_filter_rows",
    "bayes_predictive_rows",
    "reduce_all",
]
