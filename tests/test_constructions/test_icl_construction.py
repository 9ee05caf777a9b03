"""H4 in-context learner: the Transformer equals the closed-form GD learner (float64 1e-12, exact in Fractions),
its intermediate blocks equal the reference features/moments, and the aggregation layer is position-free."""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.icl import ICLContexts, build, normalise_masses_exact, roundoff_allowance
from constructions.registry import get
from hmm.errors import HmmtxError
from hmm.icl_reference import (
    STATUS_ZERO,
    ICLFeatures,
    gd_closed_form,
    icl_reference,
    normalise_masses,
    stream_features,
)

MAX_LEN = 40


@functools.lru_cache(maxsize=64)
def model(V: int, r: int, K: int, eta: Fraction, kind: str):
    return build(V, r, K, eta, kind, MAX_LEN)


@st.composite
def cases(draw, max_segs=4, max_len=6):
    V = draw(st.integers(1, 3))
    r = draw(st.integers(1, 3 if V <= 2 else 2))
    K = draw(st.integers(1, 4))
    eta = draw(st.sampled_from([Fraction(1, 4), Fraction(3, 4), Fraction(3, 2)]))
    kind = draw(st.sampled_from(["pattern", "concat"]))
    n = draw(st.integers(1, max_segs))
    segs = [draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=max_len)) for _ in range(n)]
    return V, r, K, eta, kind, segs


# ------------------------------------------------------------------------------------------ equality with references
@given(cases())
@settings(max_examples=30)  # each new (V, r, K, eta, kind) builds a model (~0.3 s); 30 examples keep this under ~10 s
def test_float64_equals_closed_form_to_1e12(case):
    V, r, K, eta, kind, segs = case
    m = model(V, r, K, eta, kind)
    out = m.run(segs, "float64", record="final").outputs
    ref = icl_reference(segs, ICLFeatures(V, r, kind), float(eta), K)  # eigendecomposition closed form
    # 1e-12 absolute in the convergent regime (|masses| <= 2); when eta lam_max > 2 (concat, eta = 3/2, r >= 2) GD
    # diverges and the masses grow like |1 - eta lam|^K, so the same 1e-12 is applied relative to their size
    scale = max(1.0, float(np.abs(ref.masses).max()))
    np.testing.assert_allclose(out["masses"].numpy(), ref.masses[1:], rtol=0, atol=1e-12 * scale)
    it = icl_reference(segs, ICLFeatures(V, r, kind), float(eta), K, method="iterate")
    rep = normalise_masses(it.masses[1:])
    assert out["status"].numpy().tolist() == rep.status.tolist()
    err = np.abs(out["next_token_probs"].numpy() - rep.probs).max()
    bound = m.claimed_bound(segs, "float64")
    assert err <= bound.value, (err, bound)


@given(cases(max_segs=3, max_len=5))
@settings(max_examples=20)  # the exact executor loops over positions in Python: ~0.2-1 s per example
def test_exact_mode_equals_closed_form_exactly(case):
    V, r, K, eta, kind, segs = case
    m = model(V, r, K, eta, kind)
    out = m.run(segs, "exact", record="final").outputs
    ref = icl_reference(segs, ICLFeatures(V, r, kind), eta, K, dtype=object)  # doubling series, no iteration
    assert out["masses"].tolist() == ref.masses[1:].tolist()
    probs, status, _ = normalise_masses_exact(ref.masses[1:])
    assert out["next_token_probs"].tolist() == probs.tolist()
    assert out["status"].tolist() == status.tolist()
    assert m.claimed_bound(segs, "exact").value == 0.0


