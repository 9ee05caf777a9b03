"""H1: the exact HMM filter in logarithmic depth (parallel-prefix operator products).

Provenance: the parallel-prefix construction described by Hu, Liu & Jin 2024 ("On Limitation of Transformer for
Learning HMMs", the 2^L effective-length argument) and Liu et al. 2023 ("Transformers Learn Shortcuts to
Automata", parallel-prefix composition of transition maps); Rizvi et al. 2024 use the same idea. Their full texts
were not available to us: the weights below are our reconstruction of that idea (details such as the tent bias,
the bilinear FFN and the projective normalisation are our choices; see docs/constructions/exact_filter.md).

Positions: 0 = NULL sink holding ``I``; 1 = BOS holding ``1 pi^T``; ``t + 2`` = observation ``x_t`` holding
``G_x = diag(B[:, x]) A`` (all stored normalised to entry sum 1). After ``L = ceil(log2(T + 1))`` doubling layers
position ``t + 2`` holds ``1 alpha^T / (S 1^T alpha)`` with ``alpha^T = pi^T G_{x_0} ... G_{x_t}`` = the joint
``P(x_0..x_t, z_{t+1})``. One extra lag-1 layer (``filtered=True``) fetches the previous position's product and
multiplies by ``D_{x_t}`` (block ``emis`` = ``B[:, x_t]``) to give the filtered belief.

Readouts (``1^T Q M`` normalised): ``next_token`` (M = B) at positions ``2..`` -> ``next_token_probs[t]``;
``predicted`` (M = I) at positions ``1..T`` -> ``predicted_probs[t]``; ``filtered`` at ``2..`` -> ``filtered_probs[t]``.
"""

from __future__ import annotations

from fractions import Fraction
from dataclasses import dataclass
from typing import Any

import numpy as np

from constructions.blocks import BilinearBuilder, Layer, copy_head, frac_zeros, lag_bias, readout
from constructions.prefix import (
    PrefixInfo,
    exact_hmm_arrays,
    colsum_readout,
    doubling_layer,
    embed_operators,
    num_doubling_layers,
    as_float_array,
    op_block,
    prefix_claimed_bound,
    prefix_layout,
    target_weights,
)
from constructions.estimates import prefix_bytes
from constructions.registry import ConstructionEntry, Param, ProbeHooks, VerifySweep, register
from constructions.transformer import BoundReport, ConstructedTransformer, check_attention, spec_for
from hmm.errors import HmmtxError
from hmm.model import HMM

NAME = "exact-filter"
PROVENANCE = (
    "reconstruction of the parallel-prefix construction (Hu, Liu & Jin 2024; Liu et al. 2023; Rizvi et al. 2024): "
    "log-depth operator products with hard relative-position attention, bilinear FFN and projective normalisation"
)
FAMILIES = ("dirichlet", "sticky", "cyclic", "low_rank", "observable", "mess3", "rrxor", "even", "golden_mean")


class FilterCodec:
    """Tokens (T,) or (N, T) -> ids ``[NULL, BOS, x_0, ..]`` (NULL = V, BOS = V + 1); decodes FilterResult fields."""

    def __init__(self, hmm: HMM, max_len: int) -> None:
        self.V = hmm.num_obs
        self.max_len = max_len
        self._check = hmm.check_tokens

    def encode(self, tokens: Any) -> np.ndarray:
        x = self._check(tokens, max_len=self.max_len)
        x = x[None] if x.ndim == 1 else x
        N = x.shape[0]
        head = np.tile(np.array([[self.V, self.V + 1]], dtype=np.int64), (N, 1))
        return np.concatenate([head, x], axis=1)

    def decode(self, model: ConstructedTransformer, trace: Any, tokens: Any) -> dict:
        single = np.asarray(tokens).ndim == 1
        out = {
            "next_token_probs": model.read(trace, "next_token", slice(2, None)),
            "predicted_probs": model.read(trace, "predicted", slice(1, -1)),
        }
        if "filtered" in trace.readouts:
            out["filtered_probs"] = model.read(trace, "filtered", slice(2, None))
        return {k: v[0] for k, v in out.items()} if single else out



