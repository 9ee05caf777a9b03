"""``adaptive-memory``: Wang & E (2024) Task II (adaptive memories, Type I and nested Type II), registry entry.

A reconstruction in the spirit of Wang & E (2024); the construction lives in :mod:`constructions.adaptive`
(``spec``: targets and the exact reference; ``model``: the Transformer; ``bound``: the claimed bound;
``necessity``: the measurements of ``hmmtx adaptive-table``). Docs: ``docs/constructions/adaptive_memory.md``.

Python API (also used by the Wang & E table reproductions)::

    from constructions.adaptive_memory import make_spec, build, reference, make_tokens
    spec = make_spec(kind="type2", V=3, lags="random", M=3, lag_range=8, rpe="log", readout="relu")
    model = build(spec, tokens=tok, attention="softmax", beta=4.0)
    out = model.run(tok, mode="float64").outputs       # y, memory, lag
    ref = reference(spec, tok, exact=True)             # AdaptiveReference(y, memory, lag), Fractions
    bound = model.claimed_bound(tok, "float64")        # BoundReport
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from constructions.adaptive.bound import claimed_bound
from constructions.adaptive.model import NAME, PROVENANCE, build
from constructions.adaptive.spec import AdaptiveSpec, make_spec, make_tokens, parse_tokens, reference
from constructions.registry import ConstructionEntry, Param, ProblemSize, VerifySweep, register
from hmm.errors import HmmtxError


def _fraction(text: str) -> Fraction:
    try:
        return Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        raise HmmtxError(f"{text!r} is not a number") from None


_PARAMS = (
    Param("kind", str, "type1", "target: type1 (lags of the current symbol) or type2 (nested lags)",
          choices=("type1", "type2")),
    Param("symbols", int, 3, "number V of lag symbols"),
    Param("lags", str, "random", "lag tables: 'random' or one table per memory, ';'-separated, entries ','-separated "
          "(type1: V entries; type2 memory k: V^k entries over (c_t, c_{t-t_1}, ...))"),
    Param("memories", int, 2, "number M of memories (with --lags random)"),
    Param("lag_range", int, 6, "longest lag T (with --lags random)"),
    Param("lag_seed", int, 0, "seed of the random lag tables"),
    Param("rpe", str, "log", "log: log-type RPE peak + DP slope; lin: lin-type RPE + DP with a quadratic position "
          "feature", choices=("log", "lin")),
    Param("readout", str, "relu", "readout f: relu (exact random ReLU net), identity (sum of memories), tanh "
          "(PL-approximated)", choices=("relu", "identity", "tanh")),
    Param("ffn_width", int, 16, "readout FFN width m"),
    Param("seed", int, 0, "seed of the random relu readout"),
    Param("peak", _fraction, Fraction(0), "sharpness P (log) or kappa (lin); 0: 2 T^2 (log) or 1 (lin)"),
    Param("pad", int, 0, "padding positions before the sequence (0: the lag range)"),
    Param("max_len", int, 0, "longest sequence (0: the input's length, at least 16)"),
)


def spec_from_params(params: dict) -> tuple[AdaptiveSpec, int]:
    """(spec, max_len) from the registry parameters (CLI names)."""
    p = {q.name: q.default for q in _PARAMS}
    p.update(params)
    spec = make_spec(kind=p["kind"], V=p["symbols"], lags=p["lags"], M=p["memories"], lag_range=p["lag_range"],
                     lag_seed=p["lag_seed"], rpe=p["rpe"], readout=p["readout"], ffn_width=p["ffn_width"],
                     seed=p["seed"], peak=p["peak"], pad=p["pad"])
    max_len = p["max_len"]
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 0:
        raise HmmtxError(f"--max-len={max_len!r} must be an integer >= 0")
    return spec, int(max_len)


def _build_entry(source: Any, tokens: Any, *, attention: str = "hard", beta: float | None = None, **params: Any):
    spec, max_len = spec_from_params(params)
    T = 0 if tokens is None else np.asarray(tokens.symbols if hasattr(tokens, "symbols") else tokens[0]).shape[-1]
    return build(spec, max_len=max(max_len or 16, T), tokens=tokens, attention=attention, beta=beta)


def _reference_entry(source: Any, tokens: Any, *, exact: bool = False, **params: Any) -> dict:
    spec, _ = spec_from_params(params)
    ref = reference(spec, tokens, exact=exact)  # tanh: y in float64 (not rational), memory and lag exact
    if exact:
        lag = np.vectorize(lambda v: Fraction(int(v)), otypes=[object])(ref.lag)
    else:
        lag = ref.lag.astype(np.float64)
    return {"y": ref.y, "memory": ref.memory, "lag": lag}


def _size(source: Any, tokens: Any) -> ProblemSize:
    """No hidden states; the length is the sequence's (the exact-reference rule of the registry)."""
    return ProblemSize(None, int(np.asarray(tokens.symbols).shape[-1]))


def estimate_bytes(source: Any, tokens: Any, *, mode: str = "float64", **params: Any) -> float:
    """Rough memory (bytes) of building and running the model for ``tokens`` (N sequences of T; None: one of
    ``max_len``), without building it: ``P = pad + max(max_len or 16, T)`` positions, width ``D`` (the layout),
    ``L`` layers, ``M`` heads, FFN width ``F <= max(m, 2 sum_k |table_k|)``::

        8 bytes x [P D + 2 L F D  (weights)  +  N ((L + 1) P (D + F)  (residuals, FFN)  +  2 M P^2  (scores))]

    times 12 in exact mode (Fraction object arrays). The registry's ``estimate_bytes`` hook."""
    from constructions.adaptive.model import make_layout, schedule

    spec, max_len = spec_from_params(params)
    shape = (1, 0) if tokens is None else np.asarray(tokens.symbols).reshape(-1, np.asarray(tokens.symbols).shape[-1]).shape
    N, T = int(shape[0]), int(shape[1])
    P = spec.padding + max(max_len or 16, T)
    D, L = make_layout(spec).width, schedule(spec).layers
    F = max(spec.ffn_width, 2 * sum(len(g.table) for g in spec.lags))
    total = 8.0 * (P * D + 2 * L * F * D + N * ((L + 1) * P * (D + F) + 2 * spec.M * P * P))
    return total * (12 if mode == "exact" else 1)


def _register() -> ConstructionEntry:
    from constructions.adaptive.sweep import SWEEP

    return register(ConstructionEntry(
        name=NAME,
        summary="W2 (Wang & E Task II): FFN computes lags, DP + lin/log RPE heads fetch x_{t-g(x)}; Type I and nested Type II",
        provenance=PROVENANCE,
        input_kind="none",
        build=_build_entry,
        reference=_reference_entry,
        parse_tokens=parse_tokens,
        params=_PARAMS,
        outputs=("y", "memory", "lag"),
        default_tokens="0:1/2 0:-1 0:1/4 0:0 0:1 0:-1/2 0:3/4 0:-1/4",
        modes=("exact", "float64", "float32"),
        bound="hard: 0 (bit-exact); softmax: leakage E/(1+E) <= u e^(-beta gap), x 2 xmax x readout Lipschitz, + FFN "
              "error + round-off allowance",
        bound_covers=("y", "memory", "lag"),
        size=_size,
        estimate_bytes=estimate_bytes,
        verify=VerifySweep(betas=(), custom=SWEEP),
    ))


ENTRY = _register()

__all__ = ["ENTRY", "build", "reference", "make_spec", "make_tokens", "parse_tokens", "claimed_bound", "spec_from_params",
           "estimate_bytes", "AdaptiveSpec"]
