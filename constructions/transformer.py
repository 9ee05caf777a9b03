"""The hand-built decoder-only Transformer (torch) and its run/trace/spec types.

:class:`ConstructedTransformer` is a ``torch.nn.Module`` built from exact weights (:mod:`constructions.blocks`):
pre-residual layers ``h <- h + sum_heads Attn(h); h <- h + FFN(h)`` (then any projective normalisations), causal
relative-position attention (hard/argmax or softmax with inverse temperature ``beta``), readouts to unnormalised
masses. The forward pass is batched over sequences and positions (no Python loop over positions); it returns a
:class:`Trace` with every layer's residual stream and per-head attention scores and weights.

The same weights run exactly over Fractions in :func:`constructions.exact.run_exact` (hard attention only), so
``model.run(tokens, mode="exact")`` and ``model.run(tokens, mode="float64")`` can be compared bit for bit against
the rational references.

Construction-specific pieces are plugged in through a :class:`Codec` (``encode`` tokens to input ids, ``decode`` a
trace into named outputs such as ``next_token_probs``) and a bound function (``claimed_bound``).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Sequence

import warnings

import numpy as np
import torch

from constructions.blocks import AttentionHead, BilinearFFN, Embedding, Layer, ReLUFFN, Readout, nonzeros, positional_targets
from constructions.exact import run_exact
from constructions.layout import Layout
from constructions.types import (  # noqa: F401 - re-exported: the shared types live in constructions.types
    ATTENTION_MODES,
    MODES,
    RECORD_LEVELS,
    BoundReport,
    Codec,
    ConstructionSpec,
    ModelInfo,
    RunResult,
    Trace,
    as_model_info,
    check_attention,
    norm_error,
)
from hmm.errors import HmmtxError
from hmm.rounding import float_dtype, round_array


def torch_dtype(mode: str) -> torch.dtype:
    if mode == "float64":
        return torch.float64
    if mode == "float32":
        return torch.float32
    raise HmmtxError(f"mode {mode!r} has no torch dtype (modes: {', '.join(MODES)})")


# ---------------------------------------------------------------------------------------------- fast linear maps
class _Lin(torch.nn.Module):
    """``y = x @ W^T`` for an exact W (out, in), converted once to ``dtype``.

    Picks an equivalent evaluation: ``gather`` when every row has at most one non-zero (selection + scale),
    ``scatter`` when every column has at most one non-zero, else a dense matmul. Sums are in a different order
    than a dense matmul would use, which is still a correct floating-point evaluation of the same linear map.
    """

    def __init__(self, W: Any, dtype: torch.dtype, device: Any, *, batch_invariant: bool = False) -> None:
        super().__init__()
        out_dim, in_dim = W.shape
        self.out_dim, self.in_dim = int(out_dim), int(in_dim)
        nz = nonzeros(W)
        r = np.array([e[0] for e in nz], dtype=np.int64)
        c = np.array([e[1] for e in nz], dtype=np.int64)
        v = round_array([e[2] for e in nz], dtype)  # one correct rounding per weight (hmm.rounding)
        rows_nnz = np.bincount(r, minlength=out_dim) if nz else np.zeros(out_dim, dtype=int)
        cols_nnz = np.bincount(c, minlength=in_dim) if nz else np.zeros(in_dim, dtype=int)
        if rows_nnz.max(initial=0) <= 1:
            self.kind = "gather"
            idx = np.zeros(out_dim, dtype=np.int64)
            scale = np.zeros(out_dim, dtype=v.dtype)
            idx[r], scale[r] = c, v
            self.register_buffer("idx", torch.as_tensor(idx, device=device))
            self.register_buffer("scale", torch.as_tensor(scale, dtype=dtype, device=device))
            self.unit_scale = bool(np.all(scale == 1.0))
        elif cols_nnz.max(initial=0) <= 1 or batch_invariant:
            # batch_invariant (readouts): every output is the CSR row sum of its few inputs, in the same order
            # whatever the batch size (a dense BLAS matmul may block differently for different batch shapes)
            self.kind = "scatter" if cols_nnz.max(initial=0) <= 1 else "csr"
            self.register_buffer("cols", torch.as_tensor(c, device=device))
            self.register_buffer("rows", torch.as_tensor(r, device=device))
            self.register_buffer("scale", torch.as_tensor(v, dtype=dtype, device=device))
            self.identity_cols = bool(len(c) == in_dim and np.array_equal(c, np.arange(in_dim)))
            # CSR form (rows sorted): summing each output's few inputs row-wise is much faster than index_add_
            order = np.lexsort((c, r))
            crow = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=out_dim))]).astype(np.int64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                self.csr = torch.sparse_csr_tensor(
                    torch.as_tensor(crow, device=device), torch.as_tensor(c[order], device=device),
                    torch.as_tensor(v[order], dtype=dtype, device=device), size=(out_dim, in_dim),
                )
        else:
            self.kind = "dense"
            dense = np.zeros((out_dim, in_dim), dtype=v.dtype)
            dense[r, c] = v
            self.register_buffer("W", torch.as_tensor(dense, dtype=dtype, device=device))

    def apply_T(self, xT: torch.Tensor) -> torch.Tensor:
        """The same map on a transposed 2-D input: ``xT`` (in, n) -> (out, n) (row gathers: cache friendly)."""
        if self.kind == "gather":
            if self.in_dim == 0:
                return xT.new_zeros((self.out_dim, xT.shape[1]))
            y = xT.index_select(0, self.idx)
            return y if self.unit_scale else y * self.scale[:, None]
        if self.kind in ("scatter", "csr"):
            return self.csr @ xT
        return self.W @ xT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "gather":
            if self.in_dim == 0:
                return x.new_zeros(x.shape[:-1] + (self.out_dim,))
            y = x[..., self.idx]
            return y if self.unit_scale else y * self.scale
        if self.kind == "scatter":
            y = x.new_zeros(x.shape[:-1] + (self.out_dim,))
            return y.index_add_(-1, self.rows, x[..., self.cols] * self.scale if not self.identity_cols else x * self.scale)
        if self.kind == "csr":
            flat = x.reshape(-1, self.in_dim)
            return (self.csr @ flat.T.contiguous()).T.reshape(x.shape[:-1] + (self.out_dim,))
        return x @ self.W.T


def _dense_float(W: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """A 2-D exact weight (dense or SparseFrac) as a dense torch tensor (one correct rounding per entry)."""
    nz = nonzeros(W)
    out = np.zeros(W.shape, dtype=float_dtype(dtype))
    if nz:
        r, c, _ = zip(*nz)
        out[list(r), list(c)] = round_array([e[2] for e in nz], dtype)
    return torch.as_tensor(out, dtype=dtype, device=device)


def _fvec(a: np.ndarray, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """An exact vector/array as a torch tensor (one correct rounding per entry)."""
    return torch.as_tensor(round_array(a.ravel(), dtype, a.shape), dtype=dtype, device=device)


class _TorchHead(torch.nn.Module):
    def __init__(self, head: AttentionHead, dtype: torch.dtype, device: Any) -> None:
        super().__init__()
        self.positional = head.d_qk == 0
        self.W_Q = _Lin(head.W_Q, dtype, device)
        self.W_K = _Lin(head.W_K, dtype, device)
        self.W_V = _Lin(head.W_V, dtype, device)
        self.W_O = _Lin(head.W_O, dtype, device)
        self.register_buffer("rel_bias", _fvec(head.rel_bias, dtype, device))
        vals = [float(v) for v in head.rel_bias]
        # exact comparisons in float64 are valid when every bias entry is exactly representable (integers, dyadics)
        self._bias_exact_in_float = all(Fraction(f) == v for f, v in zip(vals, head.rel_bias))
        self._bias64 = np.array(vals, dtype=np.float64)
        self._targets: dict[int, Any] = {}

    def hard_targets(self, P: int) -> torch.Tensor | None:
        """For a positional head: the unique argmax key of every query u < P, or None when some query has tied
        maxima or the bias table is not exactly representable in float64 (then the general path is used)."""
        if P not in self._targets:
            arg = None
            if self._bias_exact_in_float:
                targets, unique = positional_targets(self._bias64, P)
                if unique:
                    arg = torch.as_tensor(targets, device=self.rel_bias.device)
            self._targets[P] = arg
        return self._targets[P]


class _TorchLayer(torch.nn.Module):
    def __init__(self, layer: Layer, layout: Layout, dtype: torch.dtype, device: Any) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleList([_TorchHead(h, dtype, device) for h in layer.heads])
        self.ffn_kind = None if layer.ffn is None else layer.ffn.kind
        if isinstance(layer.ffn, BilinearFFN):
            self.W_1 = _Lin(layer.ffn.W_1, dtype, device)
            self.W_2 = _Lin(layer.ffn.W_2, dtype, device)
            self.W_3 = _Lin(layer.ffn.W_3, dtype, device)
        elif isinstance(layer.ffn, ReLUFFN):
            self.W_in = _Lin(layer.ffn.W_in, dtype, device)
            self.W_out = _Lin(layer.ffn.W_out, dtype, device)
            self.register_buffer("b_in", _fvec(layer.ffn.b_in, dtype, device))
            self.register_buffer("b_out", _fvec(layer.ffn.b_out, dtype, device))
        self.norms = [(layout[n.block], layout[n.denominator], n) for n in layer.norms]


#: Positions per chunk in the token-local FFN evaluation (keeps the wide hidden layer in cache).
FFN_CHUNK = 512


def _ffn_chunked(tl: "_TorchLayer", x: torch.Tensor) -> torch.Tensor:
    """The FFN update ``d`` (N, P, D) of a token-local FFN, evaluated in chunks of positions in transposed layout.

    Chunking is batching (every position of a chunk at once), not a loop over positions; each hidden unit and
    output is computed with the same operations in the same order as an unchunked evaluation would.
    """
    D = x.shape[-1]
    flat = x.reshape(-1, D)
    outs = []
    for s in range(0, flat.shape[0], FFN_CHUNK):
        xt = flat[s : s + FFN_CHUNK].T.contiguous()
        if tl.ffn_kind == "bilinear":
            d = tl.W_3.apply_T(tl.W_1.apply_T(xt) * tl.W_2.apply_T(xt))
        else:
            d = tl.W_out.apply_T(torch.relu(tl.W_in.apply_T(xt) + tl.b_in[:, None])) + tl.b_out[:, None]
        outs.append(d.T)
    return torch.cat(outs, dim=0).reshape(x.shape)


# ---------------------------------------------------------------------------------------------- layer pieces
class _LagMaps:
    """The causal mask and the lag indices, (P, P) each (``lag = u - v``), built on first use: content-free hard
    heads with unique targets (:meth:`_TorchHead.hard_targets`) need neither."""

    def __init__(self, P: int, device: Any) -> None:
        self.P, self.device = P, device
        self._maps: tuple[torch.Tensor, torch.Tensor] | None = None

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._maps is None:
            pos = torch.arange(self.P, device=self.device)
            lag = pos[:, None] - pos[None, :]  # (P, P): u - v
            self._maps = (lag >= 0, lag.clamp(min=0))
        return self._maps


def _head_logits(th: _TorchHead, x: torch.Tensor, maps: _LagMaps) -> torch.Tensor:
    """The bracket ``q_u . k_v + b(u - v)`` (N, P, P) of one head on residuals ``x`` (N, P, D); ``-inf`` where
    ``v > u`` (causal mask)."""
    N, P = x.shape[:2]
    causal, lag_idx = maps.get()
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    bias = torch.where(causal, th.rel_bias[lag_idx], neg_inf)  # (P, P)
    if th.positional:
        return bias.expand(N, P, P)
    q, k = th.W_Q(x), th.W_K(x)
    return torch.where(causal, q @ k.transpose(-1, -2) + bias, neg_inf)


def _hard_mix(logits: torch.Tensor, vals: torch.Tensor, keep_weights: bool) -> tuple[torch.Tensor, Any]:
    """Hard attention: ``mixed`` (N, P, d_v) = the value at each query's maximum, averaged over tied maxima; the
    weights (N, P, P) when ``keep_weights`` (else None unless ties forced them)."""
    mx = logits.amax(dim=-1, keepdim=True)
    hit = logits == mx
    counts = hit.sum(dim=-1)
    if bool((counts == 1).all()):
        # every query has a unique maximum: the weighted sum is a gather (same result exactly)
        arg = hit.to(torch.int8).argmax(dim=-1)  # (N, P)
        mixed = torch.gather(vals, 1, arg[..., None].expand(-1, -1, vals.shape[-1]))
        return mixed, (hit.to(vals.dtype) if keep_weights else None)
    w = hit.to(vals.dtype) / counts[..., None].to(vals.dtype)  # ties: average over tied maxima
    return w @ vals, w


def _attention(tl: _TorchLayer, x: torch.Tensor, mode: str, beta: float | None, record: str,
               maps: _LagMaps) -> tuple[torch.Tensor, list, list]:
    """One layer's attention update ``sum_h W_O^h attn_h(x)`` (N, P, D) from residuals ``x`` (N, P, D), and with
    ``record="all"`` each head's scores and weights (N, P, P): ``attn_h = softmax(beta * logits) V`` or its hard
    (argmax) limit."""
    P = x.shape[1]
    out = torch.zeros_like(x)
    sc_all, w_all = [], []
    for th in tl.heads:
        if th.positional and mode == "hard" and record != "all":
            # content-free hard head: the argmax depends on (u, lag table) only; computed once per P
            arg = th.hard_targets(P)
            if arg is not None:
                vals = th.W_V(x)
                out = out + th.W_O(vals[:, arg])
                continue
        logits = _head_logits(th, x, maps)
        vals = th.W_V(x)  # (N, P, d_v)
        if mode == "hard":
            mixed, w = _hard_mix(logits, vals, record == "all")
        else:
            w = torch.softmax(beta * logits, dim=-1)
            mixed = w @ vals
        out = out + th.W_O(mixed)
        if record == "all":
            sc_all.append(logits)
            w_all.append(w)
    return out, sc_all, w_all


def _normalise(tl: _TorchLayer, layer_name: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's projective normalisations: each named block divided by the sum of its denominator block
    (x (N, P, D)); a zero or non-finite sum raises HmmtxError naming the layer and position."""
    x = x.clone()
    for blk, by, nrm in tl.norms:
        den = x[..., by].sum(dim=-1, keepdim=True)
        bad = ~(den != 0) | ~torch.isfinite(den)
        if bool(bad.any()):
            n, u, _ = (int(i) for i in torch.nonzero(bad)[0])
            raise norm_error(nrm, layer_name, n, u, x.shape[0], float(den[n, u, 0]), str(x.dtype).replace("torch.", ""))
        x[..., blk] = x[..., blk] / den
    return x


