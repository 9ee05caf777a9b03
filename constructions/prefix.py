"""Shared parallel-prefix operator-product machinery (H1 exact filter, H3 Bayes multi-task, and any construction
whose positions hold matrices to be multiplied left to right).

Positions: 0 = NULL sink holding the identity, then one operator per position. After the doubling layers
``l = 0 .. L-1`` position ``u`` holds (up to a positive scale) the ordered product of the operators at positions
``1 .. u`` (``2^L >= u``). Layer l:

* one purely positional head, tent bias ``b(lag) = -|lag - 2^l|``: hard attention fetches position ``u - 2^l``
  (which holds the product over ``(u - 2^{l+1}, u - 2^l]``) into ``fetched_op``; when ``u < 2^l`` the largest
  available lag ``u`` (position 0, the NULL identity) wins automatically;
* a bilinear FFN (width ``n^3 + 2 n^2``) writes ``F Q - Q`` into ``op`` (so ``op`` becomes ``F Q``) and ``-F`` into
  ``fetched_op`` (clearing it for the next layer); the ``-Q``/``-F`` terms are products with the constant ``one``;
* **projective normalisation (non-standard)** of ``op`` by its entry sum.

The module also computes the softmax-leakage bound (see ``docs/constructions/exact_filter.md``) and the stated
floating-point allowance shared by the prefix constructions.
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

#: Multiplier of the stated round-off allowance (see :func:`roundoff_allowance`).
ROUNDOFF_C = 16


def num_doubling_layers(max_positions: int) -> int:
    """``L = ceil(log2(P_max - 1))``: enough doubling layers for position ``P_max - 1`` to cover ``1 .. P_max-1``."""
    if max_positions < 2:
        raise HmmtxError(f"prefix product needs at least 2 positions (NULL and one operator), got {max_positions}")
    return max(1, math.ceil(math.log2(max_positions - 1)))


def prefix_layout(n: int, V: int, *, op_desc: str, flags: Sequence[str] = ("is_null", "is_bos")) -> Layout:
    """The shared blocks (not frozen, so a construction can append its own): ``op`` (n,n), ``fetched_op`` (n,n),
    ``one``, the given 0/1 flags, and ``token`` (V one-hot of the observation at that position)."""
    lay = Layout()
    lay.add("op", (n, n), op_desc)
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


def product_ffn(layout: Layout) -> Any:
    """The bilinear FFN of a doubling layer (the same for every layer; built once per layout and shared)."""
    cached = _FFN_CACHE.get(id(layout))
    if cached is not None and cached[0] is layout:
        return cached[1]
    n = layout.block("op").shape[0]
    ffn = BilinearBuilder(layout)
    # Proof: the new op[i,j] = Q[i,j] + (sum_k F[i,k] Q[k,j] - Q[i,j]) = (F Q)[i,j]; fetched becomes F - F = 0.
    for i in range(n):
        for j in range(n):
            for k in range(n):
                ffn.unit(("fetched_op", i, k), ("op", k, j), [(("op", i, j), 1)], label=f"F[{i},{k}]*Q[{k},{j}]")
    for i in range(n):
        for j in range(n):
            ffn.unit("one", ("op", i, j), [(("op", i, j), -1)], label=f"-Q[{i},{j}]")
    for i in range(n):
        for j in range(n):
            ffn.unit("one", ("fetched_op", i, j), [(("fetched_op", i, j), -1)], label=f"-F[{i},{j}]")
    built = ffn.build()
    _FFN_CACHE.clear()
    _FFN_CACHE[id(layout)] = (layout, built)
    return built


_FFN_CACHE: dict[int, tuple[Layout, Any]] = {}


def doubling_layer(layout: Layout, l: int, max_positions: int) -> Layer:
    """Layer ``l`` of the parallel prefix product (see module docstring)."""
    head = copy_head(
        layout, "op", "fetched_op", lag_bias(2**l, max_positions),
        name=f"lag{2**l}",
        description=f"fetch op at u-{2**l} (NULL when u < {2**l}); tent bias -|lag-{2**l}|",
    )
    return Layer(
        name=f"layer{l}",
        heads=(head,),
        ffn=product_ffn(layout),
        norms=(ProjectiveNorm("op"),),
        description=f"doubling step {l}: op <- normalise(op[u-{2**l}] @ op[u])",
    )


def colsum_readout(layout: Layout, name: str, M: np.ndarray, labels: Sequence[str], *, shape: tuple | None = None,
                   description: str = "") -> Readout:
    """Readout ``z_c = sum_{i,j} op[i,j] M[j,c]`` (= ``1^T Q M``); total mass ``1^T Q 1`` when rows of M sum to 1."""
    n = layout.block("op").shape[0]
    k = M.shape[1]
    terms = [(c, ("op", i, j), M[j, c]) for c in range(k) for i in range(n) for j in range(n) if M[j, c] != 0]
    return readout(layout, name, terms, shape or (k,), description=description, labels=labels)


# ---------------------------------------------------------------------------------------------- bounds
def exact_hmm_arrays(hmm: HMM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pi, A, B) as exact Fractions: exact HMMs as they are, float HMMs converted entry by entry (no row fix-up,
    so the construction computes exactly what the float HMM specifies)."""
    if hmm.exact:
        return hmm.initial_probs, hmm.transition_matrix, hmm.emission_probs
    return (as_frac_array(hmm.initial_probs, "initial_probs"), as_frac_array(hmm.transition_matrix, "transition_matrix"),
            as_frac_array(hmm.emission_probs, "emission_probs"))


