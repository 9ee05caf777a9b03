"""The window (restarted) filter reference and its bounds (hmm.window).

Oracles: the window filter at t >= r equals the exact forward filter of the HMM with initial_probs replaced by the
prior, run on x_{t-r+1..t} alone (an independent definition); at t <= r-1 it equals the exact filter. Bounds:
measured <= a-priori and <= a-posteriori on every case (float with the stated round-off allowance; in exact
Fractions against mpmath bounds where the bound is below the float allowance).
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm import zoo
from hmm.diagnostics import projective_diameter
from hmm.errors import HmmtxError
from hmm.model import HMM
from hmm.reference import forward_filter, forward_filter_exact
from hmm.sampling import sample
from hmm.testing import rational_hmms, token_sequences
from hmm.window import (
    a_posteriori_bound,
    a_posteriori_bound_exact,
    a_priori_bound,
    exact_le,
    resolve_prior,
    roundoff_allowance,
    window_error,
    window_error_exact,
    window_filter,
    window_filter_exact,
)

#: below this the float check is meaningless (SPEC §6): such cases are checked in exact mode
EXACT_BELOW = 1e-13


def _f(a):
    return np.array(a.tolist(), dtype=np.float64)


def _random_hmm(rng, S, V, conc=1.0, floor=0.0):
    A = rng.dirichlet(np.full(S, conc), size=S) + floor
    A /= A.sum(axis=1, keepdims=True)
    B = rng.dirichlet(np.full(V, conc), size=S)
    return HMM.from_arrays(rng.dirichlet(np.ones(S)), A, B)


# ---------------------------------------------------------------------------------------------- the reference
@given(data=st.data())
def test_exact_window_equals_restarted_forward_filter(data):
    hmm = data.draw(rational_hmms(max_states=3, max_obs=3, positive=True))
    x = data.draw(token_sequences(hmm, min_len=1, max_len=9))
    r = data.draw(st.integers(1, 6))
    prior = data.draw(st.sampled_from(["stationary", "uniform"]))
    w = window_filter_exact(hmm, x, r, prior)
    mu = resolve_prior(hmm, prior)
    restarted = HMM(mu, hmm.transition_matrix, hmm.emission_probs)
    full = forward_filter_exact(hmm, x)
    for t in range(len(x)):
        if t <= r - 1:  # the window reaches BOS: exact filter with initial_probs
            assert w.reaches_start[t] and w.window_start[t] == 0
            expect = full.filtered_probs[t]
        else:
            assert not w.reaches_start[t] and w.window_start[t] == t - r + 1
            expect = forward_filter_exact(restarted, x[t - r + 1 : t + 1]).filtered_probs[-1]
        assert (w.filtered_probs[t] == expect).all()
    # next-token = belief A B, exactly
    AB = hmm.transition_matrix.dot(hmm.emission_probs)
    assert (w.next_token_probs == w.filtered_probs.dot(AB)).all()


@given(data=st.data())
def test_float_window_matches_exact(data):
    hmm = data.draw(rational_hmms(max_states=4, max_obs=3, positive=True))
    x = np.stack([data.draw(token_sequences(hmm, min_len=7, max_len=7)) for _ in range(2)])
    r = data.draw(st.integers(1, 5))
    prior = data.draw(st.sampled_from(["stationary", "uniform", "given"]))
    if prior == "given":
        prior = [Fraction(k + 1, hmm.num_states * (hmm.num_states + 1) // 2) for k in range(hmm.num_states)]
    fl = window_filter(hmm.as_float(), x, r, prior)
    ex = window_filter_exact(hmm, x, r, prior)
    assert fl.filtered_probs.shape == ex.filtered_probs.shape == (2, 7, hmm.num_states)
    np.testing.assert_allclose(fl.filtered_probs, _f(ex.filtered_probs), rtol=0, atol=1e-13)
    np.testing.assert_allclose(fl.next_token_probs, _f(ex.next_token_probs), rtol=0, atol=1e-13)


def test_long_window_is_the_exact_filter():
    rng = np.random.default_rng(3)
    hmm = _random_hmm(rng, 4, 3)
    x = sample(hmm, 3, 25, seed=4).tokens
    w = window_filter(hmm, x, 25)
    f = forward_filter(hmm, x)
    np.testing.assert_allclose(w.filtered_probs, f.filtered_probs, rtol=0, atol=1e-15)
    assert w.reaches_start.all()
    # r = 1: the belief from the prior and the current token only
    w1 = window_filter(hmm, x, 1, "uniform")
    B = hmm.emission_probs
    expect = B[:, x[:, 1:]].transpose(1, 2, 0)
    np.testing.assert_allclose(w1.filtered_probs[:, 1:], expect / expect.sum(-1, keepdims=True), rtol=0, atol=1e-15)


def test_prior_and_length_validation():
    hmm = zoo.make("dirichlet", 3, 2, seed=0)
    with pytest.raises(HmmtxError, match="full support"):
        window_filter(hmm, [0, 1], 2, [0.5, 0.5, 0.0])
    with pytest.raises(HmmtxError, match="expected 3"):
        window_filter(hmm, [0, 1], 2, [0.5, 0.5])
    with pytest.raises(HmmtxError, match="stationary"):
        window_filter(hmm, [0, 1], 2, "banana")
    with pytest.raises(HmmtxError, match="sums to"):
        window_filter(hmm, [0, 1], 2, [0.5, 0.5, 0.5])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(HmmtxError, match="window length"):
            window_filter(hmm, [0, 1], bad)
    with pytest.raises(HmmtxError, match="out of range"):
        window_filter(hmm, [0, 2], 2)


def test_impossible_window_is_reported():
    # state 0 emits only 0 and stays; state 1 emits only 1 and stays: "0 1" is impossible
    hmm = HMM.from_arrays(["1/2", "1/2"], [[1, 0], [0, 1]], [[1, 0], [0, 1]])
    with pytest.raises(HmmtxError, match="probability zero"):
        window_filter(hmm, [0, 0, 1], 2, "uniform")
    with pytest.raises(HmmtxError, match="probability zero"):
        window_filter_exact(hmm, [0, 0, 1], 2, "uniform")


# ---------------------------------------------------------------------------------------------- bounds
def _check_case(hmm, x, r, prior):
    """measured <= a-priori and <= a-posteriori (float + allowance, or exact where the bound is below it)."""
    T = x.shape[-1]
    S = hmm.num_states
    alw = roundoff_allowance(S, T, r)
    pri = a_priori_bound(hmm, r, prior)
    err = window_error(hmm, x, r, prior)
    post = a_posteriori_bound(hmm, x, r, prior)
    assert np.all(err.filtered <= post.filtered + alw)
    assert np.all(err.next_token <= post.next_token + alw)
    if pri.filtered is None:
        assert "no a-priori bound" in pri.note
        return "none"
    # the a-posteriori bound is never weaker than the a-priori one (derived in the docs)
    assert np.all(post.filtered <= pri.filtered + alw)
    assert pri.next_token <= pri.filtered + 1e-15
    if pri.filtered < max(EXACT_BELOW, 10 * alw):
        hx = hmm.as_exact()
        mp = a_priori_bound(hx, r, prior, dps=50)
        row = x[0] if x.ndim == 2 else x
        e = window_error_exact(hx, row[: min(len(row), r + 4)], r, prior)
        assert all(exact_le(v, mp.filtered) for v in e.filtered)
        assert all(exact_le(v, mp.next_token) for v in e.next_token)
        return "exact"
    assert err.filtered.max() <= pri.filtered + alw
    assert err.next_token.max() <= pri.next_token + alw
    return "float"


@settings(max_examples=40)  # each example samples 4 sequences and evaluates 3 bounds, sometimes in Fractions
@given(
    S=st.integers(1, 5),
    V=st.integers(1, 4),
    r=st.integers(1, 8),
    T=st.integers(1, 40),
    conc=st.sampled_from([0.3, 1.0, 5.0, 50.0]),
    prior=st.sampled_from(["stationary", "uniform"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_bounds_hold_on_random_positive_hmms(S, V, r, T, conc, prior, seed):
    rng = np.random.default_rng(seed)
    hmm = _random_hmm(rng, S, V, conc, floor=1e-3)
    x = sample(hmm, 4, T, seed=seed).tokens
    _check_case(hmm, x, r, prior)


ZOO = [("dirichlet", {}), ("low_rank", {}), ("observable", {}), ("sticky", {}), ("cyclic", {}),
       ("cyclic", {"eps": 0.1}), ("mess3", {}), ("even", {}), ("golden_mean", {})]


@pytest.mark.parametrize("family,params", ZOO, ids=[f + ("+eps" if p else "") for f, p in ZOO])
def test_bounds_hold_on_zoo_families(family, params):
    hmm = zoo.make(family, seed=11, **params)
    x = sample(hmm, 6, 60, seed=12).tokens
    kinds = {_check_case(hmm, x, r, "stationary") for r in (1, 2, 3, 5, 8, 13)}
    positive = bool(np.all(hmm.transition_matrix > 0))
    assert ("none" in kinds) == (not positive)


def test_bound_below_roundoff_is_checked_exactly():
    # nearly uniform A: Delta tiny, the bound falls below 1e-13 already for small r
    A = [[Fraction(1, 3) + Fraction(1, 60) * ((i + j) % 3 - 1) for j in range(3)] for i in range(3)]
    hmm = HMM.from_arrays(["1/3"] * 3, A, [["1/2", "1/4", "1/4"], ["1/8", "3/4", "1/8"], ["1/5", "1/5", "3/5"]])
    r = 10
    mp = a_priori_bound(hmm, r, "stationary", dps=50)
    assert float(mp.filtered) < 1e-13
    x = np.array([0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 1, 0, 2, 0])
    e = window_error_exact(hmm, x, r, "stationary")
    assert max(e.filtered) > 0  # the window really does differ from the filter
    assert all(exact_le(v, mp.filtered) for v in e.filtered)
    assert all(exact_le(v, mp.next_token) for v in e.next_token)
    post = a_posteriori_bound_exact(hmm, x, r, "stationary")
    assert all(a <= b for a, b in zip(e.filtered, post.filtered))
    assert all(a <= b for a, b in zip(e.next_token, post.next_token))
    # and exact_le really compares: a value 2x the bound is rejected
    assert not exact_le(Fraction(2) * Fraction(float(mp.filtered)), mp.filtered)


def test_exponent_matters_and_bound_is_nearly_tight():
    """The bound is attained to within a few per cent on some HMMs, and the naive form with one more factor tau
    (``2 tanh(Delta tau^(r-1) / 4)``) is violated for the uniform prior: the exponent r-2 is needed."""
    rng = np.random.default_rng(1)
    best_ratio, naive_violated = 0.0, False
    for _ in range(60):
        S, V = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        A = rng.dirichlet(np.full(S, rng.choice([0.3, 1.0])), size=S) + 1e-3
        A /= A.sum(axis=1, keepdims=True)
        hmm = HMM.from_arrays(rng.dirichlet(np.ones(S)), A, rng.dirichlet(np.full(V, 0.3), size=S))
        x = rng.integers(0, V, size=(10, 10))
        D = projective_diameter(A)
        tau = math.tanh(D / 4)
        for r in (2, 3):
            e = window_error(hmm, x, r, "uniform").filtered.max()
            pri = a_priori_bound(hmm, r, "uniform")
            assert e <= pri.filtered + roundoff_allowance(S, 10, r)
            best_ratio = max(best_ratio, e / pri.filtered)
            naive_violated |= e > 2 * math.tanh(D * tau ** (r - 1) / 4)
    assert best_ratio > 0.9
    assert naive_violated


def test_a_priori_forms_and_words():
    hmm = zoo.make("dirichlet", 3, 3, seed=5)
    b1 = a_priori_bound(hmm, 1, "stationary")
    assert b1.spec_form is None and b1.filtered is not None  # r = 1: only the prior-distance form exists
    for r in (2, 4, 7):
        b = a_priori_bound(hmm, r)
        assert b.filtered <= b.spec_form + 1e-15  # never weaker than SPEC's prior-free form
        assert 0 < b.next_token <= b.filtered < 2
        assert b.hilbert == pytest.approx(min(b.Delta * b.tau ** (r - 2), b.prior_distance * b.tau ** (r - 1)))
    # sticky: tau close to 1, said in words; cyclic: no bound at all
    st_ = a_priori_bound(zoo.make("sticky", 3, 3, seed=0, eps=0.001), 5)
    assert "close to 1" in st_.note and st_.filtered > 1.9
    cy = a_priori_bound(zoo.make("cyclic", 3, 3, seed=0), 5)
    assert cy.filtered is None and cy.next_token is None and "zero entry" in cy.note
    # the mp evaluation agrees with the float one
    mp = a_priori_bound(hmm, 4, dps=40)
    assert float(mp.filtered) == pytest.approx(a_priori_bound(hmm, 4).filtered, rel=1e-12)


def test_a_posteriori_exact_matches_float_and_hilbert_form():
    hmm = zoo.make("mess3", rational=True)
    x = sample(hmm, 1, 14, seed=2).tokens[0]
    for r in (1, 2, 4):
        ex = a_posteriori_bound_exact(hmm, x, r, "stationary")
        fl = a_posteriori_bound(hmm.as_float(), x, r, "stationary", with_hilbert=True)
        np.testing.assert_allclose(fl.filtered, _f(ex.filtered), rtol=0, atol=1e-13)
        np.testing.assert_allclose(fl.next_token, _f(ex.next_token), rtol=0, atol=1e-13)
        # stationary prior: mu = mu A lies in the cone of A's rows, so the window belief is in the hull of the
        # vertices and the vertex bound is at most the Hilbert-diameter form 2 tanh(diam / 4)
        assert np.all(fl.filtered <= 2 * np.tanh(fl.hilbert_diameter / 4) + 1e-13)
        assert np.all(fl.hilbert_diameter[:r] == 0)
        assert np.all(fl.filtered[:r] == 0)
