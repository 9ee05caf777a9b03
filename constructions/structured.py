"""The structured executor: run a construction's own exact weights by their structure instead of dense matmuls.

Every plan below is *derived from the weights* of the :class:`~constructions.transformer.ConstructedTransformer`
(its :class:`~constructions.blocks.Layer` s and the named :class:`~constructions.layout.Layout`), not written for
one construction, so a construction whose weights change keeps running here unchanged:

* **linear maps** (``W_Q``, ``W_K``, readouts, ReLU FFN maps, the composite value-output map ``W_O W_V`` of a
  head): only the support is touched, ``y[R] = W[R, C] x[C]`` with R / C the non-zero rows / columns (a slice when
  they are contiguous); a map whose support is a partial permutation with unit weights (a copy) is a column gather.
* **attention heads**: a purely positional hard head with a unique target per query is a *gather* over positions
  (``out[u] += M x[t(u)]``, ``M = W_O W_V``); other positional heads (softmax, ties) use one (P, P) weight matrix
  shared by the whole batch; content heads compute ``q . k`` on the support of ``W_Q``/``W_K`` only.
* **bilinear FFN** ``W_3((W_1 h) * (W_2 h))``: every unit that multiplies two single coordinates is a term
  ``coef * h[a] * h[b] -> z``. Terms are grouped by (block of a, block of b, block of z, coef); a group that is
  exactly the full index set of an einsum over the blocks' named shapes (e.g. ``F[i,k] Q[k,j] -> op[i,j]``, all
  ``i, j, k``) runs as that einsum (a batched matrix product over positions); the rest runs as gathered products
  (``index_add``), units with wider rows as a small dense bilinear map.
* **ReLU FFN**: support-restricted maps, in chunks of positions; projective norms and embedding as in the dense
  module.

Result: a :class:`~constructions.transformer.Trace` like the dense module's (attention maps are not recorded), equal
to it to round-off (summation order differs); ``tests/test_constructions/test_structured_executor.py`` compares
them layer by layer for every registered construction.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import torch

from constructions.blocks import AttentionHead, BilinearFFN, ReLUFFN, nonzeros
from constructions.layout import Layout
from hmm.errors import HmmtxError
from hmm.rounding import float_dtype, round_array, round_exact

#: Rows (sequence positions) per chunk of a ReLU FFN evaluation (bounds the hidden activations' memory).
RELU_CHUNK = 4096


def _index(ix: list[int], device: Any) -> slice | torch.Tensor:
    """A contiguous index list as a slice (views, no gather), otherwise a long tensor."""
    if ix and ix == list(range(ix[0], ix[0] + len(ix))):
        return slice(ix[0], ix[0] + len(ix))
    return torch.as_tensor(ix, dtype=torch.long, device=device)


def _sparse_product(W_O: Any, W_V: Any) -> dict[tuple[int, int], Fraction]:
    """``W_O @ W_V`` exactly, as a dict of non-zeros."""
    by_k: dict[int, list[tuple[int, Fraction]]] = defaultdict(list)
    for k, j, v in nonzeros(W_V):
        by_k[k].append((j, v))
    out: dict[tuple[int, int], Fraction] = defaultdict(Fraction)
    for i, k, v in nonzeros(W_O):
        for j, w in by_k.get(k, ()):
            out[i, j] += v * w
    return {k: v for k, v in out.items() if v != 0}


class SupportMap:
    """``y = W x`` on the last axis, touching only the support of W (rows R written, columns C read).

    ``kind``: ``"copy"`` (each support row has one unit entry, columns distinct: a column gather), else ``"dense"``
    (``W[R, C]`` as a small dense matrix).
    """

    def __init__(self, entries: dict[tuple[int, int], Fraction] | list, shape: tuple[int, int], dtype: torch.dtype,
                 device: Any) -> None:
        items = sorted(entries.items()) if isinstance(entries, dict) else [((i, j), v) for i, j, v in entries]
        self.out_dim, self.in_dim = int(shape[0]), int(shape[1])
        rows = sorted({i for (i, _), _ in items})
        cols = sorted({j for (_, j), _ in items})
        self.n_rows = len(rows)
        self.rows, self.cols = _index(rows, device), _index(cols, device)
        r_pos = {r: a for a, r in enumerate(rows)}
        c_pos = {c: a for a, c in enumerate(cols)}
        per_row = defaultdict(list)
        for (i, j), v in items:
            per_row[i].append((j, v))
        unit_copy = all(len(e) == 1 and e[0][1] == 1 for e in per_row.values()) and len(cols) == len(rows)
        if unit_copy:
            self.kind = "copy"
            perm = [c_pos[per_row[r][0][0]] for r in rows]
            self.perm = None if perm == list(range(len(perm))) else torch.as_tensor(perm, device=device)
        else:
            self.kind = "dense"
            W = np.zeros((len(rows), len(cols)), dtype=float_dtype(dtype))
            for (i, j), v in items:
                W[r_pos[i], c_pos[j]] = round_exact(v, dtype)  # one correct rounding (hmm.rounding)
            self.W_T = torch.as_tensor(W.T.copy(), dtype=dtype, device=device)

    @classmethod
    def of(cls, W: Any, dtype: torch.dtype, device: Any) -> "SupportMap":
        return cls(nonzeros(W), W.shape, dtype, device)

    def read(self, x: torch.Tensor) -> torch.Tensor:
        """The support columns of ``x`` (a view when they are contiguous)."""
        return x[..., self.cols]

    def apply(self, xc: torch.Tensor) -> torch.Tensor:
        """The support rows of ``W x`` from ``read(x)``."""
        if self.kind == "copy":
            return xc if self.perm is None else xc[..., self.perm]
        return xc @ self.W_T

    def add_into(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """``out[..., R] += y``."""
        if isinstance(self.rows, slice):
            out[..., self.rows] += y
        else:
            out.index_add_(-1, self.rows, y)

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """``W x`` with every output (zeros outside the support)."""
        y = x.new_zeros(x.shape[:-1] + (self.out_dim,))
        if self.n_rows:
            self.add_into(y, self.apply(self.read(x)))
        return y


# ---------------------------------------------------------------------------------------------- attention
def _prefix_argmax_targets(bias: np.ndarray) -> np.ndarray | None:
    """Hard targets of a positional head in O(P): query u attends to ``u - argmax_{lag <= u} bias[lag]``; None when
    some query has tied maxima (then the (P, P) weight path averages over them)."""
    P = len(bias)
    best = np.maximum.accumulate(bias)
    first = np.empty(P, dtype=np.int64)
    ties = False
    arg, count = 0, 0
    for u in range(P):  # running argmax and number of lags holding the running maximum
        if u == 0 or bias[u] > best[u - 1]:
            arg, count = u, 1
        elif bias[u] == best[u]:
            count += 1
        ties = ties or count > 1
        first[u] = arg
    if ties:
        return None
    return np.arange(P) - first



class HeadPlan:
    """One head: the composite value-output map ``M = W_O W_V`` and, for content heads, ``W_Q``/``W_K``."""

    def __init__(self, head: AttentionHead, dtype: torch.dtype, device: Any) -> None:
        D = head.W_O.shape[0]
        self.positional = head.positional
        self.vo = SupportMap(_sparse_product(head.W_O, head.W_V), (D, D), dtype, device)
        if not self.positional:
            self.q = SupportMap.of(head.W_Q, dtype, device)
            self.k = SupportMap.of(head.W_K, dtype, device)
        self.bias64 = np.array([float(v) for v in head.rel_bias], dtype=np.float64)
        self.bias_exact = all(Fraction(f) == v for f, v in zip(self.bias64, head.rel_bias))
        self.bias = torch.as_tensor(round_array(head.rel_bias, dtype), dtype=dtype, device=device)
        self._shared: dict[tuple, Any] = {}

    def shared_weights(self, P: int, mode: str, beta: float | None) -> tuple[str, torch.Tensor]:
        """Positional head: ``("gather", targets (P,))`` for hard attention with unique maxima (exact bias), else
        ``("weights", (P, P))`` shared by every sequence."""
        key = (P, mode, beta)
        if key not in self._shared and mode == "hard" and self.bias_exact:
            t = _prefix_argmax_targets(self.bias64[:P])
            if t is not None:
                self._shared[key] = ("gather", torch.as_tensor(t, device=self.bias.device))
        if key not in self._shared:
            lag = torch.arange(P)[:, None] - torch.arange(P)[None, :]
            causal = lag >= 0
            sc = torch.where(causal, self.bias[lag.clamp(min=0).to(self.bias.device)],
                             torch.tensor(float("-inf"), dtype=self.bias.dtype, device=self.bias.device))
            if mode == "hard":
                hit = sc == sc.amax(dim=-1, keepdim=True)
                counts = hit.sum(dim=-1)
                if self.bias_exact and bool((counts == 1).all()):
                    self._shared[key] = ("gather", hit.to(torch.int8).argmax(dim=-1))
                else:
                    self._shared[key] = ("weights", hit.to(sc.dtype) / counts[:, None].to(sc.dtype))
            else:
                self._shared[key] = ("weights", torch.softmax(beta * sc, dim=-1))
        return self._shared[key]

    def mix(self, x: torch.Tensor, mode: str, beta: float | None) -> torch.Tensor:
        """The head's attention-weighted support columns ``sum_v w[u, v] x[v, C]`` (N, P, |C|)."""
        xc = self.vo.read(x)
        P = x.shape[1]
        if self.positional:
            kind, w = self.shared_weights(P, mode, beta)
            return xc[:, w] if kind == "gather" else torch.matmul(w, xc)
        pos = torch.arange(P, device=x.device)
        lag = pos[:, None] - pos[None, :]
        causal = lag >= 0
        bias_pp = self.bias[lag.clamp(min=0)]
        q, k = self.q.full(x), self.k.full(x)
        logits = torch.where(causal, q @ k.transpose(-1, -2) + bias_pp, torch.tensor(float("-inf"), dtype=x.dtype,
                                                                                       device=x.device))
        if mode == "hard":
            hit = logits == logits.amax(dim=-1, keepdim=True)
            w = hit.to(x.dtype) / hit.sum(dim=-1, keepdim=True).to(x.dtype)
        else:
            w = torch.softmax(beta * logits, dim=-1)
        return w @ xc


