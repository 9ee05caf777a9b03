"""Zoo: every family validates, is seeded-deterministic and has its documented property."""

from fractions import Fraction

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm import zoo
from hmm.diagnostics import dobrushin_coefficient, projective_diameter, sigma_min, stationary_distribution
from hmm.errors import HmmtxError
from hmm.mealy import mealy_forward_filter
from hmm.model import HMM
from hmm.reference import forward_filter, forward_filter_exact
from hmm.sampling import sample

RANDOM = ["dirichlet", "sticky", "cyclic", "low_rank", "observable"]
CLASSIC = ["mess3", "rrxor", "even", "golden_mean", "z1r"]


def _same(h1: HMM, h2: HMM) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(h1.arrays(object), h2.arrays(object)))


@pytest.mark.parametrize("name", list(zoo.FAMILIES))
@pytest.mark.parametrize("rational", [False, True])
def test_every_family_builds_validates_and_is_seeded(name, rational):
    fam = zoo.FAMILIES[name]
    h = zoo.make(name, seed=3, rational=rational)
    assert isinstance(h, HMM) and h.exact == rational
    HMM.from_arrays(*h.arrays(object))  # re-validates the exact arrays
    assert _same(h, zoo.make(name, seed=3, rational=rational))
    if name in RANDOM:
        assert not _same(h, zoo.make(name, seed=4, rational=rational))
        if rational:  # small denominators
            assert max(v.denominator for v in h.transition_matrix.ravel()) <= 64
    else:
        assert (h.num_states, h.num_obs) == fam.fixed_size
    assert fam.description
    # the registry's flags hold for the default parameters
    d = projective_diameter(h)
    assert (d < np.inf) == fam.strictly_positive
    if fam.mixing:  # irreducible + aperiodic: some power of A is strictly positive
        P = np.linalg.matrix_power(h.as_float().transition_matrix, 3 * h.num_states * h.num_states)
        assert P.min() > 0
    else:
        assert dobrushin_coefficient(np.linalg.matrix_power(h.as_float().transition_matrix, 50)) > 0.5


@settings(max_examples=25)
@given(S=st.integers(1, 10), V=st.integers(1, 6), seed=st.integers(0, 10**6), rational=st.booleans())
def test_random_families_sweep_sizes(S, V, seed, rational):
    for name in RANDOM:
        params = {"rank": min(2, S)} if name == "low_rank" else {}
        if name == "observable" and V < S:
            with pytest.raises(HmmtxError, match=r"needs num_obs >= num_states"):
                zoo.make(name, S, V, seed=seed, rational=rational)
            continue
        h = zoo.make(name, S, V, seed=seed, rational=rational, **params)
        assert (h.num_states, h.num_obs) == (S, V)


@given(S=st.integers(1, 8), seed=st.integers(0, 10**6), data=st.data())
def test_low_rank_has_rank_d(S, seed, data):
    d = data.draw(st.integers(1, S))
    h = zoo.make("low_rank", S, 3, seed=seed, rank=d, rational=True)
    assert sympy.Matrix(h.transition_matrix.tolist()).rank() == d  # exact rank over Q
    f = zoo.make("low_rank", S, 3, seed=seed, rank=d)
    assert np.linalg.matrix_rank(f.transition_matrix, tol=1e-9) == d


@pytest.mark.parametrize("eps", [0.0, 0.001, 0.05, 0.3])
def test_sticky_is_near_identity(eps):
    h = zoo.make("sticky", 5, 3, seed=0, eps=eps)
    A = h.transition_matrix
    assert np.abs(A - np.eye(5)).max() <= eps + 1e-15
    np.testing.assert_allclose(np.diag(A), 1 - eps, rtol=0, atol=1e-15)
    e = zoo.make("sticky", 5, 3, seed=0, eps=eps, rational=True)
    assert all(e.transition_matrix[i, i] == 1 - Fraction(str(eps)) for i in range(5))
    if eps > 0:
        assert dobrushin_coefficient(e.transition_matrix) == 1 - Fraction(str(eps)) - Fraction(str(eps)) / 4


