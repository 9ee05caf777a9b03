"""Fast exact executor: the same exact weights as :func:`constructions.exact.run_exact`, in python-flint rationals.

``run_exact`` (Fractions, one Python operation per weight entry) stays the readable reference; this executor gives
bit-identical outputs (tested on H1, H3 and the window construction) and is what makes exact checks at S = 16,
T = 2048 practical. Two evaluation paths, chosen per layer when the model is compiled:

* **doubling layers of the prefix machinery** (recognised by identity: the layer's FFN *is* the shared
  ``constructions.prefix.product_ffn(layout, l)`` object, its one head a purely positional copy head from
  ``op_block(l)`` into ``fetched_op`` with a unique hard target per query): evaluated at the matrix level,
  ``dst <- normalise(Q_t @ Q_u)``, ``src <- 0``, ``fetched_op <- 0`` -- exactly what the generic evaluation of the
  same weights computes (``0 + sum_k F_ik Q_kj``, ``Q - Q``, ``F - F``; rational arithmetic is exact, so the
  order of operations does not matter), but with FLINT's fraction-free ``fmpq_mat`` products;
* **every other layer**: the generic evaluation of :mod:`constructions.exact` (sparse rows, hard attention with
  ties averaged, bilinear/ReLU FFNs, projective norms) over ``fmpq``.

Readouts are the same unnormalised masses as ``run_exact``'s. Only ``record="final"`` is supported: the trace holds
the readouts and the final residual (``residuals[-1]``), as ``run_exact(record="final")`` does.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from constructions.blocks import BilinearFFN, ReLUFFN, nonzeros, positional_targets, to_dense
from constructions.types import Trace, norm_error
from hmm.errors import HmmtxError
from hmm.fastq import require, to_fmpq, to_fraction


class Field(NamedTuple):
    """The number system an executor runs in: FLINT rationals (exact) or arb balls (:mod:`constructions.certified`).

    ``num`` converts an exact rational, ``mat(r, c, entries)`` builds a matrix, ``zero``; ``nonzero(v)`` is True
    unless ``v`` is exactly 0 (a ball that merely contains 0 is not skipped); ``positive(v)`` / ``tied(a, b)``
    decide comparisons (raising when a ball cannot decide); ``relu``; ``exp`` (None: no softmax); ``out`` maps a
    final value to what the trace holds.
    """

    num: Any
    mat: Any
    zero: Any
    nonzero: Any
    positive: Any
    relu: Any
    exp: Any
    out: Any
    name: str
    entries: Any = None  # matrix -> flat list of entries (row-major)


def _fmpq_field() -> Field:
    f = require()
    return Field(to_fmpq, f.fmpq_mat, f.fmpq(0), lambda v: v != 0, lambda v: v > 0, lambda v: v if v > 0 else f.fmpq(0),
                 None, to_fraction, "exact", lambda m: m.entries())


class _Rows:
    """Rows of an exact matrix as (column, number) lists; unit coefficients kept as None (no multiplication)."""

    def __init__(self, W: Any, field: Field) -> None:
        self.rows: list[list] = [[] for _ in range(W.shape[0])]
        for r, c, v in nonzeros(W):
            self.rows[r].append((c, None if v == 1 else field.num(v)))
        self.field = field

    def apply(self, x: list, zero: Any) -> list:
        nz = self.field.nonzero
        out = []
        for row in self.rows:
            s = zero
            for c, w in row:
                v = x[c]
                if nz(v):
                    s = s + (v if w is None else w * v)
            out.append(s)
        return out


class _MatRows:
    """A readout ``z = W x`` as one matrix product ``x[cols] @ W[:, cols]^T`` (FLINT: fraction-free, no per-term
    Python loop)."""

    def __init__(self, W: Any, field: Field) -> None:
        nz = nonzeros(W)
        self.cols = sorted({c for _, c, _ in nz})
        pos = {c: k for k, c in enumerate(self.cols)}
        self.out = W.shape[0]
        self.M = field.mat(max(len(self.cols), 1), self.out)
        for r, c, v in nz:
            self.M[pos[c], r] = field.num(v)
        self.field = field

    def apply(self, x: list, zero: Any) -> list:
        if not self.cols:
            return [zero] * self.out
        return self.field.entries(self.field.mat(1, len(self.cols), [x[c] for c in self.cols]) * self.M)


def _prefix_plan(model: Any, li: int) -> dict | None:
    """Matrix-level plan of layer ``li`` when it is a doubling layer of the prefix machinery, else None."""
    from constructions.prefix import op_block, product_ffn

    layer = model.layers[li]
    if not ("op" in model.layout.names and "op_alt" in model.layout.names) or len(layer.heads) != 1:
        return None
    for l in (0, 1):
        if layer.ffn is product_ffn(model.layout, l):
            src, dst = op_block(l), op_block(l + 1)
            head = layer.heads[0]
            lay = model.layout
            want_v = {(i, lay[src].start + i) for i in range(lay.block(src).size)}
            want_o = {(lay["fetched_op"].start + i, i) for i in range(lay.block(src).size)}
            got_v = {(r, c) for r, c, v in nonzeros(head.W_V) if v == 1}
            got_o = {(r, c) for r, c, v in nonzeros(head.W_O) if v == 1}
            if not head.positional or got_v != want_v or got_o != want_o or len(nonzeros(head.W_V)) != len(want_v):
                return None
            if [n.block for n in layer.norms] != [dst] or layer.norms[0].denominator != dst:
                return None
            return {"src": lay[src], "dst": lay[dst], "fetched": lay["fetched_op"], "n": lay.block(src).shape[0],
                    "bias": head.rel_bias, "name": layer.name, "norm": layer.norms[0]}
    return None


def _compile(model: Any, field: Field) -> dict:
    layers = []
    for li, layer in enumerate(model.layers):
        plan = _prefix_plan(model, li)
        if plan is not None:
            layers.append(("prefix", plan))
            continue
        heads = [{"Q": _Rows(h.W_Q, field), "K": _Rows(h.W_K, field), "V": _Rows(h.W_V, field),
                  "O": _Rows(h.W_O, field), "bias": [field.num(v) for v in h.rel_bias], "raw_bias": h.rel_bias,
                  "dqk": h.d_qk, "positional": h.positional} for h in layer.heads]
        f = layer.ffn
        if isinstance(f, BilinearFFN):
            ffn = ("bilinear", _Rows(f.W_1, field), _Rows(f.W_2, field), _Rows(f.W_3, field))
        elif isinstance(f, ReLUFFN):
            ffn = ("relu", _Rows(f.W_in, field), [field.num(v) for v in f.b_in], _Rows(f.W_out, field),
                   [field.num(v) for v in f.b_out])
        else:
            ffn = None
        norms = [(model.layout[n.block], model.layout[n.denominator], n) for n in layer.norms]
        layers.append(("generic", (layer, heads, ffn, norms)))
    return {
        "layers": layers,
        "W_E": [[field.num(v) for v in r] for r in to_dense(model.embedding.W_E)],
        "W_pos": (None if getattr(model.embedding, "W_pos", None) is None
                  else [[field.num(v) for v in r] for r in to_dense(model.embedding.W_pos)]),
        "readouts": {n: (_MatRows(r.W_U, field), r.shape) for n, r in model.readouts.items()},
        "field": field,
    }


def run_exact_fast(model: Any, input_ids: Any, *, record: str = "final") -> Trace:
    """Execute ``model``'s exact weights on input ids (N, P) with hard attention in FLINT rationals.

    Returns a Trace with ``readouts`` (N, P, *shape) of Fractions and nothing else (see the module docstring).
    Readouts and decoded outputs bit-identical to :func:`constructions.exact.run_exact`'s.
    """
    if record != "final":
        raise HmmtxError("the fast exact executor records the final readouts only (record='final'); "
                         "use constructions.exact.run_exact for full traces")
    if model.attention != "hard":
        raise HmmtxError("exact mode runs hard attention only (softmax weights are not rational)")
    cache = getattr(model, "_exact_fast_cache", None)
    if cache is None:
        cache = _compile(model, _fmpq_field())
        model._exact_fast_cache = cache
    return execute(model, cache, input_ids, "hard", None)


def execute(model: Any, cache: dict, input_ids: Any, attention: str, beta: Any) -> Trace:
    """Run a compiled model (:func:`_compile` with a :class:`Field`) on input ids; readouts in ``field.out``
    form. ``attention="softmax"`` needs a field with ``exp`` and ``beta``."""
    ids = model.check_input_ids(input_ids)
    per_seq = [_run_one(cache, row.tolist(), n, ids.shape[0], attention, beta) for n, row in enumerate(ids)]
    L = len(model.layers)
    readouts = {n: np.stack([s[n] for s in per_seq]) for n in model.readouts}
    final = np.stack([s[_FINAL] for s in per_seq])
    return Trace([None] * L + [final], [None] * L, [None] * L, [None] * L, [None] * L, readouts)


_FINAL = "\0final-residual"  # key of the final residual in a sequence's result (no readout can be named so)


def _run_one(cache: dict, ids: list, seq: int, N: int, attention: str, beta: Any) -> dict:
    field = cache["field"]
    zero = field.zero
    xs = [list(cache["W_E"][i]) for i in ids]
    if cache["W_pos"] is not None:  # absolute positional embedding (row p added at position p)
        xs = [[a + b for a, b in zip(x, cache["W_pos"][p])] for p, x in enumerate(xs)]
    for kind, plan in cache["layers"]:
        if kind == "prefix":
            xs = _prefix_layer(plan, xs, field, seq, N, attention, beta)
        else:
            xs = _generic_layer(plan, xs, field, seq, N, attention, beta)
    out = {}
    for name, (W, shape) in cache["readouts"].items():
        rows = []
        for x in xs:
            z = np.array(W.apply(x, zero), dtype=object).reshape(tuple(shape))
            rows.append(np.array([field.out(v) for v in z.ravel()], dtype=object).reshape(tuple(shape)))
        out[name] = np.stack(rows)
    out[_FINAL] = np.array([[field.out(v) for v in x] for x in xs], dtype=object)  # what record="final" keeps
    return out


def _lag_weights(field: Field, bias: Any, beta: Any, P: int) -> list:
    """``exp(beta b(lag))`` for lags ``0..P-1`` in the field (softmax weights are these over their prefix sum)."""
    if field.exp is None:
        raise HmmtxError(f"softmax attention cannot run in {field.name} arithmetic (exp is not rational)")
    return [field.exp(beta * field.num(bias[lag])) for lag in range(P)]


def _check_den(field: Field, den: Any, nrm: Any, name: str, seq: int, u: int, N: int) -> None:
    if not field.positive(den):
        raise norm_error(nrm, name, seq, u, N, 0.0)


def _prefix_layer(plan: dict, xs: list, field: Field, seq: int, N: int, attention: str, beta: Any) -> list:
    P, n = len(xs), plan["n"]
    src, dst, fet = plan["src"], plan["dst"], plan["fetched"]
    Qs = [field.mat(n, n, x[src]) for x in xs]
    zero = field.zero
    zeros = [zero] * (n * n)
    ones_r, ones_c = field.mat(1, n, [field.num(1)] * n), field.mat(n, 1, [field.num(1)] * n)
    if attention == "hard":
        targets, unique = positional_targets(plan["bias"], P)
        if not unique:
            raise HmmtxError(f"{plan['name']}: tied hard-attention maxima (the fast executor needs unique targets)")
        Fs = [Qs[int(t)] for t in targets]
    else:  # F_u = sum_lag e_lag Q_{u-lag} / sum_{lag<=u} e_lag (exact real softmax, in balls)
        e = _lag_weights(field, plan["bias"], beta, P)
        Fs = []
        for u in range(P):
            acc, tot = Qs[u] * e[0], e[0]
            for lag in range(1, u + 1):
                acc, tot = acc + Qs[u - lag] * e[lag], tot + e[lag]
            Fs.append(acc * (1 / tot))
    new = []
    for u, x in enumerate(xs):
        prod = Fs[u] * Qs[u]
        s = (ones_r * prod * ones_c)[0, 0]
        _check_den(field, s, plan["norm"], plan["name"], seq, u, N)
        x = list(x)
        x[dst] = field.entries(prod * (1 / s)) if field.exp is not None else field.entries(prod / s)
        x[src] = zeros
        x[fet] = zeros
        new.append(x)
    return new


def _head_mix(h: dict, xs: list, vals: list, field: Field, attention: str, beta: Any) -> list:
    """Per query u: the attention-weighted value (hard: unique target or ties averaged; softmax: exact weights)."""
    P, zero = len(xs), field.zero
    if h["positional"] and attention == "hard":
        t, unique = positional_targets(h["raw_bias"], P)
        if unique:
            return [vals[int(t[u])] for u in range(P)]
    if not h["positional"]:
        qs = [h["Q"].apply(x, zero) for x in xs]
        ks = [h["K"].apply(x, zero) for x in xs]
    out = []
    for u in range(P):
        row = []
        for v in range(u + 1):
            sc = h["bias"][u - v]
            if not h["positional"]:
                sc = sc + sum((a * b for a, b in zip(qs[u], ks[v])), zero)
            row.append(sc)
        if attention == "hard":
            m = row[0]
            for sc in row[1:]:
                if field.positive(sc - m):
                    m = sc
            tied = [v for v, sc in enumerate(row) if not field.positive(m - sc)]
            w = [field.num(Fraction(1, len(tied)))] * len(tied)
        else:
            ex = [field.exp(beta * sc) for sc in row]
            tot = sum(ex[1:], ex[0])
            tied, w = list(range(u + 1)), [e / tot for e in ex]
        mixed = [zero] * len(vals[0])
        for v, wv in zip(tied, w):
            mixed = [a + wv * b for a, b in zip(mixed, vals[v])]
        out.append(mixed)
    return out


def _generic_layer(plan: tuple, xs: list, field: Field, seq: int, N: int, attention: str, beta: Any) -> list:
    layer, heads, ffn, norms = plan
    zero = field.zero
    P = len(xs)
    if heads:
        add = [[zero] * len(xs[0]) for _ in range(P)]
        for h in heads:
            vals = [h["V"].apply(x, zero) for x in xs]
            for u, mixed in enumerate(_head_mix(h, xs, vals, field, attention, beta)):
                o = h["O"].apply(mixed, zero)
                add[u] = [a + b for a, b in zip(add[u], o)]
        xs = [[a + b for a, b in zip(x, d)] for x, d in zip(xs, add)]
    if ffn is not None:
        new = []
        for x in xs:
            if ffn[0] == "bilinear":
                a, b = ffn[1].apply(x, zero), ffn[2].apply(x, zero)
                d = ffn[3].apply([p * q for p, q in zip(a, b)], zero)
            else:
                pre = [p + q for p, q in zip(ffn[1].apply(x, zero), ffn[2])]
                d = [p + q for p, q in zip(ffn[3].apply([field.relu(p) for p in pre], zero), ffn[4])]
            new.append([p + q for p, q in zip(x, d)])
        xs = new
    if norms:
        new = []
        for u, x in enumerate(xs):
            x = list(x)
            for blk, by, nrm in norms:
                den = sum(x[by], zero)
                _check_den(field, den, nrm, layer.name, seq, u, N)
                x[blk] = [v / den for v in x[blk]]
            new.append(x)
        xs = new
    return xs


def exact_outputs_agree(model: Any, tokens: Any) -> bool:
    """True when :func:`run_exact_fast` and :func:`constructions.exact.run_exact` decode to identical outputs."""
    from constructions.exact import run_exact

    ids = model.check_input_ids(model.codec.encode(tokens))
    a = model.codec.decode(model, run_exact(model, ids, record="final"), tokens)
    b = model.codec.decode(model, run_exact_fast(model, ids), tokens)
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


__all__ = ["Field", "run_exact_fast", "execute", "exact_outputs_agree"]
