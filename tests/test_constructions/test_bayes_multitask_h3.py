"""H3 Bayes multi-task: bit-exact against the Fraction Bayes predictive, float accuracy, task posterior window,
zero-probability contexts, softmax bound."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.bayes_multitask import build, stream_items
from constructions.exact import run_exact
from constructions.prefix import num_doubling_layers, op_block
from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture, bayes_predictive, bayes_predictive_exact
from hmm.model import HMM
from hmm.sampling import sample_contexts
from hmm.testing import rational_mixtures, token_sequences
from hmm.zoo import make_mixture

FIELDS = ("next_token_probs", "task_posterior", "state_predicted")


def _f(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy().astype(np.float64)
    return np.vectorize(float, otypes=[np.float64])(a)


def _max_err(out, ref):
    return max(float(np.abs(_f(out[k]) - _f(getattr(ref, k))).max()) for k in FIELDS)


@st.composite
def contexts(draw, mixture, max_segments=4, max_seg_len=5):
    """Segments that are possible under one task (drawn), hence under the mixture."""
    k = draw(st.integers(0, mixture.num_tasks - 1))
    n = draw(st.integers(1, max_segments))
    return [draw(token_sequences(mixture.tasks[k], max_len=max_seg_len)) for _ in range(n)]


# Exact runs are the expensive part (Fractions over the joint space); 25 examples keep this near 10 s.
@settings(max_examples=25)
@given(data=st.data())
def test_exact_mode_is_bit_identical_to_the_fraction_bayes_predictive(data):
    mix = data.draw(rational_mixtures(max_tasks=3, max_states=3, max_obs=3, positive=data.draw(st.booleans())))
    ctx = data.draw(contexts(mix))
    model = build(mix, len(stream_items(ctx, mix.num_obs)[0]))
    res = model.run(ctx, "exact")
    ref = bayes_predictive_exact(mix, ctx)
    for k in FIELDS:
        got, want = res.outputs[k], getattr(ref, k)
        assert got.shape == want.shape
        assert all(a == b for a, b in zip(got.ravel(), want.ravel())), k
    resf = model.run(ctx, "float64")
    assert _max_err(resf.outputs, ref) <= model.claimed_bound(ctx, "float64").value


# Longer contexts (stream length up to 64, S <= 4 per task): few examples, each ~1-3 s in Fractions.
@settings(max_examples=6)
@given(data=st.data())
def test_exact_mode_is_bit_identical_on_long_contexts(data):
    mix = data.draw(rational_mixtures(max_tasks=2, max_states=4, max_obs=3), label="mixture")
    ctx = data.draw(contexts(mix, max_segments=6, max_seg_len=12), label="context")
    n = len(stream_items(ctx, mix.num_obs)[0])
    model = build(mix, n)
    res = model.run(ctx, "exact", record="final")
    ref = bayes_predictive_exact(mix, ctx)
    for k in FIELDS:
        assert all(a == b for a, b in zip(res.outputs[k].ravel(), getattr(ref, k).ravel())), k


@settings(max_examples=10)
@given(K=st.integers(1, 3), S=st.integers(1, 4), V=st.integers(2, 4), demos=st.integers(0, 4),
       demo_len=st.integers(1, 12), test_len=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_float64_and_float32_accuracy(K, S, V, demos, demo_len, test_len, seed):
    mix = make_mixture("dirichlet", K, S, V, seed=seed, concentration=2.0)
    ctx = sample_contexts(mix, 1, demos, demo_len, test_len, seed=seed + 1).segments(0)
    T = demos * (demo_len + 1) + test_len
    model = build(mix, T)
    ref = bayes_predictive(mix, ctx)
    out64 = model.run(ctx, "float64", record="final").outputs
    assert _max_err(out64, ref) <= 1e-12
    out32 = model.run(ctx, "float32", record="final").outputs
    assert _max_err(out32, ref) <= 1e-5
    assert _max_err(out32, ref) <= model.claimed_bound(ctx, "float32").value


def test_sizes_layout_and_batched_contexts():
    mix = make_mixture("dirichlet", 2, 3, 3, seed=1)
    samp = sample_contexts(mix, 3, 2, 4, 3, seed=2)
    ctxs = [samp.segments(n) for n in range(3)]
    T = 2 * 5 + 3
    model = build(mix, T)
    n = 6
    assert [r["name"] for r in model.layout.table()] == ["op", "op_alt", "fetched_op", "one", "is_null", "is_bos", "is_sep",
                                                         "token"]
    assert model.spec.width == 3 * n * n + 3 + 4 and model.spec.ffn_width == n**3 + 2 * n * n
    assert model.spec.layers == math.ceil(math.log2(T + 1))
    batch = model.run(ctxs, "float64").outputs
    assert batch["task_posterior"].shape == (3, T, 2)
    for i, c in enumerate(ctxs):
        single = model.run(c, "float64").outputs
        assert torch.equal(batch["task_posterior"][i], single["task_posterior"])
    with pytest.raises(HmmtxError, match="segment structure"):
        model.run([ctxs[0], [np.array([0, 1])]], "float64")


def test_task_posterior_becomes_exact_only_when_the_window_covers_bos():
    """Read the task-posterior readout from the residual after each layer: at the last position it equals the Bayes
    posterior exactly from the layer whose window (u - 2^(l+1), u] reaches BOS (position 1), and not before."""
    t0 = HMM.from_arrays(["1", "0"], [["0", "1"], ["1", "0"]], [["4/5", "1/5"], ["1/5", "4/5"]])
    t1 = HMM.from_arrays(["1/2", "1/2"], [["1/2", "1/2"], ["1/2", "1/2"]], [["1/2", "1/2"], ["1/2", "1/2"]])
    mix = HMMMixture.from_arrays(["1/2", "1/2"], [t0, t1])
    ctx = [np.array([0, 1, 0, 1]), np.array([0, 1, 0]), np.array([0, 1])]
    T = 4 + 1 + 3 + 1 + 2
    model = build(mix, T)
    ids = model.codec.encode(ctx)
    ex = run_exact(model, ids)
    ref = bayes_predictive_exact(mix, ctx)
    u = T + 1  # last position
    needed = num_doubling_layers(u + 1)
    for l in range(len(model.layers)):
        Q = ex.residuals[l + 1][0, u, model.layout[op_block(l + 1)]].reshape(4, 4)  # held after layer l
        col = Q.sum(axis=0)
        z = [col[0] + col[1], col[2] + col[3]]  # task blocks: states 0-1 and 2-3
        post = [a / sum(z) for a in z]
        exact = post == list(ref.task_posterior[-1])
        assert exact == (2 ** (l + 1) >= u), (l, post)
    assert needed == len(model.layers)


def test_zero_probability_context_raises_and_softmax_exact_is_refused():
    t0 = HMM.from_arrays(["1"], [["1"]], [["1", "0"]])
    t1 = HMM.from_arrays(["1"], [["1"]], [["1", "0"]])
    mix = HMMMixture.from_arrays(["1/3", "2/3"], [t0, t1])
    model = build(mix, 5)
    for mode in ("exact", "float64"):
        with pytest.raises(HmmtxError, match="probability zero"):
            model.run([np.array([0, 0]), np.array([1])], mode)
    with pytest.raises(HmmtxError, match="hard attention only"):
        build(mix, 5, "softmax", 2.0).run([np.array([0])], "exact")
    with pytest.raises(HmmtxError, match="HMMMixture"):
        build(t0, 5)


@settings(max_examples=15)
@given(data=st.data(), log_beta=st.floats(math.log(0.05), math.log(60.0)))
def test_softmax_error_never_exceeds_the_claimed_bound(data, log_beta):
    mix = data.draw(rational_mixtures(max_tasks=2, max_states=2, max_obs=3)).as_float()
    ctx = data.draw(contexts(mix, max_segments=3, max_seg_len=4))
    model = build(mix, len(stream_items(ctx, mix.num_obs)[0]), "softmax", math.exp(log_beta))
    out = model.run(ctx, "float64").outputs
    ref = bayes_predictive(mix, ctx)
    b = model.claimed_bound(ctx, "float64")
    assert _max_err(out, ref) <= b.value <= 1.0


def test_softmax_bound_is_a_real_claim_at_large_beta():
    mix = make_mixture("dirichlet", 2, 2, 3, seed=4, concentration=2.0)
    ctx = sample_contexts(mix, 1, 2, 5, 4, seed=5).segments(0)
    ref = bayes_predictive(mix, ctx)
    model = build(mix, 16, "softmax", 25.0)
    err = _max_err(model.run(ctx, "float64").outputs, ref)
    b = model.claimed_bound(ctx, "float64").value
    assert err <= b < 1e-6
