"""Exact weight containers and builders for the blocks of a :class:`~constructions.transformer.ConstructedTransformer`.

Every weight is stored as an exact rational (numpy object array of :class:`fractions.Fraction`): these arrays are
the source of truth. The torch module converts them to the requested dtype; the exact executor
(:mod:`constructions.exact`) runs them as they are. Conventions (column vectors, TransformerLens names):

* residual ``h`` (D,); embedding ``W_E`` (n_in, D): row ``W_E[id]`` is added for input id ``id``.
* attention head: ``q = W_Q h_u`` (d_qk,), ``k = W_K h_v`` (d_qk,), value ``W_V h_v`` (d_v,), output ``W_O`` (D, d_v).
  Score of query ``u`` at key ``v <= u`` (causal): ``beta * (q . k + b(u - v))`` with ``b`` = ``rel_bias[lag]``
  (a relative-position bias table over lags, T5/ALiBi style). ``d_qk = 0`` makes a purely positional head.
  Hard (argmax) attention averages the values over the tied maxima (exact ties, in the executing arithmetic).
* bilinear FFN (gated linear unit with identity gate): ``W_3 ((W_1 h) * (W_2 h))``; constants enter through a
  residual coordinate that always holds 1 (``one``), so there are no biases.
* ReLU FFN: ``W_out relu(W_in h + b_in) + b_out``.
* **projective normalisation (non-standard)**: replace a named block by itself divided by the sum of a named block
  (default: itself). Not a standard Transformer operation; it is allowed here because beliefs and operator
  products are only defined up to a positive scalar (scale invariance), so dividing by a positive sum changes no
  output, it only keeps numbers in range. A zero sum raises :class:`HmmtxError` (probability-zero input).
* any 2-D weight may be a dense object array or a :class:`SparseFrac` (exact sparse; builders use it for wide
  sparse weights); consumers go through :func:`nonzeros` / :func:`to_dense`.
* readout: ``z = W_U h`` (unnormalised masses, ``n_out`` rows); the output is ``z / sum(z)`` (= softmax of log z),
  normalised over the readout's last axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from constructions.layout import Layout
from hmm.errors import HmmtxError

Coord = tuple  # ("block_name", i, j, ...): a residual coordinate written by name

ZERO = Fraction(0)
ONE = Fraction(1)


# ---------------------------------------------------------------------------------------------- exact arrays
def frac_zeros(*shape: int) -> np.ndarray:
    """Object array of ``Fraction(0)`` of the given shape."""
    out = np.empty(shape, dtype=object)
    out.fill(ZERO)
    return out


def as_frac_array(values: Any, name: str = "weights") -> np.ndarray:
    """Convert numbers (ints, Fractions, floats converted exactly, strings 'p/q') to an object array of Fractions."""
    arr = np.array(values, dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        v = arr[idx]
        try:
            out[idx] = v if isinstance(v, Fraction) else Fraction(v)
        except (TypeError, ValueError) as exc:
            raise HmmtxError(f"{name}{list(idx)}: cannot convert {v!r} to an exact rational ({exc})") from None
    return out


class SparseFrac:
    """Exact sparse 2-D matrix: ``shape`` and a dict ``{(i, j): Fraction}`` of its non-zeros (zeros never stored).

    Equivalent to a dense object array of Fractions for every consumer of this framework (the torch module, the
    exact executor, ``weight_tables``/``hmmtx inspect``); builders use it for wide, sparse weights (a bilinear FFN
    of width n^3 over a residual of width 2 n^2 would otherwise hold millions of Fraction zeros). Supports
    ``W[i, j]`` reads/writes/``+=``, ``shape``, ``nnz``, ``items()``, ``todense()``.
    """

    def __init__(self, shape: tuple[int, int], entries: dict | None = None) -> None:
        if len(shape) != 2 or any(int(s) < 0 for s in shape):
            raise HmmtxError(f"SparseFrac: expected a 2-D shape, got {shape!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self._d: dict[tuple[int, int], Fraction] = {}
        for (i, j), v in (entries or {}).items():
            self[i, j] = v

    ndim = 2
    dtype = np.dtype(object)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nnz(self) -> int:
        return len(self._d)

    def _key(self, key: Any) -> tuple[int, int]:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise HmmtxError(f"SparseFrac: index with [i, j], got {key!r}")
        i, j = int(key[0]), int(key[1])
        if not (0 <= i < self.shape[0] and 0 <= j < self.shape[1]):
            raise HmmtxError(f"SparseFrac: index {(i, j)} out of range for shape {self.shape}")
        return i, j

    def __getitem__(self, key: Any) -> Fraction:
        return self._d.get(self._key(key), ZERO)

    def __setitem__(self, key: Any, value: Any) -> None:
        k = self._key(key)
        v = value if isinstance(value, Fraction) else Fraction(value)
        if v == 0:
            self._d.pop(k, None)
        else:
            self._d[k] = v

    def items(self) -> list[tuple[int, int, Fraction]]:
        """Non-zeros as ``(i, j, value)``, sorted by row then column."""
        return [(i, j, v) for (i, j), v in sorted(self._d.items())]

    def todense(self) -> np.ndarray:
        out = frac_zeros(*self.shape)
        for (i, j), v in self._d.items():
            out[i, j] = v
        return out

    def __repr__(self) -> str:
        return f"SparseFrac(shape={self.shape}, nnz={self.nnz})"


def nonzeros(W: Any) -> list[tuple[int, int, Fraction]]:
    """Non-zero entries ``(i, j, value)`` of a 2-D exact weight (dense object array or :class:`SparseFrac`)."""
    if isinstance(W, SparseFrac):
        return W.items()
    return [(int(i), int(j), W[i, j]) for i, j in zip(*np.nonzero(np.vectorize(lambda v: v != 0, otypes=[bool])(W)))] if W.size else []


def to_dense(W: Any) -> np.ndarray:
    """Dense object array of a 2-D exact weight (use only for small matrices / selected blocks)."""
    return W.todense() if isinstance(W, SparseFrac) else W


def _check_exact(arr: np.ndarray, name: str, shape: tuple[int, ...]) -> None:
    if isinstance(arr, SparseFrac):
        if arr.shape != shape:
            raise HmmtxError(f"{name}: expected shape {shape}, got {arr.shape}")
        return  # SparseFrac stores Fractions only (converted on write)
    if not isinstance(arr, np.ndarray) or arr.dtype != object:
        raise HmmtxError(f"{name}: weights must be numpy object arrays of Fractions, got {type(arr).__name__}")
    if arr.shape != shape:
        raise HmmtxError(f"{name}: expected shape {shape}, got {arr.shape}")
    for idx in np.ndindex(arr.shape):
        if not isinstance(arr[idx], Fraction):
            raise HmmtxError(f"{name}{list(idx)}: expected a Fraction, got {type(arr[idx]).__name__}")


def coord(layout: Layout, c: Coord | str | int) -> int:
    """Resolve ``("op", i, j)`` / ``"one"`` to a residual coordinate (ints pass through for hidden units)."""
    if isinstance(c, (int, np.integer)):
        return int(c)
    if isinstance(c, str):
        return layout.index(c)
    return layout.index(c[0], *c[1:])


# ---------------------------------------------------------------------------------------------- containers
@dataclass(frozen=True, eq=False)
class Embedding:
    """Token lookup ``W_E`` (n_in, D); ``vocab[i]`` names input id ``i`` (e.g. ``"x=0"``, ``"NULL"``, ``"BOS"``).

    ``W_pos`` (optional, (P_max, D)): an absolute positional embedding (GPT-2 style), row ``p`` added at position
    ``p``: the residual at position ``p`` starts as ``W_E[id_p] + W_pos[p]``. None (the default) = no positional
    embedding (every construction but ``adaptive-memory`` reads positions through relative biases only).
    """

    W_E: np.ndarray
    vocab: tuple[str, ...]
    W_pos: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.vocab) != self.W_E.shape[0]:
            raise HmmtxError(f"embedding: {len(self.vocab)} vocabulary names for {self.W_E.shape[0]} rows of W_E")
        _check_exact(self.W_E, "W_E", self.W_E.shape)
        if self.W_pos is not None:
            if self.W_pos.ndim != 2 or self.W_pos.shape[1] != self.W_E.shape[1] or self.W_pos.shape[0] == 0:
                raise HmmtxError(f"embedding: W_pos must have shape (P_max, {self.W_E.shape[1]}), got {self.W_pos.shape}")
            _check_exact(self.W_pos, "W_pos", self.W_pos.shape)


@dataclass(frozen=True, eq=False)
class AttentionHead:
    """One causal attention head with a relative-position bias (see module docstring for the score)."""

    W_Q: np.ndarray  # (d_qk, D)
    W_K: np.ndarray  # (d_qk, D)
    W_V: np.ndarray  # (d_v, D)
    W_O: np.ndarray  # (D, d_v)
    rel_bias: np.ndarray  # (n_lags,): b(lag) for lag = 0 .. n_lags-1
    name: str = ""
    description: str = ""
    value_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        D = self.W_O.shape[0]
        d_qk, d_v = self.W_Q.shape[0], self.W_V.shape[0]
        _check_exact(self.W_Q, f"{self.name}.W_Q", (d_qk, D))
        _check_exact(self.W_K, f"{self.name}.W_K", (d_qk, D))
        _check_exact(self.W_V, f"{self.name}.W_V", (d_v, D))
        _check_exact(self.W_O, f"{self.name}.W_O", (D, d_v))
        if self.rel_bias.ndim != 1 or self.rel_bias.shape[0] == 0:
            raise HmmtxError(f"{self.name}.rel_bias: expected a non-empty 1-D table over lags, got {self.rel_bias.shape}")
        _check_exact(self.rel_bias, f"{self.name}.rel_bias", self.rel_bias.shape)

    @property
    def d_qk(self) -> int:
        return int(self.W_Q.shape[0])

    @property
    def d_v(self) -> int:
        return int(self.W_V.shape[0])

    @property
    def n_lags(self) -> int:
        return int(self.rel_bias.shape[0])

    @property
    def positional(self) -> bool:
        """True when the score depends on the lag only (no content term)."""
        return self.d_qk == 0 or not nonzeros(self.W_Q) or not nonzeros(self.W_K)


@dataclass(frozen=True, eq=False)
class BilinearFFN:
    """``W_3 ((W_1 h) * (W_2 h))``: W_1, W_2 (m, D), W_3 (D, m). ``hidden_labels`` name the m units."""

    W_1: np.ndarray
    W_2: np.ndarray
    W_3: np.ndarray
    hidden_labels: tuple[str, ...] = ()
    kind: str = field(default="bilinear", init=False)

    def __post_init__(self) -> None:
        m, D = self.W_1.shape
        _check_exact(self.W_1, "W_1", (m, D))
        _check_exact(self.W_2, "W_2", (m, D))
        _check_exact(self.W_3, "W_3", (D, m))

    @property
    def width(self) -> int:
        return int(self.W_1.shape[0])


@dataclass(frozen=True, eq=False)
class ReLUFFN:
    """``W_out relu(W_in h + b_in) + b_out``: W_in (m, D), b_in (m,), W_out (D, m), b_out (D,)."""

    W_in: np.ndarray
    b_in: np.ndarray
    W_out: np.ndarray
    b_out: np.ndarray
    hidden_labels: tuple[str, ...] = ()
    kind: str = field(default="relu", init=False)

    def __post_init__(self) -> None:
        m, D = self.W_in.shape
        _check_exact(self.W_in, "W_in", (m, D))
        _check_exact(self.b_in, "b_in", (m,))
        _check_exact(self.W_out, "W_out", (D, m))
        _check_exact(self.b_out, "b_out", (D,))

    @property
    def width(self) -> int:
        return int(self.W_in.shape[0])


@dataclass(frozen=True)
class ProjectiveNorm:
    """**Non-standard** projective normalisation: ``h[block] <- h[block] / sum(h[by])`` (``by`` defaults to
    ``block``). Justified only because the quantities held are defined up to a positive scale (beliefs, operator
    products); a zero sum raises HmmtxError (the input has probability zero)."""

    block: str
    by: str = ""

    @property
    def denominator(self) -> str:
        return self.by or self.block


@dataclass(frozen=True, eq=False)
class Layer:
    """One pre-residual block: ``h <- h + sum_heads Attn(h)``; ``h <- h + FFN(h)``; then projective norms."""

    name: str
    heads: tuple[AttentionHead, ...] = ()
    ffn: BilinearFFN | ReLUFFN | None = None
    norms: tuple[ProjectiveNorm, ...] = ()
    description: str = ""


@dataclass(frozen=True, eq=False)
class Readout:
    """Unembedding ``W_U`` (n_out, D) to unnormalised masses ``z``; output ``z / sum(z)`` over the last axis of
    ``shape`` (``prod(shape) == n_out``; ``shape=(K, S)`` normalises each row separately)."""

    name: str
    W_U: np.ndarray
    shape: tuple[int, ...]
    description: str = ""
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = 1
        for s in self.shape:
            n *= s
        if n != self.W_U.shape[0]:
            raise HmmtxError(f"readout '{self.name}': shape {self.shape} has {n} entries but W_U has {self.W_U.shape[0]} rows")
        _check_exact(self.W_U, f"readout '{self.name}'.W_U", self.W_U.shape)


# ---------------------------------------------------------------------------------------------- builders
def lag_bias(target_lag: int, n_lags: int, slope: int | Fraction = 1) -> np.ndarray:
    """Tent bias ``b(lag) = -slope * |lag - target_lag|`` for lags ``0..n_lags-1`` (ALiBi-style, centred at a lag).

    Hard attention with this bias picks lag ``target_lag`` when it exists (``u >= target_lag``); otherwise every
    available lag is below the target and the score is largest at the largest lag ``u``, i.e. at position 0: a NULL
    sink placed at position 0 is the automatic fall-back, no content term needed. Gap to the runner-up: ``slope``.
    """
    if n_lags <= 0:
        raise HmmtxError(f"lag_bias: n_lags must be positive, got {n_lags}")
    s = Fraction(slope)
    return np.array([-s * abs(lag - target_lag) for lag in range(n_lags)], dtype=object)


def positional_targets(bias: np.ndarray, P: int) -> tuple[np.ndarray, bool]:
    """THE hard target of a positional head: for every query ``u < P`` the key ``argmax_{v <= u} b(u - v)`` (the
    first maximum in key order, i.e. the largest lag among tied ones), from the bias table ``bias`` (at least ``P``
    lags); and whether every query's maximum is unique (tied maxima are averaged by hard attention, so a single
    target then does not describe it).

    Returns ``(targets (P,) int, unique)``. O(P) time and memory (a running argmax over lags, no (P, P) score map:
    long inputs, C5 of the certified-verdicts issue). Used by the torch module's fast hard heads, the leakage
    bounds and the fast exact executor.
    """
    b = np.array([float(v) for v in bias[:P]], dtype=np.float64)
    prev = np.concatenate([[-np.inf], np.maximum.accumulate(b)[:-1]])
    new = b > prev  # lag k starts a strictly larger maximum
    tie = b == prev  # lag k ties the maximum so far
    last = np.maximum.accumulate(np.where(new | tie, np.arange(P), -1))  # largest lag <= u at the running max
    return np.arange(P) - last, not bool(tie[last].any())


def copy_head(
    layout: Layout,
    src: str,
    dst: str,
    rel_bias: np.ndarray,
    *,
    content: Sequence[tuple[Coord | str, Coord | str, Any]] = (),
    name: str = "",
    description: str = "",
) -> AttentionHead:
    """A head whose value/output copy block ``src`` of the attended position into block ``dst`` (same size).

    ``content``: optional score terms ``(query_coord, key_coord, weight)``; each adds ``weight * h_u[q] * h_v[k]``
    to the score (one q/k dimension per term). Without content terms the head is purely positional.
    """
    D = layout.width
    s_blk, d_blk = layout.block(src), layout.block(dst)
    if s_blk.size != d_blk.size:
        raise HmmtxError(f"copy_head: source '{src}' has size {s_blk.size} but destination '{dst}' has {d_blk.size}")
    W_V = SparseFrac((s_blk.size, D))
    W_O = SparseFrac((D, s_blk.size))
    for i in range(s_blk.size):
        W_V[i, s_blk.start + i] = ONE  # value i = h_v[src][i]
        W_O[d_blk.start + i, i] = ONE  # written to dst[i]
    W_Q = SparseFrac((len(content), D))
    W_K = SparseFrac((len(content), D))
    for r, (qc, kc, w) in enumerate(content):
        W_Q[r, coord(layout, qc)] = Fraction(w)
        W_K[r, coord(layout, kc)] = ONE
    return AttentionHead(W_Q, W_K, W_V, W_O, as_frac_array(rel_bias), name=name, description=description,
                         value_labels=tuple(s_blk.labels()))


class BilinearBuilder:
    """Accumulate bilinear hidden units against names, then :meth:`build` a :class:`BilinearFFN`.

    ``unit(a, b, writes)`` adds one hidden unit computing ``h[a] * h[b]`` and adding ``coeff * unit`` to each
    ``(coord, coeff)`` in ``writes``. Use ``"one"`` as a factor for linear terms.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._units: list[tuple[int, Fraction, int, Fraction, list[tuple[int, Fraction]], str]] = []

    def unit(
        self,
        a: Coord | str,
        b: Coord | str,
        writes: Iterable[tuple[Coord | str, Any]],
        *,
        a_scale: Any = 1,
        b_scale: Any = 1,
        label: str = "",
    ) -> None:
        w = [(coord(self.layout, c), Fraction(v)) for c, v in writes]
        self._units.append((coord(self.layout, a), Fraction(a_scale), coord(self.layout, b), Fraction(b_scale), w, label))

    def __len__(self) -> int:
        return len(self._units)

    def build(self) -> BilinearFFN:
        D, m = self.layout.width, len(self._units)
        W_1, W_2, W_3 = SparseFrac((m, D)), SparseFrac((m, D)), SparseFrac((D, m))
        labels = []
        for u, (a, sa, b, sb, writes, label) in enumerate(self._units):
            W_1[u, a] = W_1[u, a] + sa
            W_2[u, b] = W_2[u, b] + sb
            for c, v in writes:
                W_3[c, u] = W_3[c, u] + v
            labels.append(label or f"u{u}")
        return BilinearFFN(W_1, W_2, W_3, tuple(labels))


