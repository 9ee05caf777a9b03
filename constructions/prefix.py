"""Shared parallel-prefix operator-product machinery (H1 exact filter, H3 Bayes multi-task, and any construction
whose positions hold matrices to be multiplied left to right).

Positions: 0 = NULL sink holding the identity, then one operator per position. After the doubling layers
``l = 0 .. L-1`` position ``u`` holds (up to a positive scale) the ordered product of the operators at positions
``1 .. u`` (``2^L >= u``). The held product lives in two ping-pong blocks, ``op`` (before even layers) and
``op_alt`` (before odd layers): :func:`op_block` names the block that holds it before layer ``l``. Layer l:

* one purely positional head, tent bias ``b(lag) = -|lag - 2^l|``: hard attention fetches position ``u - 2^l``
  (which holds the product over ``(u - 2^{l+1}, u - 2^l]``) into ``fetched_op``; when ``u < 2^l`` the largest
  available lag ``u`` (position 0, the NULL identity) wins automatically;
* a bilinear FFN (width ``n^3 + 2 n^2``) writes ``F Q`` into the **fresh** block ``op_block(l + 1)`` (zero
  before), ``-Q`` into ``op_block(l)`` and ``-F`` into ``fetched_op``: in IEEE arithmetic ``0 + y = y`` and
  ``x + (-x) = 0`` exactly, so the residual update adds no rounding and no cancellation (the earlier single-block
  update ``Q + (F Q - Q)`` cancelled when the product's mass was small);
* **projective normalisation (non-standard)** of ``op_block(l + 1)`` by its entry sum.

The module also computes the softmax-leakage bound (see ``docs/constructions/exact_filter.md``); the float
round-off bound is :mod:`constructions.roundoff`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from constructions.blocks import (
    ONE,
    BilinearBuilder,
    Embedding,
    Layer,
    ProjectiveNorm,
    Readout,
    as_frac_array,
    copy_head,
    frac_zeros,
    lag_bias,
    positional_targets,
    readout,
)
from constructions.layout import Layout
from constructions.roundoff import min_positive, prefix_roundoff, underflow_check
from constructions.types import ModelInfo
from hmm.errors import HmmtxError
from hmm.model import HMM


@dataclass(frozen=True)
class PrefixInfo(ModelInfo):
    """Model metadata of a parallel-prefix construction (what :func:`prefix_claimed_bound` reads back).

    Fields:
        prefix_layers: indices of the doubling layers, in order
        n:             operator size (S for one HMM, the total number of (task, state) pairs for a mixture)
    """

    prefix_layers: tuple[int, ...]
    n: int



def num_doubling_layers(max_positions: int) -> int:
    """``L = ceil(log2(P_max - 1))``: enough doubling layers for position ``P_max - 1`` to cover ``1 .. P_max-1``."""
    if max_positions < 2:
        raise HmmtxError(f"prefix product needs at least 2 positions (NULL and one operator), got {max_positions}")
    return max(1, math.ceil(math.log2(max_positions - 1)))


def op_block(l: int) -> str:
    """The block that holds the operator product before doubling layer ``l`` (``op`` for even l, ``op_alt`` for odd
    l); after ``L`` layers the product is in ``op_block(L)``."""
    return "op" if l % 2 == 0 else "op_alt"


def prefix_layout(n: int, V: int, *, op_desc: str, flags: Sequence[str] = ("is_null", "is_bos")) -> Layout:
    """The shared blocks (not frozen, so a construction can append its own): ``op``, ``op_alt`` (n,n) (ping-pong
    blocks of the held product, see :func:`op_block`), ``fetched_op`` (n,n),
    ``one``, the given 0/1 flags, and ``token`` (V one-hot of the observation at that position)."""
    lay = Layout()
    lay.add("op", (n, n), op_desc + " (held before even layers)")
    lay.add("op_alt", (n, n), "the held product before odd layers (ping-pong partner of op; 0 while op holds it)")
    lay.add("fetched_op", (n, n), "operator fetched by this layer's head (cleared by the FFN)")
    lay.add("one", 1, "constant 1 (linear terms of bilinear units)")
    flag_desc = {
        "is_null": "1 at the NULL sink (position 0)",
        "is_bos": "1 at BOS (position 1)",
        "is_sep": "1 at SEP items",
    }
    for f in flags:
        lay.add(f, 1, flag_desc.get(f, f))
    lay.add("token", V, "one-hot of the observation at this position (0 at NULL/BOS/SEP)")
    return lay


def normalised(op: np.ndarray) -> np.ndarray:
    """``op / sum(op)`` exactly (zero operators stay zero: their position raises at the first normalisation)."""
    s = sum(op.ravel(), Fraction(0))
    return op if s == 0 else np.vectorize(lambda v: v / s, otypes=[object])(op)


def embed_operators(layout: Layout, rows: Sequence[dict]) -> Embedding:
    """Build ``W_E`` from rows ``{"name": vocab name, "op": (n,n) exact, "flags": [...], "token": int|None,
    "extra": {(block, *idx): value}}``. Operators are stored normalised to entry sum 1 (projectively the same)."""
    D = layout.width
    W_E = frac_zeros(len(rows), D)
    n = layout.block("op").shape[0]
    for r, row in enumerate(rows):
        op = normalised(row["op"])
        for i in range(n):
            for j in range(n):
                W_E[r, layout.index("op", i, j)] = op[i, j]
        W_E[r, layout.index("one")] = ONE
        for f in row.get("flags", ()):
            W_E[r, layout.index(f)] = ONE
        if row.get("token") is not None:
            W_E[r, layout.index("token", int(row["token"]))] = ONE
        for c, v in row.get("extra", {}).items():
            W_E[r, layout.index(c[0], *c[1:])] = Fraction(v)
    return Embedding(W_E, tuple(r["name"] for r in rows))


def product_ffn(layout: Layout, l: int = 0) -> Any:
    """The bilinear FFN of doubling layer ``l`` (two variants by the parity of l; built once per layout and shared).

    ``new[i,j] = sum_k F[i,k] Q[k,j]`` into the fresh block ``op_block(l + 1)`` (0 before), ``-Q`` into
    ``op_block(l)``, ``-F`` into ``fetched_op``.
    """
    src, dst = op_block(l), op_block(l + 1)
    key = (id(layout), src)
    cached = _FFN_CACHE.get(key)
    if cached is not None and cached[0] is layout:
        return cached[1]
    n = layout.block("op").shape[0]
    ffn = BilinearBuilder(layout)
    # Proof: dst[i,j] = 0 + sum_k F[i,k] Q[k,j] = (F Q)[i,j]; src becomes Q - Q = 0 and fetched F - F = 0 (each an
    # exact operation in IEEE arithmetic: adding to an exact zero, subtracting a value from itself).
    for i in range(n):
        for j in range(n):
            for k in range(n):
                ffn.unit(("fetched_op", i, k), (src, k, j), [((dst, i, j), 1)], label=f"F[{i},{k}]*Q[{k},{j}]")
    for i in range(n):
        for j in range(n):
            ffn.unit("one", (src, i, j), [((src, i, j), -1)], label=f"-Q[{i},{j}]")
    for i in range(n):
        for j in range(n):
            ffn.unit("one", ("fetched_op", i, j), [(("fetched_op", i, j), -1)], label=f"-F[{i},{j}]")
    built = ffn.build()
    for k in [k for k, v in _FFN_CACHE.items() if v[0] is not layout]:
        del _FFN_CACHE[k]
    _FFN_CACHE[key] = (layout, built)
    return built


_FFN_CACHE: dict[tuple[int, str], tuple[Layout, Any]] = {}


def doubling_layer(layout: Layout, l: int, max_positions: int) -> Layer:
    """Layer ``l`` of the parallel prefix product (see module docstring)."""
    src, dst = op_block(l), op_block(l + 1)
    head = copy_head(
        layout, src, "fetched_op", lag_bias(2**l, max_positions),
        name=f"lag{2**l}",
        description=f"fetch {src} at u-{2**l} (NULL when u < {2**l}); tent bias -|lag-{2**l}|",
    )
    return Layer(
        name=f"layer{l}",
        heads=(head,),
        ffn=product_ffn(layout, l),
        norms=(ProjectiveNorm(dst),),
        description=f"doubling step {l}: {dst} <- normalise({src}[u-{2**l}] @ {src}[u]); {src} <- 0",
    )


def colsum_readout(layout: Layout, name: str, M: np.ndarray, labels: Sequence[str], *, shape: tuple | None = None,
                   description: str = "", block: str = "op") -> Readout:
    """Readout ``z_c = sum_{i,j} Q[i,j] M[j,c]`` (= ``1^T Q M``) of the product held in ``block`` (the final
    ``op_block(L)``); total mass ``1^T Q 1`` when rows of M sum to 1."""
    n = layout.block(block).shape[0]
    k = M.shape[1]
    terms = [(c, (block, i, j), M[j, c]) for c in range(k) for i in range(n) for j in range(n) if M[j, c] != 0]
    return readout(layout, name, terms, shape or (k,), description=description, labels=labels)


# ---------------------------------------------------------------------------------------------- bounds
def exact_hmm_arrays(hmm: HMM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pi, A, B) as exact Fractions: exact HMMs as they are, float HMMs converted entry by entry (no row fix-up,
    so the construction computes exactly what the float HMM specifies)."""
    if hmm.exact:
        return hmm.initial_probs, hmm.transition_matrix, hmm.emission_probs
    return (as_frac_array(hmm.initial_probs, "initial_probs"), as_frac_array(hmm.transition_matrix, "transition_matrix"),
            as_frac_array(hmm.emission_probs, "emission_probs"))




