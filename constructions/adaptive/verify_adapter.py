"""``hmmtx verify`` adapter for ``adaptive-memory`` (its inputs are symbol:value sequences, not HMM tokens).

Configurations (:data:`CONFIGS`): Type I with log- and lin-type RPE (M = 2), nested Type II with log- and lin-type
RPE (M = 3 and M = 2). For every length T of the plan (capped at :data:`MAX_LENGTH`): hard attention in exact mode
(where the plan allows exact, bit-exact against the Fraction reference), float64 and float32; softmax attention at
each beta of :data:`BETAS` in float64 (and the largest in float32). Inputs: uniform symbols, values uniform on the
dyadic grid k/8, seeded per case. Checked: ``max |output - target| <= bound + allowance`` over ``y``, ``memory`` and
``lag``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Longest sequence swept (exact executor and bound are O(T^2) per head).
MAX_LENGTH = 128
#: Softmax inverse temperatures swept.
BETAS = (2.0, 6.0)

CONFIGS: dict[str, dict[str, Any]] = {
    "I-log": {"kind": "type1", "symbols": 3, "memories": 2, "lag_range": 6, "rpe": "log", "readout": "relu"},
    "I-lin": {"kind": "type1", "symbols": 4, "memories": 2, "lag_range": 8, "rpe": "lin", "readout": "tanh",
              "ffn_width": 32},
    "II-log": {"kind": "type2", "symbols": 2, "memories": 3, "lag_range": 5, "rpe": "log", "readout": "identity"},
    "II-lin": {"kind": "type2", "symbols": 3, "memories": 2, "lag_range": 6, "rpe": "lin", "readout": "relu"},
}


class AdaptiveAdapter:
    """Verify-side view of the adaptive-memory construction (see module docstring)."""

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.name = entry.name
        self.summary = entry.summary
        self.provenance = entry.provenance
        self.dtypes = tuple(d for d in ("float64", "float32", "exact") if d in entry.modes)

    def _variants(self, dtype: str, cfg: str) -> list[tuple[tuple[str, Any], ...]]:
        out = [(("attention", "hard"),)]
        if dtype == "exact" and CONFIGS[cfg]["readout"] == "tanh":
            return []  # no rational reference for tanh
        if dtype == "float64":
            out += [(("attention", "softmax"), ("beta", b)) for b in BETAS]
        elif dtype == "float32":
            out += [(("attention", "softmax"), ("beta", max(BETAS)))]
        return out

    def cases(self, plan: Any) -> list:
        from verify.suite import Case, derived_seed

        out = []
        lengths = sorted({min(int(T), MAX_LENGTH) for T in plan.lengths})
        for cfg in CONFIGS:
            for T in lengths:
                for k in range(plan.seeds_per_point):
                    seed = derived_seed(plan.seed, self.name, cfg, T, k)
                    for d in plan.dtypes:
                        if d not in self.dtypes or (d == "exact" and not plan.exact_allowed(None, T)):
                            continue
                        for v in self._variants(d, cfg):
                            if dict(v)["attention"] == "softmax" and T > plan.softmax_max_length:
                                continue
                            out.append(Case(self.name, cfg, None, T, d, seed, (("config", cfg),) + v))
        return out

    def _inputs(self, case: Any) -> tuple[Any, str]:
        from constructions.adaptive.spec import make_tokens

        V = CONFIGS[case.family]["symbols"]
        rng = np.random.default_rng(case.seed)
        syms = rng.integers(0, V, size=case.length)
        vals = rng.integers(-8, 9, size=case.length)
        from fractions import Fraction

        tok = make_tokens(syms, [Fraction(int(v), 8) for v in vals])
        return tok, " ".join(f"{int(c)}:{int(v)}/8" for c, v in zip(syms, vals))

    def _params(self, case: Any) -> dict[str, Any]:
        return dict(CONFIGS[case.family], lag_seed=case.seed % 1000)

    def replay_for(self, case: Any) -> Any:
        from verify.suite import Replay

        _, text = self._inputs(case)
        p = case.param_dict
        args = ["--mode", case.dtype, "--attention", p["attention"]]
        if p.get("beta") is not None:
            args += ["--beta", repr(float(p["beta"]))]
        for k, v in self._params(case).items():
            args += ["--" + k.replace("_", "-"), str(v)]
        return Replay(None, None, text, tuple(args))

    def run(self, case: Any) -> Any:
        from verify.suite import Outcome, compare

        tok, _ = self._inputs(case)
        p = case.param_dict
        params = self._params(case)
        exact = case.dtype == "exact"
        model = self.entry.build(None, tok, attention=p["attention"], beta=p.get("beta"), **params)
        res = model.run(tok, mode=case.dtype, record="final")
        ref = self.entry.reference(None, tok, exact=exact, **params)
        err, same = 0.0, True
        for n in ("y", "memory", "lag"):
            e, ok = compare(res.outputs[n], ref[n], exact=exact, what=f"{self.name} output '{n}'")
            err, same = max(err, e), same and ok
        br = model.claimed_bound(tok, mode=case.dtype)
        allowance = min(float(br.roundoff), float(br.value))
        spec = model.spec
        return Outcome(
            error=err, bound=float(br.value) - allowance, allowance=allowance, exact_ok=same if exact else None,
            quantity="y,memory,lag", replay=self.replay_for(case), vocab=None,
            size={"layers": spec.layers, "heads": spec.heads, "width": spec.width, "ffn_width": spec.ffn_width},
            note=str(br.notes),
        )


__all__ = ["AdaptiveAdapter", "CONFIGS", "MAX_LENGTH", "BETAS"]
