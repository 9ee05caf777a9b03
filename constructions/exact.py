"""Exact executor: runs the SAME exact weights as the torch module, over :class:`fractions.Fraction`.

Hard attention only (softmax weights are not rational). Every operation is exact: sparse rational
matrix-vector products (zeros skipped, which changes nothing exactly), argmax with ties averaged, bilinear / ReLU
FFNs, projective normalisation by an exact sum. The result is a :class:`~constructions.transformer.Trace` of
object arrays with the same shapes as the torch trace, so the two can be compared entry by entry.

This is the reference executor for small inputs (it loops over sequences and positions in Python).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from constructions.blocks import BilinearFFN, ReLUFFN, nonzeros, to_dense
from constructions.types import RECORD_LEVELS, Trace, norm_error
from hmm.errors import HmmtxError

ZERO = Fraction(0)


class _Sparse:
    """Rows of an exact matrix as (column, value) lists of the non-zeros."""

    def __init__(self, W: Any) -> None:
        self.shape = W.shape
        self.rows: list[list] = [[] for _ in range(W.shape[0])]
        for r, c, v in nonzeros(W):
            self.rows[r].append((c, v))

    def apply(self, x: list) -> list:
        out = []
        for row in self.rows:
            s = ZERO
            for c, w in row:
                v = x[c]
                if v:
                    s += w * v
            out.append(s)
        return out


def _obj(rows: Any) -> np.ndarray:
    arr = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
    for i, r in enumerate(rows):
        arr[i, :] = r
    return arr


def run_exact(model: Any, input_ids: Any, *, record: str = "all") -> Trace:
    """Execute ``model``'s exact weights on input ids (N, P) with hard attention. Returns a Trace of Fractions.

    Shapes as in :class:`~constructions.transformer.Trace`; masked attention scores hold None (weights 0).
    """
    if record not in RECORD_LEVELS:
        raise HmmtxError(f"record must be one of {RECORD_LEVELS}, got {record!r}")
    ids = model.check_input_ids(input_ids)
    cache = getattr(model, "_exact_cache", None)
    if cache is None:
        cache = _compile(model)
        model._exact_cache = cache  # plain attribute: the exact weights never change after construction
    per_seq = [_run_one(model, cache, row.tolist(), record) for row in ids]
    L = len(model.layers)

    def stack(get: Any) -> Any:
        first = get(per_seq[0])
        if first is None:
            return None
        return np.stack([get(s) for s in per_seq])

    residuals = [stack(lambda s, i=i: s["res"][i]) for i in range(L + 1)]
    after_attn = [stack(lambda s, i=i: s["attn"][i]) for i in range(L)]
    after_ffn = [stack(lambda s, i=i: s["ffn"][i]) for i in range(L)]
    scores = [stack(lambda s, i=i: s["scores"][i]) for i in range(L)]
    weights = [stack(lambda s, i=i: s["weights"][i]) for i in range(L)]
    readouts = {n: np.stack([s["readouts"][n] for s in per_seq]) for n in model.readouts}
    return Trace(residuals, after_attn, after_ffn, scores, weights, readouts)


def _compile(model: Any) -> dict:
    layers = []
    for layer in model.layers:
        heads = [
            {"Q": _Sparse(h.W_Q), "K": _Sparse(h.W_K), "V": _Sparse(h.W_V), "O": _Sparse(h.W_O), "bias": list(h.rel_bias), "dqk": h.d_qk}
            for h in layer.heads
        ]
        f = layer.ffn
        if isinstance(f, BilinearFFN):
            ffn = ("bilinear", _Sparse(f.W_1), _Sparse(f.W_2), _Sparse(f.W_3))
        elif isinstance(f, ReLUFFN):
            ffn = ("relu", _Sparse(f.W_in), list(f.b_in), _Sparse(f.W_out), list(f.b_out))
        else:
            ffn = None
        norms = [(model.layout[n.block], model.layout[n.denominator], n) for n in layer.norms]
        layers.append((layer, heads, ffn, norms))
    return {
        "layers": layers,
        "W_E": [list(r) for r in to_dense(model.embedding.W_E)],
        "W_pos": None if model.embedding.W_pos is None else [list(r) for r in to_dense(model.embedding.W_pos)],
        "readouts": {n: (_Sparse(r.W_U), r.shape) for n, r in model.readouts.items()},
    }


def _exact_head(h: dict, xs: list, keep: bool) -> tuple[list, Any, Any]:
    """One head over P residual vectors ``xs``: its output ``W_O(mixed)`` per position (P lists), and with
    ``keep`` its scores (P, P; None where masked) and weights (P, P). Hard attention: the mean of the values at the
    tied maxima of ``q_u . k_v + b(u - v)``, ``v <= u``."""
    P = len(xs)
    vals = [h["V"].apply(x) for x in xs]
    if h["dqk"]:
        qs = [h["Q"].apply(x) for x in xs]
        ks = [h["K"].apply(x) for x in xs]
    sc = np.full((P, P), None, dtype=object) if keep else None
    wt = np.full((P, P), ZERO, dtype=object) if keep else None  # masked (v > u) weights are 0, as in torch
    outs = []
    for u in range(P):
        row = []
        for v in range(u + 1):
            s = h["bias"][u - v]
            if h["dqk"]:
                s = s + sum((a * b for a, b in zip(qs[u], ks[v])), ZERO)
            row.append(s)
        m = max(row)
        tied = [v for v, s in enumerate(row) if s == m]
        wv = Fraction(1, len(tied))  # ties: average over the tied maxima
        mixed = [ZERO] * len(vals[0])
        for v in tied:
            mixed = [a + wv * b for a, b in zip(mixed, vals[v])]
        outs.append(h["O"].apply(mixed))
        if keep:
            for v in range(u + 1):
                sc[u, v] = row[v]
                wt[u, v] = wv if v in tied else ZERO
    return outs, sc, wt


def _exact_attention(heads: list, xs: list, keep: bool) -> tuple[list, list, list]:
    """``x_u + sum_h head_h(x)_u`` for every position, and (``keep``) the heads' scores and weights."""
    P = len(xs)
    add = [[ZERO] * len(xs[0]) for _ in range(P)]
    sc_all, w_all = [], []
    for h in heads:
        outs, sc, wt = _exact_head(h, xs, keep)
        add = [[a + b for a, b in zip(acc, o)] for acc, o in zip(add, outs)]
        sc_all.append(sc)
        w_all.append(wt)
    return [[a + b for a, b in zip(x, d)] for x, d in zip(xs, add)], sc_all, w_all