class Literal(NamedTuple):
    """A 0/1-valued affine form of the residual, ``sum_i w_i h[c_i] + constant`` (a ReLU conjunction's input).

    Fields: ``terms`` (``(coord, weight)`` pairs) and ``constant``. Build with :func:`literal`, :func:`block_sum`,
    :func:`negated`.
    """

    terms: tuple[tuple[Any, Fraction], ...]
    constant: Fraction = Fraction(0)


def literal(c: Coord | str) -> Literal:
    """The literal ``h[c]`` (a one-hot entry, a flag)."""
    return Literal(((c, ONE),))


def block_sum(layout: Layout, name: str) -> Literal:
    """The literal ``sum(h[name])`` (occupancy of a one-hot block: 1 when it holds a symbol, 0 when empty)."""
    blk = layout.block(name)
    return Literal(tuple((blk.start + s, ONE) for s in range(blk.size)))


def negated(lit: Literal) -> Literal:
    """``1 - lit``."""
    return Literal(tuple((c, -w) for c, w in lit.terms), ONE - lit.constant)


class ReLUBuilder:
    """Accumulate ReLU hidden units against names, then :meth:`build` a :class:`ReLUFFN` (``b_out = 0``).

    ``unit(terms, bias, writes)`` adds ``u = relu(sum_i w_i h[c_i] + bias)`` and adds ``coeff * u`` to each
    ``(coord, coeff)`` of ``writes``. ``conjunction(literals, writes)`` adds the AND of ``n`` 0/1 literals:

        u = relu(l_1 + ... + l_n - (n - 1))   = 1 if every l_i = 1, else <= 0 -> 0

    (exact on 0/1 inputs: the sum is n only when all hold, at most n - 1 otherwise).
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._units: list[tuple[list[tuple[int, Fraction]], Fraction, list[tuple[int, Fraction]], str]] = []

    def unit(self, terms: Iterable[tuple[Coord | str | int, Any]], bias: Any, writes: Iterable[tuple[Coord | str, Any]],
             *, label: str = "") -> None:
        t = [(coord(self.layout, c), Fraction(w)) for c, w in terms]
        w = [(coord(self.layout, c), Fraction(v)) for c, v in writes]
        self._units.append((t, Fraction(bias), w, label))

    def conjunction(self, literals: Sequence[Literal], writes: Iterable[tuple[Coord | str, Any]], *,
                    label: str = "") -> None:
        terms = [tc for lit in literals for tc in lit.terms]
        bias = sum((lit.constant for lit in literals), Fraction(0)) - (len(literals) - 1)
        self.unit(terms, bias, writes, label=label)

    def __len__(self) -> int:
        return len(self._units)

    def build(self) -> ReLUFFN:
        m, D = len(self._units), self.layout.width
        W_in, W_out, b_in = frac_zeros(m, D), frac_zeros(D, m), frac_zeros(m)
        labels = []
        for u, (terms, bias, writes, label) in enumerate(self._units):
            for c, w in terms:
                W_in[u, c] += w
            b_in[u] = bias
            for c, v in writes:
                W_out[c, u] += v
            labels.append(label or f"u{u}")
        return ReLUFFN(W_in, b_in, W_out, frac_zeros(D), tuple(labels))


def readout(
    layout: Layout,
    name: str,
    terms: Sequence[tuple[int, Coord | str, Any]],
    shape: tuple[int, ...],
    *,
    description: str = "",
    labels: Sequence[str] = (),
) -> Readout:
    """Readout from ``(output_row, residual_coord, weight)`` terms: ``z[row] += weight * h[coord]``."""
    n = 1
    for s in shape:
        n *= s
    W_U = SparseFrac((n, layout.width))
    for row, c, w in terms:
        k = coord(layout, c)
        W_U[row, k] = W_U[row, k] + Fraction(w)
    return Readout(name, W_U, tuple(shape), description, tuple(labels))


__all__ = [
    "Embedding",
    "AttentionHead",
    "BilinearFFN",
    "ReLUFFN",
    "ProjectiveNorm",
    "Layer",
    "Readout",
    "BilinearBuilder",
    "ReLUBuilder",
    "Literal",
    "literal",
    "block_sum",
    "negated",
    "copy_head",
    "positional_targets",
    "lag_bias",
    "readout",
    "frac_zeros",
    "as_frac_array",
    "SparseFrac",
    "nonzeros",
    "to_dense",
    "coord",
]
