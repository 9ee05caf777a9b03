"""The fast exact backend (python-flint) against the readable Fraction references, bit for bit: the forward filter
(hmm.fastq) and the construction executor (constructions.exact_fast) on H1, H3 and the window construction."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.exact import run_exact
from constructions.exact_fast import exact_outputs_agree, run_exact_fast
from hmm.errors import HmmtxError
from hmm.fastq import to_fmpq, to_fraction
from hmm.reference import forward_filter_exact
from hmm.sampling import sample
from hmm.testing import rational_hmms, rational_mixtures, token_sequences
from hmm.zoo import make

FIELDS = ("filtered_probs", "predicted_probs", "next_token_probs")


@settings(deadline=None, max_examples=40)
@given(st.data())
def test_flint_forward_filter_equals_fraction_filter(data):
    hmm = data.draw(rational_hmms(max_states=4, max_obs=3))
    x = data.draw(token_sequences(hmm, max_len=20))
    a = forward_filter_exact(hmm, x, backend="fraction")
    b = forward_filter_exact(hmm, x, backend="flint")
    for f in FIELDS:
        assert getattr(b, f).dtype == object and all(isinstance(v, Fraction) for v in getattr(b, f).ravel())
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.marginal_loglik == b.marginal_loglik


def test_flint_filter_raises_on_probability_zero_like_the_reference():
    from hmm.model import HMM

    hmm = HMM.from_arrays(["1", "0"], [["0", "1"], ["1", "0"]], [["1", "0"], ["0", "1"]])
    x = np.array([0, 1, 1, 0])  # state 0 emits 0, then state 1 must emit 1, then state 0 cannot emit 1
    msgs = []
    for backend in ("fraction", "flint"):
        with pytest.raises(HmmtxError, match="probability zero") as e:
            forward_filter_exact(hmm, np.stack([x, x]), backend=backend)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


def test_conversions_are_exact():
    for v in (Fraction(0), Fraction(-7, 3), Fraction(3**200, 2**300 + 1), Fraction(0.1)):
        assert to_fraction(to_fmpq(v)) == v


@settings(deadline=None, max_examples=15)
@given(st.data())
def test_fast_executor_matches_the_fraction_executor_on_h1(data):
    from constructions.exact_filter import build

    hmm = data.draw(rational_hmms(max_states=3, max_obs=3))
    x = data.draw(token_sequences(hmm, max_len=10))
    model = build(hmm, len(x), filtered=data.draw(st.booleans()))
    assert exact_outputs_agree(model, x)


@settings(deadline=None, max_examples=8)
@given(st.data())
def test_fast_executor_matches_the_fraction_executor_on_h3(data):
    from constructions.bayes_multitask import build

    mix = data.draw(rational_mixtures(max_tasks=2, max_states=2, max_obs=2))
    segs = data.draw(st.lists(st.lists(st.integers(0, mix.num_obs - 1), min_size=1, max_size=3), min_size=1, max_size=3))
    ctx = [np.array(s) for s in segs]
    model = build(mix, sum(len(s) for s in segs) + len(segs) - 1)
    assert exact_outputs_agree(model, ctx)


@pytest.mark.parametrize("readout", ["lookup", "product"])
def test_fast_executor_matches_the_fraction_executor_on_the_window(readout):
    """Content heads, ReLU/bilinear FFNs and several norms run on the generic path."""
    from constructions.window_filter import build

    hmm = make("dirichlet", 2, 2, seed=3, rational=True)
    x = sample(hmm, 1, 7, seed=4).tokens[0]
    model = build(hmm, 3, max_len=7, readout=readout)
    assert exact_outputs_agree(model, x)


def test_h1_bit_exact_at_s8_t256():
    """Bit-exactness beyond the Fraction executor's reach: H1 (fast executor) = the exact filter (flint)."""
    from constructions.exact_filter import build

    S, T = 8, 256
    hmm = make("dirichlet", S, 3, seed=S, rational=True)
    x = sample(hmm, 1, T, seed=1).tokens[0]
    out = build(hmm, T, filtered=False).run(x, "exact", record="final").outputs
    ref = forward_filter_exact(hmm, x)
    assert np.array_equal(out["next_token_probs"], ref.next_token_probs)
    assert np.array_equal(out["predicted_probs"], ref.predicted_probs)


