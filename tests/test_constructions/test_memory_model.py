"""The memory-kernel Transformer (torch, framework ConstructedTransformer) against the target functional and bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions import registry
from constructions.memory.kernels import TargetKernel, head_weight
from constructions.memory.model import MemorySpec
from constructions.memory.sweep import CONFIGS
from constructions.memory_kernel import build, claimed_bound, parse_inputs, position_bounds, reference, roundoff_allowance
from constructions.runner import run_construction
from hmm.errors import HmmtxError

ENTRY = registry.get("memory-kernel")


def _np(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


@pytest.fixture(scope="module")
def models() -> dict:
    """One model per verify configuration, built for length 32 on the dyadic value grid k/16 (burn-in 64: shorter
    than the CLI default 256, so the torch runs stay fast; the bound accounts for the burn-in either way)."""
    grid = np.arange(-16, 17) / 16.0
    return {c: ENTRY.build(None, grid[None, :], attention="softmax", beta=1.0, **{**p, "max_len": 32, "prefix": 64})
            for c, p in CONFIGS.items()}


@given(config=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 2**31 - 1), T=st.integers(1, 32),
       mode=st.sampled_from(["float64", "float32"]))
@settings(max_examples=10)  # each example computes the exact finite-window bound (mpmath, O(T^2 H)) and a torch run
def test_outputs_within_the_computed_bound_at_every_position(models, config, seed, T, mode) -> None:
    model = models[config]
    rng = np.random.default_rng(seed)
    x = rng.integers(-16, 17, size=(2, T)) / 16.0
    out = model.run(x, mode=mode, record="final").outputs
    ref = ENTRY.reference(None, x, **CONFIGS[config])
    info = model.info
    xmax = float(np.abs(x).max())
    pb = position_bounds(info["fits"], info["net"], T, xmax, info["prefix"])
    allow = roundoff_allowance(model, T, mode, max(xmax, 1e-300))
    ey = np.abs(_np(out["y"]) - ref["y"]).max(axis=0)  # (T,) worst over the 3 sequences
    em = np.abs(_np(out["memory"]) - ref["memory"]).max(axis=(0, 2))
    assert np.all(ey <= pb.y + allow), (ey - pb.y).max()
    assert np.all(em <= pb.memory + allow), (em - pb.memory).max()
    b = claimed_bound(model, x, mode)
    assert max(ey.max(), em.max()) <= b.value and b.roundoff == pytest.approx(allow, rel=1e-12)


def test_bound_is_tight_where_the_kernel_error_dominates(models) -> None:
    """float64, W1 (exact ReLU readout, FFN error 0): worst-case inputs bring the error near the bound."""
    model = models["W1"]
    fits = model.info["fits"]
    T = 32
    pb = position_bounds(fits, model.info["net"], T, 1.0, model.info["prefix"])
    # input that attains memory 1's finite-window error at the last position: x_{t-s} = sign(K(s) - rho(s))
    from constructions.memory.kernels import finite_window_kernel  # noqa: F401  (documented helper)

    import mpmath

    fit = fits[1]
    n = T - 1 + model.info["prefix"] + 1
    with mpmath.workprec(160):
        ps = fit.grid.exponents_mp()
        Z = [mpmath.fsum(head_weight("lin", p, mpmath.mpf(s)) for s in range(1, n + 1)) for p in ps]
        K = [mpmath.fsum(fit.weights_mp[h] * head_weight("lin", ps[h], mpmath.mpf(s)) / Z[h] for h in range(len(ps)))
             for s in range(1, T)]
        rho = fit.target.values_mp(T - 1)
        sign = [float(mpmath.sign(K[i] - rho[i])) for i in range(T - 1)]
    x = np.array([sign[::-1] + [0.0]])
    out = model.run(x, mode="float64", record="final").outputs
    ref = ENTRY.reference(None, x, **CONFIGS["W1"])
    err = abs(float(_np(out["memory"])[0, -1, 1] - ref["memory"][0, -1, 1]))
    assert err == pytest.approx(pb.kernel[-1, 1], rel=1e-6, abs=1e-12)


def test_single_matched_heads_extract_exactly_with_a_long_burn_in() -> None:
    spec = MemorySpec((TargetKernel("exp", 0.7), TargetKernel("power", 3.0)), ("lin", "log"), heads=1,
                      readout="identity", matched=True)
    model = build(spec, max_len=24, values=np.arange(-4, 5) / 4, prefix=600)
    x = np.random.default_rng(3).integers(-4, 5, size=(2, 24)) / 4
    out = _np(model.run(x, "float64", record="final").outputs["memory"])
    ref = reference(spec, x)["memory"]
    pb = position_bounds(model.info["fits"], model.info["net"], 24, 1.0, 600)
    # lin head: the missing mass e^{-0.7*600} is nothing; log head: the burn-in leaves sum_{s>600} s^-3 ~ 1e-6
    assert pb.kernel[:, 0].max() <= 1e-14 and pb.kernel[:, 1].max() <= 3e-6
    assert np.abs(out - ref)[..., 0].max() <= 1e-14
    assert np.abs(out - ref)[..., 1].max() <= pb.kernel[:, 1].max() + 1e-14


def test_heads_are_dp_free_and_attend_with_the_rpe_kernel(models) -> None:
    model = models["W3"]
    layer = model.layers[0]
    assert all(h.d_qk == 0 and h.positional for h in layer.heads)
    x = np.array([[0.5, -0.25, 1.0, 0.0, -1.0]])
    tr = model.forward(model.codec.encode(x), record="all")
    w = tr.attn_weights[0][0]  # (H, P, P)
    P = w.shape[-1]
    fit = model.info["fits"][1]  # log-type heads of memory 1 (power law)
    h0 = len(model.info["fits"][0].grid.exponents)
    for h, p in enumerate(fit.grid.exponents):
        lags = np.arange(1, P)  # query = last position, keys 0..P-2 at lags P-1..1
        k = head_weight("log", p, lags)
        got = _np(w[h0 + h, P - 1, : P - 1])[::-1]
        np.testing.assert_allclose(got, k / k.sum(), rtol=1e-12, atol=1e-300)
        assert float(w[h0 + h, P - 1, P - 1]) == 0.0  # lag 0 masked


def test_registry_run_and_errors() -> None:
    x = parse_inputs("0.5 -1 1/4 0 1")
    assert x.shape == (5,)
    res = run_construction(ENTRY, None, x, mode="float64", attention="softmax", beta=1.0,
                           params={**CONFIGS["W1"], "max_len": 0})
    assert res.max_abs_error <= res.bound.value and res.errors.keys() == {"y", "memory"}
    with pytest.raises(HmmtxError, match="softmax"):
        ENTRY.build(None, x, attention="hard", beta=None, **CONFIGS["W1"])
    with pytest.raises(HmmtxError, match="outside"):
        parse_inputs("0.5 2")
    with pytest.raises(HmmtxError, match="equal lengths"):
        parse_inputs("0.5 1 | 0")
    model = ENTRY.build(None, x, attention="softmax", beta=1.0, **CONFIGS["W1"])
    with pytest.raises(HmmtxError, match="vocabulary"):
        model.run(np.array([0.3]), "float64")
    with pytest.raises(HmmtxError, match="spike lag T=0"):
        ENTRY.build(None, x, attention="softmax", beta=1.0, **{**CONFIGS["W1"], "memories": "spike:0"})
    with pytest.raises(HmmtxError, match="--memories"):
        ENTRY.build(None, x, attention="softmax", beta=1.0, **{**CONFIGS["W1"], "memories": "spike"})


def test_beta_rescales_the_bias_so_the_kernel_is_unchanged() -> None:
    x = np.array([[0.25, -0.5, 1.0, 0.75]])
    a = ENTRY.build(None, x, attention="softmax", beta=1.0, **{**CONFIGS["W3"], "prefix": 32})
    b = ENTRY.build(None, x, attention="softmax", beta=4.0, **{**CONFIGS["W3"], "prefix": 32})
    ya, yb = _np(a.run(x, "float64").outputs["y"]), _np(b.run(x, "float64").outputs["y"])
    np.testing.assert_allclose(ya, yb, rtol=0, atol=1e-12)
    assert math.isfinite(claimed_bound(b, x).value)
    assert torch.is_tensor(a.run(x, "float32").outputs["y"])
