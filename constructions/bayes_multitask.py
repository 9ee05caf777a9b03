"""H3: the exact Bayes multi-task predictor (task family known, task unknown) by block-diagonal operator products.

Provenance: the multi-task in-context framing (``BOS demo SEP demo ... SEP test``, task fixed per context, hidden
state reset at SEP) follows Hao, Ye, Han & Zhang 2025 (in the spirit of their setup; their full text was not
available). The machinery is the same parallel-prefix product as H1 (:mod:`constructions.prefix`; our
reconstruction of Hu, Liu & Jin 2024 / Liu et al. 2023), applied on the joint (task, state) space.

Joint space of size ``n = sum_k S_k`` (blocks in task order, :attr:`hmm.mixture.HMMMixture.block_slices`):

* observation ``x``: ``blockdiag_k(G^k_x)`` with ``G^k_x = diag(B_k[:, x]) A_k``;
* SEP: ``blockdiag_k(1 pi_k^T)`` (resets the hidden state, keeps each task's mass);
* BOS: ``1 (rho ⊗ pi)^T`` (block k of every row is ``rho_k pi_k``); NULL: ``I``.

After the doubling layers position ``u`` holds ``∝ 1 alpha^T`` with ``alpha[k, i] = P(items so far, task k,
z_next = i)``. Readouts (``1^T Q M`` normalised): ``next_token`` (M = stacked B) = the Bayes predictive;
``task_posterior`` (M = block indicator) = block masses; ``state_predicted`` (M = I) = joint (task, state)
posterior in block layout (within block k it is ``P(task k) * P(z_next | task k, items)``).
Task identity is readable only once the position's window ``(u - 2^L, u]`` covers the demonstrations.
"""

from __future__ import annotations

from fractions import Fraction
from dataclasses import dataclass
from typing import Any

import numpy as np

from constructions.blocks import as_frac_array, frac_zeros
from constructions.prefix import (
    PrefixInfo,
    exact_hmm_arrays,
    colsum_readout,
    doubling_layer,
    embed_operators,
    num_doubling_layers,
    op_block,
    prefix_claimed_bound,
    prefix_layout,
)
from constructions.estimates import prefix_bytes
from constructions.registry import ConstructionEntry, ProbeHooks, VerifySweep, register
from constructions.transformer import BoundReport, ConstructedTransformer, check_attention, spec_for
from hmm.errors import HmmtxError
from hmm.mixture import SEP, HMMMixture, flatten_context, validate_context

NAME = "bayes-multitask"
PROVENANCE = (
    "multi-task in-context framing in the spirit of Hao et al. 2025; exact Bayes predictive by block-diagonal "
    "parallel-prefix operator products (our reconstruction of Hu, Liu & Jin 2024 / Liu et al. 2023)"
)
FAMILIES = ("dirichlet", "sticky", "cyclic", "low_rank", "observable")


def as_contexts(tokens: Any, V: int, max_len: int | None = None) -> list[list[np.ndarray]]:
    """Normalise H3 tokens to a list of contexts (each a list of segments): accepts one context (a list of 1-D
    segments, or a 1-D array = one segment) or a list of contexts."""
    def is_segment(s: Any) -> bool:
        a = np.asarray(s, dtype=object) if not isinstance(s, np.ndarray) else s
        return a.ndim == 1 and all(not isinstance(v, (list, tuple, np.ndarray)) for v in a)

    if isinstance(tokens, np.ndarray) and tokens.ndim == 1 and tokens.dtype != object:
        ctxs = [[tokens]]
    elif isinstance(tokens, (list, tuple)) and tokens and all(is_segment(s) for s in tokens):
        ctxs = [list(tokens)]
    elif isinstance(tokens, (list, tuple)) and tokens:
        ctxs = [list(c) if isinstance(c, (list, tuple)) else [c] for c in tokens]
    else:
        raise HmmtxError("bayes-multitask: tokens must be a context (list of token segments) or a list of contexts")
    return [validate_context(c, V, max_len=max_len) for c in ctxs]


def stream_items(tokens: Any, V: int, max_len: int | None = None) -> np.ndarray:
    """Flattened streams (N, n_items) with SEP marked as :data:`hmm.mixture.SEP`; contexts must share SEP positions."""
    streams = [flatten_context(c) for c in as_contexts(tokens, V, max_len)]
    first = streams[0]
    for i, s in enumerate(streams[1:], 1):
        if s.shape != first.shape or not np.array_equal(s == SEP, first == SEP):
            raise HmmtxError(f"bayes-multitask: context {i} has a different segment structure than context 0 "
                             "(a batch must share stream length and SEP positions)")
    return np.stack(streams)


