"""Regression inputs V1-V4 and C1-C5 of the certified-verdicts issue (copies of ``shared/cases/ill-conditioned`` in
``tests/data/ill_conditioned``): every case runs through ``hmmtx run`` in-process, stays within its claimed bound,
and is neither refused nor crashes; the JSON is valid and exact values are written in full."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from constructions.blocks import positional_targets
from hmm.io import fraction_full, parse_fraction_full
from tests.test_constructions.cli_run import ILL_DATA as DATA
from tests.test_constructions.cli_run import run_json as _run




def _tokens(name: str) -> str:
    return (DATA / name).read_text().strip()


V1 = ("exact-filter", "--hmm", str(DATA / "v1_h1_float64_illcond.json"), "--tokens", "1 0 1 0 1 1 1 0 0 0 1 1 0 1 0 0")
V2 = ("exact-filter", "--hmm", str(DATA / "v2_h1_float64_nextpred.json"), "--tokens",
      "1 1 0 0 2 2 0 0 2 2 0 1 1 2 1 0 2 1 2 2 1 2 0 2 0 0 2 1 1 0 2", "--filtered", "false")


@pytest.mark.parametrize("args", [
    pytest.param(V1 + ("--mode", "float64"), id="V1"),
    pytest.param(V2 + ("--mode", "float64"), id="V2"),
    pytest.param(("exact-filter", "--hmm", str(DATA / "c2_h1_float64_refuses_valid.json"), "--tokens", "0 1 0 1 0 1 0 1",
                  "--mode", "float64"), id="C2"),
    pytest.param(("bayes-multitask", "--tasks", str(DATA / "v4_h3_mixture.json"), "--tokens", _tokens("v4_tokens.txt"),
                  "--mode", "float64"), id="V4"),
    pytest.param(("bayes-multitask", "--tasks", str(DATA / "c4_h3_float32_mixture.json"), "--tokens",
                  _tokens("c4_tokens.txt"), "--mode", "float64"), id="V4b"),
    pytest.param(("bayes-multitask", "--tasks", str(DATA / "c4_h3_float32_mixture.json"), "--tokens",
                  _tokens("c4_tokens.txt"), "--mode", "float32"), id="C4"),
])
def test_prefix_cases_hold_a_derived_relative_bound(tmp_path, args):
    data = _run(tmp_path, *args)
    assert data["bound"]["roundoff_kind"] == "derived"
    # relative, not conditioning-dependent: float64 bounds stay near 1e-13, float32 near 1e-4
    assert data["claimed_bound"] <= (1e-4 if "float32" in args else 1e-12)
    assert data["max_abs_error"] <= (1e-6 if "float32" in args else 1e-14)


def test_v2_softmax_beta_50_within_bound(tmp_path):
    data = _run(tmp_path, *V2, "--mode", "float64", "--attention", "softmax", "--beta", "50")
    assert data["max_abs_error"] <= 1e-14 and data["bound"]["roundoff_kind"] == "heuristic"


def test_v3_memory_kernel_mask_is_divided_by_beta(tmp_path):
    vals = " ".join(str(k / 8) for k in list(range(-8, 9)) + list(range(-8, 7)))
    data = _run(tmp_path, "memory-kernel", "--tokens", vals, "--heads", "8", "--readout", "tanh", "--mode", "float64",
                "--attention", "softmax", "--beta", "0.001")
    at_one = _run(tmp_path, "memory-kernel", "--tokens", vals, "--heads", "8", "--readout", "tanh", "--mode",
                  "float64", "--attention", "softmax", "--beta", "1")
    # beta changes nothing (every bias, the lag-0 mask included, is divided by it)
    assert np.allclose(np.array(data["y"], dtype=float), np.array(at_one["y"], dtype=float), rtol=0, atol=1e-9)


@pytest.mark.parametrize("tokens", ["0 1 0 1 0", "0 1 0 1 0 1 1 0 0 1 1 1 0"])
def test_c1_window_product_readout_holds_a_derived_relative_bound(tmp_path, tokens):
    data = _run(tmp_path, "window", "--hmm", str(DATA / "c1_window_product_overflow.json"), "--tokens", tokens,
                "--r", "4", "--readout", "product")
    # entries near 1e-170: the normalised vector chain stays in range; the bound is the derived relative one
    assert data["bound"]["roundoff_kind"] == "derived"
    assert data["claimed_bound"] <= 1e-13 and data["max_abs_error"] <= 1e-15


def test_c3_icl_json_has_no_nan(tmp_path):
    data = _run(tmp_path, "icl", "--tasks", str(DATA / "c3_icl_tasks_V3.json"), "--tokens", _tokens("c3_tokens.txt"),
                "--r", "1", "--K", "64", "--eta", "5", "--mode", "float32")
    assert "masses" in data["non_finite_outputs"] and data["errors"]["masses"] is None


def test_exact_json_values_are_written_in_full(tmp_path):
    data = _run(tmp_path, *V1, "--mode", "exact")
    vals = [parse_fraction_full(v) for row in data["next_token_probs"] for v in row]
    assert all(isinstance(v, Fraction) for v in vals) and sum(vals[:2]) == 1
    big = Fraction(3**9000 + 1, 7**6000)  # > 4300 digits: Python's default str() limit
    assert parse_fraction_full(fraction_full(big)) == big


@pytest.mark.parametrize("P", [1, 2, 7, 64, 300])
def test_positional_targets_match_the_dense_argmax(P):
    """C5: hard targets from a running argmax (O(P) memory) equal the (P, P) score-map argmax they replace."""
    rng = np.random.default_rng(P)
    for bias in (np.array([-abs(lag - 4) for lag in range(P)], dtype=float), rng.integers(-5, 0, P).astype(float)):
        lag = np.arange(P)[:, None] - np.arange(P)[None, :]
        sc = np.where(lag >= 0, bias[np.clip(lag, 0, None)], -np.inf)
        unique = bool(((sc == sc.max(axis=1, keepdims=True)).sum(axis=1) == 1).all())
        t, u = positional_targets(bias, P)
        assert u == unique
        if unique:
            assert np.array_equal(t, sc.argmax(axis=1))


def test_c5_bound_inputs_need_no_attention_maps():
    """The bound's hard run keeps every layer's states but no (P, P) attention map."""
    from constructions.exact_filter import build
    from constructions.prefix import hard_trace_for_bound
    from hmm.zoo import make

    hmm = make("mess3")
    model = build(hmm, 300)
    tr = hard_trace_for_bound(model, model.codec.encode(np.zeros(300, dtype=int)))
    assert all(w is None for w in tr.attn_weights) and all(a is not None for a in tr.after_attn)
    b = model.claimed_bound(np.zeros(300, dtype=int), "float64")
    assert b.roundoff_kind == "derived" and 0 < b.value < 1e-11 and math.isfinite(b.value)