def test_cyclic_is_a_permutation_and_mixes_with_eps():
    h = zoo.make("cyclic", 5, 2, seed=1, rational=True)
    A = np.array(h.transition_matrix.tolist(), dtype=float)
    assert np.array_equal(A, np.roll(np.eye(5), 1, axis=1))
    r = zoo.make("cyclic", 6, 2, seed=1, permutation="random")
    P = r.transition_matrix
    assert np.array_equal(P.sum(0), np.ones(6)) and set(np.unique(P)) == {0.0, 1.0}
    m = zoo.make("cyclic", 5, 2, seed=1, eps="1/10", rational=True)
    assert dobrushin_coefficient(m.transition_matrix) == Fraction(9, 10)


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("S", [2, 4])
def test_observable_sigma_min_is_one_minus_noise(noise, S):
    h = zoo.make("observable", S, S + 2, seed=7, noise=noise)
    assert sigma_min(h) == pytest.approx(1 - noise, rel=0, abs=1e-12)
    e = zoo.make("observable", S, S + 2, seed=7, noise=noise, rational=True)
    assert sigma_min(e) == pytest.approx(1 - noise, rel=0, abs=1e-12)


def test_mess3_matches_its_published_definition():
    """Marzen & Crutchfield's mess3 as written by the belief-geometry code bases (T[symbol][from, to])."""
    x, a = Fraction(3, 20), Fraction(3, 5)
    b, y = (1 - a) / 2, 1 - 2 * x
    published = [
        [[a * y, b * x, b * x], [a * x, b * y, b * x], [a * x, b * x, b * y]],
        [[b * y, a * x, b * x], [b * x, a * y, b * x], [b * x, a * x, b * y]],
        [[b * y, b * x, a * x], [b * x, b * y, a * x], [b * x, b * x, a * y]],
    ]
    m = zoo.make_mealy("mess3", rational=True)
    assert m.transition_tensor.tolist() == published
    assert list(m.initial_probs) == [Fraction(1, 3)] * 3
    h = zoo.make("mess3", rational=True)
    J, I = np.ones((3, 3), dtype=object), np.eye(3, dtype=int).astype(object)
    assert (h.transition_matrix == y * I + x * (J - I)).all()
    assert (h.emission_probs == a * I + b * (J - I)).all()
    assert list(h.initial_probs) == [Fraction(1, 3)] * 3
    f = zoo.make("mess3", x=0.05, a=0.85)
    np.testing.assert_allclose(np.diag(f.emission_probs), 0.85, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", CLASSIC)
def test_classic_moore_forms_give_the_mealy_next_token_probs_exactly(name):
    mealy = zoo.make_mealy(name, rational=True)
    moore = zoo.make(name, rational=True)
    x = sample(moore, 3, 12, seed=2).tokens
    for row in x:
        a = forward_filter_exact(moore, row).next_token_probs
        b = mealy_forward_filter(mealy, row, dtype=object).next_token_probs
        assert (a == b).all()
    # the classic processes start stationary: initial_probs is the (unique) stationary distribution of A
    mu = stationary_distribution(moore.transition_matrix)
    assert (mu == moore.initial_probs).all() and (mu.dot(moore.transition_matrix) == mu).all()


def test_classic_processes_obey_their_grammar():
    gm = sample(zoo.make("golden_mean", p=0.6), 50, 200, seed=0).tokens
    assert not np.any((gm[:, :-1] == 0) & (gm[:, 1:] == 0))  # no 00
    ev = sample(zoo.make("even", p=0.3), 50, 200, seed=0).tokens
    for row in ev:  # interior blocks of 1s (between two 0s) have even length
        zeros = np.flatnonzero(row == 0)
        assert all((b - a - 1) % 2 == 0 for a, b in zip(zeros[:-1], zeros[1:]))
    zr = sample(zoo.make("z1r", p=0.3), 50, 120, seed=0).tokens
    for row in zr:  # some phase phi: 0 then 1 then a free bit
        assert any(np.all(row[phi::3] == 0) and np.all(row[phi + 1::3] == 1) for phi in range(3))
    rr = sample(zoo.make("rrxor", pR1=0.3, pR2=0.6), 50, 120, seed=0).tokens
    for row in rr:  # some phase phi: every third symbol is the XOR of the two before it
        assert any(all(row[k + 2] == row[k] ^ row[k + 1] for k in range(phi, 118, 3)) for phi in range(3))


def test_make_errors_name_the_problem():
    with pytest.raises(HmmtxError, match=r"unknown HMM family 'nope'; known: dirichlet"):
        zoo.make("nope")
    with pytest.raises(HmmtxError, match=r"sticky: unknown parameter\(s\) \['epsilon'\]"):
        zoo.make("sticky", epsilon=0.1)
    with pytest.raises(HmmtxError, match=r"mess3 has num_states = 3 and num_obs = 3"):
        zoo.make("mess3", num_states=4)
    with pytest.raises(HmmtxError, match=r"num_states must be a positive integer, got 0"):
        zoo.make("dirichlet", 0, 2)
    with pytest.raises(HmmtxError, match=r"parameter eps = 1.5 must lie in \[0, 1\]"):
        zoo.make("sticky", eps=1.5)
    with pytest.raises(HmmtxError, match=r"parameter rank = 5 must satisfy 1 <= rank <= num_states = 4"):
        zoo.make("low_rank", 4, 2, rank=5)
    with pytest.raises(HmmtxError, match=r"parameter x = 0.7 must be at most 1/2"):
        zoo.make("mess3", x=0.7)
    with pytest.raises(HmmtxError, match=r"parameter concentration = -1 must be a positive number"):
        zoo.make("dirichlet", concentration=-1)
    with pytest.raises(HmmtxError, match=r"seed must be a non-negative integer"):
        zoo.make("dirichlet", seed=-1)
    with pytest.raises(HmmtxError, match=r"seed must be a non-negative integer"):
        zoo.make_mixture("dirichlet", 2, seed=1.5)


def test_make_mixture_is_seeded_and_takes_per_task_parameters():
    m1 = zoo.make_mixture("dirichlet", 3, num_states=2, num_obs=3, seed=5)
    m2 = zoo.make_mixture("dirichlet", 3, num_states=2, num_obs=3, seed=5)
    assert all(_same(a, b) for a, b in zip(m1.tasks, m2.tasks))
    assert not _same(m1.tasks[0], m1.tasks[1])
    mm = zoo.make_mixture("mess3", 3, x=["1/20", "3/20", "3/10"])
    assert mm.exact and mm.tasks[2].transition_matrix[0, 1] == Fraction(3, 10)
    assert list(mm.task_prior) == [Fraction(1, 3)] * 3
    r = zoo.make_mixture("sticky", 4, num_states=3, num_obs=2, rational=True, task_prior="random", seed=1)
    assert r.exact and sum(r.task_prior, Fraction(0)) == 1
    with pytest.raises(HmmtxError, match=r"parameter x: 2 per-task values for 3 tasks"):
        zoo.make_mixture("mess3", 3, x=[0.1, 0.2])


def test_round_rows_keeps_rows_exact_and_positive():
    P = np.array([[0.999, 0.0005, 0.0005], [0.2, 0.3, 0.5]])
    R = zoo.round_rows(P, 10, positive=True)
    assert all(sum(r, Fraction(0)) == 1 and min(r) >= Fraction(1, 10) for r in R)
    assert [int(v * 10) for v in R[1]] == [2, 3, 5]
    with pytest.raises(HmmtxError, match="too small"):
        zoo.round_rows(P, 2, positive=True)


def test_float_zoo_models_filter_like_their_exact_twins():
    for name in zoo.FAMILIES:
        e = zoo.make(name, seed=0, rational=True)
        x = sample(e, 1, 40, 0).tokens[0]
        ref = forward_filter_exact(e, x).next_token_probs
        np.testing.assert_allclose(forward_filter(e.as_float(), x).next_token_probs, np.array(ref.tolist(), dtype=float), rtol=0, atol=1e-13)
