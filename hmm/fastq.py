"""Fast exact rationals: the python-flint backend (``fmpq``, ``fmpq_mat``) of the exact references.

``fractions.Fraction`` stays the readable reference (:func:`hmm.reference.forward_filter_exact` with
``backend="fraction"``); this module computes the same recursion with FLINT's rationals and returns the same
:class:`~hmm.reference.FilterResult` of Fractions, bit for bit (tested). Chosen over gmpy2 ``mpq`` by measurement
(``docs/design-decisions.md``, ``docs/performance.md``): FLINT's rational matrix products work on a common
denominator (fraction-free), so the gain grows with S and T.

Conversions: ``to_fmpq`` / ``to_fraction`` (both exact; FLINT keeps fractions in lowest terms, so the Fraction is
built without a second gcd).
"""

from __future__ import annotations

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


def _normalised(entries: list, zero: Any) -> list:
    s = sum(entries, zero)
    return [e / s for e in entries]


def forward_filter_rows(hmm: Any, x: np.ndarray, on_zero: Any) -> tuple:
    """One sequence (T,) of validated tokens: the recursion of :func:`hmm.reference._forward_filter_exact_one` in
    FLINT rationals (``joint = alpha D_o``, ``alpha <- joint A``, next-token ``alpha B / 1^T alpha``).

    Returns ``(filtered, predicted, next_token, likelihood)``: three (T, .) object arrays of Fractions and the
    Fraction ``P(x)``; ``on_zero(t, token)`` returns the exception raised when the sequence has probability zero.
    """
    f = require()
    h = hmm.as_exact()
    S, V = h.num_states, h.num_obs
    A = fmpq_matrix(h.transition_matrix)
    B = fmpq_matrix(h.emission_probs)
    D = []
    for o in range(V):
        d = f.fmpq_mat(S, S)
        for i in range(S):
            d[i, i] = to_fmpq(h.emission_probs[i, o])
        D.append(d)
    alpha = f.fmpq_mat(1, S, [to_fmpq(p) for p in h.initial_probs])
    zero = f.fmpq(0)
    filt, pred, nxt = [], [], []
    for t, o in enumerate(x.tolist()):
        pred.append(_normalised(alpha.entries(), zero))
        joint = alpha * D[o]
        je = joint.entries()
        if not any(je):
            raise on_zero(t, o)
        filt.append(_normalised(je, zero))
        alpha = joint * A
        mass = sum(alpha.entries(), zero)
        nxt.append([e / mass for e in (alpha * B).entries()])
    lik = to_fraction(sum(alpha.entries(), zero))
    obj = lambda rows: np.array([[to_fraction(v) for v in r] for r in rows], dtype=object).reshape(len(rows), -1)  # noqa: E731
    return obj(filt), obj(pred), obj(nxt), lik


__all__ = ["available", "require", "normalised_fractions", "to_fmpq", "to_fraction", "fmpq_matrix", "forward_filter_rows"]
