"""Framework: Layout, exact blocks, torch module vs exact executor on hand-made tiny models, registry."""

from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from constructions import registry
from constructions.blocks import (
    AttentionHead,
    BilinearBuilder,
    Embedding,
    Layer,
    ProjectiveNorm,
    ReLUFFN,
    SparseFrac,
    copy_head,
    frac_zeros,
    lag_bias,
    nonzeros,
    readout,
)
from constructions.exact import run_exact
from constructions.layout import Layout
from constructions.transformer import ConstructedTransformer, spec_for
from hmm.errors import HmmtxError


class _IdCodec:
    """Tokens are the input ids themselves; outputs = the 'out' readout at every position."""

    def encode(self, tokens):
        return np.atleast_2d(np.asarray(tokens, dtype=np.int64))

    def decode(self, model, trace, tokens):
        return {"out": trace.readouts["out"]}


def _tiny_model(layers, lay, W_E, readouts, n_pos=16, attention="hard", beta=None):
    spec = spec_for("tiny", lay, layers, max_positions=n_pos, attention=attention, beta=beta, provenance="test")
    emb = Embedding(W_E, tuple(f"id{i}" for i in range(W_E.shape[0])))
    return ConstructedTransformer(lay, emb, layers, readouts, spec, _IdCodec(), attention=attention, beta=beta)


# ---------------------------------------------------------------------------------------------- layout
def test_layout_table_index_labels_and_errors():
    lay = Layout()
    lay.add("op", (2, 3), "a matrix block")
    lay.add("one", 1, "constant")
    lay.add("token", 4, "one-hot")
    assert lay.width == 6 + 1 + 4
    assert lay["op"] == slice(0, 6) and lay["one"] == slice(6, 7) and lay["token"] == slice(7, 11)
    assert lay.index("op", 1, 2) == 5 and lay.index("one") == 6 and lay.index("token", 3) == 10
    rows = lay.table()
    assert [r["name"] for r in rows] == ["op", "one", "token"]
    assert rows[0] == {"name": "op", "start": 0, "stop": 6, "size": 6, "shape": [2, 3], "description": "a matrix block"}
    labels = lay.labels()
    assert labels[:2] == ["op[0,0]", "op[0,1]"] and labels[6] == "one" and labels[-1] == "token[3]"
    with pytest.raises(HmmtxError, match="duplicate"):
        lay.add("op", 2)
    with pytest.raises(HmmtxError, match="no block 'nope'"):
        lay.index("nope")
    with pytest.raises(HmmtxError, match="out of range"):
        lay.index("op", 2, 0)
    lay.freeze()
    with pytest.raises(HmmtxError, match="frozen"):
        lay.add("late", 1)


def test_sparse_frac_behaves_like_a_dense_exact_matrix():
    W = SparseFrac((3, 4))
    W[0, 1] = Fraction(1, 3)
    W[2, 3] = 2
    W[2, 3] = W[2, 3] + Fraction(-2)  # back to zero: not stored
    assert W.nnz == 1 and W[0, 1] == Fraction(1, 3) and W[1, 1] == 0
    assert nonzeros(W) == [(0, 1, Fraction(1, 3))]
    dense = W.todense()
    assert dense.dtype == object and dense.shape == (3, 4) and dense[0, 1] == Fraction(1, 3)
    assert nonzeros(dense) == nonzeros(W)
    with pytest.raises(HmmtxError, match="out of range"):
        W[3, 0] = 1


def test_lag_bias_tent_targets_lag_or_falls_back_to_position_zero():
    b = lag_bias(4, 10)
    assert list(b) == [-4, -3, -2, -1, 0, -1, -2, -3, -4, -5]
    for u in range(10):
        scores = [b[u - v] for v in range(u + 1)]
        target = u - 4 if u >= 4 else 0
        assert int(np.argmax(scores)) == target
        assert sorted(scores)[-1] > sorted(scores)[-2] if u else True  # unique maximum


# ---------------------------------------------------------------------------------------------- torch vs exact
def _averaging_model():
    """One head with a constant bias (every key ties): output = mean of 'val' over positions 0..u."""
    lay = Layout()
    lay.add("val", 1, "value")
    lay.add("acc", 1, "attention output")
    lay.add("one", 1, "constant")
    lay.freeze()
    head = copy_head(lay, "val", "acc", frac_zeros(16), name="uniform")
    W_E = frac_zeros(3, lay.width)
    for i, v in enumerate([Fraction(1), Fraction(2), Fraction(7, 3)]):
        W_E[i, lay.index("val")] = v
        W_E[i, lay.index("one")] = Fraction(1)
    ro = readout(lay, "out", [(0, "acc", 1), (1, "one", 1)], (2,))
    return _tiny_model([Layer("avg", (head,))], lay, W_E, [ro])