def prefix_lambda(model: Any, hard_trace: Any, beta: float, prefix_layers: Sequence[int], n: int) -> np.ndarray:
    """Certified lower bounds ``lambda_u`` (N, P) on the 'exact fraction' of every position's ``op`` after the
    prefix layers under softmax attention: ``Q_soft >= lambda_u Q_hard`` entrywise (both normalised to entry sum 1).
    Then any readout ``1^T Q M / 1^T Q 1`` (M with rows summing to 1) is off by at most ``1 - lambda_u`` in max-abs.
    Computed from the HARD run's trace (``record="all"``, float64 or exact) and the softmax weights of the
    positional heads (closed form from their bias tables).

    Recursion (derivation in ``docs/constructions/exact_filter.md``): with w = softmax weight on the hard target t,
    ``lam_F = w lam_t``, ``R = min(1, lam_u R*_u + 1 - lam_u)``,
    ``s_hat = lam_F (lam_u m* + (1 - lam_u) C*_F) + (1 - lam_F) R``, ``lam_u <- lam_F lam_u m* / s_hat``,
    where m* = sum(F* Q*_u), C*_F = min(1, max column sum of F*), R*_u = max row sum of Q*_u (hard run; every
    matrix normalised to entry sum 1).
    """
    return lambda_from_inputs(prefix_bound_inputs(model, hard_trace, prefix_layers, n), beta)


