"""Memory kernels (Wang & E W1/W3): head kernels, exact monomial weights, exact l1 error, rates, Insight 4a."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.memory.kernels import (
    HeadGrid,
    TargetKernel,
    chebyshev_to_monomial,
    fit_kernel,
    gram_condition,
    head_kernel,
    kernel_values_exact,
    kernel_values_float,
    l1_error,
    l1_error_float,
    rpe_bias,
    single_head_fit,
    worst_case_input,
)
from constructions.memory.rates import fit_rates
from hmm.errors import HmmtxError

LIN = dict(p0=0.1, beta=0.1)
LOG = dict(p0=2.0, beta=0.1)
EXP = TargetKernel("exp", 0.35)
POW = TargetKernel("power", 2.25)


def _grid(rpe: str, H: int) -> HeadGrid:
    return HeadGrid(rpe, H, **(LIN if rpe == "lin" else LOG))


@pytest.fixture(scope="module")
def sweep() -> dict:
    """Exact l1 errors at H = 1, 2, 4, 8 for every (target, rpe) pair (shared by several tests)."""
    out = {}
    for t in (EXP, POW):
        for rpe in ("lin", "log"):
            out[(t.kind, rpe)] = [l1_error(fit_kernel(t, _grid(rpe, H))).total for H in (1, 2, 4, 8)]
    return out


# ---------------------------------------------------------------------------------------------- head kernels
@given(p=st.floats(min_value=0.05, max_value=3.0), rpe=st.sampled_from(["lin", "log"]))
@settings(max_examples=20)  # each example sums ~10^5 lags of a kernel
def test_head_kernel_is_softmax_of_rpe_bias_and_normalised(p: float, rpe: str) -> None:
    if rpe == "log":
        p += 1.5  # summable, and the tail beyond 10^5 lags stays below 1e-6
    s = np.arange(1, 100_001)
    a = head_kernel(rpe, p, s)
    tail = (100_000 ** (1 - p)) / (p - 1) if rpe == "log" else 0.0
    assert abs(a.sum() - 1) <= 1e-9 + 1.01 * tail * a[0]
    b = rpe_bias(rpe, p, np.arange(0, 50))
    assert b[0] == -np.inf  # lag 0 masked
    sm = np.exp(b[1:] - b[1:].max())
    # softmax of the bias over lags 1..49, renormalised, equals the head kernel restricted to those lags
    np.testing.assert_allclose(sm / sm.sum(), a[:49] / a[:49].sum(), rtol=1e-12)


@pytest.mark.parametrize("target,rpe", [(TargetKernel("exp", 0.35), "lin"), (TargetKernel("exp", 1.3), "lin"),
                                        (TargetKernel("power", 2.25), "log"), (TargetKernel("power", 1.5), "log")])
def test_single_matched_head_is_exact_to_float_precision(target: TargetKernel, rpe: str) -> None:
    fit = single_head_fit(target, rpe)
    e = l1_error(fit)
    assert fit.grid.H == 1
    assert abs(float(fit.weights_mp[0]) - 1) <= 1e-15  # unit output weight: both kernels have unit l1 norm
    assert e.total <= 1e-14, e


def test_single_head_refuses_mismatched_type() -> None:
    with pytest.raises(HmmtxError, match="matches only"):
        single_head_fit(TargetKernel("power", 2.0), "lin")


# ---------------------------------------------------------------------------------------------- exact weights
@given(st.lists(st.floats(min_value=-4, max_value=4, allow_nan=False), min_size=1, max_size=12),
       st.fractions(min_value=0, max_value=1, max_denominator=20))
@settings(max_examples=40)
def test_monomial_weights_are_exactly_the_chebyshev_polynomial(cheb: list[float], u: Fraction) -> None:
    B, E = chebyshev_to_monomial(np.array(cheb))
    mono = sum(Fraction(b, 2**E) * u**k for k, b in enumerate(B))
    x = 2 * u - 1  # T_j(x) by the recurrence, exactly
    T = [Fraction(1), x]
    while len(T) < len(cheb):
        T.append(2 * x * T[-1] - T[-2])
    assert mono == sum(Fraction(c) * T[j] for j, c in enumerate(cheb))


def test_fixed_point_kernel_matches_mpmath_head_sum() -> None:
    """K(s) from the exact monomial weights (fixed point) equals sum_k c_k a_{p_k}(s) evaluated in mpmath."""
    fit = fit_kernel(POW, _grid("lin", 16))
    K, qerr = kernel_values_exact(fit, 60)
    assert qerr < 1e-40
    with mpmath.workprec(200):
        for s in (1, 2, 7, 30, 60):
            direct = mpmath.fsum(fit.weights_mp[k] * (mpmath.expm1(p) * mpmath.exp(-p * s))
                                 for k, p in enumerate(fit.grid.exponents_mp()))
            assert abs(direct - K[s - 1]) <= 1e-30 * (1 + 10.0 ** fit.log10_weight_l1)


# ---------------------------------------------------------------------------------------------- l1 error
def test_worst_case_input_attains_the_l1_error_and_random_inputs_stay_below() -> None:
    fit = fit_kernel(EXP, _grid("log", 6))
    S = 300
    e = l1_error(fit, S)
    s = np.arange(1, S + 1)
    diff = kernel_values_float(fit, s) - EXP.values(s)
    x = worst_case_input(fit, S)  # time order, current token last
    attained = float(np.dot(x[:-1][::-1], diff))
    assert attained == pytest.approx(e.finite, rel=1e-10)
    rng = np.random.default_rng(0)
    for _ in range(200):
        xr = rng.uniform(-1, 1, size=S)
        assert abs(float(np.dot(xr, diff))) <= e.finite * (1 + 1e-12)
    assert e.finite <= e.total and e.tail >= 0 and e.rounding < 1e-40


def test_exact_and_float_errors_agree_and_tail_is_accounted(sweep: dict) -> None:
    for t, rpe, H in ((EXP, "log", 8), (POW, "lin", 8), (TargetKernel("spike", 3), "lin", 16)):
        fit = fit_kernel(t, _grid(rpe, H))
        e = l1_error(fit)
        assert l1_error_float(fit) == pytest.approx(e.total, rel=1e-6)
        assert e.total == e.finite + e.tail + e.rounding
    # the lin-type fit of a power law cannot follow the tail: its error includes the tail mass beyond S
    e = l1_error(fit_kernel(POW, _grid("lin", 8)))
    assert e.tail >= float(POW.tail_mass_mp(e.S)) * 0.99


# ---------------------------------------------------------------------------------------------- rates, Insight 4a
def test_error_decreases_with_heads_for_both_types(sweep: dict) -> None:
    for key, errs in sweep.items():
        assert all(b <= a * (1 + 1e-9) for a, b in zip(errs, errs[1:])), (key, errs)
        assert errs[-1] < 0.1 * errs[0], (key, errs)
    assert sweep[("exp", "lin")][-1] < 1e-4 and sweep[("power", "log")][-1] < 1e-8


def test_insight_4a_log_wins_on_heavy_tails_lin_on_light_tails(sweep: dict) -> None:
    for i, H in enumerate((1, 2, 4, 8)):
        assert sweep[("power", "log")][i] < sweep[("power", "lin")][i], H
        if H >= 2:  # at H=1 neither grid holds the target's exponent (a pre-asymptotic coincidence, see docs)
            assert sweep[("exp", "lin")][i] < sweep[("exp", "log")][i], H


def test_weights_grow_and_gram_condition_explodes() -> None:
    c = [gram_condition(_grid("lin", H)) for H in (2, 4, 8, 16)]
    assert c[0] < c[1] < c[2] < c[3] and c[3] > 1e11  # about 6, 2e2, 2e5, 2e12
    f4, f16 = fit_kernel(EXP, _grid("log", 4)), fit_kernel(EXP, _grid("log", 16))
    assert f16.log10_max_weight > f4.log10_max_weight + 5


def test_fit_rates_recovers_known_slopes() -> None:
    H = [2, 4, 8, 16, 32]
    r = fit_rates(H, [0.3 * h**-3.0 for h in H])
    assert r.algebraic == pytest.approx(3.0, rel=1e-9)
    r = fit_rates(H, [0.4 * math.exp(-0.5 * h) for h in H])
    assert r.exponential == pytest.approx(0.5, rel=1e-9) and r.points == 5
    r = fit_rates(H + [64], [0.9 * 2.0**-h for h in H] + [1e-20])
    assert r.points == 5  # the 1e-20 point is below the round-off floor RATE_FLOOR and left out
    assert fit_rates([1, 2], [1.0, 0.9]).algebraic is None  # pre-asymptotic points are left out


@pytest.mark.parametrize("make", [lambda: HeadGrid("log", 3, 1.0, 0.1), lambda: HeadGrid("lin", 3, 0.0, 0.1),
                                  lambda: HeadGrid("lin", 0, 0.1, 0.1), lambda: HeadGrid("cos", 2, 0.1, 0.1),
                                  lambda: HeadGrid("lin", 2, 0.1, -1.0), lambda: TargetKernel("power", 1.0),
                                  lambda: TargetKernel("spike", 2.5), lambda: TargetKernel("exp", -1.0)])
def test_invalid_grids_and_targets_raise(make) -> None:
    with pytest.raises(HmmtxError):
        make()