def test_hard_attention_ties_average_over_tied_maxima_in_torch_and_exact():
    model = _averaging_model()
    ids = np.array([[0, 1, 2, 1, 0]])
    tr = model.forward(ids)
    ex = run_exact(model, ids)
    vals = [Fraction(1), Fraction(2), Fraction(7, 3), Fraction(2), Fraction(1)]
    acc = model.layout.index("acc")
    for u in range(5):
        expected = sum(vals[: u + 1], Fraction(0)) / (u + 1)
        assert ex.residuals[1][0, u, acc] == expected
        assert tr.residuals[1][0, u, acc].item() == pytest.approx(float(expected), rel=0, abs=1e-15)
        w = tr.attn_weights[0][0, 0, u]
        assert torch.allclose(w[: u + 1], torch.full((u + 1,), 1.0 / (u + 1), dtype=torch.float64), rtol=0, atol=1e-15)
        assert bool((w[u + 1 :] == 0).all())  # causal
        assert all(ex.attn_weights[0][0, 0, u, v] == Fraction(1, u + 1) for v in range(u + 1))
    # the fast path for positional hard heads (record="final") must fall back to averaging when maxima tie
    fin = model.forward(ids, record="final")
    assert torch.equal(fin.residuals[-1], tr.residuals[-1])
    # masked scores: -inf in torch, None in the exact trace
    assert torch.isinf(tr.attn_scores[0][0, 0, 0, 1]) and ex.attn_scores[0][0, 0, 0, 1] is None


def test_relu_and_bilinear_ffn_and_projective_norm_agree_between_torch_and_exact():
    lay = Layout()
    lay.add("a", 2, "input")
    lay.add("r", 2, "relu output")
    lay.add("p", 1, "product")
    lay.add("one", 1, "constant")
    lay.freeze()
    D = lay.width
    # ReLU FFN: r_i += relu(a_i - 1/2) ; bilinear: p += a_0 * a_1 ; then normalise block 'a' by its sum.
    W_in, b_in, W_out, b_out = frac_zeros(2, D), frac_zeros(2), frac_zeros(D, 2), frac_zeros(D)
    for i in range(2):
        W_in[i, lay.index("a", i)] = Fraction(1)
        b_in[i] = Fraction(-1, 2)
        W_out[lay.index("r", i), i] = Fraction(1)
    relu = ReLUFFN(W_in, b_in, W_out, b_out)
    bb = BilinearBuilder(lay)
    bb.unit(("a", 0), ("a", 1), [("p", 1)])
    W_E = frac_zeros(2, D)
    W_E[0, lay.index("a", 0)], W_E[0, lay.index("a", 1)] = Fraction(1, 4), Fraction(3)
    W_E[1, lay.index("a", 0)], W_E[1, lay.index("a", 1)] = Fraction(2), Fraction(1, 3)
    ro = readout(lay, "out", [(0, ("r", 0), 1), (1, ("r", 1), 1), (2, "p", 1)], (3,))
    layers = [Layer("relu", (), relu), Layer("bil", (), bb.build(), (ProjectiveNorm("a"),))]
    model = _tiny_model(layers, lay, W_E, [ro])
    ids = np.array([[0, 1], [1, 0]])
    tr, ex = model.forward(ids), run_exact(model, ids)
    assert ex.residuals[1][0, 0, lay.index("r", 1)] == Fraction(5, 2)
    assert ex.residuals[1][0, 0, lay.index("r", 0)] == 0  # relu(1/4 - 1/2) = 0
    assert ex.after_ffn[1][0, 0, lay.index("p")] == Fraction(3, 4)
    assert ex.residuals[2][0, 0, lay.index("a", 0)] == Fraction(1, 13)  # (1/4) / (1/4 + 3)
    for l in range(3):
        got = tr.residuals[l].numpy()
        want = np.vectorize(float)(ex.residuals[l])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    # a zero sum in a projective normalisation is an error naming the block, never NaN
    W_E0 = frac_zeros(1, D)
    model0 = _tiny_model(layers, lay, W_E0, [ro])
    with pytest.raises(HmmtxError, match="block 'a'.*probability zero"):
        model0.forward(np.array([[0]]))
    with pytest.raises(HmmtxError, match="block 'a'"):
        run_exact(model0, np.array([[0]]))


