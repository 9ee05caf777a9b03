"""Standard-block variants (constructions.standard): every substitution checked against the idealised model, and
each registered variant within its claimed bound of the exact reference (hypothesis over small S, V, T, including
ill-conditioned HMMs)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions import registry
from constructions.runner import run_construction
from constructions.standard import compile_standard
from constructions.standard_variants import standard_bound
from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture
from hmm.model import HMM
from hmm.testing import rational_hmms, rational_mixtures, token_sequences
from tests.test_constructions.cli_run import ILL_DATA, run_json


@st.composite
def ill_conditioned_hmms(draw, max_states: int = 3, max_obs: int = 3) -> HMM:
    """Sticky chains with near-deterministic emissions: off-diagonal mass eps in {1e-3, 1e-9, 0}."""
    S = draw(st.integers(2, max_states))
    V = draw(st.integers(2, max_obs))
    eps = draw(st.sampled_from([Fraction(1, 10**3), Fraction(1, 10**9), Fraction(0)]))
    A = [[(1 - eps) if i == j else eps / (S - 1) for j in range(S)] for i in range(S)]
    B = [[(1 - eps) if o == i % V else eps / (V - 1) for o in range(V)] for i in range(S)]
    pi = [Fraction(1, S)] * S
    return HMM.from_arrays(pi, A, B, exact=True)


HMMS = st.one_of(rational_hmms(min_states=1, max_states=3, min_obs=1, max_obs=3), ill_conditioned_hmms())


def _params(entry, **over):
    p = {q.name: q.default for q in entry.params}
    p.update(over)
    return p


def _context(name, ctx):
    """One sampled context in the construction's token format (through its CLI parser, as verify does)."""
    text = " | ".join(" ".join(str(int(v)) for v in seg) for seg in ctx.segments(0))
    return registry.get(name).parse_tokens(text)


def _check(name, source, tokens, kind=None, **over):
    """Both float modes within the claimed bound; float64 a real claim (of roundoff kind ``kind`` when given)."""
    entry = registry.get(name)
    p = _params(entry, **over)
    std = entry.build(source, tokens, attention=entry.attention.attention, beta=entry.attention.beta, **p)
    for mode in ("float64", "float32"):
        r = run_construction(entry, source, tokens, mode=mode, params=p, model=std)
        assert r.max_abs_error <= r.bound.value, (name, mode, r.max_abs_error, r.bound)
        if mode == "float64":
            assert r.bound.value < 1e-9, r.bound  # a real claim, not the trivial bound
            assert kind is None or r.bound.roundoff_kind == kind, r.bound
    return std


# ---------------------------------------------------------------------------------------------- variants vs exact
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_exact_filter_std_within_bound(data):
    h = data.draw(HMMS)
    x = data.draw(token_sequences(h, min_len=1, max_len=10))
    std = _check("exact-filter-std", h, x, kind="derived")  # the idealised derived bound applies (fresh blocks)
    assert set(std.info.dropped_norms) <= {"op", "op_alt"} and not any(n.startswith("std.held") for n in std.layout.names)


@settings(max_examples=5, deadline=None)
@given(data=st.data(), r=st.integers(1, 3), readout=st.sampled_from(["lookup", "product"]))
def test_window_std_within_bound(data, r, readout):
    h = data.draw(HMMS)
    x = data.draw(token_sequences(h, min_len=1, max_len=8))
    from constructions.window_filter import lookup_width

    if readout == "lookup" and lookup_width(h.num_obs, r) > 200:
        readout = "product"
    _check("window-std", h, x, r=r, readout=readout, prior="uniform")


@settings(max_examples=3, deadline=None)
@given(mix=rational_mixtures(max_tasks=2, max_states=2, max_obs=2), seed=st.integers(0, 100))
def test_bayes_multitask_std_within_bound(mix, seed):
    from hmm.sampling import sample_contexts

    ctx = sample_contexts(mix, 1, 2, 3, 2, seed=seed)
    _check("bayes-multitask-std", mix, _context("bayes-multitask-std", ctx), kind="derived")


@settings(max_examples=3, deadline=None)
@given(mix=rational_mixtures(max_tasks=2, max_states=2, num_obs=2), seed=st.integers(0, 100), K=st.integers(1, 3))
def test_icl_std_within_bound(mix, seed, K):
    from hmm.sampling import sample_contexts

    ctx = sample_contexts(mix, 1, 2, 3, 2, seed=seed)
    _check("icl-std", mix, _context("icl-std", ctx), r=1, K=K)


