"""``hmmtx zoo``: the family list, building + saving an HMM that ``hmmtx filter`` then reads, and bad input."""

from __future__ import annotations

from fractions import Fraction

import pytest

from hmm import zoo
from hmm.io import load_hmm
from verify.cli import main


def _run(capsys, *argv):
    try:
        code = main(["zoo", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_family(capsys):
    code, out, err = _run(capsys)
    assert code == 0 and err == ""
    for name in zoo.FAMILIES:
        assert name in out


def test_build_show_and_save(tmp_path, capsys):
    f = tmp_path / "m3.json"
    code, out, err = _run(capsys, "mess3", "--param", "x=3/20", "--param", "a=0.6", "--out", str(f))
    assert code == 0 and err == ""
    assert "stationary distribution" in out and "[1/3, 1/3, 1/3]" in out and "Dobrushin" in out
    h = load_hmm(f)
    assert h.exact and h.transition_matrix[0, 1] == Fraction(3, 20) and h.emission_probs[0, 0] == Fraction(3, 5)
    code, out, err = _run(capsys, "sticky", "--states", "3", "--obs", "2", "--seed", "4", "--param", "eps=0.01",
                          "--out", str(tmp_path / "s.json"))
    assert code == 0
    same = zoo.make("sticky", 3, 2, seed=4, eps=0.01)
    assert (load_hmm(tmp_path / "s.json").transition_matrix == same.transition_matrix).all()
    assert main(["filter", "--hmm", str(f), "--tokens", "0 1 2", "--exact"]) == 0


@pytest.mark.parametrize("argv, fragment", [
    (["nope"], "unknown HMM family 'nope'"),
    (["sticky", "--param", "epsilon=1"], "unknown parameter(s) ['epsilon']"),
    (["sticky", "--param", "eps"], "--param: expected KEY=VALUE"),
    (["dirichlet", "--states", "x"], "--states: 'x' is not an integer"),
    (["mess3", "--states", "4"], "mess3 has num_states = 3"),
    (["sticky", "--out", "/nonexistent-dir/x.json"], "does not exist"),
    (["sticky", "--seed", "-1"], "--seed: -1 is out of range"),
])
def test_bad_input_one_line_exit_2(capsys, argv, fragment):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
