"""The experiment runner (verify.experiments): grid validation, run keys, t-intervals, resumable local runs,
equality with a real Dask LocalCluster, interruption and failures. Tiny models and few steps (seconds per run)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hmm.errors import HmmtxError
from verify.experiments.runner import ResultStore, run_grid
from verify.experiments.spec import RESULT_FORMAT, load_grid, parse_grid
from verify.experiments.tables import cell_summary, cells, layer_curves, mean_ci, t_quantile

BASE = {"num_tasks": 2, "num_states": 2, "vocab_size": 3, "n_demos": 2, "demo_len": 4, "test_len": 4, "d_model": 16,
        "n_layers": 1, "n_heads": 2, "d_ff": 32, "steps": 12, "batch_size": 8, "lr": 1e-2, "warmup": 2,
        "eval_contexts": 30, "concentration": 0.3}
PROBE = {"contexts": 20, "perms": 1, "lags": [1, 2]}


def tiny_grid(seeds=(0, 1), axes=None, constructions=("bayes-multitask",), **base) -> dict:
    return {"name": "tiny", "seeds": list(seeds), "base": {**BASE, **base}, "axes": axes or {},
            "probe": PROBE, "constructions": list(constructions)}


def write(path: Path, grid: dict) -> Path:
    path.write_text(json.dumps(grid))
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verify.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timing"}


# ---------------------------------------------------------------------------------------------- grid files
def test_grid_expands_axes_seeds_and_constructions(tmp_path):
    g = parse_grid(tiny_grid(seeds=[0, 1, 2], axes={"n_layers": [1, 2], "pos": ["learned", "rpe"]}))
    trained = [r for r in g.runs if r.kind == "trained"]
    cons = [r for r in g.runs if r.kind != "trained"]
    assert len(trained) == 2 * 2 * 3
    assert len(cons) == 3  # one construction run per seed: model axes do not multiply constructions
    assert g.runs[: len(cons)] == tuple(cons)  # constructions first
    assert {(r.config.n_layers, r.config.pos, r.config.seed) for r in trained} == {
        (L, p, s) for L in (1, 2) for p in ("learned", "rpe") for s in (0, 1, 2)}
    assert len({r.key for r in g.runs}) == len(g.runs)
    # keys depend on the run only, not on the grid it appears in
    g2 = parse_grid(tiny_grid(seeds=[2], axes={"pos": ["rpe"], "n_layers": [2]}))
    assert set(r.key for r in g2.runs) <= set(r.key for r in g.runs)


def test_bayes_multitask_only_where_feasible():
    g = parse_grid(tiny_grid(seeds=[0], axes={"num_tasks": [2, 64]}, constructions=("bayes-multitask",)))
    cons = [r for r in g.runs if r.kind != "trained"]
    assert [r.config.num_tasks for r in cons] == [2]


@pytest.mark.parametrize("mutate, message", [
    (lambda g: g.update(bogus=1), "unknown key"),
    (lambda g: g.pop("seeds"), "missing 'seeds'"),
    (lambda g: g.update(seeds=[0, 0]), "distinct"),
    (lambda g: g.update(seeds=[-1]), "seeds must be integers >= 0"),
    (lambda g: g["axes"].update(seed=[1, 2]), "may not set 'seed'"),
    (lambda g: g["axes"].update(n_layers=3), "non-empty list"),
    (lambda g: g["axes"].update(n_layers=[1, 0]), "n_layers must be a positive integer"),
    (lambda g: g["base"].update(widht=3), "unknown TrainConfig field 'widht'"),
    (lambda g: g["axes"].update(pos=["sinusoidal"]), "pos must be one of"),
    (lambda g: g["probe"].update(lags=[0]), "lags"),
    (lambda g: g.update(probe={"contexts": 5}), "contexts must be >= 10"),
    (lambda g: g.update(constructions=["window"]), "constructions must be a list"),
])
def test_malformed_grid_is_one_error(mutate, message):
    g = json.loads(json.dumps(tiny_grid()))
    mutate(g)
    with pytest.raises(HmmtxError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_grid(g, "g.json")


def test_cli_malformed_file_and_unreachable_cluster(tmp_path, capsys):
    from verify.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [0, 1\n")
    good = write(tmp_path / "good.json", tiny_grid())
    out = ["--out", str(tmp_path / "o")]
    for args in (["experiment", "grid", str(bad), *out], ["experiment", "grid", str(tmp_path / "missing.toml"), *out],
                 ["experiment", "grid", str(good), "--cluster", "not-an-address", *out],
                 ["experiment", "grid", str(good), "--cluster", "tcp://127.0.0.1:9", "--connect-timeout", "1", *out],
                 ["experiment", "grid", str(good), "--device", "tpu", *out],
                 ["experiment", "grid", str(good), "--device", "gpu", "--cluster", "tcp://127.0.0.1:9", *out],
                 ["experiment", "table", str(tmp_path / "nothing")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("hmmtx: error:"), err
    assert not (tmp_path / "o" / "runs").exists() or not list((tmp_path / "o" / "runs").iterdir())
    # the same through the installed entry point: one line, exit 2, no traceback
    p = cli("experiment", "grid", str(bad))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not valid TOML" in p.stderr, p.stderr


def test_toml_and_json_give_the_same_runs(tmp_path):
    t = tmp_path / "g.toml"
    t.write_text('name = "tiny"\nseeds = [0, 1]\nconstructions = ["bayes-multitask"]\n[base]\n'
                 + "".join(f"{k} = {json.dumps(v)}\n" for k, v in BASE.items())
                 + '[probe]\ncontexts = 20\nperms = 1\nlags = [1, 2]\n')
    j = write(tmp_path / "g.json", tiny_grid())
    assert [r.key for r in load_grid(t).runs] == [r.key for r in load_grid(j).runs]


# ---------------------------------------------------------------------------------------------- intervals
def test_t_quantile_matches_scipy():
    from scipy import stats

    for df in (1, 2, 5, 30):
        for p in (0.9, 0.975):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_mean_ci_by_hand():
    x = [0.2, 0.5, 0.9]
    iv = mean_ci(x)
    half = 4.302652729911275 * np.std(x, ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert iv.mean == pytest.approx(np.mean(x), rel=1e-12)
    assert (iv.lo, iv.hi) == (pytest.approx(np.mean(x) - half, rel=1e-9), pytest.approx(np.mean(x) + half, rel=1e-9))
    assert mean_ci([0.4]).n == 1 and math.isnan(mean_ci([0.4]).lo)
    assert mean_ci([None, float("nan")]).n == 0
    c = mean_ci([0.3, 0.3, 0.3])
    assert c.lo == c.hi == pytest.approx(0.3, abs=1e-15)


# ---------------------------------------------------------------------------------------------- local vs Dask
@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    grid = parse_grid(tiny_grid())
    outcome = run_grid(grid, out, workers=1, progress=True)  # progress over the workers' queue
    return grid, out, outcome


def test_local_grid_writes_every_run_and_tabulates(local_run):
    grid, out, outcome = local_run
    assert not outcome.failed and sorted(outcome.computed) == sorted(r.key for r in grid.runs)
    results = ResultStore(out).results()
    assert len(results) == len(grid.runs)
    for r in results:
        assert r["run"]["format"] == RESULT_FORMAT
        L = r["run"]["config"]["n_layers"] if r["run"]["kind"] == "trained" else len(r["probes"]["layers"]) - 1
        assert len(r["probes"]["state"]["accuracy"]) == L + 1
        assert len(r["fig1"]["bayes"]) == r["run"]["config"]["n_demos"] + 1
    names, cs = cells(results)
    assert [c.kind for c in cs] == ["trained", "constructed:bayes-multitask"] and all(c.seeds == [0, 1] for c in cs)
    s = cell_summary(cs[0])
    assert s["tv"].n == 2 and 0 <= s["tv"].mean <= 1 and s["tv"].lo <= s["tv"].mean <= s["tv"].hi
    # the construction gathers lag 1 exactly (accuracy 1 from residual 1 on), whatever the seed
    assert layer_curves(cs[1])["tok_k1"][1].mean == 1.0
    # every result records the device its model was trained on (auto resolves to the CPU without CUDA)
    import torch
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert {r["timing"]["device"] for r in results if r["run"]["kind"] == "trained"} == {want}
    assert {r["timing"]["device"] for r in results if r["run"]["kind"] != "trained"} == {"cpu"}
    # cost columns: CPU seconds per run are recorded and tabulated beside wall seconds (CPU <= wall + slack)
    from verify.experiments.markdown import summary_markdown
    from verify.experiments.tables import cell_cpu_seconds, cell_seconds
    cpu, wall = cell_cpu_seconds(cs[0]), cell_seconds(cs[0])
    assert cpu.n == 2 and 0 < cpu.mean <= wall.mean * 1.5 + 1.0
    head = summary_markdown(results, ["tv"], seconds=True).splitlines()[0]
    assert head.endswith("| wall s / run | cpu s / run |")
    from verify.experiments.markdown import markdown_report
    report = markdown_report(results)
    assert report.startswith("### Findings") and "| demos-help | tokens-fade |" in report
    # rerun: nothing recomputed, files untouched
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = run_grid(grid, out, workers=0)
    assert again.computed == [] and sorted(again.skipped) == sorted(r.key for r in grid.runs)
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}


def test_table_cli_findings_and_plot(local_run, tmp_path):
    _, out, _ = local_run
    png, md = tmp_path / "curves.png", tmp_path / "t.md"
    p = cli("experiment", "table", str(out), "--findings", "--plot", str(png), "--markdown", str(md))
    assert p.returncode == 0, p.stderr
    assert "| demos-help | tokens-fade | peak-deeper | state-early | task-late | law-late | law-share-late | task-after-tokens | pi-rise |" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert md.read_text().startswith("### Findings")
    # a plot into a missing folder: one error line, exit 2, nothing written
    bad = cli("experiment", "table", str(out), "--plot", str(tmp_path / "missing" / "c.png"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_dask_local_cluster_equals_local_run_bit_for_bit(local_run, tmp_path):
    distributed = pytest.importorskip("distributed")
    from dataclasses import replace

    grid, out, _ = local_run
    # the trained runs (the construction runs are as deterministic, and the local test checks them; leaving them
    # out spares the cluster worker the constructions' imports on a loaded 2-core machine)
    grid = replace(grid, runs=tuple(r for r in grid.runs if r.kind == "trained"))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        outcome = run_grid(grid, tmp_path, cluster=cluster.scheduler_address, progress=True)
    assert not outcome.failed and len(outcome.computed) == len(grid.runs)
    for r in grid.runs:
        a = json.loads((out / "runs" / f"{r.key}.json").read_text())
        b = json.loads((tmp_path / "runs" / f"{r.key}.json").read_text())
        assert without_timing(a) == without_timing(b), r.label
    shas = [json.loads((tmp_path / "runs" / f"{r.key}.json").read_text())["train"]["weights_sha256"]
            for r in grid.runs if r.kind == "trained"]
    assert len(set(shas)) == len(shas)  # different seeds, different weights


# ---------------------------------------------------------------------------------------------- interruption
def test_sigterm_midway_then_rerun_completes_without_redoing(tmp_path):
    import psutil

    grid = tiny_grid(seeds=[0, 1, 2, 3, 4, 5], constructions=(), steps=60)
    f = write(tmp_path / "g.json", grid)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "verify.cli", "experiment", "grid", str(f), "--out", str(out),
                             "--workers", "1", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 90
    runs = out / "runs"
    while time.monotonic() < deadline and not (runs.is_dir() and any(runs.glob("*.json"))):
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err
    psutil.wait_procs(children, timeout=10)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.glob("*.json")}
    assert 1 <= len(finished) < 6, err
    assert not list(runs.glob(".*.tmp"))  # no half-written result

    again = run_grid(load_grid(f), out, workers=0)  # resumed in this process (results are process-independent)
    assert len(again.computed) == 6 - len(finished) and not again.failed
    assert sorted(f"{k}.json" for k in again.skipped) == sorted(finished)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.glob("*.json")}
    assert len(after) == 6
    assert {k: after[k] for k in finished} == finished  # finished runs were not redone


def test_failed_run_never_overwrites_results(tmp_path, capsys):
    from verify.cli import main

    good = tiny_grid(seeds=[0], constructions=())
    out = tmp_path / "out"
    assert run_grid(parse_grid(good), out, workers=0).computed
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "runs").iterdir()}
    bad = tiny_grid(seeds=[0], constructions=(), axes={"lr": [1e-2, 1e12]}, grad_clip=0.0)
    del bad["base"]["lr"]
    rc = main(["experiment", "grid", str(write(tmp_path / "bad.json", bad)), "--out", str(out), "--no-progress",
               "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "FAILED" in err and "diverged" in err, err
    # the lr=1e-2 run of the second grid has another key (grad_clip differs); it ran, the diverging one did not land
    runs = {q.name: (q.stat().st_mtime_ns, q.read_bytes()) for q in (out / "runs").iterdir()}
    assert {k: runs[k] for k in kept} == kept and len(runs) == 2
    failed = list((out / "failed").iterdir())
    assert len(failed) == 1 and failed[0].name not in runs
    assert "diverged" in json.loads(failed[0].read_text())["error"]


def _fake_result(task_acc, task_ceiling=0.9):
    """A hand-made result of a 4-layer model (5 residual indices, 4 attention layers)."""
    return {
        "train": {"metrics": {"tv_model": 0.03}},
        "fig1": {"model": [[0.3, 0.5], [0.6, 0.7]], "bayes": [[0.4, 0.5], [0.7, 0.8]]},
        "probes": {"layers": ["embed", "b0", "b1", "b2", "b3"],
                   "token": {"1": {"accuracy": [0.3, 0.9, 0.8, 0.7, 0.6]}, "4": {"accuracy": [0.3, 0.4, 0.5, 0.6, 0.5]}},
                   "state": {"accuracy": [0.5, 0.69, 0.7, 0.7, 0.7]},
                   "task": {"accuracy": task_acc, "ceiling": task_ceiling}},
        "independence": {"mean": [0.1, 0.2, 0.8, 1.0]},
    }


def test_summaries_by_hand():
    from verify.experiments.tables import summarise

    s = summarise(_fake_result([0.3, 0.4, 0.5, 0.87, 0.88]))  # 0.87: within 0.02 of 0.88
    assert s["tv"] == 0.03
    assert s["acc_demo1"] == pytest.approx(0.4, abs=1e-12) and s["acc_test"] == pytest.approx(0.65, abs=1e-12)
    assert s["bayes_test"] == pytest.approx(0.75, abs=1e-12)
    assert (s["tok_k1"], s["tok_kmax"]) == (0.9, 0.6)
    assert s["tok_peak_shift"] == pytest.approx((3 - 1) / 4, abs=1e-12)
    assert s["state_at"] == pytest.approx(1 / 4, abs=1e-12)  # 0.69 is within 0.02 of the best 0.70
    assert s["task_at"] == pytest.approx(3 / 4, abs=1e-12) and s["task_late"] == pytest.approx(0.5, abs=1e-12)
    assert s["task_final"] == pytest.approx(0.88 / 0.9, rel=1e-12)
    assert (s["pi_first"], s["pi_last"]) == (0.1, 1.0)
    assert s["pi_rise"] == pytest.approx((0.8 + 1.0) / 2 - (0.1 + 0.2) / 2, abs=1e-12)
    # a task probe that never reaches half its ceiling has no "task_at"
    s = summarise(_fake_result([0.0, 0.0, 0.1, 0.1, 0.1], task_ceiling=0.3))
    assert math.isnan(s["task_at"]) and math.isnan(s["task_late"]) and s["task_final"] == pytest.approx(1 / 3)
    # a state probe that gains nothing over the embedding has no "state_at" (and so no "task_late")
    r = _fake_result([0.3, 0.4, 0.5, 0.87, 0.88])
    r["probes"]["state"]["accuracy"] = [0.34, 0.32, 0.35, 0.34, 0.33]
    s = summarise(r)
    assert math.isnan(s["state_at"]) and math.isnan(s["task_late"]) and s["task_at"] == pytest.approx(3 / 4)


def test_finding_verdicts_by_hand():
    from verify.experiments.findings import FINDINGS, verdict
    from verify.experiments.tables import Interval

    late = next(f for f in FINDINGS if f.key == "task-late")  # claim: task_late > 0
    early = next(f for f in FINDINGS if f.key == "state-early")  # claim: state_at <= 1/2
    nan = math.nan
    assert verdict(Interval(0.3, 0.1, 0.5, 3), late) == "yes"
    assert verdict(Interval(0.1, -0.1, 0.3, 3), late) == "unclear"
    assert verdict(Interval(-0.3, -0.5, -0.1, 3), late) == "no"
    assert verdict(Interval(0.0, 0.0, 0.0, 3), late) == "no"  # zero in every seed: not later
    assert verdict(Interval(0.2, nan, nan, 1), late) == "yes (n=1)"
    assert verdict(Interval(nan, nan, nan, 0), late) == "-"
    assert verdict(Interval(0.2, 0.1, 0.3, 3), early) == "yes"
    assert verdict(Interval(0.5, 0.5, 0.5, 3), early) == "yes"  # exactly half the depth counts as early
    assert verdict(Interval(0.5, 0.3, 0.7, 3), early) == "unclear"
    assert verdict(Interval(0.8, 0.6, 1.0, 3), early) == "no"


def test_findings_table_from_runs():
    """Three seeds of a hand-made 4-layer run: every finding's verdict and interval follow from the statistics."""
    from verify.experiments.findings import findings_markdown, run_statistics

    runs = []
    for seed, (t3, sa) in enumerate([(0.87, 0.69), (0.86, 0.69), (0.88, 0.70)]):
        r = _fake_result([0.3, 0.4, 0.5, t3, 0.88])
        r["probes"]["state"]["accuracy"] = [0.5, sa, 0.7, 0.7, 0.7]
        r["run"] = {"kind": "trained", "config": {"num_tasks": 4, "n_layers": 4, "seed": seed}, "probe": {}}
        runs.append(r)
    s = run_statistics(runs[0])
    assert s["acc_gain"] == pytest.approx(0.65 - 0.4, abs=1e-12) and s["tok_fade"] == pytest.approx(0.3, abs=1e-12)
    md = findings_markdown(runs)
    row = next(line for line in md.splitlines() if line.startswith("| trained"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    # kind, n, then demos-help, tokens-fade, peak-deeper, state-early, task-late, law-late, law-share-late,
    # task-after-tokens, pi-rise
    assert cols[1] == "3"
    assert cols[2] == "yes: 0.25 [0.25, 0.25]" and cols[3] == "yes: 0.30 [0.30, 0.30]"
    assert cols[4] == "yes: 0.50 [0.50, 0.50]"  # lag 4 peaks at residual 3, lag 1 at residual 1
    assert cols[5] == "yes: 0.25 [0.25, 0.25]"  # state within 0.02 of its best at residual 1 of 4
    assert cols[6] == "yes: 0.50 [0.50, 0.50]"  # task at residual 3: later than the state
    assert cols[7] == "-" and cols[8] == "-"  # no task-law probe in these results
    # task gains 0.58 over the embedding, 0.48 of it after block 1; lag 1 gains 0.3, -0.3 of it after block 1
    assert cols[9].startswith("yes: 1.") and float(cols[9].split()[1]) == pytest.approx(0.48 / 0.58 + 1.0, abs=0.02)
    assert cols[10].startswith("yes: 0.75")
    assert "- **task-late**" in md and "yes 1, no 0, unclear 0" in md
    # a seed whose state probe finds nothing: state-early and task-late rest on the other two seeds, and say so
    runs[2]["probes"]["state"]["accuracy"] = [0.5, 0.5, 0.5, 0.5, 0.5]
    cols = [c.strip() for c in next(line for line in findings_markdown(runs).splitlines()
                                     if line.startswith("| trained")).strip("|").split("|")]
    assert cols[5] == "yes: 0.25 [0.25, 0.25] (2 of 3 seeds)" and cols[6].endswith("(2 of 3 seeds)")
    # the share statistic by hand: the task law gains 0.8 over the embedding, 0.2 of it after the first block; the
    # state gains 0.2, 0.1 of it after the first block -> 0.25 - 0.5 < 0: the task is not later by this measure
    from verify.experiments.findings import late_share
    r = runs[0]
    r["probes"]["task_law"] = {"r2": [0.1, 0.7, 0.8, 0.85, 0.9], "ceiling": 1.0}
    r["probes"]["state"]["accuracy"] = [0.5, 0.6, 0.65, 0.7, 0.7]
    assert late_share(r["probes"]["task_law"]["r2"]) == pytest.approx(0.25, abs=1e-12)
    assert run_statistics(r)["law_share_late"] == pytest.approx(0.25 - 0.5, abs=1e-12)
    assert math.isnan(late_share([0.5, 0.5, 0.51]))  # gains less than 0.02: nothing to share
    assert math.isnan(late_share([0.5, None, 0.9]))
    # a task classifier that gains less than 0.05 (1024 tasks) has no share: task-after-tokens undefined
    r["probes"]["task"]["accuracy"] = [0.0, 0.02, 0.03, 0.02, 0.04]
    assert math.isnan(run_statistics(r)["task_share_late"])
    assert cols[2] == "yes: 0.25 [0.25, 0.25]"  # defined in every seed: no count


def test_cells_sort_numbers_by_value_and_note_devices():
    from verify.experiments.tables import device_note

    runs = []
    for k, dev in [(1024, "cpu"), (4, "cpu"), (64, "cuda"), (64, "cpu")]:
        r = _fake_result([0.3, 0.4, 0.5, 0.87, 0.88])
        seed = len([x for x in runs if x["run"]["config"]["num_tasks"] == k])
        r["run"] = {"kind": "trained", "config": {"num_tasks": k, "seed": seed}, "probe": {}}
        r["timing"] = {"subject_s": 1.0, "probe_s": 1.0, "cpu_s": 1.0, "device": dev}
        runs.append(r)
    _, cs = cells(runs)
    assert [c.setting["num_tasks"] for c in cs] == [4, 64, 1024]
    note = device_note(cs)
    assert note.startswith("trained on: cpu, cuda") and "cells mixing devices" in note and "64" in note
    for r in runs:
        r["timing"].pop("device")  # results from before the field: the CPU, and no note
    assert device_note(cells(runs)[1]) is None
