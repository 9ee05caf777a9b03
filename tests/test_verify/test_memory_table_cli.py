"""``hmmtx memory-table``: runs, writes JSON and a PNG, reports rates; bad arguments exit 2 with one line."""

from __future__ import annotations

import json

import pytest

from constructions.memory.rates import TableConfig, memory_table
from hmm.errors import HmmtxError
from verify.cli import main

SMALL = ["--heads", "1,2,4", "--spike-lags", "2,4", "--spike-heads", "8,16,32", "--gram-max-heads", "4"]


def test_cli_small_run_writes_json_and_plot(tmp_path, capsys) -> None:
    js, png = tmp_path / "m.json", tmp_path / "m.png"
    assert main(["memory-table", *SMALL, "--json", str(js), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "exact l1 error vs heads H" in out and "Insight 4a" in out and "heads needed" in out
    data = json.loads(js.read_text())
    rows = {(r["kind"], r["rpe"], r["param"]): r for r in data["rows"]}
    assert len(rows) == 8  # exp/power x lin/log + 2 spikes x lin/log
    pw_log, pw_lin = rows[("power", "log", 2.25)], rows[("power", "lin", 2.25)]
    assert [p["H"] for p in pw_log["points"]] == [1, 2, 4]
    assert all(a["total"] < b["total"] for a, b in zip(pw_log["points"], pw_lin["points"]))  # log wins on heavy tails
    assert pw_log["rates"]["algebraic"] > 3 and pw_log["matched"] and not pw_lin["matched"]
    for r in data["rows"]:
        for p in r["points"]:
            assert p["total"] >= p["finite"] >= 0 and p["tail"] >= 0 and p["rounding"] < 1e-30
            # the worst-case input attains the exact finite part (float64 evaluation within its stated allowance)
            assert abs(p["attained"] - p["finite"]) <= p["attained_allowance"]
            if r["kind"] != "spike":
                assert p["attained_allowance"] < 1e-5
            assert p["log10_max_weight"] > -5
    assert data["insight_4a"]["power"] == {"1": True, "2": True, "4": True}
    g = {x["rpe"]: x for x in data["growth"]}
    assert g["lin"]["needed"]["2"] == 16 and set(g) == {"lin", "log"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_no_spikes_quiet(tmp_path, capsys) -> None:
    js = tmp_path / "m.json"
    assert main(["memory-table", "--heads", "2", "--no-spikes", "--quiet", "--json", str(js)]) == 0
    assert capsys.readouterr().out == ""
    data = json.loads(js.read_text())
    assert len(data["rows"]) == 4 and data["growth"] == []


@pytest.mark.parametrize("argv", [["--heads", "0"], ["--heads", "x"], ["--alpha", "0.5"], ["--p0-log", "1"],
                                  ["--eps", "2"], ["--beta", "-1"], ["--heads", "2,2"], ["--spike-heads", "1024"],
                                  ["--lam", "nan"], ["--gram-max-heads", "-1"],
                                  ["--heads", "1", "--no-spikes", "--json", "/nonexistent/dir/m.json"]])
def test_cli_bad_arguments_exit_2_with_one_line(argv, capsys) -> None:
    try:
        code = main(["memory-table", "--quiet", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hmmtx: error:") and "\n" not in err


def test_table_config_validation() -> None:
    with pytest.raises(HmmtxError, match="p0-lin"):
        TableConfig(p0_lin=0.0)
    tab = memory_table(TableConfig(heads=(1, 2), spike_lags=(), gram_max_heads=0))
    assert {(r.kind, r.rpe) for r in tab.rows} == {("exp", "lin"), ("exp", "log"), ("power", "lin"), ("power", "log")}
    assert all(p.gram_cond is None for r in tab.rows for p in r.points)
