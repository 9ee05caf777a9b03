"""HMM validation: every class of bad input raises HmmtxError naming the culprit; exact/float views round-trip."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given

from hmm.errors import HmmtxError
from hmm.model import HMM, validate_tokens
from hmm.testing import rational_hmms

PI = [0.5, 0.5]
A = [[0.9, 0.1], [0.2, 0.8]]
B = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]


def test_valid_float_and_exact():
    h = HMM.from_arrays(PI, A, B)
    assert not h.exact and h.num_states == 2 and h.num_obs == 3
    e = HMM.from_arrays(["1/2", "1/2"], [["9/10", "1/10"], ["1/5", "4/5"]], [["7/10", "1/5", "1/10"], ["1/10", "3/10", "3/5"]])
    assert e.exact and e.transition_matrix[0, 1] == Fraction(1, 10)
    # arrays are frozen
    with pytest.raises(ValueError):
        h.transition_matrix[0, 0] = 0.5


@pytest.mark.parametrize(
    "pi, a, b, pattern",
    [
        (PI, [[0.9, 0.2], [0.2, 0.8]], B, r"transition_matrix row 0 sums to 1\.1"),
        (PI, A, [[0.7, 0.2, 0.1], [0.1, 0.3, 0.5]], r"emission_probs row 1 sums to 0\.9"),
        ([0.6, 0.6], A, B, r"initial_probs sums to 1\.2"),
        (["1/2", "1/2"], [["1/2", "1/3"], ["1/2", "1/2"]], [["1"], ["1"]], r"transition_matrix row 0 sums to 5/6, not exactly 1"),
    ],
)
def test_non_stochastic_row(pi, a, b, pattern):
    with pytest.raises(HmmtxError, match=pattern):
        HMM.from_arrays(pi, a, b)


def test_negative_entry():
    with pytest.raises(HmmtxError, match=r"transition_matrix\[1, 0\]: negative entry -0\.2"):
        HMM.from_arrays(PI, [[0.9, 0.1], [-0.2, 1.2]], B)
    with pytest.raises(HmmtxError, match=r"emission_probs\[0, 2\]: negative entry -1/2"):
        HMM.from_arrays(["1"], [["1"]], [["1", "1/2", "-1/2"]])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf(bad):
    with pytest.raises(HmmtxError, match=r"emission_probs\[1, 1\]: entry is (nan|inf)"):
        HMM.from_arrays(PI, A, [[0.7, 0.2, 0.1], [0.1, bad, 0.6]])


def test_shape_mismatch():
    with pytest.raises(HmmtxError, match=r"transition_matrix has shape \(3, 3\), expected \(2, 2\)"):
        HMM.from_arrays(PI, np.full((3, 3), 1 / 3), B)
    with pytest.raises(HmmtxError, match=r"emission_probs has 3 rows, expected 2"):
        HMM.from_arrays(PI, A, np.full((3, 2), 0.5))
    with pytest.raises(HmmtxError, match=r"initial_probs: expected a 1-D array"):
        HMM.from_arrays([PI], A, B)
    with pytest.raises(HmmtxError, match=r"emission_probs.*at least one observation"):
        HMM.from_arrays(PI, A, np.zeros((2, 0)))


def test_unreadable_entries():
    with pytest.raises(HmmtxError, match=r"transition_matrix\[0, 1\]: cannot read 'x/3'"):
        HMM.from_arrays(["1/2", "1/2"], [["1/3", "x/3"], ["1", "0"]], [["1"], ["1"]])
    with pytest.raises(HmmtxError, match=r"initial_probs\[0\]: expected a number, got the boolean True"):
        HMM.from_arrays([True, "0"], [["1", "0"], ["0", "1"]], [["1"], ["1"]])


def test_token_out_of_range():
    h = HMM.from_arrays(PI, A, B)
    with pytest.raises(HmmtxError, match=r"token 3 at position 2 is out of range \[0, 3\)"):
        h.check_tokens([0, 1, 3])
    with pytest.raises(HmmtxError, match=r"token -1 at position 0 of sequence 1"):
        h.check_tokens([[0, 1], [-1, 0]])


def test_empty_and_malformed_token_sequences():
    with pytest.raises(HmmtxError, match="the sequence is empty"):
        validate_tokens([], 3)
    with pytest.raises(HmmtxError, match="the sequence is empty"):
        validate_tokens(np.zeros((2, 0), dtype=int), 3)
    with pytest.raises(HmmtxError, match="must be integers"):
        validate_tokens([0.5, 1.0], 3)
    with pytest.raises(HmmtxError, match=r"expected shape \(T,\) or \(N, T\)"):
        validate_tokens(np.zeros((1, 1, 1), dtype=int), 3)
    with pytest.raises(HmmtxError, match="exceeds max_len 2"):
        validate_tokens([0, 1, 2], 3, max_len=2)
    assert validate_tokens([1.0, 2.0], 3).dtype == np.int64


@given(hmm=rational_hmms(max_states=4, max_obs=4))
def test_exact_float_round_trip(hmm):
    f = hmm.as_float()
    assert not f.exact
    for a, b in zip(hmm.arrays(object), f.arrays(np.float64)):
        np.testing.assert_allclose(np.array(a.tolist(), dtype=float), b, rtol=1e-15, atol=0)
    back = f.as_exact()
    # the exact image of the float model is exactly stochastic and within float rounding of the original
    assert all(sum(r, Fraction(0)) == 1 for r in back.transition_matrix)
    assert max(abs(a - b) for a, b in zip(back.transition_matrix.ravel(), hmm.transition_matrix.ravel())) < 1e-15
    assert HMM.from_arrays(**{k: v for k, v in hmm.to_dict().items()}).to_dict() == hmm.to_dict()


def test_token_operator_is_diag_b_times_a():
    h = HMM.from_arrays(["1/2", "1/2"], [["1/3", "2/3"], ["1", "0"]], [["1/4", "3/4"], ["1/2", "1/2"]])
    G = h.token_operator(1, dtype=object)
    assert G[0, 1] == Fraction(3, 4) * Fraction(2, 3) and G[1, 0] == Fraction(1, 2)