def test_intermediate_blocks_are_the_reference_features_and_moments():
    V, r, K, eta = 3, 2, 3, Fraction(1, 2)
    segs = [[0, 1, 2, 1, 1], [2, 2, 0], [1, 0, 2, 2]]
    for kind in ("pattern", "concat"):
        m = model(V, r, K, eta, kind)
        tr = m.run(segs, "exact").trace
        lay = m.layout
        sf = stream_features(segs, ICLFeatures(V, r, kind), dtype=object)
        ref = icl_reference(segs, ICLFeatures(V, r, kind), eta, K, dtype=object, method="iterate")
        G = m.info["gather"].depth
        h_feat = tr.residuals[G][0]  # after the last gather layer (its FFN builds the features)
        assert h_feat[:, lay["x_prev"]].tolist() == sf.X_prev.tolist()
        assert h_feat[:, lay["x_cur"]].tolist() == sf.X_cur.tolist()
        h_agg = tr.residuals[m.info["aggregate_layer"] + 1][0]
        if kind == "pattern":
            A = np.array([np.diag(a) for a in ref.moments.A.tolist()], dtype=object)
            assert h_agg[:, lay["A_diag"]].tolist() == A.tolist()
            d = sf.X_prev.shape[1]
            off = ~np.eye(d, dtype=bool)
            assert all(v == 0 for v in ref.moments.A[:, off].ravel())  # A is diagonal: storing the diagonal is exact
        else:
            assert h_agg[:, lay["A"]].tolist() == ref.moments.A.reshape(len(sf.codes), -1).tolist()
        assert h_agg[:, lay["B"]].tolist() == ref.moments.B.reshape(len(sf.codes), -1).tolist()
        h_end = tr.residuals[-2][0]  # after gd_K, before the readout layer
        assert h_end[:, lay["W"]].tolist() == ref.W.reshape(len(sf.codes), -1).tolist()


def test_float32_within_its_allowance_and_batch_equals_single_runs():
    V, r, K, eta = 3, 2, 4, Fraction(3, 4)
    ctxs = [[[0, 1, 2, 2], [1, 0, 0]], [[2, 2, 1, 0], [0, 0, 1]], [[1, 1, 1, 1], [2, 1, 0]]]
    for kind in ("pattern", "concat"):
        m = model(V, r, K, eta, kind)
        m32 = m.materialise(torch.float32)  # built once (run() would rebuild it on every call)
        batch = m.run(ICLContexts(ctxs), "float64", record="final").outputs
        for i, c in enumerate(ctxs):
            single = m.run(c, "float64", record="final").outputs
            assert torch.equal(batch["masses"][i], single["masses"])
            f32 = m32.run(c, "float32", record="final").outputs
            # float64 stands in for exact here: its error (<= 1e-12, tested above) is far below the float32 allowance
            err = np.abs(f32["next_token_probs"].numpy().astype(np.float64) - single["next_token_probs"].numpy()).max()
            assert 0 < err <= m.claimed_bound(c, "float32").value


