"""Diagnostics on known matrices, and the contraction theorems they stand for on random vectors."""

import itertools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm import zoo
from hmm.diagnostics import (
    birkhoff_contraction,
    birkhoff_contraction_mp,
    dobrushin_coefficient,
    hilbert_distance,
    max_cross_ratio,
    projective_diameter,
    projective_diameter_mp,
    sigma_min,
    stationary_distribution,
    summary,
)
from hmm.errors import HmmtxError
from hmm.model import HMM
from hmm.testing import stochastic_rows

F = Fraction


def _naive_delta(A):
    A = np.asarray(A, dtype=float)
    m, n = A.shape
    return max(
        math.log(A[i, k] * A[j, l] / (A[i, l] * A[j, k]))
        for i, j, k, l in itertools.product(range(m), range(m), range(n), range(n))
    )


def test_known_matrices():
    # 2x2 [[a, 1-a], [b, 1-b]]: Delta = |log(a (1-b) / ((1-a) b))|
    A = np.array([[0.9, 0.1], [0.2, 0.8]])
    d = math.log(0.9 * 0.8 / (0.1 * 0.2))
    assert projective_diameter(A) == pytest.approx(d, rel=1e-14)
    assert birkhoff_contraction(A) == pytest.approx(math.tanh(d / 4), rel=1e-14)
    assert dobrushin_coefficient(A) == pytest.approx(0.7, rel=1e-14)
    # rank one: every row equal -> Delta = 0, tau = 0, Dobrushin = 0 (forgets in one step)
    R = np.tile([0.2, 0.3, 0.5], (3, 1))
    assert projective_diameter(R) == 0.0 and birkhoff_contraction(R) == 0.0 and dobrushin_coefficient(R) == 0.0
    # zeros -> inf / 1; identity -> Dobrushin 1
    assert projective_diameter(np.eye(3)) == math.inf and birkhoff_contraction(np.eye(3)) == 1.0
    assert dobrushin_coefficient(np.eye(3)) == 1.0
    # exact inputs
    E = np.array([[F(9, 10), F(1, 10)], [F(1, 5), F(4, 5)]], dtype=object)
    assert max_cross_ratio(E) == F(36)
    assert dobrushin_coefficient(E) == F(7, 10)
    assert projective_diameter(E) == pytest.approx(math.log(36), rel=1e-15)
    # single row / column
    assert projective_diameter(np.array([[0.3, 0.7]])) == 0.0 and projective_diameter(np.array([[1.0], [1.0]])) == 0.0


def test_mpmath_variants_are_high_precision():
    E = np.array([[F(9, 10), F(1, 10)], [F(1, 5), F(4, 5)]], dtype=object)
    with mpmath.workdps(60):
        d = projective_diameter_mp(E, dps=50)
        assert abs(d - mpmath.log(36)) < mpmath.mpf(10) ** -48
        t = birkhoff_contraction_mp(E, dps=50)
        assert abs(t - mpmath.tanh(mpmath.log(36) / 4)) < mpmath.mpf(10) ** -48
        assert abs(t - mpmath.mpf(5) / 7) < mpmath.mpf(10) ** -48  # (sqrt(36) - 1) / (sqrt(36) + 1)
    assert birkhoff_contraction_mp(np.eye(2)) == 1 and projective_diameter_mp(np.eye(2)) == mpmath.inf