def prefix_bound_inputs(model: Any, hard_trace: Any, prefix_layers: Sequence[int], n: int) -> list[dict]:
    """Per prefix layer, what the leakage recursion needs from the hard run: hard targets ``t`` (P,), the bias
    table (softmax weights for any beta) and ``m*``, ``R*``, ``C*`` (N, P). Memory O(N P n^2) per layer: no
    (P, P) attention map is formed."""
    lay = model.layout
    f_sl = lay["fetched_op"]
    N, P = hard_trace.after_attn[prefix_layers[0]].shape[:2] if prefix_layers else (1, 1)
    out = []
    for l in prefix_layers:
        head = model.layers[l].heads[0]
        if not head.positional:
            raise HmmtxError(f"leakage bound: head of {model.layers[l].name} is not purely positional")
        Q = as_float_array(hard_trace.after_attn[l][..., lay[op_block(l)]]).reshape(N, P, n, n)
        F = as_float_array(hard_trace.after_attn[l][..., f_sl]).reshape(N, P, n, n)
        X = as_float_array(hard_trace.after_ffn[l][..., lay[op_block(l + 1)]])
        Q_mass = Q.sum(axis=(-1, -2))
        F_mass = F.sum(axis=(-1, -2))
        bias = np.array([float(v) for v in head.rel_bias[:P]])
        if not all(Fraction(float(v)) == v for v in head.rel_bias[:P]):
            raise HmmtxError(f"leakage bound: the bias table of {model.layers[l].name} is not exact in float64")
        targets, unique = positional_targets(bias, P)
        if not unique:
            raise HmmtxError(f"leakage bound: the head of {model.layers[l].name} has tied maxima")
        out.append({
            "t": targets,
            "bias": bias,
            "m_star": X.sum(axis=-1) / (Q_mass * F_mass),  # mass of the product of the normalised matrices
            "R_star": Q.sum(axis=-1).max(axis=-1) / Q_mass,  # max row sum of normalised Q*
            "C_star": np.minimum(1.0, F.sum(axis=-2).max(axis=-1) / F_mass),  # max column sum of normalised F*
            "F_min": min_positive(F, (-1, -2)),  # smallest positive entries (underflow check)
            "Q_min": min_positive(Q, (-1, -2)),
        })
    return out


