"""Class 5 of issue 12: messages. User strings are printed literally (never as Rich markup), the flag at fault is
the one named, torch's reason for refusing an unsafe checkpoint is kept whole, and warnings add no lines."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.test_verify.hardening_cli import EXAMPLES, assert_refused, hmmtx, hmmtx_batch, write_json


@pytest.fixture
def work(tmp_path):
    shutil.copy(EXAMPLES / "hmm.json", tmp_path / "hmm.json")
    shutil.copy(EXAMPLES / "tasks.json", tmp_path / "tasks.json")
    return tmp_path


MARKUP = ["[/]", "[bold]x[/bold]", "[red", "[/b]"]


def test_user_strings_are_printed_literally(work):
    hmm = json.loads((EXAMPLES / "hmm.json").read_text())
    for k, name in enumerate(MARKUP):
        write_json(work / f"n{k}.json", {**hmm, "name": name})
    shutil.copy(EXAMPLES / "hmm.json", work / "we[ird].json")
    shutil.copy(EXAMPLES / "tasks.json", work / "t[/b].json".replace("/", ""))
    variants = [["filter", "--hmm", f"n{k}.json", "--tokens", "0 1", "--json", f"o{k}.json"] for k in range(len(MARKUP))]
    variants += [["window-curve", "--hmm", "we[ird].json", "--r-max", "2", "--seqs", "2", "--length", "6",
                  "--no-exact-check", "--json", "c[x].json"],
                 ["zoo", "mess3", "--out", "z[/]".replace("/", "") + ".json"]]
    results = hmmtx_batch(variants, work)
    for k, name in enumerate(MARKUP):
        res = results[k]
        assert res.returncode == 0 and res.stderr == "", res.stderr
        assert name in res.stdout  # the name itself, not its markup interpretation
        assert (work / f"o{k}.json").is_file()
    wc = results[len(MARKUP)]
    assert wc.returncode in (0, 1) and wc.stderr == "" and "we[ird].json" in wc.stdout and (work / "c[x].json").is_file()
    assert results[-1].returncode == 0 and "z[].json" in results[-1].stdout


def test_the_flag_at_fault_is_named_and_reasons_are_whole(work):
    import torch

    from verify.training import CHECKPOINT_FORMAT

    class Evil:
        def __reduce__(self):
            return (exec, ("import os",))

    torch.save({"format": CHECKPOINT_FORMAT, "x": Evil()}, work / "evil.pt")
    tok = ["--tokens", "0 1"]
    variants = [
        # memory-kernel's default is softmax with its own beta: choosing hard attention is the --attention problem
        (["run", "memory-kernel", "--attention", "hard", "--tokens", "1 0"], ["--attention softmax"], ["--beta applies"]),
        (["run", "exact-filter", "--hmm", "hmm.json", *tok, "--attention", "hard", "--beta", "5"], ["--beta"], []),
        (["run", "exact-filter", "--hmm", "hmm.json", *tok, "--attention", "softmax", "--beta", "-1"], ["--beta"], []),
        (["run", "exact-filter", "--hmm", "hmm.json", *tok, "--attention", "softmax", "--beta", "nan"], ["--beta"], []),
        (["inspect", "exact-filter", "--hmm", "hmm.json", "--attention", "hard", "--beta", "5"], ["--beta"], []),
        (["probe", "--model", "checkpoint:evil.pt"],
         ["evil.pt", "unsafe", "WeightsUnpickler error:", "not an allowed global"], ["\x1b["]),
    ]
    for res, (_, named, not_named) in zip(hmmtx_batch([v for v, _, _ in variants], work), variants):
        line = assert_refused(res, *named)
        for s in not_named:
            assert s not in line, line
    assert "import os" not in line or "not executed" in line


def test_warnings_add_no_lines(work, capsys, monkeypatch):
    """A divergent in-context learner makes numpy warn (overflow / invalid value). The CLI silences warnings (they
    would add lines; its own stdout line says the check failed): stderr stays empty, here and in the subprocess run
    of test_hardening_silent. With HMMTX_WARNINGS=1 the same run does warn, so the empty stderr is not vacuous.
    (In-process, to spare a third torch start; the CLI's main() is what the hmmtx entry point runs.)"""
    from tests.test_verify.test_hardening_silent import ICL_NAN
    from verify.cli import main

    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main(ICL_NAN) == 1
    out, err = capsys.readouterr()
    assert err == "" and "CHECK FAILED" in out
    monkeypatch.setenv("HMMTX_WARNINGS", "1")
    with pytest.warns(RuntimeWarning):
        assert main(ICL_NAN) == 1


def test_markup_in_a_file_name_as_a_real_process(work):
    """A real ``hmmtx`` process (the batches above run main() in one): Rich would eat ``[b]`` as a bold tag."""
    res = hmmtx(["zoo", "mess3", "--out", "z[b]x.json"], work)
    assert res.returncode == 0 and res.stderr == "" and "z[b]x.json" in res.stdout
    assert (work / "z[b]x.json").is_file()
