"""Files and command-line values: round trips, and every bad file / token string names the culprit."""

import json
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given

from hmm import zoo
from hmm.errors import HmmtxError
from hmm.io import (
    atomic_write_text,
    fraction_display,
    fraction_to_str,
    load_hmm,
    load_mixture,
    parse_context,
    parse_tokens,
    save_hmm,
    save_mixture,
)
from hmm.testing import rational_hmms

GOOD = {"initial_probs": ["1/2", "1/2"], "transition_matrix": [["1/3", "2/3"], ["1", "0"]], "emission_probs": [["1/4", "3/4"], ["1/2", "1/2"]]}


def _write(tmp_path, obj, name="m.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_exact_round_trip(tmp_path):
    h = load_hmm(_write(tmp_path, GOOD))
    assert h.exact and h.transition_matrix[0, 1] == Fraction(2, 3)
    out = save_hmm(h, tmp_path / "out.json")
    assert json.loads(out.read_text()) == GOOD
    assert load_hmm(out).to_dict() == h.to_dict()


@given(hmm=rational_hmms(max_states=4, max_obs=4))
def test_round_trip_property(hmm):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = save_hmm(hmm, os.path.join(d, "h.json"))
        assert load_hmm(p).to_dict() == hmm.to_dict()
        pf = save_hmm(hmm.as_float(), os.path.join(d, "f.json"))
        back = load_hmm(pf)
        assert not back.exact
        np.testing.assert_array_equal(back.transition_matrix, hmm.as_float().transition_matrix)


def test_mixture_round_trip(tmp_path):
    m = zoo.make_mixture("dirichlet", 3, num_states=2, num_obs=3, rational=True)
    p = save_mixture(m, tmp_path / "mix.json")
    back = load_mixture(p)
    assert back.exact and back.to_dict() == m.to_dict()


def test_malformed_json(tmp_path):
    p = _write(tmp_path, '{"initial_probs": [1,\n  ]')
    with pytest.raises(HmmtxError, match=r"m\.json: malformed JSON at line 2"):
        load_hmm(p)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(HmmtxError, match=r"nope\.json: HMM file not found"):
        load_hmm(tmp_path / "nope.json")
    with pytest.raises(HmmtxError, match=r"is a directory"):
        load_hmm(tmp_path)
    p = tmp_path / "m.json"
    p.write_bytes(b"\xff\xfe\x00garbage")  # not UTF-8
    with pytest.raises(HmmtxError, match=r"m\.json: cannot read HMM file"):
        load_hmm(p)
    if os.geteuid() != 0:  # root can read anything
        q = _write(tmp_path, GOOD, "locked.json")
        q.chmod(0)
        with pytest.raises(HmmtxError, match=r"locked\.json: cannot read HMM file"):
            load_hmm(q)


def test_bad_structure_names_the_key(tmp_path):
    with pytest.raises(HmmtxError, match=r"missing key\(s\) \['emission_probs'\]"):
        load_hmm(_write(tmp_path, {k: v for k, v in GOOD.items() if k != "emission_probs"}))
    with pytest.raises(HmmtxError, match=r"unknown key\(s\) \['transition'\]"):
        load_hmm(_write(tmp_path, {**GOOD, "transition": 1}))
    with pytest.raises(HmmtxError, match=r"expected a JSON object"):
        load_hmm(_write(tmp_path, [1, 2]))
    bad = {**GOOD, "transition_matrix": [["1/3", "1/3"], ["1", "0"]]}
    with pytest.raises(HmmtxError, match=r"m\.json: transition_matrix row 0 sums to 2/3"):
        load_hmm(_write(tmp_path, bad))
    with pytest.raises(HmmtxError, match=r"m\.json: emission_probs\[0, 0\]: entry is nan"):
        load_hmm(_write(tmp_path, '{"initial_probs": [1.0], "transition_matrix": [[1.0]], "emission_probs": [[NaN, 1.0]]}'))
    with pytest.raises(HmmtxError, match=r"tasks\[1\]: missing key"):
        load_mixture(_write(tmp_path, {"task_prior": [0.5, 0.5], "tasks": [GOOD, {}]}))


def test_parse_tokens_and_contexts():
    assert parse_tokens("0 1, 2").tolist() == [0, 1, 2]
    with pytest.raises(HmmtxError, match=r"--tokens: 'a' at position 1 is not an integer"):
        parse_tokens("0 a 2")
    with pytest.raises(HmmtxError, match="the sequence is empty"):
        parse_tokens("  ")
    with pytest.raises(HmmtxError, match=r"'\|' separates demonstrations"):
        parse_tokens("0 | 1")
    assert [s.tolist() for s in parse_context("0 1 | 2 | 1 1")] == [[0, 1], [2], [1, 1]]
    with pytest.raises(HmmtxError, match="segment 1 is empty"):
        parse_context("0 1 | | 2")


def test_huge_fractions_display_and_serialise():
    big = Fraction(3**9000, 7**9000 + 1)  # over Python's 4300-digit str() limit
    shown = fraction_display(big)
    assert "digits" in shown and len(shown) < 60
    assert fraction_display(Fraction(1, 3)) == "1/3"
    s = fraction_to_str(big)
    assert "/" in s and len(s) > 8000


def test_atomic_write_into_missing_folder(tmp_path):
    with pytest.raises(HmmtxError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "x.txt", "hi")
    p = atomic_write_text(tmp_path / "x.txt", "hi")
    assert p.read_text() == "hi" and [f.name for f in tmp_path.iterdir()] == ["x.txt"]