def roundoff_allowance(layers: float, n: int, positions: int, eps: float) -> float:
    """Stated floating-point allowance for the max-abs output error of a prefix construction:
    ``ROUNDOFF_C * (layers + 1) * (n + log2(positions) + 4) * eps``. ``layers`` may be an *effective* layer count
    that weights each layer by its cancellation factor (see :func:`cancellation_layers`).

    Reasoning (a heuristic allowance, not a proof): each layer's product of two non-negative matrices has entrywise
    relative error <= ``n eps`` (dot products of n non-negative terms), the normalisation and the residual update
    ``Q + (FQ - Q)`` add a few eps, softmax mixing sums up to ``positions`` terms (``log2`` growth for pairwise sums
    is what torch uses in practice), and relative errors of a product add along the ``layers`` levels. The constant
    ROUNDOFF_C = 16 is a safety factor; the tests check measured <= allowance on mixing HMMs.
    """
    return float(ROUNDOFF_C * (layers + 1) * (n + math.log2(max(positions, 2)) + 4) * eps)


def cancellation_layers(model: Any, hard_trace: Any, n: int) -> tuple[float, float]:
    """``(effective layers, worst factor)`` for :func:`roundoff_allowance` from the hard float64 run.

    The residual update ``Q + (F Q - Q)`` cancels: with ``Q`` and ``F`` normalised to entry sum 1, the product has
    mass ``m* <= 1`` and the update's rounding error is ``~ eps (1 + m*)`` against a result of mass ``m*``, a
    relative error amplified by ``(1 + 1/m*) / 2 >= 1``. Each prefix layer counts with its worst factor over
    positions; the other layers count 1. Ill-conditioned HMMs (near-deterministic A and B read against their grain)
    have ``m*`` as small as the smallest transition or emission probability, and the allowance grows accordingly.
    """
    prefix_layers = list(model.info.prefix_layers)
    ins = prefix_bound_inputs(model, hard_trace, prefix_layers, n)
    factors = []
    for d in ins:
        m = np.asarray(d["m_star"], dtype=np.float64)
        m = m[np.isfinite(m)]
        factors.append(float(((1.0 + 1.0 / np.maximum(m, 1e-300)) / 2.0).max()) if m.size else 1.0)
    eff = float(sum(factors)) + (len(model.layers) - len(prefix_layers))
    return eff, max(factors, default=1.0)


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
    """Per prefix layer, what the leakage recursion needs from the hard run: hard targets ``t`` (P,), the score
    gaps of each query (to get softmax weights for any beta), and ``m*``, ``R*``, ``C*`` (N, P)."""
    lay = model.layout
    op_sl, f_sl = lay["op"], lay["fetched_op"]
    N, P = hard_trace.residuals[0].shape[:2]
    out = []
    for l in prefix_layers:
        head = model.layers[l].heads[0]
        if not head.positional:
            raise HmmtxError(f"leakage bound: head of {model.layers[l].name} is not purely positional")
        Q = as_float_array(hard_trace.residuals[l][..., op_sl]).reshape(N, P, n, n)
        F = as_float_array(hard_trace.after_attn[l][..., f_sl]).reshape(N, P, n, n)
        X = as_float_array(hard_trace.after_ffn[l][..., op_sl])
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
        })
    return out


