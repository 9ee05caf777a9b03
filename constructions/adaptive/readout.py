"""The readout ``f`` of an adaptive-memory target: the memory-kernel construction's readout networks, plus an exact
(Fraction) evaluation for the rational ones (``relu``, ``identity``)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple, Sequence

import numpy as np

from constructions.memory.model import ReadoutNet, readout_net
from hmm.errors import HmmtxError


class AdaptiveReadout(NamedTuple):
    """``net``: the FFN's network ``a . relu(W v + b) + c`` on ``v = (v_t, z_1..z_M)`` (dyadic weights);
    ``exact_weights``: the same weights as Fractions; ``kind``: relu | identity | tanh."""

    net: ReadoutNet
    exact_weights: tuple
    kind: str

    def target(self, v: np.ndarray) -> np.ndarray:
        """The target ``f`` in float64 (``v`` (..., 1+M))."""
        return self.net.target(v)

    def exact(self, v: Sequence[Any]) -> Fraction:
        """``f(v)`` exactly (rational readouts only): the network in Fraction arithmetic."""
        if self.kind == "tanh":
            raise HmmtxError("the tanh readout has no exact (rational) value")
        W, b, a, c = self.exact_weights
        x = [Fraction(t) for t in v]
        if self.kind == "identity":
            return sum(x[1:], Fraction(0))
        out = Fraction(c)
        for j in range(len(a)):
            pre = b[j] + sum((W[j][i] * x[i] for i in range(len(x))), Fraction(0))
            if pre > 0:
                out += a[j] * pre
        return out


_CACHE: dict = {}


def readout_for(spec: Any) -> AdaptiveReadout:
    """The readout of ``spec`` (cached by its parameters). Radius ``1 + M`` bounds the tanh ridge variable."""
    key = (spec.readout, spec.M, spec.ffn_width, spec.seed)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    net = readout_net(spec.readout, spec.M, spec.ffn_width, spec.seed, 1.0 + spec.M)
    exact = (
        tuple(tuple(Fraction(float(w)) for w in row) for row in net.W),
        tuple(Fraction(float(x)) for x in net.b),
        tuple(Fraction(float(x)) for x in net.a),
        Fraction(float(net.c)),
    )
    out = AdaptiveReadout(net, exact, spec.readout)
    _CACHE[key] = out
    return out


__all__ = ["AdaptiveReadout", "readout_for"]
