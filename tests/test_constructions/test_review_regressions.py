"""Regression tests for claims that review broke: ill-conditioned HMMs against the round-off allowance, float
mixtures in exact mode, icl step sizes past convergence, non-finite outputs and `run -h`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verify.cli import main

TOKENS = "0 0 0 1 1 1 0 0 0 1 1 1 1 0 0 0 0 1 0 1"


def _near_deterministic(d: float) -> dict:
    M = [[1 - d, d], [d, 1 - d]]
    return {"initial_probs": [0.5, 0.5], "transition_matrix": M, "emission_probs": M}


def _run_json(argv, tmp_path, capsys):
    out = tmp_path / "o.json"
    rc = main([*argv, "--json", str(out)])
    capsys.readouterr()
    return rc, json.loads(out.read_text())


@pytest.mark.parametrize("d, mode", [(1e-3, "float64"), (1e-4, "float64"), (1e-12, "float64"),
                                     (1e-4, "float32"), (1e-6, "float32")])
def test_h1_ill_conditioned_error_within_the_cancellation_weighted_allowance(d, mode, tmp_path, capsys):
    f = tmp_path / "h.json"
    f.write_text(json.dumps(_near_deterministic(d)))
    rc, rep = _run_json(["run", "exact-filter", "--hmm", str(f), "--tokens", TOKENS, "--mode", mode], tmp_path, capsys)
    assert rc == 0 and rep["within_bound"]
    assert rep["max_abs_error"] <= rep["claimed_bound"]
    if mode == "float64" and d >= 1e-4:
        assert rep["claimed_bound"] < 1e-8  # still a useful claim, not the trivial bound


def test_h3_ill_conditioned_mixture_within_bound(tmp_path, capsys):
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"task_prior": [0.5, 0.5], "tasks": [_near_deterministic(1e-3), _near_deterministic(1e-2)]}))
    rc, rep = _run_json(["run", "bayes-multitask", "--tasks", str(f), "--tokens", "0 0 0 1 1 1 0 0 | 0 1 0 1 0 1 | 1 1 0"],
                        tmp_path, capsys)
    assert rc == 0 and rep["max_abs_error"] <= rep["claimed_bound"]


def test_float_mixture_with_inexact_prior_runs_in_exact_mode(tmp_path, capsys):
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"task_prior": [0.3, 0.7], "tasks": [_near_deterministic(0.1), _near_deterministic(0.2)]}))
    rc, rep = _run_json(["run", "bayes-multitask", "--tasks", str(f), "--tokens", "0 1 | 1", "--mode", "exact"],
                        tmp_path, capsys)
    assert rc == 0 and rep["bit_identical"] is True


def test_icl_step_size_past_convergence_claims_only_a_trivial_bound(tmp_path, capsys):
    tasks = str(Path(__file__).resolve().parents[2] / "examples" / "tasks.json")
    rc, rep = _run_json(["run", "icl", "--tasks", tasks, "--tokens", "0 1 2 0 1 | 2 2 0 1 | 1 0 2 2 | 0 1",
                         "--features", "concat", "--eta", "5", "--K", "30"], tmp_path, capsys)
    assert rc == 0 and rep["max_abs_error"] <= rep["claimed_bound"]
    assert rep["claimed_bound"] >= 1  # no round-off claim for a possibly divergent iteration


def test_non_finite_outputs_are_one_error_line(capsys):
    rc = main(["run", "memory-kernel", "--tokens", "1 -0.2 0.3 0.5 -1 0.2 1 1 -0.3 0.2 0.1 0.4 -1 -1 1 1 -1 -1 1 1",
               "--attention", "softmax", "--beta", "1", "--heads", "64", "--mode", "float32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "non-finite" in err[0]


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_help_before_the_name_lists_constructions(command, capsys):
    assert main([command, "-h"]) == 0
    assert "exact-filter" in capsys.readouterr().out


def test_memory_kernel_runs_with_its_registry_attention_defaults(tmp_path, capsys):
    rc, rep = _run_json(["run", "memory-kernel", "--tokens", "1/2 -1 1/4 0 1"], tmp_path, capsys)
    assert rc == 0 and rep["within_bound"]
    assert main(["inspect", "memory-kernel"]) == 0