def target_weights(bias: np.ndarray, targets: np.ndarray, beta: float) -> np.ndarray:
    """Softmax weight on the hard target of every query u < P: ``1 / sum_{v<=u} exp(beta (b(u-v) - b(u-t)))``."""
    P = len(targets)
    lag = np.arange(P)[:, None] - np.arange(P)[None, :]
    sc = np.where(lag >= 0, bias[np.clip(lag, 0, P - 1)], -np.inf)
    top = sc[np.arange(P), targets][:, None]
    with np.errstate(over="ignore"):
        return 1.0 / np.exp(beta * (sc - top)).sum(axis=1)


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
    The round-off allowance comes on top (see :func:`roundoff_allowance`)."""
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
    """The hard-attention float64 trace (record="all") of ``model``'s weights on ``ids`` (for the leakage bound)."""
    import torch

    hard = model if model.dtype == torch.float64 else model.materialise(torch.float64, model.device)
    with torch.no_grad():
        return hard.forward(ids, attention="hard", record="all")


def prefix_claimed_bound(model: Any, tokens: Any, mode: str, *, first_output: int = 2, extra: Any = None) -> Any:
    """Generic claimed bound of a prefix construction whose outputs are ``1^T Q M``-type readouts of ``op`` at
    positions ``first_output..`` after the layers in ``model.info.prefix_layers``:

    * exact mode (hard attention): 0;
    * float modes: :func:`roundoff_allowance` (+ leakage for softmax: ``max_u 1 - lambda_u`` of
      :func:`prefix_lambda`), capped at the trivial bound 1.

    ``extra(model, hard_trace, lam, ids, beta) -> (leakage, note)`` lets a construction add outputs of another form
    (H1's filtered belief); the larger leakage is reported.
    """
    import torch

    from constructions.transformer import MODES, BoundReport

    if mode not in MODES:
        raise HmmtxError(f"mode must be one of {MODES}, got {mode!r}")
    ids = model.check_input_ids(model.codec.encode(tokens))
    P = ids.shape[1]
    n = model.info.n
    L = len(model.layers)
    if mode == "exact":
        if model.attention != "hard":
            raise HmmtxError("exact mode runs hard attention only (softmax weights are not rational)")
        return BoundReport(0.0, 0.0, 0.0, 1.0, "exact rational arithmetic, hard attention: bit-identical")
    eps = float(torch.finfo(torch.float64 if mode == "float64" else torch.float32).eps)
    tr = hard_trace_for_bound(model, ids)
    L_eff, worst = cancellation_layers(model, tr, n)
    rnd = roundoff_allowance(L_eff, n, P, eps)
    leak = 0.0
    note = (f"round-off allowance {rnd:.3g} (L={L}, cancellation-weighted {L_eff:.3g}, worst factor {worst:.3g}, "
            f"n={n}, P={P}, eps={eps:.3g})")
    if model.attention == "softmax":
        lam = prefix_lambda(model, tr, model.beta, model.info.prefix_layers, n)
        leak = float((1.0 - lam[:, first_output:]).max())
        note += f"; certified softmax leakage {leak:.3g} at beta={model.beta:g} (from the hard run)"
        if extra is not None:
            leak2, note2 = extra(model, tr, lam, ids, model.beta)
            leak = max(leak, leak2)
            note += "; " + note2
    return BoundReport(min(1.0, leak + rnd), leak, rnd, 1.0, note)


__all__ = [
    "ROUNDOFF_C",
    "num_doubling_layers",
    "prefix_layout",
    "normalised",
    "embed_operators",
    "doubling_layer",
    "product_ffn",
    "colsum_readout",
    "roundoff_allowance",
    "cancellation_layers",
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