@settings(deadline=None, max_examples=3)
@given(st.data())
def test_h1_bit_exact_property_up_to_s8_t256(data):
    """Hypothesis over S <= 8 and T <= 256, ill-conditioned HMMs included (zeros, entries down to 1e-12, sticky
    chains): H1 run by the fast exact executor equals the exact filter (flint), bit for bit."""
    from constructions.exact_filter import build
    from hmm.testing import ill_conditioned_hmms, long_token_sequences

    hmm = data.draw(st.one_of(rational_hmms(min_states=5, max_states=8, max_obs=3),
                              ill_conditioned_hmms(max_states=8, max_obs=3)))
    T = data.draw(st.sampled_from([1, 17, 128, 256]))
    x = data.draw(long_token_sequences(hmm, T))
    out = build(hmm, T, filtered=False).run(x, "exact", record="final").outputs
    ref = forward_filter_exact(hmm, x)
    assert np.array_equal(out["next_token_probs"], ref.next_token_probs)
    assert np.array_equal(out["predicted_probs"], ref.predicted_probs)


def test_fast_executor_records_final_only():
    from constructions.exact_filter import build

    hmm = make("dirichlet", 2, 2, seed=0, rational=True)
    model = build(hmm, 4)
    with pytest.raises(HmmtxError, match="record='final'"):
        run_exact_fast(model, model.codec.encode(np.array([0, 1, 0, 1])), record="all")
    # record="all" keeps the readable executor's full trace
    tr = model.run(np.array([0, 1, 0, 1]), "exact", record="all").trace
    assert tr.after_ffn[0] is not None and np.array_equal(
        tr.readouts["next_token"], run_exact(model, model.codec.encode(np.array([0, 1, 0, 1]))).readouts["next_token"])


# ------------------------------------------------------------------ the lazy integer-row flint filter, bit for bit
TINY = [Fraction(1, 10**k) for k in (3, 6, 9, 12)]


@st.composite
def ill_conditioned_hmms(draw, max_states: int = 5, max_obs: int = 3):
    """Entries among 0, 1 and 1e-3 .. 1e-12 (rows normalised exactly), sticky rows ``1 - eps`` (eps down to 1e-9),
    S = 1 allowed: zeros in A and B and wildly different denominators in one matrix."""
    from hmm.model import HMM

    def rows(n, cols):
        out = []
        for i in range(n):
            if cols > 1 and n == cols and draw(st.booleans()):
                eps = draw(st.sampled_from([Fraction(1, 10**k) for k in (3, 6, 9)]))
                out.append([1 - eps if j == i else eps / (cols - 1) for j in range(cols)])
                continue
            w = draw(st.lists(st.sampled_from([Fraction(0), Fraction(1), Fraction(1, 3)] + TINY), min_size=cols,
                              max_size=cols))
            if sum(w) == 0:
                w[draw(st.integers(0, cols - 1))] = Fraction(1)
            out.append([v / sum(w) for v in w])
        return out

    S, V = draw(st.integers(1, max_states)), draw(st.integers(1, max_obs))
    return HMM.from_arrays(rows(1, S)[0], rows(S, S), rows(S, V), exact=True)


def _assert_bit_identical(a, b):
    """Every entry: equal (the lazy ``==``), the same lowest-terms pair, the same float and hash; likelihood equal."""
    for f in FIELDS:
        ra, rb = getattr(a, f), getattr(b, f)
        assert ra.shape == rb.shape and rb.dtype == object, f
        assert np.array_equal(ra, rb) and np.array_equal(rb, ra), f
        for u, v in zip(ra.ravel(), rb.ravel()):
            assert isinstance(v, Fraction)
            assert float(v) == float(u) and bool(v) == bool(u), (f, u, v)
            assert (v.numerator, v.denominator) == (u.numerator, u.denominator), (f, u, v)
            assert hash(v) == hash(u)
    assert np.array_equal(a.marginal_loglik, b.marginal_loglik)


@settings(deadline=None, max_examples=40)
@given(st.data())
def test_lazy_flint_filter_is_bit_identical_on_ill_conditioned_hmms(data):
    hmm = data.draw(ill_conditioned_hmms())
    x = data.draw(token_sequences(hmm, max_len=24))
    _assert_bit_identical(forward_filter_exact(hmm, x, backend="fraction"), forward_filter_exact(hmm, x, backend="flint"))


@pytest.mark.parametrize("S,eps,T", [(1, None, 300), (3, Fraction(1, 10**9), 200), (4, Fraction(1, 10**6), 150)])
def test_lazy_flint_filter_long_sticky_chains_and_one_state(S, eps, T):
    """S = 1 (every output exactly 1 or B's row) and sticky chains read against their grain, at T in the hundreds
    (integers of thousands of digits), bit for bit."""
    from hmm.model import HMM

    if S == 1:
        hmm = HMM.from_arrays([1], [[1]], [[Fraction(1, 3), Fraction(2, 3)]], exact=True)
    else:
        A = [[1 - eps if j == i else eps / (S - 1) for j in range(S)] for i in range(S)]
        B = [[Fraction(1, 10**12) if v == i % 2 else 1 - Fraction(1, 10**12) for v in range(2)] for i in range(S)]
        hmm = HMM.from_arrays([Fraction(1, S)] * S, A, B, exact=True)
    x = np.arange(T) % 2  # against the grain: every token is unlikely in the state that just emitted the other one
    _assert_bit_identical(forward_filter_exact(hmm, x, backend="fraction"), forward_filter_exact(hmm, x, backend="flint"))


