"""``hmmtx icl-table``: the Figure-1 analogue of the H4 learner (small grids only: the default run is a CLI job)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hmm.errors import HmmtxError
from hmm.io import save_mixture
from hmm.zoo import make_mixture
from verify.cli import main
from verify.commands.icl_table import METRICS, icl_table, markdown_table


@pytest.fixture(scope="module")
def mixture():
    return make_mixture("dirichlet", 3, num_states=3, num_obs=3, seed=1)


def test_error_falls_as_demonstrations_grow(mixture):
    tab = icl_table(mixture, [2, 16], [4], demo_len=10, contexts=32, r=1, K=4, eta="1/2", seed=3)
    tv = tab.metrics["tv_icl_bayes"][:, 0]
    acc = tab.metrics["acc_icl_bayes"][:, 0]
    assert tv[1] < 0.6 * tv[0], tv
    assert acc[1] > acc[0], acc
    # the Bayes predictive itself approaches the true task's predictive as the demonstrations pin the task down
    assert tab.metrics["tv_bayes_true"][1, 0] < tab.metrics["tv_bayes_true"][0, 0]
    assert tab.metrics["check_max_abs"].max() <= 1e-12
    for m in METRICS:
        if m != "check_max_abs":
            assert np.all((tab.metrics[m] >= 0) & (tab.metrics[m] <= 1)), m


def test_cells_are_reproducible_and_independent_of_the_grid(mixture):
    a = icl_table(mixture, [1, 3], [2, 3], demo_len=4, contexts=8, r=1, K=2, seed=5, check=False)
    b = icl_table(mixture, [3], [3], demo_len=4, contexts=8, r=1, K=2, seed=5, check=False)
    for m in ("tv_icl_bayes", "acc_icl_next", "tv_bayes_true"):
        assert a.metrics[m][1, 1] == b.metrics[m][0, 0]
    assert np.isnan(a.metrics["check_max_abs"]).all()
    md = markdown_table(a, "tv_icl_bayes")
    assert md.splitlines()[0] == "| demos \\ test length | 2 | 3 |" and len(md.splitlines()) == 4


def test_zero_demonstrations_and_one_token_use_the_reported_uniform_fallback(mixture):
    tab = icl_table(mixture, [0], [1], demo_len=3, contexts=8, r=2, K=1, seed=0)
    # the query window (x0, pad) was never a training window: every context has zero masses
    assert tab.metrics["zero_mass"][0, 0] == 1.0


def test_bad_arguments(mixture):
    with pytest.raises(HmmtxError, match="--test-lengths"):
        icl_table(mixture, [1], [0])
    with pytest.raises(HmmtxError, match="--contexts"):
        icl_table(mixture, [1], [1], contexts=0)
    with pytest.raises(HmmtxError, match="expected a task mixture"):
        icl_table("dirichlet", [1], [1])


def test_cli_writes_json_and_png_atomically(tmp_path, mixture, capsys):
    tasks = tmp_path / "tasks.json"
    save_mixture(mixture, tasks)
    js, png = tmp_path / "t.json", tmp_path / "t.png"
    rc = main(["icl-table", "--tasks", str(tasks), "--demos", "1,4", "--test-lengths", "2", "--demo-length", "4",
               "--contexts", "8", "--r", "1", "--K", "2", "--json", str(js), "--plot", str(png)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "tv_icl_bayes" in out and "acc_icl_bayes" in out
    data = json.loads(js.read_text())
    assert data["demos"] == [1, 4] and data["test_lengths"] == [2]
    assert set(data["metrics"]) == set(METRICS) and data["params"]["r"] == 1
    assert data["construction"]["name"] == "icl"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.png", "tasks.json"]  # no temporary leftovers


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--zoo-mixture", "dirichlet", "--demos", "1,x"], "--demos"),
        (["--zoo-mixture", "dirichlet", "--demos", "1,1"], "duplicate"),
        (["--zoo-mixture", "nosuchfamily"], "unknown HMM family"),
        (["--zoo-mixture", "dirichlet", "--plot", "out.txt"], "--plot"),
        (["--tasks", "/nonexistent/tasks.json"], "not found"),
        (["--zoo-mixture", "dirichlet", "--eta", "0"], "--eta"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    rc = main(["icl-table", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1
