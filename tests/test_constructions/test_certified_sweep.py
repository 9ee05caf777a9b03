"""Ill-conditioned sweep (entries down to 1e-12, sticky chains with eps down to 1e-9, zeros in A and B, S = 1) for
H1 and H3 (the window's: test_window_ill_conditioned.py): float64 errors <= 1e-12 against the exact reference and within the bound stated in advance;
in certified mode (float32 and float64) the exact reference lies inside the ball-arithmetic enclosure and the
certified round-off is at least the true error.

Short sequences compare against the exact rational references (Fractions). Long ones (H1 and H3 to T = 4096) compare
against rigorous 256-bit ball enclosures of the same references (:mod:`hmm.ball`; tested to contain the rationals in
tests/test_hmm/test_ball_reference.py): the exact reference lies in its ball R, so ``R`` inside the certificate's
ball proves containment, and ``max |f - v|`` over ``R`` bounds the error from above (docs/certified.md)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.certified import certified_roundoff, contains, enclose, exact_error
from hmm.ball import bayes_predictive_ball, forward_filter_ball
from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture
from hmm.model import HMM
from hmm.reference import forward_filter_exact
from hmm.testing import ill_conditioned_hmms, ill_conditioned_mixtures, long_token_sequences, token_sequences

ill_hmms = ill_conditioned_hmms
H1_NAMES = ["next_token_probs", "predicted_probs", "filtered_probs"]
H3_NAMES = ["next_token_probs", "task_posterior", "state_predicted"]


def _refs(hmm: HMM, x: np.ndarray) -> dict:
    r = forward_filter_exact(hmm, x)
    return {"next_token_probs": r.next_token_probs, "predicted_probs": r.predicted_probs,
            "filtered_probs": r.filtered_probs}


def _check_float_and_certified(model, x, refs: dict, names: list[str], *, bound_modes=("float64", "float32"),
                               derived: bool = False, exact_refs=None) -> dict:
    """Certified mode in float64 and float32 (the reference inside every ball, the certified round-off at least the
    error) and, for ``bound_modes``, the claimed bound (``derived=True``: in float64 its round-off part must be the
    derived one, not the trivial fallback); float64 errors <= 1e-12. Returns {mode: (error, certified round-off, bound)}.

    With ball references ``refs``, ``exact_refs()`` (the rationals) decides containment when a certificate ball is
    narrower than the reference ball (an exact point: the construction's arithmetic was exact, e.g. two identical
    tasks give a posterior of exactly 1/2, while the reference ball is not)."""
    cert = enclose(model, x)
    if not contains(cert, refs, names):
        assert exact_refs is not None
        refs = exact_refs()  # and measure the error against the rationals too
        assert contains(cert, refs, names)  # the exact reference lies in every ball
    seen = {}
    for mode in ("float64", "float32"):
        try:
            out = model.run(x, mode, record="final").outputs
        except HmmtxError as e:
            # float32 only: a product of the run left float32's range (a normaliser underflowed to 0); the run
            # refuses with that reason instead of returning garbage (docs/certified.md). Never in float64.
            assert mode == "float32" and "underflowed" in str(e), e
            seen[mode] = None
            continue
        err = exact_error(out, refs, names)
        cr = certified_roundoff(cert, out, names)
        assert err <= cr  # the certificate is never below the true error
        bound = model.claimed_bound(x, mode) if mode in bound_modes else None
        if bound is not None:
            assert err <= bound.value, (mode, err, bound)
            assert not (derived and mode == "float64") or bound.roundoff_kind == "derived", bound
        if mode == "float64":
            assert err <= 1e-12
        seen[mode] = (err, cr, bound)
    return seen


@settings(deadline=None, max_examples=12)
@given(st.data())
def test_h1_ill_conditioned(data):
    from constructions.exact_filter import build

    hmm = data.draw(ill_hmms())
    x = data.draw(token_sequences(hmm, max_len=24))
    _check_float_and_certified(build(hmm, len(x)), x, _refs(hmm, x), ["next_token_probs", "predicted_probs",
                                                                      "filtered_probs"])


@settings(deadline=None, max_examples=6)
@given(st.data())
def test_h3_ill_conditioned(data):
    from constructions.bayes_multitask import build
    from hmm.mixture import bayes_predictive_exact

    mix = data.draw(ill_conditioned_mixtures())
    tasks = mix.tasks
    x = data.draw(token_sequences(tasks[0], max_len=10))  # possible under task 0, hence under the mixture
    ref = bayes_predictive_exact(mix, [x])
    refs = {"next_token_probs": ref.next_token_probs, "task_posterior": ref.task_posterior,
            "state_predicted": ref.state_predicted}
    _check_float_and_certified(build(mix, len(x)), [x], refs, list(refs))


def _h1_ball_refs(hmm: HMM, x: np.ndarray) -> dict:
    r = forward_filter_ball(hmm, x)
    return {"next_token_probs": r.next_token_probs, "predicted_probs": r.predicted_probs,
            "filtered_probs": r.filtered_probs}


def _sticky(eps: Fraction, S: int = 2) -> HMM:
    """A sticky chain that also emits its state with probability ``1 - eps``."""
    rows = [[1 - eps if j == i else eps / (S - 1) for j in range(S)] for i in range(S)]
    return HMM.from_arrays([Fraction(1, S)] * S, rows, rows, exact=True)


def _grain(T: int, V: int, k: int = 7) -> np.ndarray:
    """Blocks of ``k`` equal tokens cycling through the alphabet: against the grain of a sticky chain."""
    return np.array([(t // k) % V for t in range(T)])


@pytest.mark.parametrize("hmm", [
    HMM.from_arrays([1], [[1]], [[Fraction(1, 3), Fraction(2, 3)]], exact=True),  # S = 1
    _sticky(Fraction(1, 10**9)),  # eps = 1e-9, read against its grain
], ids=["S1", "sticky-1e-9"])
def test_h1_long_families(hmm):
    """T = 4096 on fixed families: float64 within the derived bound and <= 1e-12; certified in both precisions."""
    from constructions.exact_filter import build

    T = 4096
    x = _grain(T, hmm.num_obs)
    _check_float_and_certified(build(hmm, T), x, _h1_ball_refs(hmm, x), H1_NAMES, bound_modes=("float64",),
                               derived=True, exact_refs=lambda: _refs(hmm, x))


@settings(deadline=None, max_examples=1)
@given(st.data())
def test_h1_long_ill_conditioned(data):
    """T = 4096 on drawn ill-conditioned HMMs (ball references). The float64 bound is the derived one unless the
    construction itself reports its no-underflow condition failed (then it states the trivial bound 1)."""
    from constructions.exact_filter import build

    hmm = data.draw(ill_hmms())
    T = 4096
    x = data.draw(long_token_sequences(hmm, T))
    _check_float_and_certified(build(hmm, T), x, _h1_ball_refs(hmm, x), H1_NAMES, bound_modes=("float64",),
                               exact_refs=lambda: _refs(hmm, x))


def test_h1_sticky_against_exact_rationals():
    """The same long check against the Fraction reference itself (T = 256, eps = 1e-9): the ball references above
    stand in for it only because it is slow, not because the comparison is different."""
    from constructions.exact_filter import build

    hmm, T = _sticky(Fraction(1, 10**9)), 256
    x = _grain(T, 2)
    _check_float_and_certified(build(hmm, T), x, _refs(hmm, x), H1_NAMES, derived=True)


def _h3_ball_refs(mix: HMMMixture, x: np.ndarray) -> dict:
    r = bayes_predictive_ball(mix, [x])
    return {"next_token_probs": r.next_token_probs, "task_posterior": r.task_posterior,
            "state_predicted": r.state_predicted}


def _h3_refs(mix: HMMMixture, x: np.ndarray) -> dict:
    from hmm.mixture import bayes_predictive_exact

    r = bayes_predictive_exact(mix, [x])
    return {"next_token_probs": r.next_token_probs, "task_posterior": r.task_posterior,
            "state_predicted": r.state_predicted}


def test_h3_long_sticky_mixture():
    """H3 at T = 4096: two sticky tasks (eps = 1e-9 and 1e-6, one with a zero in A), prior 1 - 1e-9 : 1e-9, tokens
    against the grain."""
    from constructions.bayes_multitask import build

    e9, e6 = Fraction(1, 10**9), Fraction(1, 10**6)
    t1 = _sticky(e9)
    t2 = HMM.from_arrays([1, 0], [[1 - e6, e6], [0, 1]], [[e6, 1 - e6], [1 - e9, e9]], exact=True)
    mix = HMMMixture.from_arrays([1 - e9, e9], [t1, t2], exact=True)
    T = 4096
    x = _grain(T, 2)
    _check_float_and_certified(build(mix, T), [x], _h3_ball_refs(mix, x), H3_NAMES, bound_modes=("float64",),
                               exact_refs=lambda: _h3_refs(mix, x))


@settings(deadline=None, max_examples=1)
@given(st.data())
def test_h3_long_ill_conditioned(data):
    """H3 at T = 4096 on drawn ill-conditioned mixtures (one or two tasks, ball references)."""
    from constructions.bayes_multitask import build

    mix = data.draw(ill_conditioned_mixtures())
    tasks = mix.tasks
    T = 4096
    x = data.draw(long_token_sequences(tasks[0], T))  # possible under task 0, hence under the mixture
    _check_float_and_certified(build(mix, T), [x], _h3_ball_refs(mix, x), H3_NAMES, bound_modes=("float64",),
                               exact_refs=lambda: _h3_refs(mix, x))