def test_lazy_flint_filter_on_a_float_hmm_and_a_batch():
    """A float HMM (exact binary images: power-of-two denominators near 2^-1074 possible) and an (N, T) batch."""
    hmm = make("dirichlet", 5, 3, seed=2, concentration=0.2)
    x = sample(hmm, 3, 40, seed=5).tokens
    _assert_bit_identical(forward_filter_exact(hmm, x, backend="fraction"), forward_filter_exact(hmm, x, backend="flint"))


def test_lazy_fraction_behaves_like_its_reduced_fraction():
    """LazyFraction p/q (unreduced) against Fraction(p, q): equality both ways (with Fractions, ints, floats, other
    lazies), ordering, arithmetic, hash, bool, float, str, pickling (a plain Fraction) and copying."""
    import copy
    import math
    import pickle

    from hmm.fastq import LazyFraction

    cases = [(0, 7), (6, 4), (3 * 10**40, 9 * 10**40), (5, 1), (10**30 + 1, 3), (2**80, 2**81), (-6, 4), (6, -9),
             (2 * 3**50 * 7, 3**60 * 14)]
    for p, q in cases:
        z, f = LazyFraction(p, q), Fraction(p, q)
        assert type(f) is Fraction and isinstance(z, Fraction)
        assert z == f and f == z and not (z != f) and z == LazyFraction(2 * p, 2 * q)
        assert (z == f + Fraction(1, 10**50)) is False and (f + Fraction(1, 10**50) == z) is False
        assert (z == 1) == (f == 1) and (z == 0.5) == (f == 0.5) and (z == math.nan) is False
        assert (z < Fraction(1, 2)) == (f < Fraction(1, 2)) and (z >= 0) == (f >= 0) and (z <= 10**31)
        assert z - f == 0 and z * 2 == f * 2 and z + Fraction(1, 3) == f + Fraction(1, 3) and -z == -f
        assert float(z) == float(f) and bool(z) == bool(f) and hash(z) == hash(f) and str(z) == str(f)
        assert (z.numerator, z.denominator) == (f.numerator, f.denominator)
        assert LazyFraction(f) == f and (LazyFraction(f).numerator, LazyFraction(f).denominator) == (f.numerator, f.denominator)
        back = pickle.loads(pickle.dumps(z))
        assert type(back) is Fraction and back == f
        assert copy.copy(z) is z and copy.deepcopy(z) is z
        assert {z: 1}[f] == 1


MIXTURE_FIELDS = ("next_token_probs", "task_posterior", "state_predicted")


@settings(deadline=None, max_examples=30)
@given(st.data())
def test_flint_bayes_predictive_is_bit_identical(data):
    """H3's exact reference: the integer-row flint recursion (SEP resets included) = the Fraction recursion, entry
    for entry in lowest terms; zeros allowed (positive=False), so impossible contexts raise the same error."""
    from hmm.mixture import bayes_predictive_exact

    mix = data.draw(rational_mixtures(max_tasks=3, max_states=3, max_obs=3, positive=data.draw(st.booleans())))
    segs = data.draw(st.lists(st.lists(st.integers(0, mix.num_obs - 1), min_size=1, max_size=8), min_size=1, max_size=4))
    ctx = [np.array(s) for s in segs]
    try:
        a = bayes_predictive_exact(mix, ctx, backend="fraction")
    except HmmtxError as e:
        with pytest.raises(HmmtxError) as e2:
            bayes_predictive_exact(mix, ctx, backend="flint")
        assert str(e2.value) == str(e)
        return
    b = bayes_predictive_exact(mix, ctx, backend="flint")
    for f in MIXTURE_FIELDS:
        ra, rb = getattr(a, f), getattr(b, f)
        assert ra.shape == rb.shape and np.array_equal(rb, ra), f
        assert [(v.numerator, v.denominator) for v in rb.ravel()] == [(u.numerator, u.denominator) for u in ra.ravel()]
        assert [float(v) for v in rb.ravel()] == [float(u) for u in ra.ravel()]
    assert a.marginal_loglik == b.marginal_loglik and np.array_equal(a.is_sep, b.is_sep)
