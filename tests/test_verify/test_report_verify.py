"""verify.report: summaries, the JSON report against its schema, reproducers, atomic writes; verify.plots."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import jsonschema
import pytest

from hmm.errors import HmmtxError
from hmm.io import load_hmm, parse_tokens
from verify import report as rep
from verify.plots import write_plots
from verify.suite import Case, Plan, Replay, run_suite

_spec = importlib.util.spec_from_file_location("verify_fakes", Path(__file__).with_name("verify_fakes.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)

PLAN = Plan(preset="custom", states=(2, 3), lengths=(3, 8), dtypes=("float64", "float32", "exact"), seed=5)


@pytest.fixture(scope="module")
def good():
    return run_suite([fakes.ToyAdapter()], PLAN)


@pytest.fixture(scope="module")
def bad():
    # scale 2 doubles every probability (error ~0.3 > bound 1e-3) and the exact run disagrees; one case crashes.
    crash = Case("broken", "random", 2, 3, "float64", 5 + 17 * 2 + 3, (("r", 2),)).case_id
    return run_suite([fakes.ToyAdapter(), fakes.ToyAdapter(scale=2.0, crash_at=crash, name="broken")], PLAN)


def _report(results, tmp_path, plots=()):
    repro = rep.write_reproducers(results, tmp_path / "repro")
    sums = rep.summarise(results, {"toy": ("s", "p")}, repro)
    return rep.build_report(results, sums, PLAN, command=["hmmtx", "verify"], seconds=1.5,
                            reproducer_dir=tmp_path / "repro", plots=plots), sums


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(rep.load_schema())


def test_passing_report_validates_and_round_trips(good, tmp_path):
    report, sums = _report(good, tmp_path)
    path = rep.write_report(tmp_path / "r.json", report)
    loaded = json.loads(path.read_text())
    jsonschema.validate(loaded, rep.load_schema(), cls=jsonschema.Draft202012Validator)
    rep.validate_report(loaded)
    assert loaded["passed"] is True and loaded["exit_status"] == 0
    (toy,) = loaded["constructions"]
    assert toy["cases"] == len(good) == 2 * 2 * 3
    assert toy["exact_cases"] == toy["exact_agree"] == 4
    assert toy["max_error"] <= toy["max_bound"]
    assert {d["dtype"] for d in toy["by_dtype"]} == {"float64", "float32", "exact"}
    assert all(c["status"] == "pass" and c["ratio"] <= 1 for c in loaded["cases"])
    # float64 is the numpy filter vs the Fraction filter: round-off only.
    assert max(c["error"] for c in loaded["cases"] if c["dtype"] == "float64") <= 1e-14


def test_failing_report_validates_and_names_the_failure(bad, tmp_path):
    report, sums = _report(bad, tmp_path)
    rep.validate_report(json.loads(json.dumps(report)))
    assert report["passed"] is False and report["exit_status"] == 1
    by = {c["construction"]: c for c in report["constructions"]}
    assert by["toy"]["passed"] and not by["broken"]["passed"]
    assert by["broken"]["crashed"] == 1
    statuses = {c["status"] for c in report["cases"] if c["construction"] == "broken"}
    assert statuses == {"bound", "exact", "crash"}
    # worst case: the crash outranks bound breaks
    assert by["broken"]["worst_case"] == "broken/random/S2/T3/float64/seed42/r=2"
    lines = rep.failure_lines(sums)
    assert lines[0].startswith("FAIL broken:") and "RuntimeError: toy crash" in lines[0]
    assert any("reproducer:" in ln and "broken" in ln for ln in lines)
    assert not any("toy" in ln.split(":")[0] for ln in lines if ln.startswith("FAIL"))


def test_schema_rejects_inconsistent_records(good, tmp_path):
    report, _ = _report(good, tmp_path)
    bad = json.loads(json.dumps(report))
    bad["cases"][0]["status"] = "bound"  # passed stays true: contradicts status
    with pytest.raises(HmmtxError, match="cases/0"):
        rep.validate_report(bad)
    bad = json.loads(json.dumps(report))
    bad["cases"][0]["dtype"] = "float16"
    with pytest.raises(HmmtxError):
        rep.validate_report(bad)
    bad = json.loads(json.dumps(report))
    del bad["constructions"][0]["max_ratio"]
    with pytest.raises(HmmtxError, match="max_ratio"):
        rep.validate_report(bad)


def test_reproducer_files_replay_the_worst_case(bad, tmp_path):
    folders = rep.write_reproducers(bad, tmp_path / "repro")
    assert set(folders) == {"toy", "broken"}
    case = json.loads((folders["broken"] / "case.json").read_text())
    assert case["status"] == "crash"
    hmm = load_hmm(folders["broken"] / "hmm.json")
    tokens = parse_tokens((folders["broken"] / "tokens.txt").read_text())
    assert hmm.num_states == case["states"] and len(tokens) == case["length"]
    cmd = case["replay_command"]
    assert cmd.startswith("hmmtx run broken --hmm ") and "--mode float64" in cmd and "--tokens" in cmd
    assert cmd in (folders["broken"] / "replay.sh").read_text()
    index = json.loads((tmp_path / "repro" / "index.json").read_text())
    assert set(index["reproducers"]) == {"toy", "broken"}
    # the toy's worst case is its largest tightness ratio among passing cases
    toy = [r for r in bad if r.case.construction == "toy"]
    assert rep.worst_case(toy).ratio == max(r.ratio for r in toy)


def test_writes_are_atomic_and_missing_folders_are_project_errors(good, tmp_path, monkeypatch):
    report, _ = _report(good, tmp_path)
    with pytest.raises(HmmtxError, match="does not exist"):
        rep.write_report(tmp_path / "nope" / "r.json", report)
    # A failure while writing leaves the previous file intact and no temporary files behind.
    target = tmp_path / "r.json"
    target.write_text("old")
    import hmm.io as hio

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hio.os, "replace", boom)
    with pytest.raises(HmmtxError, match="No space left"):
        rep.write_report(target, report)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".r.json")) == []


def test_tightness_and_judging_edge_cases():
    from verify.suite import Outcome, judge, tightness

    assert tightness(0.0, 0.0, 0.0) == 0.0
    assert tightness(1e-3, 0.0, 0.0) == math.inf
    assert tightness(1.0, math.inf, 0.0) is None
    assert tightness(1.0, 3.0, 1.0) == pytest.approx(0.25, rel=1e-15)
    c = Case("x", "", None, 4, "float64", 0)
    rp = Replay(None, None, None, ())
    assert judge(c, Outcome(1e-3, 1e-3, 0.0, None, "q", rp), 0.0).status == "pass"
    assert judge(c, Outcome(2e-3, 1e-3, 0.5e-3, None, "q", rp), 0.0).status == "bound"
    assert judge(c, Outcome(math.nan, 1.0, 0.0, None, "q", rp), 0.0).status == "bound"
    assert judge(c, Outcome(5.0, math.inf, 0.0, None, "q", rp), 0.0).status == "pass"
    e = Case("x", "", 2, 4, "exact", 0)
    assert judge(e, Outcome(0.0, 0.0, 0.0, True, "q", rp), 0.0).status == "pass"
    assert judge(e, Outcome(0.0, 1.0, 0.0, False, "q", rp), 0.0).status == "exact"


def test_summary_table_and_failure_lines_render(bad):
    from rich.console import Console

    sums = rep.summarise(bad)
    con = Console(width=140, record=True)
    con.print(rep.summary_table(sums))
    text = con.export_text()
    for word in ("construction", "max error", "max bound", "max err/bound", "exact agree", "toy", "broken", "FAIL"):
        assert word in text
    assert "0/4" in text and "4/4" in text  # exact agreement: broken none of 4, toy all 4


def test_plots_written_atomically_as_png(bad, tmp_path):
    files = write_plots(bad, tmp_path / "plots")
    names = sorted(p.name for p in files)
    assert names == ["broken-vs-S.png", "broken-vs-T.png", "toy-vs-S.png", "toy-vs-T.png"]
    for p in files:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]


def test_a_construction_without_cases_is_a_named_crash_not_an_abort():
    class NoCases(fakes.ToyAdapter):
        def cases(self, plan):
            raise ValueError("no case generator for input kind 'none'")

    res = run_suite([fakes.ToyAdapter(), NoCases(name="nocases")], PLAN)
    bad = [r for r in res if r.case.construction == "nocases"]
    assert len(bad) == 1 and bad[0].status == "crash"
    assert "cannot generate cases: ValueError: no case generator" in bad[0].message
    assert all(r.passed for r in res if r.case.construction == "toy")
