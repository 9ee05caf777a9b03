"""The ``hmmtx verify`` sweep of ``adaptive-memory`` (inputs are symbol:value sequences, not HMM tokens): a
:class:`~constructions.registry.CustomSweep` run by the generic verify adapter and the one run-and-compare path.

Configurations (:data:`CONFIGS`): Type I with log- and lin-type RPE (M = 2), nested Type II with log- and lin-type
RPE (M = 3 and M = 2). For every length T of the plan (capped at :data:`MAX_LENGTH`): hard attention in every mode
(exact only for the rational readouts: bit-exact against the Fraction reference), softmax attention at each beta of
:data:`BETAS` in float64 and at the largest in float32. Inputs: uniform symbols, values uniform on the dyadic grid
k/8 (exact as CLI text), seeded per case. Checked: ``max |output - target| <= bound + allowance`` over ``y``,
``memory`` and ``lag``. The lag tables are drawn from the configuration's ``lag_seed``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from constructions.registry import CustomSweep, SweepInput, SweepPoint

#: Longest sequence swept (exact executor and bound are O(T^2) per head).
MAX_LENGTH = 128
#: Softmax inverse temperatures swept.
BETAS = (2.0, 6.0)

CONFIGS: dict[str, dict[str, Any]] = {
    "I-log": {"kind": "type1", "symbols": 3, "memories": 2, "lag_range": 6, "lag_seed": 1, "rpe": "log",
              "readout": "relu"},
    "I-lin": {"kind": "type1", "symbols": 4, "memories": 2, "lag_range": 8, "lag_seed": 2, "rpe": "lin",
              "readout": "tanh", "ffn_width": 32},
    "II-log": {"kind": "type2", "symbols": 2, "memories": 3, "lag_range": 5, "lag_seed": 3, "rpe": "log",
               "readout": "identity"},
    "II-lin": {"kind": "type2", "symbols": 3, "memories": 2, "lag_range": 6, "lag_seed": 4, "rpe": "lin",
               "readout": "relu"},
}


def points(lengths: tuple[int, ...]) -> list[SweepPoint]:
    """One point per (configuration, attention variant, length); labels ``I-log/hard``, ``I-log/beta=2``, ..."""
    Ts = sorted({min(int(T), MAX_LENGTH) for T in lengths})
    out = []
    for cfg, params in CONFIGS.items():
        hard_modes = ("float64", "float32") if params["readout"] == "tanh" else ("exact", "float64", "float32")
        p = tuple(params.items())
        for T in Ts:
            out.append(SweepPoint(f"{cfg}/hard", T, hard_modes, "hard", None, p))
            for b in BETAS:
                out.append(SweepPoint(f"{cfg}/beta={b:g}", T, ("float64", "float32") if b == max(BETAS) else
                                      ("float64",), "softmax", b, p))
    return out


def inputs(point: SweepPoint, seed: int) -> SweepInput:
    from constructions.adaptive.spec import make_tokens

    V = dict(point.params)["symbols"]
    rng = np.random.default_rng(seed)
    syms = rng.integers(0, V, size=point.length)
    vals = rng.integers(-8, 9, size=point.length)
    tok = make_tokens(syms, [Fraction(int(v), 8) for v in vals])
    return SweepInput(None, tok, " ".join(f"{int(c)}:{int(v)}/8" for c, v in zip(syms, vals)), None)


#: The verify sweep of ``adaptive-memory`` (its registry entry's ``verify=VerifySweep(betas=(), custom=SWEEP)``).
SWEEP = CustomSweep(points, inputs)

__all__ = ["CONFIGS", "MAX_LENGTH", "BETAS", "SWEEP", "points", "inputs"]