@pytest.mark.parametrize("kind, rpe", [("type1", "log"), ("type2", "lin")])
def test_adaptive_memory_std_within_bound(kind, rpe):
    entry = registry.get("adaptive-memory-std")
    x = entry.parse_tokens(entry.default_tokens)
    p = _params(entry, kind=kind, rpe=rpe)
    for mode in ("float64", "float32"):
        r = run_construction(entry, None, x, mode=mode, params=p)
        assert r.max_abs_error <= r.bound.value < 1e-3, (mode, r.max_abs_error, r.bound)
        assert "patterns equal to the hard ones" in r.bound.notes


def test_memory_kernel_std_matches_the_idealised_model_and_its_bound():
    entry = registry.get("memory-kernel-std")
    x = entry.parse_tokens("0.5 -1 0.25 0 1 -0.5 0.75")
    p = _params(entry, prefix=4, heads=2)
    std = entry.build(None, x, attention="softmax", beta=1.0, **p)
    ideal = std.idealised
    for mode in ("float64", "float32"):
        got, want = std.run(x, mode).outputs, ideal.run(x, mode).outputs
        tol = 1e-13 if mode == "float64" else 1e-5
        for k in ("y", "memory"):
            np.testing.assert_allclose(got[k].double().numpy(), want[k].double().numpy(), rtol=0, atol=tol)
        r = run_construction(entry, None, x, mode=mode, params=p, model=std)
        assert r.max_abs_error <= r.bound.value


# ---------------------------------------------------------------------------------------------- substitutions
def _h1(S=2, T=6, seed=0):
    from hmm.sampling import sample
    from hmm.zoo import make

    h = make("dirichlet", S, 3, seed=seed, rational=True)
    return h, sample(h, 1, T, seed=seed + 1).tokens[0]


@pytest.mark.parametrize("act", ["relu", "gelu", "silu"])
def test_gated_units_reproduce_bilinear_units_for_every_activation(act):
    from constructions.exact_filter import build

    h, x = _h1()
    ideal = build(h, len(x))
    std = compile_standard(ideal, act=act, drop_norms=True)
    got = std.run(x, "float64").outputs["next_token_probs"].numpy()
    want = ideal.run(x, "float64").outputs["next_token_probs"].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    # relu: a unit with a constant factor needs one gated unit, every other bilinear unit two
    m = ideal.layers[0].ffn.width
    assert std.config.d_mlp <= 2 * m


@pytest.mark.parametrize("act", ["relu", "gelu", "silu"])
def test_hard_attention_becomes_exactly_one_hot_softmax_and_the_fresh_block_clears_are_exact(act):
    from constructions.exact_filter import build
    from constructions.prefix import op_block

    h, x = _h1(S=3, T=9)
    ideal = build(h, len(x))
    std = compile_standard(ideal, act=act, drop_norms=True, mass_scale={"op": 3})
    assert std.config.n_heads == 1  # the idealised heads only: no extra head in the fresh-block layout
    ids = std.check_input_ids(std.codec.encode(x))
    tr = std.forward(ids)
    ti = ideal.forward(ids)
    for l, pat in enumerate(tr.attn_weights):
        assert torch.equal(pat, ti.attn_weights[l])  # bit-identical one-hot weights (e^-4096 underflows)
        assert set(torch.unique(pat).tolist()) <= {0.0, 1.0}
    fetched = std.layout["fetched_op"]
    for l in ideal.info.prefix_layers:
        old, new = std.layout[op_block(l)], std.layout[op_block(l + 1)]
        assert torch.all(tr.residuals[l + 1][..., old] == 0)  # Q - Q = 0 exactly, not round-off (any activation)
        assert torch.all(tr.residuals[l + 1][..., fetched] == 0)  # F - F = 0 exactly
        a = tr.residuals[l + 1][..., new]
        b = ti.residuals[l + 1][..., new]
        scale = a.sum(-1, keepdim=True) / b.sum(-1, keepdim=True)
        torch.testing.assert_close(a, b * scale, rtol=1e-13, atol=0)  # the idealised product up to a positive scale


def test_positions_reproduce_arbitrary_relative_bias_tables_exactly():
    entry = registry.get("memory-kernel")
    x = entry.parse_tokens("0.25 -0.5 1")
    ideal = entry.build(None, x, attention="softmax", beta=1.0, **_params(entry, prefix=4))
    std = compile_standard(ideal, head_blocks=("y", "mem"))
    ids = std.check_input_ids(std.codec.encode(x))
    ti = ideal.forward(ids)
    tr = std.forward(ids)
    for h in range(len(ideal.layers[0].heads)):
        torch.testing.assert_close(tr.attn_weights[0][:, h], ti.attn_weights[0][:, h], rtol=1e-14, atol=1e-300)