# ---------------------------------------------------------------------------------------------- the model
class ConstructedTransformer(torch.nn.Module):
    """A hand-built decoder-only Transformer.

    Args:
        layout: the frozen named residual layout (width D).
        embedding: :class:`Embedding` (``W_E`` (n_in, D) and input vocabulary names).
        layers: the :class:`Layer` s in order.
        readouts: the :class:`Readout` s (unembeddings to masses).
        spec: :class:`ConstructionSpec`.
        codec: :class:`Codec` (tokens <-> input ids / named outputs).
        bound_fn: ``bound_fn(model, tokens, mode) -> BoundReport`` (construction-specific); optional.
        attention: ``"hard"`` or ``"softmax"``; beta: inverse temperature for softmax.
        dtype, device: of the torch buffers (built from the exact weights in that dtype).

    The exact weights stay available (``model.layers``, ``model.embedding``, ``model.readouts``) and are the source
    of truth; :meth:`materialise` rebuilds the module in another dtype/device from them.
    """

    def __init__(
        self,
        layout: Layout,
        embedding: Embedding,
        layers: Sequence[Layer],
        readouts: Sequence[Readout],
        spec: ConstructionSpec,
        codec: Codec,
        *,
        bound_fn: Callable[..., BoundReport] | None = None,
        attention: str = "hard",
        beta: float | None = None,
        dtype: torch.dtype = torch.float64,
        device: Any = None,
        info: ModelInfo | None = None,
    ) -> None:
        super().__init__()
        if not layout.frozen:
            raise HmmtxError("ConstructedTransformer: freeze the layout before building weights (layout.freeze())")
        D = layout.width
        if embedding.W_E.shape[1] != D:
            raise HmmtxError(f"W_E has width {embedding.W_E.shape[1]}, the layout has width {D}")
        for layer in layers:
            for h in layer.heads:
                if h.W_O.shape[0] != D:
                    raise HmmtxError(f"{layer.name}/{h.name}: W_O has {h.W_O.shape[0]} rows, the layout width is {D}")
            if layer.ffn is not None:
                w = layer.ffn.W_1 if isinstance(layer.ffn, BilinearFFN) else layer.ffn.W_in
                if w.shape[1] != D:
                    raise HmmtxError(f"{layer.name}: FFN input width {w.shape[1]}, the layout width is {D}")
            for n in layer.norms:
                layout.block(n.block), layout.block(n.denominator)
        names = [r.name for r in readouts]
        if len(set(names)) != len(names):
            raise HmmtxError(f"readout names must be unique, got {names}")
        for r in readouts:
            if r.W_U.shape[1] != D:
                raise HmmtxError(f"readout '{r.name}': W_U has width {r.W_U.shape[1]}, the layout width is {D}")
        self.layout = layout
        self.embedding = embedding
        self.layers = tuple(layers)
        self.readouts = {r.name: r for r in readouts}
        self.spec = spec
        self.codec = codec
        self.bound_fn = bound_fn
        self.attention = attention
        self.beta = check_attention(attention, beta)
        self.info = as_model_info(info)
        self.dtype = dtype
        self.register_buffer("W_E", _dense_float(embedding.W_E, dtype, device))
        self.register_buffer("W_pos", None if embedding.W_pos is None else _dense_float(embedding.W_pos, dtype, device))
        self.t_layers = torch.nn.ModuleList([_TorchLayer(l, layout, dtype, device) for l in self.layers])
        self.t_readouts = torch.nn.ModuleDict({n: _Lin(r.W_U, dtype, device, batch_invariant=True)
                                               for n, r in self.readouts.items()})

    # -------------------------------------------------------------- construction helpers
    def materialise(self, dtype: torch.dtype = torch.float64, device: Any = None) -> "ConstructedTransformer":
        """The same construction with torch buffers rebuilt from the exact weights in ``dtype`` on ``device``."""
        return ConstructedTransformer(
            self.layout, self.embedding, self.layers, tuple(self.readouts.values()), self.spec, self.codec,
            bound_fn=self.bound_fn, attention=self.attention, beta=self.beta, dtype=dtype, device=device,
            info=self.info,
        )

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    @property
    def max_positions(self) -> int:
        lags = [h.n_lags for l in self.layers for h in l.heads]
        if self.embedding.W_pos is not None:
            lags.append(int(self.embedding.W_pos.shape[0]))
        return min(lags) if lags else 1 << 62

    # -------------------------------------------------------------- forward
    def check_input_ids(self, input_ids: Any) -> np.ndarray:
        """Input ids (N, P) or (P,) -> validated int64 (N, P): ids within the embedding, P within the bias tables."""
        ids = np.asarray(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise HmmtxError(f"input ids: expected shape (N, P) with P >= 1, got {ids.shape}")
        n_in = self.embedding.W_E.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= n_in):
            raise HmmtxError(f"input ids: values must lie in [0, {n_in}), got range [{ids.min()}, {ids.max()}]")
        if ids.shape[1] > self.max_positions:
            raise HmmtxError(
                f"input has {ids.shape[1]} positions but the construction's relative-position tables cover "
                f"{self.max_positions} (rebuild with a larger max_len)"
            )
        return ids.astype(np.int64)

    def forward(
        self,
        input_ids: Any,
        *,
        attention: str | None = None,
        beta: float | None = None,
        record: str = "all",
    ) -> Trace:
        """Run on input ids (N, P) (or (P,)); returns a :class:`Trace` of torch tensors.

        ``attention``/``beta`` override the model's own mode for this call. ``record``: ``"all"`` (everything),
        ``"residuals"`` (residual per layer and readouts, no attention maps or intermediates), ``"final"``
        (last residual and readouts only: long sequences).
        """
        if record not in RECORD_LEVELS:
            raise HmmtxError(f"record must be one of {RECORD_LEVELS}, got {record!r}")
        mode = self.attention if attention is None else attention
        b = check_attention(mode, self.beta if beta is None else beta)
        ids = torch.as_tensor(self.check_input_ids(input_ids), device=self.device)
        N, P = ids.shape
        x = self.W_E[ids]  # (N, P, D)
        if self.W_pos is not None:
            x = x + self.W_pos[:P]  # absolute positional embedding (only constructions that declare one)
        L = len(self.layers)
        keep_res = record in ("all", "residuals")
        keep_states = record in ("all", "states")
        residuals: list = [x if keep_res or L == 0 else None] + [None] * L
        after_attn: list = [None] * L
        after_ffn: list = [None] * L
        scores_l: list = [None] * L
        weights_l: list = [None] * L
        maps = _LagMaps(P, self.device)
        for li, (layer, tl) in enumerate(zip(self.layers, self.t_layers)):
            if tl.heads:
                out, sc_all, w_all = _attention(tl, x, mode, b, record, maps)
                x = x + out
                if record == "all":
                    scores_l[li] = torch.stack(sc_all, dim=1)
                    weights_l[li] = torch.stack(w_all, dim=1)
            if keep_states:
                after_attn[li] = x
            if tl.ffn_kind is not None:
                x = x + _ffn_chunked(tl, x)
            if keep_states:
                after_ffn[li] = x
            if tl.norms:
                x = _normalise(tl, layer.name, x)
            if keep_res or li == L - 1:
                residuals[li + 1] = x
        readouts = {name: lin(x).reshape(N, P, *self.readouts[name].shape) for name, lin in self.t_readouts.items()}
        return Trace(residuals, after_attn, after_ffn, scores_l, weights_l, readouts)

    # -------------------------------------------------------------- high level
    def run(self, tokens: Any, mode: str = "float64", *, record: str = "all", exact_backend: str = "auto") -> RunResult:
        """Encode ``tokens`` with the codec, execute in ``mode`` ("exact", "float64", "float32"), decode outputs.

        ``float32``/``float64`` run this module rebuilt in that dtype (if it is not already); ``exact`` runs the
        exact executor (hard attention only). Returns :class:`RunResult`: ``outputs`` name -> array of the codec's
        shape (e.g. (T, V) for one sequence of T tokens, (N, T, V) for N; torch tensors in float modes, object
        arrays of Fractions in exact mode), ``trace``, ``input_ids`` (N, P), ``mode``. With ``record="final"`` and
        python-flint installed, exact mode runs the fast executor (:mod:`constructions.exact_fast`; readouts and
        decoded outputs bit-identical) unless ``exact_backend="fraction"``; otherwise the readable Fraction executor
        :func:`constructions.exact.run_exact`.
        """
        if mode not in MODES:
            raise HmmtxError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        ids = self.check_input_ids(self.codec.encode(tokens))
        if mode == "exact":
            if self.attention != "hard":
                raise HmmtxError("exact mode runs hard attention only (softmax weights are not rational): use --attention hard")
            if record == "final" and exact_backend != "fraction" and _flint_available():
                from constructions.exact_fast import run_exact_fast

                trace = run_exact_fast(self, ids)  # FLINT rationals: decoded outputs bit-identical to run_exact's
            else:
                trace = run_exact(self, ids, record=record)
        else:
            dt = torch_dtype(mode)
            model = self if self.dtype == dt else self.materialise(dt, self.device)
            with torch.no_grad():
                trace = model.forward(ids, record=record)
        return RunResult(self.codec.decode(self, trace, tokens), trace, ids, mode)

    def claimed_bound(self, tokens: Any, mode: str = "float64") -> BoundReport:
        """The construction's claimed bound on the max-abs error of its bound-covered outputs for these tokens in
        ``mode`` (a :class:`BoundReport`; the runner rejects a negative or NaN value)."""
        if self.bound_fn is None:
            raise HmmtxError(f"construction '{self.spec.name}' has no claimed bound")
        return self.bound_fn(self, tokens, mode)

    def read(self, trace: Trace, name: str, positions: Any = slice(None)) -> Any:
        """Normalised readout ``z / sum(z)`` (last axis) at ``positions``: (N, len(positions), *shape) from masses
        (N, P, *shape); a zero sum raises HmmtxError."""
        if name not in trace.readouts:
            raise HmmtxError(f"no readout named '{name}' (readouts: {', '.join(trace.readouts)})")
        z = trace.readouts[name][:, positions]
        if isinstance(z, torch.Tensor):
            s = z.sum(dim=-1, keepdim=True)
            bad = ~(s > 0)
            if bool(bad.any()):
                raise HmmtxError(f"readout '{name}': zero total mass at position index {tuple(int(i) for i in torch.nonzero(bad)[0][:-1])} (probability-zero input)")
            return z / s
        out = np.empty(z.shape, dtype=object)
        from hmm.fastq import normalised_fractions

        for idx in np.ndindex(z.shape[:-1]):
            row = list(z[idx])
            if row and isinstance(row[0], Fraction):
                fast = normalised_fractions(row)  # FLINT gcds: the same Fractions, much faster on huge numbers
                if fast is not None:
                    out[idx] = fast
                    continue
            s = sum(row[1:], row[0]) if row else Fraction(0)  # exact for Fractions; arb balls work too
            if not s > 0:
                raise HmmtxError(f"readout '{name}': zero total mass at position index {idx} (probability-zero input)")
            out[idx] = [v / s for v in z[idx]]
        return out

    def weight_tables(self) -> list[dict]:
        """Every exact weight matrix with row/column labels (for ``hmmtx inspect``).

        Each entry: ``{"layer": str, "name": str, "matrix": object array, "rows": [...], "cols": [...]}``.
        """
        res = self.layout.labels()
        out = [{"layer": "embed", "name": "W_E", "matrix": self.embedding.W_E, "rows": list(self.embedding.vocab), "cols": res}]
        if self.embedding.W_pos is not None:
            out.append({"layer": "embed", "name": "W_pos", "matrix": self.embedding.W_pos,
                        "rows": [f"pos {p}" for p in range(self.embedding.W_pos.shape[0])], "cols": res})
        for layer in self.layers:
            for hi, h in enumerate(layer.heads):
                hn = h.name or f"head{hi}"
                qk = [f"qk{i}" for i in range(h.d_qk)]
                vl = list(h.value_labels) or [f"v{i}" for i in range(h.d_v)]
                out.append({"layer": layer.name, "name": f"{hn}.W_Q", "matrix": h.W_Q, "rows": qk, "cols": res})
                out.append({"layer": layer.name, "name": f"{hn}.W_K", "matrix": h.W_K, "rows": qk, "cols": res})
                out.append({"layer": layer.name, "name": f"{hn}.W_V", "matrix": h.W_V, "rows": vl, "cols": res})
                out.append({"layer": layer.name, "name": f"{hn}.W_O", "matrix": h.W_O, "rows": res, "cols": vl})
                out.append({"layer": layer.name, "name": f"{hn}.rel_bias", "matrix": h.rel_bias[None, :],
                            "rows": ["b(lag)"], "cols": [f"lag {i}" for i in range(h.n_lags)]})
            f = layer.ffn
            if isinstance(f, BilinearFFN):
                hl = list(f.hidden_labels) or [f"u{i}" for i in range(f.width)]
                out.append({"layer": layer.name, "name": "ffn.W_1", "matrix": f.W_1, "rows": hl, "cols": res})
                out.append({"layer": layer.name, "name": "ffn.W_2", "matrix": f.W_2, "rows": hl, "cols": res})
                out.append({"layer": layer.name, "name": "ffn.W_3", "matrix": f.W_3, "rows": res, "cols": hl})
            elif isinstance(f, ReLUFFN):
                hl = list(f.hidden_labels) or [f"u{i}" for i in range(f.width)]
                out.append({"layer": layer.name, "name": "ffn.W_in", "matrix": f.W_in, "rows": hl, "cols": res})
                out.append({"layer": layer.name, "name": "ffn.b_in", "matrix": f.b_in[:, None], "rows": hl, "cols": ["bias"]})
                out.append({"layer": layer.name, "name": "ffn.W_out", "matrix": f.W_out, "rows": res, "cols": hl})
                out.append({"layer": layer.name, "name": "ffn.b_out", "matrix": f.b_out[:, None], "rows": res, "cols": ["bias"]})
        for r in self.readouts.values():
            rl = list(r.labels) or [f"z{i}" for i in range(r.W_U.shape[0])]
            out.append({"layer": "readout", "name": f"{r.name}.W_U", "matrix": r.W_U, "rows": rl, "cols": res})
        return out

    def extra_repr(self) -> str:
        s = self.spec
        return f"name={s.name!r}, layers={s.layers}, heads={s.heads}, width={s.width}, ffn_width={s.ffn_width}, attention={self.attention}"


#: Former private name, kept for code written against it.
_norm_error = norm_error


def _flint_available() -> bool:
    from hmm.fastq import available

    return available()


def spec_for(
    name: str,
    layout: Layout,
    layers: Sequence[Layer],
    *,
    max_positions: int,
    attention: str,
    beta: float | None,
    provenance: str,
    parameters: dict | None = None,
) -> ConstructionSpec:
    """Fill a :class:`ConstructionSpec` from the built pieces (layers, heads, width, FFN width)."""
    heads = max((len(l.heads) for l in layers), default=0)
    ffn = max((l.ffn.width for l in layers if l.ffn is not None), default=0)
    return ConstructionSpec(name, len(layers), heads, layout.width, ffn, max_positions, attention,
                            check_attention(attention, beta), provenance, dict(parameters or {}))


__all__ = [
    "ATTENTION_MODES",
    "MODES",
    "Trace",
    "RunResult",
    "BoundReport",
    "Codec",
    "ConstructionSpec",
    "ConstructedTransformer",
    "check_attention",
    "spec_for",
    "torch_dtype",
]