@dataclass(frozen=True)
class ExactFilterInfo(PrefixInfo):
    """Model metadata (``model.info``): :class:`~constructions.prefix.PrefixInfo` plus ``hmm`` (the HMM the weights were built from)."""

    hmm: Any = None


def build(
    hmm: HMM,
    max_len: int,
    attention: str = "hard",
    beta: float | None = None,
    *,
    filtered: bool = True,
    dtype: Any = None,
    device: Any = None,
) -> ConstructedTransformer:
    """Build H1 for sequences of up to ``max_len`` observations.

    Size: ``L = ceil(log2(max_len + 1))`` doubling layers (+1 filtered layer), 1 head per layer, width
    ``D = 3 S^2 + V + 3`` (+ ``2 S`` with ``filtered``), FFN width ``S^3 + 2 S^2``.
    """
    import torch

    if not isinstance(hmm, HMM):
        raise HmmtxError(f"exact-filter: expected an HMM, got {type(hmm).__name__}")
    if not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise HmmtxError(f"exact-filter: max_len must be a positive integer, got {max_len!r}")
    beta = check_attention(attention, beta)
    pi, A, B = exact_hmm_arrays(hmm)
    S, V = B.shape
    P = int(max_len) + 2
    L = num_doubling_layers(P)

    lay = prefix_layout(S, V, op_desc="held operator product Q (entry sum 1); finally 1 alpha^T / (S 1^T alpha)")
    if filtered:
        lay.add("emis", S, "B[:, x] at observation positions (likelihood of the token held here)")
        lay.add("filtered", S, "unnormalised filtered belief predicted_t * B[:, x_t] (written by the last layer)")
    lay.freeze()

    eye = frac_zeros(S, S)
    for i in range(S):
        eye[i, i] = Fraction(1)
    rows = []
    for x in range(V):
        G = np.array([[B[i, x] * A[i, j] for j in range(S)] for i in range(S)], dtype=object)  # G_x = D_x A
        extra = {("emis", i): B[i, x] for i in range(S)} if filtered else {}
        rows.append({"name": f"x={x}", "op": G, "token": x, "extra": extra})
    rows.append({"name": "NULL", "op": eye, "flags": ["is_null"]})
    rows.append({"name": "BOS", "op": np.array([[pi[j] for j in range(S)] for _ in range(S)], dtype=object), "flags": ["is_bos"]})
    emb = embed_operators(lay, rows)

    layers = [doubling_layer(lay, l, P) for l in range(L)]
    if filtered:
        final = op_block(L)
        head = copy_head(lay, final, "fetched_op", lag_bias(1, P), name="lag1",
                         description="fetch the previous position's final product 1 alpha_pred(t)^T")
        ffn = BilinearBuilder(lay)
        # Proof: filtered[j] = sum_i F[i,j] * B[j, x_t] = (column sum of F)_j B[j, x_t] ∝ predicted_t[j] B[j, x_t].
        for i in range(S):
            for j in range(S):
                ffn.unit(("fetched_op", i, j), ("emis", j), [(("filtered", j), 1)], label=f"F[{i},{j}]*b[{j}]")
        for i in range(S):
            for j in range(S):
                ffn.unit("one", ("fetched_op", i, j), [(("fetched_op", i, j), -1)], label=f"-F[{i},{j}]")
        layers.append(Layer("filter", (head,), ffn.build(), (), "filtered belief: D_{x_t} applied to the previous prediction"))

    state_labels = [f"z={j}" for j in range(S)]
    readouts = [
        colsum_readout(lay, "next_token", B, [f"x={v}" for v in range(V)], description="1^T Q B: next-token masses",
                       block=op_block(L)),
        colsum_readout(lay, "predicted", eye, state_labels,
                       description="1^T Q: predicted-state masses", block=op_block(L)),
    ]
    if filtered:
        readouts.append(readout(lay, "filtered", [(j, ("filtered", j), 1) for j in range(S)], (S,),
                                description="filtered-state masses", labels=state_labels))
    spec = spec_for(NAME, lay, layers, max_positions=P, attention=attention, beta=beta, provenance=PROVENANCE,
                    parameters={"S": S, "V": V, "max_len": int(max_len), "doubling_layers": L, "filtered": filtered})
    return ConstructedTransformer(
        lay, emb, layers, readouts, spec, FilterCodec(hmm, int(max_len)),
        bound_fn=claimed_bound, attention=attention, beta=beta,
        dtype=torch.float64 if dtype is None else dtype, device=device,
        info=ExactFilterInfo(tuple(range(L)), S, hmm),
    )


