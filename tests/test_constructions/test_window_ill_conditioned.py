"""The window construction (H2) on ill-conditioned HMMs: entries down to 1e-12 (and 1e-170 in float64), sticky
chains with eps down to 1e-9, zeros in A and B, S = 1, T up to 4096.

* float64 errors <= 1e-12 against the exact reference (the window's own rational output), within the bound the
  construction states in advance, and entry by entry within its relative form ``p expm1(R) + a``;
* float32 within its stated bound;
* certified mode (float32 and float64): the exact reference lies in every ball and the certified round-off is at
  least the exact error.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.certified import certified_roundoff, contains, enclose, exact_error
from constructions.window_filter import build
from constructions.window_roundoff import lookup_absolute, model_log_ratio, window_absolute
from hmm.model import HMM
from hmm.testing import token_sequences
from hmm.window import resolve_prior, window_filter_exact

SMALL = [Fraction(1, 10**k) for k in (3, 6, 9, 12)]
NAMES = ["next_token_probs", "filtered_probs"]


@st.composite
def ill_rows(draw, rows: int, cols: int) -> list[list[Fraction]]:
    """Probability rows with entries among 0, 1 and 1e-3 .. 1e-12 (normalised exactly), or sticky rows
    ``1 - eps`` on the diagonal with ``eps`` down to 1e-9."""
    out = []
    for i in range(rows):
        if cols > 1 and rows == cols and draw(st.booleans()):
            eps = draw(st.sampled_from([Fraction(1, 10**k) for k in (3, 6, 9)]))
            out.append([1 - eps if j == i else eps / (cols - 1) for j in range(cols)])
            continue
        w = draw(st.lists(st.sampled_from([Fraction(0), Fraction(1)] + SMALL), min_size=cols, max_size=cols))
        if sum(w) == 0:
            w[draw(st.integers(0, cols - 1))] = Fraction(1)
        out.append([v / sum(w) for v in w])
    return out


@st.composite
def ill_hmms(draw, max_states: int = 3) -> HMM:
    S = draw(st.integers(1, max_states))
    V = draw(st.integers(1, 3))
    return HMM.from_arrays(draw(ill_rows(1, S))[0], draw(ill_rows(S, S)), draw(ill_rows(S, V)), exact=True)


def _prior(hmm: HMM, want: str) -> str:
    """``want``, or ``uniform`` when the stationary distribution lacks full support (or is not unique)."""
    if want == "stationary":
        try:
            resolve_prior(hmm, "stationary", exact=True)
        except Exception:  # noqa: BLE001 - HmmtxError (zeros / reducible A): the window needs full support
            return "uniform"
    return want


def _relative_form_holds(model, x, out: dict, ref, mode: str) -> None:
    """Entry by entry: ``|p^ - p| <= p expm1(R) + a`` (the bound's relative form, not only its max)."""
    S, V, r = model.info.n, model.info.hmm.num_obs, model.info.r
    R = model_log_ratio(S, V, r, mode, model.info.readout)
    if model.info.readout == "lookup":
        a = lookup_absolute(S, V, mode)
    else:
        a, why = window_absolute(model.info.hmm, x, r, np.array(model.info.mu, dtype=object), mode)
        assert not why and math.isfinite(a)
    for name in NAMES:
        got = np.asarray(out[name].detach().numpy(), dtype=np.float64)
        exact = np.asarray(getattr(ref, name), dtype=object)
        for g, p in zip(got.ravel(), exact.ravel()):
            d = abs(Fraction(float(g)) - p)
            assert d <= p * Fraction(math.expm1(R[name])) + Fraction(a), (name, g, p)


def _check(model, x, ref) -> None:
    refs = {n: getattr(ref, n) for n in NAMES}
    cert = enclose(model, x)
    assert contains(cert, refs, NAMES)  # the exact reference lies in every ball
    for mode in ("float64", "float32"):
        out = model.run(x, mode, record="final").outputs
        err = exact_error(out, refs, NAMES)
        assert err <= certified_roundoff(cert, out, NAMES)  # the certificate is never below the true error
        bound = model.claimed_bound(x, mode)
        assert err <= bound.value, (mode, err, bound)
        if mode == "float64":
            assert bound.roundoff_kind == "derived", bound.notes
            assert err <= 1e-12 and bound.value <= 1e-12
            _relative_form_holds(model, x, out, ref, mode)


@settings(deadline=None, max_examples=40)
@given(st.data())
def test_window_ill_conditioned_sweep(data):
    hmm = data.draw(ill_hmms())
    x = data.draw(token_sequences(hmm, max_len=14))
    readout = data.draw(st.sampled_from(["lookup", "product"]))
    r = data.draw(st.integers(1, 4 if readout == "lookup" else 7))
    prior = _prior(hmm, data.draw(st.sampled_from(["stationary", "uniform"])))
    model = build(hmm, r, readout=readout, prior=prior, max_len=len(x))
    _check(model, x, window_filter_exact(hmm, x, r, prior))


@pytest.mark.parametrize("readout", ["product", "lookup"])
def test_c1_family_outputs_below_the_float_range_are_within_the_absolute_term(readout):
    """C1's HMM (entries 1e-170): some outputs are near 1e-340, which float64 cannot hold (computed 0), so the
    relative term alone does not cover them; the absolute term ``a`` does (a is 0 when nothing underflows)."""
    eps = Fraction(1e-170)  # the exact binary value of the float in C1's JSON
    hmm = HMM.from_arrays([Fraction(1, 2)] * 2, [[1, eps], [eps, 1]], [[1, eps], [eps, 1]], exact=False)
    x = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0])
    model = build(hmm, 4, readout=readout, max_len=len(x))
    ref = window_filter_exact(hmm, x, 4)
    out = model.run(x, "float64", record="final").outputs
    assert min(ref.filtered_probs.ravel()) < Fraction(1, 10**320)  # an output below the float64 range
    bound = model.claimed_bound(x, "float64")
    err = exact_error(out, {n: getattr(ref, n) for n in NAMES}, NAMES)
    assert bound.roundoff_kind == "derived" and err <= bound.value
    _relative_form_holds(model, x, out, ref, "float64")


