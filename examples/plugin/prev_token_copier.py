"""An hmmtx plugin built from scratch: the previous-k-token copier (tutorial: ``docs/extending.md``).

One layer, one positional attention head with the tent bias ``b(lag) = -|lag - k|``: at position ``u`` the head
attends to position ``u - k`` and copies its token into the residual block ``prev``; the readout ``copy`` reads
that block. Output ``copy_probs`` (T, V+1): row ``t`` is the one-hot of the token ``k`` positions before ``x_t``
(column ``V`` = "none": fewer than ``k`` tokens before it). This is the "previous-token head" of induction-head
circuits; a standard construction, written here as an example of the hmmtx contract.

Claimed bound (derived in ``docs/extending.md``): hard attention copies exactly (bound 0 in exact mode). Softmax
attention with inverse temperature ``beta`` puts weight ``w* = 1 / Z_u`` on the target, ``Z_u = sum_{lag=0..u}
exp(-beta (|lag - k| - |l* - k|))`` with ``l* = min(k, u)``; the output is a convex combination of one-hots, so
``max |output - target| <= 1 - 1/Z_u`` (the target coordinate misses ``1 - w*``, every other coordinate holds at
most ``1 - w*``). Float modes add a stated (heuristic) round-off allowance ``4 (P + 4) eps``.

Use it either way (nothing in hmmtx changes):

    hmmtx --plugin examples/plugin/prev_token_copier.py run prev-token-copier --hmm H.json --tokens "0 1 1 0" --k 2
    pip install ./examples/plugin    # entry point hmmtx.constructions -> this module; then: hmmtx run prev-token-copier ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from constructions.blocks import Embedding, Layer, copy_head, frac_zeros, lag_bias, readout
from constructions.layout import Layout
from constructions.registry import ConstructionEntry, Param, ProbeHooks, VerifySweep, register
from constructions.types import BoundReport, ModelInfo, check_attention
from hmm.errors import HmmtxError

NAME = "prev-token-copier"
PROVENANCE = "standard previous-token head (a tent-biased positional attention head), written as an hmmtx plugin example"


@dataclass(frozen=True)
class CopierInfo(ModelInfo):
    """Model metadata: ``k`` (the copied lag) and ``V`` (the alphabet size)."""

    k: int
    V: int


class CopierCodec:
    """Tokens (T,) or (N, T) in ``0..V-1`` -> ids ``[BOS, x_1, .., x_T]`` (BOS = 0, token v -> id v + 1);
    decodes ``copy_probs`` (T, V+1) (or (N, T, V+1)) from the ``copy`` readout at positions 1..T."""

    def __init__(self, V: int, max_len: int) -> None:
        self.V, self.max_len = V, max_len

    def encode(self, tokens: Any) -> np.ndarray:
        x = np.asarray(tokens)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.integer):
            raise HmmtxError(f"{NAME}: tokens must be a non-empty integer sequence, got shape {x.shape}")
        if x.min() < 0 or x.max() >= self.V:
            raise HmmtxError(f"{NAME}: tokens must lie in 0..{self.V - 1}")
        if x.shape[1] > self.max_len:
            raise HmmtxError(f"{NAME}: {x.shape[1]} tokens, the model covers {self.max_len}")
        return np.concatenate([np.zeros((x.shape[0], 1), dtype=np.int64), x.astype(np.int64) + 1], axis=1)

    def decode(self, model: Any, trace: Any, tokens: Any) -> dict:
        probs = model.read(trace, "copy", slice(1, None))
        return {"copy_probs": probs[0] if np.asarray(tokens).ndim == 1 else probs}


def build(V: int, k: int, max_len: int, attention: str = "hard", beta: float | None = None) -> Any:
    """The copier for alphabet size ``V``, lag ``k >= 1`` and up to ``max_len`` tokens (width ``2 (V + 1)``)."""
    from constructions.transformer import ConstructedTransformer, spec_for

    if not (isinstance(k, int) and k >= 1):
        raise HmmtxError(f"{NAME}: --k must be an integer >= 1, got {k!r}")
    beta = check_attention(attention, beta)
    lay = Layout()
    names = [f"x={v}" for v in range(V)] + ["none"]
    lay.add("tok", V + 1, "one-hot of this position's token (last: BOS)")
    lay.add("prev", V + 1, f"one-hot of the token {k} positions back (last: none)")
    lay.freeze()
    W_E = frac_zeros(V + 1, lay.width)
    W_E[0, lay.index("tok", V)] = Fraction(1)  # BOS
    for v in range(V):
        W_E[v + 1, lay.index("tok", v)] = Fraction(1)
    P = max_len + 1
    head = copy_head(lay, "tok", "prev", lag_bias(k, P), name="prev", description=f"attend to lag {k}, copy tok -> prev")
    layers = [Layer("copy", heads=(head,), description=f"previous-{k}-token head")]
    ro = readout(lay, "copy", [(v, ("prev", v), 1) for v in range(V + 1)], (V + 1,), description="copied token",
                 labels=names)
    spec = spec_for(NAME, lay, layers, max_positions=P, attention=attention, beta=beta, provenance=PROVENANCE,
                    parameters={"V": V, "k": k, "max_len": max_len})
    return ConstructedTransformer(lay, Embedding(W_E, tuple(["BOS"] + names[:V])), layers, [ro], spec,
                                  CopierCodec(V, max_len), bound_fn=claimed_bound, attention=attention, beta=beta,
                                  info=CopierInfo(k, V))


def leakage(P: int, k: int, beta: float) -> float:
    """``max_u (1 - 1/Z_u)`` over positions ``u = 1..P-1`` (see the module docstring); 0 for ``P <= 1``."""
    worst = 0.0
    for u in range(1, P):
        best = abs(min(k, u) - k)
        Z = math.fsum(math.exp(-beta * (abs(lag - k) - best)) for lag in range(u + 1))
        worst = max(worst, 1.0 - 1.0 / Z)
    return worst


def claimed_bound(model: Any, tokens: Any, mode: str = "float64") -> BoundReport:
    """Bound on ``max |copy_probs - reference|``: 0 (exact, hard), plus softmax leakage and float round-off."""
    P = int(np.asarray(tokens).shape[-1]) + 1
    leak = leakage(P, model.info.k, model.beta) if model.attention == "softmax" else 0.0
    eps = {"exact": 0.0, "float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}[mode]
    rnd = 4 * (P + 4) * eps
    return BoundReport(min(1.0, leak + rnd), leak, rnd, 1.0,
                       f"softmax leakage max_u (1 - 1/Z_u) = {leak:.3g}; heuristic round-off allowance {rnd:.2g}")


def reference(hmm: Any, tokens: Any, *, exact: bool, k: int = 1) -> dict:
    """``copy_probs`` (T, V+1): one-hot of ``x_{t-k}`` (column V when ``t - k < 1``); Fractions when ``exact``."""
    x = np.asarray(tokens)
    V = hmm.num_obs
    one, zero = (Fraction(1), Fraction(0)) if exact else (1.0, 0.0)
    rows = x.reshape(-1, x.shape[-1])
    out = np.full(rows.shape + (V + 1,), zero, dtype=object if exact else np.float64)
    for n, row in enumerate(rows):
        for t in range(len(row)):
            out[n, t, row[t - k] if t - k >= 0 else V] = one
    return {"copy_probs": out[0] if x.ndim == 1 else out}


def _build_entry(hmm: Any, tokens: Any, *, attention: str = "hard", beta: float | None = None, k: int = 1) -> Any:
    T = 8 if tokens is None else int(np.asarray(tokens).shape[-1])
    return build(hmm.num_obs, k, max(T, 1), attention, beta)


def estimate_bytes(hmm: Any, tokens: Any, *, mode: str = "float64", k: int = 1) -> float:
    """Rough memory (bytes) of building and running the copier on ``tokens`` (N sequences of T; None: 8 tokens),
    without building it: ``P = T + 1`` positions, width ``D = 2 (V + 1)``, one head::

        8 bytes x [(V + 1 + P) D  (weights, bias)  +  N (3 P D  (residuals)  +  2 P^2  (scores, weights))]

    times 12 in exact mode (Fraction object arrays). Lets ``hmmtx run/inspect`` refuse an oversized request."""
    x = np.zeros((1, 8)) if tokens is None else np.asarray(tokens)
    N, T = (int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1), int(x.shape[-1]) if x.ndim else 1
    P, D = T + 1, 2 * (hmm.num_obs + 1)
    total = 8.0 * ((hmm.num_obs + 1 + P) * D + N * (3 * P * D + 2 * P * P))
    return total * (12 if mode == "exact" else 1)


def _parse_tokens(text: str) -> np.ndarray:
    from hmm.io import parse_tokens

    return parse_tokens(text)


def _probe_build(hmm: Any, length: int, r: int | None = None) -> Any:
    return build(hmm.num_obs, 1 if r is None else r, max(length - 1, 1))


ENTRY = register(ConstructionEntry(
    name=NAME,
    summary="plugin example: previous-k-token copier (one tent-biased positional head)",
    provenance=PROVENANCE,
    input_kind="hmm",  # the HMM fixes the alphabet V (and gives verify and probe their token sequences)
    build=_build_entry,
    reference=reference,
    parse_tokens=_parse_tokens,
    params=(Param("k", int, 1, "copy the token k positions back (k >= 1)"),),
    families=("dirichlet", "sticky", "cyclic"),
    outputs=("copy_probs",),
    default_tokens="0 1 1 0",
    bound="exact under hard attention; softmax leakage max_u (1 - 1/Z_u) + heuristic round-off allowance",
    verify=VerifySweep(betas=(4.0,)),
    estimate_bytes=estimate_bytes,  # memory estimate: run/inspect refuse what cannot fit, before building
    probe=ProbeHooks("sequence", _probe_build),
))
