"""Neighbour-gathering lower layers: doubling copy heads that bring the last R tokens into every position.

The mechanism (Hao et al. 2025's first observation, "lower layers gather features from neighbouring tokens"; the
doubling form is the one of Rajaraman et al. 2024's composed induction heads and of parallel-prefix constructions —
a reconstruction written for this project, not code from either paper):

* named residual blocks ``slot[0] .. slot[R-1]`` (each of size ``alphabet``); the embedding writes the one-hot of
  the position's own symbol into ``slot[0]`` and nothing into the other slots;
* layer ``l = 0 .. ceil(log2 R) - 1`` has one purely positional head with the tent bias ``b(lag) = -|lag - 2^l|``
  (hard attention picks lag ``2^l``); its value reads ``slot[0] .. slot[2^l - 1]`` of the attended position and its
  output writes them into ``slot[2^l] .. slot[2^(l+1) - 1]`` (clipped at ``R - 1``).

**Invariant** (induction on ``l``): after layer ``l`` (i.e. in residual ``l + 1``), ``slot[j]`` at position ``u``
holds the symbol at position ``u - j`` for every ``j < min(2^(l+1), R)``, and ``slot[j]`` is still zero for
``j >= 2^(l+1)``. Proof: layer ``l`` copies source slot ``i < 2^l`` of position ``u - 2^l`` (which holds the symbol at
``u - 2^l - i`` by the hypothesis) into slot ``2^l + i``; the slots it writes were zero, so the residual sum is the
copy. Hence lag ``j`` is readable in ``slot[j]`` from residual ``ceil(log2(j + 1))`` on, and not before (a position's
residual before that layer depends only on the symbols at lags ``< 2^l <= j``).

**Sequence start.** Position 0 must be a *sink* (e.g. NULL) whose ``slot[0]`` holds a marker symbol (or nothing:
an all-zero ``slot[0]`` at the sink, and at separators, makes "before the start" read as an *empty* slot, the
convention of :mod:`constructions.icl`). When lag ``2^l``
leaves the sequence (``u < 2^l``) every available lag is below the target, the tent bias is largest at lag ``u``, so
the head attends to position 0; the sink itself attends to itself at every layer and so fills all its slots with its
marker. Therefore a slot whose lag reaches before position 0 holds the sink's marker (read it as "before the start").

Softmax mode: with inverse temperature ``beta`` the off-target weight of one head is at most
``2 e^{-beta} / (1 - e^{-beta})`` (tent bias gap 1 per lag step, at most two lags at each distance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from constructions.blocks import ONE, AttentionHead, Layer, frac_zeros, lag_bias
from constructions.layout import Layout
from hmm.errors import HmmtxError


def gather_depth(num_slots: int) -> int:
    """Number of doubling layers needed for ``num_slots`` slots (lags ``0..num_slots-1``): ``ceil(log2 num_slots)``."""
    if num_slots < 1:
        raise HmmtxError(f"gather: num_slots must be >= 1, got {num_slots}")
    return (num_slots - 1).bit_length()


def readable_layer(lag: int) -> int:
    """The first residual index (0 = embedding) at which ``slot[lag]`` holds the token at that lag:
    ``ceil(log2(lag + 1))``."""
    if lag < 0:
        raise HmmtxError(f"gather: lag must be >= 0, got {lag}")
    return lag.bit_length()


def leakage_per_head(beta: float) -> float:
    """Largest off-target attention weight of one tent-bias gather head with softmax inverse temperature ``beta``."""
    if not beta > 0:
        raise HmmtxError(f"beta must be > 0, got {beta}")
    q = math.exp(-beta)
    return 2.0 * q / (1.0 - q) if q < 1 else 1.0


@dataclass(frozen=True)
class Gather:
    """The gather plan: ``num_slots`` slots ``prefix[0..num_slots-1]``, each a one-hot over ``alphabet`` symbols.

    Fields:
        num_slots: R >= 1 (lags 0..R-1); depth ``ceil(log2 R)``
        alphabet:  size of one slot (e.g. V tokens + 1 "before the start" marker)
        prefix:    block-name prefix (``"slot"`` gives ``slot[0]``, ``slot[1]``, ...)
    """

    num_slots: int
    alphabet: int
    prefix: str = "slot"

    def __post_init__(self) -> None:
        if isinstance(self.num_slots, bool) or not isinstance(self.num_slots, int) or self.num_slots < 1:
            raise HmmtxError(f"gather: num_slots must be an integer >= 1, got {self.num_slots!r}")
        if isinstance(self.alphabet, bool) or not isinstance(self.alphabet, int) or self.alphabet < 1:
            raise HmmtxError(f"gather: alphabet must be an integer >= 1, got {self.alphabet!r}")
        if not self.prefix:
            raise HmmtxError("gather: prefix must be a non-empty block name")

    @property
    def depth(self) -> int:
        return gather_depth(self.num_slots)

    def slot(self, j: int) -> str:
        """Block name of slot ``j`` (the token at lag ``j``)."""
        if not 0 <= j < self.num_slots:
            raise HmmtxError(f"gather: slot {j} out of range [0, {self.num_slots})")
        return f"{self.prefix}[{j}]"

    def add_blocks(self, layout: Layout, symbol_names: str = "") -> None:
        """Append the blocks ``slot[0..R-1]`` to ``layout`` (before it is frozen)."""
        for j in range(self.num_slots):
            what = "own symbol (embedding)" if j == 0 else f"symbol at lag {j}, written by gather layer {readable_layer(j) - 1}"
            layout.add(self.slot(j), self.alphabet, f"one-hot of the {what}" + (f"; symbols {symbol_names}" if symbol_names else ""))

    def head(self, layout: Layout, level: int, n_lags: int) -> AttentionHead:
        """The copy head of gather layer ``level``: attend to lag ``2^level``, copy slots ``[0, n)`` to ``[2^level,
        2^level + n)`` with ``n = min(2^level, R - 2^level)``."""
        step = 1 << level
        if not 0 < step < self.num_slots:
            raise HmmtxError(f"gather: layer {level} (lag {step}) is not needed for {self.num_slots} slots")
        n = min(step, self.num_slots - step)
        D, a = layout.width, self.alphabet
        W_V = frac_zeros(n * a, D)
        W_O = frac_zeros(D, n * a)
        labels = []
        for i in range(n):
            src, dst = layout.block(self.slot(i)), layout.block(self.slot(step + i))
            for s in range(a):
                # value (i, s) = source's slot[i][s]; written to the query's slot[step + i][s]: a block shift
                W_V[i * a + s, src.start + s] = ONE
                W_O[dst.start + s, i * a + s] = ONE
                labels.append(f"{self.slot(i)}[{s}]")
        empty = frac_zeros(0, D)
        return AttentionHead(
            empty, empty.copy(), W_V, W_O, lag_bias(step, n_lags),
            name=f"gather{level}",
            description=f"positional head: lag {step} (tent bias -|lag-{step}|; position 0 = sink when u < {step}); "
            f"copies slots 0..{n - 1} into slots {step}..{step + n - 1}",
            value_labels=tuple(labels),
        )

    def layers(self, layout: Layout, n_lags: int, name: str = "gather") -> list[Layer]:
        """The ``depth`` gather layers (attention only; attach FFNs with :func:`dataclasses.replace`)."""
        if not layout.frozen:
            raise HmmtxError("gather: freeze the layout before building weights")
        if n_lags < 1:
            raise HmmtxError(f"gather: n_lags must be >= 1, got {n_lags}")
        out = []
        for level in range(self.depth):
            h = self.head(layout, level, n_lags)
            out.append(Layer(f"{name}{level}", heads=(h,), description=h.description))
        return out


def read_slots(residual: np.ndarray, layout: Layout, plan: Gather) -> np.ndarray:
    """Slots of a residual array (..., D) as (..., R, alphabet) (numpy, float or object)."""
    return np.stack([np.asarray(residual)[..., layout[plan.slot(j)]] for j in range(plan.num_slots)], axis=-2)


__all__ = ["Gather", "gather_depth", "readable_layer", "leakage_per_head", "read_slots"]
