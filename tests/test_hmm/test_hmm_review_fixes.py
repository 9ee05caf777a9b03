"""Regression tests for bad input and numerical corner cases found in review."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hmm.diagnostics import stationary_distribution
from hmm.errors import HmmtxError
from hmm.io import hmm_from_dict, mixture_from_dict, parse_context, parse_tokens
from hmm.model import HMM
from hmm.reference import forward_filter_exact
from verify.cli import main

GOOD = {"initial_probs": [0.5, 0.5], "transition_matrix": [[0.9, 0.1], [0.2, 0.8]], "emission_probs": [[1.0], [1.0]]}


def test_huge_integer_entry_is_a_clear_error():
    bad = dict(GOOD, initial_probs=[10**400, 0])
    with pytest.raises(HmmtxError, match="initial_probs"):
        hmm_from_dict(bad)


@pytest.mark.parametrize("key, value, where", [
    ("initial_probs", [True, False], r"initial_probs\[0\]"),
    ("transition_matrix", [[0.9, 0.1], [0.2, True]], r"transition_matrix\[1, 1\]"),
])
def test_booleans_are_not_numbers(key, value, where):
    with pytest.raises(HmmtxError, match=where + ".*boolean"):
        hmm_from_dict(dict(GOOD, **{key: value}))


@pytest.mark.parametrize("text", ["0_1", "+1", "\u0663", "1.0", "0x1"])
def test_token_ids_are_plain_ascii_integers(text):
    with pytest.raises(HmmtxError, match="not an integer token id"):
        parse_tokens(text)


def test_token_beyond_int64_is_a_clear_error():
    with pytest.raises(HmmtxError, match="out of range"):
        parse_tokens("0 99999999999999999999999")


@pytest.mark.parametrize("text", ["", "   ", " | "])
def test_empty_context_says_empty(text):
    with pytest.raises(HmmtxError, match="the sequence is empty"):
        parse_context(text)


def test_exact_batch_zero_probability_names_the_sequence():
    h = HMM.from_arrays([1, 0], [[0, 1], [1, 0]], [[1, 0], [0, 1]])
    with pytest.raises(HmmtxError, match="position 1 of sequence 1"):
        forward_filter_exact(h, [[0, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize("eps", [1e-13, 1e-9, 1e-5])
def test_stationary_distribution_of_nearly_identity_chains_is_accurate(eps):
    A = np.array([[1 - eps, eps], [2 * eps, 1 - 2 * eps]])
    np.testing.assert_allclose(stationary_distribution(A), [2 / 3, 1 / 3], rtol=0, atol=1e-12)


def test_stationary_distribution_ignores_transient_states_and_rejects_two_closed_classes():
    mu = stationary_distribution(np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.0, 0.6, 0.4]]))
    np.testing.assert_allclose(mu, [0.0, 6 / 14, 8 / 14], rtol=0, atol=1e-15)
    with pytest.raises(HmmtxError, match="not unique"):
        stationary_distribution(np.array([[1.0, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]]))


def test_float_prior_with_exact_tasks_is_converted_like_a_float_task():
    tasks = [{"initial_probs": ["1"], "transition_matrix": [["1"]], "emission_probs": [["1/2", "1/2"]]}] * 2
    m = mixture_from_dict({"task_prior": [0.1, 0.9], "tasks": tasks})
    assert m.exact and sum(m.task_prior) == 1
    assert abs(float(m.task_prior[0]) - 0.1) < 1e-16


def test_string_prior_makes_the_mixture_exact():
    tasks = [{"initial_probs": [1.0], "transition_matrix": [[1.0]], "emission_probs": [[0.5, 0.5]]}] * 2
    assert mixture_from_dict({"task_prior": ["1/3", "2/3"], "tasks": tasks}).exact


def test_run_refuses_exact_mode_with_a_float_reference(tmp_path, capsys):
    f = tmp_path / "h.json"
    f.write_text(json.dumps({"initial_probs": ["1/2", "1/2"], "transition_matrix": [["9/10", "1/10"], ["1/5", "4/5"]],
                             "emission_probs": [["1/2", "1/2"], ["1/4", "3/4"]]}))
    rc = main(["run", "exact-filter", "--hmm", str(f), "--tokens", "0 1", "--mode", "exact", "--reference", "float64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "exact reference" in err[0]