# ---------------------------------------------------------------------------------------------- bilinear FFN
class EinsumTerm(NamedTuple):
    """``out[z_block] += coef * einsum(spec, h[a_block], h[b_block])`` over the blocks' named shapes."""

    a: slice
    a_shape: tuple
    b: slice
    b_shape: tuple
    z: slice
    z_shape: tuple
    spec: str
    coef: float


def _coord_table(layout: Layout) -> list[tuple[str, tuple[int, ...]]]:
    """For each residual coordinate: (block name, index inside the block's shape)."""
    out = []
    for blk in layout:
        shape = blk.shape if blk.shape else (1,)
        out.extend((blk.name, idx) for idx in np.ndindex(*shape))
    return out


def _einsum_of(terms: list[tuple], sizes: list[int], n_a: int, n_b: int) -> str | None:
    """The einsum spec whose full index set is exactly ``terms`` (rows of concatenated a/b/z indices), or None.

    Positions always holding equal values share a letter; the group is that einsum iff merged positions have the
    same axis size, the rows are distinct and their number is the product of the letters' ranges.
    """
    vals = np.array([t for t in terms], dtype=np.int64).reshape(len(terms), -1)
    cols: dict[bytes, int] = {}
    letter_of = []
    for p in range(vals.shape[1]):
        key = vals[:, p].tobytes()
        if key not in cols:
            cols[key] = len(cols)
        letter_of.append(cols[key])
    ranges: dict[int, int] = {}
    for p, l in enumerate(letter_of):
        if ranges.setdefault(l, sizes[p]) != sizes[p]:
            return None
    reps = [letter_of.index(l) for l in range(len(cols))]
    if len({tuple(r) for r in vals[:, reps].tolist()}) != len(terms) or int(np.prod(list(ranges.values()))) != len(terms):
        return None
    letters = "abcdefghijklmnopqrstuvwxyz"
    if len(cols) > len(letters):
        return None
    s = [letters[l] for l in letter_of]
    za = "".join(s[n_a + n_b:])
    if len(set(za)) != len(za):
        return None  # a repeated output index (a diagonal write) is not an einsum output
    return f"{''.join(s[:n_a])},{''.join(s[n_a:n_a + n_b])}->{za}"


