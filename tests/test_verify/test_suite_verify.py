"""verify.suite: plans, case ids, deterministic case generation from the registry, comparisons, judging."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from constructions import registry
from hmm.errors import HmmtxError
from hmm.io import hmm_from_dict, mixture_from_dict, parse_context
from verify import suite
from verify.suite import FULL, QUICK, Case, Plan, compare, context_shape, derived_seed


def test_plan_validation_names_the_flag():
    with pytest.raises(HmmtxError, match="--states"):
        Plan("custom", states=(0,), lengths=(4,), dtypes=("float64",))
    with pytest.raises(HmmtxError, match="--lengths"):
        Plan("custom", states=(2,), lengths=(), dtypes=("float64",))
    with pytest.raises(HmmtxError, match="--dtype"):
        Plan("custom", states=(2,), lengths=(4,), dtypes=("float16",))
    with pytest.raises(HmmtxError, match="--seed"):
        Plan("custom", states=(2,), lengths=(4,), dtypes=("exact",), seed=-1)
    with pytest.raises(HmmtxError, match="exact_scale_points"):
        Plan("custom", states=(2,), lengths=(4,), dtypes=("exact",), exact_scale_points=((8, 0),))


def test_presets_cover_what_the_issue_asks():
    assert set(QUICK.dtypes) == set(FULL.dtypes) == {"float64", "float32", "exact"}
    assert max(FULL.states) == 8 and max(FULL.lengths) == 1024
    assert FULL.exact_allowed(4, 64) and not FULL.exact_allowed(8, 64) and not FULL.exact_allowed(4, 256)


def test_classic_lengths_rotate_and_cover():
    p = dataclasses.replace(FULL, classic_lengths_per_family=2)
    got = [p.classic_lengths(i) for i in range(4)]
    assert got == [(16, 64), (64, 256), (256, 1024), (1024, 16)]
    assert dataclasses.replace(FULL, classic_lengths_per_family=0).classic_lengths(3) == FULL.lengths


def test_case_ids_are_stable_and_params_sorted():
    c = Case("window", "sticky", 3, 16, "float64", 7, (("r", 4), ("attention", "softmax"), ("beta", 20.0)))
    assert c.params == (("attention", "softmax"), ("beta", 20.0), ("r", 4))
    assert c.case_id == "window/sticky/S3/T16/float64/seed7/attention=softmax,beta=20,r=4"
    assert Case("m", "", None, 8, "float32", 0).case_id == "m/-/S-/T8/float32/seed0"
    with pytest.raises(HmmtxError, match="dtype"):
        Case("m", "", None, 8, "half", 0)


def test_derived_seeds_are_deterministic_and_distinct():
    a = derived_seed(0, "exact-filter", "sticky", 2, 16, 0)
    assert a == derived_seed(0, "exact-filter", "sticky", 2, 16, 0)
    others = {derived_seed(s, n, f, S, T, 0) for s in (0, 1) for n in ("a", "b") for f in ("x", "y")
              for S in (2, 4) for T in (16, 64)}
    assert len(others) == 32 and all(0 <= x < 2**31 for x in others)


@given(st.integers(min_value=1, max_value=2000))
def test_context_shape_fills_about_the_requested_stream(length):
    n, demo, test = context_shape(length)
    stream = n * (demo + 1) + test  # demonstrations, their SEPs, the test segment
    assert test >= 1 and demo >= 1 and n >= 0
    assert stream <= length + 3 and stream >= length - 3 - n  # within rounding of the request
    if length >= 8:
        assert n == 3


def test_compare_exact_float_and_shapes():
    F = Fraction
    a = np.array([[F(1, 3), F(2, 3)]], dtype=object)
    assert compare(a, a.copy(), exact=True) == (0.0, True)
    b = np.array([[F(1, 3), F(2, 3) + F(1, 10**30)]], dtype=object)
    err, same = compare(a, b, exact=True)
    assert not same and err == pytest.approx(1e-30, rel=1e-12, abs=0)  # a difference below float64 resolution of 2/3
    t = torch.tensor([[[1 / 3, 2 / 3]]], dtype=torch.float64)  # leading batch axis of 1 is dropped
    err, _ = compare(t, a, exact=False)
    assert err <= 1.2e-16
    with pytest.raises(HmmtxError, match="shape"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)), exact=False)
    with pytest.raises(HmmtxError, match="exact mode"):
        compare(np.zeros((1, 2)), a, exact=True)
    e, same = compare(np.array([np.nan, 0.5]), np.array([0.5, 0.5]), exact=False)
    assert math.isnan(e) and not same


def test_compared_outputs_are_the_probability_outputs():
    for name, entry in registry.entries().items():
        outs = suite.compared_outputs(entry)
        assert outs and "next_token_probs" in outs or entry.bound_covers == outs, name
        assert not any(o.startswith("bayes_") or o in ("masses", "status", "negative_mass") for o in outs), name


def _registry_adapters():
    """Adapters sweeping zoo inputs (constructions with a custom sweep are checked separately)."""
    return [a for a in suite.adapters() if isinstance(a, suite.RegistryAdapter) and a.custom is None]


def test_custom_sweep_cases_follow_the_construction_points():
    custom = {a.name: a for a in suite.adapters() if isinstance(a, suite.RegistryAdapter) and a.custom is not None}
    assert {"memory-kernel", "adaptive-memory"} <= set(custom)  # the constructions without HMM inputs
    a = custom["memory-kernel"]
    cases = a.cases(QUICK)
    # W3 in float64 and float32, W1 in float64 only, at both quick lengths
    assert sorted((c.family, c.length, c.dtype) for c in cases) == sorted(
        [("W3", T, d) for T in QUICK.lengths for d in ("float64", "float32")] + [("W1", T, "float64") for T in QUICK.lengths])
    assert all(c.params == (("config", c.family),) and c.states is None for c in cases)
    rp = a.replay_for(cases[0])
    assert rp.model_kind is None and len(rp.tokens.split()) == cases[0].length and "softmax" in rp.run_args


@pytest.mark.parametrize("plan", [QUICK, FULL], ids=["quick", "full"])
def test_registry_cases_respect_the_plan(plan):
    adapters = _registry_adapters()
    assert adapters
    for a in adapters:
        cases = a.cases(plan)
        assert len({c.case_id for c in cases}) == len(cases), a.name  # no duplicates
        scale = [c for c in cases if c.param_dict.get("reference") == "exact"]
        cases = [c for c in cases if c not in scale]
        _check_exact_scale_cases(a, plan, scale)
        for c in cases:
            if c.dtype == "exact":
                assert plan.exact_allowed(c.states, c.length) and c.param_dict["attention"] == "hard"
            if c.param_dict["attention"] == "softmax":
                assert c.dtype == "float64" and c.length <= plan.softmax_max_length
        assert {c.states for c in cases if c.family not in ("mess3", "even", "golden_mean", "rrxor")} == set(plan.states)
        assert {c.length for c in cases} == set(plan.lengths)
        fams = {c.family for c in cases}
        assert len(fams) >= min(2, len(a.entry.families)), a.name  # families rotate


def _check_exact_scale_cases(a, plan, scale):
    """The exact-reference cases at scale: only entries that opt in, exactly the plan's scale points, every float
    mode of the entry there and exact mode up to the plan's bit-exact length, hard attention."""
    if not a.entry.verify.exact_at_scale:
        assert scale == [], a.name
        return
    want = {(S, T, d) for S, T in plan.exact_scale_points for d in a.dtypes if d in plan.dtypes
            and (d != "exact" or T <= plan.exact_scale_max_length)}
    assert {(c.states, c.length, c.dtype) for c in scale} == want and len(scale) == len(want), a.name
    assert all(c.param_dict["attention"] == "hard" for c in scale)


