"""Adaptive-memory targets (Wang & E 2024, Task II): lag functions, inputs, and the exact reference.

A reconstruction in the spirit of Wang & E (2024), notes §1.2 / §3.2 (``shared/papers/wang_e2024_expressive.md``);
the paper's statements were not available, so every convention below is ours (``docs/constructions/adaptive_memory.md``).

Inputs. A token is a pair ``x_t = (c_t, v_t)``: a *lag symbol* ``c_t in {0..V-1}`` (what the memory functions read)
and a *value* ``v_t in [-1, 1]`` (what the memories fetch; exact rationals allowed). Positions before the sequence
hold the padding token ``(0, 0)``: ``pad`` of them (default: the lag range), so every lag in range exists.

Targets (``M >= 1`` memories, lags are integers in ``1..lag_range``)::

    Type I  (kind "type1"):  t_k = g_k(c_t)                                    k = 1..M
    Type II (kind "type2"):  t_1 = g_1(c_t),  t_k = g_k(c_t, c_{t-t_1}, ..., c_{t-t_{k-1}})   (nested)
    y_t = f(v_t, v_{t-t_1}, ..., v_{t-t_M})

``f`` is the readout network of the memory-kernel construction (:func:`constructions.memory.model.readout_net`):
``relu`` (a random ReLU net with dyadic weights: the FFN *is* the target), ``identity`` (``sum_k v_{t-t_k}``) or
``tanh`` (``tanh(v_t + sum_k v_{t-t_k})``, approximated by the FFN). A lag function is a table of integers over its
argument tuples (row-major, ``V^arity`` entries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple, Sequence

import numpy as np

from hmm.errors import HmmtxError

KINDS = ("type1", "type2")
RPES = ("log", "lin")
#: Largest lag a lag function may return (bias tables and positions grow with it).
MAX_LAG = 4096
#: Largest lag-function table (V^arity entries): the FFN computing it has two ReLU units per entry.
MAX_TABLE = 4096
#: Largest number of lag symbols.
MAX_SYMBOLS = 64


# ---------------------------------------------------------------------------------------------- lag functions
@dataclass(frozen=True)
class LagFunction:
    """Memory function ``g_k``: integer lags over ``arity`` symbol arguments ``(c_t, c_{t-t_1}, ...)``.

    ``table`` has ``V**arity`` entries, row-major (the first argument, ``c_t``, varies slowest).
    """

    arity: int
    table: tuple[int, ...]
    V: int

    def __post_init__(self) -> None:
        if self.arity < 1:
            raise HmmtxError(f"lag function arity {self.arity} must be >= 1")
        if len(self.table) != self.V**self.arity:
            raise HmmtxError(f"lag function of arity {self.arity} over V={self.V} symbols needs {self.V ** self.arity} "
                             f"entries, got {len(self.table)}")
        for i, g in enumerate(self.table):
            if isinstance(g, bool) or not isinstance(g, (int, np.integer)):
                raise HmmtxError(f"lag function entry {i} is {g!r}: lags must be integers")
            if not 1 <= int(g) <= MAX_LAG:
                raise HmmtxError(f"lag function entry {i} is {g}: lags must lie in 1..{MAX_LAG}")

    def index(self, args: Sequence[int]) -> int:
        if len(args) != self.arity:
            raise HmmtxError(f"lag function of arity {self.arity} called with {len(args)} arguments")
        i = 0
        for a in args:
            i = i * self.V + int(a)
        return i

    def __call__(self, args: Sequence[int]) -> int:
        return int(self.table[self.index(args)])

    def tuples(self) -> list[tuple[int, ...]]:
        """All argument tuples, in table order."""
        out = [()]
        for _ in range(self.arity):
            out = [t + (c,) for t in out for c in range(self.V)]
        return out

    @property
    def lags(self) -> tuple[int, ...]:
        """The distinct lags the function can return (sorted)."""
        return tuple(sorted(set(int(g) for g in self.table)))


def _parse_lag_entry(text: str, k: int) -> int:
    t = text.strip()
    try:
        v = Fraction(t)
    except (ValueError, ZeroDivisionError):
        raise HmmtxError(f"--lags: memory {k + 1}: entry {t!r} is not a number") from None
    if v.denominator != 1:
        raise HmmtxError(f"--lags: memory {k + 1}: entry {t!r} is not an integer (lags are whole positions)")
    return int(v)


def parse_lags(text: str, kind: str, V: int) -> tuple[LagFunction, ...]:
    """``"1,3,2;4,1,5"``: one table per memory (``;``), entries by ``,``. Type I tables have ``V`` entries; the
    Type II table of memory ``k`` (1-based) has ``V**k`` entries over ``(c_t, c_{t-t_1}, ..., c_{t-t_{k-1}})``."""
    _check_kind_V(kind, V)
    if not isinstance(text, str) or not text.strip():
        raise HmmtxError("--lags: give at least one lag table (M = 0 memories is not a target)")
    parts = [p for p in text.split(";") if p.strip()]
    if not parts:
        raise HmmtxError("--lags: give at least one lag table (M = 0 memories is not a target)")
    out = []
    for k, part in enumerate(parts):
        entries = tuple(_parse_lag_entry(e, k) for e in part.split(",") if e.strip())
        arity = 1 if kind == "type1" else k + 1
        if len(entries) != V**arity:
            raise HmmtxError(f"--lags: memory {k + 1} ({kind}) needs {V ** arity} entries (V={V}"
                             f"{'' if arity == 1 else f', arity {arity}'}), got {len(entries)}")
        for g in entries:
            if not 1 <= g <= MAX_LAG:
                raise HmmtxError(f"--lags: memory {k + 1}: lag {g} outside 1..{MAX_LAG}")
        out.append(LagFunction(arity, entries, V))
    return tuple(out)


def random_lags(kind: str, V: int, M: int, lag_range: int, seed: int) -> tuple[LagFunction, ...]:
    """Random lag tables with values in ``1..lag_range`` (seeded). Type I tables use distinct lags where possible."""
    _check_kind_V(kind, V)
    if not isinstance(M, (int, np.integer)) or M < 1:
        raise HmmtxError(f"--memories M={M!r}: an adaptive-memory target needs M >= 1 memories")
    if not isinstance(lag_range, (int, np.integer)) or not 1 <= lag_range <= MAX_LAG:
        raise HmmtxError(f"--lag-range={lag_range!r} must be an integer in 1..{MAX_LAG}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(M):
        arity = 1 if kind == "type1" else k + 1
        n = V**arity
        if n > MAX_TABLE:
            raise HmmtxError(f"memory {k + 1}: a table of V^{arity} = {n} entries exceeds {MAX_TABLE}")
        if arity == 1 and n <= lag_range:
            vals = rng.choice(np.arange(1, lag_range + 1), size=n, replace=False)
        else:
            vals = rng.integers(1, lag_range + 1, size=n)
        out.append(LagFunction(arity, tuple(int(v) for v in vals), V))
    return tuple(out)


def _check_kind_V(kind: str, V: int) -> None:
    if kind not in KINDS:
        raise HmmtxError(f"--kind={kind!r} must be one of {', '.join(KINDS)}")
    if isinstance(V, bool) or not isinstance(V, (int, np.integer)) or not 1 <= V <= MAX_SYMBOLS:
        raise HmmtxError(f"--symbols V={V!r} must be an integer in 1..{MAX_SYMBOLS}")


# ---------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class AdaptiveSpec:
    """Everything that fixes an adaptive-memory construction (validated on creation).

    Fields:
        kind:      ``"type1"`` (lags of the current symbol) or ``"type2"`` (nested)
        V:         number of lag symbols
        lags:      the M memory functions (:class:`LagFunction`)
        rpe:       ``"log"`` (log-type RPE supplies the peak's curvature) or ``"lin"`` (lin-type RPE; the DP term
                   supplies the curvature through a quadratic position feature)
        readout:   ``relu`` | ``identity`` | ``tanh`` (see module docstring)
        ffn_width: width m of the readout FFN (the tanh interpolant's knots; the relu net's width)
        seed:      seed of the random relu readout
        peak:      sharpness: ``P`` of the log-type bias ``P log s`` (0: ``2 T^2``, so the score gap is about 1 at the
                   longest lag T); ``kappa`` of the lin variant's ``-kappa (s - g)^2`` (0: 1)
        pad:       padding positions before the sequence (0: the lag range)
        lin_slope: slope ``p`` of the lin-type bias ``-p s`` (absorbed by the query; any value works)
    """

    kind: str
    V: int
    lags: tuple[LagFunction, ...]
    rpe: str = "log"
    readout: str = "relu"
    ffn_width: int = 16
    seed: int = 0
    peak: Fraction = Fraction(0)
    pad: int = 0
    lin_slope: Fraction = Fraction(1)

    def __post_init__(self) -> None:
        from constructions.memory.model import READOUTS

        _check_kind_V(self.kind, self.V)
        if not self.lags:
            raise HmmtxError("an adaptive-memory target needs M >= 1 memories (M = 0 given)")
        for k, g in enumerate(self.lags):
            want = 1 if self.kind == "type1" else k + 1
            if g.arity != want or g.V != self.V:
                raise HmmtxError(f"memory {k + 1}: a {self.kind} lag function has arity {want} over V={self.V}, "
                                 f"got arity {g.arity} over V={g.V}")
            if len(g.table) > MAX_TABLE:
                raise HmmtxError(f"memory {k + 1}: a table of {len(g.table)} entries exceeds {MAX_TABLE}")
        if self.rpe not in RPES:
            raise HmmtxError(f"--rpe={self.rpe!r} must be one of {', '.join(RPES)}")
        if self.readout not in READOUTS:
            raise HmmtxError(f"--readout={self.readout!r} must be one of {', '.join(READOUTS)}")
        if isinstance(self.ffn_width, bool) or not isinstance(self.ffn_width, int) or not 2 <= self.ffn_width <= 4096:
            raise HmmtxError(f"--ffn-width={self.ffn_width!r} must be an integer in 2..4096")
        object.__setattr__(self, "peak", Fraction(self.peak))
        object.__setattr__(self, "lin_slope", Fraction(self.lin_slope))
        if self.peak < 0:
            raise HmmtxError(f"--peak={self.peak} must be > 0 (or 0 for the default)")
        if isinstance(self.pad, bool) or not isinstance(self.pad, (int, np.integer)) or not 0 <= self.pad <= MAX_LAG:
            raise HmmtxError(f"--pad={self.pad!r} must be an integer in 0..{MAX_LAG} (0: the lag range)")

    @property
    def M(self) -> int:
        return len(self.lags)

    @property
    def lag_range(self) -> int:
        """T: the longest lag any memory function returns."""
        return max(max(g.table) for g in self.lags)

    @property
    def padding(self) -> int:
        return int(self.pad) if self.pad else self.lag_range

    @property
    def sharpness(self) -> Fraction:
        """``P`` (log) or ``kappa`` (lin), defaults resolved."""
        if self.peak:
            return self.peak
        return Fraction(2 * self.lag_range**2) if self.rpe == "log" else Fraction(1)

    @property
    def distinct_lags(self) -> tuple[int, ...]:
        return tuple(sorted(set().union(*(g.lags for g in self.lags))))


def make_spec(kind: str = "type1", V: int = 3, lags: str = "random", M: int = 2, lag_range: int = 8, lag_seed: int = 0,
              **kw: Any) -> AdaptiveSpec:
    """An :class:`AdaptiveSpec` from CLI-style parameters (``lags="random"`` draws tables with ``random_lags``)."""
    if isinstance(lags, str) and lags.strip() == "random":
        tables = random_lags(kind, V, M, lag_range, lag_seed)
    elif isinstance(lags, str):
        tables = parse_lags(lags, kind, V)
    else:
        tables = tuple(lags)
    return AdaptiveSpec(kind, V, tables, **kw)


# ---------------------------------------------------------------------------------------------- inputs
class AdaptiveTokens(NamedTuple):
    """Input sequences: ``symbols`` (N, T) int64 lag symbols, ``values`` (N, T) object array of Fractions.

    ``single``: the tokens were given as one sequence ((T,) arrays or a CLI string): outputs and references then
    drop the batch axis (like the other constructions' 1-D inputs)."""

    symbols: np.ndarray
    values: np.ndarray
    single: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return self.symbols.shape  # type: ignore[return-value]

    def float_values(self) -> np.ndarray:
        return np.array([[float(v) for v in row] for row in self.values], dtype=np.float64).reshape(self.symbols.shape)


def make_tokens(symbols: Any, values: Any) -> AdaptiveTokens:
    """Validated tokens from arrays ((T,) or (N, T)); values are converted to exact Fractions (floats exactly)."""
    s = np.asarray(symbols)
    single = s.ndim == 1
    if s.ndim == 1:
        s = s[None]
    v = np.asarray(values, dtype=object)
    if v.ndim == 1:
        v = v[None]
    if s.ndim != 2 or s.shape[1] == 0 or v.shape != s.shape:
        raise HmmtxError(f"tokens: symbols {s.shape} and values {v.shape} must be non-empty arrays of equal shape")
    if s.dtype == object or not np.issubdtype(s.dtype, np.integer):
        if not all(float(a) == int(float(a)) for a in s.ravel()):
            raise HmmtxError("tokens: lag symbols must be integers")
    s = s.astype(np.int64)
    if s.min() < 0:
        raise HmmtxError(f"tokens: lag symbols must be >= 0, got {s.min()}")
    out = np.empty(v.shape, dtype=object)
    for idx in np.ndindex(v.shape):
        a = v[idx]
        try:
            f = a if isinstance(a, Fraction) else Fraction(a) if not isinstance(a, float) else Fraction(a)
        except (ValueError, TypeError, ZeroDivisionError):
            raise HmmtxError(f"tokens: value {a!r} at {idx} is not a number") from None
        if isinstance(a, float) and not math.isfinite(a):
            raise HmmtxError(f"tokens: value {a!r} at {idx} is not finite")
        if not -1 <= f <= 1:
            raise HmmtxError(f"tokens: value {a} at {idx} lies outside [-1, 1]")
        out[idx] = f
    return AdaptiveTokens(s, out, single)


def parse_tokens(text: str) -> AdaptiveTokens:
    """``"0:1/2 2:-1 1:0.25"``: space-separated ``symbol:value`` pairs (values exact rationals or decimals)."""
    if not isinstance(text, str) or not text.split():
        raise HmmtxError("--tokens: give at least one token symbol:value, e.g. '0:1/2 2:-1 1:1/4'")
    syms, vals = [], []
    for item in text.split():
        c, sep, v = item.partition(":")
        if not sep:
            raise HmmtxError(f"--tokens: item {item!r} must look like symbol:value (e.g. 2:-1/2)")
        try:
            ci = int(c)
        except ValueError:
            raise HmmtxError(f"--tokens: symbol {c!r} of {item!r} is not an integer") from None
        try:
            vf = Fraction(v)
        except (ValueError, ZeroDivisionError):
            raise HmmtxError(f"--tokens: value {v!r} of {item!r} is not a number") from None
        syms.append(ci)
        vals.append(vf)
    return make_tokens(np.array(syms), np.array(vals, dtype=object))


def check_tokens(spec: AdaptiveSpec, tokens: Any) -> AdaptiveTokens:
    tok = tokens if isinstance(tokens, AdaptiveTokens) else make_tokens(*tokens[:2])
    if tok.symbols.max() >= spec.V:
        raise HmmtxError(f"tokens: lag symbol {int(tok.symbols.max())} is out of range for V={spec.V} symbols")
    return tok


# ---------------------------------------------------------------------------------------------- reference
class AdaptiveReference(NamedTuple):
    """Target computed directly from the sequence. Shapes (N, T) / (N, T, M); Fractions when exact else float64.

    ``lag[n, t, k]`` = ``t_k`` (int64), ``memory[n, t, k]`` = ``v_{t - t_k}``, ``y[n, t]`` = ``f(v_t, memory)``.
    Single-sequence tokens (``tokens.single``) drop the leading axis N.
    """

    y: np.ndarray
    memory: np.ndarray
    lag: np.ndarray


def lags_at(spec: AdaptiveSpec, syms: Sequence[int], u: int) -> list[int]:
    """Lags ``t_1..t_M`` of the query at padded position ``u`` (``syms`` = padded symbols). ``HmmtxError`` when a lag
    reaches before the padded sequence start."""
    out: list[int] = []
    fetched: list[int] = []
    for k, g in enumerate(spec.lags):
        args = [int(syms[u])] + (fetched[:k] if spec.kind == "type2" else [])
        lag = g(args)
        if lag > u:
            raise HmmtxError(f"lag g_{k + 1} = {lag} at position {u - spec.padding} reaches before the padded sequence "
                             f"(pad = {spec.padding}): lags beyond the sequence are not defined (raise --pad)")
        out.append(lag)
        fetched.append(int(syms[u - lag]))
    return out


def reference(spec: AdaptiveSpec, tokens: Any, *, exact: bool = False) -> AdaptiveReference:
    """The target, computed directly from the sequence (exact Fractions or float64).

    ``exact=True`` with the ``tanh`` readout: lags and memories exact, ``y`` float64 (tanh is not rational).
    """
    from constructions.adaptive.readout import readout_for

    tok = check_tokens(spec, tokens)
    net = readout_for(spec)
    N, T = tok.shape
    pad = spec.padding
    M = spec.M
    lag = np.zeros((N, T, M), dtype=np.int64)
    mem = np.empty((N, T, M), dtype=object)
    for n in range(N):
        syms = [0] * pad + [int(c) for c in tok.symbols[n]]
        vals = [Fraction(0)] * pad + list(tok.values[n])
        for t in range(T):
            u = pad + t
            ls = lags_at(spec, syms, u)
            for k, g in enumerate(ls):
                lag[n, t, k] = g
                mem[n, t, k] = vals[u - g]
    if exact and spec.readout != "tanh":
        y = np.empty((N, T), dtype=object)
        for n in range(N):
            for t in range(T):
                y[n, t] = net.exact([tok.values[n, t]] + list(mem[n, t]))
        return _squeeze(AdaptiveReference(y, mem, lag), tok.single)
    memf = np.array(mem.tolist(), dtype=np.float64).reshape(N, T, M)
    v = np.concatenate([tok.float_values()[..., None], memf], axis=-1)
    return _squeeze(AdaptiveReference(net.target(v), mem if exact else memf, lag), tok.single)


def _squeeze(ref: AdaptiveReference, single: bool) -> AdaptiveReference:
    return AdaptiveReference(*(a[0] for a in ref)) if single else ref


__all__ = [
    "KINDS", "RPES", "MAX_LAG", "MAX_TABLE", "LagFunction", "AdaptiveSpec", "AdaptiveTokens", "AdaptiveReference",
    "parse_lags", "random_lags", "make_spec", "make_tokens", "parse_tokens", "check_tokens", "lags_at", "reference",
]