def test_a_too_small_beta_is_caught_by_the_pattern_check():
    from constructions.exact_filter import build
    from constructions.standard_variants import standard_bound

    h, x = _h1(T=7)
    std = compile_standard(build(h, len(x)), drop_norms=True, beta=2.0, bound_fn=standard_bound)
    b = std.claimed_bound(x, "float64")
    assert b.value == 1.0 and "hard attention not reproduced" in b.notes


def test_what_cannot_be_compiled_is_a_clear_error():
    from constructions.exact_filter import build
    from constructions.window_filter import build as wbuild

    h, x = _h1()
    with pytest.raises(HmmtxError, match="projective normalisation.*no standard-block variant"):
        compile_standard(build(h, len(x)))
    with pytest.raises(HmmtxError, match="ReLU FFNs.*--act relu"):
        compile_standard(wbuild(h, 2, max_len=len(x)), act="gelu")
    with pytest.raises(HmmtxError, match="--act"):
        compile_standard(wbuild(h, 2, max_len=len(x)), act="tanh")
    entry = registry.get("exact-filter-std")
    with pytest.raises(HmmtxError, match="--attention hard"):
        entry.build(h, x, attention="softmax", beta=5.0)
    std = entry.build(h, x)
    with pytest.raises(HmmtxError, match="float64/float32"):
        std.run(x, "exact")


def test_past_the_length_limit_the_bound_is_the_trivial_one():
    # alternating tokens of a sticky chain with near-deterministic emissions: each product loses a factor ~ eps S,
    # so the unnormalised masses leave float32's normal range after a few dozen tokens
    eps = Fraction(1, 10**4)
    h = HMM.from_arrays([Fraction(1, 2)] * 2, [[1 - eps, eps], [eps, 1 - eps]], [[1 - eps, eps], [eps, 1 - eps]], exact=True)
    x = np.array([0, 1] * 20)
    std = registry.get("exact-filter-std").build(h, x)
    short = standard_bound(std, x[:4], "float32")
    assert short.value < 1e-3 and short.roundoff_kind == "derived" and "no-underflow condition checked" in short.notes
    long = standard_bound(std, x, "float32")
    assert long.value == long.trivial and long.roundoff_kind == "trivial" and "length limit" in long.notes
    assert standard_bound(std, x, "float64").value < 1e-9  # float64 still covers it


def test_sizes_are_reported_against_the_idealised_model():
    from constructions.standard import size_table

    h, x = _h1(T=5)
    std = registry.get("exact-filter-std").build(h, x)
    t = size_table(std)
    assert t["idealised"]["layers"] == t["standard"]["layers"]
    # hard tents: the quadratic position code (p, p^2) instead of a one-hot: std.one and std.pos2 only
    assert t["standard"]["width"] == t["idealised"]["width"] + 1 + 2 and "std.pos2" in std.layout
    assert t["standard"]["heads"] == t["idealised"]["heads"]
    assert 0 < t["standard"]["nonzero_parameters"] < t["standard"]["dense_parameters"]
    names = [s.what for s in std.substitutions]
    assert any("projective" in n for n in names) and any("output normalisation" in n for n in names)


# ---------------------------------------------------------------------------------------------- ill-conditioned cases
def _case_args(case):
    data = ILL_DATA
    tok = lambda name: (data / name).read_text().strip()  # noqa: E731
    return {
        "V1": ("exact-filter-std", "--hmm", str(data / "v1_h1_float64_illcond.json"), "--tokens",
               "1 0 1 0 1 1 1 0 0 0 1 1 0 1 0 0"),
        "V2": ("exact-filter-std", "--hmm", str(data / "v2_h1_float64_nextpred.json"), "--tokens",
               "1 1 0 0 2 2 0 0 2 2 0 1 1 2 1 0 2 1 2 2 1 2 0 2 0 0 2 1 1 0 2", "--filtered", "false"),
        "V4": ("bayes-multitask-std", "--tasks", str(data / "v4_h3_mixture.json"), "--tokens", tok("v4_tokens.txt")),
        "V4b": ("bayes-multitask-std", "--tasks", str(data / "c4_h3_float32_mixture.json"), "--tokens",
                tok("c4_tokens.txt")),
    }[case]


