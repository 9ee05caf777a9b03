"""The exact references agree with each other at three oracle tiers, and with hmmlearn.

brute force == Fraction filter (exactly); float64 ~ Fraction (1e-12); float32 ~ Fraction (1e-5, mixing HMMs);
torch == numpy; hmmlearn's log-likelihoods of prefixes give the same next-token probabilities (1e-10).
"""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm import zoo
from hmm.errors import HmmtxError
from hmm.model import HMM
from hmm.reference import (
    brute_force_filter,
    forward_filter,
    forward_filter_exact,
    forward_filter_torch,
    sequence_probability_exact,
)
from hmm.sampling import sample
from hmm.testing import rational_hmms, token_sequences

FIELDS = ("filtered_probs", "predicted_probs", "next_token_probs")


def _as_float(a):
    return np.array(a.tolist(), dtype=np.float64)


@given(data=st.data())
def test_brute_force_equals_fraction_filter_exactly(data):
    hmm = data.draw(rational_hmms(max_states=3, max_obs=3))
    S = hmm.num_states
    max_len = {1: 8, 2: 8, 3: 6}[S]  # S^(T+1) paths: keep the oracle under ~2e4 paths
    x = data.draw(token_sequences(hmm, max_len=max_len))
    exact = forward_filter_exact(hmm, x)
    brute = brute_force_filter(hmm, x)
    for f in FIELDS:
        a, b = getattr(exact, f), getattr(brute, f)
        assert a.shape == b.shape
        assert all(isinstance(v, Fraction) for v in a.ravel())
        assert (a == b).all(), f
    assert exact.marginal_loglik == brute.marginal_loglik
    # the likelihood is the exact sequence probability
    p = sequence_probability_exact(hmm, x)
    assert exact.marginal_loglik == pytest.approx(float(np.log(float(p))), rel=1e-12, abs=1e-12)
    # filtered / predicted / next-token rows are probability vectors, exactly
    for f in FIELDS:
        assert all(sum(row, Fraction(0)) == 1 for row in getattr(exact, f))


def _max_len_for(S: int) -> int:
    # The Fraction filter costs about S^2 T x (digits ~ T) per sequence: S <= 3 up to T = 512, S <= 8 up to T = 192
    # (S = 8 with T = 512 takes 5-15 s in exact arithmetic: the largest sizes are checked against an mpmath oracle in
    # test_float64_within_1e12_at_the_largest_sizes).
    return 512 if S <= 3 else 384 if S <= 5 else 192


def _lengths(max_len: int):
    # hypothesis favours small integers: draw short and long lengths explicitly, and the maximum itself.
    return st.one_of(st.integers(1, 16), st.integers(16, max_len), st.just(max_len))


@settings(max_examples=20)  # each example runs the exact filter up to T = 512 (~0.3-1 s); 20 keep this at a few s
@given(data=st.data())
def test_float64_within_1e12_of_fraction(data):
    hmm = data.draw(rational_hmms(max_states=8, max_obs=4))
    T = data.draw(_lengths(_max_len_for(hmm.num_states)))
    seed = data.draw(st.integers(0, 2**31 - 1))
    x = sample(hmm, 1, T, seed).tokens[0]  # sampled, hence possible
    exact = forward_filter_exact(hmm, x)
    flt = forward_filter(hmm.as_float(), x)
    for f in FIELDS:
        err = np.abs(getattr(flt, f) - _as_float(getattr(exact, f))).max()
        assert err <= 1e-12, (f, err)
    assert flt.marginal_loglik == pytest.approx(exact.marginal_loglik, rel=1e-12, abs=1e-9)


