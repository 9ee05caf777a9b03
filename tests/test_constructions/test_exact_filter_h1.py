"""H1 exact filter: bit-exact in Fractions, float64/float32 accuracy, attention targets, zero-probability inputs,
softmax leakage bound over a beta sweep."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.exact import run_exact
from constructions.exact_filter import build
from constructions.prefix import op_block
from hmm.errors import HmmtxError
from hmm.model import HMM
from hmm.reference import forward_filter, forward_filter_exact
from hmm.sampling import sample
from hmm.testing import rational_hmms, token_sequences
from hmm.zoo import make

FIELDS = ("next_token_probs", "predicted_probs", "filtered_probs")


def _f(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy().astype(np.float64)
    return np.vectorize(float, otypes=[np.float64])(a)


def _max_err(out, ref):
    return max(float(np.abs(_f(out[k]) - _f(getattr(ref, k))).max()) for k in FIELDS)


# ---------------------------------------------------------------------------------------------- exact mode
# Exact runs cost ~0.05 s per position-layer at S = 4 (Fractions grow with T): 30 examples keep this under ~20 s.
@settings(max_examples=30)
@given(data=st.data())
def test_exact_mode_is_bit_identical_to_the_fraction_filter(data):
    hmm = data.draw(rational_hmms(max_states=4, max_obs=4), label="hmm")  # zeros in A and B allowed
    x = data.draw(token_sequences(hmm, max_len=20), label="tokens")
    model = build(hmm, len(x) + data.draw(st.integers(0, 3), label="slack"))  # max_len may exceed T
    res = model.run(x, "exact")
    ref = forward_filter_exact(hmm, x)
    for k in FIELDS:
        got, want = res.outputs[k], getattr(ref, k)
        assert got.shape == want.shape
        assert all(a == b for a, b in zip(got.ravel(), want.ravel())), k
    # the torch module runs the same weights: float64 within the stated allowance of the exact run
    resf = model.run(x, "float64")
    assert _max_err(resf.outputs, ref) <= model.claimed_bound(x, "float64").value


# The long end of the exact sweep (SPEC: S <= 4, T <= 64): few examples, each up to ~1.5 s at S = 4, T = 64.
@settings(max_examples=8)
@given(data=st.data())
def test_exact_mode_is_bit_identical_on_long_sequences(data):
    hmm = data.draw(rational_hmms(max_states=4, max_obs=3), label="hmm")
    x = data.draw(token_sequences(hmm, min_len=21, max_len=64), label="tokens")
    model = build(hmm, len(x))
    res = model.run(x, "exact", record="final")
    ref = forward_filter_exact(hmm, x)
    for k in FIELDS:
        assert all(a == b for a, b in zip(res.outputs[k].ravel(), getattr(ref, k).ravel())), k


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_mode_bit_identical_at_s4_t64(seed):
    hmm = make("dirichlet", 4, 3, seed=seed, rational=True)
    x = sample(hmm, 1, 64, seed=seed + 10).tokens[0]
    model = build(hmm, 64)
    assert model.spec.layers == math.ceil(math.log2(65)) + 1
    res = model.run(x, "exact", record="final")
    ref = forward_filter_exact(hmm, x)
    for k in FIELDS:
        assert all(a == b for a, b in zip(res.outputs[k].ravel(), getattr(ref, k).ravel()))
    assert model.claimed_bound(x, "exact").value == 0.0


def test_torch_and_exact_executor_agree_layer_by_layer():
    hmm = make("sticky", 3, 3, seed=3, rational=True)
    x = sample(hmm, 1, 13, seed=4).tokens[0]
    model = build(hmm, 13)
    ids = model.codec.encode(x)
    ex = run_exact(model, ids)
    tr = model.forward(ids)
    for l in range(len(model.layers) + 1):
        np.testing.assert_allclose(tr.residuals[l].numpy(), _f(ex.residuals[l]), rtol=0, atol=1e-14)
    for l in range(len(model.layers)):
        np.testing.assert_array_equal(tr.attn_weights[l].numpy(), _f(ex.attn_weights[l]))


# ---------------------------------------------------------------------------------------------- float modes
# Each example builds a model and rebuilds it in float32: 12 examples keep this property at a few seconds.
@settings(max_examples=12)
@given(S=st.integers(1, 8), V=st.integers(1, 5), T=st.integers(1, 96), seed=st.integers(0, 10_000))
def test_float64_and_float32_accuracy_on_mixing_hmms(S, V, T, seed):
    hmm = make("dirichlet", S, V, seed=seed, concentration=2.0)
    x = sample(hmm, 1, T, seed=seed + 1).tokens[0]
    model = build(hmm, T)
    ref = forward_filter(hmm, x)  # float64 reference: its own error ~T eps is far below 1e-12 here
    r64 = model.run(x, "float64", record="final")
    err64 = float(np.abs(r64.outputs["next_token_probs"].numpy() - ref.next_token_probs).max())
    assert err64 <= 1e-12
    assert _max_err(r64.outputs, ref) <= model.claimed_bound(x, "float64").value
    r32 = model.run(x, "float32", record="final")
    err32 = float(np.abs(r32.outputs["next_token_probs"].numpy() - ref.next_token_probs).max())
    assert err32 <= 1e-5
    assert err32 <= model.claimed_bound(x, "float32").value


def test_float64_s16_long_sequence_is_accurate():
    hmm = make("dirichlet", 16, 4, seed=5, concentration=2.0)
    x = sample(hmm, 1, 128, seed=6).tokens[0]
    model = build(hmm, 128, filtered=False)
    out = model.run(x, "float64", record="final").outputs
    ref = forward_filter(hmm, x)
    assert float(np.abs(out["next_token_probs"].numpy() - ref.next_token_probs).max()) <= 1e-12
    assert "filtered_probs" not in out


def test_batched_sequences_match_single_runs():
    hmm = make("dirichlet", 3, 3, seed=8)
    xs = sample(hmm, 4, 9, seed=9).tokens
    model = build(hmm, 9)
    batch = model.run(xs, "float64").outputs["next_token_probs"]
    assert batch.shape == (4, 9, 3)
    for n in range(4):
        single = model.run(xs[n], "float64").outputs["next_token_probs"]
        assert torch.equal(batch[n], single)


# ---------------------------------------------------------------------------------------------- structure
def test_layout_sizes_trace_shapes_and_attention_targets():
    S, V, T = 3, 2, 11
    hmm = make("dirichlet", S, V, seed=2, rational=True)
    x = sample(hmm, 1, T, seed=3).tokens[0]
    model = build(hmm, T)
    L = math.ceil(math.log2(T + 1))
    names = [r["name"] for r in model.layout.table()]
    assert names == ["op", "op_alt", "fetched_op", "one", "is_null", "is_bos", "token", "emis", "filtered"]
    assert model.spec.width == 3 * S * S + V + 3 + 2 * S
    assert model.spec.layers == L + 1 and model.spec.heads == 1 and model.spec.ffn_width == S**3 + 2 * S * S
    P = T + 2
    tr = model.forward(model.codec.encode(x))
    assert len(tr.residuals) == L + 2 and all(r.shape == (1, P, model.spec.width) for r in tr.residuals)
    assert all(w.shape == (1, 1, P, P) for w in tr.attn_weights)
    assert tr.readouts["next_token"].shape == (1, P, V)
    ex = run_exact(model, model.codec.encode(x))
    for l in range(L):
        for u in range(P):
            target = u - 2**l if u >= 2**l else 0  # lag 2^l, or the NULL sink at position 0
            w = tr.attn_weights[l][0, 0, u]
            assert w[target].item() == 1.0 and w.sum().item() == 1.0
            assert ex.attn_weights[l][0, 0, u, target] == 1
    # the last (filtered) layer attends to lag 1
    assert all(tr.attn_weights[L][0, 0, u, max(u - 1, 0)].item() == 1.0 for u in range(P))


def test_after_layer_l_each_position_holds_the_product_over_its_window():
    hmm = make("cyclic", 3, 2, seed=4, rational=True, eps=0.1)
    x = sample(hmm, 1, 9, seed=5).tokens[0]
    model = build(hmm, 9, filtered=False)
    ids = model.codec.encode(x)[0]
    ex = run_exact(model, ids[None])
    S = 3
    ops = [_exact_op(model, i) for i in ids]
    for l in range(len(model.layers)):
        for u in range(len(ids)):
            lo = max(u - 2 ** (l + 1) + 1, 0)
            prod = ops[lo]
            for v in range(lo + 1, u + 1):
                prod = prod.dot(ops[v])
            prod = prod / sum(prod.ravel(), Fraction(0))
            held = ex.residuals[l + 1][0, u, model.layout[op_block(l + 1)]].reshape(S, S)
            assert all(v == 0 for v in ex.residuals[l + 1][0, u, model.layout[op_block(l)]])  # old block cleared
            assert (held == prod).all()


def _exact_op(model, token_id):
    S = model.info["n"]
    return model.embedding.W_E[token_id, model.layout["op"]].reshape(S, S)


# ---------------------------------------------------------------------------------------------- zeros and errors
def test_zero_entries_work_and_zero_probability_sequences_raise():
    hmm = HMM.from_arrays(["1", "0"], [["0", "1"], ["1/2", "1/2"]], [["1", "0"], ["1/3", "2/3"]])
    ok = np.array([0, 1, 0, 1, 1])
    model = build(hmm, 6)
    res = model.run(ok, "exact")
    ref = forward_filter_exact(hmm, ok)
    assert all(a == b for a, b in zip(res.outputs["next_token_probs"].ravel(), ref.next_token_probs.ravel()))
    bad = np.array([1, 0, 0])  # z_0 = 0 must emit 0
    for mode in ("exact", "float64", "float32"):
        with pytest.raises(HmmtxError, match="probability zero"):
            model.run(bad, mode)
    never = HMM.from_arrays(["1/2", "1/2"], [["1/2", "1/2"], ["1/2", "1/2"]], [["1", "0", "0"], ["1", "0", "0"]])
    with pytest.raises(HmmtxError, match="probability zero"):
        build(never, 3).run(np.array([0, 2, 0]), "float64")


def test_bad_arguments_raise_hmmtx_errors():
    hmm = make("dirichlet", 2, 2, seed=0)
    with pytest.raises(HmmtxError, match="max_len"):
        build(hmm, 0)
    with pytest.raises(HmmtxError, match="beta"):
        build(hmm, 4, "softmax")
    with pytest.raises(HmmtxError, match="exceeds max_len 4"):
        build(hmm, 4).run(np.zeros(5, dtype=int))
    with pytest.raises(HmmtxError, match="hard attention only"):
        build(hmm, 4, "softmax", 3.0).run(np.zeros(3, dtype=int), "exact")
    with pytest.raises(HmmtxError, match="out of range"):
        build(hmm, 4).run(np.array([0, 2]))


# ---------------------------------------------------------------------------------------------- softmax bound
@settings(max_examples=25)
@given(
    data=st.data(),
    log_beta=st.floats(math.log(0.05), math.log(60.0)),
)
def test_softmax_error_never_exceeds_the_claimed_bound(data, log_beta):
    beta = math.exp(log_beta)
    hmm = data.draw(rational_hmms(max_states=3, max_obs=3), label="hmm").as_float()
    x = data.draw(token_sequences(hmm, max_len=24), label="tokens")
    model = build(hmm, len(x), "softmax", beta)
    out = model.run(x, "float64").outputs
    ref = forward_filter(hmm, x)
    bound = model.claimed_bound(x, "float64")
    assert 0.0 <= bound.value <= 1.0
    assert _max_err(out, ref) <= bound.value


def test_softmax_bound_is_small_at_large_beta_and_shrinks_with_beta():
    hmm = make("dirichlet", 3, 3, seed=11, concentration=2.0)
    x = sample(hmm, 1, 30, seed=12).tokens[0]
    ref = forward_filter(hmm, x)
    rows = []
    for beta in (1.0, 5.0, 10.0, 20.0, 30.0):
        model = build(hmm, 30, "softmax", beta)
        err = _max_err(model.run(x, "float64").outputs, ref)
        b = model.claimed_bound(x, "float64")
        assert err <= b.value
        rows.append((beta, err, b.value))
    print("beta, measured, bound, ratio:", [(r[0], f"{r[1]:.2e}", f"{r[2]:.2e}", f"{r[1] / r[2]:.2e}") for r in rows])
    values = [r[2] for r in rows]
    assert values == sorted(values, reverse=True)
    assert rows[0][2] > 0.5  # small beta: close to the trivial bound, yet still above the measured error
    assert rows[3][2] < 1e-5 and rows[4][2] < 1e-9  # a real claim at large beta
    assert rows[3][1] / rows[3][2] > 1e-4  # and not absurdly loose


def test_required_beta_reaches_the_target_and_is_minimal():
    from constructions.exact_filter import required_beta

    hmm = make("dirichlet", 3, 3, seed=13, concentration=2.0)
    x = sample(hmm, 1, 20, seed=14).tokens[0]
    target = 1e-6
    b = required_beta(build(hmm, 20), x, target)
    at = build(hmm, 20, "softmax", b).claimed_bound(x, "float64")
    below = build(hmm, 20, "softmax", b / 1.05).claimed_bound(x, "float64")
    assert at.leakage <= target < below.leakage
    err = _max_err(build(hmm, 20, "softmax", b).run(x, "float64").outputs, forward_filter(hmm, x))
    assert err <= at.value
    with pytest.raises(HmmtxError, match="target error"):
        required_beta(build(hmm, 20), x, 0.0)
