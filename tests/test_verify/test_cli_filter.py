"""``hmmtx filter``: the table, the JSON (float and exact), and every bad input as one stderr line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hmm import zoo
from hmm.io import hmm_from_dict, save_hmm
from hmm.reference import forward_filter, forward_filter_exact
from verify.cli import main

GOOD = {"initial_probs": ["1/2", "1/2"], "transition_matrix": [["1/3", "2/3"], ["1", "0"]], "emission_probs": [["1/4", "3/4"], ["1/2", "1/2"]]}


def _file(tmp_path: Path, obj, name="h.json") -> str:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def _run(capsys, *argv):
    try:
        code = main(["filter", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_float_table_and_json(tmp_path, capsys):
    h = zoo.make("dirichlet", 3, 2, seed=0)
    f = str(save_hmm(h, tmp_path / "d.json"))
    out_json = tmp_path / "out.json"
    code, out, err = _run(capsys, "--hmm", f, "--tokens", "0 1 1 0", "--json", str(out_json))
    assert code == 0 and err == ""
    assert "P(z_t | x_0..t)" in out and "P(x_t+1 | x_0..t)" in out and "log P(x_0..x_3)" in out
    data = json.loads(out_json.read_text())
    ref = forward_filter(h, [0, 1, 1, 0])
    for key in ("filtered_probs", "predicted_probs", "next_token_probs"):
        assert np.array(data[key]).shape == (4, {"next_token_probs": 2}.get(key, 3))
        np.testing.assert_allclose(data[key], getattr(ref, key), rtol=0, atol=1e-15)
    assert data["marginal_loglik"] == pytest.approx(ref.marginal_loglik, rel=1e-14)
    assert data["tokens"] == [0, 1, 1, 0] and data["exact"] is False


def test_exact_json_has_full_fractions(tmp_path, capsys):
    f = _file(tmp_path, GOOD)
    out_json = tmp_path / "e.json"
    code, out, err = _run(capsys, "--hmm", f, "--tokens", "1,0,1", "--exact", "--json", str(out_json))
    assert code == 0 and err == ""
    assert "3/5" in out  # P(z_0 | x_0 = 1) = (3/5, 2/5)
    data = json.loads(out_json.read_text())
    ref = forward_filter_exact(hmm_from_dict(GOOD), [1, 0, 1])
    for key in ("filtered_probs", "predicted_probs", "next_token_probs"):
        assert [[Fraction(v) for v in row] for row in data[key]] == getattr(ref, key).tolist()
    assert data["filtered_probs"][0] == ["3/5", "2/5"]
    assert Fraction(data["sequence_probability"]) > 0


def test_exact_mode_with_huge_numbers_does_not_crash(tmp_path, capsys):
    # a float HMM converted exactly: ~32 digits per step, beyond Python's 4300-digit str() limit at T = 160
    h = zoo.make("dirichlet", 2, 2, seed=1)
    f = str(save_hmm(h, tmp_path / "d.json"))
    toks = " ".join(str(v) for v in np.random.default_rng(0).integers(0, 2, 160))
    out_json = tmp_path / "big.json"
    code, out, err = _run(capsys, "--hmm", f, "--tokens", toks, "--exact", "--json", str(out_json))
    assert code == 0 and err == "" and "digits)" in out
    data = json.loads(out_json.read_text())
    last = data["next_token_probs"][-1][0]
    assert len(last) > 4300 and "/" in last


BAD_HMMS = {
    "non_stochastic_row": ({**GOOD, "transition_matrix": [["1/3", "1/3"], ["1", "0"]]}, "transition_matrix row 0 sums to 2/3"),
    "negative_entry": ({**GOOD, "emission_probs": [["5/4", "-1/4"], ["1/2", "1/2"]]}, "emission_probs[0, 1]: negative entry -1/4"),
    "nan": ('{"initial_probs": [1.0], "transition_matrix": [[NaN]], "emission_probs": [[1.0]]}', "transition_matrix[0, 0]: entry is nan"),
    "shape_mismatch": ({**GOOD, "transition_matrix": [["1"]]}, "transition_matrix has shape (1, 1), expected (2, 2)"),
    "malformed_json": ('{"initial_probs": [0.5, 0.5],', "malformed JSON at line 1"),
    "missing_key": ({"initial_probs": ["1"]}, "missing key(s)"),
}


@pytest.mark.parametrize("case", list(BAD_HMMS))
def test_bad_hmm_files_give_one_line_and_exit_2(tmp_path, capsys, case):
    obj, fragment = BAD_HMMS[case]
    f = _file(tmp_path, obj)
    code, out, err = _run(capsys, "--hmm", f, "--tokens", "0 1")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hmmtx: error: ")
    assert fragment in err and "h.json" in err  # names the file and the culprit
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "tokens, fragment",
    [
        ("0 1 2", "--tokens: token 2 at position 2 is out of range [0, 2)"),
        ("", "--tokens: the sequence is empty"),
        ("0 x", "--tokens: 'x' at position 1 is not an integer"),
        ("0 1 0 1", "probability zero under this HMM (token 0 at position 2"),
    ],
)
def test_bad_tokens_give_one_line_and_exit_2(tmp_path, capsys, tokens, fragment):
    # a model in which "0 1 0 1" is impossible: state 0 emits 0 then goes to 1; state 1 emits 1 and stays
    zero = {"initial_probs": ["1", "0"], "transition_matrix": [["0", "1"], ["0", "1"]], "emission_probs": [["1", "0"], ["0", "1"]]}
    f = _file(tmp_path, zero)
    code, out, err = _run(capsys, "--hmm", f, "--tokens", tokens)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err


def test_missing_unreadable_files_and_unwritable_output(tmp_path, capsys):
    code, _, err = _run(capsys, "--hmm", str(tmp_path / "nope.json"), "--tokens", "0")
    assert code == 2 and err.count("\n") == 1 and "nope.json: HMM file not found" in err
    code, _, err = _run(capsys, "--hmm", str(tmp_path), "--tokens", "0")
    assert code == 2 and err.count("\n") == 1 and "is a directory" in err
    f = _file(tmp_path, GOOD)
    code, _, err = _run(capsys, "--hmm", f, "--tokens", "0", "--json", str(tmp_path / "no" / "o.json"))
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err


def test_usage_error_is_one_line(capsys):
    code, _, err = _run(capsys, "--tokens", "0 1")
    assert code == 2 and err.count("\n") == 1 and "--hmm" in err


def test_installed_console_script(tmp_path):
    script = Path(sys.executable).parent / "hmmtx"
    f = _file(tmp_path, {**GOOD, "transition_matrix": [["1/2", "1/3"], ["1", "0"]]})
    bad = subprocess.run([str(script), "filter", "--hmm", f, "--tokens", "0 1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "transition_matrix row 0 sums to 5/6" in bad.stderr
    good = subprocess.run([str(script), "filter", "--hmm", _file(tmp_path, GOOD, "g.json"), "--tokens", "1 0", "--exact"],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0 and "3/5" in good.stdout and good.stderr == ""