def test_full_checks_h1_and_h3_against_the_exact_reference_at_s8_to_16():
    """The issue's ask for ``verify --full``: exact-reference cases at S = 8-16 and T up to 1024 (H1 and H3, the
    entries with a fast exact reference), bit-exact cases at S = 8; quick has none."""
    assert {S for S, _ in FULL.exact_scale_points} == {8, 12, 16} and max(T for _, T in FULL.exact_scale_points) == 1024
    assert FULL.exact_scale_max_length >= 256 and QUICK.exact_scale_points == ()
    opted = {a.name for a in _registry_adapters() if a.entry.verify.exact_at_scale}
    assert {"exact-filter", "bayes-multitask"} <= opted
    for a in _registry_adapters():
        assert not [c for c in a.cases(QUICK) if "reference" in c.param_dict], a.name


def test_an_exact_scale_case_runs_against_the_exact_reference():
    """A scale point beyond the size rule (S = 5 > 4, T = 70 > 64): the float case is compared with the exact
    reference (not float64), the reproducer says --reference exact, and the exact-mode case is bit-exact."""
    a = suite.RegistryAdapter(registry.get("exact-filter"))
    plan = Plan("custom", states=(2,), lengths=(4,), dtypes=("float64", "exact"), exact_scale_points=((5, 70),),
                exact_scale_max_length=70)
    scale = [c for c in a.cases(plan) if c.param_dict.get("reference") == "exact"]
    assert sorted(c.dtype for c in scale) == ["exact", "float64"] and not plan.exact_allowed(5, 70)
    for c in scale:
        out = a.run(c)
        assert out.error <= out.bound + out.allowance and "--reference" in out.replay.run_args
        assert out.replay.run_args[out.replay.run_args.index("--reference") + 1] == "exact"
    (refs,) = a._ref_cache.values()
    assert set(refs) == {True}  # only the exact reference was computed
    assert out.exact_ok is True  # the exact-mode case (last) is bit-exact at this size


