"""References of the in-context learner (H4): features, moments, GD closed forms, r-gram limit, bounds."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm.errors import HmmtxError
from hmm.icl_reference import (
    STATUS_NEGATIVE,
    STATUS_OK,
    STATUS_ZERO,
    ICLFeatures,
    bayes_mixture_predictive,
    empirical_rgram,
    gd_closed_form,
    gd_closed_form_exact,
    gd_iterates,
    icl_reference,
    in_context_moments,
    least_squares_limit,
    normalise_masses,
    optimisation_bound,
    pattern_closed_form,
    stream_features,
    true_task_predictive,
)
from hmm.mixture import HMMMixture
from hmm.model import HMM


@st.composite
def contexts(draw, max_V=3, max_segs=4, max_len=5):
    V = draw(st.integers(1, max_V))
    n = draw(st.integers(1, max_segs))
    segs = [draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=max_len)) for _ in range(n)]
    return V, segs


small_eta = st.fractions(min_value=Fraction(1, 8), max_value=Fraction(15, 8), max_denominator=8)


# ------------------------------------------------------------------------------------------ features
def test_pattern_index_is_a_bijection_with_pad_prefix_windows():
    for V, r in [(1, 3), (2, 1), (2, 3), (3, 2)]:
        f = ICLFeatures(V, r)
        assert f.dim == sum(V**j for j in range(r + 1))
        windows = [f.window_of(i) for i in range(f.dim)]
        assert len(set(windows)) == f.dim
        assert all(f.index(w) == i for i, w in enumerate(windows))
    assert ICLFeatures(3, 2, "concat").dim == 8


def test_bad_features_and_windows_raise():
    with pytest.raises(HmmtxError, match="r \\(window length\\)"):
        ICLFeatures(3, 0)
    with pytest.raises(HmmtxError, match="feature kind"):
        ICLFeatures(3, 2, "bigram")
    f = ICLFeatures(3, 2)
    with pytest.raises(HmmtxError, match="follows a pad"):
        f.index((None, 1))
    with pytest.raises(HmmtxError, match="out of range"):
        f.index((3, 1))
    with pytest.raises(HmmtxError, match="expected r = 2"):
        f.index((1,))


def test_windows_stop_at_sep_and_bos():
    f = ICLFeatures(3, 2)
    sf = stream_features([[0, 1, 2], [2, 0]], f)
    # positions: 0 BOS, 1..3 = 0 1 2, 4 SEP, 5..6 = 2 0
    assert sf.lags_prev[1] == (None, None)  # first token of a segment: all pads
    assert sf.lags_prev[3] == (1, 0)
    assert sf.lags_prev[5] == (None, None)  # does not reach across the SEP
    assert sf.lags_prev[6] == (2, None)
    assert sf.lags_cur[4] == (None, None)  # query at SEP predicts the first token of the next segment
    assert sf.lags_cur[6] == (0, 2)
    assert sf.is_train.tolist() == [False, True, True, True, False, True, True]
    c = ICLFeatures(3, 2, "concat")
    sc = stream_features([[0, 1, 2], [2, 0]], c)
    assert np.flatnonzero(sc.X_prev[6]).tolist() == [2, 4 + 3]  # lag 1 = token 2, lag 2 = pad (index V)


# ------------------------------------------------------------------------------------------ GD identities
@given(contexts(max_segs=3), st.data(), small_eta, st.integers(0, 6), st.sampled_from(["pattern", "concat"]))
@settings(max_examples=20)  # exact (d, d) matrix powers over Fractions at every position: up to ~0.5 s an example
def test_exact_iteration_equals_doubling_series_and_float_closed_form(ctx, data, eta, K, kind):
    V, segs = ctx
    r = data.draw(st.integers(1, 3 if V <= 2 else 2), label="r")  # keeps d_x <= 15
    f = ICLFeatures(V, r, kind)
    it = icl_reference(segs, f, eta, K, dtype=object, method="iterate")
    cl = icl_reference(segs, f, eta, K, dtype=object, method="closed")
    assert (it.masses == cl.masses).all()
    assert (it.W == cl.W).all()
    fl = icl_reference(segs, f, float(eta), K, dtype=np.float64, method="closed")
    # 1e-12 absolute while GD converges (|masses| <= 2); diverging runs (eta lam_max > 2) are compared relative to size
    exact = it.masses.astype(np.float64)
    np.testing.assert_allclose(fl.masses, exact, rtol=0, atol=1e-12 * max(1.0, float(np.abs(exact).max())))
    if kind == "pattern":
        pc = pattern_closed_form(it.features, f, eta, K, dtype=object)
        assert (pc == it.masses).all()


@given(contexts(), st.integers(1, 3), st.integers(1, 7))
@settings(max_examples=25)
def test_normalised_pattern_masses_are_the_empirical_rgram_frequencies(ctx, r, K):
    # with one-hot window features the factor 1 - (1 - eta c)^K is common to all outputs: normalising removes it
    V, segs = ctx
    eta = Fraction(3, 4)
    f = ICLFeatures(V, r)
    masses = pattern_closed_form(stream_features(segs, f, dtype=object), f, eta, K, dtype=object)  # = W_K^T x_q
    freq, seen = empirical_rgram(segs, V, r, dtype=object)
    for p in range(len(seen)):
        s = sum(masses[p], Fraction(0))
        assert (s != 0) == bool(seen[p])
        if seen[p]:
            assert all(m >= 0 for m in masses[p])
            assert [m / s for m in masses[p]] == list(freq[p])


def test_doubling_series_equals_pseudo_inverse_form_on_range():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(9, 5)).astype(float)
    X[:, 4] = X[:, 0]  # rank deficient: A has a null space
    Y = np.eye(3)[rng.integers(0, 3, size=9)]
    A, B = X.T @ X / 9, X.T @ Y / 9
    for K in (1, 2, 5, 13):
        ex = gd_closed_form_exact(A, B, Fraction(1, 2), K).astype(float)
        lam, U = np.linalg.eigh(A)
        P = np.eye(5) - U @ np.diag((1 - 0.5 * lam) ** K) @ U.T
        np.testing.assert_allclose(ex, P @ np.linalg.pinv(A) @ B, rtol=0, atol=1e-12)
        np.testing.assert_allclose(gd_closed_form(A, B, 0.5, K), ex, rtol=0, atol=1e-13)


def test_gd_converges_to_least_squares_and_bound_holds():
    rng = np.random.default_rng(1)
    for trial in range(20):
        V, r = int(rng.integers(2, 4)), int(rng.integers(1, 3))
        segs = [rng.integers(0, V, size=int(rng.integers(2, 8))).tolist() for _ in range(int(rng.integers(1, 5)))]
        f = ICLFeatures(V, r, "concat" if trial % 2 else "pattern")
        sf = stream_features(segs, f)
        mom = in_context_moments(sf)
        A, B = mom.A[-1], mom.B[-1]
        lam_max = np.linalg.eigvalsh(A).max()
        eta = float(rng.uniform(0.1, 1.95)) / lam_max
        W_inf = least_squares_limit(A, B)
        for K in (0, 1, 3, 10, 40):
            W_K = gd_closed_form(A, B, eta, K)
            b = optimisation_bound(A, B, eta, K)
            assert b.converges
            measured = np.linalg.norm(W_K - W_inf)
            assert measured <= b.bound * (1 + 1e-9) + 1e-12, (trial, K, measured, b)
        np.testing.assert_allclose(gd_closed_form(A, B, eta, 4000), W_inf, rtol=0, atol=1e-8)


def test_simplified_factor_one_minus_eta_lam_min_fails_for_large_eta():
    # (1 - eta lam_min)^K is the contraction only for eta <= 2 / (lam_min + lam_max); beyond, |1 - eta lam_max| rules
    A = np.diag([1.0, 0.1])
    B = np.array([[1.0], [1.0]])
    eta, K = 1.9, 6
    W_inf = least_squares_limit(A, B)
    measured = np.linalg.norm(gd_closed_form(A, B, eta, K) - W_inf)
    naive = (1 - eta * 0.1) ** K * np.linalg.norm(W_inf)
    b = optimisation_bound(A, B, eta, K)
    assert measured <= b.bound
    assert b.rho == pytest.approx(0.9, rel=1e-12)
    assert measured > 0 and naive > 0
    # direction 1 contracts by |1 - 1.9| = 0.9 per step, slower than 1 - 0.19 = 0.81 for direction 2
    assert abs(measured - np.hypot(0.9**K * 1.0, 0.81**K * 10.0)) < 1e-12


def test_zero_steps_and_bad_parameters():
    A, B = np.eye(2), np.ones((2, 1))
    assert np.all(gd_closed_form(A, B, 0.5, 0) == 0)
    assert all(v == 0 for v in gd_closed_form_exact(A, B, Fraction(1, 2), 0).ravel())
    with pytest.raises(HmmtxError, match="eta"):
        gd_iterates(A, B, 0.0, 3)
    with pytest.raises(HmmtxError, match="K"):
        gd_closed_form(A, B, 0.5, -1)
    with pytest.raises(HmmtxError, match="shape"):
        gd_closed_form_exact(np.eye(2), np.ones((3, 1)), Fraction(1, 2), 2)


# ------------------------------------------------------------------------------------------ normalisation
def test_normalise_masses_reports_zero_and_negative_masses():
    z = np.array([[0.2, 0.6], [0.0, 0.0], [-0.1, 0.5], [-0.3, -0.1]])
    rep = normalise_masses(z)
    assert rep.status.tolist() == [STATUS_OK, STATUS_ZERO, STATUS_NEGATIVE, STATUS_NEGATIVE]
    np.testing.assert_allclose(rep.probs[0], [0.25, 0.75], rtol=0, atol=1e-15)
    np.testing.assert_allclose(rep.probs[1], [0.5, 0.5], rtol=0, atol=0)
    np.testing.assert_allclose(rep.probs[2], [-0.25, 1.25], rtol=0, atol=1e-15)  # kept signed, reported
    np.testing.assert_allclose(rep.negative_mass, [0, 0, -0.1, -0.4], rtol=0, atol=1e-15)
    clip = normalise_masses(z, policy="clip")
    np.testing.assert_allclose(clip.probs[2], [0.0, 1.0], rtol=0, atol=0)
    np.testing.assert_allclose(clip.probs[3], [0.5, 0.5], rtol=0, atol=0)
    with pytest.raises(HmmtxError, match="policy"):
        normalise_masses(z, policy="softmax")


# ------------------------------------------------------------------------------------------ statistical targets
def test_bayes_predictive_of_a_single_task_mixture_is_the_true_task_predictive():
    h = HMM.from_arrays([0.6, 0.4], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    h2 = HMM.from_arrays([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[1 / 3, 1 / 3, 1 / 3], [0.8, 0.1, 0.1]])
    segs = [[0, 1, 2, 2], [1, 0], [2, 2, 1]]
    one = HMMMixture.from_arrays([1.0], [h])
    np.testing.assert_allclose(bayes_mixture_predictive(one, segs), true_task_predictive(h, segs[-1]), rtol=0, atol=1e-14)
    two = HMMMixture.from_arrays([0.5, 0.5], [h, h2])
    mix = bayes_mixture_predictive(two, segs)
    p1, p2 = true_task_predictive(h, segs[-1]), true_task_predictive(h2, segs[-1])
    # a convex combination of the two task predictives, strictly inside (both tasks keep posterior mass)
    lam = (mix - p2) / (p1 - p2)
    np.testing.assert_allclose(lam, lam[0], rtol=0, atol=1e-12)
    assert 0 < lam[0] < 1
