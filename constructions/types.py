"""Shared types of the construction framework (no torch import): what a run returns, what a bound claims, what a
codec does, a model's size report and its typed metadata.

They live in a module of their own so that the torch module (:mod:`constructions.transformer`), the exact executor
(:mod:`constructions.exact`), the runner and the verification suite all import them from one place, and no two of
those modules import each other (``tests/test_import_graph.py`` checks the arrows).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from hmm.errors import HmmtxError

ATTENTION_MODES = ("hard", "softmax")
MODES = ("exact", "float64", "float32")
RECORD_LEVELS = ("all", "residuals", "states", "final")


# ---------------------------------------------------------------------------------------------- result types
class Trace(NamedTuple):
    """Everything a forward pass computed (torch tensors, or object arrays of Fractions from the exact executor).

    Fields (N sequences, P positions, D residual width, H heads of that layer, L layers):
        residuals:    L+1 entries (N, P, D): ``[0]`` = embedding, ``[l+1]`` = after layer l (after its norms);
                      with ``record="final"`` only ``[L]`` is kept (the others are None)
        after_attn:   L entries (N, P, D): residual after layer l's attention (None unless ``record`` is
                      ``"all"`` or ``"states"``; after_ffn likewise)
        after_ffn:    L entries (N, P, D): after the FFN, before the projective norms (None unless ``"all"``)
        attn_scores:  L entries (N, H, P, P): the bracket ``q.k + b(u-v)`` (before beta); masked (v > u) entries
                      are -inf (torch) / None (exact); None for layers without heads or when not recorded
        attn_weights: L entries (N, H, P, P): the attention weights actually used
        readouts:     name -> (N, P, *shape) unnormalised masses ``z = W_U h`` at every position
    """

    residuals: list
    after_attn: list
    after_ffn: list
    attn_scores: list
    attn_weights: list
    readouts: dict


class RunResult(NamedTuple):
    """``model.run`` output: named outputs (from the codec), the trace, the input ids (N, P) and the mode."""

    outputs: dict
    trace: Trace
    input_ids: np.ndarray
    mode: str


class BoundReport(NamedTuple):
    """A claimed bound on the max-abs error of ``next_token_probs`` (and of every output the construction names).

    Fields:
        value:    the bound (= leakage + roundoff, capped at ``trivial``)
        leakage:  the part due to softmax attention (0 in hard mode)
        roundoff: the stated floating-point allowance (0 in exact mode)
        trivial:  the trivial bound (1 for a max-abs difference of probability vectors)
        notes:    how it was computed (one line)
        roundoff_kind: what the round-off part is: ``"heuristic"`` (a stated allowance, not proved),
                  ``"derived"`` (proved under the IEEE rounding model, its conditions checked), ``"exact"`` (0 in
                  exact mode) or ``"trivial"`` (no applicable bound: the trivial one)
    """

    value: float
    leakage: float
    roundoff: float
    trivial: float
    notes: str
    roundoff_kind: str = "heuristic"


class Codec(Protocol):
    """Construction-specific input/output mapping."""

    def encode(self, tokens: Any) -> np.ndarray:
        """Tokens (construction's own format) -> input ids (N, P) int64 for the embedding."""

    def decode(self, model: Any, trace: Trace, tokens: Any) -> dict:
        """Trace -> named outputs, e.g. ``{"next_token_probs": (N, T, V), ...}`` (same type as the trace)."""


@dataclass(frozen=True)
class ConstructionSpec:
    """Size and provenance report of a built construction.

    Fields: ``name`` (CLI name), ``layers``, ``heads`` (largest number of heads in a layer), ``width`` (residual
    D), ``ffn_width`` (largest FFN hidden width), ``max_positions`` (longest input-id sequence the bias tables
    cover), ``attention`` ("hard"/"softmax"), ``beta`` (None in hard mode), ``provenance`` (honest source line),
    ``parameters`` (construction-specific, e.g. ``{"S": 4, "V": 3, "max_len": 64}``).
    """

    name: str
    layers: int
    heads: int
    width: int
    ffn_width: int
    max_positions: int
    attention: str
    beta: float | None
    provenance: str
    parameters: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise HmmtxError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.attention == "softmax" and (self.beta is None or not self.beta > 0):
            raise HmmtxError(f"softmax attention needs an inverse temperature beta > 0, got {self.beta!r}")

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "layers": self.layers,
            "heads": self.heads,
            "width": self.width,
            "ffn_width": self.ffn_width,
            "max_positions": self.max_positions,
            "attention": self.attention,
            "beta": self.beta,
            "provenance": self.provenance,
            "parameters": dict(self.parameters),
        }


