"""Class 1 of issue 12: inputs that used to end in a traceback end in one line and exit 2 (through the CLI)."""

from __future__ import annotations

import shutil

import pytest

from tests.test_verify.hardening_cli import EXAMPLES, assert_refused, assert_untouched, hmmtx, hmmtx_batch, snapshot, write_json


@pytest.fixture
def work(tmp_path):
    shutil.copy(EXAMPLES / "hmm.json", tmp_path / "hmm.json")
    shutil.copy(EXAMPLES / "tasks.json", tmp_path / "tasks.json")
    return tmp_path


def _hmm_with(**entries):
    base = {"initial_probs": ["1/2", "1/2"], "transition_matrix": [["1/2", "1/2"], ["1/3", "2/3"]],
            "emission_probs": [["1"], ["1"]]}
    return {**base, **entries}


def test_json_and_number_inputs_never_trace(work):
    (work / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (work / "deep_obj.json").write_text('{"initial_probs": ' + "[" * 5000 + "]" * 5000 + "}")
    (work / "bigint.json").write_text('{"initial_probs": [' + "1" * 5000 + "]}")
    write_json(work / "tiny.json", _hmm_with(initial_probs=["1e-999", "1/2"]))  # its sum has ~1000 digits
    write_json(work / "hugefrac.json", _hmm_with(initial_probs=["1/" + "7" * 5000, "1/2"]))
    big_tok = "0 " + "1" * 5000
    variants = [
        (["filter", "--hmm", "deep.json", "--tokens", "0"], ["deep.json", "nested"]),
        (["filter", "--hmm", "deep_obj.json", "--tokens", "0"], ["deep_obj.json", "nested"]),
        (["filter", "--hmm", "bigint.json", "--tokens", "0"], ["bigint.json", "5000 digits"]),
        (["filter", "--hmm", "tiny.json", "--tokens", "0"], ["initial_probs", "sums to"]),
        (["filter", "--hmm", "hugefrac.json", "--tokens", "0"], ["initial_probs"]),
        (["filter", "--hmm", "hmm.json", "--tokens", big_tok], ["--tokens"]),
        (["run", "exact-filter", "--hmm", "hmm.json", "--tokens", big_tok], ["--tokens"]),
        (["memory-table", "--lam", "1e300"], ["--lam"]),
        (["memory-table", "--alpha", "inf"], ["--alpha"]),
        (["window-curve", "--zoo", "mess3", "--r-max", "2", "--seed", "1" * 5000], ["--seed"]),
        (["run", "memory-kernel", "--tokens", "1e400 1"], ["--tokens", "1e400"]),
        (["run", "memory-kernel", "--tokens", "1e-100000000 1"], ["--tokens"]),
        (["run", "icl", "--tasks", "tasks.json", "--tokens", "0 1 | 1", "--eta", "1e300"], ["--eta"]),
    ]
    before = snapshot(work)
    for res, (_, culprits) in zip(hmmtx_batch([v for v, _ in variants], work), variants):
        assert_refused(res, *culprits)
    assert_untouched(before, work)


def test_out_of_range_seeds_and_threads_never_trace(work):
    variants = [
        (["train", "--config", "tiny", "--seed", "1" * 23], ["--seed"]),
        (["train", "--config", "tiny", "--mixture-seed", "-5"], ["--mixture-seed"]),
        (["train", "--config", "tiny", "--threads", "100000"], ["--threads"]),
        (["probe", "--model", "constructed:icl", "--seed", "-1"], ["--seed"]),
        (["icl-table", "--zoo-mixture", "dirichlet", "--seed", "-1"], ["--seed"]),
        (["run", "memory-kernel", "--tokens", "1 0", "--seed", "-1"], ["--seed"]),
        (["zoo", "dirichlet", "--seed", "1" * 30], ["--seed"]),
        (["verify", "--seed", "-1"], ["--seed"]),
        (["verify", "--jobs", "100000"], ["--jobs"]),
    ]
    before = snapshot(work)
    for res, (_, culprits) in zip(hmmtx_batch([v for v, _ in variants], work), variants):
        assert_refused(res, *culprits)
    assert_untouched(before, work)


def test_malformed_checkpoints_never_trace(work):
    import torch

    from verify.training import CHECKPOINT_FORMAT, TrainConfig

    (work / "empty.pt").write_bytes(b"")
    (work / "text.pt").write_text("not a checkpoint")
    torch.save({"format": CHECKPOINT_FORMAT, "mixture": {}, "state_dict": {}}, work / "noconfig.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "config": "x", "mixture": {}, "state_dict": {}}, work / "types.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "config": {"d_model": "64"}, "mixture": {}, "state_dict": {}},
               work / "fieldtype.pt")
    huge = {**TrainConfig().to_dict(), "d_model": 200_000, "n_heads": 4}
    torch.save({"format": CHECKPOINT_FORMAT, "config": huge, "mixture": {}, "state_dict": {}}, work / "huge.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned-marker",))

    torch.save({"format": CHECKPOINT_FORMAT, "x": Evil()}, work / "evil.pt")
    (work / "plotfile").write_text("a file, not a folder")
    variants = [
        (["probe", "--model", "checkpoint:empty.pt"], ["empty.pt"]),
        (["probe", "--model", "checkpoint:text.pt"], ["text.pt"]),
        (["probe", "--model", "checkpoint:noconfig.pt"], ["noconfig.pt", "config"]),
        (["probe", "--model", "checkpoint:types.pt"], ["types.pt", "config"]),
        (["probe", "--model", "checkpoint:fieldtype.pt"], ["fieldtype.pt", "d_model"]),
        (["probe", "--model", "checkpoint:huge.pt"], ["huge.pt", "d_model=200000", "limit"]),
        (["probe", "--model", "checkpoint:evil.pt"], ["evil.pt", "unsafe", "not executed", "WeightsUnpickler error:"]),
        (["probe", "--model", "constructed:icl", "--plot", "plotfile"], ["--plot", "not a folder"]),
        (["probe", "--model", "constructed:icl", "--plot", "missing/sub"], ["--plot", "does not exist"]),
    ]
    before = snapshot(work)
    results = hmmtx_batch([v for v, _ in variants], work)
    for res, (_, culprits) in zip(results, variants):
        assert_refused(res, *culprits)
        assert "pwned-marker" not in res.stdout + res.stderr
    assert_untouched(before, work)


def test_real_process_bad_inputs(work):
    """A few variants as real ``hmmtx`` processes (the batched tests above call the same main() in one)."""
    (work / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    before = snapshot(work)
    assert_refused(hmmtx(["filter", "--hmm", "deep.json", "--tokens", "0"], work), "deep.json", "nested")
    assert_refused(hmmtx(["train", "--seed", "1" * 23], work), "--seed")
    assert_refused(hmmtx(["memory-table", "--lam", "1e300"], work), "--lam")
    assert_untouched(before, work)
