"""H2 window-filter construction: equals the restarted-filter reference (1e-12 in float64, exactly in rational mode),
has the stated size, and its claimed bounds hold."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions import registry
from constructions.window_filter import build, lookup_width, report_extra
from hmm import zoo
from hmm.errors import HmmtxError
from hmm.sampling import sample
from hmm.testing import rational_hmms, token_sequences
from hmm.window import window_filter, window_filter_exact


def _np(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.array(a.tolist(), dtype=np.float64)


def _depth(r, readout):
    g = math.ceil(math.log2(r + 1))
    return g if readout == "lookup" else g + r  # product: one chain layer per lag 1..r-1, one for the current token


@settings(max_examples=30)  # each example builds a Transformer (exact weights) and runs torch: ~0.2 s
@given(data=st.data())
def test_float64_construction_equals_window_reference(data):
    S = data.draw(st.integers(1, 5))
    V = data.draw(st.integers(1, 3))
    readout = data.draw(st.sampled_from(["lookup", "product"]))
    r = data.draw(st.integers(1, {1: 8, 2: 6, 3: 4}[V] if readout == "lookup" else 9))
    T = data.draw(st.integers(1, 30))
    prior = data.draw(st.sampled_from(["stationary", "uniform"]))
    seed = data.draw(st.integers(0, 10**6))
    hmm = zoo.make("dirichlet", S, V, seed=seed)
    x = sample(hmm, 3, T, seed=seed + 1).tokens
    model = build(hmm, r, readout=readout, prior=prior, max_len=T)
    out = model.run(x, "float64", record="final").outputs
    ref = window_filter(hmm, x, r, prior)
    np.testing.assert_allclose(_np(out["next_token_probs"]), ref.next_token_probs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_np(out["filtered_probs"]), ref.filtered_probs, rtol=0, atol=1e-12)
    assert model.spec.layers == _depth(r, readout)
    assert model.spec.heads == 1
    if readout == "lookup":
        assert model.spec.ffn_width == lookup_width(V, r)
    else:  # docs: S (V + 1) (dirichlet HMMs have no zero emission)
        assert model.spec.ffn_width == S * (V + 1)


@settings(max_examples=15)  # the exact executor loops in Python over positions and Fractions
@given(data=st.data())
def test_exact_construction_equals_exact_window_reference(data):
    hmm = data.draw(rational_hmms(max_states=3, max_obs=2, positive=data.draw(st.booleans())))
    x = data.draw(token_sequences(hmm, min_len=1, max_len=7))
    r = data.draw(st.integers(1, 4))
    readout = data.draw(st.sampled_from(["lookup", "product"]))
    model = build(hmm, r, readout=readout, prior="uniform", max_len=len(x))
    out = model.run(x, "exact").outputs
    ref = window_filter_exact(hmm, x, r, "uniform")
    assert out["next_token_probs"].shape == ref.next_token_probs.shape
    assert all(isinstance(v, Fraction) for v in out["next_token_probs"].ravel())
    assert (out["next_token_probs"] == ref.next_token_probs).all()
    assert (out["filtered_probs"] == ref.filtered_probs).all()
    assert model.claimed_bound(x, "exact").value == 0.0


def test_stationary_prior_exact_and_bos_positions():
    hmm = zoo.make("mess3", rational=True)
    x = sample(hmm, 1, 9, seed=3).tokens[0]
    for readout in ("lookup", "product"):
        model = build(hmm, 3, readout=readout, max_len=9)
        res = model.run(x, "exact")
        ref = window_filter_exact(hmm, x, 3, "stationary")
        assert (res.outputs["filtered_probs"] == ref.filtered_probs).all()
        # NULL and BOS positions hold initial_probs in both blocks
        lay = model.layout
        for u in (0, 1):
            assert list(res.trace.residuals[-1][0, u, lay["belief"]]) == list(hmm.initial_probs)
            assert list(res.trace.residuals[-1][0, u, lay["pred"]]) == list(hmm.initial_probs)


def test_long_sequence_float64_and_float32():
    hmm = zoo.make("dirichlet", 5, 3, seed=2)
    x = sample(hmm, 2, 300, seed=3).tokens
    model = build(hmm, 6, readout="product", max_len=300)
    ref = window_filter(hmm, x, 6)
    for mode, tol in (("float64", 1e-12), ("float32", 1e-5)):
        out = model.run(x, mode, record="final").outputs
        err = np.abs(_np(out["next_token_probs"]).astype(np.float64) - ref.next_token_probs).max()
        assert err <= tol
        assert err <= model.claimed_bound(x, mode).value


def test_softmax_bounds_hold_for_both_readouts():
    hmm = zoo.make("dirichlet", 3, 2, seed=4)
    x = sample(hmm, 2, 40, seed=5).tokens
    ref = window_filter(hmm, x, 4)
    for readout in ("lookup", "product"):
        for beta in (6.0, 10.0, 20.0):
            model = build(hmm, 4, readout=readout, max_len=40, attention="softmax", beta=beta)
            out = model.run(x, "float64").outputs
            err = max(np.abs(_np(out["next_token_probs"]) - ref.next_token_probs).max(),
                      np.abs(_np(out["filtered_probs"]) - ref.filtered_probs).max())
            br = model.claimed_bound(x, "float64")
            assert err <= br.value, (readout, beta)
            assert err > 0 and br.leakage > 0
        assert br.value < 1e-4, readout  # beta = 20 gives a useful bound
    # an HMM with zeros in A: the product readout's operator ratio is infinite, only the trivial bound is claimed
    cyc = zoo.make("cyclic", 3, 2, seed=0)
    prod = build(cyc, 4, readout="product", max_len=40, attention="softmax", beta=20.0)
    xc = sample(cyc, 1, 20, seed=1).tokens[0]
    assert prod.claimed_bound(xc).value == 1.0 and "no leakage bound" in prod.claimed_bound(xc).notes


def test_build_errors():
    hmm = zoo.make("dirichlet", 3, 4, seed=0)
    with pytest.raises(HmmtxError, match="use --readout product"):
        build(hmm, 9, readout="lookup")
    with pytest.raises(HmmtxError, match="--readout"):
        build(hmm, 2, readout="table")
    with pytest.raises(HmmtxError, match="window length"):
        build(hmm, 0)
    with pytest.raises(HmmtxError, match="max-len"):
        build(hmm, 2, max_len=0)
    with pytest.raises(HmmtxError, match="full support"):
        build(hmm, 2, prior=[1, 0, 0])
    model = build(hmm, 2, max_len=5)
    with pytest.raises(HmmtxError, match="max_len"):
        model.run(np.zeros(6, dtype=int))
    with pytest.raises(HmmtxError, match="out of range"):
        model.run([0, 4])


def test_registry_entry_and_report():
    e = registry.get("window")
    assert [p.name for p in e.params] == ["r", "readout", "prior"]
    hmm = zoo.make("dirichlet", 3, 3, seed=1)
    x = sample(hmm, 1, 20, seed=2).tokens[0]
    model = e.build(hmm, x, attention="hard", beta=None, r=3, readout="product", prior="1/2,1/4,1/4")
    ref = e.reference(hmm, x, exact=False, r=3, readout="product", prior="1/2,1/4,1/4")
    out = model.run(x).outputs
    np.testing.assert_allclose(_np(out["next_token_probs"]), ref["next_token_probs"], rtol=0, atol=1e-12)
    rep = e.report(hmm, x, exact=False, r=3, prior="stationary")
    assert rep["r"] == 3 and rep["bound_holds"]
    assert rep["memory_error"]["filtered"] <= rep["a_posteriori_bound"]["filtered"] + rep["roundoff_allowance"]
    assert rep["a_posteriori_bound"]["filtered"] <= rep["a_priori_bound"]["filtered"] + rep["roundoff_allowance"]
    # exact report on a rational HMM; cyclic: no a-priori bound, said in words
    cyc = zoo.make("cyclic", 3, 2, seed=0, rational=True)
    xc = sample(cyc, 1, 10, seed=1).tokens[0]
    rep = report_extra(cyc, xc, r=2, exact=True)
    assert rep["a_priori_bound"] is None and "no a-priori bound" in rep["a_priori_note"]
    assert rep["bound_holds"] and rep["roundoff_allowance"] == 0.0
