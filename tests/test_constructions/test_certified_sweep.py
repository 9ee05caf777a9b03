"""Ill-conditioned sweep (entries down to 1e-12, sticky chains with eps down to 1e-9, zeros in A and B, S = 1) for
H1 and H3 (the window's: test_window_ill_conditioned.py): float64 errors <= 1e-12 against the exact reference and within the bound stated in advance;
in certified mode (float32 and float64) the exact reference lies inside the ball-arithmetic enclosure and the
certified round-off is at least the true error."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.certified import certified_roundoff, contains, enclose, exact_error
from hmm.mixture import HMMMixture
from hmm.model import HMM
from hmm.reference import forward_filter_exact
from hmm.testing import token_sequences

TINY = [Fraction(1, 10**k) for k in (3, 6, 9, 12)]


@st.composite
def ill_rows(draw, rows: int, cols: int) -> list[list[Fraction]]:
    """Probability rows with entries among 0, 1 and 1e-3 .. 1e-12 (normalised exactly), or sticky rows."""
    out = []
    for i in range(rows):
        if cols > 1 and rows == cols and draw(st.booleans()):  # sticky: 1 - eps on the diagonal
            eps = draw(st.sampled_from([Fraction(1, 10**k) for k in (3, 6, 9)]))
            out.append([1 - eps if j == i else eps / (cols - 1) for j in range(cols)])
            continue
        w = draw(st.lists(st.sampled_from([Fraction(0), Fraction(1)] + TINY), min_size=cols, max_size=cols))
        if sum(w) == 0:
            w[draw(st.integers(0, cols - 1))] = Fraction(1)
        out.append([v / sum(w) for v in w])
    return out


@st.composite
def ill_hmms(draw, max_states: int = 3, num_obs: int | None = None) -> HMM:
    S = draw(st.integers(1, max_states))
    V = num_obs or draw(st.integers(1, 3))
    return HMM.from_arrays(draw(ill_rows(1, S))[0], draw(ill_rows(S, S)), draw(ill_rows(S, V)), exact=True)


def _refs(hmm: HMM, x: np.ndarray) -> dict:
    r = forward_filter_exact(hmm, x)
    return {"next_token_probs": r.next_token_probs, "predicted_probs": r.predicted_probs,
            "filtered_probs": r.filtered_probs}


def _check_float_and_certified(model, x, refs: dict, names: list[str]) -> None:
    cert = enclose(model, x)
    assert contains(cert, refs, names)  # the exact reference lies in every ball
    for mode in ("float64", "float32"):
        out = model.run(x, mode, record="final").outputs
        err = exact_error(out, refs, names)
        assert err <= certified_roundoff(cert, out, names)  # the certificate is never below the true error
        bound = model.claimed_bound(x, mode)
        assert err <= bound.value, (mode, err, bound)
        if mode == "float64":
            assert err <= 1e-12


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

    V = data.draw(st.integers(1, 2))
    tasks = [data.draw(ill_hmms(max_states=2, num_obs=V)) for _ in range(data.draw(st.integers(1, 2)))]
    rho = data.draw(ill_rows(1, len(tasks)))[0]
    if any(r == 0 for r in rho):
        rho = [Fraction(1, len(tasks))] * len(tasks)
    mix = HMMMixture.from_arrays(rho, tasks, exact=True)
    x = data.draw(token_sequences(tasks[0], max_len=10))  # possible under task 0, hence under the mixture
    ref = bayes_predictive_exact(mix, [x])
    refs = {"next_token_probs": ref.next_token_probs, "task_posterior": ref.task_posterior,
            "state_predicted": ref.state_predicted}
    _check_float_and_certified(build(mix, len(x)), [x], refs, list(refs))


@pytest.mark.parametrize("S,eps,T", [(1, None, 4096), (2, Fraction(1, 10**9), 512)])
def test_h1_long_sticky_chains(S, eps, T):
    """Long inputs: S = 1 at T = 4096, and a sticky chain with eps = 1e-9 read against its grain at T = 512 (its
    exact reference's numbers grow by ~60 bits a step; T = 4096 takes minutes, see docs/performance.md)."""
    from constructions.exact_filter import build

    if S == 1:
        hmm = HMM.from_arrays([1], [[1]], [[Fraction(1, 3), Fraction(2, 3)]], exact=True)
    else:
        A = [[1 - eps, eps], [eps, 1 - eps]]
        hmm = HMM.from_arrays([Fraction(1, 2)] * 2, A, [[1 - eps, eps], [eps, 1 - eps]], exact=True)
    x = np.array([(t // 7) % 2 for t in range(T)])
    model = build(hmm, T, filtered=False)
    refs = _refs(hmm, x)
    out = model.run(x, "float64", record="final").outputs
    names = ["next_token_probs", "predicted_probs"]
    err = exact_error(out, refs, names)
    bound = model.claimed_bound(x, "float64")
    assert bound.roundoff_kind == "derived" and err <= bound.value and err <= 1e-12
    cert = enclose(model, x)
    assert contains(cert, refs, names) and err <= certified_roundoff(cert, out, names)
