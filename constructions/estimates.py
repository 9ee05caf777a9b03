"""Memory estimates of the built-in constructions: the registry's ``estimate_bytes`` hooks.

``hmmtx run`` / ``inspect`` call a construction's hook (the contract field
:attr:`~constructions.registry.ConstructionEntry.estimate_bytes`) before building, and refuse in one line what
cannot fit. The formulas count weights + recorded residual streams + attention scores of a dense model of width
``D``, ``L`` layers, FFN width ``F`` over ``T`` stream positions, in float64 bytes; exact mode stores Fractions
(object arrays), counted at 12x. They are rough upper estimates from the sizes in the README's construction
table, not measurements.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

#: Exact mode stores Fraction object arrays: counted at this multiple of float64.
EXACT_FACTOR = 12


def stream_length(tokens: Any) -> int:
    """Stream positions of parsed tokens: a sequence (T,) or batch (N, T) -> T + 1 (BOS); a list of context
    segments -> their tokens + SEPs + BOS; 1 for formats this rough estimate does not know."""
    try:
        if isinstance(tokens, (list, tuple)) and tokens and all(isinstance(s, np.ndarray) for s in tokens):
            return sum(len(s) for s in tokens) + len(tokens) + 1
        arr = np.asarray(tokens) if tokens is not None else np.zeros(0)
        return int(arr.shape[-1]) + 1 if arr.ndim and arr.dtype != object else 1
    except Exception:  # noqa: BLE001 - an unknown token format: no length estimate
        return 1


def dense_model_bytes(*, D: float, L: int, F: float, T: int, mode: str) -> float:
    """``8 * (L (4 D^2 + 2 D F) + (L + 1) T (D + F) + L T^2)`` bytes (x12 in exact mode): weights, residual
    streams and FFN activations of every layer, and one (T, T) score map per layer."""
    total = 8.0 * (L * (4 * D * D + 2 * D * F) + (L + 1) * T * (D + F) + L * T * T)
    return total * (EXACT_FACTOR if mode == "exact" else 1)


def _positions(tokens: Any, params: dict) -> int:
    return max(stream_length(tokens), int(params.get("max_len") or 0))


def _sizes(source: Any) -> tuple[int, int]:
    """(S, V): total hidden states (summed over a mixture's tasks) and the alphabet size."""
    if source is None:
        return 1, 1
    S = sum(getattr(source, "state_sizes", ())) or getattr(source, "num_states", 1)
    return S, getattr(source, "num_obs", 1)


def prefix_bytes(source: Any, tokens: Any, *, mode: str = "float64", extra_width: Callable[[int], int] | None = None,
                 **params: Any) -> float:
    """exact-filter (H1) and bayes-multitask (H3): ``D = 2 S^2 + 4 S + 2 V + 16``, ``L = ceil(log2(T + 1)) + 2``,
    ``F = 2 D``."""
    S, V = _sizes(source)
    T = _positions(tokens, params)
    D = 2 * S * S + 4 * S + 2 * V + 16
    wide = D + (extra_width(T) if extra_width else 0)
    return dense_model_bytes(D=wide, L=math.ceil(math.log2(T + 1)) + 2, F=2 * D, T=T, mode=mode)


def window_bytes(source: Any, tokens: Any, *, mode: str = "float64", extra_width: Callable[[int], int] | None = None,
                 **params: Any) -> float:
    """window (H2): lookup readout ``D = S^2 + (r + 1)(V + 2) + 16``, ``L = ceil(log2(r + 1)) + 2``,
    ``F = 2 V^r + 2 S^2``; product readout (the vector chain, no V^r table): ``D`` plus ``(r + 2) S``,
    ``L = ceil(log2(r + 1)) + r + 1``, ``F = 2 S (V + 1) + 2 S^2``."""
    S, V = _sizes(source)
    T = _positions(tokens, params)
    r = int(params.get("r", 1) or 1)
    lookup = str(params.get("readout", "lookup")) == "lookup"
    F = (2 * float(V) ** r if lookup else 2.0 * S * (V + 1)) + 2 * S * S
    D = S * S + (r + 1) * (V + 2) + 16 + (0 if lookup else (r + 2) * S) + (extra_width(T) if extra_width else 0)
    L = math.ceil(math.log2(r + 1)) + (2 if lookup else r + 1)
    return dense_model_bytes(D=D, L=L, F=F, T=T, mode=mode)


def icl_bytes(source: Any, tokens: Any, *, mode: str = "float64", extra_width: Callable[[int], int] | None = None,
              **params: Any) -> float:
    """icl (H4): ``P = V^r`` pattern features (``r V`` otherwise), ``D = P^2 + 4 P (V + 2) + 32``,
    ``L = K + 4 + ceil(log2(r + 1))``, ``F = 2 D``."""
    _, V = _sizes(source)
    T = _positions(tokens, params)
    r = int(params.get("r", 1) or 1)
    P = float(V) ** r if params.get("features", "pattern") == "pattern" else r * V
    D = P * P + 4 * P * (V + 2) + 32
    L = int(params.get("K", 4)) + 4 + math.ceil(math.log2(r + 1))
    return dense_model_bytes(D=D + (extra_width(T) if extra_width else 0), L=L, F=2 * D, T=T, mode=mode)


def memory_kernel_bytes(source: Any, tokens: Any, *, mode: str = "float64",
                        extra_width: Callable[[int], int] | None = None, **params: Any) -> float:
    """memory-kernel (W1/W3): ``H`` heads per memory over ``N = T + prefix + 64`` positions: three (N, N) maps
    per head, FFN activations ``N * ffn_width`` and the residual ``N (H + 8)``."""
    T = _positions(tokens, params)
    H = int(params.get("heads", 8)) * (str(params.get("memories", "")).count(",") + 1)
    N = T + int(params.get("prefix", 0) or 0) + 64
    total = 8.0 * (H * N * N * 3 + N * int(params.get("ffn_width", 32)) * 4 + N * (H + 8) * 4)
    return total * (EXACT_FACTOR if mode == "exact" else 1)


def with_one_hot_positions(hook: Callable[..., float]) -> Callable[..., float]:
    """The estimate of a standard-block variant: its base construction's formula with the residual widened by
    one-hot absolute positions (``D + T``); parameters the base does not know (``act``) are dropped."""

    def estimate(source: Any, tokens: Any, *, mode: str = "float64", act: str = "relu", **params: Any) -> float:
        if hook in BUILT_IN:
            return hook(source, tokens, mode=mode, extra_width=lambda T: T, **params)
        return hook(source, tokens, mode=mode, **params)

    return estimate


BUILT_IN = (prefix_bytes, window_bytes, icl_bytes, memory_kernel_bytes)

__all__ = ["EXACT_FACTOR", "stream_length", "dense_model_bytes", "prefix_bytes", "window_bytes", "icl_bytes",
           "memory_kernel_bytes", "with_one_hot_positions"]
