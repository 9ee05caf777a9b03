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
