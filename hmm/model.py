"""The HMM type (Moore form) with validation and exact/float views.

Conventions (dynamax / hmmlearn names, time 0-indexed):

* ``initial_probs`` ``pi``  shape ``(S,)``:   ``pi[i] = P(z_0 = i)``
* ``transition_matrix`` ``A`` shape ``(S, S)``: ``A[i, j] = P(z_{t+1} = j | z_t = i)``
* ``emission_probs`` ``B`` shape ``(S, V)``:   ``B[i, o] = P(x_t = o | z_t = i)``

An HMM holds either float64 arrays or exact rationals (numpy object arrays of :class:`fractions.Fraction`).
``as_exact()`` converts floats exactly (``Fraction(float)``), so comparing an exact run with a float run measures
arithmetic rounding only; ``as_float()`` rounds rationals to float64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from hmm.errors import HmmtxError

#: Tolerance on row sums of float-valued stochastic arrays (SPEC §2). Rationals must sum to 1 exactly.
ROW_SUM_TOL = 1e-9


#: Limits on exact number strings ("p/q", decimals): longer strings or larger decimal exponents are refused
#: before Python builds the (possibly astronomically large) integers.
MAX_NUMBER_CHARS = 2000
MAX_DECIMAL_EXPONENT = 1000
_DEC_EXP = re.compile(r"[eE]\s*([+-]?[0-9]+)")


def parse_fraction(text: str, where: str) -> Fraction:
    """An exact number from a string: ``"1/3"``, ``"0.25"``, ``"1e-3"``. Strings longer than MAX_NUMBER_CHARS or
    with a decimal exponent beyond +-MAX_DECIMAL_EXPONENT are refused (HmmtxError naming ``where``)."""
    s = text.strip()
    if len(s) > MAX_NUMBER_CHARS:
        raise HmmtxError(f"{where}: number string of {len(s)} characters (more than {MAX_NUMBER_CHARS})")
    for m in _DEC_EXP.finditer(s):
        e = m.group(1)
        if len(e.lstrip("+-")) > 6 or abs(int(e)) > MAX_DECIMAL_EXPONENT:
            raise HmmtxError(f"{where}: {show_text(s)!r} has a decimal exponent beyond +-{MAX_DECIMAL_EXPONENT}")
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        raise HmmtxError(f"{where}: cannot read {show_text(s)!r} as a number or a fraction 'p/q'") from None


def show_text(text: str, n: int = 40) -> str:
    """A user string clipped for an error message."""
    return text if len(text) <= n else text[: n - 1] + "…"


def show_number(value: Any, max_digits: int = 24) -> str:
    """A number for a message, never crashing on huge or tiny values (Python refuses str() of ints with more than
    4300 digits, and float() of a huge Fraction overflows)."""
    if isinstance(value, Fraction):
        nd, dd = _ndigits(value.numerator), _ndigits(value.denominator)
        if nd <= max_digits and dd <= max_digits:
            return str(value)
        exp10 = (value.numerator.bit_length() - value.denominator.bit_length()) * 0.30103
        return f"~1e{exp10:+.0f} ({nd}/{dd}-digit fraction)"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        nd = _ndigits(int(value))
        return str(int(value)) if nd <= max_digits else f"an integer of {nd} digits"
    return f"{value!r}" if isinstance(value, str) else f"{value}"


def _ndigits(n: int) -> int:
    n = abs(int(n))
    return max(1, int(n.bit_length() * 0.30103) + 1)


def _to_fraction(value: Any, where: str) -> Fraction:
    """Parse one entry: int, float, Fraction, or a string such as ``"1/3"`` / ``"0.25"``."""
    if isinstance(value, bool):
        raise HmmtxError(f"{where}: expected a number, got the boolean {value!r}")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (int, np.integer)):
        return Fraction(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not np.isfinite(f):
            raise HmmtxError(f"{where}: entry is {f!r} (NaN or infinite)")
        return Fraction(f)
    if isinstance(value, str):
        return parse_fraction(value, where)
    if isinstance(value, (complex, np.complexfloating)):
        raise HmmtxError(f"{where}: complex entry {value!r}; probabilities are real numbers")
    raise HmmtxError(f"{where}: expected a number or a string 'p/q', got {type(value).__name__} {show_text(repr(value))}")


def _is_exact_input(value: Any) -> bool:
    """True when an input array-like contains Fractions or strings (so it is meant to be exact)."""
    if isinstance(value, np.ndarray):
        return value.dtype == object and any(isinstance(v, (Fraction, str, int)) for v in value.ravel())
    if isinstance(value, (list, tuple)):
        return any(_is_exact_input(v) for v in value)
    return isinstance(value, (Fraction, str))


def to_fraction_array(values: Any, name: str, ndim: int) -> np.ndarray:
    """Convert a nested sequence to an object array of Fractions, checking its number of dimensions."""
    arr = np.array(values, dtype=object)
    if arr.ndim != ndim:
        raise HmmtxError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = _to_fraction(arr[idx], f"{name}{list(idx)}")
    return out


def _find_bool(values: Any, path: tuple = ()) -> list | None:
    """Index path of the first boolean leaf in a nested list / array (JSON true/false), else None."""
    if isinstance(values, (bool, np.bool_)):
        return list(path)
    if isinstance(values, np.ndarray):
        if values.dtype == bool and values.size:
            return [int(i) for i in np.argwhere(values)[0]] if values.any() else [0] * values.ndim
        if values.dtype != object:
            return None
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        for i, v in enumerate(values):
            hit = _find_bool(v, path + (i,))
            if hit is not None:
                return hit
    return None


def to_float_array(values: Any, name: str, ndim: int) -> np.ndarray:
    """Convert to float64, checking dimensions and finiteness (NaN / inf are named, not propagated)."""
    if _is_exact_input(values):
        return to_fraction_array(values, name, ndim).astype(np.float64)
    where = _find_bool(values)
    if where is not None:
        raise HmmtxError(f"{name}{where}: expected a number, got a boolean")
    _refuse_complex(values, name)
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise HmmtxError(f"{name}: cannot read as a numeric array ({exc})") from None
    if arr.ndim != ndim:
        raise HmmtxError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise HmmtxError(f"{name}{list(idx)}: entry is {float(arr[idx])!r} (NaN or infinite)")
    return arr


def _refuse_complex(values: Any, name: str) -> None:
    """Complex input is refused (numpy would silently drop the imaginary part when converting to float64)."""
    try:
        probe = values if isinstance(values, np.ndarray) else np.asarray(values)
    except (TypeError, ValueError):
        return
    if np.iscomplexobj(probe):
        raise HmmtxError(f"{name}: complex entries (dtype {probe.dtype}); probabilities are real numbers")
    if probe.dtype == object:
        for idx in np.ndindex(probe.shape):
            if isinstance(probe[idx], (complex, np.complexfloating)):
                raise HmmtxError(f"{name}{list(idx)}: complex entry {probe[idx]!r}; probabilities are real numbers")


def check_stochastic(arr: np.ndarray, name: str) -> None:
    """Entries >= 0 and every row (last axis) summing to 1: exactly for Fractions, within ROW_SUM_TOL for floats."""
    exact = arr.dtype == object
    neg = np.argwhere(arr < 0)
    if neg.size:
        idx = tuple(int(i) for i in neg[0])
        raise HmmtxError(f"{name}{list(idx)}: negative entry {show_number(arr[idx])}")
    sums = arr.sum(axis=-1) if arr.ndim > 1 else np.array([arr.sum()], dtype=arr.dtype)
    for row in np.ndindex(sums.shape):
        s = sums[row]
        ok = (s == 1) if exact else abs(float(s) - 1.0) <= ROW_SUM_TOL
        if not ok:
            where = f"{name} row {row[0]}" if arr.ndim > 1 else name
            shown = show_number(s) if exact else f"{float(s):.12g}"
            rule = "exactly 1" if exact else f"1 within {ROW_SUM_TOL:g}"
            hint = ""
            if exact and any(isinstance(v, Fraction) and v.denominator & (v.denominator - 1) == 0 and v.denominator > 2**20
                             for v in np.ravel(arr[row] if arr.ndim > 1 else arr)):
                hint = " (a float entry in an exact HMM keeps its exact binary value: write every entry as 'p/q')"
            raise HmmtxError(f"{where} sums to {shown}, not {rule}{hint}")


@dataclass(frozen=True, eq=False)
class HMM:
    """A discrete-emission (Moore) hidden Markov model.

    Fields (S hidden states, V observation symbols):
        initial_probs:     (S,)   ``P(z_0 = i)``
        transition_matrix: (S, S) ``P(z_{t+1} = j | z_t = i)``
        emission_probs:    (S, V) ``P(x_t = o | z_t = i)``

    Arrays are float64, or object arrays of :class:`~fractions.Fraction` when the HMM is exact. Construct with
    :meth:`from_arrays` (which validates and converts); the constructor itself also validates.
    """

    initial_probs: np.ndarray
    transition_matrix: np.ndarray
    emission_probs: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        for nm in ("initial_probs", "transition_matrix", "emission_probs"):
            arr = getattr(self, nm)
            if isinstance(arr, np.ndarray) and np.iscomplexobj(arr):
                raise HmmtxError(f"{nm}: complex entries (dtype {arr.dtype}); probabilities are real numbers")
            if isinstance(arr, np.ndarray) and arr.flags.writeable:
                # the HMM freezes its own copy, never the caller's array
                object.__setattr__(self, nm, arr.copy())
        pi, A, B = self.initial_probs, self.transition_matrix, self.emission_probs
        for arr, nm, nd in ((pi, "initial_probs", 1), (A, "transition_matrix", 2), (B, "emission_probs", 2)):
            if not isinstance(arr, np.ndarray) or arr.ndim != nd:
                shape = getattr(arr, "shape", None)
                raise HmmtxError(f"{nm}: expected a {nd}-D numpy array, got {type(arr).__name__} of shape {shape}")
        kinds = {arr.dtype == object for arr in (pi, A, B)}
        if len(kinds) != 1:
            raise HmmtxError("initial_probs, transition_matrix and emission_probs must be all exact or all float")
        S = pi.shape[0]
        if S == 0:
            raise HmmtxError("initial_probs: the HMM needs at least one hidden state (got S = 0)")
        if A.shape != (S, S):
            raise HmmtxError(f"transition_matrix has shape {A.shape}, expected ({S}, {S}) from initial_probs of size {S}")
        if B.shape[0] != S:
            raise HmmtxError(f"emission_probs has {B.shape[0]} rows, expected {S} (one per hidden state)")
        if B.shape[1] == 0:
            raise HmmtxError("emission_probs: the HMM needs at least one observation symbol (got V = 0)")
        if not self.exact:
            for arr, nm in ((pi, "initial_probs"), (A, "transition_matrix"), (B, "emission_probs")):
                if arr.dtype != np.float64:
                    raise HmmtxError(f"{nm}: float HMMs hold float64 arrays, got {arr.dtype}")
                bad = np.argwhere(~np.isfinite(arr))
                if bad.size:
                    idx = tuple(int(i) for i in bad[0])
                    raise HmmtxError(f"{nm}{list(idx)}: entry is {float(arr[idx])!r} (NaN or infinite)")
        check_stochastic(pi, "initial_probs")
        check_stochastic(A, "transition_matrix")
        check_stochastic(B, "emission_probs")
        for arr in (pi, A, B):
            arr.flags.writeable = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        initial_probs: Any,
        transition_matrix: Any,
        emission_probs: Any,
        *,
        exact: bool | None = None,
        name: str = "",
    ) -> "HMM":
        """Validate and build. ``exact=None`` makes the HMM exact iff any entry is a Fraction or a string ``"p/q"``
        (or an object ndarray holds ints); nested lists of plain ints and floats give a float HMM."""
        if exact is None:
            exact = any(_is_exact_input(v) for v in (initial_probs, transition_matrix, emission_probs))
        conv = to_fraction_array if exact else to_float_array
        return cls(
            conv(initial_probs, "initial_probs", 1),
            conv(transition_matrix, "transition_matrix", 2),
            conv(emission_probs, "emission_probs", 2),
            name=name,
        )

    # ------------------------------------------------------------------ views
    @property
    def num_states(self) -> int:
        return int(self.initial_probs.shape[0])

    @property
    def num_obs(self) -> int:
        return int(self.emission_probs.shape[1])

    @property
    def exact(self) -> bool:
        return self.initial_probs.dtype == object

    def as_exact(self) -> "HMM":
        """Exact copy: Fractions unchanged, floats converted exactly (``Fraction(float)``); the row-sum round-off of a
        float row (at most ROW_SUM_TOL) is then added to that row's largest entry so the exact rows sum to 1."""
        if self.exact:
            return self
        conv = lambda a, n, d: to_fraction_array(a.tolist(), n, d)  # noqa: E731
        pi = conv(self.initial_probs, "initial_probs", 1)
        A = conv(self.transition_matrix, "transition_matrix", 2)
        B = conv(self.emission_probs, "emission_probs", 2)
        # Float rows sum to 1 only within round-off: the exact image must be exactly stochastic, so the
        # difference (at most ROW_SUM_TOL, checked at construction) goes into each row's largest entry.
        return HMM(_fix_rows(pi), _fix_rows(A), _fix_rows(B), name=self.name)

    def as_float(self) -> "HMM":
        """float64 copy (rationals rounded to nearest)."""
        if not self.exact:
            return self
        f = lambda a: np.array(a.tolist(), dtype=np.float64)  # noqa: E731
        return HMM(f(self.initial_probs), f(self.transition_matrix), f(self.emission_probs), name=self.name)

    def arrays(self, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pi, A, B) as numpy arrays of ``dtype`` (use ``object`` for Fractions)."""
        if dtype is object:
            h = self.as_exact()
            return h.initial_probs, h.transition_matrix, h.emission_probs
        h = self.as_float()
        return (h.initial_probs.astype(dtype), h.transition_matrix.astype(dtype), h.emission_probs.astype(dtype))

    def token_operator(self, x: int, dtype: Any = np.float64) -> np.ndarray:
        """``G_x = diag(B[:, x]) A`` (S, S): ``alpha^T G_x`` conditions on ``x_t = x`` then steps to ``z_{t+1}``."""
        _, A, B = self.arrays(dtype)
        return B[:, x][:, None] * A

    def check_tokens(self, tokens: Any, *, max_len: int | None = None) -> np.ndarray:
        """Validate one sequence (T,) or a batch (N, T) of token ids; returns an int64 array."""
        return validate_tokens(tokens, self.num_obs, max_len=max_len)

    def to_dict(self, exact: bool | None = None) -> dict[str, Any]:
        """JSON-ready dict; exact HMMs write ``"p/q"`` strings, float HMMs write numbers."""
        exact = self.exact if exact is None else exact
        if exact:
            h = self.as_exact()
            s = lambda a: [[str(v) for v in row] for row in a] if a.ndim == 2 else [str(v) for v in a]  # noqa: E731
            return {
                "initial_probs": s(h.initial_probs),
                "transition_matrix": s(h.transition_matrix),
                "emission_probs": s(h.emission_probs),
            }
        h = self.as_float()
        return {
            "initial_probs": h.initial_probs.tolist(),
            "transition_matrix": h.transition_matrix.tolist(),
            "emission_probs": h.emission_probs.tolist(),
        }

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "float64"
        nm = f" {self.name!r}" if self.name else ""
        return f"HMM{nm}(S={self.num_states}, V={self.num_obs}, {kind})"


def _fix_rows(arr: np.ndarray) -> np.ndarray:
    out = arr.copy()
    rows = out.reshape(1, -1) if out.ndim == 1 else out
    for r in rows:
        deficit = 1 - sum(r, Fraction(0))
        if deficit:
            j = int(np.argmax([float(v) for v in r]))
            r[j] += deficit
    return out


def validate_tokens(tokens: Any, vocab_size: int, *, max_len: int | None = None, name: str = "tokens") -> np.ndarray:
    """Check a sequence (T,) or batch (N, T) of token ids: integers, non-empty, in ``[0, vocab_size)``."""
    try:
        arr = np.asarray(tokens)
    except (TypeError, ValueError) as exc:
        raise HmmtxError(f"{name}: cannot read as an integer array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        if arr.size and np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif arr.size:
            raise HmmtxError(f"{name}: token ids must be integers, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise HmmtxError(f"{name}: expected shape (T,) or (N, T), got {arr.shape}")
    if arr.shape[-1] == 0 or arr.size == 0:
        raise HmmtxError(f"{name}: the sequence is empty (need at least one token)")
    if max_len is not None and arr.shape[-1] > max_len:
        raise HmmtxError(f"{name}: sequence length {arr.shape[-1]} exceeds max_len {max_len}")
    arr = arr.astype(np.int64)
    bad = np.argwhere((arr < 0) | (arr >= vocab_size))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        pos = f"position {idx[-1]}" + (f" of sequence {idx[0]}" if arr.ndim == 2 else "")
        raise HmmtxError(f"{name}: token {int(arr[idx])} at {pos} is out of range [0, {vocab_size})")
    return arr


__all__ = ["HMM", "ROW_SUM_TOL", "validate_tokens", "check_stochastic", "to_fraction_array", "to_float_array"]
