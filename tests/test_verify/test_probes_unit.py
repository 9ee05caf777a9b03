"""Unit tests of verify.probes and verify.icl_data: ridge probes, the independence score, demo permutations,
batched Bayes references, and the probe/expectation machinery on synthetic subjects with known answers."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture, bayes_predictive
from hmm.model import HMM
from hmm.zoo import make_mixture
from verify.icl_data import Layout, mixture_references, sample_context_batch, target_mask
from verify.probes import (
    Trace,
    _draw_permutations,
    _key_positions,
    independence_score,
    independence_violations,
    lag_violations,
    make_probe_data,
    permute_demos,
    position_independence,
    ridge_fit_predict,
    run_probes,
)


def test_ridge_recovers_a_linear_map_on_every_layer():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 400, 6))
    W = rng.normal(size=(6, 2))
    Y = X[0] @ W + 0.5  # layer 0 carries the map exactly; the others do not
    Xt = rng.normal(size=(3, 50, 6))
    pred = ridge_fit_predict(X, Y, Xt, ridge=1e-12)
    np.testing.assert_allclose(pred[0], Xt[0] @ W + 0.5, rtol=0, atol=1e-6)
    assert np.abs(pred[1] - (Xt[1] @ W + 0.5)).max() > 0.5


def test_ridge_dual_form_matches_primal():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1, 30, 80))  # D > M: dual (kernel) form
    Y = rng.normal(size=(30, 3))
    Xt = rng.normal(size=(1, 5, 80))
    pred = ridge_fit_predict(X, Y, Xt, ridge=1e-2)
    Xs = (X[0] - X[0].mean(0)) / X[0].std(0)
    Xts = (Xt[0] - X[0].mean(0)) / X[0].std(0)
    lam = 1e-2 * float((Xs**2).sum()) / 80
    W = np.linalg.solve(Xs.T @ Xs + lam * np.eye(80), Xs.T @ (Y - Y.mean(0)))
    np.testing.assert_allclose(pred[0], Xts @ W + Y.mean(0), rtol=0, atol=1e-9)


def test_independence_score_reference_values():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(4, 2, 3, 7))
    assert independence_score(s, s)[0] == pytest.approx(1.0, abs=1e-15)
    # a per-query shift does not change the softmax, nor the score
    assert independence_score(s, s + rng.normal(size=(4, 2, 3, 1)))[0] == pytest.approx(1.0, abs=1e-12)
    assert independence_score(s, -s)[0] == pytest.approx(-1.0, abs=1e-10)  # eps = 1e-12 per pair
    # a scale change c gives 2c / (1 + c^2)
    assert independence_score(s, 3 * s)[0] == pytest.approx(0.6, abs=1e-10)
    # flat logits (uniform attention) count as unchanged
    flat = np.zeros((2, 1, 3, 5))
    assert independence_score(flat, flat)[0] == 1.0
    # independent re-draws score about 0
    assert abs(independence_score(rng.normal(size=(50, 1, 10, 20)), rng.normal(size=(50, 1, 10, 20)))[0]) < 0.05


@given(st.integers(0, 2**31 - 1), st.floats(0.01, 100.0))
def test_independence_score_is_bounded(seed, scale):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, 2, 3, 4)) * scale
    b = rng.normal(size=(2, 2, 3, 4))
    pooled, per_head = independence_score(a, b)
    assert -1.0 - 1e-12 <= pooled <= 1.0 + 1e-12
    assert np.all(per_head >= -1.0 - 1e-12) and np.all(per_head <= 1.0 + 1e-12)


def test_permute_demos_moves_whole_demonstrations_and_keeps_the_test_segment():
    mix = make_mixture("dirichlet", 2, 2, 3, seed=0)
    lay = Layout(3, 2, 2)
    b = sample_context_batch(mix, lay, 5, np.random.default_rng(0))
    perm = _draw_permutations(np.random.default_rng(1), 5, 3)
    assert not np.any(np.all(perm == np.arange(3), axis=1))
    slot = np.argsort(perm, axis=1)
    p = permute_demos(b, slot)
    for n in range(5):
        segs, psegs = b.segments(n), p.segments(n)
        for i in range(3):
            np.testing.assert_array_equal(psegs[slot[n, i]], segs[i])
        np.testing.assert_array_equal(psegs[3], segs[3])
    # the key identities land where the permuted stream holds them
    k0 = _key_positions(lay, np.broadcast_to(np.arange(3), (5, 3)))
    k1 = _key_positions(lay, slot)
    rows = np.arange(5)[:, None]
    np.testing.assert_array_equal(p.tokens[rows, k1], b.tokens[rows, k0])
    # permuting back restores the batch
    back = permute_demos(p, np.argsort(slot, axis=1))
    np.testing.assert_array_equal(back.tokens, b.tokens)
    np.testing.assert_array_equal(back.states, b.states)


@settings(max_examples=10)  # each example runs the Python reference per context
@given(st.integers(0, 10**6), st.integers(0, 3), st.integers(1, 3))
def test_batched_references_match_bayes_predictive(seed, n_demos, demo_len):
    rng = np.random.default_rng(seed)
    tasks = []
    for S in (2, 3):
        tasks.append(HMM.from_arrays(rng.dirichlet(np.ones(S)), rng.dirichlet(np.ones(S), size=S),
                                     rng.dirichlet(np.ones(3), size=S)))
    mix = HMMMixture.from_arrays([0.4, 0.6], tasks)
    b = sample_context_batch(mix, Layout(n_demos, demo_len, 3), 4, rng)
    ref = mixture_references(mix, b)
    for i in range(4):
        r = bayes_predictive(mix, b.segments(i))
        np.testing.assert_allclose(ref.next_token_probs[i, 1:], r.next_token_probs, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ref.task_posterior[i, 1:], r.task_posterior, rtol=0, atol=1e-12)
    # the first token's law (BOS position) is sum_k rho_k pi_k B_k
    first = sum(0.4 * t.initial_probs @ t.emission_probs if k == 0 else 0.6 * t.initial_probs @ t.emission_probs
                for k, t in enumerate(tasks))
    np.testing.assert_allclose(ref.next_token_probs[:, 0], np.broadcast_to(first, (4, 3)), rtol=0, atol=1e-12)
    # filtered joint sums to one; its state marginal matches the filtered_state field
    np.testing.assert_allclose(ref.filtered_joint.sum(axis=(2, 3)), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ref.filtered_joint.sum(axis=2), ref.filtered_state, rtol=0, atol=1e-15)


def test_target_mask_excludes_sep_targets_and_the_last_position():
    mix = make_mixture("dirichlet", 2, 2, 3, seed=0)
    b = sample_context_batch(mix, Layout(2, 2, 2), 1, np.random.default_rng(0))
    # stream: BOS a a SEP b b SEP t t ; targets count where the next item is an observation
    np.testing.assert_array_equal(target_mask(b)[0], [1, 1, 0, 1, 1, 0, 1, 1, 0])


class _LagSubject:
    """Synthetic subject: residual l holds the one-hots of the tokens at lags 0..l-1 (lag j readable from j+1)."""

    def __init__(self, depth, V, reverse=False):
        self.name, self.depth, self.V, self.reverse = "synthetic", depth, V, reverse
        self.layer_names = tuple(f"l{i}" for i in range(depth))

    def trace(self, batch):
        N, T = batch.tokens.shape
        D = self.depth * (self.V + 2)
        R = np.zeros((self.depth + 1, N, T, D))
        for l in range(1, self.depth + 1):
            lags = range(l) if not self.reverse else range(self.depth - l, self.depth)
            for j in lags:
                shifted = np.full((N, T), self.V + 1)
                shifted[:, j:] = batch.tokens[:, : T - j]
                R[l, :, :, j * (self.V + 2):(j + 1) * (self.V + 2)] = np.eye(self.V + 2)[shifted]
        pos = np.arange(T)
        lag = pos[:, None] - pos[None, :]
        positional = np.where(lag >= 0, -lag, -np.inf).astype(float)
        content = np.where(lag >= 0, batch.tokens[:, None, :] * 1.0, -np.inf)  # depends on the key's token only
        scores = [np.broadcast_to(positional, (N, 1, T, T)), np.broadcast_to(content[:, None], (N, 1, T, T))]
        return Trace(R, scores + [None] * (self.depth - 2))


def test_probes_find_a_known_lag_structure_and_flag_a_wrong_one():
    mix = make_mixture("dirichlet", 2, 2, 3, seed=4)
    data = make_probe_data(mix, Layout(2, 6, 6), 80, seed=0)
    rep = run_probes(_LagSubject(4, 3), data, lags=(1, 2, 3))
    assert lag_violations(rep, {1: 2, 2: 3, 3: 4}) == []
    assert lag_violations(rep, {1: 1, 2: 3, 3: 4}) != []  # wrong claim: lag 1 is not in residual 1
    assert lag_violations(rep, {1: 2, 2: 2, 3: 4}) != []
    rev = run_probes(_LagSubject(4, 3, reverse=True), data, lags=(1, 2, 3))
    assert lag_violations(rev, {1: 2, 2: 3, 3: 4}) != []
    # the task probe sees the test positions, the state probe all observations
    assert rep.task is not None and rep.task.n_test == 24 * 6
    assert rep.state.n_test == 24 * 18


def test_position_independence_separates_positional_and_content_heads():
    mix = make_mixture("dirichlet", 2, 2, 3, seed=4)
    data = make_probe_data(mix, Layout(3, 4, 3), 40, seed=0)
    res = position_independence(_LagSubject(3, 3), data.batch, n_perms=3, seed=0)
    assert res.mean[1] == pytest.approx(1.0, abs=1e-12)  # content head
    assert res.mean[0] < 0.3  # positional head
    assert np.isnan(res.mean[2])
    assert res.scores.shape == (3, 3) and np.all(res.std[:2] >= 0)
    assert independence_violations(res, [0], [1]) == []
    assert independence_violations(res, [1], [0]) != []


def test_probe_inputs_are_validated():
    mix = make_mixture("dirichlet", 2, 2, 3, seed=4)
    with pytest.raises(HmmtxError, match="train_fraction"):
        make_probe_data(mix, Layout(1, 2, 2), 10, seed=0, train_fraction=1.0)
    data = make_probe_data(mix, Layout(1, 2, 2), 10, seed=0)
    with pytest.raises(HmmtxError, match="at least 2 demonstrations"):
        position_independence(_LagSubject(2, 3), data.batch)
    with pytest.raises(HmmtxError, match="lags"):
        run_probes(_LagSubject(2, 3), data, lags=(-1,))


def test_task_pair_laws_match_enumeration():
    """P_k(x_1 = a, x_2 = b) against a direct sum over the two hidden states (exact HMMs, Fractions)."""
    from itertools import product

    from verify.icl_data import task_pair_laws

    mix = make_mixture("dirichlet", 3, 2, 3, seed=2)
    laws = task_pair_laws(mix)
    assert laws.shape == (3, 9)
    for k, h in enumerate(mix.as_float().tasks):
        pi, A, B = h.initial_probs, h.transition_matrix, h.emission_probs
        for a, b in product(range(3), repeat=2):
            brute = sum(pi[i] * B[i, a] * A[i, j] * B[j, b] for i in range(2) for j in range(2))
            assert laws[k, 3 * a + b] == pytest.approx(brute, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(laws.sum(axis=1), 1.0, rtol=1e-12, atol=0)


class _PosteriorSubject:
    """Residual 1 holds the Bayes posterior mean of the task law (what an ideal model carries); residual 0 holds
    noise independent of the task."""

    name, layer_names = "posterior", ("l1",)

    def __init__(self, refs):
        self.refs = refs

    def trace(self, batch):
        N, T = batch.tokens.shape
        mean_law = self.refs.task_posterior @ self.refs.task_pair_laws  # (N, T, V * V)
        noise = np.random.default_rng(0).normal(size=mean_law.shape)
        return Trace(np.stack([noise, mean_law]), [None])


@pytest.mark.parametrize("K", [3, 256])
def test_task_law_probe_reads_the_posterior_mean_at_any_number_of_tasks(K):
    """The task-law probe reaches its Bayes ceiling where the residual carries the posterior mean and stays near 0
    on noise, with 3 tasks and with 256 (where the task classifier has more classes than training contexts)."""
    mix = make_mixture("dirichlet", K, 2, 3, seed=5)
    data = make_probe_data(mix, Layout(3, 6, 6), 400, seed=1)
    rep = run_probes(_PosteriorSubject(data.refs), data, lags=(1,))
    law = rep.task_law
    assert law is not None and law.n_test == 120 * 6
    assert 0.05 < law.ceiling < 1.0
    assert law.r2[1] == pytest.approx(law.ceiling, abs=0.02)
    assert law.r2[0] < 0.1
    assert rep.task.n_classes <= min(K, 280)  # classes seen in the training split