class BilinearPlan:
    """A bilinear FFN as einsum terms over named blocks, gathered products, and a dense rest (see module doc)."""

    def __init__(self, ffn: BilinearFFN, layout: Layout, dtype: torch.dtype, device: Any) -> None:
        table = _coord_table(layout)
        rows1, rows2 = defaultdict(list), defaultdict(list)
        for u, c, v in nonzeros(ffn.W_1):
            rows1[u].append((c, v))
        for u, c, v in nonzeros(ffn.W_2):
            rows2[u].append((c, v))
        writes = defaultdict(list)
        for z, u, v in nonzeros(ffn.W_3):
            writes[u].append((z, v))
        groups: dict[tuple, list] = defaultdict(list)
        wide = []
        for u in sorted(writes):
            if len(rows1[u]) != 1 or len(rows2[u]) != 1:
                wide.append(u)
                continue
            (a, sa), (b, sb) = rows1[u][0], rows2[u][0]
            for z, w in writes[u]:
                (ba, ia), (bb, ib), (bz, iz) = table[a], table[b], table[z]
                groups[ba, bb, bz, sa * sb * w].append((ia + ib + iz, (a, b, z)))
        self.terms: list[EinsumTerm] = []
        rest: list[tuple[int, int, int, Fraction]] = []
        for (ba, bb, bz, coef), items in groups.items():
            spec = self._spec(layout, ba, bb, bz, [i for i, _ in items])
            if spec is None:
                rest.extend((a, b, z, coef) for _, (a, b, z) in items)
                continue
            blk = [layout.block(n) for n in (ba, bb, bz)]
            shp = [b.shape if b.shape else (1,) for b in blk]
            self.terms.append(EinsumTerm(blk[0].slice, shp[0], blk[1].slice, shp[1], blk[2].slice, shp[2], spec,
                                         round_exact(coef, dtype)))
        self.rest = None
        if rest:
            a, b, z, c = zip(*rest)
            t = lambda v: torch.as_tensor(v, dtype=torch.long, device=device)  # noqa: E731
            self.rest = (t(a), t(b), t(z), torch.as_tensor(round_array(c, dtype), dtype=dtype, device=device))
        self.wide = None
        if wide:
            sub = lambda rows: {(k, c): v for k, u in enumerate(wide) for c, v in rows[u]}  # noqa: E731
            D = layout.width
            w3 = {(z, k): v for k, u in enumerate(wide) for z, v in writes[u]}
            self.wide = (SupportMap(sub(rows1), (len(wide), D), dtype, device),
                         SupportMap(sub(rows2), (len(wide), D), dtype, device),
                         SupportMap(w3, (D, len(wide)), dtype, device))

    @staticmethod
    def _spec(layout: Layout, ba: str, bb: str, bz: str, idx: list[tuple]) -> str | None:
        shapes = [layout.block(n).shape or (1,) for n in (ba, bb, bz)]
        sizes = [s for shp in shapes for s in shp]
        return _einsum_of(idx, sizes, len(shapes[0]), len(shapes[1]))

    def describe(self) -> list[str]:
        out = [f"einsum {t.spec} x {t.coef:g}" for t in self.terms]
        if self.rest is not None:
            out.append(f"{len(self.rest[0])} gathered products")
        if self.wide is not None:
            out.append(f"{self.wide[0].out_dim} dense bilinear units")
        return out

    @staticmethod
    def _is_matmul(spec: str) -> bool:
        """``pq,qr->pr`` with three distinct letters: a batched matrix product."""
        ins, out = spec.split("->")
        a, b = ins.split(",")
        return len(a) == len(b) == len(out) == 2 and len(set(a + b)) == 3 and a[1] == b[0] and out == a[0] + b[1]

    def _einsum(self, t: EinsumTerm, x: torch.Tensor, acc: torch.Tensor | None = None) -> torch.Tensor:
        """``coef * einsum(a, b)`` (N, P, |z|), added to ``acc`` when given (fused into the product for matmuls)."""
        N, P, _ = x.shape
        a = x[..., t.a].reshape(N, P, *t.a_shape)
        b = x[..., t.b].reshape(N, P, *t.b_shape)
        if self._is_matmul(t.spec):
            a3, b3 = a.reshape(N * P, *t.a_shape), b.reshape(N * P, *t.b_shape)
            if acc is None:
                r = torch.bmm(a3, b3)
                return (r if t.coef == 1.0 else t.coef * r).reshape(N, P, -1)
            return torch.baddbmm(acc.reshape(N * P, *t.z_shape), a3, b3, alpha=t.coef).reshape(N, P, -1)
        if t.coef != 1.0:  # scale the smaller operand
            a, b = (a * t.coef, b) if a.numel() <= b.numel() else (a, b * t.coef)
        ins, out = t.spec.split("->")
        la, lb = ins.split(",")
        if len(la) == 1 and t.a_shape == (1,) and out == lb:  # a scalar coordinate (e.g. the constant one) times a block
            r = b * a.reshape((N, P) + (1,) * len(lb))
            return (r.reshape(N, P, -1) if acc is None else acc + r.reshape(N, P, -1))
        if len(lb) == 1 and t.b_shape == (1,) and out == la:
            r = a * b.reshape((N, P) + (1,) * len(la))
            return (r.reshape(N, P, -1) if acc is None else acc + r.reshape(N, P, -1))
        r = torch.einsum("..." + t.spec.replace(",", ",...").replace("->", "->..."), a, b).reshape(N, P, -1)
        return r if acc is None else acc + r

    def add_update(self, x: torch.Tensor) -> torch.Tensor:
        """``x + d`` with d the FFN output, written into ``x`` (which the caller owns). Every term reads the
        pre-FFN ``x``; updates are summed per output block before they are added (as the dense ``x + d`` does)."""
        if self.rest is None and self.wide is None:
            upd: dict[tuple[int, int], torch.Tensor] = {}
            for t in sorted(self.terms, key=lambda t: self._is_matmul(t.spec)):  # products last: fused adds
                key = (t.z.start, t.z.stop)
                upd[key] = self._einsum(t, x, upd.get(key))
            for (a, b), r in upd.items():
                x[..., a:b] += r
            return x
        d = torch.zeros_like(x)
        for t in self.terms:
            d[..., t.z] += self._einsum(t, x)
        if self.rest is not None:
            ia, ib, iz, c = self.rest
            d.index_add_(-1, iz, x[..., ia] * x[..., ib] * c)
        if self.wide is not None:
            m1, m2, m3 = self.wide
            h = m1.full(x) * m2.full(x)
            m3.add_into(d, m3.apply(m3.read(h)))
        return x.add_(d)


