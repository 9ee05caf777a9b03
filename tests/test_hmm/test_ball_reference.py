"""hmm.ball: the ball-arithmetic enclosures of the exact references contain the Fraction references (ill-conditioned
HMMs and mixtures), stay narrow at T = 4096, and the helpers that compare against them are exact."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm.ball import bayes_predictive_ball, contains_exact, forward_filter_ball, interval, precision
from hmm.errors import HmmtxError
from hmm.fastq import to_fmpq
from hmm.mixture import bayes_predictive_exact
from hmm.model import HMM
from hmm.reference import forward_filter_exact
from hmm.testing import (
    ill_conditioned_hmms,
    ill_conditioned_mixtures,
    long_token_sequences,
    support_walk,
    token_sequences,
)
from hmm.reference import sequence_probability_exact

FILTER_FIELDS = ("filtered_probs", "predicted_probs", "next_token_probs")
MIXTURE_FIELDS = ("next_token_probs", "task_posterior", "state_predicted")


@settings(deadline=None, max_examples=25)
@given(st.data())
def test_filter_balls_contain_the_fraction_reference(data):
    hmm = data.draw(ill_conditioned_hmms())
    x = data.draw(token_sequences(hmm, max_len=40))
    exact = forward_filter_exact(hmm, x, backend="fraction")
    balls = forward_filter_ball(hmm, x)
    for name in FILTER_FIELDS:
        assert contains_exact(getattr(balls, name), getattr(exact, name)), name


@settings(deadline=None, max_examples=15)
@given(st.data())
def test_mixture_balls_contain_the_fraction_reference(data):
    mix = data.draw(ill_conditioned_mixtures(max_tasks=3, max_obs=3))
    tasks = mix.tasks
    segs = [data.draw(token_sequences(tasks[0], max_len=12)) for _ in range(data.draw(st.integers(1, 3)))]
    exact = bayes_predictive_exact(mix, segs)
    balls = bayes_predictive_ball(mix, segs)
    for name in MIXTURE_FIELDS:
        assert contains_exact(getattr(balls, name), getattr(exact, name)), name


def test_balls_stay_narrow_at_T_4096():
    """Rescaling by powers of two (exact) keeps relative radii near T S 2^-prec, far below any float error."""
    e = Fraction(1, 10**9)
    hmm = HMM.from_arrays([Fraction(1, 2)] * 2, [[1 - e, e], [e, 1 - e]], [[1 - e, e], [e, 1 - e]], exact=True)
    x = np.array([(t // 7) % 2 for t in range(4096)])
    balls = forward_filter_ball(hmm, x)
    worst = max(float(b.rad()) / max(float(abs(b.mid())), 1e-300) for name in FILTER_FIELDS
                for b in getattr(balls, name).ravel())
    assert worst < 1e-60


def test_a_one_state_support_gives_exact_ones():
    """Ratios are evaluated by monotonicity: a one-entry support is exactly 1, so a certificate that is exactly 1
    can contain the reference ball."""
    hmm = HMM.from_arrays([1], [[1]], [[Fraction(1, 3), Fraction(2, 3)]], exact=True)
    balls = forward_filter_ball(hmm, np.array([0, 1, 1, 0]))
    for b in np.concatenate([balls.filtered_probs.ravel(), balls.predicted_probs.ravel()]):
        assert b.is_exact() and b == 1


def test_zero_probability_sequence_is_refused():
    hmm = HMM.from_arrays([1, 0], [[1, 0], [0, 1]], [[1, 0], [0, 1]], exact=True)
    with pytest.raises(HmmtxError, match="probability zero"):
        forward_filter_ball(hmm, np.array([0, 1]))


def test_batch_matches_single_sequences():
    hmm = HMM.from_arrays([Fraction(1, 3), Fraction(2, 3)], [[Fraction(1, 10**12), 1 - Fraction(1, 10**12)], [1, 0]],
                          [[Fraction(1, 2), Fraction(1, 2)], [1, 0]], exact=True)
    x = np.array([[0, 1, 0, 0], [0, 0, 1, 0]])
    both = forward_filter_ball(hmm, x)
    for n in range(2):
        one = forward_filter_ball(hmm, x[n])
        for name in FILTER_FIELDS:
            assert all(a.mid() == b.mid() and a.rad() == b.rad()
                       for a, b in zip(getattr(both, name)[n].ravel(), getattr(one, name).ravel()))


def test_contains_exact_is_decided_exactly():
    """A 256-bit ball around 1/3 contains 1/3 but not 1/3 + 2^-200 (no conversion of the rational to a ball)."""
    from hmm.ball import ball

    with precision(256):
        b = ball(Fraction(1, 3))
    lo, hi = interval(b)
    third = to_fmpq(Fraction(1, 3))
    assert lo < third < hi and hi - lo < to_fmpq(Fraction(1, 2**250))
    assert contains_exact(np.array([b], dtype=object), np.array([Fraction(1, 3)], dtype=object))
    assert not contains_exact(np.array([b], dtype=object), np.array([Fraction(1, 3) + Fraction(1, 2**200)],
                                                                    dtype=object))


@settings(deadline=None, max_examples=20)
@given(st.data())
def test_long_token_sequences_are_possible(data):
    hmm = data.draw(ill_conditioned_hmms())
    x = data.draw(long_token_sequences(hmm, data.draw(st.integers(1, 64))))
    assert sequence_probability_exact(hmm, x) > 0


def test_support_walk_follows_the_chooser():
    """The chooser gets exactly the allowed tokens: here state 1 is absorbing and emits only token 1."""
    hmm = HMM.from_arrays([1, 0], [[0, 1], [0, 1]], [[1, 0], [0, 1]], exact=True)
    seen = []
    x = support_walk(hmm, 4, lambda t, allowed: seen.append(list(allowed)) or allowed[-1])
    assert seen == [[0], [1], [1], [1]] and x.tolist() == [0, 1, 1, 1]
