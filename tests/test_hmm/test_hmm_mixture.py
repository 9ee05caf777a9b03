"""Mixture Bayes predictive against a brute force over tasks that shares no code with hmm/mixture.py's block algebra.

Given the task, segments are independent (the hidden state is redrawn at every SEP), so
``P(stream prefix, task k) = rho_k prod_segments P_k(segment)``, each factor from the exact single-HMM oracles
(``sequence_probability_exact``, itself checked against path enumeration in test_hmm_reference.py).
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm.errors import HmmtxError
from hmm.mixture import SEP, HMMMixture, bayes_predictive, bayes_predictive_exact, flatten_context
from hmm.model import HMM
from hmm.reference import brute_force_filter, sequence_probability_exact
from hmm.sampling import sample_contexts
from hmm.testing import rational_mixtures


def _segments_of(items):
    """Split a stream prefix at SEPs: (completed segments, current partial segment (possibly empty))."""
    segs, cur = [], []
    for x in items:
        if x == SEP:
            segs.append(cur)
            cur = []
        else:
            cur.append(int(x))
    return segs, cur


def _prob(h, seq):
    return sequence_probability_exact(h, np.array(seq, dtype=np.int64)) if seq else Fraction(1)


def brute_force_predictive(mixture, segments):
    """Rows (next-token probs, task posterior) for every stream item, by enumeration over tasks."""
    items = flatten_context([np.asarray(s) for s in segments]).tolist()
    rho, tasks, V = mixture.task_prior, mixture.tasks, mixture.num_obs
    nxt, post = [], []
    for n in range(len(items)):
        done, cur = _segments_of(items[: n + 1])
        w = [rho[k] * np.prod([_prob(h, s) for s in done], dtype=object) * _prob(h, cur) for k, h in enumerate(tasks)]
        total = sum(w, Fraction(0))
        post.append([wk / total for wk in w])
        nxt.append([
            sum((rho[k] * np.prod([_prob(h, s) for s in done], dtype=object) * _prob(h, cur + [v]) for k, h in enumerate(tasks)), Fraction(0))
            / total
            for v in range(V)
        ])
    return nxt, post


@st.composite
def contexts(draw, mixture, max_segments=3, max_len=4):
    n = draw(st.integers(1, max_segments))
    V = mixture.num_obs
    return [np.array(draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=max_len)), dtype=np.int64) for _ in range(n)]


@settings(max_examples=30)
@given(data=st.data())
def test_exact_predictive_equals_brute_force_over_tasks(data):
    # positive=False: tasks with structural zeros, so some tasks get ruled out exactly (posterior 0)
    mixture = data.draw(rational_mixtures(max_tasks=3, max_states=3, max_obs=3, positive=data.draw(st.booleans())))
    segs = data.draw(contexts(mixture))
    lik = sum((mixture.task_prior[k] * np.prod([_prob(h, list(s)) for s in segs], dtype=object) for k, h in enumerate(mixture.tasks)), Fraction(0))
    if lik == 0:
        with pytest.raises(HmmtxError, match="probability zero under every task"):
            bayes_predictive_exact(mixture, segs)
        with pytest.raises(HmmtxError, match="probability zero under every task"):
            bayes_predictive(mixture.as_float(), segs)
        return
    res = bayes_predictive_exact(mixture, segs)
    nxt, post = brute_force_predictive(mixture, segs)
    assert res.next_token_probs.tolist() == nxt
    assert res.task_posterior.tolist() == post
    assert list(res.is_sep) == [x == SEP for x in flatten_context(segs)]
    assert res.marginal_loglik == pytest.approx(float(np.log(float(lik))), rel=1e-12, abs=1e-12)


@settings(max_examples=30)
@given(data=st.data())
def test_float_predictive_matches_brute_force(data):
    mixture = data.draw(rational_mixtures(max_tasks=3, max_states=3, max_obs=3, positive=True))
    segs = data.draw(contexts(mixture, max_segments=4, max_len=6))
    res = bayes_predictive(mixture.as_float(), segs)
    nxt, post = brute_force_predictive(mixture, segs)
    np.testing.assert_allclose(res.next_token_probs, np.array(nxt, dtype=float), rtol=0, atol=1e-13)
    np.testing.assert_allclose(res.task_posterior, np.array(post, dtype=float), rtol=0, atol=1e-13)
    r32 = bayes_predictive(mixture.as_float(), segs, dtype=np.float32)
    np.testing.assert_allclose(r32.next_token_probs, np.array(nxt, dtype=float), rtol=0, atol=1e-5)


@settings(max_examples=15)
@given(data=st.data())
def test_one_task_one_segment_is_the_hmm_filter(data):
    mixture = data.draw(rational_mixtures(min_tasks=1, max_tasks=1, max_states=3, max_obs=3, positive=True))
    x = np.array(data.draw(st.lists(st.integers(0, mixture.num_obs - 1), min_size=1, max_size=5)), dtype=np.int64)
    res = bayes_predictive_exact(mixture, [x])
    ref = brute_force_filter(mixture.tasks[0], x)
    assert res.next_token_probs.tolist() == ref.next_token_probs.tolist()


def test_sampled_contexts_have_finite_predictive_and_posterior_concentrates():
    # Two very different tasks: the posterior of the true task should grow with the context.
    t0 = HMM.from_arrays([1.0], [[1.0]], [[0.9, 0.1]])
    t1 = HMM.from_arrays([1.0], [[1.0]], [[0.1, 0.9]])
    m = HMMMixture.from_arrays([0.5, 0.5], [t0, t1])
    cs = sample_contexts(m, 20, 6, 5, 5, seed=1)
    for n in range(20):
        res = bayes_predictive(m, cs.segments(n))
        assert res.task_posterior[-1, cs.tasks[n]] > 0.99


def test_mixture_validation_names_the_culprit():
    h2 = HMM.from_arrays([1.0], [[1.0]], [[0.5, 0.5]])
    h3 = HMM.from_arrays([1.0], [[1.0]], [[0.2, 0.3, 0.5]])
    with pytest.raises(HmmtxError, match=r"tasks\[1\] has V = 3 observation symbols, tasks\[0\] has 2"):
        HMMMixture.from_arrays([0.5, 0.5], [h2, h3])
    with pytest.raises(HmmtxError, match="task_prior has 3 entries but there are 2 tasks"):
        HMMMixture.from_arrays([0.2, 0.3, 0.5], [h2, h2])
    with pytest.raises(HmmtxError, match="task_prior sums to 0.9"):
        HMMMixture.from_arrays([0.4, 0.5], [h2, h2])
    m = HMMMixture.from_arrays([0.5, 0.5], [h2, h2])
    with pytest.raises(HmmtxError, match=r"context segment 1: the sequence is empty"):
        bayes_predictive(m, [np.array([0]), np.array([], dtype=np.int64)])
    with pytest.raises(HmmtxError, match=r"context segment 0: token 2 at position 1 is out of range"):
        bayes_predictive(m, [np.array([0, 2])])
    z = HMMMixture.from_arrays([0.5, 0.5], [HMM.from_arrays([1.0], [[1.0]], [[1.0, 0.0]])] * 2)
    with pytest.raises(HmmtxError, match=r"probability zero under every task \(token 1 at stream position 2"):
        bayes_predictive_exact(z, [np.array([0]), np.array([1])])
