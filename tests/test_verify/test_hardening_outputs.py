"""Class 4 of issue 12: outputs are written atomically and only onto regular files; an output never replaces an
input, a device node or a symbolic link; a plot set is all-or-nothing; an interrupted command (SIGINT, SIGTERM)
prints one line and leaves no partial output and no child process."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hmm.io as hio
from hmm.errors import HmmtxError
from tests.test_verify.hardening_cli import (
    EXAMPLES,
    assert_refused,
    assert_untouched,
    children_of,
    cli_env,
    hmmtx,
    hmmtx_batch,
    session_members,
    snapshot,
)


@pytest.fixture
def work(tmp_path):
    shutil.copy(EXAMPLES / "hmm.json", tmp_path / "hmm.json")
    shutil.copy(EXAMPLES / "tasks.json", tmp_path / "tasks.json")
    return tmp_path


def test_unsafe_output_paths_are_refused(work):
    (work / "target.json").write_text('{"keep": true}\n')
    (work / "link.json").symlink_to("target.json")
    (work / "dangling.json").symlink_to("nowhere.json")
    os.link(work / "hmm.json", work / "hard.json")
    (work / "afile").write_text("x")
    f = ["filter", "--hmm", "hmm.json", "--tokens", "0 1"]
    variants = [
        (f + ["--json", "hmm.json"], ["--json", "input"]),
        (f + ["--json", "./hmm.json"], ["--json", "input"]),
        (f + ["--json", "hard.json"], ["--json", "input"]),
        (f + ["--json", "link.json"], ["--json", "symbolic link"]),
        (f + ["--json", "dangling.json"], ["--json", "symbolic link"]),
        (f + ["--json", "/dev/null"], ["--json", "device"]),
        (f + ["--json", ""], ["--json", "empty"]),
        (f + ["--json", "afile/x.json"], ["--json", "does not exist"]),
        (["zoo", "mess3", "--out", ""], ["--out", "empty"]),
        (["zoo", "mess3", "--out", "link.json"], ["--out", "symbolic link"]),
        (["run", "exact-filter", "--hmm", "hmm.json", "--tokens", "0 1", "--json", "hmm.json"], ["--json", "input"]),
        (["run", "bayes-multitask", "--tasks", "tasks.json", "--tokens", "0 | 1", "--json", "tasks.json"], ["input"]),
        (["verify", "--json", ""], ["--json", "empty"]),
        (["verify", "--plots", "afile"], ["--plots", "not a folder"]),
        (["verify", "--reproducers", "link.json"], ["--reproducers", "symbolic link"]),
        (["t5-table", "--json", "/dev/null"], ["--json", "device"]),
        (["train", "--config", "tiny", "--out", "dangling.json"], ["--out", "symbolic link"]),
        (["filter", "--hmm", "", "--tokens", "0"], ["--hmm", "empty"]),
    ]
    before = snapshot(work)
    for res, (_, culprits) in zip(hmmtx_batch([v for v, _ in variants], work), variants):
        assert_refused(res, *culprits)
    assert_untouched(before, work)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert (work / "link.json").is_symlink() and (work / "target.json").read_text() == '{"keep": true}\n'


def _raise_on(call: int, exc: BaseException):
    count = {"n": 0}
    real = os.fsync

    def fsync(fd):
        count["n"] += 1
        if count["n"] == call:
            raise exc
        return real(fd)

    return fsync


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(28, "No space left on device"), SystemExit(143)])
def test_interrupted_writes_leave_nothing(tmp_path, monkeypatch, exc):
    target = tmp_path / "out.json"
    target.write_text("old\n")
    before = snapshot(tmp_path)
    monkeypatch.setattr(hio.os, "fsync", _raise_on(1, exc))
    with pytest.raises((HmmtxError, type(exc))):
        hio.atomic_write_json(target, {"new": 1})
    assert_untouched(before, tmp_path)
    # a plot set: the second file fails -> none of the set, no temporaries, the new folder removed again
    monkeypatch.setattr(hio.os, "fsync", _raise_on(2, exc))
    with pytest.raises((HmmtxError, type(exc))):
        hio.write_file_set(tmp_path / "plots", {"a.png": b"a", "b.png": b"b", "c.png": b"c"})
    assert_untouched(before, tmp_path)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"old")
    before = snapshot(tmp_path)
    monkeypatch.setattr(hio.os, "fsync", _raise_on(3, exc))
    with pytest.raises((HmmtxError, type(exc))):
        hio.write_file_set(tmp_path / "plots", {"a.png": b"a", "b.png": b"b", "c.png": b"c"})
    assert_untouched(before, tmp_path)
    monkeypatch.undo()
    written = hio.write_file_set(tmp_path / "plots", {"a.png": b"a", "b.png": b"b"})
    assert [p.read_bytes() for p in written] == [b"a", b"b"]


def _default_sigint() -> None:
    # as in a terminal: a test runner started in the background inherits SIGINT ignored, which the child would keep
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_session_outlives_its_test():
    """A test that fails before it signals its command (say an unexpected first line) must not leave the command
    running: every session started by :func:`_start` is killed at teardown."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate(timeout=30)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "verify.cli", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    _STARTED.append(proc)
    return proc


def _wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _assert_interrupted(proc: subprocess.Popen, status: int, word: str, cwd: Path, before: dict) -> None:
    out, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == status, err[-3000:]
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err, err[-3000:]
    assert _wait_for(lambda: not session_members(proc.pid), 10), "child processes left behind"
    assert_untouched(before, cwd)


