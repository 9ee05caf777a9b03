"""The example files the README's tour uses load, and the constructions run on them bit-exactly."""

from pathlib import Path

import json

from verify.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(argv, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main([*argv, "--json", str(out)]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())


def test_exact_filter_on_the_example_hmm_is_bit_exact(tmp_path, capsys):
    rep = _run(["run", "exact-filter", "--hmm", str(EXAMPLES / "hmm.json"), "--tokens", "0 1 2 2", "--mode", "exact"],
               tmp_path, capsys)
    assert rep["max_abs_error"] in (0, "0")
    assert rep["next_token_probs"] == rep["reference_next_token_probs"]


def test_bayes_multitask_on_the_example_tasks_is_bit_exact(tmp_path, capsys):
    rep = _run(["run", "bayes-multitask", "--tasks", str(EXAMPLES / "tasks.json"), "--tokens", "0 1 2 | 1 0 | 2",
                "--mode", "exact"], tmp_path, capsys)
    assert rep["next_token_probs"] == rep["reference_next_token_probs"]
    assert len(rep["task_posterior"]) == len(rep["next_token_probs"]) == 8
