"""Class 3 of issue 12: inputs that used to give a silently wrong answer are refused (or reported as a failed
check), never "fixed" or printed as nan with exit status 0."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture
from hmm.model import HMM
from tests.test_verify.hardening_cli import EXAMPLES, assert_refused, assert_untouched, hmmtx_batch, snapshot, write_json


#: icl-table with a divergent learner (step 1000, 200 GD layers): its closed-form check is not finite.
ICL_NAN = ["icl-table", "--zoo-mixture", "dirichlet", "--eta", "1000", "--K", "200", "--demos", "1",
           "--test-lengths", "1", "--contexts", "4", "--demo-length", "4"]


@pytest.fixture
def work(tmp_path):
    shutil.copy(EXAMPLES / "hmm.json", tmp_path / "hmm.json")
    shutil.copy(EXAMPLES / "tasks.json", tmp_path / "tasks.json")
    return tmp_path


def test_cli_refuses_instead_of_answering_wrongly(work):
    tasks = json.loads((EXAMPLES / "tasks.json").read_text())
    assert len(tasks["tasks"]) == 2 and any(isinstance(v, str) for v in tasks["tasks"][0]["initial_probs"])
    write_json(work / "prior_short.json", {**tasks, "task_prior": [0.4, 0.5]})  # used to become [0.4, 0.6]
    write_json(work / "prior_zero.json", {**tasks, "task_prior": [0, 0]})  # used to become [1, 0]
    write_json(work / "prior_neg.json", {**tasks, "task_prior": [1.5, -0.5]})
    ctx = "0 1 | 1"
    variants = [
        (["run", "bayes-multitask", "--tasks", "prior_short.json", "--tokens", ctx], ["task_prior", "sums to 0.9"]),
        (["run", "bayes-multitask", "--tasks", "prior_zero.json", "--tokens", ctx], ["task_prior", "sums to 0"]),
        (["run", "bayes-multitask", "--tasks", "prior_neg.json", "--tokens", ctx], ["task_prior", "negative"]),
        (["verify", "--construction", "memory-kernel", "--dtype", "exact"], ["selection runs no case", "--dtype"]),
        (["verify", "--construction", "exact-filter", "--states", "2", "--lengths", "0"], ["--lengths"]),
        (["run", "icl", "--tasks", "tasks.json", "--tokens", ctx, "--max-len", "-1"], ["--max-len"]),
        (["inspect", "icl", "--tasks", "tasks.json", "--max-len", "-5"], ["--max-len"]),
        (["inspect", "exact-filter", "--hmm", "hmm.json", "--tokens", "0 7"], ["--tokens", "7"]),
        (["inspect", "exact-filter", "--hmm", "hmm.json", "--tokens", "0 -1"], ["--tokens", "-1"]),
        (["inspect", "bayes-multitask", "--tasks", "tasks.json", "--tokens", "0 1 | 9"], ["--tokens segment 1", "9"]),
    ]
    before = snapshot(work)
    results = hmmtx_batch([v for v, _ in variants] + [ICL_NAN], work)
    for res, (_, culprits) in zip(results, variants):
        assert_refused(res, *culprits)
    # a divergent learner: the check cannot be computed -> exit 1 and a line saying so, never "= nan" and exit 0
    nan_run = results[-1]
    assert nan_run.returncode == 1, nan_run.stderr
    assert "CHECK FAILED" in nan_run.stdout and "= nan" not in nan_run.stdout
    assert nan_run.stderr == ""  # numpy's overflow warnings add no lines (test_hardening_messages shows they occur)
    assert_untouched(before, work)


def test_hmm_keeps_callers_arrays_writable_and_refuses_complex():
    pi = np.array([0.5, 0.5])
    A = np.array([[0.9, 0.1], [0.2, 0.8]])
    B = np.array([[0.3, 0.7], [0.6, 0.4]])
    h = HMM(pi, A, B)
    assert pi.flags.writeable and A.flags.writeable and B.flags.writeable  # the caller's arrays stay theirs
    assert not h.transition_matrix.flags.writeable  # the HMM's own copy is frozen
    A[0, 0] = 0.0  # changing the caller's array does not change the HMM
    assert h.transition_matrix[0, 0] == 0.9
    A[0, 0] = 0.9
    h2 = HMM.from_arrays(pi, A, B)
    assert pi.flags.writeable and h2.num_states == 2
    for bad in (A.astype(complex), A + 1e-3j):
        with pytest.raises(HmmtxError, match="transition_matrix.*complex"):
            HMM.from_arrays(pi, bad, B)
        with pytest.raises(HmmtxError, match="complex"):
            HMM(pi, bad, B)
    with pytest.raises(HmmtxError, match=r"initial_probs.*complex"):
        HMM.from_arrays([0.5 + 0j, 0.5], A, B)
    with pytest.raises(HmmtxError, match="task_prior.*complex"):
        HMMMixture.from_arrays(np.array([0.5, 0.5], dtype=complex), [h, h])


def test_numeric_prior_next_to_exact_tasks_is_validated_not_fixed():
    from fractions import Fraction

    h = HMM.from_arrays(["1/2", "1/2"], [["1/2", "1/2"], ["1/3", "2/3"]], [["1/4", "3/4"], ["1", "0"]])
    for prior, msg in (([0.4, 0.5], "sums to 0.9"), ([0, 0], "sums to 0"), ([0.4, 0.6, 0.0], "3 entries")):
        with pytest.raises(HmmtxError, match=msg):
            HMMMixture.from_arrays(prior, [h, h])
    m = HMMMixture.from_arrays([0.1, 0.9], [h, h])  # a valid float prior: only its round-off is moved
    assert m.exact and sum(m.task_prior) == 1
    assert abs(float(m.task_prior[0]) - 0.1) <= 1e-16 and m.task_prior[1] >= Fraction(9, 10) - Fraction(1, 10**15)