class MultitaskCodec:
    """Context(s) -> ids ``[NULL, BOS, items..]`` (x -> x, NULL = V, BOS = V + 1, SEP = V + 2)."""

    def __init__(self, V: int, max_len: int) -> None:
        self.V, self.max_len = V, max_len

    def encode(self, tokens: Any) -> np.ndarray:
        items = stream_items(tokens, self.V, self.max_len)
        ids = np.where(items == SEP, self.V + 2, items)
        N = ids.shape[0]
        head = np.tile(np.array([[self.V, self.V + 1]], dtype=np.int64), (N, 1))
        return np.concatenate([head, ids], axis=1).astype(np.int64)

    def decode(self, model: ConstructedTransformer, trace: Any, tokens: Any) -> dict:
        single = len(as_contexts(tokens, self.V)) == 1
        out = {name: model.read(trace, name, slice(2, None)) for name in ("next_token", "task_posterior", "state_predicted")}
        out = {"next_token_probs": out["next_token"], "task_posterior": out["task_posterior"],
               "state_predicted": out["state_predicted"]}
        return {k: v[0] for k, v in out.items()} if single else out


@dataclass(frozen=True)
class MultitaskInfo(PrefixInfo):
    """Model metadata (``model.info``): :class:`~constructions.prefix.PrefixInfo` plus ``mixture`` (the task mixture the weights were built from)."""

    mixture: Any = None


def build(
    mixture: HMMMixture,
    max_len: int,
    attention: str = "hard",
    beta: float | None = None,
    *,
    dtype: Any = None,
    device: Any = None,
) -> ConstructedTransformer:
    """Build H3 for streams (observations and SEPs, BOS excluded) of up to ``max_len`` items.

    Size: ``L = ceil(log2(max_len + 1))`` layers, 1 head each, width ``3 n^2 + V + 4`` (n = sum_k S_k), FFN width
    ``n^3 + 2 n^2``.
    """
    import torch

    if not isinstance(mixture, HMMMixture):
        raise HmmtxError(f"bayes-multitask: expected an HMMMixture (--tasks file), got {type(mixture).__name__}")
    if not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise HmmtxError(f"bayes-multitask: max_len must be a positive integer, got {max_len!r}")
    beta = check_attention(attention, beta)
    # entry by entry, no row fix-up: the construction computes exactly what a float mixture specifies (as H1)
    rho = mixture.task_prior if mixture.exact else as_frac_array(mixture.task_prior, "task_prior")
    tasks = [exact_hmm_arrays(h) for h in mixture.tasks]
    slices = mixture.block_slices
    n, V, K = sum(mixture.state_sizes), mixture.num_obs, mixture.num_tasks
    P = int(max_len) + 2
    L = num_doubling_layers(P)

    lay = prefix_layout(n, V, op_desc="held block operator product Q over (task, state); finally ∝ 1 alpha^T",
                        flags=("is_null", "is_bos", "is_sep"))
    lay.freeze()

    def blockdiag(make: Any) -> np.ndarray:
        M = frac_zeros(n, n)
        for k, sl in enumerate(slices):
            M[sl, sl] = make(k)
        return M

    rows = []
    for x in range(V):
        # G^k_x = D_x A_k on block k
        op = blockdiag(lambda k: np.array([[tasks[k][2][i, x] * tasks[k][1][i, j] for j in range(len(tasks[k][0]))]
                                            for i in range(len(tasks[k][0]))], dtype=object))
        rows.append({"name": f"x={x}", "op": op, "token": x})
    eye = frac_zeros(n, n)
    for i in range(n):
        eye[i, i] = Fraction(1)
    start = np.concatenate([np.array([rho[k] * p for p in tasks[k][0]], dtype=object) for k in range(K)])
    rows.append({"name": "NULL", "op": eye, "flags": ["is_null"]})
    rows.append({"name": "BOS", "op": np.array([list(start) for _ in range(n)], dtype=object), "flags": ["is_bos"]})
    rows.append({"name": "SEP", "op": blockdiag(lambda k: np.array([list(tasks[k][0]) for _ in tasks[k][0]], dtype=object)),
                 "flags": ["is_sep"]})
    emb = embed_operators(lay, rows)
    layers = [doubling_layer(lay, l, P) for l in range(L)]

    B_stack = np.concatenate([tasks[k][2] for k in range(K)], axis=0)
    task_ind = frac_zeros(n, K)
    for k, sl in enumerate(slices):
        for j in range(sl.start, sl.stop):
            task_ind[j, k] = Fraction(1)
    joint_labels = [f"k={k},z={i}" for k in range(K) for i in range(mixture.state_sizes[k])]
    readouts = [
        colsum_readout(lay, "next_token", B_stack, [f"x={v}" for v in range(V)], description="Bayes next-token masses",
                       block=op_block(L)),
        colsum_readout(lay, "task_posterior", task_ind, [f"task {k}" for k in range(K)], description="task block masses",
                       block=op_block(L)),
        colsum_readout(lay, "state_predicted", eye, joint_labels, description="(task, next state) masses",
                       block=op_block(L)),
    ]
    spec = spec_for(NAME, lay, layers, max_positions=P, attention=attention, beta=beta, provenance=PROVENANCE,
                    parameters={"K": K, "state_sizes": list(mixture.state_sizes), "n": n, "V": V, "max_len": int(max_len)})
    return ConstructedTransformer(
        lay, emb, layers, readouts, spec, MultitaskCodec(V, int(max_len)),
        bound_fn=claimed_bound, attention=attention, beta=beta,
        dtype=torch.float64 if dtype is None else dtype, device=device,
        info=MultitaskInfo(tuple(range(L)), n, mixture),
    )