def test_record_levels_materialise_and_input_checks():
    model = _averaging_model()
    ids = np.array([[0, 1, 2]])
    full = model.forward(ids, record="all")
    fin = model.forward(ids, record="final")
    assert fin.residuals[0] is None and fin.attn_weights[0] is None
    assert torch.equal(fin.residuals[-1], full.residuals[-1])
    m32 = model.materialise(torch.float32)
    tr32 = m32.forward(ids)
    assert tr32.residuals[-1].dtype == torch.float32
    np.testing.assert_allclose(tr32.residuals[-1].numpy(), full.residuals[-1].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(HmmtxError, match="values must lie in"):
        model.forward(np.array([[0, 5]]))
    with pytest.raises(HmmtxError, match="relative-position tables cover 16"):
        model.forward(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(HmmtxError, match="beta"):
        model.forward(ids, attention="softmax", beta=-1.0)


def test_container_validation_names_both_sizes():
    with pytest.raises(HmmtxError, match=r"W_K: expected shape \(1, 3\), got \(1, 2\)"):
        AttentionHead(frac_zeros(1, 3), frac_zeros(1, 2), frac_zeros(1, 3), frac_zeros(3, 1), frac_zeros(4), name="h")
    with pytest.raises(HmmtxError, match="Fraction"):
        AttentionHead(np.zeros((1, 3), dtype=object), frac_zeros(1, 3), frac_zeros(1, 3), frac_zeros(3, 1), frac_zeros(4))
    with pytest.raises(HmmtxError, match="2 vocabulary names for 3 rows"):
        Embedding(frac_zeros(3, 2), ("a", "b"))


# ---------------------------------------------------------------------------------------------- registry
def test_registry_lists_h1_h3_and_rejects_unknown_names():
    names = registry.entries()
    assert "exact-filter" in names and "bayes-multitask" in names
    e = registry.get("exact-filter")
    assert e.input_kind == "hmm" and "next_token_probs" in e.outputs and "dirichlet" in e.families
    assert registry.get("bayes-multitask").input_kind == "mixture"
    with pytest.raises(HmmtxError, match="unknown construction 'nope'.*exact-filter"):
        registry.get("nope")


def test_registry_params_become_cli_options():
    p = registry.Param("window_r", int, 4, "window length")
    parser = argparse.ArgumentParser()
    p.add_to(parser)
    assert parser.parse_args(["--window-r", "7"]).window_r == 7
    assert parser.parse_args([]).window_r == 4
    e = registry.get("exact-filter")
    ns = argparse.Namespace(filtered=False)
    assert e.param_values(ns) == {"filtered": False}


def test_relu_builder_conjunction_is_the_and_of_its_literals():
    """``relu(sum l_i - (n - 1))`` on every 0/1 assignment of a slot entry, an empty-block test and a flag."""
    import itertools

    from constructions.blocks import ReLUBuilder, block_sum, literal, negated

    lay = Layout()
    lay.add("a", 2)
    lay.add("b", 2)
    lay.add("flag", 1)
    lay.add("out", 1)
    lay.freeze()
    bld = ReLUBuilder(lay)
    bld.conjunction([literal(("a", 1)), negated(block_sum(lay, "b")), literal(("flag", 0))], [(("out", 0), 1)],
                    label="a1 and b empty and flag")
    ffn = bld.build()
    assert ffn.hidden_labels == ("a1 and b empty and flag",) and ffn.b_in[0] == Fraction(-1)  # 1 - (3 - 1)
    for a, b, f in itertools.product(range(3), range(3), range(2)):  # a, b: one-hot index or 2 = empty
        h = np.array([Fraction(0)] * lay.width, dtype=object)
        if a < 2:
            h[lay.index("a", a)] = Fraction(1)
        if b < 2:
            h[lay.index("b", b)] = Fraction(1)
        h[lay.index("flag", 0)] = Fraction(f)
        pre = ffn.W_in.dot(h) + ffn.b_in
        d = ffn.W_out.dot(np.array([max(p, Fraction(0)) for p in pre], dtype=object))
        assert d[lay.index("out", 0)] == (1 if (a == 1 and b == 2 and f == 1) else 0), (a, b, f)


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=12), st.integers(1, 12))
@settings(deadline=None)
def test_positional_targets_is_the_first_argmax_over_visible_lags(bias, P):
    """The one hard-target helper against a plain loop (ties: the flag is False)."""
    from constructions.blocks import positional_targets

    P = min(P, len(bias))
    b = np.array(bias, dtype=np.float64)
    targets, unique = positional_targets(b, P)
    all_unique = True
    for u in range(P):
        scores = [b[u - v] for v in range(u + 1)]
        best = max(scores)
        assert targets[u] == scores.index(best)
        all_unique &= scores.count(best) == 1
    assert unique == all_unique