def target_weights(bias: np.ndarray, targets: np.ndarray, beta: float) -> np.ndarray:
    """Softmax weight on the hard target of every query u < P: ``1 / sum_{v<=u} exp(beta (b(u-v) - b(u-t)))``,
    in O(P) memory: ``log sum_{lag<=u} exp(beta b(lag))`` is a running log-sum-exp over lags."""
    P = len(targets)
    b = np.asarray(bias[:P], dtype=np.float64)
    lse = np.logaddexp.accumulate(beta * b)
    top = beta * b[np.arange(P) - np.asarray(targets)]
    return np.exp(np.minimum(0.0, top - lse))


def lambda_from_inputs(inputs: list[dict], beta: float) -> np.ndarray:
    """The leakage recursion of :func:`prefix_lambda` (vectorised over sequences and positions) for one beta."""
    N, P = inputs[0]["m_star"].shape if inputs else (1, 1)
    lam = np.ones((N, P))
    for d in inputs:
        w = target_weights(d["bias"], d["t"], beta)  # (P,)
        lam_F = w[None, :] * lam[:, d["t"]]
        R = np.minimum(1.0, lam * d["R_star"] + (1.0 - lam))
        s_hat = lam_F * (lam * d["m_star"] + (1.0 - lam) * d["C_star"]) + (1.0 - lam_F) * R
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(s_hat > 0, lam_F * lam * d["m_star"] / np.where(s_hat > 0, s_hat, 1.0), 0.0)
        lam = np.clip(v, 0.0, 1.0)
    return lam


def required_beta(model: Any, tokens: Any, target: float, *, first_output: int = 2, lo: float = 1e-3,
                  hi: float = 1e4, rel_tol: float = 1e-3, extra: Any = None) -> float:
    """The smallest inverse temperature (within ``rel_tol``) at which the certified softmax leakage of the prefix
    outputs (positions ``first_output..``, plus ``extra`` as in :func:`prefix_claimed_bound`) is at most ``target``
    for these tokens: the answer to "which beta do I need for error ``target``". Bisection on log beta; the
    leakage bound decreases monotonically with beta.
    The round-off bound comes on top (see :func:`constructions.roundoff.prefix_roundoff`)."""
    if not (0 < target < 1):
        raise HmmtxError(f"target error must lie in (0, 1), got {target!r}")
    ids = model.check_input_ids(model.codec.encode(tokens))
    tr = hard_trace_for_bound(model, ids)
    inputs = prefix_bound_inputs(model, tr, model.info.prefix_layers, model.info.n)

    def leak(b: float) -> float:
        lam = lambda_from_inputs(inputs, b)
        val = float((1.0 - lam[:, first_output:]).max())
        if extra is not None:
            val = max(val, extra(model, tr, lam, ids, b)[0])
        return val

    if leak(hi) > target:
        raise HmmtxError(f"even beta = {hi:g} leaves a certified leakage of {leak(hi):.3g} > target {target:g}")
    if leak(lo) <= target:
        return lo
    a, b = math.log(lo), math.log(hi)
    while b - a > math.log1p(rel_tol):
        mid = 0.5 * (a + b)
        if leak(math.exp(mid)) <= target:
            b = mid
        else:
            a = mid
    return math.exp(b)


def as_float_array(a: Any) -> np.ndarray:
    """float64 numpy copy of a torch tensor or an object array of Fractions."""
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy().astype(np.float64)
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype != object else np.vectorize(float, otypes=[np.float64])(a)


def hard_trace_for_bound(model: Any, ids: np.ndarray) -> Any:
    """The hard-attention float64 trace (``record="states"``: every layer's states, no (P, P) attention maps) of
    ``model``'s weights on ``ids`` (for the leakage bound and the underflow check)."""
    import torch

    hard = model if model.dtype == torch.float64 else model.materialise(torch.float64, model.device)
    with torch.no_grad():
        return hard.forward(ids, attention="hard", record="states")