def claimed_bound(model: ConstructedTransformer, tokens: Any, mode: str = "float64", *, trace: Any = None,
                  product_extra: float = 0.0) -> BoundReport:
    """Same bound as H1's next-token bound (every H3 output is a ``1^T Q M`` readout): 0 exact; round-off
    bound in float (:func:`constructions.roundoff.prefix_roundoff`: derived for hard attention); plus the certified
    softmax leakage (capped at 1). ``trace`` / ``product_extra``: a compiled variant's own run and per-product
    term (:func:`~constructions.prefix.prefix_claimed_bound`)."""
    return prefix_claimed_bound(model, tokens, mode, first_output=2, trace=trace, product_extra=product_extra)


def required_beta(model: ConstructedTransformer, tokens: Any, target: float) -> float:
    """Smallest beta (within 0.1%) whose certified softmax leakage on every output is at most ``target``."""
    from constructions.prefix import required_beta as _req

    return _req(model, tokens, target, first_output=2)


# ---------------------------------------------------------------------------------------------- registry
def _stream_len(tokens: Any) -> int:
    ctxs = tokens if (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], (list, tuple))) else [tokens]
    lens = []
    for c in ctxs:
        segs = [c] if isinstance(c, np.ndarray) and c.ndim == 1 and c.dtype != object else list(c)
        lens.append(sum(len(s) for s in segs) + len(segs) - 1)
    return max(lens)


def _build_entry(mixture: HMMMixture, tokens: Any, *, attention: str = "hard", beta: float | None = None) -> ConstructedTransformer:
    T = 16 if tokens is None else _stream_len(tokens)
    return build(mixture, max(T, 1), attention, beta)


def _reference_entry(mixture: HMMMixture, tokens: Any, *, exact: bool) -> dict:
    from hmm.mixture import bayes_predictive, bayes_predictive_exact

    ctxs = as_contexts(tokens, mixture.num_obs)
    res = [bayes_predictive_exact(mixture, c) if exact else bayes_predictive(mixture, c) for c in ctxs]
    pick = lambda f: getattr(res[0], f) if len(res) == 1 else np.stack([getattr(r, f) for r in res])  # noqa: E731
    return {"next_token_probs": pick("next_token_probs"), "task_posterior": pick("task_posterior"),
            "state_predicted": pick("state_predicted")}


def _parse_tokens(text: str) -> list[np.ndarray]:
    from hmm.io import parse_context

    return parse_context(text)


def _probe_build(mixture: HMMMixture, length: int, r: int | None = None) -> ConstructedTransformer:
    """``hmmtx probe`` subject: sized for in-context streams of ``length`` items (BOS included)."""
    return build(mixture, length - 1)


def _probe_tokens(contexts: list) -> Any:
    from constructions.icl import ICLContexts

    return ICLContexts(contexts)


ENTRY = register(
    ConstructionEntry(
        name=NAME,
        estimate_bytes=prefix_bytes,
        summary="H3: exact Bayes multi-task predictive (task posterior, joint state posterior) by block-diagonal prefix products",
        provenance=PROVENANCE,
        input_kind="mixture",
        build=_build_entry,
        reference=_reference_entry,
        parse_tokens=_parse_tokens,
        families=FAMILIES,
        outputs=("next_token_probs", "task_posterior", "state_predicted"),
        default_tokens="0 1 | 1 0 | 0",
        bound="certified softmax leakage (a posteriori from the hard run) + derived relative round-off bound (hard attention)",
        probe=ProbeHooks("contexts", _probe_build, _probe_tokens),
        verify=VerifySweep(exact_at_scale=True),  # flint exact reference: verify --full checks S = 8-16 exactly
    )
)

__all__ = ["build", "claimed_bound", "required_beta", "MultitaskCodec", "as_contexts", "stream_items", "ENTRY",
           "NAME", "PROVENANCE"]