def check_attention(attention: str, beta: Any) -> float | None:
    """Validate ``attention``/``beta`` (beta is required and > 0 for softmax, ignored for hard)."""
    if attention not in ATTENTION_MODES:
        raise HmmtxError(f"--attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    if attention == "hard":
        return None
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise HmmtxError(f"--beta: softmax attention needs a number beta > 0, got {beta!r}") from None
    if not (b > 0 and np.isfinite(b)):
        raise HmmtxError(f"--beta: softmax attention needs a finite beta > 0, got {beta!r}")
    return b


def check_bound(report: Any, name: str) -> "BoundReport":
    """``report`` if it is a well-formed :class:`BoundReport`, else HmmtxError naming the construction: ``value``,
    ``leakage`` and ``roundoff`` must be numbers >= 0 (``value`` may be ``inf``: no finite claim), never NaN."""
    if not isinstance(report, BoundReport):
        raise HmmtxError(f"construction '{name}': its bound function returned {type(report).__name__}, not a BoundReport")
    for part in ("value", "leakage", "roundoff"):
        v = getattr(report, part)
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise HmmtxError(f"construction '{name}': claimed bound {part} = {v!r} is not a number") from None
        if math.isnan(f) or f < 0:
            raise HmmtxError(f"construction '{name}': claimed bound {part} = {f!r} (a bound must be a number >= 0)")
    return report


# ---------------------------------------------------------------------------------------------- model metadata
class ModelInfo:
    """Base class of a construction's typed model metadata (``model.info``).

    Subclass it as a frozen dataclass whose fields are what the construction's own bound, probes and tests read
    back from a built model (e.g. :class:`constructions.prefix.PrefixInfo`: ``prefix_layers``, ``n``). The framework
    itself reads no field of it. ``info["name"]`` / ``info.get("name")`` are kept as read-only aliases of attribute
    access for code written against the former dict (new code: ``model.info.name``).
    """

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)


class LegacyInfo(ModelInfo):
    """A former ``info`` dict wrapped as :class:`ModelInfo` (attribute and item access both work). Passing a dict
    as ``info=`` warns: declare a dataclass subclass of :class:`ModelInfo` instead."""

    def __init__(self, values: dict) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"LegacyInfo({', '.join(sorted(self.__dict__))})"


def as_model_info(info: Any) -> ModelInfo:
    """``info`` as a :class:`ModelInfo`: None -> an empty one; a dict -> :class:`LegacyInfo` (with a
    DeprecationWarning); anything else must already be a ModelInfo."""
    if info is None:
        return ModelInfo()
    if isinstance(info, ModelInfo):
        return info
    if isinstance(info, dict):
        warnings.warn("ConstructedTransformer(info=dict) is deprecated: pass a dataclass subclass of "
                      "constructions.types.ModelInfo", DeprecationWarning, stacklevel=3)
        return LegacyInfo(info)
    raise HmmtxError(f"model info must be a constructions.types.ModelInfo, got {type(info).__name__}")


# ---------------------------------------------------------------------------------------------- errors
def norm_error(nrm: Any, layer: str, n: int, u: int, N: int, den: float, dtype: str | None = None) -> HmmtxError:
    """The error of a projective normalisation whose denominator is zero (exact) or zero / non-finite (floats)."""
    seq = f" of sequence {n}" if N > 1 else ""
    if dtype is None:  # exact arithmetic: a zero sum is a true zero
        why = "so the input has probability zero under the model"
    else:  # floats: a zero (or non-finite) sum may be underflow or cancellation, not a true zero
        why = (f"so in {dtype} the input has probability zero under the model, or the sum underflowed or cancelled "
               f"(try --mode exact, or float64)")
    return HmmtxError(
        f"projective normalisation of block '{nrm.block}' in {layer} at position {u}{seq}: the sum of "
        f"'{nrm.denominator}' is {den!r}, {why}"
    )


__all__ = [
    "ATTENTION_MODES",
    "MODES",
    "RECORD_LEVELS",
    "Trace",
    "RunResult",
    "BoundReport",
    "Codec",
    "ConstructionSpec",
    "ModelInfo",
    "LegacyInfo",
    "as_model_info",
    "check_attention",
    "check_bound",
    "norm_error",
]