@given(m=st.integers(1, 5), n=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_vectorised_delta_equals_naive_quadruple_max(m, n, seed):
    A = np.random.default_rng(seed).uniform(0.01, 1.0, size=(m, n))
    assert projective_diameter(A) == pytest.approx(_naive_delta(A), rel=1e-12, abs=1e-12)
    E = np.array([[Fraction(float(v)) for v in r] for r in A], dtype=object)
    assert projective_diameter(E) == pytest.approx(_naive_delta(A), rel=1e-12, abs=1e-12)
    assert 0.0 <= birkhoff_contraction(A) <= 1.0


def _hilbert(p, q):
    return hilbert_distance(p, q)


@settings(max_examples=40)
@given(S=st.integers(2, 6), seed=st.integers(0, 10**6), conc=st.sampled_from([0.3, 1.0, 5.0]))
def test_birkhoff_and_dobrushin_contraction_hold_on_random_vectors(S, seed, conc):
    rng = np.random.default_rng(seed)
    A = zoo.make("dirichlet", S, 2, seed=seed, concentration=conc).transition_matrix
    tau, dob = birkhoff_contraction(A), dobrushin_coefficient(A)
    assert 0.0 <= tau <= 1.0 and 0.0 <= dob <= 1.0
    assert dob <= tau + 1e-12  # Dobrushin's coefficient never exceeds Birkhoff's tau
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(S)), rng.dirichlet(np.ones(S))
        # Dobrushin: ||pA - qA||_1 <= delta ||p - q||_1 (round-off allowance 1e-14)
        assert np.abs(p @ A - q @ A).sum() <= dob * np.abs(p - q).sum() + 1e-14
        # Birkhoff: d_H(pA, qA) <= tau d_H(p, q) (round-off allowance 1e-12 on logs of ratios)
        assert _hilbert(p @ A, q @ A) <= tau * _hilbert(p, q) + 1e-12


def test_dobrushin_contraction_is_attained_by_point_masses():
    A = zoo.make("dirichlet", 4, 2, seed=3).transition_matrix
    best = max(np.abs(A[i] - A[j]).sum() / 2 for i in range(4) for j in range(4))
    assert dobrushin_coefficient(A) == pytest.approx(best, rel=1e-15)


@settings(max_examples=30)
@given(data=st.data())
def test_stationary_distribution_exact_and_float(data):
    S = data.draw(st.integers(1, 6))
    A = np.array(data.draw(stochastic_rows(S, S, positive=True)), dtype=object)
    mu = stationary_distribution(A)
    assert all(isinstance(v, Fraction) for v in mu)
    assert sum(mu, Fraction(0)) == 1 and (mu.dot(A) == mu).all()
    mf = stationary_distribution(A.astype(float))
    np.testing.assert_allclose(mf, mu.astype(float), rtol=0, atol=1e-12)


def test_stationary_errors_when_not_unique():
    for A in (np.eye(2), np.eye(2, dtype=int).astype(object) * F(1)):
        with pytest.raises(HmmtxError, match="not unique"):
            stationary_distribution(A)
    # periodic but irreducible: unique
    assert list(stationary_distribution(np.array([[F(0), F(1)], [F(1), F(0)]], dtype=object))) == [F(1, 2), F(1, 2)]


def test_sigma_min():
    assert sigma_min(np.eye(3)) == pytest.approx(1.0)
    assert sigma_min(np.full((2, 2), 0.5)) == pytest.approx(0.0, abs=1e-15)
    assert sigma_min(np.ones((3, 2)) / 2) == 0.0  # V < S
    B = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert sigma_min(B) == pytest.approx(0.8, rel=1e-14)


def test_bad_inputs():
    with pytest.raises(HmmtxError, match=r"matrix\[0, 1\]: negative entry"):
        projective_diameter(np.array([[1.0, -0.5], [0.5, 0.5]]))
    with pytest.raises(HmmtxError, match="NaN or infinite"):
        dobrushin_coefficient(np.array([[np.nan, 1.0]]))
    with pytest.raises(HmmtxError, match="expected a non-empty 2-D matrix"):
        projective_diameter(np.ones(3))


def test_summary_of_zoo_models():
    s = summary(zoo.make("mess3", rational=True))
    assert s.num_states == 3 and s.exact and list(s.stationary) == [F(1, 3)] * 3
    assert s.strictly_positive and s.projective_diameter < math.inf and 0 < s.birkhoff_contraction < 1
    assert s.sigma_min_emission == pytest.approx(0.6 - 0.2, rel=1e-12)  # eigenvalues of a I + b (J - I): a - b
    assert s.dobrushin == pytest.approx(0.7 - 0.15, rel=1e-12)  # y - x = 1 - 3x
    c = summary(zoo.make("cyclic", 4, 2, seed=0))
    assert not c.strictly_positive and c.projective_diameter == math.inf and c.dobrushin == 1.0
    assert summary(HMM.from_arrays([1.0, 0.0], np.eye(2), np.eye(2))).stationary is None
    lr = summary(zoo.make("low_rank", 6, 3, seed=0, rank=3))
    assert lr.transition_rank == 3