@settings(max_examples=20)  # exact oracle up to T = 300
@given(data=st.data())
def test_float32_within_1e5_on_mixing_hmms(data):
    hmm = data.draw(rational_hmms(max_states=8, max_obs=4, positive=True))
    T = data.draw(_lengths(300 if hmm.num_states <= 4 else 100))
    x = sample(hmm, 1, T, data.draw(st.integers(0, 1000))).tokens[0]
    exact = forward_filter_exact(hmm, x)
    f32 = forward_filter(hmm, x, dtype=np.float32)
    assert f32.next_token_probs.dtype == np.float32
    for f in FIELDS:
        err = np.abs(getattr(f32, f).astype(np.float64) - _as_float(getattr(exact, f))).max()
        assert err <= 1e-5, (f, err)


@given(S=st.integers(1, 16), V=st.integers(1, 8), T=st.integers(1, 200), N=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_torch_equals_numpy_float64(S, V, T, N, seed):
    hmm = zoo.make("dirichlet", S, V, seed=seed, concentration=0.5)
    x = sample(hmm, N, T, seed).tokens
    a = forward_filter(hmm, x)
    b = forward_filter_torch(hmm, x)
    for f in FIELDS:
        t = getattr(b, f)
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
        np.testing.assert_allclose(t.numpy(), getattr(a, f), rtol=0, atol=1e-13)
    np.testing.assert_allclose(b.marginal_loglik.numpy(), a.marginal_loglik, rtol=1e-12, atol=1e-9)


@given(S=st.integers(1, 6), V=st.integers(1, 5), T=st.integers(1, 50), N=st.integers(2, 6), seed=st.integers(0, 10**6))
def test_batched_equals_one_at_a_time(S, V, T, N, seed):
    hmm = zoo.make("dirichlet", S, V, seed=seed)
    x = sample(hmm, N, T, seed + 1).tokens
    batch = forward_filter(hmm, x)
    for n in range(N):
        one = forward_filter(hmm, x[n])
        for f in FIELDS:
            np.testing.assert_allclose(getattr(batch, f)[n], getattr(one, f), rtol=0, atol=1e-15)
        assert batch.marginal_loglik[n] == pytest.approx(one.marginal_loglik, rel=1e-14)


def _hmmlearn_model(hmm: HMM):
    from hmmlearn.hmm import CategoricalHMM

    m = CategoricalHMM(n_components=hmm.num_states, n_features=hmm.num_obs, implementation="scaling")
    pi, A, B = hmm.arrays(np.float64)
    m.startprob_, m.transmat_, m.emissionprob_ = pi, A, B
    return m


@settings(max_examples=15)  # hmmlearn is called V (T + 1) times per example
@given(S=st.integers(1, 6), V=st.integers(1, 4), T=st.integers(1, 30), seed=st.integers(0, 10**6))
def test_hmmlearn_prefix_scores_give_the_same_next_token_probs(S, V, T, seed):
    hmm = zoo.make("dirichlet", S, V, seed=seed)
    m = _hmmlearn_model(hmm)
    x = sample(hmm, 1, T, seed).tokens[0]
    ours = forward_filter(hmm, x)
    assert m.score(x.reshape(-1, 1)) == pytest.approx(ours.marginal_loglik, rel=1e-10, abs=1e-10)
    for t in range(T):
        prefix = x[: t + 1]
        base = m.score(prefix.reshape(-1, 1))
        theirs = [np.exp(m.score(np.append(prefix, v).reshape(-1, 1)) - base) for v in range(V)]
        np.testing.assert_allclose(ours.next_token_probs[t], theirs, rtol=0, atol=1e-10)


def test_first_prediction_and_shapes():
    hmm = HMM.from_arrays(["1/2", "1/2"], [["1/3", "2/3"], ["1", "0"]], [["1/4", "3/4"], ["1/2", "1/2"]])
    r = forward_filter_exact(hmm, [1, 0, 1])
    assert r.filtered_probs.shape == (3, 2) and r.next_token_probs.shape == (3, 2)
    assert list(r.predicted_probs[0]) == [Fraction(1, 2), Fraction(1, 2)]
    # P(z_0 | x_0 = 1) = (1/2 * 3/4, 1/2 * 1/2) / (5/8) = (3/5, 2/5)
    assert list(r.filtered_probs[0]) == [Fraction(3, 5), Fraction(2, 5)]
    # P(z_1) = (3/5 * 1/3 + 2/5, 3/5 * 2/3) = (3/5, 2/5); P(x_1 = 0) = 3/5 * 1/4 + 2/5 * 1/2 = 7/20
    assert r.next_token_probs[0][0] == Fraction(7, 20)


def test_zero_probability_sequence_names_the_position():
    hmm = HMM.from_arrays(["1", "0"], [["0", "1"], ["0", "1"]], [["1", "0"], ["0", "1"]])  # emits 0 then 1 1 1 ...
    for fn in (forward_filter, forward_filter_exact, brute_force_filter, forward_filter_torch):
        with pytest.raises(HmmtxError, match=r"probability zero.*token 0 at position 2"):
            fn(hmm, [0, 1, 0, 1])
    with pytest.raises(HmmtxError, match=r"position 1 of sequence 1"):
        forward_filter(hmm, [[0, 1], [0, 0]])
    assert sequence_probability_exact(hmm, [0, 1, 0]) == 0


def test_float_filter_does_not_underflow_on_long_sequences():
    hmm = zoo.make("dirichlet", 4, 8, seed=0)
    x = sample(hmm, 2, 5000, 0).tokens
    r = forward_filter(hmm, x, dtype=np.float32)
    assert np.all(np.isfinite(r.next_token_probs)) and np.all(np.abs(r.next_token_probs.sum(-1) - 1) <= 1e-5)
    assert np.all(r.marginal_loglik < -1000)  # a log-likelihood far below float underflow, accumulated in log space


def _mp_next_token_probs(hmm: HMM, x, dps: int = 40) -> np.ndarray:
    """High-precision oracle (mpmath, ``dps`` digits) of next-token probabilities, for sizes where Fractions are too
    slow; its own rounding (~1e-40) is far below the 1e-12 being checked. Cross-checked against Fractions below."""
    import mpmath

    with mpmath.workdps(dps):
        mp = lambda v: mpmath.mpf(v.numerator) / v.denominator  # noqa: E731
        h = hmm.as_exact()
        S, V = h.num_states, h.num_obs
        A = [[mp(v) for v in r] for r in h.transition_matrix]
        B = [[mp(v) for v in r] for r in h.emission_probs]
        p = [mp(v) for v in h.initial_probs]
        out = []
        for o in x.tolist():
            joint = [p[i] * B[i][o] for i in range(S)]
            c = mpmath.fsum(joint)
            f = [j / c for j in joint]
            p = [mpmath.fsum(f[i] * A[i][j] for i in range(S)) for j in range(S)]
            out.append([float(mpmath.fsum(p[j] * B[j][v] for j in range(S))) for v in range(V)])
    return np.array(out)


@pytest.mark.parametrize("S, V, T", [(8, 4, 512), (16, 4, 2048)])
def test_float64_within_1e12_at_the_largest_sizes(S, V, T):
    """SPEC §6 corner sizes (S = 8, T = 512 and S = 16, T = 2048), mixing small-rational HMMs, mpmath oracle."""
    rng = np.random.default_rng(S * T)
    w = lambda r, c: [[Fraction(int(v), int(row.sum())) for v in row] for row in rng.integers(1, 5, size=(r, c))]  # noqa: E731
    hmm = HMM.from_arrays(w(1, S)[0], w(S, S), w(S, V))
    x = sample(hmm, 1, T, 3).tokens[0]
    oracle = _mp_next_token_probs(hmm, x)
    exact_prefix = forward_filter_exact(hmm, x[:48]).next_token_probs
    assert np.abs(oracle[:48] - _as_float(exact_prefix)).max() <= 1e-15  # the oracle agrees with Fractions
    err = np.abs(forward_filter(hmm.as_float(), x).next_token_probs - oracle).max()
    assert err <= 1e-12, err