def test_case_inputs_are_deterministic_and_replay_files_round_trip():
    for a in _registry_adapters():
        mode = "exact" if "exact" in a.dtypes else "float64"  # standard variants (*-std) run in floats only
        case = next(c for c in a.cases(QUICK) if c.dtype == mode)
        first = a.inputs(case)
        a._input_cache.clear()
        second = a.inputs(case)
        assert first.tokens_text == second.tokens_text
        rp = a.replay_for(case)
        assert rp.tokens == first.tokens_text and "--mode" in rp.run_args and mode in rp.run_args
        if rp.model_kind == "hmm":
            h = hmm_from_dict(rp.model)
            assert h.exact and np.array_equal(h.transition_matrix, first.source.transition_matrix)
            assert len(rp.tokens.split()) == case.length
        else:
            m = mixture_from_dict(rp.model)
            assert m.num_obs == first.source.num_obs
            segs = parse_context(rp.tokens)
            assert sum(len(s) for s in segs) + len(segs) - 1 == pytest.approx(case.length, abs=3)


def test_an_unknown_zoo_family_in_the_registry_fails_loudly():
    entry = registry.get("exact-filter")
    a = suite.RegistryAdapter(dataclasses.replace(entry, families=entry.families + ("even_process",)))
    with pytest.raises(HmmtxError, match="even_process"):
        a.cases(QUICK)
    (res,) = [r for r in suite.run_suite([a], dataclasses.replace(QUICK, states=(2,), lengths=(2,)))
              if r.status == "crash"]
    assert res.case.construction == "exact-filter" and "even_process" in res.message


_nonneg = st.floats(min_value=0, max_value=1e3, allow_nan=False, allow_infinity=False)


@given(err=_nonneg, bound=st.one_of(_nonneg, st.just(math.inf)), allowance=_nonneg)
def test_judging_is_consistent_with_the_ratio(err, bound, allowance):
    case = Case("x", "f", 2, 4, "float64", 0)
    res = suite.judge(case, suite.Outcome(err, bound, allowance, None, "q", suite.Replay(None, None, None, ())), 0.0)
    assert res.passed == (err <= bound + allowance)
    if math.isinf(bound):
        assert res.ratio is None and res.passed
    elif bound + allowance > 0:
        assert (res.ratio <= 1) == res.passed or math.isclose(res.ratio, 1.0, rel_tol=1e-12)
    assert (res.status == "bound") == (not res.passed)
