"""constructions.certified's comparisons against exact rationals (cross-multiplied, gcd-free) agree with the
readable Fraction arithmetic, end points included; against ball references they bound from above."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.certified import Certificate, contains, exact_error
from hmm.ball import ball, interval, precision


def _up(x: float) -> float:
    return math.nextafter(x, math.inf)


rationals = st.fractions(min_value=0, max_value=1, max_denominator=10**40)


@settings(deadline=None, max_examples=30)
@given(st.lists(st.tuples(st.floats(0, 1), rationals), min_size=1, max_size=6))
def test_exact_error_equals_the_fraction_computation(pairs):
    got = np.array([g for g, _ in pairs])
    ref = np.array([r for _, r in pairs], dtype=object)
    want = max(abs(Fraction(g) - r) for g, r in pairs)
    assert exact_error({"p": got}, {"p": ref}, ["p"]) == _up(float(want))


@settings(deadline=None, max_examples=40)
@given(rationals, st.integers(60, 300))
def test_contains_decides_end_points_exactly(r, bits):
    with precision(bits):
        b = ball(r)
    lo, hi = interval(b)
    cert = Certificate({"p": np.array([b], dtype=object)}, float(b.rad()), bits, 0.0)
    lo_f, hi_f = Fraction(int(lo.p), int(lo.q)), Fraction(int(hi.p), int(hi.q))
    for v, inside in [(r, True), (lo_f, True), (hi_f, True), (lo_f - Fraction(1, 2**400), False),
                      (hi_f + Fraction(1, 2**400), False)]:
        assert contains(cert, {"p": np.array([v], dtype=object)}, ["p"]) is inside


def test_ball_reference_error_is_an_upper_bound_within_the_ball_width():
    r = Fraction(1, 3)
    with precision(256):
        b = ball(r)
    g = 0.3
    exact = exact_error({"p": np.array([g])}, {"p": np.array([r], dtype=object)}, ["p"])
    upper = exact_error({"p": np.array([g])}, {"p": np.array([b], dtype=object)}, ["p"])
    assert exact <= upper <= _up(exact)
