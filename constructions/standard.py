"""Standard-block compilation: the same construction written only with blocks a stock decoder-only Transformer has.

:func:`compile_standard` turns any built :class:`~constructions.transformer.ConstructedTransformer` into a
:class:`StandardTransformer`: a GPT-style model with the TransformerLens parameterisation (``W_E``, ``W_pos``,
per-block ``W_Q/W_K/W_V/W_O`` with biases, gated MLP ``W_gate/W_in/W_out``, ``W_U``), no attention scaling, no
layer norms. The substitutions, each with its error in exact arithmetic (derivations in ``docs/export.md``):

* **relative-position bias -> learned absolute positions.** Hard models whose positional heads all use unit tents
  ``-|lag - c|`` and have no content term (content heads: no position bias) get the quadratic code ``(p, p^2)`` (block ``std.pos2``, see :func:`_position_coo`: exact hard
  selection, 2 coordinates); otherwise ``W_pos`` writes a one-hot of the position into a new residual block
  ``std.pos`` (``n_ctx`` coordinates). A head's score ``q.k + b(u - v)`` becomes one dot product
  ``[q; R_u] . [k; e_v]`` with ``R_u[v] = b(u - v)``: the query reads its own position and emits the row of the bias
  table, the key emits its one-hot position. *Exact* (the dot product adds one non-zero term); width cost
  ``n_ctx`` residual coordinates and ``n_ctx`` head dimensions.
* **hard attention -> softmax with a large inverse temperature** ``beta`` (default :data:`HARD_BETA` = 2^12,
  folded into ``W_Q``): the score gap of every hard head is at least 1, so each query puts weight at most
  ``(P - 1) e^{-beta}`` off its hard target (ties keep their equal weights). In float32 and float64 the off-target
  weights underflow to exactly 0 (``e^{-4096}``), so the float computation *is* the hard one; the exact-arithmetic
  leakage is below ``P e^{-4096} * (largest value ratio)``, far under every round-off allowance.
* **bilinear unit -> gated MLP** (ReGLU by default; GeGLU/SwiGLU with ``act="gelu"``/``"silu"``): for any
  activation of the form ``act(a) = a g(a)`` with ``g(a) + g(-a) = 1`` (ReLU, GELU, SiLU all are),
  ``act(a) b + act(-a) (-b) = a b`` exactly, so one bilinear unit becomes two gated units. *Exact* in exact
  arithmetic; in floats exact for ReLU (one of the two terms is an exact zero), within a few ulps for GELU/SiLU
  (the computed ``g(a) + g(-a)`` is not exactly 1). A unit with a constant factor (``c * b``, e.g. the clearing
  units ``-Q`` of the prefix layers) is one gated unit: ``relu(c) b`` for ReLU, and for GELU/SiLU
  ``act(64) b * (c / 64)`` with the gate reading :data:`CONST_GATE` = 64 times the constant coordinate:
  ``gelu(64) = silu(64) = 64`` exactly in float32 and float64 (``erf``/``exp`` saturate), so the unit computes
  ``c b`` with the same single rounding as the idealised FFN, and ``x + (-x) = 0`` clears exactly.
* **ReLU MLP -> gated MLP**: ``relu(w.h + c) = relu(w.h + c * one) * one`` with the constant coordinate ``std.one``
  (written by ``W_pos``). *Exact*; needs ``act="relu"``.
* **projective normalisation: no standard counterpart.** A stock block cannot divide a residual block by a sum
  (LayerNorm/RMSNorm act on a whole sublayer input, not on the residual stream). Constructions whose normalised
  blocks are used only projectively (the prefix products of H1/H3, the window products) drop it
  (``drop_norms=True``): in exact arithmetic the outputs are unchanged (scale invariance), in floating point the
  unnormalised products must stay inside the normal range: the variant works up to a length limit (``docs/export.md``),
  checked a posteriori by the bound. The prefix constructions write every product into a fresh block and clear
  the old one (``op``/``op_alt``, :mod:`constructions.prefix`), so no update cancels and the compiled layers are
  the idealised ones, head for head and unit for unit.
* **output normalisation ``z / sum z``: not replaced** (the head emits the unnormalised masses ``z`` as its
  ``logits``; read probabilities as ``z / sum z``, not softmax). ``docs/export.md`` says why.

The compiled model keeps the idealised layout's blocks at the same coordinates and appends its own (``std.one``,
``std.pos`` or ``std.pos2``), so every codec, probe and readout of the construction reads it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from constructions.blocks import BilinearFFN, ReLUFFN, nonzeros
from constructions.layout import Layout
from constructions.transformer import ConstructedTransformer, torch_dtype
from constructions.types import MODES, ConstructionSpec, ModelInfo, RunResult, Trace
from hmm.errors import HmmtxError
from hmm.rounding import round_exact

#: Inverse temperature replacing hard attention (a power of two, so ``beta * score`` is exact in float32/float64).
HARD_BETA = 4096.0
#: Gated-MLP activations a standard variant may use (TransformerLens names).
ACTIVATIONS = ("relu", "gelu", "silu")
#: Residual blocks the compiler appends to the idealised layout.
ONE_BLOCK = "std.one"
POS_BLOCK = "std.pos"
QUAD_BLOCK = "std.pos2"
#: Gate input of a gated unit with a constant factor under GELU/SiLU (``act(64) = 64`` exactly in float32/64).
CONST_GATE = 64.0


# ---------------------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class StandardConfig:
    """The architecture (a subset of TransformerLens's ``HookedTransformerConfig``, same field names).

    Fields: ``n_layers``, ``d_model`` (residual width D), ``n_ctx`` (positions), ``d_head``, ``n_heads``, ``d_mlp``,
    ``d_vocab`` (input ids), ``d_vocab_out`` (head outputs), ``act_fn`` (gated-MLP activation).
    Fixed: gated MLP, learned absolute positions, no normalisation, no attention scaling, causal attention.
    """

    n_layers: int
    d_model: int
    n_ctx: int
    d_head: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    d_vocab_out: int
    act_fn: str = "relu"

    def hooked_transformer_dict(self, dtype: str = "float64") -> dict:
        """Keyword arguments of ``transformer_lens.HookedTransformerConfig`` (plus ``dtype`` as a string)."""
        return {
            "n_layers": self.n_layers, "d_model": self.d_model, "n_ctx": self.n_ctx, "d_head": self.d_head,
            "n_heads": self.n_heads, "d_mlp": self.d_mlp, "d_vocab": self.d_vocab, "d_vocab_out": self.d_vocab_out,
            "act_fn": self.act_fn, "gated_mlp": True, "normalization_type": None, "positional_embedding_type": "standard",
            "use_attn_scale": False, "attention_dir": "causal", "original_architecture": "hmmtx-standard",
            "default_prepend_bos": False, "dtype": dtype,
        }


class SparseMatrix(NamedTuple):
    """A float64 matrix stored by its non-zeros (``rows``, ``cols``, ``vals``; duplicates summed) with ``shape``.
    The standard weights are mostly zeros (one-hot positions, gated units); they are dense only when exported."""

    shape: tuple
    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray

    @staticmethod
    def from_dict(shape: tuple, entries: dict, extra: tuple | None = None) -> "SparseMatrix":
        """``entries``: ``{(i, j): value}``; ``extra``: more non-zeros as arrays ``(rows, cols, vals)``."""
        keys = list(entries)
        r = np.array([k[0] for k in keys], dtype=np.int64)
        c = np.array([k[1] for k in keys], dtype=np.int64)
        v = np.array([entries[k] for k in keys], dtype=np.float64)
        if extra is not None:
            r, c, v = np.concatenate([r, extra[0]]), np.concatenate([c, extra[1]]), np.concatenate([v, extra[2]])
        keep = v != 0
        return SparseMatrix(tuple(int(s) for s in shape), r[keep], c[keep], v[keep])

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape)
        np.add.at(out, (self.rows, self.cols), self.vals)
        return out

    @property
    def nnz(self) -> int:
        return int(self.vals.size)

    def right_multiplier(self, dtype: torch.dtype) -> torch.Tensor:
        """Sparse (COO) tensor of the transpose: ``x @ W`` is computed as ``(W^T @ x^T)^T`` (:func:`_mm`)."""
        idx = torch.as_tensor(np.stack([self.cols, self.rows]))
        return torch.sparse_coo_tensor(idx, torch.as_tensor(self.vals, dtype=dtype),
                                       size=(self.shape[1], self.shape[0]), check_invariants=False).coalesce()


@dataclass(frozen=True, eq=False)
class BlockWeights:
    """One Transformer block in TransformerLens shapes (H heads, D model width, d head width, m MLP width):
    ``W_Q, W_K, W_V`` H matrices (D, d), ``W_O`` H matrices (d, D), ``W_gate, W_in`` (D, m), ``W_out`` (m, D),
    ``b_out`` (D,) float64. All biases TransformerLens has (``b_Q, b_K, b_V, b_O, b_in``) are zero."""

    W_Q: tuple
    W_K: tuple
    W_V: tuple
    W_O: tuple
    W_gate: SparseMatrix
    W_in: SparseMatrix
    W_out: SparseMatrix
    b_out: np.ndarray

    def named(self, l: int) -> dict[str, np.ndarray]:
        """TransformerLens names -> dense float64 arrays."""
        H = len(self.W_Q)
        D, d = self.W_Q[0].shape
        m = self.W_in.shape[1]
        st = lambda ms: np.stack([w.dense() for w in ms])  # noqa: E731
        z = np.zeros
        return {
            f"blocks.{l}.attn.W_Q": st(self.W_Q), f"blocks.{l}.attn.b_Q": z((H, d)),
            f"blocks.{l}.attn.W_K": st(self.W_K), f"blocks.{l}.attn.b_K": z((H, d)),
            f"blocks.{l}.attn.W_V": st(self.W_V), f"blocks.{l}.attn.b_V": z((H, d)),
            f"blocks.{l}.attn.W_O": st(self.W_O), f"blocks.{l}.attn.b_O": z(D),
            f"blocks.{l}.mlp.W_gate": self.W_gate.dense(), f"blocks.{l}.mlp.W_in": self.W_in.dense(),
            f"blocks.{l}.mlp.b_in": z(m), f"blocks.{l}.mlp.W_out": self.W_out.dense(), f"blocks.{l}.mlp.b_out": self.b_out,
        }

    def nnz(self) -> int:
        return sum(w.nnz for w in self.W_Q + self.W_K + self.W_V + self.W_O) + self.W_gate.nnz + self.W_in.nnz + \
            self.W_out.nnz + int(np.count_nonzero(self.b_out))


class BlockLabels(NamedTuple):
    """What block ``l`` holds: ``layer`` (the idealised layer's name), ``heads`` (one line per head, in head
    order; heads beyond are zero padding), ``units`` (one label per gated MLP unit, in unit order)."""

    layer: str
    heads: tuple
    units: tuple


class StdLayer(NamedTuple):
    """What ``std.layers`` lists: a block's ``name`` and ``description`` (``norms`` always empty)."""

    name: str
    description: str
    norms: tuple = ()


class Probe(NamedTuple):
    """A linear readout of the final residual (an idealised readout, kept as a labelled direction set):
    masses ``z = h @ W`` (W: (D, n_out)), output ``z / sum z`` over the last axis of ``shape``."""

    name: str
    W: np.ndarray
    shape: tuple
    labels: tuple
    description: str


@dataclass(frozen=True, eq=False)
class StandardWeights:
    """All parameters: ``W_E`` (d_vocab, D), ``W_pos`` (n_ctx, D), ``blocks``, ``W_U`` (D, d_vocab_out)."""

    W_E: np.ndarray
    W_pos: np.ndarray
    blocks: tuple
    W_U: np.ndarray
    #: float32 copies of W_E / W_U rounded once from the exact values (None: round the float64 arrays)
    W_E32: np.ndarray | None = None
    W_U32: np.ndarray | None = None

    def dense_size(self) -> int:
        """Number of parameters once dense (what an export writes)."""
        n = self.W_E.size + self.W_pos.size + self.W_U.size * 2
        for b in self.blocks:
            H, (D, d), m = len(b.W_Q), b.W_Q[0].shape, b.W_in.shape[1]
            n += 4 * H * D * d + 3 * H * d + D + 3 * D * m + m + D
        return int(n)

    def nnz(self) -> int:
        return int(np.count_nonzero(self.W_E) + np.count_nonzero(self.W_pos) + np.count_nonzero(self.W_U)) + \
            sum(b.nnz() for b in self.blocks)

    def state_dict(self) -> dict[str, np.ndarray]:
        """TransformerLens parameter names -> dense float64 arrays (``embed.W_E``, ``blocks.0.attn.W_Q``, ...)."""
        out = {"embed.W_E": self.W_E, "pos_embed.W_pos": self.W_pos}
        for l, b in enumerate(self.blocks):
            out.update(b.named(l))
        out["unembed.W_U"] = self.W_U
        out["unembed.b_U"] = np.zeros(self.W_U.shape[1])
        return out


@dataclass(frozen=True)
class StandardInfo(ModelInfo):
    """Metadata of a standard variant (``std.info``).

    Fields:
        n:             operator size of the idealised construction (1 when it has none)
        dropped_norms: the projectively normalised blocks whose normalisation was dropped (sorted names)
        mass_scale:    ``((block, c), ...)``: embedding entries of a dropped-norm block multiplied by ``c``
    """

    n: int = 1
    dropped_norms: tuple = ()
    mass_scale: tuple = ()


class Substitution(NamedTuple):
    """One replaced piece: ``what`` (idealised piece), ``by`` (standard block), ``error`` (exact-arithmetic error)."""

    what: str
    by: str
    error: str


# ---------------------------------------------------------------------------------------------- helpers
def _dense(W: Any, dtype: Any = np.float64) -> np.ndarray:
    """Exact 2-D weight (object array or SparseFrac) -> dense ``dtype``, one correct rounding per entry."""
    out = np.zeros(tuple(int(s) for s in W.shape), dtype=dtype)
    for i, j, v in nonzeros(W):
        out[i, j] = round_exact(v, dtype)
    return out


def _scaled_dense(W: Any, scale: Sequence[tuple[slice, Any]], dtype: Any = np.float64) -> np.ndarray:
    """Exact 2-D weight -> dense float64 with the columns in each slice of ``scale`` ((slice, c) pairs) multiplied
    by ``c`` in exact arithmetic first (one rounding per entry, like :func:`_dense`)."""
    col_c = {j: Fraction(c) for sl, c in scale for j in range(sl.start, sl.stop)}
    out = np.zeros(tuple(int(s) for s in W.shape), dtype=dtype)
    for i, j, v in nonzeros(W):
        out[i, j] = round_exact(v * col_c[j] if j in col_c else v, dtype)
    return out


def _rows(W: Any) -> list[dict[int, Fraction]]:
    """Rows of an exact 2-D weight as ``{column: value}`` dicts (non-zeros only)."""
    rows: list[dict[int, Fraction]] = [dict() for _ in range(int(W.shape[0]))]
    for i, j, v in nonzeros(W):
        rows[i][j] = v
    return rows


def constant_coordinates(model: ConstructedTransformer) -> set[int]:
    """Residual coordinates that hold 1 at every position of every input: embedding column all ones and never
    written by any head, FFN or normalisation."""
    W_E = model.embedding.W_E
    cand = {j for j in range(model.layout.width) if all(W_E[i, j] == 1 for i in range(W_E.shape[0]))}
    for layer in model.layers:
        for h in layer.heads:
            cand -= {i for i, _, _ in nonzeros(h.W_O)}
        f = layer.ffn
        if isinstance(f, BilinearFFN):
            cand -= {i for i, _, _ in nonzeros(f.W_3)}
        elif isinstance(f, ReLUFFN):
            cand -= {i for i, _, _ in nonzeros(f.W_out)} | {i for i, v in enumerate(f.b_out) if v != 0}
        for n in layer.norms:
            sl = model.layout[n.block]
            cand -= set(range(sl.start, sl.stop))
    return cand


class _Plan:
    """Mutable per-layer assembly: heads (q, k, v, o as dicts) and gated units (gate, lin, out as dicts)."""

    def __init__(self) -> None:
        self.heads: list[dict] = []
        self.units: list[tuple[dict, dict, dict, str]] = []
        self.b_out: dict[int, float] = {}


# ---------------------------------------------------------------------------------------------- compile
def compile_standard(
    model: ConstructedTransformer,
    *,
    beta: float | None = None,
    act: str = "relu",
    drop_norms: bool = False,
    head_blocks: Sequence[str] = (),
    mass_scale: dict | None = None,
    name: str | None = None,
    bound_fn: Any = None,
) -> "StandardTransformer":
    """The standard-block variant of ``model`` (see the module docstring for every substitution).

    Args:
        beta: inverse temperature of the attention (default: :data:`HARD_BETA` for a hard model, the model's own
            beta for a softmax model).
        act: gated-MLP activation (``relu``, ``gelu``, ``silu``); ReLU FFNs need ``relu``.
        drop_norms: allow dropping projective normalisations (only for constructions whose normalised blocks are
            used projectively; the caller vouches for it). Without it a model with norms raises HmmtxError.
        head_blocks: residual blocks the unembedding reads when the model has no readout (e.g. ``("y", "mem")``).
        mass_scale: ``{block: c}`` multiplies the embedding's entries of a dropped-norm block by ``c`` (a position
            holding a product of k embedded factors then holds ``c^k`` times it: projectively the same; ``c`` near the
            per-token mass loss keeps unnormalised products in the float range for longer).
    """
    if act not in ACTIVATIONS:
        raise HmmtxError(f"--act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    has_norms = any(l.norms for l in model.layers)
    if has_norms and not drop_norms:
        raise HmmtxError(f"construction '{model.spec.name}' uses projective normalisation, which no standard block "
                         "computes; it has no standard-block variant (see docs/export.md)")
    if act != "relu" and any(isinstance(l.ffn, ReLUFFN) for l in model.layers):
        raise HmmtxError(f"construction '{model.spec.name}' has ReLU FFNs: its gated MLP must use --act relu")
    if beta is None:
        beta = HARD_BETA if model.attention == "hard" else float(model.beta)
    n_ctx = int(model.max_positions)
    # the quadratic code keeps the argmax of a unit tent only when the score has no content term
    quad = model.attention == "hard" and all(
        _tent_centre(h.rel_bias[:n_ctx]) == -1 or (h.positional and _tent_centre(h.rel_bias[:n_ctx]) is not None)
        for l in model.layers for h in l.heads)
    if not quad and n_ctx > 1 << 14:
        raise HmmtxError(f"construction '{model.spec.name}': {n_ctx} positions is too many for one-hot position embeddings")
    lay = Layout()
    for blk in model.layout:
        lay.add(blk.name, blk.shape, blk.description)
    lay.add(ONE_BLOCK, 1, "constant 1 (written by W_pos): biases of gated units")
    if quad:
        lay.add(QUAD_BLOCK, 2, "(p, p^2) of the position p (written by W_pos): quadratic relative-position scores")
    else:
        lay.add(POS_BLOCK, n_ctx, "one-hot of the position (written by W_pos): relative-position scores")
    lay.freeze()
    consts = constant_coordinates(model) | {lay.index(ONE_BLOCK)}
    plans = [_plan_layer(model, lay, li, float(beta), consts, act) for li in range(len(model.layers))]
    scale = dict(mass_scale or {})
    for b in scale:
        if not any(n.block == b for l in model.layers for n in l.norms):
            raise HmmtxError(f"mass_scale: '{b}' is not a projectively normalised block of '{model.spec.name}'")
    weights, cfg = _assemble(model, lay, plans, n_ctx, act, head_blocks, scale)
    labels = tuple(BlockLabels(model.layers[li].name, tuple(f"{h['name']}: {h['description']}" for h in p.heads),
                               tuple(u[3] for u in p.units)) for li, p in enumerate(plans))
    probes = tuple(
        Probe(r.name, _pad_rows(_dense(r.W_U).T, lay.width), tuple(r.shape), tuple(r.labels), r.description)
        for r in model.readouts.values()
    )
    subs = _substitutions(model, float(beta), act, has_norms)
    spec = ConstructionSpec(
        name or f"{model.spec.name}-std", cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_mlp, n_ctx, "softmax",
        float(beta), f"standard-block compilation of {model.spec.name} ({model.spec.provenance})",
        {**model.spec.parameters, "act": act, "idealised": {"layers": model.spec.layers, "heads": model.spec.heads,
                                                             "width": model.spec.width, "ffn_width": model.spec.ffn_width}},
    )
    info = StandardInfo(n=int(model.info.get("n", 1) or 1), dropped_norms=tuple(sorted({n.block for l in model.layers for n in l.norms})),
                        mass_scale=tuple(sorted(scale.items())))
    return StandardTransformer(cfg, weights, lay, probes, model, spec, subs, bound_fn=bound_fn, info=info, labels=labels)


def _transpose(W: Any) -> Any:
    from constructions.blocks import SparseFrac

    T = SparseFrac((int(W.shape[1]), int(W.shape[0])))
    for i, j, v in nonzeros(W):
        T[j, i] = v
    return T


def _plan_layer(model: ConstructedTransformer, lay: Layout, li: int, beta: float, consts: set[int],
                act: str) -> _Plan:
    layer = model.layers[li]
    plan = _Plan()
    n_ctx = model.max_positions
    for h in layer.heads:
        plan.heads.append(_head(h, lay, beta, n_ctx))
    f = layer.ffn
    if isinstance(f, BilinearFFN):
        r1, r2, c3 = _rows(f.W_1), _rows(f.W_2), _rows(_transpose(f.W_3))
        for u in range(f.width):
            g = {j: float(v) for j, v in r1[u].items()}
            ln = {j: float(v) for j, v in r2[u].items()}
            out = {j: float(v) for j, v in c3[u].items()}
            lbl = f.hidden_labels[u] if u < len(f.hidden_labels) else f"u{u}"
            _bilinear_units(plan, g, ln, out, consts, act, lbl)
    elif isinstance(f, ReLUFFN):
        one = lay.index(ONE_BLOCK)
        rin = _rows(f.W_in)
        cout = _rows(_transpose(f.W_out))
        for u in range(f.width):
            g = {j: float(v) for j, v in rin[u].items()}
            if f.b_in[u] != 0:
                g[one] = g.get(one, 0.0) + float(f.b_in[u])
            lbl = f.hidden_labels[u] if u < len(f.hidden_labels) else f"u{u}"
            plan.units.append((g, {one: 1.0}, {j: float(v) for j, v in cout[u].items()}, f"relu({lbl})"))
        plan.b_out = {i: float(v) for i, v in enumerate(f.b_out) if v != 0}
    return plan


def _bilinear_units(plan: _Plan, g: dict, ln: dict, out: dict, consts: set[int], act: str, label: str) -> None:
    """``(g.h)(ln.h)`` written to ``out`` as gated units (see module docstring: act(a) b + act(-a)(-b) = a b).
    A constant factor ``c`` (one constant coordinate): one unit, ``relu(c) b`` or ``act(64) b * (c / 64)``."""
    if not g or not ln or not out:
        return
    for a, b in ((g, ln), (ln, g)):
        if act == "relu" and set(a) <= consts and sum(a.values()) > 0:
            plan.units.append((a, b, out, label))  # relu(c) = c for the constant coordinate
            return
        if act != "relu" and len(a) == 1 and set(a) <= consts:
            (c_idx, c), = a.items()  # act(CONST_GATE) = CONST_GATE exactly (checked by standard_bound)
            plan.units.append(({c_idx: CONST_GATE}, b, {j: v * c / CONST_GATE for j, v in out.items()}, label))
            return
    plan.units.append((g, ln, out, label + " [+]"))
    plan.units.append(({j: -v for j, v in g.items()}, {j: -v for j, v in ln.items()}, out, label + " [-]"))


def _head(h: Any, lay: Layout, beta: float, n_ctx: int) -> dict:
    """A head as sparse dicts: ``q``/``k`` map residual coordinate -> {head dim: weight}; ``vo`` lists the value
    dims as (read {coord: w}, write {coord: w}). Content dims first, then ``n_ctx`` position dims."""
    d_c = h.d_qk
    q: dict[int, dict[int, float]] = {}
    k: dict[int, dict[int, float]] = {}
    for r, j, v in nonzeros(h.W_Q):
        q.setdefault(j, {})[r] = beta * float(v)
    for r, j, v in nonzeros(h.W_K):
        k.setdefault(j, {})[r] = float(v)
    table = np.array([float(b) for b in h.rel_bias[:n_ctx]])
    pos_part = None
    d_qk = d_c
    if np.any(table != 0):
        pos_part = _pos_code(lay, table, beta, d_c)
        d_qk = pos_part[3]
    wv, wo = _rows(h.W_V), _rows(_transpose(h.W_O))
    vo = [({j: float(v) for j, v in wv[i].items()}, {j: float(v) for j, v in wo[i].items()}) for i in range(h.d_v)]
    return {"q": q, "k": k, "vo": vo, "d_qk": d_qk, "pos": pos_part, "name": h.name or "head",
            "description": h.description}


def _tent_centre(table: Any) -> int | None:
    """``c`` when the bias table is the unit-slope tent ``b(lag) = -|lag - c|``; None otherwise (all-zero tables,
    i.e. content-only heads, count as compatible: they get no position dims)."""
    t = [Fraction(v) for v in table]
    if all(v == 0 for v in t):
        return -1
    c = max(range(len(t)), key=lambda i: t[i])
    return c if all(t[l] == -abs(l - c) for l in range(len(t))) else None


def _pos_code(lay: Layout, table: np.ndarray, beta: float, off: int) -> tuple:
    """Position part of a head: ``("onehot", off, beta * table, d_qk)`` or, when the layout holds the quadratic code
    ``(p, p^2)`` and the table is a unit tent centred at ``c``, ``("quad", off, (beta, c), d_qk)``."""
    if QUAD_BLOCK in lay:
        c = _tent_centre(table)
        if c is None or c < 0:
            raise HmmtxError("quadratic position code: the table is not a unit tent")
        return ("quad", off, (beta, c), off + 2)
    return ("onehot", off, beta * np.asarray(table, dtype=np.float64), off + lay.block(POS_BLOCK).size)


def _position_coo(pos_part: tuple | None, n_ctx: int, lay: Layout) -> tuple[tuple, tuple]:
    """COO parts ``(rows, cols, vals)`` of the position dims of W_Q and W_K.

    One-hot code: the query at position u (residual coordinate ``start + u``) emits ``R_u[v] = beta b(u - v)``
    (v <= u) into head dim ``off + v``; the key at v emits 1 into head dim ``off + v``: ``q_u . k_v = beta b(u - v)``.
    Quadratic code (unit tents ``-|lag - c|``, hard heads): ``q_u = beta (2 (u - c), -1)``, ``k_v = (v, v^2)``, so
    ``q_u . k_v = beta (2 (u - c) v - v^2) = -beta (u - v - c)^2 + beta (u - c)^2``: the last term is constant per
    query (softmax ignores it) and ``-(lag - c)^2`` has the tent's argmax over the available lags (lag c, or lag u
    when ``u < c``) with gap >= 1. Every term is an integer times ``beta = 2^12`` below ``2^24 * beta`` while
    ``2 n_ctx^2 < 2^24``, so the scores are exact in float32 up to 2896 positions (float64: far beyond)."""
    e = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if pos_part is None:
        return e, e
    kind, off, data, _ = pos_part
    pos = lay.block(QUAD_BLOCK if kind == "quad" else POS_BLOCK)
    if kind == "quad":
        beta, c = data
        one = lay.index(ONE_BLOCK)
        q = (np.array([pos.start, one, one]), np.array([off, off, off + 1]), np.array([2 * beta, -2 * beta * c, -beta]))
        k = (np.array([pos.start, pos.start + 1]), np.array([off, off + 1]), np.array([1.0, 1.0]))
        return q, k
    start, table = pos.start, data
    u, v = np.tril_indices(n_ctx)
    vals = table[u - v]
    keep = vals != 0
    q = (start + u[keep], off + v[keep], vals[keep])
    ar = np.arange(n_ctx)
    k = (start + ar, off + ar, np.ones(n_ctx))
    return q, k


def _pad_rows(M: np.ndarray, D: int) -> np.ndarray:
    out = np.zeros((D,) + M.shape[1:], dtype=M.dtype)
    out[: M.shape[0]] = M
    return out


def _assemble(model: ConstructedTransformer, lay: Layout, plans: list[_Plan], n_ctx: int, act: str,
              head_blocks: Sequence[str], scale: dict) -> tuple[StandardWeights, StandardConfig]:
    D = lay.width
    H = max([len(p.heads) for p in plans] + [1])
    d_head = max([max(hd["d_qk"], len(hd["vo"])) for p in plans for hd in p.heads] + [1])
    m = max([len(p.units) for p in plans] + [1])
    blocks = []
    for p in plans:
        Wq, Wk, Wv, Wo = [], [], [], []
        for hi in range(H):
            hd = p.heads[hi] if hi < len(p.heads) else {"q": {}, "k": {}, "vo": [], "pos": None}
            pq, pk = _position_coo(hd["pos"], n_ctx, lay)
            Wq.append(SparseMatrix.from_dict((D, d_head), {(c, r): v for c, row in hd["q"].items() for r, v in row.items()}, pq))
            Wk.append(SparseMatrix.from_dict((D, d_head), {(c, r): v for c, row in hd["k"].items() for r, v in row.items()}, pk))
            Wv.append(SparseMatrix.from_dict((D, d_head), {(c, r): v for r, (rd, _) in enumerate(hd["vo"]) for c, v in rd.items()}))
            Wo.append(SparseMatrix.from_dict((d_head, D), {(r, c): v for r, (_, wr) in enumerate(hd["vo"]) for c, v in wr.items()}))
        g, i_, o = {}, {}, {}
        for u, (gd, ln, out, _) in enumerate(p.units):
            for c, v in gd.items():
                g[(c, u)] = g.get((c, u), 0.0) + v
            for c, v in ln.items():
                i_[(c, u)] = i_.get((c, u), 0.0) + v
            for c, v in out.items():
                o[(u, c)] = o.get((u, c), 0.0) + v
        b_out = np.zeros(D)
        for c, v in p.b_out.items():
            b_out[c] = v
        blocks.append(BlockWeights(tuple(Wq), tuple(Wk), tuple(Wv), tuple(Wo), SparseMatrix.from_dict((D, m), g),
                                   SparseMatrix.from_dict((D, m), i_), SparseMatrix.from_dict((m, D), o), b_out))
    escale = [(lay[b], c) for b, c in scale.items()]
    W_E = _pad_rows(_scaled_dense(model.embedding.W_E, escale).T, D).T.copy()
    # float32 copies rounded once from the exact values (float64 -> float32 would round twice; hmm.rounding)
    W_E32 = _pad_rows(_scaled_dense(model.embedding.W_E, escale, np.float32).T, D).T.copy()
    W_pos = np.zeros((n_ctx, D))
    if getattr(model.embedding, "W_pos", None) is not None:  # the construction's own absolute positional embedding
        own = _dense(model.embedding.W_pos)[:n_ctx]
        W_pos[: own.shape[0], : own.shape[1]] = own
    W_pos[:, lay.index(ONE_BLOCK)] = 1.0
    if QUAD_BLOCK in lay:  # quadratic code (p, p^2)
        p0 = lay[QUAD_BLOCK].start
        W_pos[:, p0] = np.arange(n_ctx, dtype=np.float64)
        W_pos[:, p0 + 1] = np.arange(n_ctx, dtype=np.float64) ** 2
    else:
        W_pos[np.arange(n_ctx), lay[POS_BLOCK].start + np.arange(n_ctx)] = 1.0
    if model.readouts:
        first = next(iter(model.readouts.values()))
        W_U = _pad_rows(_dense(first.W_U).T, D)
        W_U32 = _pad_rows(_dense(first.W_U, np.float32).T, D)
    elif head_blocks:
        cols = [c for b in head_blocks for c in range(lay[b].start, lay[b].stop)]
        W_U = np.zeros((D, len(cols)))
        W_U[cols, np.arange(len(cols))] = 1.0
        W_U32 = W_U.astype(np.float32)  # 0/1: exact
    else:
        raise HmmtxError(f"construction '{model.spec.name}' has no readout: name the residual blocks its head reads")
    cfg = StandardConfig(len(plans), D, n_ctx, d_head, H, m, W_E.shape[0], W_U.shape[1], act)
    return StandardWeights(W_E, W_pos, tuple(blocks), W_U, W_E32, W_U32), cfg


def _substitutions(model: ConstructedTransformer, beta: float, act: str, has_norms: bool) -> tuple:
    subs = [Substitution("relative-position bias b(u - v)", "one-hot learned absolute positions (W_pos) read by W_Q/W_K",
                         "exact")]
    if model.attention == "hard":
        subs.append(Substitution("hard (argmax) attention", f"softmax attention, beta = {beta:g} folded into W_Q",
                                 "off-target weight <= (P - 1) e^-beta per query; exactly 0 in float32/float64 (underflow)"))
    if any(isinstance(l.ffn, BilinearFFN) for l in model.layers):
        err = "exact" if act == "relu" else "exact in exact arithmetic; floats: a few ulps of a b (activation rounding)"
        subs.append(Substitution("bilinear FFN unit (W_1 h)(W_2 h)", f"two gated units {act}(a) b + {act}(-a)(-b) "
                                 f"(one, {'relu(c) b' if act == 'relu' else f'{act}(64) b c / 64'}, for a constant factor c)", err))
    if any(isinstance(l.ffn, ReLUFFN) for l in model.layers):
        subs.append(Substitution("ReLU FFN with biases", "gated unit relu(w.h + c one) * one", "exact"))
    if has_norms:
        subs.append(Substitution("projective normalisation (non-standard)", "dropped (scale invariance)",
                                 "exact in exact arithmetic; floats: valid while the unnormalised products stay in the "
                                 "normal range (checked a posteriori by the bound)"))
    subs.append(Substitution("output normalisation z / sum z", "not replaced: the head emits masses z as 'logits'",
                             "n/a: read probabilities as z / sum z, not softmax"))
    return tuple(subs)


# ---------------------------------------------------------------------------------------------- the model
class StandardTransformer(torch.nn.Module):
    """A compiled standard-block model (TransformerLens architecture) with the construction's codec and bound.

    ``forward(ids, record)`` returns a :class:`~constructions.transformer.Trace`: residuals per layer, attention
    patterns, and ``readouts`` = every probe's masses (the idealised readouts, read from the final residual) plus
    ``"logits"`` (the head). ``run(tokens, mode)`` decodes outputs with the idealised construction's codec, so outputs
    have the same names and shapes as the idealised model's.
    """

    def __init__(self, config: StandardConfig, weights: StandardWeights, layout: Layout, probes: tuple,
                 idealised: ConstructedTransformer, spec: ConstructionSpec, substitutions: tuple, *,
                 bound_fn: Any = None, info: "StandardInfo | None" = None, labels: tuple = (),
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.config, self.weights, self.layout, self.probes = config, weights, layout, probes
        self._idealised = (idealised,)  # a tuple: not registered as a submodule
        self.spec, self.substitutions = spec, substitutions
        self.codec = idealised.codec
        self.bound_fn = bound_fn
        self.info = info if info is not None else StandardInfo()
        self.labels = labels
        self.attention, self.beta = "softmax", spec.beta
        self.dtype = dtype
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        f32 = dtype == torch.float32
        self.register_buffer("W_E", t(weights.W_E32 if f32 and weights.W_E32 is not None else weights.W_E))
        self.register_buffer("W_pos", t(weights.W_pos))
        self.register_buffer("W_U", t(weights.W_U32 if f32 and weights.W_U32 is not None else weights.W_U))
        self._blocks = [
            {"W_Q": [w.right_multiplier(dtype) for w in b.W_Q], "W_K": [w.right_multiplier(dtype) for w in b.W_K],
             "W_V": [w.right_multiplier(dtype) for w in b.W_V], "W_O": [w.right_multiplier(dtype) for w in b.W_O],
             "W_gate": b.W_gate.right_multiplier(dtype), "W_in": b.W_in.right_multiplier(dtype),
             "W_out": b.W_out.right_multiplier(dtype), "b_out": t(b.b_out)}
            for b in weights.blocks
        ]
        self._probes = {p.name: t(p.W) for p in probes}

    @property
    def idealised(self) -> ConstructedTransformer:
        """The idealised construction this variant was compiled from."""
        return self._idealised[0]

    def materialise(self, dtype: torch.dtype) -> "StandardTransformer":
        return StandardTransformer(self.config, self.weights, self.layout, self.probes, self.idealised, self.spec,
                                   self.substitutions, bound_fn=self.bound_fn, info=self.info, labels=self.labels,
                                   dtype=dtype)

    @property
    def max_positions(self) -> int:
        return self.config.n_ctx

    def check_input_ids(self, input_ids: Any) -> np.ndarray:
        ids = np.asarray(input_ids)
        ids = ids[None] if ids.ndim == 1 else ids
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise HmmtxError(f"input ids: expected shape (N, P) with P >= 1, got {ids.shape}")
        if ids.min() < 0 or ids.max() >= self.config.d_vocab:
            raise HmmtxError(f"input ids: values must lie in [0, {self.config.d_vocab})")
        if ids.shape[1] > self.config.n_ctx:
            raise HmmtxError(f"input has {ids.shape[1]} positions but the position embedding covers {self.config.n_ctx}")
        return ids.astype(np.int64)

    def forward(self, input_ids: Any, *, record: str = "all") -> Trace:
        """TransformerLens semantics: ``x = W_E[ids] + W_pos``; per block ``x += attn(x)``, ``x += mlp(x)``;
        ``logits = x W_U``. ``record``: ``"all"`` keeps patterns and intermediates, else residuals only."""
        ids = torch.as_tensor(self.check_input_ids(input_ids))
        N, P = ids.shape
        x = self.W_E[ids] + self.W_pos[:P]
        causal = torch.ones(P, P, dtype=torch.bool).tril()
        neg_inf = torch.tensor(float("-inf"), dtype=x.dtype)
        residuals, after_attn, after_ffn, pats = [x], [], [], []
        act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[self.config.act_fn]
        for blk in self._blocks:
            flat = x.reshape(N * P, -1)
            out = torch.zeros_like(flat)
            pat_l = []
            for Wq, Wk, Wv, Wo in zip(blk["W_Q"], blk["W_K"], blk["W_V"], blk["W_O"]):
                q, k, v = (_mm(flat, W).reshape(N, P, -1) for W in (Wq, Wk, Wv))
                pat = torch.softmax(torch.where(causal, q @ k.transpose(-1, -2), neg_inf), dim=-1)
                out = out + _mm((pat @ v).reshape(N * P, -1), Wo)
                pat_l.append(pat)
            x = x + out.reshape(N, P, -1)
            after_attn.append(x if record == "all" else None)
            pats.append(torch.stack(pat_l, dim=1) if record == "all" else None)
            flat = x.reshape(N * P, -1)
            post = act(_mm(flat, blk["W_gate"])) * _mm(flat, blk["W_in"])
            x = x + (_mm(post, blk["W_out"]) + blk["b_out"]).reshape(N, P, -1)
            after_ffn.append(x if record == "all" else None)
            residuals.append(x)
        readouts = {p.name: (x @ self._probes[p.name]).reshape(N, P, *p.shape) for p in self.probes}
        readouts["logits"] = x @ self.W_U
        return Trace(residuals, after_attn, after_ffn, [None] * len(pats), pats, readouts)

    def run(self, tokens: Any, mode: str = "float64", *, record: str = "final") -> RunResult:
        """Encode with the construction's codec, run in ``mode`` (float64/float32), decode named outputs."""
        if mode not in MODES:
            raise HmmtxError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "exact":
            raise HmmtxError(f"{self.spec.name}: standard variants run softmax attention (float64/float32 only)")
        ids = self.check_input_ids(self.codec.encode(tokens))
        dt = torch_dtype(mode)
        m = self if self.dtype == dt else self.materialise(dt)
        with torch.no_grad():
            trace = m.forward(ids, record="all" if record == "all" else "residuals")
        return RunResult(self.codec.decode(self, trace, tokens), trace, ids, mode)

    def read(self, trace: Trace, name: str, positions: Any = slice(None)) -> Any:
        """Normalised probe ``z / sum z`` (same contract as the idealised model's ``read``). Without the projective
        normalisation a zero mass may also be an underflow: the error says so."""
        try:
            return ConstructedTransformer.read(self, trace, name, positions)
        except HmmtxError as exc:
            if not self.info.dropped_norms:
                raise
            dt = str(trace.readouts[name].dtype).replace("torch.", "")
            raise HmmtxError(f"{exc}; or the unnormalised masses of {self.spec.name} underflowed in {dt} (projective "
                             "normalisation dropped: past the variant's length limit, docs/export.md)") from exc

    def claimed_bound(self, tokens: Any, mode: str = "float64") -> Any:
        if self.bound_fn is None:
            raise HmmtxError(f"construction '{self.spec.name}' has no claimed bound")
        return self.bound_fn(self, tokens, mode)

    @property
    def readouts(self) -> dict:
        return {p.name: p for p in self.probes}

    @property
    def layers(self) -> tuple:
        """One :class:`StdLayer` per block (name, description, no norms): what ``hmmtx inspect`` lists."""
        out = []
        for l, lb in enumerate(self.labels):
            desc = f"idealised {lb.layer}; heads: " + ("; ".join(lb.heads) or "none") + f"; {len(lb.units)} gated units"
            out.append(StdLayer(f"block{l}", desc))
        return tuple(out)

    def weight_tables(self) -> list[dict]:
        """Every weight as a dense float64 matrix with row/column labels, TransformerLens names (``hmmtx inspect``)."""
        res = self.layout.labels()
        c = self.config
        vocab = list(self.idealised.embedding.vocab)
        out = [{"layer": "embed", "name": "W_E", "matrix": self.weights.W_E, "rows": vocab, "cols": res},
               {"layer": "embed", "name": "W_pos", "matrix": self.weights.W_pos, "rows": [f"pos {u}" for u in range(c.n_ctx)],
                "cols": res}]
        dims = [f"d{i}" for i in range(c.d_head)]
        for l, (b, lb) in enumerate(zip(self.weights.blocks, self.labels)):
            name = f"block{l}"
            for h in range(len(lb.heads)):
                hn = lb.heads[h].split(":")[0]
                for w, nm in ((b.W_Q, "W_Q"), (b.W_K, "W_K"), (b.W_V, "W_V")):
                    out.append({"layer": name, "name": f"{hn}.{nm}", "matrix": w[h].dense(), "rows": res, "cols": dims})
                out.append({"layer": name, "name": f"{hn}.W_O", "matrix": b.W_O[h].dense(), "rows": dims, "cols": res})
            units = list(lb.units) + [f"pad{i}" for i in range(c.d_mlp - len(lb.units))]
            out.append({"layer": name, "name": "mlp.W_gate", "matrix": b.W_gate.dense(), "rows": res, "cols": units})
            out.append({"layer": name, "name": "mlp.W_in", "matrix": b.W_in.dense(), "rows": res, "cols": units})
            out.append({"layer": name, "name": "mlp.W_out", "matrix": b.W_out.dense(), "rows": units, "cols": res})
        head = list(self.probes[0].labels) if self.probes else [f"out{i}" for i in range(c.d_vocab_out)]
        out.append({"layer": "readout", "name": "W_U", "matrix": self.weights.W_U, "rows": res, "cols": head})
        return out

    def extra_repr(self) -> str:
        c = self.config
        return f"name={self.spec.name!r}, n_layers={c.n_layers}, n_heads={c.n_heads}, d_model={c.d_model}, d_head={c.d_head}, d_mlp={c.d_mlp}, act={c.act_fn}"


def _mm(x: torch.Tensor, WT: torch.Tensor) -> torch.Tensor:
    """``x @ W`` for a sparse ``W^T`` (CSR): ``(W^T @ x^T)^T``."""
    return torch.sparse.mm(WT, x.T.contiguous()).T


def size_table(std: StandardTransformer) -> dict:
    """Sizes of the standard variant against the idealised model (layers, heads, width, FFN width, parameters)."""
    ideal = std.idealised.spec
    c = std.config
    n_par = std.weights.nnz()
    return {"idealised": {"layers": ideal.layers, "heads": ideal.heads, "width": ideal.width, "ffn_width": ideal.ffn_width},
            "standard": {"layers": c.n_layers, "heads": c.n_heads, "width": c.d_model, "d_head": c.d_head,
                         "ffn_width": c.d_mlp, "n_ctx": c.n_ctx, "nonzero_parameters": n_par,
                         "dense_parameters": std.weights.dense_size()}}


__all__ = ["HARD_BETA", "ACTIVATIONS", "StandardConfig", "StandardWeights", "BlockWeights", "Probe", "Substitution",
           "StandardTransformer", "StandardInfo", "BlockLabels", "compile_standard", "constant_coordinates", "size_table", "ONE_BLOCK", "POS_BLOCK", "QUAD_BLOCK",
           "CONST_GATE"]