def _exact_ffn(ffn: tuple, x: list) -> list:
    """``x + FFN(x)`` for one residual vector: bilinear ``W_3((W_1 x) * (W_2 x))`` or ReLU
    ``W_out relu(W_in x + b_in) + b_out``."""
    if ffn[0] == "bilinear":
        a, b = ffn[1].apply(x), ffn[2].apply(x)
        d = ffn[3].apply([p * q for p, q in zip(a, b)])
    else:
        pre = [p + q for p, q in zip(ffn[1].apply(x), ffn[2])]
        d = [p + q for p, q in zip(ffn[3].apply([p if p > 0 else ZERO for p in pre]), ffn[4])]
    return [p + q for p, q in zip(x, d)]


def _exact_norms(norms: list, layer_name: str, u: int, x: list) -> list:
    """The layer's projective normalisations of the residual at position ``u`` (a zero sum raises HmmtxError)."""
    x = list(x)
    for blk, by, nrm in norms:
        den = sum(x[by], ZERO)
        if den == 0:
            raise norm_error(nrm, layer_name, 0, u, 1, 0.0)
        x[blk] = [v / den for v in x[blk]]
    return x


def _run_one(model: Any, cache: dict, ids: list, record: str) -> dict:
    P = len(ids)
    L = len(cache["layers"])
    xs = [list(cache["W_E"][i]) for i in ids]  # P residual vectors (lists of Fractions)
    if cache["W_pos"] is not None:  # absolute positional embedding
        xs = [[a + b for a, b in zip(x, cache["W_pos"][p])] for p, x in enumerate(xs)]
    out = {"res": [None] * (L + 1), "attn": [None] * L, "ffn": [None] * L, "scores": [None] * L, "weights": [None] * L}
    keep_res = record in ("all", "residuals")
    keep_states = record in ("all", "states")
    out["res"][0] = _obj(xs) if keep_res else None
    for li, (layer, heads, ffn, norms) in enumerate(cache["layers"]):
        if heads:
            xs, sc_all, w_all = _exact_attention(heads, xs, record == "all")
            if record == "all":
                out["scores"][li] = np.stack(sc_all)
                out["weights"][li] = np.stack(w_all)
        if keep_states:
            out["attn"][li] = _obj(xs)
        if ffn is not None:
            xs = [_exact_ffn(ffn, x) for x in xs]
        if keep_states:
            out["ffn"][li] = _obj(xs)
        if norms:
            xs = [_exact_norms(norms, layer.name, u, x) for u, x in enumerate(xs)]
        if keep_res or li == L - 1:
            out["res"][li + 1] = _obj(xs)
    out["readouts"] = {}
    for n, (W, shape) in cache["readouts"].items():
        z = [W.apply(x) for x in xs]
        out["readouts"][n] = _obj(z).reshape((P,) + tuple(shape))
    return out


__all__ = ["run_exact"]