def _sticky(eps: Fraction) -> HMM:
    return HMM.from_arrays([Fraction(1, 2)] * 2, [[1 - eps, eps], [eps, 1 - eps]], [[1 - eps, eps], [eps, 1 - eps]],
                           exact=True)


@pytest.mark.parametrize("case", ["S1", "sticky1e-9", "extreme1e-170"])
def test_window_long_inputs(case):
    """T = 4096: S = 1 and a sticky chain with eps = 1e-9 read against its grain (also certified); T = 512 with
    entries 1e-170 (the C1 family, whose exact reference is slow; float64 only: float32 cannot hold them)."""
    T = 512 if case == "extreme1e-170" else 4096
    if case == "S1":
        hmm = HMM.from_arrays([1], [[1]], [[Fraction(1, 3), Fraction(2, 3)]], exact=True)
    else:
        hmm = _sticky(Fraction(1, 10**9) if case == "sticky1e-9" else Fraction(1, 10**170))
    x = np.array([(t // 7) % 2 for t in range(T)])
    r = 6
    model = build(hmm, r, readout="product", max_len=T)
    ref = window_filter_exact(hmm, x, r)
    refs = {n: getattr(ref, n) for n in NAMES}
    out = model.run(x, "float64", record="final").outputs
    err = exact_error(out, refs, NAMES)
    bound = model.claimed_bound(x, "float64")
    assert bound.roundoff_kind == "derived" and err <= bound.value <= 1e-12 and err <= 1e-12
    _relative_form_holds(model, x, out, ref, "float64")
    if case != "extreme1e-170":
        out32 = model.run(x, "float32", record="final").outputs
        assert exact_error(out32, refs, NAMES) <= model.claimed_bound(x, "float32").value
    if case == "sticky1e-9":  # certified mode at T = 4096 (about 7 s of ball arithmetic)
        cert = enclose(model, x)
        assert contains(cert, refs, NAMES)
        assert err <= certified_roundoff(cert, out, NAMES)
        assert exact_error(out32, refs, NAMES) <= certified_roundoff(cert, out32, NAMES)
