"""adaptive-memory (Wang & E Task II reconstruction): exactness in hard mode, the softmax leakage bound, bad input."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions import registry
from constructions.adaptive.bound import gaps, leak_curve, min_gap
from constructions.adaptive.model import bias_table, schedule
from constructions.adaptive.spec import LagFunction, lags_at, make_spec, make_tokens, parse_lags, reference
from constructions.adaptive_memory import build
from hmm.errors import HmmtxError
from verify.cli import main

ENTRY = registry.get("adaptive-memory")


def _np(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


@st.composite
def targets(draw, readouts=("relu", "identity")):
    """A random adaptive-memory target (kind, V, M, lag tables incl. sticky ones: every symbol the same lag, lag 1,
    the longest lag) and random tokens (values on k/8, including all-zero and all-equal symbol runs)."""
    kind = draw(st.sampled_from(["type1", "type2"]))
    V = draw(st.integers(1, 3))
    M = draw(st.integers(1, 3 if kind == "type2" else 3))
    T_lag = draw(st.one_of(st.integers(1, 9), st.integers(10, 80)))  # short and long lag ranges
    style = draw(st.sampled_from(["random", "constant", "extreme"]))
    tables = []
    for k in range(M):
        arity = 1 if kind == "type1" else k + 1
        n = V**arity
        if style == "constant":
            vals = [T_lag] * n
        elif style == "extreme":
            vals = [draw(st.sampled_from([1, T_lag])) for _ in range(n)]
        else:
            vals = [draw(st.integers(1, T_lag)) for _ in range(n)]
        tables.append(LagFunction(arity, tuple(vals), V))
    spec = make_spec(kind=kind, V=V, lags=tables, rpe=draw(st.sampled_from(["log", "lin"])),
                     readout=draw(st.sampled_from(readouts)), ffn_width=draw(st.sampled_from([4, 16])),
                     seed=draw(st.integers(0, 5)))
    T = draw(st.integers(1, 10))
    syms = draw(st.lists(st.integers(0, V - 1), min_size=T, max_size=T))
    vals = draw(st.lists(st.integers(-8, 8), min_size=T, max_size=T))
    return spec, make_tokens(np.array([syms]), [[Fraction(v, 8) for v in vals]])


def _err(out, ref) -> float:
    return max(float(np.max(np.abs(_np(out[n]).astype(np.float64) - np.asarray(getattr(ref, n), dtype=np.float64))))
               for n in ("y", "memory", "lag"))


@given(case=targets())
@settings(max_examples=12)  # exact executor over Fractions: ~0.2-0.5 s per example
def test_hard_mode_is_bit_exact_with_the_fraction_reference(case) -> None:
    spec, tok = case
    model = build(spec, tokens=tok, max_len=tok.shape[1])
    res = model.run(tok, mode="exact")
    ref = reference(spec, tok, exact=True)
    assert all(a == b for a, b in zip(res.outputs["y"].ravel(), ref.y.ravel()))
    assert all(a == b for a, b in zip(res.outputs["memory"].ravel(), ref.memory.ravel()))
    assert all(a == int(b) for a, b in zip(res.outputs["lag"].ravel(), ref.lag.ravel()))
    assert model.claimed_bound(tok, "exact").value == 0
    # float64 hard mode: the same argmax, so the same outputs up to the stated allowance
    rf = model.run(tok, mode="float64")
    assert _err(rf.outputs, reference(spec, tok)) <= model.claimed_bound(tok, "float64").value


@given(case=targets(readouts=("relu", "identity", "tanh")), beta=st.sampled_from([0.3, 1.0, 2.5, 6.0, 30.0]),
       mode=st.sampled_from(["float64", "float32"]))
@settings(max_examples=25)
def test_softmax_error_within_the_claimed_bound(case, beta, mode) -> None:
    spec, tok = case
    model = build(spec, tokens=tok, max_len=tok.shape[1], attention="softmax", beta=beta)
    res = model.run(tok, mode=mode)
    b = model.claimed_bound(tok, mode)
    err = _err(res.outputs, reference(spec, tok))
    assert err <= b.value, (err, b)
    if math.isfinite(b.value):
        assert b.leakage <= b.value and b.roundoff >= 0


@given(case=targets(readouts=("relu", "identity", "tanh")), beta=st.sampled_from([1.0, 4.0, 12.0]))
@settings(max_examples=15)
def test_exact_leakage_sums_never_exceed_the_closed_form(case, beta) -> None:
    from constructions.adaptive.bound import closed_form_bound, gap_formula, position_bounds

    spec, tok = case
    model = build(spec, tokens=tok, max_len=tok.shape[1], attention="softmax", beta=beta)
    pb = position_bounds(model, tok, "exact")  # the mathematical leakage (no float allowance)
    n = spec.padding + tok.shape[1]
    u = spec.padding + np.arange(tok.shape[1])
    closed = u * math.exp(-beta * gap_formula(spec))  # the window of position u has u + 1 keys
    # 1e-6: the table holds the float64 value of P log s, the closed form the exact log
    assert np.all(pb.leak <= np.minimum(closed, 1.0)[None, :, None] * (1 + 1e-6) + 1e-300)
    xmax = float(max(abs(v) for v in tok.values.ravel()))
    cf = closed_form_bound(spec, n, beta, xmax)
    if math.isfinite(cf):
        assert pb.y.max() <= cf * (1 + 1e-6) + 1e-12


def test_bound_is_not_vacuous_and_tightens_with_beta() -> None:
    spec = make_spec(kind="type2", V=2, lags="random", M=3, lag_range=6, lag_seed=3, rpe="log", readout="identity")
    rng = np.random.default_rng(1)
    tok = make_tokens(rng.integers(0, 2, 40), [Fraction(int(v), 8) for v in rng.integers(-8, 9, 40)])
    ref = reference(spec, tok)
    prev = math.inf
    for beta in (4.0, 8.0, 16.0, 40.0):
        m = build(spec, tokens=tok, attention="softmax", beta=beta)
        b = m.claimed_bound(tok, "float64")
        err = _err(m.run(tok, mode="float64").outputs, ref)
        assert err <= b.value < prev
        prev = b.value
    assert prev < 1e-9  # beta = 40: leakage e^(-40 gap), gap about 1
    assert err > 0  # softmax leaks: the comparison is not trivially 0 = 0
    # at a small beta the nested lags can break (snap tolerance), and the bound says so instead of lying
    m = build(spec, tokens=tok, attention="softmax", beta=0.2)
    assert math.isinf(m.claimed_bound(tok, "float64").value)


@pytest.mark.parametrize("rpe", ["log", "lin"])
def test_score_peaks_at_the_lag_and_the_leakage_closed_form(rpe) -> None:
    spec = make_spec(kind="type1", V=1, lags="7", rpe=rpe)
    n = 60
    bias, mask = bias_table(spec, n)
    P = spec.sharpness
    for g in range(1, 8):
        d = gaps(spec, g, n, mask)
        assert d[g] == 0 and np.all(np.delete(d, g) > 0)
        # exact check of the rounded lower bounds against the Fraction scores
        for s in (0, 1, g - 1, g + 1, n - 1):
            if s == g or s < 0:
                continue
            exact = (bias[g] - bias[s] - P * (Fraction(g - s, g))) if rpe == "log" else P * (s - g) ** 2
            assert d[s] <= exact
        gap = min_gap(spec, g, n, mask)
        for beta in (0.5, 3.0):
            leak = leak_curve(spec, g, n, beta, mask)
            assert np.all(leak[g:] <= (np.arange(g, n)) * math.exp(-beta * gap) + 1e-15)
    if rpe == "log":  # the default P = 2 T^2 makes the gap at the longest lag about 1
        assert 0.5 < min_gap(spec, 7, n, mask) < 1.5


def test_type2_needs_m_plus_1_layers_and_the_greedy_shallow_model_errs() -> None:
    spec = make_spec(kind="type2", V=2, lags="1,4;2,3,5,1;3,1,2,4,4,2,1,3", rpe="log", readout="identity")
    assert schedule(spec).layers == 4
    rng = np.random.default_rng(0)
    tok = make_tokens(rng.integers(0, 2, (4, 16)), [[Fraction(int(v), 4) for v in r] for r in rng.integers(-4, 5, (4, 16))])
    ref = reference(spec, tok, exact=True)
    errs = {}
    for L in (2, 3, 4):
        m = build(spec, tokens=tok, layers=L)
        out = m.run(tok, mode="exact").outputs
        errs[L] = max(abs(a - b) for a, b in zip(out["y"].ravel(), ref.y.ravel()))
        assert m.spec.layers == L
    assert errs[4] == 0 and errs[2] > 0 and errs[3] > 0
    assert math.isinf(build(spec, tokens=tok, layers=2).claimed_bound(tok, "exact").value)
    with pytest.raises(HmmtxError, match="2..4 layers"):
        build(spec, tokens=tok, layers=5)


def test_reference_follows_the_definition() -> None:
    spec = make_spec(kind="type2", V=2, lags="2,1;1,3,2,1", rpe="lin", readout="identity")
    tok = make_tokens(np.array([1, 0, 1, 1]), [Fraction(1, 2), Fraction(-1), Fraction(1, 4), Fraction(3, 4)])
    ref = reference(spec, tok, exact=True)
    # t=3: c_t = 1 -> t_1 = g_1(1) = 1 -> fetched c_2 = 1 -> t_2 = g_2(1, 1) = 1 (table index 3)
    assert list(ref.lag[3]) == [1, 1] and ref.y[3] == Fraction(1, 4) + Fraction(1, 4)
    # t=0 (c=1): t_1 = 1 reads the padding token (0, 0); t_2 = g_2(1, 0) = 2: padding again
    assert list(ref.lag[0]) == [1, 2] and ref.y[0] == 0
    syms = [0, 0] + [1, 0, 1, 1]
    assert lags_at(spec, syms, 5) == [1, 1]


@pytest.mark.parametrize("args, msg", [
    (["--lags", "1,2,3.5"], "not an integer"),
    (["--lags", "random", "--memories", "0"], "M >= 1"),
    (["--lags", ";"], "M = 0"),
    (["--lags", "1,2,9", "--pad", "3"], "reaches before the padded sequence"),
    (["--lags", "0,1,2"], "outside 1..4096"),
    (["--lags", "1,2"], "needs 3 entries"),
    (["--kind", "type2", "--lags", "1,2,3;1,2,3"], "needs 9 entries"),
    (["--symbols", "2"], "out of range for V=2"),
    (["--lags", "1,x,2"], "not a number"),
    (["--readout", "tanh", "--mode", "exact"], "tanh readout has no exact target"),
])
def test_bad_parameters_one_line_exit_2(capsys, args, msg) -> None:
    rc = main(["run", "adaptive-memory", "--tokens", "0:1/2 2:-1 1:1/4", *args])
    out, err = capsys.readouterr()
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_tokens_exit_2(capsys) -> None:
    for toks, msg in (("0:3/2", "outside [-1, 1]"), ("0", "symbol:value"), ("a:1", "not an integer")):
        assert main(["run", "adaptive-memory", "--tokens", toks]) == 2
        assert msg in capsys.readouterr().err


def test_cli_run_json_and_inspect(tmp_path, capsys) -> None:
    js = tmp_path / "r.json"
    rc = main(["run", "adaptive-memory", "--tokens", "0:1/2 2:-1 1:1/4 0:0 1:1 2:-1/2", "--kind", "type2",
               "--memories", "2", "--mode", "exact", "--json", str(js)])
    assert rc == 0
    rep = json.loads(js.read_text())
    assert rep["within_bound"] and rep["bit_identical"] is True
    rc = main(["run", "adaptive-memory", "--tokens", "0:1/2 2:-1 1:1/4 0:0 1:1 2:-1/2", "--rpe", "lin",
               "--attention", "softmax", "--beta", "2", "--json", str(js)])
    rep = json.loads(js.read_text())
    assert rc == 0 and rep["within_bound"] and 0 < rep["max_abs_error"] <= rep["bound"]["value"]
    capsys.readouterr()
    assert main(["inspect", "adaptive-memory", "--kind", "type2", "--memories", "2", "--symbols", "2"]) == 0
    out = capsys.readouterr().out
    assert "W_pos" in out and "slope" in out and "layer2" in out


def test_parse_lags_round_trip() -> None:
    g = parse_lags("3,1;2,2", "type1", 2)
    assert [t.table for t in g] == [(3, 1), (2, 2)] and g[0]((1,)) == 1


def test_positional_embedding_shape_is_validated_and_runs_in_both_executors() -> None:
    from constructions.blocks import Embedding, frac_zeros

    with pytest.raises(HmmtxError, match="W_pos must have shape"):
        Embedding(frac_zeros(2, 3), ("a", "b"), frac_zeros(4, 2))
    spec = make_spec(kind="type1", V=2, lags="1,3", rpe="log", readout="identity")
    tok = make_tokens(np.array([0, 1, 1, 0, 1]), [Fraction(1, 4)] * 5)
    m = build(spec, tokens=tok)
    ex, fl = m.run(tok, mode="exact").trace, m.run(tok, mode="float64").trace
    pos = m.layout.index("pos")
    assert [int(v) for v in ex.residuals[0][0, :, pos]] == list(range(spec.padding + 5))
    assert np.array_equal(_np(fl.residuals[0][0, :, pos]), np.arange(spec.padding + 5, dtype=float))
    with pytest.raises(HmmtxError, match="positions"):  # longer than the positional embedding covers
        m.run(make_tokens(np.zeros(200, dtype=int), [Fraction(0)] * 200), mode="float64")


def test_verify_sweep_covers_both_types_both_rpes_every_mode_and_softmax() -> None:
    from verify import suite

    (a,) = [x for x in suite.adapters() if x.name == "adaptive-memory"]
    cases = a.cases(suite.QUICK)
    labels = {c.family for c in cases}
    assert {l.split("/")[0] for l in labels} == {"I-log", "I-lin", "II-log", "II-lin"}
    assert {c.dtype for c in cases} == {"exact", "float64", "float32"}
    assert any(l.endswith("beta=2") for l in labels) and all(c.dtype != "exact" for c in cases if "beta" in c.family)
    res = suite.run_case(a, next(c for c in cases if c.family == "II-log/hard" and c.dtype == "exact"))
    assert res.status == "pass" and res.exact_ok is True
    res = suite.run_case(a, next(c for c in cases if c.family == "II-lin/beta=2"))
    assert res.status == "pass" and 0 < res.error <= res.bound + res.allowance