def claimed_bound(model: ConstructedTransformer, tokens: Any, mode: str = "float64", *, trace: Any = None,
                  product_extra: float = 0.0) -> BoundReport:
    """Bound on the max-abs error of every output (next_token_probs, predicted_probs, filtered_probs) in ``mode``.

    * exact mode (hard attention): 0 (bit-identical).
    * float modes: the round-off bound :func:`~constructions.roundoff.prefix_roundoff` (relative per output;
      derived for hard attention, its softmax mixing term heuristic); the filtered belief adds the lag-1 layer
      (``osc + 2 (S + 1) ub``: emission rounding, product, S - 1 additions).
    * softmax attention: plus the certified leakage bound :func:`~constructions.prefix.prefix_lambda` (computed
      from a hard float64 run on the same tokens) and, for the filtered belief, the lag-1 layer's extension
      (:func:`_filtered_leakage`); capped at the trivial bound 1.

    ``trace`` / ``product_extra``: a compiled variant's own run and per-product term
    (:func:`~constructions.prefix.prefix_claimed_bound`).
    """
    from constructions.roundoff import unit_log

    if "filtered" not in model.readouts:
        return prefix_claimed_bound(model, tokens, mode, first_output=1, trace=trace, product_extra=product_extra)
    S = model.info.n
    extra_osc = None
    if mode != "exact":
        ub = unit_log(mode)
        extra_osc = {"filtered": lambda osc: osc + 2.0 * (S + 1) * ub + product_extra}
    return prefix_claimed_bound(model, tokens, mode, first_output=1, extra=_filtered_leakage, extra_osc=extra_osc,
                                extra_underflow=_filtered_underflow, trace=trace, product_extra=product_extra)


def _filtered_underflow(model: ConstructedTransformer, tr: Any) -> list:
    """Underflow-check pairs of the filtered layer: products ``F[i,j] * B[j, x_t]``."""
    from constructions.roundoff import min_positive

    lay = model.layout
    li = len(model.layers) - 1
    F = as_float_array(tr.after_attn[li][..., lay["fetched_op"]])
    emis = as_float_array(tr.after_attn[li][..., lay["emis"]])
    return [("filtered layer", min_positive(F, (-1,)), min_positive(emis, (-1,)))]


def required_beta(model: ConstructedTransformer, tokens: Any, target: float) -> float:
    """Smallest beta (within 0.1%) whose certified softmax leakage on every output (next-token, predicted and, if
    present, filtered) is at most ``target`` for these tokens (round-off allowance not included)."""
    from constructions.prefix import required_beta as _req

    extra = _filtered_leakage if "filtered" in model.readouts else None
    return _req(model, tokens, target, first_output=1, extra=extra)


