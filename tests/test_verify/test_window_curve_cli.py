"""``hmmtx window-curve`` and ``hmmtx run window``: geometric decay on mixing families, loose/absent a-priori bounds
on sticky/cyclic families (said in words), exact checks below round-off, files and error handling."""

import json

import numpy as np
import pytest

from hmm import zoo
from hmm.io import save_hmm
from hmm.window import window_curve
from verify.cli import main
from verify.commands.window_curve import explain

MIXING = [("dirichlet", {}), ("mess3", {}), ("low_rank", {}), ("observable", {})]


@pytest.mark.parametrize("family,params", MIXING, ids=[f for f, _ in MIXING])
def test_error_decays_geometrically_on_mixing_families(family, params):
    c = window_curve(zoo.make(family, seed=0, **params), 10, num_sequences=6, length=100)
    assert c.holds.all()
    assert c.check == ("float",) * 10
    # geometric decay: fitted rate well below 1, and two orders of magnitude over r = 1..10
    assert 0 < c.rate < 0.75
    assert c.mean_error[-1] < 0.01 * c.mean_error[0]
    assert c.max_error[-1] < 0.05 * c.max_error[0]
    # the bounds hold and decay too; the a-posteriori bound is never weaker than the a-priori one
    assert np.all(c.max_error <= c.a_posteriori + c.allowance)
    assert np.all(c.a_posteriori <= c.a_priori + c.allowance)
    assert c.a_priori[-1] < c.a_priori[0]


def test_sticky_family_bound_is_loose_and_says_why():
    c = window_curve(zoo.make("sticky", 3, 3, seed=1, eps=0.01), 6, num_sequences=4, length=80)
    assert c.holds.all() and c.tau > 0.98
    assert np.all(c.a_priori > 1.5)  # nearly the trivial bound 2 at every r
    assert "close to 1" in c.note and "close to 1" in explain(c)
    assert c.max_error[-1] < c.a_priori[-1]


def test_cyclic_family_has_no_a_priori_bound_and_says_why():
    c = window_curve(zoo.make("cyclic", 3, 2, seed=0), 5, num_sequences=4, length=60)
    assert c.check == ("none",) * 5 and np.isnan(c.a_priori).all()
    assert c.holds.all()
    assert np.isinf(c.Delta) and c.tau == 1.0
    assert "no a-priori bound" in explain(c) and "zero entry" in c.note
    assert c.max_error.max() > 1.0  # the permutation chain does not forget


def test_bounds_below_roundoff_are_checked_exactly():
    hmm = zoo.make("dirichlet", 3, 3, seed=0, concentration=100.0)  # tau ~ 0.09
    c = window_curve(hmm, 14, num_sequences=3, length=30)
    assert "exact" in c.check and c.check[0] == "float"
    assert c.holds.all()
    assert c.a_priori[-1] < 1e-13


def test_cli_writes_json_and_plot(tmp_path, capsys):
    png, js = tmp_path / "c.png", tmp_path / "c.json"
    rc = main(["window-curve", "--zoo", "mess3", "--r-max", "5", "--seqs", "4", "--length", "50",
               "--plot", str(png), "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "a-posteriori" in out and "decays geometrically" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = json.loads(js.read_text())
    assert d["r"] == [1, 2, 3, 4, 5] and len(d["max_error"]) == 5 and all(d["holds"])
    assert d["params"]["S"] == 3 and d["source"] == "mess3" and d["explanation"]
    # a file HMM with zeros: null a-priori bounds in JSON
    f = tmp_path / "cyc.json"
    save_hmm(zoo.make("cyclic", 3, 2, seed=0), f)
    assert main(["window-curve", "--hmm", str(f), "--r-max", "3", "--length", "20", "--json", str(js)]) == 0
    d = json.loads(js.read_text())
    assert d["a_priori"] == [None, None, None] and d["check"] == ["none"] * 3


@pytest.mark.parametrize("argv,msg", [
    (["--zoo", "mess3", "--r-max", "6", "--length", "6"], "must exceed --r-max"),
    (["--zoo", "nope", "--r-max", "3"], "unknown HMM family"),
    (["--zoo", "mess3", "--r-max", "0"], "--r-max"),
    (["--zoo", "mess3", "--r-max", "3", "--prior", "1/2,1/2"], "expected 3"),
    (["--zoo", "mess3", "--r-max", "3", "--seqs", "0"], "--seqs"),
])
def test_cli_errors_are_one_line(argv, msg, capsys):
    assert main(["window-curve", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_run_window_reports_bounds(tmp_path, capsys):
    f, js = tmp_path / "h.json", tmp_path / "o.json"
    save_hmm(zoo.make("mess3", rational=True), f)
    toks = "0 1 2 2 1 0 0 1 2 1"
    assert main(["run", "window", "--hmm", str(f), "--tokens", toks, "--r", "3", "--mode", "exact",
                 "--json", str(js)]) == 0
    d = json.loads(js.read_text())
    assert d["construction"] == "window" and d["bit_identical"] is True and d["max_abs_error"] == 0.0
    assert d["r"] == 3 and d["bound_holds"] is True
    for k in ("filtered", "next_token"):
        assert d["memory_error"][k] <= d["a_posteriori_bound"][k] <= d["a_priori_bound"][k]
    assert d["layers"] == 2 and d["parameters"]["readout"] == "lookup"
    assert main(["run", "window", "--hmm", str(f), "--tokens", toks, "--r", "0"]) == 2
    assert "--r: 0 is out of range" in capsys.readouterr().err
