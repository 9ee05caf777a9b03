"""Sampling: seeded, batched, correct in distribution, never draws zero-probability events, SEP format for mixtures."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm import zoo
from hmm.errors import HmmtxError
from hmm.mixture import SEP, HMMMixture, bayes_predictive, flatten_context
from hmm.model import HMM
from hmm.reference import forward_filter, sequence_probability_exact
from hmm.sampling import context_training_arrays, sample, sample_contexts
from hmm.testing import rational_hmms


def test_shapes_dtypes_and_seeds():
    h = zoo.make("dirichlet", 4, 3, seed=0)
    s = sample(h, 7, 11, seed=1)
    assert s.tokens.shape == s.states.shape == (7, 11) and s.tokens.dtype == np.int64
    assert np.array_equal(s.tokens, sample(h, 7, 11, seed=1).tokens)
    assert not np.array_equal(s.tokens, sample(h, 7, 11, seed=2).tokens)
    g = np.random.default_rng(1)
    assert np.array_equal(sample(h, 7, 11, seed=g).tokens, s.tokens)  # int seed == default_rng(seed)
    assert s.tokens.max() < 3 and s.states.max() < 4


def test_bad_arguments():
    h = zoo.make("dirichlet", 2, 2)
    with pytest.raises(HmmtxError, match="num_sequences must be an integer >= 1, got 0"):
        sample(h, 0, 5)
    with pytest.raises(HmmtxError, match="length must be an integer >= 1"):
        sample(h, 2, 0)
    with pytest.raises(HmmtxError, match="seed must be a non-negative integer or a numpy Generator"):
        sample(h, 2, 2, seed="x")
    with pytest.raises(HmmtxError, match="expected an HMM"):
        sample("h", 2, 2)


def test_pair_frequencies_match_exact_probabilities():
    h = zoo.make("dirichlet", 3, 3, seed=4, rational=True)
    N = 200_000
    s = sample(h, N, 2, seed=0)
    counts = np.zeros((3, 3))
    np.add.at(counts, (s.tokens[:, 0], s.tokens[:, 1]), 1)
    for a in range(3):
        for b in range(3):
            p = float(sequence_probability_exact(h, [a, b]))
            sd = np.sqrt(p * (1 - p) / N)
            assert abs(counts[a, b] / N - p) <= 5 * sd + 1e-12, (a, b)
    # hidden-state transitions
    pi = h.as_float().initial_probs
    A = h.as_float().transition_matrix
    zc = np.zeros((3, 3))
    np.add.at(zc, (s.states[:, 0], s.states[:, 1]), 1)
    expected = pi[:, None] * A
    assert np.all(np.abs(zc / N - expected) <= 5 * np.sqrt(expected * (1 - expected) / N) + 1e-12)


@settings(max_examples=30)
@given(hmm=rational_hmms(max_states=4, max_obs=4, max_weight=2), seed=st.integers(0, 10**6))
def test_never_draws_zero_probability_events(hmm, seed):
    s = sample(hmm, 200, 12, seed)
    A, B = hmm.transition_matrix, hmm.emission_probs
    assert all(hmm.initial_probs[z] > 0 for z in np.unique(s.states[:, 0]))
    assert all(A[i, j] > 0 for i, j in set(zip(s.states[:, :-1].ravel(), s.states[:, 1:].ravel())))
    assert all(B[i, x] > 0 for i, x in set(zip(s.states.ravel(), s.tokens.ravel())))
    forward_filter(hmm, s.tokens)  # raises on a zero-probability sequence


def test_trailing_zero_probabilities_survive_round_off():
    # rows whose float cumulative sum falls short of 1 and end in zeros: the zeros must never be drawn
    p = [0.1] * 10 + [0.0]
    A = np.tile(p, (11, 1))
    h = HMM.from_arrays(p, A, np.eye(11))
    s = sample(h, 20_000, 5, seed=0)
    assert s.states.max() <= 9


def _disjoint_tasks():
    # task k emits only symbol k: the symbols of a context reveal its task
    t0 = HMM.from_arrays([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]])
    t1 = HMM.from_arrays([1.0], [[1.0]], [[0.0, 1.0]])
    return HMMMixture.from_arrays([0.25, 0.75], [t0, t1])


def test_contexts_keep_the_task_and_reset_the_state():
    m = _disjoint_tasks()
    c = sample_contexts(m, 4000, 3, 5, 4, seed=0)
    assert c.demo_tokens.shape == (4000, 3, 5) and c.test_tokens.shape == (4000, 4) and c.tasks.shape == (4000,)
    assert np.all(c.demo_tokens == c.tasks[:, None, None]) and np.all(c.test_tokens == c.tasks[:, None])
    assert abs(np.mean(c.tasks == 1) - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 4000)
    # state reset: each segment's first state is drawn from initial_probs ([1/2, 1/2] for task 0)
    sticky = HMM.from_arrays([1.0, 0.0], [[0.0, 1.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]])  # 0 -> 1 -> 1 ...
    cs = sample_contexts(HMMMixture.from_arrays([1.0], [sticky]), 50, 4, 3, 2, seed=0)
    assert np.all(cs.demo_states[:, :, 0] == 0) and np.all(cs.test_states[:, 0] == 0)
    assert np.all(cs.demo_states[:, :, 1:] == 1)
    assert np.array_equal(sample_contexts(m, 30, 2, 3, 3, seed=9).demo_tokens, sample_contexts(m, 30, 2, 3, 3, seed=9).demo_tokens)


def test_contexts_bad_arguments():
    m = _disjoint_tasks()
    with pytest.raises(HmmtxError, match="test_len must be an integer >= 1"):
        sample_contexts(m, 2, 1, 3, 0)
    with pytest.raises(HmmtxError, match="num_demos must be an integer >= 0"):
        sample_contexts(m, 2, -1, 3, 2)
    with pytest.raises(HmmtxError, match="expected an HMMMixture"):
        sample_contexts(zoo.make("mess3"), 2, 1, 3, 2)


def test_training_arrays_layout_and_alignment_with_bayes():
    m = zoo.make_mixture("dirichlet", 3, num_states=3, num_obs=4, seed=2)
    c = sample_contexts(m, 6, 2, 4, 3, seed=3)
    ta = context_training_arrays(c, 4)
    Lf = 1 + 2 * (4 + 1) + 3
    assert ta.tokens.shape == (6, Lf) and ta.vocab_size == 6 and ta.sep_id == 4 and ta.bos_id == 5
    assert np.all(ta.tokens[:, 0] == 5) and np.all(ta.tokens[:, [5, 10]] == 4)
    assert np.array_equal(ta.target_mask, ta.tokens < 4)
    assert ta.segment_ids[0].tolist() == [0] + [0] * 5 + [1] * 5 + [2] * 3
    assert ta.positions[0].tolist() == [-1, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2]
    for n in range(6):
        assert np.array_equal(ta.stream[n], flatten_context(c.segments(n), sep=SEP))
        res = bayes_predictive(m, c.segments(n))
        assert res.next_token_probs.shape == (Lf - 1, 4)
        assert np.array_equal(res.is_sep, ta.tokens[n, 1:] == ta.sep_id)
        # the documented alignment: Bayes row t-1 is the prediction at input position t for tokens[t+1]
        t = 6  # input position 6 is the first token of demo 2; Bayes row 5 follows stream items 0..5 (incl. SEP)
        assert ta.stream[n, t - 1] == ta.tokens[n, t]
    zero_demo = sample_contexts(m, 3, 0, 4, 5, seed=1)
    assert context_training_arrays(zero_demo, 4).tokens.shape == (3, 6)