def test_w_k_is_gd_not_yet_converged_and_bound_orders():
    # the Transformer's W_K is the K-step iterate, different from the least-squares limit for small K
    segs = [[0, 1, 1, 0, 1, 1, 0], [1, 1, 0, 1]]
    m = model(2, 1, 1, Fraction(1, 2), "concat")
    tr = m.run(segs, "float64").trace
    W = tr.residuals[-2][0, -1, m.layout["W"]].numpy().reshape(3, 2)  # d_x = r (V + 1) = 3
    ref = icl_reference(segs, ICLFeatures(2, 1, "concat"), 0.5, 1)
    A, B = ref.moments.A[-1], ref.moments.B[-1]
    np.testing.assert_allclose(W, gd_closed_form(A, B, 0.5, 1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(W, 0.5 * B, rtol=0, atol=1e-15)  # one step from 0 is eta B
    assert np.abs(W - np.linalg.pinv(A) @ B).max() > 0.1


# ------------------------------------------------------------------------------------------ position independence
def _aligned(segs: list, perm: list[int]):
    """Positions of observation tokens (and BOS) in the original and permuted streams, keyed by identity."""
    n = len(segs) - 1
    order = [perm[i] for i in range(n)] + [n]

    def positions(seg_order):
        pos, p = {("bos",): 0}, 1
        for k, s in enumerate(seg_order):
            if k:
                p += 1  # SEP
            for t in range(len(segs[s])):
                pos[(s, t)] = p
                p += 1
        return pos

    return positions(list(range(n + 1))), positions(order), [segs[s] for s in order]


def test_aggregation_attention_is_invariant_to_permuting_demonstrations_gather_is_not():
    K, eta = 2, Fraction(1, 2)
    m = model(2, 3, K, eta, "pattern")
    segs = [[0, 1, 1], [1, 1, 0, 0, 1], [0, 0], [1, 0, 1, 1]]  # 3 demos of different lengths + test
    perm = [2, 0, 1]
    p0, p1, psegs = _aligned(segs, perm)
    t0 = m.run(segs, "exact").trace
    t1 = m.run(psegs, "exact").trace
    agg = m.info["aggregate_layer"]
    keys = list(p0)
    G = m.info["gather"].depth
    assert G == 2 and agg == G + 1
    changed = {layer: 0 for layer in range(G)}
    for a in keys:
        for b in keys:
            u0, v0, u1, v1 = p0[a], p0[b], p1[a], p1[b]
            if v0 > u0 or v1 > u1:
                continue  # masked in one of the orders
            assert t0.attn_scores[agg][0, 0, u0, v0] == t1.attn_scores[agg][0, 0, u1, v1]
            for layer in range(G):
                if t0.attn_scores[layer][0, 0, u0, v0] != t1.attn_scores[layer][0, 0, u1, v1]:
                    changed[layer] += 1
    assert all(c > 0 for c in changed.values()), changed
    # weights at every test-segment query: the same tokens get the same weight (1 / number of training tokens)
    test_keys = [k for k in keys if k[0] == len(segs) - 1]
    for a in test_keys:
        for b in keys:
            assert t0.attn_weights[agg][0, 0, p0[a], p0[b]] == t1.attn_weights[agg][0, 0, p1[a], p1[b]]
    # the learner's predictions in the test segment are permutation invariant too (moments are order-free)
    o0 = m.run(segs, "exact").outputs["next_token_probs"]
    o1 = m.run(psegs, "exact").outputs["next_token_probs"]
    for a in test_keys:
        assert o0[p0[a] - 1].tolist() == o1[p1[a] - 1].tolist()


def test_aggregation_head_has_no_positional_term_and_gather_heads_no_content_term():
    m = model(3, 2, 1, Fraction(1, 2), "pattern")
    agg = m.layers[m.info["aggregate_layer"]].heads[0]
    assert all(b == 0 for b in agg.rel_bias) and agg.d_qk == 1
    for layer in m.layers[: m.info["gather"].depth]:
        assert all(h.positional and h.d_qk == 0 for h in layer.heads)
    assert m.info.layer_roles == ("gather", "gather", "moments", "aggregate", "gd", "readout")


# ------------------------------------------------------------------------------------------ registry, inputs
def test_registry_entry_builds_task_independent_weights_and_references_agree():
    from hmm.mixture import HMMMixture
    from hmm.model import HMM

    h1 = HMM.from_arrays([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.8, 0.2], [0.1, 0.9]])
    h2 = HMM.from_arrays([1.0], [[1.0]], [[0.3, 0.7]])
    mix1 = HMMMixture.from_arrays([0.5, 0.5], [h1, h2])
    mix2 = HMMMixture.from_arrays([1.0], [h2])
    e = get("icl")
    toks = e.parse_tokens("0 1 1 0 | 1 1 0 | 0 1")
    a = e.build(mix1, toks, attention="hard", beta=None, r=2, K=3, eta="1/2", features="pattern", max_len=0)
    b = e.build(mix2, toks, attention="hard", beta=None, r=2, K=3, eta="1/2", features="pattern", max_len=0)
    wa, wb = a.weight_tables(), b.weight_tables()
    dense = lambda W: W.todense() if hasattr(W, "todense") else W  # noqa: E731  (sparse exact weights)
    assert len(wa) == len(wb) and all(dense(x["matrix"]).tolist() == dense(y["matrix"]).tolist() for x, y in zip(wa, wb))
    ref = e.reference(mix1, toks, exact=True, r=2, K=3, eta="1/2", features="pattern", max_len=0)
    assert a.run(toks, "exact").outputs["next_token_probs"].tolist() == ref["next_token_probs"].tolist()
    reff = e.reference(mix1, toks, exact=False, r=2, K=3, eta="1/2", features="pattern", max_len=0)
    np.testing.assert_allclose(a.run(toks).outputs["next_token_probs"].numpy(), reff["next_token_probs"], rtol=0, atol=1e-14)
    assert reff["bayes_next_token_probs"].shape == reff["next_token_probs"].shape


def test_zero_mass_is_reported_not_hidden():
    m = model(3, 2, 2, Fraction(1, 2), "pattern")
    out = m.run([[0, 1], [2]], "float64").outputs
    # the query at the test token 2 has window (2, pad): never seen as a training window -> zero mass, uniform
    assert out["status"][-1].item() == STATUS_ZERO
    assert torch.equal(out["masses"][-1], torch.zeros(3, dtype=torch.float64))
    np.testing.assert_allclose(out["next_token_probs"][-1].numpy(), [1 / 3] * 3, rtol=0, atol=0)


def test_bad_inputs_raise_project_errors():
    with pytest.raises(HmmtxError, match="--K"):
        build(3, 2, 0)
    with pytest.raises(HmmtxError, match="--r"):
        build(3, 0, 2)
    with pytest.raises(HmmtxError, match="--eta"):
        build(3, 2, 2, "-1/2")
    with pytest.raises(HmmtxError, match="--eta"):
        build(3, 2, 2, "abc")
    with pytest.raises(HmmtxError, match="--features"):
        build(3, 2, 2, "1/2", "bigram")
    m = model(2, 1, 1, Fraction(1, 2), "pattern")
    with pytest.raises(HmmtxError, match="max_len"):
        m.run([[0] * 30, [1] * 20])
    with pytest.raises(HmmtxError, match="equal stream lengths"):
        m.run(ICLContexts([[[0, 1]], [[0, 1, 1]]]))
    with pytest.raises(HmmtxError, match="out of range"):
        m.run([[0, 2]])
    with pytest.raises(HmmtxError, match="softmax"):
        build(2, 1, 1, attention="softmax", beta=None)
    assert build(2, 1, 1, max_len=8, attention="softmax", beta=30.0).claimed_bound([[0, 1]]).value == 1.0


def test_roundoff_allowance_is_positive_and_scales_with_eps():
    m = model(3, 2, 3, Fraction(1, 2), "pattern")
    z = np.array([[0.2, 0.3, 0.0], [0.0, 0.0, 0.0]])
    a64 = roundoff_allowance(m.info["config"], z, np.array([5, 5]), np.finfo(np.float64).eps)
    a32 = roundoff_allowance(m.info["config"], z, np.array([5, 5]), np.finfo(np.float32).eps)
    assert 0 < a64 < a32 and a32 / a64 == pytest.approx(np.finfo(np.float32).eps / np.finfo(np.float64).eps)


def test_negative_masses_of_concat_features_are_kept_and_reported():
    segs = [[0, 1, 2, 1], [1, 1, 0], [2, 0, 0, 1]]
    m = model(3, 2, 3, Fraction(1, 2), "concat")
    out = m.run(segs, "exact").outputs
    neg = [i for i, s in enumerate(out["status"].tolist()) if s == 2]
    assert neg, "this context has negative masses under the additive (concat) model"
    for i in neg:
        z = out["masses"][i]
        assert any(v < 0 for v in z) and out["negative_mass"][i] == sum(v for v in z if v < 0)
        s = sum(z, Fraction(0))
        assert out["next_token_probs"][i].tolist() == [v / s for v in z]  # signed, not clamped


def test_prior_mass_adds_alpha_over_v_and_removes_zero_masses():
    segs = [[0, 1, 1, 2], [2, 0]]
    alpha = Fraction(1, 10)
    m = build(3, 2, 2, Fraction(1, 2), "pattern", MAX_LEN, alpha)
    out = m.run(segs, "exact").outputs
    ref = icl_reference(segs, ICLFeatures(3, 2), Fraction(1, 2), 2, dtype=object)
    assert out["masses"].tolist() == (ref.masses[1:] + alpha / 3).tolist()
    assert set(out["status"].tolist()) == {0}
    with pytest.raises(HmmtxError, match="--prior-mass"):
        build(3, 2, 2, Fraction(1, 2), "pattern", MAX_LEN, "-1")


def test_softmax_claims_only_trivial_bounds_that_hold():
    segs = [[0, 1, 2, 1], [1, 1, 0], [2, 0, 0, 1]]
    for kind in ("pattern", "concat"):
        m = build(3, 2, 3, Fraction(1, 2), kind, 16, attention="softmax", beta=5.0)
        hard = model(3, 2, 3, Fraction(1, 2), kind)
        err = (m.run(segs).outputs["next_token_probs"] - hard.run(segs).outputs["next_token_probs"]).abs().max()
        b = m.claimed_bound(segs)
        assert 0 < float(err) <= b.value and b.leakage == b.value and "no leakage bound" in b.notes


def test_generic_run_cli_is_bit_exact(tmp_path, capsys):
    from hmm.io import save_mixture
    from hmm.zoo import make_mixture
    from verify.cli import main

    path = tmp_path / "mix.json"
    save_mixture(make_mixture("dirichlet", 2, num_states=2, num_obs=2, seed=0, rational=True), path)
    rc = main(["run", "icl", "--tasks", str(path), "--tokens", "0 1 1 0 | 1 1 0 | 0 1", "--mode", "exact", "--K", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "bit-identical to the exact reference: yes" in out