@pytest.mark.parametrize("case", ["V1", "V2", "V4", "V4b"])
def test_ill_conditioned_cases_hold_the_derived_bound_through_the_std_variants(tmp_path, case):
    """V1, V2, V4 (and V4b) of the certified-verdicts issue through the standard-block variants in float64: the
    idealised derived (relative) round-off bound, not a heuristic allowance, and far inside it."""
    data = run_json(tmp_path, *_case_args(case), "--mode", "float64")
    assert data["bound"]["roundoff_kind"] == "derived", data["bound"]["notes"]
    assert data["claimed_bound"] <= 1e-12 and data["max_abs_error"] <= 1e-14


def test_gelu_variant_states_its_activation_term_as_heuristic(tmp_path):
    relu = run_json(tmp_path, *_case_args("V1"), "--mode", "float64")
    gelu = run_json(tmp_path, *_case_args("V1"), "--mode", "float64", "--act", "gelu")
    assert gelu["bound"]["roundoff_kind"] == "heuristic" and "heuristic" in gelu["bound"]["notes"]
    assert relu["claimed_bound"] < gelu["claimed_bound"] <= 1e-12 and gelu["max_abs_error"] <= 1e-14


def test_past_the_float32_length_limit_the_std_variant_says_why(capsys):
    """V2 in float32: the unnormalised masses (the sequence's probability, ~1e-50) underflow; a one-line error that
    names the length limit, exit 2 (the idealised model, normalised at every layer, handles it)."""
    from verify.cli import main

    rc = main(["run", *_case_args("V2"), "--mode", "float32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "length limit" in err[0], err


@pytest.mark.parametrize("case, mode", [("V1", "float64"), ("V4b", "float32")])
def test_certify_encloses_the_reference_of_a_std_variant_run(tmp_path, case, mode):
    """``--certify`` on a standard variant encloses its idealised construction (exact substitutions; hard attention:
    the exact reference) and judges the variant's float run against the balls."""
    data = run_json(tmp_path, *_case_args(case), "--mode", mode, "--certify")
    c = data["certified"]
    assert c["contains_reference"] is True and c["within"] is True and c["radius"] < 1e-30


@pytest.mark.parametrize("name", ["exact-filter-std", "bayes-multitask-std"])
def test_verify_plans_no_float32_case_past_the_stated_length_limit(name):
    """verify --full used to plan float32 cases at T = 1024 for the prefix variants, whose unnormalised masses
    underflow there on the cyclic family (S = 8): 5 crashes "zero total mass". The variants state their float32 limit
    (VerifySweep.max_lengths) and verify plans no case beyond it; float64 still runs at T = 1024, float32 at 256."""
    from constructions.standard_variants import PREFIX_FLOAT32_MAX_LENGTH
    from verify.suite import FULL, adapter_for

    entry = registry.get(name)
    assert entry.verify.max_length("float32") == PREFIX_FLOAT32_MAX_LENGTH == 256
    assert entry.verify.max_length("float64") is None
    cases = adapter_for(entry).cases(FULL)
    f32 = [c.length for c in cases if c.dtype == "float32"]
    f64 = [c.length for c in cases if c.dtype == "float64"]
    assert f32 and max(f32) == PREFIX_FLOAT32_MAX_LENGTH
    assert max(f64) == max(FULL.lengths) == 1024
    # the idealised constructions (projectively normalised) keep their float32 cases at T = 1024
    base = [c.length for c in adapter_for(registry.get(name[:-4])).cases(FULL) if c.dtype == "float32"]
    assert max(base) == 1024
    # the reported crashing selection (float32, T = 1024) now plans no case of theirs
    plan = dataclasses.replace(FULL, lengths=(1024,), dtypes=("float32",))
    assert adapter_for(entry).cases(plan) == []
    # ... and the report says so rather than dropping them silently; nothing to say where the plan fits the limit
    from verify.suite import stated_limit_lines
    lines = stated_limit_lines([adapter_for(entry), adapter_for(registry.get(name[:-4]))], plan)
    assert lines == [f"{name}: float32 cases longer than T = 256 not planned (stated length limit)"]
    assert stated_limit_lines([adapter_for(entry)], dataclasses.replace(plan, lengths=(8, 256))) == []
    assert stated_limit_lines([adapter_for(entry)], dataclasses.replace(plan, dtypes=("float64",))) == []


def test_verify_sweep_refuses_a_malformed_length_limit():
    from constructions.registry import VerifySweep

    for bad in [("float32",), ("float32", 0), ("float32", True), (32, 256)]:
        with pytest.raises(HmmtxError, match="max_lengths"):
            VerifySweep(max_lengths=(bad,))
    assert VerifySweep(max_lengths=(("float32", 8),)).max_length("float32") == 8
