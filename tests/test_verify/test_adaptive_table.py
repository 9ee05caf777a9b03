"""``hmmtx adaptive-table`` and the necessity measurements of the adaptive-memory construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from constructions.adaptive.bound import leak_curve
from constructions.adaptive.model import bias_table
from constructions.adaptive.necessity import beta_needed, best_linear_weight, depth_vs_nesting, dp_free_fit
from constructions.adaptive.spec import LagFunction, make_spec
from verify.cli import main


@pytest.mark.parametrize("g, n", [(1, 20), (5, 20), (10, 21), (19, 20)])
def test_best_linear_weight_is_the_optimum_over_slopes(g, n) -> None:
    s = np.arange(1, n)
    grid = []
    for a in np.linspace(-8, 8, 4001):
        z = -a * s
        w = np.exp(z - z.max())
        grid.append(w[g - 1] / w.sum())
    best = best_linear_weight(g, n)
    assert best >= max(grid) - 1e-9 and best <= 1
    if 1 < g < n - 1:  # an interior lag: a monotone (lin-type) profile cannot concentrate there
        assert best < 0.5


def test_dp_free_counting_argument_gives_error_one() -> None:
    """The proof's step, numerically: H < T positional kernels on lags 1..T have a null vector d; inputs +-d/|d|_inf
    give identical head outputs, while the target at the lag of max |d| differs by 2 (sup error >= 1)."""
    rng = np.random.default_rng(0)
    T, H, n = 6, 5, 30
    s = np.arange(1, n)
    A = np.stack([np.exp(b - b.max()) / np.exp(b - b.max()).sum() for b in rng.normal(size=(H, n - 1)) * 3])
    _, _, Vt = np.linalg.svd(A[:, :T])
    d = Vt[-1] / np.abs(Vt[-1]).max()
    x_plus = np.zeros(n - 1)
    x_plus[:T] = d
    assert np.allclose(A @ x_plus, A @ (-x_plus), atol=1e-12)  # same head outputs for +d and -d
    g = int(np.argmax(np.abs(d))) + 1
    assert abs(x_plus[g - 1] - (-x_plus[g - 1])) == pytest.approx(2.0)


def test_dp_free_fit_needs_more_heads_than_lags() -> None:
    assert dp_free_fit(2, 8, "lin", 0.1, 0.1) < 0.6  # enough heads: the fit escapes the trivial kernel
    assert dp_free_fit(2, 2, "lin", 0.1, 0.1) >= 0.99  # H = T on the fine grid: no better than K = 0


@pytest.mark.parametrize("rpe", ["log", "lin"])
def test_beta_needed_is_the_threshold(rpe) -> None:
    spec = make_spec(kind="type1", V=3, lags=(LagFunction(1, (1, 4, 9), 3),), rpe=rpe)
    n = 40
    b = beta_needed(spec, n, 1e-3)
    _, mask = bias_table(spec, 2)
    worst = lambda beta: max(leak_curve(spec, g, n, beta, mask)[n - 1] for g in (1, 4, 9))  # noqa: E731
    assert worst(b) <= 1e-3 < worst(0.99 * b)


def test_depth_vs_nesting_small() -> None:
    (row,) = depth_vs_nesting(Ms=(2,), V=2, lag_range=5, N=6, T=16)
    assert row.errors[3] == 0 and row.wrong[3] == 0
    assert row.errors[2] > 0 and row.wrong[2] > 0
    assert row.enumeration_heads == 1 + 2


def test_cli_writes_json_and_plot_and_marks_the_claims(tmp_path, capsys) -> None:
    js, png = tmp_path / "t.json", tmp_path / "t.png"
    rc = main(["adaptive-table", "--dp-lags", "2", "--linlog-lags", "3", "--depth-memories", "2", "--sequences", "4",
               "--json", str(js), "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "DP vs DP-free" in out and "depth vs nesting" in out
    data = json.loads(js.read_text())
    assert png.stat().st_size > 1000
    (dp,) = data["dp_vs_dp_free"]
    assert dp["dp_hard"] == 0 and dp["dp_softmax"] <= dp["dp_bound"] and dp["lower"]["1"] == 1.0
    (ll,) = data["lin_vs_log"]
    assert ll["lin_one_channel"] > 1 and set(ll["variants"]) == {"log", "lin", "log_fixed"}
    for v in ll["variants"].values():
        assert v["float64"][0] <= v["float64"][1]
    assert {k: v["verdict"].split()[0] for k, v in data["claims"].items()} == {
        "type1_two_layers": "reproduced", "type2_M_plus_1_layers": "reproduced", "dp_rpe_cooperate": "reproduced",
        "lin_vs_log_peak": "measured"}


@pytest.mark.parametrize("args, msg", [(["--dp-lags", "0"], ">= 1"), (["--beta", "-1"], "beta"),
                                       (["--json", "/nonexistent/x.json"], "does not exist"),
                                       (["--depth-memories", "9"], "M up to 6"), (["--sequences", "0"], "--sequences")])
def test_cli_bad_arguments_exit_2(args, msg, capsys) -> None:
    try:
        rc = main(["adaptive-table", "--quiet", *args])
    except SystemExit as exc:  # argparse-level errors (one usage line, exit 2)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_insight_evidence_for_the_table_reproductions() -> None:
    from constructions.adaptive.necessity import insight_evidence

    a = insight_evidence("1a", sequences=2)
    for M, errs in a["by_M"].items():
        assert errs[str(int(M) + 1)] == 0 and errs["2"] > 0
    b = insight_evidence("3b", sequences=2)
    assert all(r["dp_rpe_one_head"] == 0 and r["lin_rpe_dp_one_channel_best"] > 1 for r in b["by_T"].values())
    json.dumps(a), json.dumps(b)
    with pytest.raises(Exception, match="1a"):
        insight_evidence("9z")
