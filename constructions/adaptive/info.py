"""Typed metadata of a built adaptive-memory model, and its layer schedule (which layer fetches which memory)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from constructions.adaptive.readout import AdaptiveReadout
from constructions.adaptive.spec import AdaptiveSpec
from constructions.types import ModelInfo
from hmm.errors import HmmtxError

#: Guessed symbol for a fetched symbol a truncated (too shallow) model has not fetched yet.
GUESS_SYMBOL = 0


# ---------------------------------------------------------------------------------------------- schedule
class Schedule(NamedTuple):
    """Which layer does what. ``fetch[k]``: layer whose attention fetches memory k; ``known[k]``: the memories whose
    fetched symbols the lag of memory k reads (others are guessed as :data:`GUESS_SYMBOL`); ``layers``: L."""

    fetch: tuple[int, ...]
    known: tuple[tuple[int, ...], ...]
    layers: int


def schedule(spec: AdaptiveSpec, layers: int | None = None) -> Schedule:
    """Type I: 2 layers (lags in layer 0's FFN, every memory fetched in layer 1). Type II: ``M + 1`` layers, memory
    k fetched in layer k+1, its lag computed in layer k's FFN. ``layers < M + 1`` (Type II only) gives the greedy
    shallow model of the depth experiment: memories ``>= layers - 2`` are all fetched in the last layer and their
    lags use guessed symbols for memories not fetched yet."""
    M = spec.M
    full = 2 if spec.kind == "type1" else M + 1
    L = full if layers is None else int(layers)
    if spec.kind == "type1" and L != 2:
        raise HmmtxError(f"a Type I construction has 2 layers, got layers={layers}")
    if not 2 <= L <= full:
        raise HmmtxError(f"layers={layers}: a Type II construction with M={M} has 2..{full} layers")
    if spec.kind == "type1":
        return Schedule(tuple([1] * M), tuple(() for _ in range(M)), 2)
    fetch = tuple(min(k + 1, L - 1) for k in range(M))
    known = tuple(tuple(j for j in range(k) if fetch[j] <= fetch[k] - 1) for k in range(M))
    return Schedule(fetch, known, L)


@dataclass(frozen=True)
class AdaptiveModelInfo(ModelInfo):
    """What the bound and the codec need about a built model (``model.info``).

    ``values``: the embedded value vocabulary; ``n_positions``: padded positions covered; ``readout``: the readout;
    ``schedule``: :class:`Schedule`; ``mask``: the log variant's lag-0 bias (None for lin)."""

    spec: AdaptiveSpec
    values: tuple[Fraction, ...]
    n_positions: int
    readout: AdaptiveReadout
    schedule: Schedule
    mask: Fraction | None


def info_of(model: Any) -> AdaptiveModelInfo:
    info = model.info
    if not isinstance(info, AdaptiveModelInfo):
        raise HmmtxError(f"model '{model.spec.name}' is not an adaptive-memory construction")
    return info



__all__ = ["GUESS_SYMBOL", "Schedule", "schedule", "AdaptiveModelInfo", "info_of"]
