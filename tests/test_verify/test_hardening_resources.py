"""Class 2 of issue 12: unbounded work and memory are refused up front, in one line giving the estimate and the
limit (and the flag that raises it), never run until the machine runs out."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.test_verify.hardening_cli import EXAMPLES, assert_refused, assert_untouched, hmmtx, hmmtx_batch, snapshot, write_json


@pytest.fixture
def work(tmp_path):
    shutil.copy(EXAMPLES / "hmm.json", tmp_path / "hmm.json")
    shutil.copy(EXAMPLES / "tasks.json", tmp_path / "tasks.json")
    return tmp_path


def _uniform_hmm(S: int, V: int = 2) -> dict:
    return {"initial_probs": [1 / S] * S, "transition_matrix": [[1 / S] * S] * S, "emission_probs": [[1 / V] * V] * S}


def test_oversized_requests_are_refused_with_estimate_and_limit(work):
    write_json(work / "s500.json", _uniform_hmm(500))
    task = json.loads((EXAMPLES / "hmm.json").read_text())
    write_json(work / "mix200.json", {"task_prior": [1 / 200] * 200, "tasks": [task] * 200})
    write_json(work / "slow.json", {**_uniform_hmm(2), "initial_probs": ["1e-100000000", "1"]})
    ctx = "0 1 | 1"
    variants = [
        (["run", "exact-filter", "--hmm", "s500.json", "--tokens", "0 1"], ["exact-filter", "estimate", "limit"]),
        (["run", "bayes-multitask", "--tasks", "mix200.json", "--tokens", ctx], ["bayes-multitask", "estimate"]),
        (["run", "exact-filter-std", "--hmm", "s500.json", "--tokens", "0 1"], ["exact-filter-std", "estimate"]),
        (["run", "icl", "--tasks", "tasks.json", "--tokens", ctx, "--max-len", "1000000"], ["icl", "estimate"]),
        (["run", "icl", "--tasks", "tasks.json", "--tokens", ctx, "--r", "12"], ["icl", "estimate"]),
        (["run", "memory-kernel", "--tokens", "1 0", "--ffn-width", "10000000"], ["memory-kernel", "estimate"]),
        (["inspect", "window", "--hmm", "hmm.json", "--r", "40"], ["window", "estimate"]),
        (["t5-table", "--max-lag", "100000000"], ["t5-table", "100000001 rows", "--max-lag", "limit"]),
        (["probe", "--model", "constructed:icl", "--contexts", "1000000000"], ["probe", "--contexts", "limit"]),
        (["icl-table", "--zoo-mixture", "dirichlet", "--contexts", "1000000000"], ["icl-table", "--contexts"]),
        (["window-curve", "--zoo", "mess3", "--r-max", "3", "--seqs", "100000000"], ["window-curve", "--seqs"]),
        (["filter", "--hmm", "slow.json", "--tokens", "0"], ["slow.json", "exponent"]),
        (["train", "--layers", "1024"], ["training", "limit"]),
        # flags beyond any sensible size are range errors naming the flag
        (["run", "icl", "--tasks", "tasks.json", "--tokens", ctx, "--K", "1000000000"], ["--K"]),
        (["icl-table", "--zoo-mixture", "dirichlet", "--K", "1000000000"], ["--K"]),
        (["run", "memory-kernel", "--tokens", "1 0", "--ffn-width", "100000000"], ["--ffn-width"]),
        (["run", "icl", "--tasks", "tasks.json", "--tokens", ctx, "--max-len", "1000000000"], ["--max-len"]),
        (["train", "--threads", "100000"], ["--threads"]),
        (["verify", "--jobs", "100000"], ["--jobs"]),
    ]
    before = snapshot(work)
    for res, (_, culprits) in zip(hmmtx_batch([v for v, _ in variants], work), variants):
        line = assert_refused(res, *culprits)
        if "estimate" in line:
            assert "hmmtx --max-memory-gb" in line  # says how to raise the limit
    assert_untouched(before, work)


def test_endless_and_oversized_files_are_refused(work):
    (work / "big.json").write_text(" " * (2 * 2**20) + "{}")
    before = snapshot(work)
    assert_refused(hmmtx(["filter", "--hmm", "/dev/zero", "--tokens", "0"], work, timeout=60), "/dev/zero", "device")
    assert_refused(hmmtx(["--max-input-mb", "1", "filter", "--hmm", "big.json", "--tokens", "0"], work),
                   "big.json", "input limit of 1 MiB", "--max-input-mb")
    assert_refused(hmmtx(["filter", "--hmm", "big.json", "--tokens", "0"], work, HMMTX_MAX_INPUT_MB="1"),
                   "big.json", "input limit")
    assert_untouched(before, work)


def test_the_memory_limit_flag_is_honoured(work):
    """The same run is refused under a lower limit and runs under a higher one (flag and environment variable),
    so the limit is a real parameter and the refusal is its doing."""
    before = snapshot(work)
    args = ["t5-table", "--quiet", "--max-lag", "20000"]  # estimate ~11.4 MiB
    line = assert_refused(hmmtx(["--max-memory-gb", "0.005", *args], work), "t5-table", "20001 rows", "limit")
    assert "5.12 MiB" in line and "--max-memory-gb" in line
    assert_refused(hmmtx(args, work, HMMTX_MAX_MEMORY_GB="0.005"), "t5-table", "limit")
    ok = hmmtx(["--max-memory-gb", "0.05", *args], work)
    assert ok.returncode == 0 and ok.stderr == ""
    assert_refused(hmmtx(["--max-memory-gb", "-1", *args], work), "--max-memory-gb")
    assert_untouched(before, work)


def test_construction_estimate_hook_refuses_and_the_limit_raises_it(work):
    """The contract's ``estimate_bytes`` hook: adaptive-memory (packaged) and the example plugin have one, so
    ``run``/``inspect`` refuse an oversized request before building, and the limit is what decides."""
    plugin = str(EXAMPLES / "plugin" / "prev_token_copier.py")
    small = ["run", "adaptive-memory", "--tokens", "0:1/2 0:-1 0:1/4"]
    huge = ["run", "adaptive-memory", "--mode", "exact", "--lag-range", "4096", "--max-len", "4096", "--tokens", "0:1"]
    copier = ["--plugin", plugin, "inspect", "prev-token-copier", "--hmm", "hmm.json"]
    before = snapshot(work)
    wide = ["inspect", "adaptive-memory", "--memories", "16", "--lag-range", "4096", "--max-len", "4096"]  # float64
    res = hmmtx_batch([huge, wide, ["--max-memory-gb", "1e-5", *small], ["--max-memory-gb", "1", *small],
                       ["--max-memory-gb", "1e-6", *copier], copier], work)
    for r, mode in zip(res[:2], ("exact", "float64")):  # 8192 positions: ~20 GiB of scores
        line = assert_refused(r, "adaptive-memory", f"mode {mode}", "estimate", "limit of 8 GiB", "--max-memory-gb")
        assert "GiB (estimate)" in line
    assert_refused(res[2], "adaptive-memory", "estimate", "limit of 10.5 KiB")
    assert res[3].returncode == 0 and res[3].stderr == "", res[3].stderr  # the same request under a higher limit
    assert_refused(res[4], "prev-token-copier", "estimate", "limit of 1.05 KiB")
    assert res[5].returncode == 0 and res[5].stderr == "", res[5].stderr
    assert_untouched(before, work)
