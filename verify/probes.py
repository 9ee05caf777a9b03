"""Layerwise diagnostics (placeholder while being written)."""
from __future__ import annotations
from typing import Any, NamedTuple


class Trace(NamedTuple):
    residuals: Any
    attn_scores: Any
    attn_weights: Any = None
    next_token_probs: Any = None