def _filtered_leakage(model: ConstructedTransformer, tr: Any, lam: np.ndarray, ids: np.ndarray,
                      beta: float) -> tuple[float, str]:
    """Leakage bound of the filtered readout. The last layer fetches ``F = sum_v w_v Q_v >= lam' F*`` with
    ``lam' = w_{u-1} lam_{u-1}``; the output is ``(1^T F D_b) / (1^T F b)`` with ``b = B[:, x_t]``, a convex
    combination of the exact value (weight ``lam' d*``) and garbage (weight ``<= (1 - lam') b_max``), so
    ``err <= (1 - lam') b_max / (lam' d* + (1 - lam') b_max)`` with ``d* = (1^T F*) b`` (hard run)."""
    lay = model.layout
    N, P = ids.shape
    li = len(model.layers) - 1
    head = model.layers[li].heads[0]
    F = as_float_array(tr.after_attn[li][..., lay["fetched_op"]])
    filt = as_float_array(tr.after_ffn[li][..., lay["filtered"]])
    emis = as_float_array(tr.after_attn[li][..., lay["emis"]])
    d_star = filt.sum(axis=-1) / F.sum(axis=-1)
    b_max = emis.max(axis=-1)
    bias = np.array([float(v) for v in head.rel_bias[:P]])
    targets = np.maximum(np.arange(P) - 1, 0)  # lag 1 (position 0 attends to itself)
    w = target_weights(bias, targets, beta)
    lam_p = w[None, 2:] * lam[:, targets[2:]]
    den = lam_p * d_star[:, 2:] + (1.0 - lam_p) * b_max[:, 2:]
    e = np.where(den > 0, (1.0 - lam_p) * b_max[:, 2:] / np.where(den > 0, den, 1.0), 1.0)
    worst = float(e.max()) if e.size else 0.0
    return worst, f"filtered-belief leakage {worst:.3g}"


# ---------------------------------------------------------------------------------------------- registry
def _build_entry(hmm: HMM, tokens: Any, *, attention: str = "hard", beta: float | None = None, filtered: bool = True) -> ConstructedTransformer:
    T = 16 if tokens is None else int(np.asarray(tokens).shape[-1])
    return build(hmm, max(T, 1), attention, beta, filtered=filtered)


def _reference_entry(hmm: HMM, tokens: Any, *, exact: bool, filtered: bool = True) -> dict:
    from hmm.reference import forward_filter, forward_filter_exact

    r = forward_filter_exact(hmm, tokens) if exact else forward_filter(hmm, tokens)
    out = {"next_token_probs": r.next_token_probs, "predicted_probs": r.predicted_probs}
    if filtered:
        out["filtered_probs"] = r.filtered_probs
    return out


def _parse_tokens(text: str) -> np.ndarray:
    from hmm.io import parse_tokens

    return parse_tokens(text)


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise HmmtxError(f"expected a boolean (true/false), got {text!r}")


def _probe_build(hmm: HMM, length: int, r: int | None = None) -> ConstructedTransformer:
    """``hmmtx probe`` subject: sized for streams of ``length`` items (BOS + ``length - 1`` observations)."""
    return build(hmm, length - 1)


ENTRY = register(
    ConstructionEntry(
        name=NAME,
        estimate_bytes=prefix_bytes,
        summary="H1: exact forward filter in ceil(log2(T+1)) layers (parallel-prefix operator products)",
        provenance=PROVENANCE,
        input_kind="hmm",
        build=_build_entry,
        reference=_reference_entry,
        parse_tokens=_parse_tokens,
        params=(Param("filtered", _bool, True, "add the lag-1 layer that decodes filtered beliefs (default true)"),),
        families=FAMILIES,
        outputs=("next_token_probs", "predicted_probs", "filtered_probs"),
        default_tokens="0 1 0 1",
        bound="certified softmax leakage (a posteriori from the hard run) + derived relative round-off bound (hard attention)",
        probe=ProbeHooks("sequence", _probe_build),
        verify=VerifySweep(exact_at_scale=True),  # flint exact reference: verify --full checks S = 8-16 exactly
    )
)

__all__ = ["build", "claimed_bound", "required_beta", "FilterCodec", "exact_hmm_arrays", "ENTRY", "NAME", "PROVENANCE"]
