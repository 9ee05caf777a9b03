"""Doubling gather layers: slot[j] holds the token at lag j from residual ceil(log2(j+1)) on, and not before."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.blocks import Embedding, frac_zeros, ONE
from constructions.gather import Gather, gather_depth, leakage_per_head, read_slots, readable_layer
from constructions.layout import Layout
from constructions.transformer import ConstructedTransformer, spec_for
from constructions.window_filter import build
from hmm import zoo
from hmm.errors import HmmtxError


class _Codec:
    """ids = [sink, tokens...]; no outputs."""

    def __init__(self, V):
        self.V = V

    def encode(self, tokens):
        x = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
        return np.concatenate([np.full((x.shape[0], 1), self.V), x], axis=1)

    def decode(self, model, trace, tokens):
        return {}


def _bare_model(R, V, max_len):
    """Only the gather layers: alphabet V + 1 (symbol V = marker held by the sink at position 0)."""
    plan = Gather(num_slots=R, alphabet=V + 1)
    lay = Layout()
    plan.add_blocks(lay)
    lay.freeze()
    W_E = frac_zeros(V + 1, lay.width)
    for i in range(V + 1):
        W_E[i, lay.index(plan.slot(0), i)] = ONE
    layers = plan.layers(lay, max_len + 1)
    spec = spec_for("gather-test", lay, layers, max_positions=max_len + 1, attention="hard", beta=None,
                    provenance="test")
    model = ConstructedTransformer(lay, Embedding(W_E, tuple(f"s{i}" for i in range(V + 1))), layers, [], spec,
                                   _Codec(V))
    return model, plan


def _expected_slots(seq, V, R, l):
    """(P, R, V+1): slot j at position u = one-hot of the symbol at u - j if j < 2^l (readable), else zeros."""
    P = len(seq)
    out = np.zeros((P, R, V + 1))
    for u in range(P):
        for j in range(R):
            if readable_layer(j) <= l:
                out[u, j, seq[u - j] if u - j >= 0 else V] = 1
    return out


def test_depth_and_readable_layer():
    assert [gather_depth(R) for R in (1, 2, 3, 4, 5, 8, 9)] == [0, 1, 2, 2, 3, 3, 4]
    assert [readable_layer(j) for j in range(9)] == [0, 1, 2, 2, 3, 3, 3, 3, 4]
    for j in range(1, 200):
        assert readable_layer(j) == math.ceil(math.log2(j + 1))


@settings(max_examples=25)  # every example runs the exact executor and float64 on all residuals
@given(R=st.integers(1, 9), V=st.integers(1, 3), T=st.integers(1, 13), seed=st.integers(0, 10**6))
def test_slot_j_holds_lag_j_exactly_from_its_layer_and_is_empty_before(R, V, T, seed):
    model, plan = _bare_model(R, V, 16)
    x = np.random.default_rng(seed).integers(0, V, size=T)
    seq = [V] + x.tolist()  # symbol at each position (sink = marker)
    for mode in ("exact", "float64"):
        trace = model.run(x, mode).trace
        assert len(trace.residuals) == plan.depth + 1
        for l, res in enumerate(trace.residuals):
            got = read_slots(np.asarray(res[0].tolist() if mode == "exact" else res[0].numpy(), dtype=object),
                             model.layout, plan)
            exp = _expected_slots(seq, V, R, l)
            if mode == "exact":
                assert (got == exp).all(), (mode, l)  # Fractions equal to the 0/1 one-hots, exactly
            else:
                np.testing.assert_array_equal(got.astype(np.float64), exp)


def test_lag_j_not_recoverable_before_its_layer_in_the_window_model():
    """Two inputs differing only at lag j of the last position: identical residuals there before layer
    ceil(log2(j+1)) (nothing in the stream depends on that token yet), different slot[j] from that layer on."""
    hmm = zoo.make("dirichlet", 3, 3, seed=0)
    r = 7
    model = build(hmm, r, readout="product", max_len=20)
    plan = model.info["gather"]
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=14)
    tx = model.run(x, "float64").trace  # gather copies 0/1 values: exact in float64 too
    for j in range(r + 1):
        y = x.copy()
        y[-1 - j] = (x[-1 - j] + 1) % 3
        ty = model.run(y, "float64").trace
        L = readable_layer(j)
        for l in range(L):
            assert (tx.residuals[l][0, -1] == ty.residuals[l][0, -1]).all(), (j, l)
        sl = model.layout[plan.slot(j)]
        for l in range(L, plan.depth + 1):
            a, b = tx.residuals[l][0, -1, sl], ty.residuals[l][0, -1, sl]
            assert a[x[-1 - j]] == 1 and b[y[-1 - j]] == 1 and a.sum() == b.sum() == 1, (j, l)


def test_softmax_slots_leak_at_most_popcount_lambda():
    """With softmax attention every slot is a probability vector with at most popcount(j) * lambda(beta) of its mass
    off the correct symbol (the lemma behind the lookup readout's leakage bound)."""
    R, V = 8, 2
    model, plan = _bare_model(R, V, 24)
    x = np.random.default_rng(0).integers(0, V, size=20)
    seq = [V] + x.tolist()
    for beta in (3.0, 6.0, 12.0):
        tr = model.forward(model.codec.encode(x), attention="softmax", beta=beta)
        got = read_slots(tr.residuals[-1][0].numpy(), model.layout, plan)
        exp = _expected_slots(seq, V, R, plan.depth)
        lam = leakage_per_head(beta)
        np.testing.assert_allclose(got.sum(-1), 1.0, rtol=0, atol=1e-12)
        off = 1 - (got * exp).sum(-1)  # (P, R) mass off the correct symbol
        for j in range(R):
            assert off[:, j].max() <= bin(j).count("1") * lam + 1e-12, (beta, j)
        assert off.max() > 0  # softmax does leak
    assert leakage_per_head(20.0) < 5e-9


def test_gather_validation():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(HmmtxError, match="num_slots"):
            Gather(num_slots=bad, alphabet=2)
    with pytest.raises(HmmtxError, match="alphabet"):
        Gather(num_slots=2, alphabet=0)
    plan = Gather(3, 2)
    lay = Layout()
    plan.add_blocks(lay)
    with pytest.raises(HmmtxError, match="freeze"):
        plan.layers(lay, 8)
    lay.freeze()
    with pytest.raises(HmmtxError, match="not needed"):
        plan.head(lay, 2, 8)
    with pytest.raises(HmmtxError, match="out of range"):
        plan.slot(3)
    assert lay.names == ["slot[0]", "slot[1]", "slot[2]"]
    h = plan.head(lay, 1, 8)  # lag 2: copies only slot 0 -> slot 2 (clipped at R - 1)
    assert h.d_v == 2 and h.positional and list(h.rel_bias[:4]) == [-2, -1, 0, -1]


def test_linear_probe_reads_lag_k_from_layer_ceil_log2_k_plus_1():
    """SPEC §5 on the window model: a held-out linear probe (least squares onto one-hot targets, argmax) reads the
    token k back perfectly from residual ceil(log2(k+1)) on, and at chance before (i.i.d. uniform tokens, V = 3)."""
    from hmm.model import HMM

    def probe_accuracy(f_tr, y_tr, f_te, y_te):
        out = []
        for a, b in zip(f_tr, f_te):
            X = np.hstack([a, np.ones((len(a), 1))])
            W = np.linalg.lstsq(X, np.eye(3)[y_tr], rcond=None)[0]
            out.append((np.argmax(np.hstack([b, np.ones((len(b), 1))]) @ W, axis=1) == y_te).mean())
        return np.array(out)

    hmm = HMM.from_arrays([1.0], [[1.0]], [[1 / 3, 1 / 3, 1 / 3]])  # one state: i.i.d. uniform tokens
    r = 6
    model = build(hmm, r, readout="product", max_len=40)
    plan = model.info["gather"]
    x = np.random.default_rng(7).integers(0, 3, size=(24, 40))
    tr = model.run(x, "float64", record="residuals").trace
    res = np.stack([t.numpy() for t in tr.residuals[: plan.depth + 1]])[:, :, 2:]  # (L+1, N, T, D) tokens only
    for k in range(1, r + 1):
        feats = res[:, :, k:].reshape(res.shape[0], -1, res.shape[-1])
        y = x[:, : x.shape[1] - k].reshape(-1)
        n = len(y) * 7 // 10
        acc = probe_accuracy(feats[:, :n], y[:n], feats[:, n:], y[n:])
        L = readable_layer(k)
        assert np.all(acc[L:] == 1.0), (k, acc)
        assert np.all(acc[:L] < 0.45), (k, acc)  # chance is 1/3
