"""``hmmtx run`` / ``hmmtx inspect`` for the registered constructions (in-process through verify.cli.main)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from hmm.mixture import bayes_predictive_exact
from hmm.io import load_mixture, parse_context
from hmm.reference import forward_filter_exact
from hmm.io import load_hmm
from verify.cli import main

HMM_JSON = {
    "initial_probs": ["1/2", "1/2"],
    "transition_matrix": [["3/4", "1/4"], ["1/3", "2/3"]],
    "emission_probs": [["1/2", "1/4", "1/4"], ["0", "1/2", "1/2"]],
}
TASKS_JSON = {
    "task_prior": ["1/3", "2/3"],
    "tasks": [HMM_JSON, {"initial_probs": ["1"], "transition_matrix": [["1"]], "emission_probs": [["1/5", "3/5", "1/5"]]}],
}


@pytest.fixture()
def files(tmp_path):
    h = tmp_path / "h.json"
    h.write_text(json.dumps(HMM_JSON))
    m = tmp_path / "m.json"
    m.write_text(json.dumps(TASKS_JSON))
    return tmp_path, h, m


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_run_exact_filter_exact_mode_json(files, capsys):
    d, h, _ = files
    out_json = d / "o.json"
    rc, out, err = _run(capsys, ["run", "exact-filter", "--hmm", str(h), "--tokens", "0 1 2 1 0", "--mode", "exact",
                                 "--json", str(out_json)])
    assert rc == 0, err
    data = json.loads(out_json.read_text())
    for key in ("construction", "mode", "next_token_probs", "reference_next_token_probs", "max_abs_error",
                "claimed_bound", "layers", "heads", "width"):
        assert key in data
    assert data["construction"] == "exact-filter" and data["mode"] == "exact"
    ref = forward_filter_exact(load_hmm(h), np.array([0, 1, 2, 1, 0]))
    assert data["next_token_probs"] == [[str(v) for v in row] for row in ref.next_token_probs]
    assert data["reference_next_token_probs"] == data["next_token_probs"]
    assert data["max_abs_error"] == 0.0 and data["bit_identical"] is True and data["claimed_bound"] == 0.0
    assert data["layers"] == 4 and data["heads"] == 1 and data["width"] == 3 * 4 + 3 + 3 + 4  # S = 2, V = 3
    assert "next-token probabilities" in out and "bit-identical to the exact reference: yes" in out


def test_run_bayes_multitask_float_and_softmax(files, capsys):
    d, _, m = files
    out_json = d / "o.json"
    rc, out, err = _run(capsys, ["run", "bayes-multitask", "--tasks", str(m), "--tokens", "0 1 2 | 1 0 | 2",
                                 "--json", str(out_json)])
    assert rc == 0, err
    data = json.loads(out_json.read_text())
    ref = bayes_predictive_exact(load_mixture(m), parse_context("0 1 2 | 1 0 | 2"))
    assert len(data["next_token_probs"]) == 8 and len(data["task_posterior"]) == 8
    np.testing.assert_allclose(data["task_posterior"], np.vectorize(float)(ref.task_posterior), rtol=0, atol=1e-15)
    assert data["max_abs_error"] <= 1e-12 and data["max_abs_error"] <= data["claimed_bound"]
    assert "task posterior" in out
    rc, out, err = _run(capsys, ["run", "bayes-multitask", "--tasks", str(m), "--tokens", "0 1 2 | 1 0 | 2",
                                 "--attention", "softmax", "--beta", "8", "--json", str(out_json)])
    assert rc == 0, err
    data = json.loads(out_json.read_text())
    assert data["attention"] == "softmax" and data["beta"] == 8.0
    assert 0 < data["max_abs_error"] <= data["claimed_bound"] < 1
    assert data["bound"]["leakage"] > 0 and data["bound_ratio"] == pytest.approx(data["max_abs_error"] / data["claimed_bound"])


@pytest.mark.parametrize(
    "argv_tail, fragment",
    [
        (["--tokens", "0 1 7"], "out of range"),
        (["--tokens", "0 x 1"], "not an integer"),
        (["--tokens", "0 | 1"], "'|' separates"),
        (["--tokens", "1 0 0", "--mode", "exact"], "probability zero"),  # z_0 = 1 can emit 1; make 0 impossible below
        (["--tokens", "0 1", "--attention", "softmax"], "beta"),
        (["--tokens", "0 1", "--beta", "3"], "--beta applies to --attention softmax"),
        (["--tokens", "0 1", "--attention", "softmax", "--beta", "2", "--mode", "exact"], "hard attention only"),
        (["--tokens", "0 1", "--mode", "float16"], "invalid choice"),
    ],
)
def test_run_bad_input_exits_2_with_one_line(files, capsys, argv_tail, fragment):
    d, h, _ = files
    if fragment == "probability zero":
        impossible = dict(HMM_JSON, initial_probs=["0", "1"])  # state 1 never emits 0
        h = d / "imp.json"
        h.write_text(json.dumps(impossible))
        argv_tail = ["--tokens", "0 1 1"]
    rc, out, err = _run(capsys, ["run", "exact-filter", "--hmm", str(h)] + argv_tail)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hmmtx: error:") and fragment in lines[0], err


def test_run_unknown_construction_missing_file_and_wrong_source(files, capsys):
    d, h, m = files
    rc, _, err = _run(capsys, ["run", "nope"])
    assert rc == 2 and "unknown construction 'nope'" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, ["run", "exact-filter", "--hmm", str(d / "missing.json"), "--tokens", "0"])
    assert rc == 2 and "not found" in err
    rc, _, err = _run(capsys, ["run", "bayes-multitask", "--hmm", str(h), "--tokens", "0"])
    assert rc == 2 and "--tasks" in err


def test_exact_json_never_crashes_on_huge_rationals():
    from verify.commands.run import _num

    from hmm.io import parse_fraction_full

    big = Fraction(10**5000 + 1, 3 * 10**4999 + 7)
    s = _num(big)  # written in full (bit-exactness can be re-checked from the JSON), past Python's 4300-digit limit
    assert len(s) > 10000 and parse_fraction_full(s) == big
    assert _num(Fraction(1, 3)) == "1/3"


def test_inspect_prints_layout_and_named_rows(files, capsys):
    d, h, m = files
    rc, out, err = _run(capsys, ["inspect", "exact-filter", "--hmm", str(h), "--layer", "0", "--max-cols", "6"])
    assert rc == 0, err
    assert "residual layout" in out and "fetched_op" in out and "is_null" in out
    assert "lag1.W_O" in out and "fetched_op[1,1]" in out and "F[0,1]*Q[1," in out
    assert "projective normalisation (non-standard)" in " ".join(out.split())  # rich wraps long lines
    png = d / "w.png"
    rc, out, err = _run(capsys, ["inspect", "bayes-multitask", "--tasks", str(m), "--layer", "readout", "--plot", str(png)])
    assert rc == 0, err
    flat = " ".join(out.split())
    assert "task_posterior.W_U" in flat and "task 1" in flat
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, err = _run(capsys, ["inspect", "exact-filter", "--hmm", str(h), "--layer", "99"])
    assert rc == 2 and "layers 0.." in err