def prefix_underflow(model: Any, inputs: list[dict], hard_trace: Any, mode: str, extra_pairs: Sequence = ()) -> str:
    """The no-underflow condition of the derived round-off bound (:func:`constructions.roundoff.underflow_check`)
    for the doubling products ``F[i,k] Q[k,j]``, the embedded weights and the readout terms ``Q[i,j] M[j,c]``."""
    from constructions.blocks import nonzeros

    pairs = [(f"layer{l}", d["F_min"], d["Q_min"]) for l, d in zip(model.info.prefix_layers, inputs)]
    emb = [abs(float(v)) for _, _, v in nonzeros(model.embedding.W_E)]
    pairs.append(("embedding", np.array([min(emb, default=np.inf)]), np.array([1.0])))
    L = len(model.info.prefix_layers)
    fin = as_float_array(hard_trace.residuals[-1][..., model.layout[op_block(L)]]) if L else None
    if fin is not None:
        qmin = min_positive(fin, (-1,))
        for name, r in model.readouts.items():
            vals = [abs(float(v)) for _, _, v in nonzeros(r.W_U)]
            pairs.append((f"readout {name}", qmin, np.array(min(vals, default=np.inf))))
    return underflow_check(list(pairs) + list(extra_pairs), mode)


def prefix_claimed_bound(model: Any, tokens: Any, mode: str, *, first_output: int = 2, extra: Any = None,
                         extra_osc: dict | None = None, extra_underflow: Any = None, trace: Any = None,
                         product_extra: float = 0.0) -> Any:
    """Generic claimed bound of a prefix construction whose outputs are ``1^T Q M``-type readouts of the final
    product at positions ``first_output..`` after the layers in ``model.info.prefix_layers``:

    * exact mode (hard attention): 0;
    * float modes: the round-off bound :func:`constructions.roundoff.prefix_roundoff` (derived for hard
      attention when the no-underflow check passes; its softmax mixing term is heuristic), plus for softmax the
      certified leakage ``max_u 1 - lambda_u`` of :func:`prefix_lambda`; capped at the trivial bound 1.

    ``extra(model, hard_trace, lam, ids, beta) -> (leakage, note)`` lets a construction add outputs of another form
    (H1's filtered belief); the larger leakage is reported. ``extra_osc`` / ``extra_underflow(model, trace)`` extend
    the round-off bound and its underflow check for those outputs.

    A compiled variant of a hard model (the standard-block compilation, ``constructions.standard_variants``) passes
    ``trace``: its own run in ``mode`` (same layout coordinates, every layer recorded), on which the no-underflow
    condition is then checked instead of the idealised hard float64 run; and ``product_extra``, a log-ratio added
    to every product (its gated-MLP activation term, heuristic).
    """
    from constructions.types import MODES, BoundReport

    if mode not in MODES:
        raise HmmtxError(f"mode must be one of {MODES}, got {mode!r}")
    ids = model.check_input_ids(model.codec.encode(tokens))
    P = ids.shape[1]
    n = model.info.n
    if mode == "exact":
        if model.attention != "hard":
            raise HmmtxError("exact mode runs hard attention only (softmax weights are not rational)")
        return BoundReport(0.0, 0.0, 0.0, 1.0, "exact rational arithmetic, hard attention: bit-identical", "exact")
    if trace is not None and model.attention != "hard":
        raise HmmtxError("prefix bound: a compiled run's trace is accepted for hard-attention models only")
    tr = hard_trace_for_bound(model, ids) if trace is None else trace
    ins = prefix_bound_inputs(model, tr, model.info.prefix_layers, n)
    why = prefix_underflow(model, ins, tr, mode, extra_underflow(model, tr) if extra_underflow else ())
    rb = prefix_roundoff(model, P, mode, extra_osc=extra_osc, valid=not why, why=why, product_extra=product_extra)
    leak = 0.0
    note = rb.note
    if model.attention == "softmax":
        lam = lambda_from_inputs(ins, model.beta)
        leak = float((1.0 - lam[:, first_output:]).max())
        note += f"; certified softmax leakage {leak:.3g} at beta={model.beta:g} (from the hard run)"
        if extra is not None:
            leak2, note2 = extra(model, tr, lam, ids, model.beta)
            leak = max(leak, leak2)
            note += "; " + note2
    return BoundReport(min(1.0, leak + rb.value), leak, rb.value, 1.0, note, rb.kind if rb.valid else "trivial")


__all__ = [
    "num_doubling_layers",
    "prefix_layout",
    "normalised",
    "embed_operators",
    "doubling_layer",
    "product_ffn",
    "colsum_readout",
    "op_block",
    "positional_targets",
    "prefix_underflow",
    "exact_hmm_arrays",
    "prefix_lambda",
    "prefix_bound_inputs",
    "lambda_from_inputs",
    "target_weights",
    "required_beta",
    "prefix_claimed_bound",
    "hard_trace_for_bound",
    "as_float_array",
]
