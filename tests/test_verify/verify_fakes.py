"""Test helpers (not a test module): a toy verify adapter that needs no registry.

``ToyAdapter`` runs the numpy forward filter against the exact Fraction filter on random HMMs. Its ``scale``
multiplies the output to simulate a broken construction and ``crash_at`` makes one case raise.
"""

from __future__ import annotations

import numpy as np

from hmm.model import HMM
from hmm.reference import forward_filter, forward_filter_exact
from verify.suite import Case, Outcome, Plan, Replay


def random_hmm(S: int, V: int, seed: int) -> HMM:
    rng = np.random.default_rng(seed)
    d = lambda *shape: rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if len(shape) > 1 else rng.dirichlet(np.ones(shape[0]))  # noqa: E731
    return HMM.from_arrays(d(S), d(S, S), d(S, V))


class ToyAdapter:
    name = "toy"
    summary = "numpy forward filter (test double)"
    provenance = "test fixture"
    dtypes = ("float64", "float32", "exact")

    def __init__(self, scale: float = 1.0, crash_at: str | None = None, bound: float = 1e-3, name: str = "toy"):
        self.scale, self.crash_at, self.bound_value, self.name = scale, crash_at, bound, name

    def cases(self, plan: Plan) -> list[Case]:
        out = []
        for S in plan.states:
            for T in plan.lengths:
                for d in plan.dtypes:
                    if d == "exact" and not plan.exact_allowed(S, T):
                        continue
                    out.append(Case(self.name, "random", S, T, d, plan.seed + 17 * S + T, (("r", 2),)))
        return out

    def _inputs(self, case: Case):
        hmm = random_hmm(case.states, 3, case.seed)
        tokens = np.random.default_rng(case.seed + 1).integers(0, 3, size=case.length)
        return hmm, tokens

    def replay_for(self, case: Case) -> Replay:
        hmm, tokens = self._inputs(case)
        return Replay("hmm", hmm.to_dict(), " ".join(map(str, tokens)), ("--mode", case.dtype))

    def run(self, case: Case) -> Outcome:
        if self.crash_at is not None and case.case_id == self.crash_at:
            raise RuntimeError("toy crash")
        hmm, tokens = self._inputs(case)
        ref = forward_filter_exact(hmm, tokens).next_token_probs
        if case.dtype == "exact":
            got = ref * int(self.scale) if self.scale != 1.0 else ref
            diff = max(abs(a - b) for a, b in zip(got.ravel(), ref.ravel()))
            return Outcome(float(diff), 0.0, 0.0, bool(diff == 0), "next_token_probs", self.replay_for(case), 3,
                           {"layers": 1, "heads": 1, "width": 4, "ffn_width": 0})
        dt = np.float64 if case.dtype == "float64" else np.float32
        got = forward_filter(hmm, tokens, dt).next_token_probs.astype(np.float64) * self.scale
        err = float(np.max(np.abs(got - ref.astype(np.float64))))
        allow = 1e-12 if case.dtype == "float64" else 1e-5
        return Outcome(err, self.bound_value, allow, None, "next_token_probs", self.replay_for(case), 3,
                       {"layers": 1, "heads": 1, "width": 4, "ffn_width": 0})
