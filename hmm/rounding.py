"""One correct rounding of exact rationals into a float dtype.

``float(Fraction)`` rounds a rational to the nearest float64 (CPython divides the integers with one correct
rounding); converting that float64 to float32 rounds a second time, and the result can then differ from the
nearest float32 (a relative error up to ``u32 + u64`` instead of ``u32``) when the float64 lands exactly on a
midpoint between two float32 neighbours. The derived round-off bounds (:mod:`constructions.roundoff`,
:mod:`constructions.window_roundoff`) model every weight as ONE rounding of its exact value, so weights are
converted here:

* float64: ``float(q)`` (one correct rounding, ties to even);
* float32: ``q`` is first rounded **to odd** in float64 (of the two float64 neighbours of an inexact ``q`` the one
  with an odd last bit), then to nearest float32. Rounding to odd with at least two extra bits of precision
  (53 >= 24 + 2) followed by rounding to nearest gives the correctly rounded result (Boldo & Melquiond, "Emulation
  of FMA and correctly rounded sums: proved algorithms using rounding to odd", IEEE TC 2008), ties to even
  included; it holds on the float32 subnormal range too (those values are normal float64 numbers), and values
  below ``2^-150`` round to zero either way. Overflow follows IEEE: ``|q| >= 2^128 - 2^103`` gives ``+-inf``
  (float64: ``|q| >= 2^1024 - 2^970``).
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from typing import Any, Iterable

import numpy as np

from hmm.errors import HmmtxError

#: IEEE overflow thresholds of round-to-nearest: the midpoint between the largest finite float and 2^(emax+1).
_OVERFLOW = {np.dtype(np.float64): Fraction(2**1024 - 2**970), np.dtype(np.float32): Fraction(2**128 - 2**103)}


def float_dtype(dtype: Any) -> np.dtype:
    """The numpy float dtype of ``dtype`` (a numpy/torch dtype or "float32"/"float64")."""
    try:
        name = np.dtype(dtype).name  # numpy dtypes, scalar types and names
    except TypeError:
        name = str(dtype).replace("torch.", "")  # torch.float32 / torch.float64
    if name not in ("float32", "float64"):
        raise HmmtxError(f"rounding: dtype must be float32 or float64, got {dtype!r}")
    return np.dtype(name)


def as_fraction(v: Any) -> Fraction:
    """An exact rational as a Fraction (Fraction, int, float, or any type with ``p``/``q`` or numerator/denominator)."""
    if isinstance(v, Fraction):
        return v
    if isinstance(v, (int, float, np.integer, np.floating)):
        return Fraction(v.item() if isinstance(v, np.generic) else v)
    if hasattr(v, "p") and hasattr(v, "q"):  # python-flint fmpq
        return Fraction(int(v.p), int(v.q))
    return Fraction(int(v.numerator), int(v.denominator))


def _odd64(q: Fraction) -> float:
    """``q`` rounded to odd in float64 (finite ``|q| < 2^1024``)."""
    f = q.numerator / q.denominator
    if Fraction(f) == q:
        return f
    bits = np.array(f, dtype=np.float64).view(np.int64)
    if int(bits) & 1:
        return f
    return float(np.nextafter(f, math.inf if q > Fraction(f) else -math.inf))


def round_exact(q: Any, dtype: Any) -> float:
    """``q`` (an exact rational) rounded once, to nearest with ties to even, into ``dtype`` (returned as a Python
    float holding that dtype's value)."""
    dt = float_dtype(dtype)
    q = as_fraction(q)
    if abs(q) >= _OVERFLOW[dt]:
        return math.copysign(math.inf, q)
    if dt == np.float64:
        return q.numerator / q.denominator
    if abs(q) >= 2**1023:  # above float32's range anyway (handled above); keeps _odd64 finite
        return math.copysign(math.inf, q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.float32(_odd64(q)))


def round_array(values: Iterable[Any], dtype: Any, shape: Any = None) -> np.ndarray:
    """An array of ``dtype`` whose entries are ``values`` (exact rationals) each rounded once (:func:`round_exact`)."""
    dt = float_dtype(dtype)
    vals = list(values)
    out = np.array([round_exact(v, dt) for v in vals], dtype=dt) if vals else np.zeros(0, dtype=dt)
    return out.reshape(shape) if shape is not None else out


__all__ = ["float_dtype", "as_fraction", "round_exact", "round_array"]
