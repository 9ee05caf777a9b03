"""The structured executor (:mod:`constructions.structured`) equals the dense torch module, layer by layer, for every
registered construction, and recognises structure from the weights alone (a hand-written toy construction).

Round-off tolerance: both executors evaluate the same sums of at most ``k`` products in a different order, so each
output coordinate differs by at most about ``2 k eps`` times the sum of the absolute values of its terms; with the
layer's values of magnitude ``M`` (inputs and outputs) and ``k <= width`` this is below ``TOL * M`` with
``TOL = 1e-12`` (float64, widths here < 200) or ``1e-4`` (float32). Layer-by-layer checks feed both executors the
dense module's residual, so errors do not compound across layers.
"""

from __future__ import annotations

import argparse
import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions import registry
from constructions.blocks import (
    AttentionHead,
    BilinearBuilder,
    Embedding,
    Layer,
    ProjectiveNorm,
    ReLUFFN,
    SparseFrac,
    as_frac_array,
    copy_head,
    frac_zeros,
    lag_bias,
    readout,
)
from constructions.layout import Layout
from constructions.structured import BilinearPlan, StructuredExecutor
from constructions.transformer import ConstructedTransformer, spec_for
from hmm import zoo

TOL = {torch.float64: 1e-12, torch.float32: 1e-4}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small per-layer ops: one intra-op thread (OpenMP barriers stall on an oversubscribed machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _entry_model(name: str, attention: str, seed: int):
    """A small instance of registered construction ``name`` with its CLI defaults."""
    e = registry.get(name)
    parser = argparse.ArgumentParser()
    e.add_cli_arguments(parser)
    params = e.param_values(parser.parse_args([]))
    tokens = e.parse_tokens(e.default_tokens)
    if e.input_kind == "hmm":
        source = zoo.make(e.families[seed % len(e.families)] if e.families else "dirichlet", 3, 2, seed=seed)
    elif e.input_kind == "mixture":
        source = zoo.make_mixture("dirichlet", 2, 2, 2, seed=seed)
    else:
        source = None
    beta = e.attention.beta if e.attention.beta is not None else 6.0
    model = e.build(source, tokens, attention=attention, beta=beta, **params)
    return model, model.check_input_ids(model.codec.encode(tokens))


def _cases():
    """Every registered construction built as a ConstructedTransformer (the exact weights by layout). The compiled
    standard-block variants (``*-std``, :mod:`constructions.standard_variants`) are dense float TransformerLens-style
    models compiled *from* these constructions; the structured executor runs the constructions themselves."""
    registry.discover()
    out = []
    for name, e in sorted(registry.entries().items()):
        if e.build.__module__ == "constructions.standard_variants":
            continue
        atts = [e.attention.attention] if e.attention.attention == "softmax" else ["hard", "softmax"]
        out += [(name, a) for a in atts]
    return out


def _close(got: torch.Tensor, want: torch.Tensor, scale: float, dtype, what: str) -> None:
    err = float((got - want).abs().max()) if want.numel() else 0.0
    assert err <= TOL[dtype] * max(1.0, scale), (what, err, scale)


def _check_layers(model, ids, dtype) -> None:
    with torch.no_grad():
        tr = model.forward(ids, record="all")
    ex = StructuredExecutor(model, dtype)
    for li in range(len(model.layers)):
        x_in = tr.residuals[li]
        before = x_in.clone()
        a, f, x = ex.layer(li, x_in, model.attention, model.beta)
        assert torch.equal(x_in, before)  # the input is not modified
        for got, want, what in ((a, tr.after_attn[li], "after attention"), (f, tr.after_ffn[li], "after FFN"),
                                (x, tr.residuals[li + 1], "after norms")):
            scale = max(float(x_in.abs().max()), float(want.abs().max()))
            _close(got, want, scale, dtype, f"{model.layers[li].name}: {what}")
    st_tr = ex.forward(ids, record="final")
    for name, z in tr.readouts.items():
        _close(st_tr.readouts[name], z, float(z.abs().max()) * (len(model.layers) + 1), dtype, f"readout {name}")


@pytest.mark.parametrize("name, attention", _cases())
def test_every_construction_layer_by_layer(name, attention):
    """float64 on two inputs; float32 (the same weights materialised in float32) on the first."""
    seeds = (0, 1) if registry.get(name).input_kind != "none" else (0,)  # the seed picks the HMM / mixture
    for seed in seeds:
        model, ids = _entry_model(name, attention, seed)
        _check_layers(model, ids, torch.float64)
        if seed == 0:
            _check_layers(model.materialise(torch.float32), ids, torch.float32)


def test_every_registered_construction_is_covered():
    names = {n for n, _ in _cases()}
    assert {"exact-filter", "window", "bayes-multitask", "icl", "memory-kernel", "adaptive-memory"} <= names


@pytest.mark.parametrize("name, params", [("window", {"readout": "product"}), ("icl", {"features": "concat"})])
def test_construction_variants_layer_by_layer(name, params):
    e = registry.get(name)
    parser = argparse.ArgumentParser()
    e.add_cli_arguments(parser)
    values = {**e.param_values(parser.parse_args([])), **params}
    tokens = e.parse_tokens(e.default_tokens)
    source = zoo.make("dirichlet", 3, 2, seed=2) if e.input_kind == "hmm" else zoo.make_mixture("dirichlet", 2, 2, 2, seed=2)
    model = e.build(source, tokens, attention="hard", beta=None, **values)
    _check_layers(model, model.check_input_ids(model.codec.encode(tokens)), torch.float64)


def test_h1_runs_as_gathers_and_batched_matrix_products():
    """The plan read off H1's weights: copy heads as gathers, the product FFN as one batched matmul per layer."""
    from constructions.exact_filter import build

    model = build(zoo.make("sticky", 4, 3, seed=0), 20)
    ex = StructuredExecutor(model)
    for layer, plan in zip(model.layers, ex.plans):
        assert [h.vo.kind for h in plan.heads] == ["copy"] and plan.heads[0].positional
        assert isinstance(plan.ffn, BilinearPlan) and plan.ffn.rest is None and plan.ffn.wide is None
    specs = [t.spec for t in ex.plans[0].ffn.terms]
    assert sum(BilinearPlan._is_matmul(s) for s in specs) == 1, specs
    assert ex.plans[-1].ffn.terms[0].spec == "ab,b->b"  # filtered[j] = sum_i F[i,j] emis[j]
    assert all(h.shared_weights(22, "hard", None)[0] == "gather" for p in ex.plans for h in p.heads)


# ---------------------------------------------------------------------------------------------- a toy construction
def _toy_model(seed: int, attention: str) -> ConstructedTransformer:
    """Blocks and units not used by any registered construction: a transposed product ``F^T Q``, an outer product,
    a partial (non-einsum) group, a unit with two-coordinate rows, a content head, a ReLU FFN and a norm."""
    rng = np.random.default_rng(seed)
    n = 3
    lay = Layout()
    lay.add("Q", (n, n))
    lay.add("F", (n, n))
    lay.add("v", n)
    lay.add("outer", (n, n))
    lay.add("one", 1)
    lay.add("key", 1)
    lay.add("misc", 2)
    lay.freeze()
    fr = lambda: Fraction(int(rng.integers(1, 5)), int(rng.integers(1, 4)))  # noqa: E731
    W_E = frac_zeros(4, lay.width)
    for r in range(4):
        for c in range(lay.width):
            W_E[r, c] = fr()
        W_E[r, lay.index("one")] = Fraction(1)
    bb = BilinearBuilder(lay)
    for i in range(n):
        for j in range(n):
            for k in range(n):  # (F^T Q)[i, j] = sum_k F[k, i] Q[k, j] -> Q[i, j], coefficient 1/2
                bb.unit(("F", k, i), ("Q", k, j), [(("Q", i, j), Fraction(1, 2))])
            bb.unit(("v", i), ("v", j), [(("outer", i, j), 1)])  # outer product v v^T
    bb.unit(("Q", 0, 0), ("v", 1), [(("misc", 0), 3)])  # a lone product: the gathered path
    bb.unit(("Q", 1, 1), ("v", 2), [(("misc", 0), 3), (("misc", 1), -1)])
    ffn = bb.build()
    W_1 = SparseFrac(ffn.W_1.shape, {k: v for (k, v) in ffn.W_1._d.items()})
    W_2 = SparseFrac(ffn.W_2.shape, {k: v for (k, v) in ffn.W_2._d.items()})
    u = ffn.width - 1  # widen the last unit's first factor: the dense-bilinear path
    W_1[u, lay.index("v", 0)] = Fraction(1, 3)
    ffn = dataclasses.replace(ffn, W_1=W_1, W_2=W_2)
    D, P = lay.width, 12
    content = AttentionHead(
        as_frac_array([[0] * lay.index("key") + [1] + [0] * (D - lay.index("key") - 1)]),
        as_frac_array([[0] * lay.index("key") + [Fraction(1, 2)] + [0] * (D - lay.index("key") - 1)]),
        SparseFrac((n, D), {(i, lay.index("v", i)): 1 for i in range(n)}),
        SparseFrac((D, n), {(lay.index("misc", 1), i): Fraction(i + 1, 2) for i in range(n)}),
        as_frac_array([Fraction(-l, 4) for l in range(P)]), name="content",
    )
    fetch = copy_head(lay, "Q", "F", lag_bias(1, P), name="lag1")
    m = 4
    relu = ReLUFFN(
        SparseFrac((m, D), {(h, lay.index("misc", h % 2)): Fraction(h - 1) for h in range(m)}),
        as_frac_array([Fraction(h - 2, 3) for h in range(m)]),
        SparseFrac((D, m), {(lay.index("key"), h): Fraction(1, h + 1) for h in range(m)}),
        frac_zeros(D),
    )
    layers = [
        Layer("attn", (fetch, content), ffn, (ProjectiveNorm("Q"),)),
        Layer("relu", (), relu, ()),
        Layer("attn2", (content,), None, (ProjectiveNorm("outer", "v"),)),
    ]
    ro = readout(lay, "z", [(i, ("Q", i, j), 1) for i in range(n) for j in range(n)], (n,))
    spec = spec_for("toy", lay, layers, max_positions=P, attention=attention, beta=2.0 if attention == "softmax" else None,
                    provenance="test")

    class Codec:
        def encode(self, tokens):
            return np.asarray(tokens)

        def decode(self, model, trace, tokens):
            return {}

    return ConstructedTransformer(lay, Embedding(W_E, ("a", "b", "c", "d")), layers, [ro], spec, Codec(),
                                  attention=attention, beta=2.0 if attention == "softmax" else None)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), attention=st.sampled_from(["hard", "softmax"]),
       ids=st.lists(st.integers(0, 3), min_size=1, max_size=12))
def test_structure_is_read_off_the_weights_of_any_construction(seed, attention, ids):
    model = _toy_model(seed, attention)
    ex = StructuredExecutor(model)
    plan = ex.plans[0].ffn
    specs = sorted(t.spec for t in plan.terms)
    assert specs == ["a,b->ab", "ab,ac->bc"], specs  # outer product, transposed product (F^T Q)
    assert plan.rest is not None and plan.wide is not None
    _check_layers(model, np.array([ids]), torch.float64)