@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_interrupting_verify_full_with_workers(tmp_path, sig, status, word):
    """A --full sweep with two workers, interrupted while the workers run: one line, no report, no reproducers,
    no temp file, no process left. SIGINT goes to the whole process group (as a terminal's Ctrl-C does)."""
    before = snapshot(tmp_path)
    proc = _start(["verify", "--full", "-c", "exact-filter", "--jobs", "2", "--json", "r.json", "--plots", "p"],
                  tmp_path)
    assert _wait_for(lambda: len(children_of(proc.pid)) >= 2, 60), "workers never started"
    time.sleep(1.0)  # let the workers import torch and start on cases
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    _assert_interrupted(proc, status, word, tmp_path, before)


@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_interrupting_training(tmp_path, sig, status, word):
    before = snapshot(tmp_path)
    proc = _start(["train", "--config", "tiny", "--steps", "1000000", "--out", "m.pt", "--json", "m.json",
                   "--no-progress"], tmp_path)
    first = proc.stderr.readline()  # "training ..." is printed just before the loop starts
    assert first.startswith("training"), first
    time.sleep(0.5)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == status and len(lines) == 1 and word in lines[0] and "Traceback" not in err, err[-3000:]
    assert _wait_for(lambda: not session_members(proc.pid), 10)
    assert_untouched(before, tmp_path)


def test_verify_leaves_no_worker_after_it_exits(tmp_path):
    proc = _start(["verify", "-c", "exact-filter", "--states", "2", "--lengths", "4,8", "--dtype", "float64",
                   "--jobs", "2"], tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "cases within their bounds" in out and "[2 worker(s)]" in out, err[-3000:]
    assert _wait_for(lambda: not session_members(proc.pid), 5), "worker processes left after exit"


def test_interrupting_experiment_grid_then_rerun_completes(tmp_path):
    """``experiment grid`` with a worker process: SIGINT to the process group (Ctrl-C) after the first finished
    run, then SIGTERM to the parent of the rerun after the second: one line and 130 / 143 each time, only complete
    results (no temporary or failed file), no process left; a final rerun computes just the missing run."""
    import json

    base = {"num_tasks": 2, "num_states": 2, "vocab_size": 3, "n_demos": 2, "demo_len": 4, "test_len": 4,
            "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "steps": 30, "batch_size": 8, "lr": 1e-2,
            "warmup": 2, "eval_contexts": 30, "concentration": 0.3}
    grid = {"name": "tiny", "seeds": [0, 1, 2], "base": base, "axes": {}, "constructions": [],
            "probe": {"contexts": 20, "perms": 1, "lags": [1, 2]}}
    (tmp_path / "g.json").write_text(json.dumps(grid))
    args = ["experiment", "grid", "g.json", "--out", "out", "--workers", "1", "--no-progress"]
    runs = tmp_path / "out" / "runs"

    def files() -> list[str]:
        return sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())

    for sig, status, word, n_done in ((signal.SIGINT, 130, "interrupted", 1), (signal.SIGTERM, 143, "terminated", 2)):
        proc = _start(args, tmp_path)
        assert _wait_for(lambda: runs.is_dir() and len(list(runs.glob("*.json"))) >= n_done, 120), "no run finished"
        assert children_of(proc.pid), "the worker process is gone before the signal"
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("done L=")]  # the per-run log lines
        assert proc.returncode == status and len(lines) == 1 and word in lines[0] and "Traceback" not in err, err[-3000:]
        assert _wait_for(lambda: not session_members(proc.pid), 10), "child processes left behind"
        got = files()
        assert all(f.startswith("runs/") and f.endswith(".json") and not f.startswith("runs/.") for f in got), got
        assert len(got) in (n_done, n_done + 1) and len(got) < 3, got  # a run may land while the signal travels
        for f in got:  # every result file is complete
            assert json.loads((tmp_path / "out" / f).read_text())["key"] == Path(f).stem
    rerun = subprocess.run([sys.executable, "-m", "verify.cli", *args], cwd=tmp_path, env=cli_env(),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and f"already finished {len(got)}" in rerun.stderr, rerun.stderr[-3000:]
    assert len(list(runs.glob("*.json"))) == 3 and not list((tmp_path / "out" / "failed").iterdir())


_SLOW_FINALIZER_ABORT = '''
import atexit, os, sys, threading, time
import multiprocessing.synchronize as ms
from multiprocessing import resource_tracker
from verify.experiments.runner import _LocalEngine


def slow_cleanup(name):  # widen the race: a semaphore finalized outside the main thread is slow to unregister
    from _multiprocessing import sem_unlink
    sem_unlink(name)
    if threading.current_thread() is not threading.main_thread():
        time.sleep(0.3)
    resource_tracker.unregister(name, "semaphore")


if __name__ == "__main__":
    ms.SemLock._cleanup = staticmethod(slow_cleanup)
    eng = _LocalEngine(1, progress=sys.argv[1] == "progress")
    eng.pool.submit(time.sleep, 30)
    time.sleep(0.5)
    eng.close(abort=True)
    atexit._run_exitfuncs()  # what verify.cli.entry does after an interrupt
    sys.stderr.flush()
    os._exit(143)
'''


@pytest.mark.parametrize("progress", ["progress", "quiet"])
def test_aborted_worker_pool_releases_its_semaphores_before_exit(tmp_path, progress):
    """An aborted local engine joins the pool's manager thread, so the pool's queues (and their semaphores) are
    released in the main thread before ``close`` returns; an ``os._exit`` right after it leaves the resource
    tracker nothing to warn about. (Before: the manager thread released them after ``close`` returned, racing the
    exit: "leaked semaphore objects" warnings on stderr, made certain here by a slow finalizer.)"""
    script = tmp_path / "abort.py"
    script.write_text(_SLOW_FINALIZER_ABORT)
    proc = subprocess.run([sys.executable, str(script), progress], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143 and proc.stderr == "", proc.stderr[-3000:]
