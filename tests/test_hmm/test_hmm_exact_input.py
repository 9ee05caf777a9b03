"""Exact HMM files: strings make an HMM exact; stray floats keep their binary value and the error says so."""

from fractions import Fraction

import pytest

from hmm.errors import HmmtxError
from hmm.io import hmm_from_dict


def test_string_entries_make_exact_hmm():
    h = hmm_from_dict(
        {"initial_probs": ["1/3", "2/3"], "transition_matrix": [["1/2", "1/2"], ["1/4", "3/4"]],
         "emission_probs": [["1"], ["1"]]}
    )
    assert h.exact
    assert h.transition_matrix[1, 1] == Fraction(3, 4)


def test_float_in_exact_hmm_gets_a_hint():
    with pytest.raises(HmmtxError, match=r"transition_matrix row 0 sums to .*exact binary value"):
        hmm_from_dict(
            {"initial_probs": ["1/2", "1/2"], "transition_matrix": [[0.1, 0.9], ["1/2", "1/2"]],
             "emission_probs": [["1"], ["1"]]}
        )


def test_plain_rational_row_error_has_no_float_hint():
    with pytest.raises(HmmtxError) as info:
        hmm_from_dict(
            {"initial_probs": ["1/2", "1/3"], "transition_matrix": [["1/2", "1/2"], ["1/2", "1/2"]],
             "emission_probs": [["1"], ["1"]]}
        )
    assert "initial_probs sums to 5/6, not exactly 1" in str(info.value)
    assert "binary" not in str(info.value)
