"""The adaptive-memory Transformer: FFNs compute the memory functions, DP + RPE heads fetch the memories.

A reconstruction in the spirit of Wang & E (2024), Task II (notes §3.2, "Variant A"); the derivation and the bound
are in ``docs/constructions/adaptive_memory.md``. Residual layout (named blocks, :class:`~constructions.layout.Layout`):

=========  ======  ===================================================================================
block      size    content
=========  ======  ===================================================================================
one        1       constant 1 (query constants)
sym        V       one-hot of the current lag symbol c_t
val        1       the current value v_t
pos        1       absolute position p (positional embedding ``W_pos``)
pos2       1       p^2 (lin variant only: the DP term's curvature)
lag        M       memory functions t_k = g_k(...) (written by an FFN)
slope      M       P / t_k (log variant only: the query's slope, written by the same FFN)
msym       (M, V)  one-hot of the fetched symbol c_{t - t_k}
mval       M       fetched value v_{t - t_k}
y          1       the readout f(v_t, v_{t-t_1}, ..., v_{t-t_M})
=========  ======  ===================================================================================

Memory head (one per memory, one value/output map: ``(sym, val) -> (msym[k], mval[k])``), score at lag ``s = u - v``:

* **log** variant: ``q.k = slope[k]_u * pos_v`` (DP), bias ``b(s) = P log s`` (log-type RPE with ``p = -P``; lag 0
  masked). Up to a constant of the query: ``P log s - (P / g) s``, strictly concave with its integer maximum at
  ``s = g`` (lin-type RPE + this DP term would be linear in ``s``: no interior peak);
* **lin** variant: ``q = (-kappa, 2 kappa (pos - lag[k]) - p)``, ``k = (pos2, pos)``, bias ``-p s`` (lin-type RPE).
  Up to a constant: ``-kappa (s - g)^2``; the DP term supplies the curvature, the lin-type slope is absorbed.

FFN lookups (exact): the lag of memory k is a table over symbol tuples; each tuple gets two ReLU units
``relu(3 S - 3 a + 2) - relu(3 S - 3 a + 1)`` with ``S`` the sum of the tuple's one-hot coordinates (``a`` of
them): exactly 1 for the right tuple and 0 otherwise as long as fetched one-hots are within total leakage 1/3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from constructions.adaptive.bound import claimed_bound
from constructions.adaptive.info import GUESS_SYMBOL, AdaptiveModelInfo, Schedule, info_of, schedule
from constructions.adaptive.readout import AdaptiveReadout, readout_for
from constructions.adaptive.spec import AdaptiveSpec, AdaptiveTokens, check_tokens
from constructions.blocks import AttentionHead, Embedding, Layer, ReLUFFN, SparseFrac, frac_zeros
from constructions.layout import Layout
from constructions.transformer import ConstructedTransformer, check_attention, spec_for
from hmm.errors import HmmtxError

NAME = "adaptive-memory"
PROVENANCE = (
    "reconstruction in the spirit of Wang & E 2024 (NeurIPS; arXiv 2402.00522), Task II adaptive memories (notes "
    "§3.2 Variant A): FFNs compute the memory functions, DP + RPE heads attend to the computed lag"
)
#: Default value vocabulary (always embedded): the grid k/4 in [-1, 1].
DEFAULT_VALUES = tuple(Fraction(k, 4) for k in range(-4, 5))
#: Longest padded sequence a model may be built for (bias tables, positional embedding).
MAX_POSITIONS = 8192


# ---------------------------------------------------------------------------------------------- codec
class AdaptiveCodec:
    """Tokens -> ids ``c * n_values + value_index`` after ``pad`` padding tokens ``(0, 0)``; decode reads ``y``,
    ``mval`` (outputs ``memory``) and ``lag`` at the data positions."""

    def __init__(self, spec: AdaptiveSpec, values: tuple[Fraction, ...], layout: Layout) -> None:
        self.spec, self.values, self.layout = spec, values, layout
        self.index = {v: i for i, v in enumerate(values)}

    def token_id(self, c: int, v: Fraction) -> int:
        i = self.index.get(Fraction(v))
        if i is None:
            raise HmmtxError(f"value {v} is not in the model's value vocabulary (build the model for these tokens)")
        return int(c) * len(self.values) + i

    def encode(self, tokens: Any) -> np.ndarray:
        tok = check_tokens(self.spec, tokens)
        N, T = tok.shape
        pad_id = self.token_id(0, Fraction(0))
        ids = np.full((N, self.spec.padding + T), pad_id, dtype=np.int64)
        for n in range(N):
            for t in range(T):
                ids[n, self.spec.padding + t] = self.token_id(tok.symbols[n, t], tok.values[n, t])
        return ids

    def decode(self, model: ConstructedTransformer, trace: Any, tokens: Any) -> dict:
        h = trace.residuals[-1][:, self.spec.padding:]
        if self.spec.readout == "tanh" and isinstance(h, np.ndarray) and h.dtype == object:
            raise HmmtxError("exact mode: the tanh readout has no exact target (tanh is not rational); use --readout "
                             "relu or identity, or a float mode")
        lay = self.layout
        out = {"y": h[..., lay.index("y")], "memory": h[..., lay["mval"]], "lag": h[..., lay["lag"]]}
        if getattr(tokens, "single", False):
            out = {k: v[0] for k, v in out.items()}
        return out


# ---------------------------------------------------------------------------------------------- layers
def make_layout(spec: AdaptiveSpec) -> Layout:
    M, V = spec.M, spec.V
    lay = Layout()
    lay.add("one", 1, "constant 1")
    lay.add("sym", V, "one-hot of the current lag symbol c_t")
    lay.add("val", 1, "the current value v_t")
    lay.add("pos", 1, "absolute position p (positional embedding)")
    if spec.rpe == "lin":
        lay.add("pos2", 1, "p^2 (the DP term's curvature, lin variant)")
    lay.add("lag", M, "memory functions t_k = g_k(...) (FFN lookups)")
    if spec.rpe == "log":
        lay.add("slope", M, "query slope P / t_k (log variant)")
    lay.add("msym", (M, V), "one-hot of the fetched symbol c_{t - t_k}")
    lay.add("mval", M, "fetched value v_{t - t_k}")
    lay.add("y", 1, "readout f(v_t, v_{t-t_1}, ..., v_{t-t_M})")
    return lay.freeze()


def embedding(spec: AdaptiveSpec, lay: Layout, values: tuple[Fraction, ...], n_positions: int) -> Embedding:
    """``W_E[c * n_values + i] = one + sym[c] + v_i val``; ``W_pos[p] = p pos (+ p^2 pos2)``."""
    nv = len(values)
    W_E = frac_zeros(spec.V * nv, lay.width)
    vocab = []
    for c in range(spec.V):
        for i, v in enumerate(values):
            r = c * nv + i
            W_E[r, lay.index("one")] = Fraction(1)
            W_E[r, lay.index("sym", c)] = Fraction(1)
            W_E[r, lay.index("val")] = v
            vocab.append(f"c={c},v={v}")
    W_pos = frac_zeros(n_positions, lay.width)
    for p in range(n_positions):
        W_pos[p, lay.index("pos")] = Fraction(p)
        if spec.rpe == "lin":
            W_pos[p, lay.index("pos2")] = Fraction(p * p)
    return Embedding(W_E, tuple(vocab), W_pos)


def lag_units(spec: AdaptiveSpec, lay: Layout, k: int, known: tuple[int, ...]) -> list[tuple[dict, int, list]]:
    """Snap-lookup units for the lag of memory k: ``(inputs {coord: 1}, arity a, writes [(coord, value)])`` per
    tuple of the known arguments (``c_t`` and the fetched symbols of the memories in ``known``); unknown fetched
    symbols are :data:`GUESS_SYMBOL`."""
    g = spec.lags[k]
    P = spec.sharpness
    out = []
    n_args = g.arity
    slots = [0] + [1 + j for j in known]  # argument slots read (0 = c_t)
    tuples = [()]
    for _ in slots:
        tuples = [t + (c,) for t in tuples for c in range(spec.V)]
    for tup in tuples:
        args = [GUESS_SYMBOL] * n_args
        ins = {}
        for slot, c in zip(slots, tup):
            args[slot] = c
            ins[lay.index("sym", c) if slot == 0 else lay.index("msym", slot - 1, c)] = Fraction(1)
        lag = g(args)
        writes = [(lay.index("lag", k), Fraction(lag))]
        if spec.rpe == "log":
            writes.append((lay.index("slope", k), P / lag))
        out.append((ins, len(slots), writes))
    return out


def lag_ffn(spec: AdaptiveSpec, lay: Layout, ks: list[int], sched: Schedule) -> ReLUFFN:
    """``lag[k] (and slope[k]) = sum_tuples value * (relu(3S - 3a + 2) - relu(3S - 3a + 1))`` for each k in ``ks``."""
    units = [u for k in ks for u in lag_units(spec, lay, k, sched.known[k])]
    m = 2 * len(units)
    D = lay.width
    W_in, W_out = SparseFrac((m, D)), SparseFrac((D, m))
    b_in = frac_zeros(m)
    labels = []
    for j, (ins, a, writes) in enumerate(units):
        for off, (sign, shift) in enumerate(((1, 2), (-1, 1))):
            r = 2 * j + off
            for c, w in ins.items():
                W_in[r, c] = 3 * w
            b_in[r] = Fraction(-3 * a + shift)
            for c, v in writes:
                W_out[c, r] = sign * v
            labels.append(f"tuple{j}{'+' if sign > 0 else '-'}")
    return ReLUFFN(W_in, b_in, W_out, frac_zeros(D), tuple(labels))


def readout_ffn(spec: AdaptiveSpec, lay: Layout, ro: AdaptiveReadout) -> ReLUFFN:
    """``y = a . relu(W (val, mval_1..mval_M) + b) + c`` (the readout network, exact dyadic weights)."""
    W, b, a, c = ro.exact_weights
    m, D = len(a), lay.width
    cols = [lay.index("val")] + [lay.index("mval", k) for k in range(spec.M)]
    W_in, W_out = SparseFrac((m, D)), SparseFrac((D, m))
    for j in range(m):
        for i, col in enumerate(cols):
            W_in[j, col] = W[j][i]
        W_out[lay.index("y"), j] = a[j]
    b_out = frac_zeros(D)
    b_out[lay.index("y")] = c
    return ReLUFFN(W_in, np.array(list(b), dtype=object), W_out, b_out, tuple(f"f{j}" for j in range(m)))


def bias_table(spec: AdaptiveSpec, n_lags: int) -> tuple[np.ndarray, Fraction | None]:
    """The RPE table over lags ``0..n_lags-1`` (exact Fractions) and the log variant's lag-0 mask.

    log: ``b(s) = P log s`` (the float64 value, exactly), ``b(0) = -(P + 64)``; lin: ``b(s) = -p s``."""
    P = spec.sharpness
    out = np.empty(n_lags, dtype=object)
    if spec.rpe == "lin":
        for s in range(n_lags):
            out[s] = -spec.lin_slope * s
        return out, None
    mask = -(P + 64)
    out[0] = mask
    Pf = float(P)
    for s in range(1, n_lags):
        out[s] = Fraction(Pf * math.log(s)) if s > 1 else Fraction(0)
    return out, mask


def memory_head(spec: AdaptiveSpec, lay: Layout, k: int, bias: np.ndarray) -> AttentionHead:
    """Head of memory k: DP + RPE peak at the lag ``lag[k]``; copies ``(sym, val)`` into ``(msym[k], mval[k])``."""
    D, V = lay.width, spec.V
    if spec.rpe == "log":
        W_Q, W_K = SparseFrac((1, D)), SparseFrac((1, D))
        W_Q[0, lay.index("slope", k)] = Fraction(1)
        W_K[0, lay.index("pos")] = Fraction(1)
        desc = f"memory {k + 1}: slope[{k}] * pos_key + P log s (peak at s = lag[{k}])"
    else:
        kap, p = spec.sharpness, spec.lin_slope
        W_Q, W_K = SparseFrac((2, D)), SparseFrac((2, D))
        W_Q[0, lay.index("one")] = -kap
        W_K[0, lay.index("pos2")] = Fraction(1)
        W_Q[1, lay.index("pos")] = 2 * kap
        W_Q[1, lay.index("lag", k)] = -2 * kap
        W_Q[1, lay.index("one")] = -p
        W_K[1, lay.index("pos")] = Fraction(1)
        desc = f"memory {k + 1}: -kappa pos_k^2 + (2 kappa (pos - lag[{k}]) - p) pos_k - p s = -kappa (s - lag[{k}])^2 + const"
    W_V, W_O = SparseFrac((V + 1, D)), SparseFrac((D, V + 1))
    for c in range(V):
        W_V[c, lay.index("sym", c)] = Fraction(1)
        W_O[lay.index("msym", k, c), c] = Fraction(1)
    W_V[V, lay.index("val")] = Fraction(1)
    W_O[lay.index("mval", k), V] = Fraction(1)
    return AttentionHead(W_Q, W_K, W_V, W_O, bias, name=f"mem{k + 1}", description=desc,
                         value_labels=tuple(f"sym[{c}]" for c in range(V)) + ("val",))


def make_layers(spec: AdaptiveSpec, lay: Layout, sched: Schedule, n_positions: int) -> tuple[list[Layer], Fraction | None]:
    bias, mask = bias_table(spec, n_positions)
    ro = readout_for(spec)
    layers = []
    for li in range(sched.layers):
        heads = tuple(memory_head(spec, lay, k, bias) for k in range(spec.M) if sched.fetch[k] == li)
        lag_ks = [k for k in range(spec.M) if sched.fetch[k] == li + 1]
        if li == sched.layers - 1:
            ffn, what = readout_ffn(spec, lay, ro), "readout FFN"
        else:
            ffn, what = lag_ffn(spec, lay, lag_ks, sched), f"FFN computes lags {[k + 1 for k in lag_ks]}"
        fetched = [k + 1 for k in range(spec.M) if sched.fetch[k] == li]
        desc = (f"heads fetch memories {fetched}; " if fetched else "attention idle; ") + what
        layers.append(Layer(f"layer{li}", heads, ffn, (), desc))
    return layers, mask


# ---------------------------------------------------------------------------------------------- build
def value_vocabulary(tokens: AdaptiveTokens | None, extra: Any = ()) -> tuple[Fraction, ...]:
    vals = set(DEFAULT_VALUES) | {Fraction(v) for v in extra}
    if tokens is not None:
        vals |= set(tokens.values.ravel().tolist())
    return tuple(sorted(vals))


def build(spec: AdaptiveSpec, *, max_len: int = 64, tokens: Any = None, values: Any = (), attention: str = "hard",
          beta: float | None = None, layers: int | None = None, dtype: Any = None) -> ConstructedTransformer:
    """The adaptive-memory construction for ``spec`` on sequences of length ``<= max_len``.

    ``tokens`` (optional): inputs the value vocabulary must cover (``values`` adds more). ``attention``: ``"hard"``
    (exact; bit-exact with the Fraction reference) or ``"softmax"`` with inverse temperature ``beta``.
    ``layers``: Type II only, fewer than ``M + 1`` gives the greedy shallow model (no claimed bound below trivial).
    """
    import torch

    beta = check_attention(attention, beta)
    tok = None if tokens is None else check_tokens(spec, tokens)
    T = 0 if tok is None else tok.shape[1]
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise HmmtxError(f"max_len={max_len!r} must be a positive integer")
    n_positions = spec.padding + max(int(max_len), T)
    if n_positions > MAX_POSITIONS:
        raise HmmtxError(f"pad + length = {n_positions} positions exceed {MAX_POSITIONS}")
    if spec.lag_range > n_positions - 1:
        raise HmmtxError(f"lag range {spec.lag_range} reaches beyond every position of a padded sequence of "
                         f"{n_positions} positions")
    sched = schedule(spec, layers)
    vals = value_vocabulary(tok, values)
    lay = make_layout(spec)
    emb = embedding(spec, lay, vals, n_positions)
    layer_list, mask = make_layers(spec, lay, sched, n_positions)
    sp = spec_for(NAME, lay, layer_list, max_positions=n_positions, attention=attention, beta=beta,
                  provenance=PROVENANCE, parameters={
                      "kind": spec.kind, "V": spec.V, "M": spec.M, "rpe": spec.rpe, "lag_range": spec.lag_range,
                      "sharpness": str(spec.sharpness), "pad": spec.padding, "readout": spec.readout,
                      "max_len": int(max(max_len, T)), "layers_full": (2 if spec.kind == "type1" else spec.M + 1)})
    info = AdaptiveModelInfo(spec, vals, n_positions, readout_for(spec), sched, mask)
    return ConstructedTransformer(lay, emb, layer_list, [], sp, AdaptiveCodec(spec, vals, lay), bound_fn=claimed_bound,
                                  attention=attention, beta=beta, dtype=dtype or torch.float64,
                                  info=info)


__all__ = ["NAME", "PROVENANCE", "DEFAULT_VALUES", "Schedule", "schedule", "AdaptiveModelInfo", "info_of",
           "AdaptiveCodec", "make_layout", "build", "bias_table", "value_vocabulary"]
