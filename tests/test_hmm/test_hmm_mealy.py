"""Moore and Mealy forms give the same next-token probabilities (exactly), in both directions and via pairs."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm import zoo
from hmm.errors import HmmtxError
from hmm.mealy import MealyHMM, mealy_forward_filter, mealy_to_moore, moore_to_mealy
from hmm.reference import brute_force_filter, forward_filter, forward_filter_exact
from hmm.sampling import sample
from hmm.testing import rational_hmms, stochastic_rows, token_sequences


@st.composite
def rational_mealys(draw, max_states=3, max_obs=3):
    """Exact Mealy machines: row i of the (S, V*S) matrix [T[0][i], T[1][i], ...] is a probability vector."""
    S = draw(st.integers(1, max_states))
    V = draw(st.integers(1, max_obs))
    pi = draw(stochastic_rows(1, S))[0]
    rows = draw(stochastic_rows(S, V * S))
    T = [[[rows[i][x * S + j] for j in range(S)] for i in range(S)] for x in range(V)]
    return MealyHMM.from_arrays(pi, T, exact=True)


def _mealy_brute_next(m: MealyHMM, x):
    """P(x_{t+1} = v | x_0..x_t) by summing the Mealy path law over all state paths (tiny sizes only)."""
    import itertools

    S, V, T = m.num_states, m.num_obs, len(x)

    def prob(seq):
        total = Fraction(0)
        for z in itertools.product(range(S), repeat=len(seq) + 1):
            w = m.initial_probs[z[0]]
            for t, o in enumerate(seq):
                w *= m.transition_tensor[o, z[t], z[t + 1]]
            total += w
        return total

    out = []
    for t in range(T):
        base = prob(list(x[: t + 1]))
        out.append([prob(list(x[: t + 1]) + [v]) / base for v in range(V)])
    return out


@settings(max_examples=40)
@given(data=st.data())
def test_moore_to_mealy_to_moore_same_next_token_probs_exactly(data):
    hmm = data.draw(rational_hmms(max_states=4, max_obs=3))
    x = data.draw(token_sequences(hmm, max_len=8))
    mealy = moore_to_mealy(hmm)
    ref = forward_filter_exact(hmm, x).next_token_probs
    assert (mealy_forward_filter(mealy, x, dtype=object).next_token_probs == ref).all()
    # Mealy belief after x_t = Moore P(z_{t+1} | x_0..x_t) = filtered_t A
    bel = mealy_forward_filter(mealy, x, dtype=object).belief_states
    filt = forward_filter_exact(hmm, x).filtered_probs
    assert (bel == filt.dot(hmm.transition_matrix)).all()
    # back to Moore: auto finds the current-state factorisation and returns the same HMM
    back = mealy_to_moore(mealy)
    assert back.method == "current_state"
    assert all((a == b).all() for a, b in zip(back.hmm.arrays(object), hmm.arrays(object)))
    # the general pair construction gives a different (bigger or equal) HMM with the same process
    pairs = mealy_to_moore(mealy, method="pairs")
    assert pairs.hmm.num_states <= hmm.num_states * hmm.num_obs
    assert (forward_filter_exact(pairs.hmm, x).next_token_probs == ref).all()


@settings(max_examples=40)
@given(data=st.data())
def test_general_mealy_to_moore_pairs_matches_mealy_brute_force(data):
    m = data.draw(rational_mealys())
    moore = mealy_to_moore(m).hmm
    x = data.draw(token_sequences(moore, max_len=4))
    brute = _mealy_brute_next(m, x)
    assert forward_filter_exact(moore, x).next_token_probs.tolist() == brute
    assert mealy_forward_filter(m, x, dtype=object).next_token_probs.tolist() == brute
    # every method that applies agrees
    for method in ("pairs", "current_state", "next_state"):
        try:
            alt = mealy_to_moore(m, method=method).hmm
        except HmmtxError:
            continue
        assert forward_filter_exact(alt, x).next_token_probs.tolist() == brute


@settings(max_examples=20)
@given(S=st.integers(1, 6), V=st.integers(1, 4), T=st.integers(1, 60), N=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_float_mealy_filter_matches_moore(S, V, T, N, seed):
    hmm = zoo.make("dirichlet", S, V, seed=seed)
    x = sample(hmm, N, T, seed).tokens
    a = forward_filter(hmm, x)
    b = mealy_forward_filter(moore_to_mealy(hmm), x)
    np.testing.assert_allclose(b.next_token_probs, a.next_token_probs, rtol=0, atol=1e-13)
    np.testing.assert_allclose(b.marginal_loglik, a.marginal_loglik, rtol=1e-12, atol=1e-10)
    back = mealy_to_moore(moore_to_mealy(hmm))
    np.testing.assert_allclose(forward_filter(back.hmm, x).next_token_probs, a.next_token_probs, rtol=0, atol=1e-13)


def test_mess3_uses_next_state_factorisation():
    r = mealy_to_moore(zoo.make_mealy("mess3", rational=True))
    assert r.method == "next_state" and r.hmm.num_states == 3
    ev = mealy_to_moore(zoo.make_mealy("even", rational=True))
    assert ev.method == "pairs" and ev.states == [(0, 0), (0, 1), (1, 1)]


def test_mealy_validation():
    with pytest.raises(HmmtxError, match=r"transition_tensor \(summed over x, j\) row 1 sums to 1/2"):
        MealyHMM.from_arrays(["1", "0"], [[["1/2", "1/2"], ["1/4", "0"]], [["0", "0"], ["0", "1/4"]]])
    with pytest.raises(HmmtxError, match=r"transition_tensor has shape \(2, 2, 3\), expected \(V, 2, 2\)"):
        MealyHMM.from_arrays([0.5, 0.5], np.full((2, 2, 3), 1 / 6))
    with pytest.raises(HmmtxError, match=r"transition_tensor\[1, 0, 0\]: negative entry -0.5"):
        MealyHMM.from_arrays([1.0], [[[1.5]], [[-0.5]]])
    m = zoo.make_mealy("golden_mean")
    with pytest.raises(HmmtxError, match=r"probability zero.*token 0 at position 1"):
        mealy_forward_filter(m, [0, 0])
    with pytest.raises(HmmtxError, match="unknown method"):
        mealy_to_moore(m, method="edges")
    with pytest.raises(HmmtxError, match="does not apply"):
        mealy_to_moore(zoo.make_mealy("even"), method="next_state")


def test_brute_force_on_converted_classic_process():
    moore = zoo.make("rrxor", rational=True)
    x = np.array([0, 1, 1, 0])  # 8^5 paths
    assert (brute_force_filter(moore, x).next_token_probs == forward_filter_exact(moore, x).next_token_probs).all()