class ReLUPlan:
    """``W_out relu(W_in h + b_in) + b_out`` on the supports of W_in / W_out, in chunks of positions."""

    def __init__(self, ffn: ReLUFFN, dtype: torch.dtype, device: Any) -> None:
        self.w_in = SupportMap.of(ffn.W_in, dtype, device)
        self.w_out = SupportMap.of(ffn.W_out, dtype, device)
        self.b_in = torch.as_tensor(round_array(ffn.b_in, dtype), dtype=dtype, device=device)
        self.b_out = torch.as_tensor(round_array(ffn.b_out, dtype), dtype=dtype, device=device)

    def add_update(self, x: torch.Tensor) -> torch.Tensor:
        """``x + d`` (d the FFN output) written into ``x`` (owned by the caller)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        d = torch.empty_like(flat)
        for s in range(0, flat.shape[0], RELU_CHUNK):
            xs = flat[s : s + RELU_CHUNK]
            h = torch.relu(self.w_in.full(xs) + self.b_in)
            d[s : s + RELU_CHUNK] = self.w_out.full(h) + self.b_out
        return x.add_(d.reshape(shape))


# ---------------------------------------------------------------------------------------------- the executor
class LayerPlan(NamedTuple):
    """How one layer runs: its heads, its FFN plan (or None) and its projective norms."""

    heads: list
    ffn: Any
    norms: list


class StructuredExecutor:
    """Runs ``model``'s exact weights by their structure (see the module docstring) in ``dtype`` on ``device``."""

    def __init__(self, model: Any, dtype: torch.dtype | None = None, device: Any = None) -> None:
        self.model = model
        self.dtype = model.dtype if dtype is None else dtype
        self.device = torch.device(device) if device is not None else model.device
        dt, dev = self.dtype, self.device
        lay = model.layout
        self.W_E = model.W_E.to(dtype=dt, device=dev)
        W_pos = getattr(model, "W_pos", None)
        self.W_pos = None if W_pos is None else W_pos.to(dtype=dt, device=dev)
        self.plans = []
        shared: dict[int, Any] = {}  # layers sharing one FFN object (e.g. every prefix doubling layer) share its plan
        for layer in model.layers:
            ffn = shared.get(id(layer.ffn))
            if ffn is None and isinstance(layer.ffn, BilinearFFN):
                ffn = shared[id(layer.ffn)] = BilinearPlan(layer.ffn, lay, dt, dev)
            elif ffn is None and isinstance(layer.ffn, ReLUFFN):
                ffn = shared[id(layer.ffn)] = ReLUPlan(layer.ffn, dt, dev)
            norms = [(lay[n.block], lay[n.denominator], n) for n in layer.norms]
            self.plans.append(LayerPlan([HeadPlan(h, dt, dev) for h in layer.heads], ffn, norms))
        self.readouts = {name: (SupportMap.of(r.W_U, dt, dev), r.shape) for name, r in model.readouts.items()}

    def describe(self) -> list[str]:
        """One line per layer: how it is executed."""
        out = []
        for layer, p in zip(self.model.layers, self.plans):
            heads = [("positional" if h.positional else "content") + f" head, value map {h.vo.kind} "
                     f"({h.vo.n_rows} coords)" for h in p.heads]
            ffn = p.ffn.describe() if isinstance(p.ffn, BilinearPlan) else (["ReLU FFN on supports"] if p.ffn else [])
            out.append(f"{layer.name}: " + "; ".join(heads + ffn + [f"{len(p.norms)} norms"]))
        return out

    def embed(self, ids: Any) -> torch.Tensor:
        ids = torch.as_tensor(self.model.check_input_ids(ids), device=self.device)
        x = self.W_E[ids]
        if self.W_pos is not None:
            x = x + self.W_pos[: ids.shape[1]]  # absolute positional embedding (constructions that declare one)
        return x

    def layer(self, li: int, x: torch.Tensor, mode: str, beta: float | None, *,
              snapshots: bool = True, inplace: bool = False) -> tuple[Any, Any, torch.Tensor]:
        """Layer ``li`` on residual ``x`` (modified only when ``inplace``): (after attention, after FFN, after the
        norms); the first two are None unless ``snapshots``."""
        from constructions.types import norm_error

        plan, layer = self.plans[li], self.model.layers[li]
        N, P, _ = x.shape
        if not inplace:
            x = x.clone()  # every update below writes into this copy
        if plan.heads:
            outs = []
            for h in plan.heads:  # every head reads the residual before attention
                outs.append((h.vo, h.vo.apply(h.mix(x, mode, beta))))
            if len(outs) == 1:
                outs[0][0].add_into(x, outs[0][1])
            else:  # sum the heads first, then add (the dense module's x + sum_h out_h)
                d = torch.zeros_like(x)
                for vo, y in outs:
                    vo.add_into(d, y)
                x.add_(d)
        a = x.clone() if snapshots else None
        if plan.ffn is not None:
            x = plan.ffn.add_update(x)
        f = x.clone() if snapshots and plan.norms else (x if snapshots else None)
        for blk, by, nrm in plan.norms:
            den = x[..., by].sum(dim=-1, keepdim=True)
            bad = ~(den != 0) | ~torch.isfinite(den)
            if bool(bad.any()):
                n, u, _ = (int(i) for i in torch.nonzero(bad)[0])
                raise norm_error(nrm, layer.name, n, u, N, float(den[n, u, 0]), str(x.dtype).replace("torch.", ""))
            x[..., blk] /= den
        return a, f, x

    def forward(self, input_ids: Any, *, attention: str | None = None, beta: float | None = None,
                record: str = "residuals") -> Any:
        """Like :meth:`ConstructedTransformer.forward` (attention maps are never recorded: None)."""
        from constructions.types import RECORD_LEVELS, Trace, check_attention

        if record not in RECORD_LEVELS:
            raise HmmtxError(f"record must be one of {RECORD_LEVELS}, got {record!r}")
        mode = self.model.attention if attention is None else attention
        b = check_attention(mode, self.model.beta if beta is None else beta)
        x = self.embed(input_ids)
        N, P, _ = x.shape
        L = len(self.plans)
        res: list = [x if record != "final" or L == 0 else None] + [None] * L
        after_attn: list = [None] * L
        after_ffn: list = [None] * L
        with torch.no_grad():
            for li in range(L):
                # the residual is kept only when recorded: otherwise layers update it in place
                a, f, x = self.layer(li, x, mode, b, snapshots=record == "all", inplace=record == "final")
                if record == "all":
                    after_attn[li], after_ffn[li] = a, f
                if record != "final" or li == L - 1:
                    res[li + 1] = x
            readouts = {name: m.full(x).reshape(N, P, *shape) for name, (m, shape) in self.readouts.items()}
        return Trace(res, after_attn, after_ffn, [None] * L, [None] * L, readouts)

    def run(self, tokens: Any, *, record: str = "final") -> Any:
        """Encode with the model's codec, execute, decode: a :class:`~constructions.transformer.RunResult`."""
        from constructions.types import RunResult

        ids = self.model.check_input_ids(self.model.codec.encode(tokens))
        trace = self.forward(ids, record=record)
        mode = "float64" if self.dtype == torch.float64 else "float32"
        return RunResult(self.model.codec.decode(self.model, trace, tokens), trace, ids, mode)


__all__ = ["StructuredExecutor", "SupportMap", "HeadPlan", "BilinearPlan", "ReLUPlan", "EinsumTerm", "RELU_CHUNK"]
