"""One correct rounding of exact rationals into float32/float64 (hmm.rounding), against a brute-force oracle, and
the float32 weights of a construction rounded once from their exact values (not Fraction -> float64 -> float32)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm.errors import HmmtxError
from hmm.rounding import round_array, round_exact

F32_MAX = Fraction(float(np.finfo(np.float32).max))


def _oracle32(q: Fraction) -> float:
    """Nearest float32 to ``q``, ties to even, by exact comparison over the candidates around a guess (IEEE
    overflow: a value that rounds past the largest finite float32 with unbounded exponent is inf; the unbounded
    neighbour above F32_MAX is 2^128, whose significand is even)."""
    with np.errstate(over="ignore"):
        g = np.float32(float(q)) if abs(q) < 2**1000 else np.float32(math.copysign(math.inf, q))
        cands = {g, np.nextafter(g, np.float32(math.inf)), np.nextafter(g, np.float32(-math.inf))}
        cands |= {np.nextafter(c, np.float32(d)) for c in list(cands) for d in (math.inf, -math.inf)}

    def value(c: np.float32) -> Fraction:
        return Fraction(math.copysign(2**128, c)) if math.isinf(c) else Fraction(float(c))

    def even(c: np.float32) -> bool:
        return math.isinf(c) or int(np.array(c, dtype=np.float32).view(np.int32)) % 2 == 0

    best = min(cands, key=lambda c: (abs(value(c) - q), not even(c)))
    return float(best)


def _midpoint_plus(m: Fraction, k: int, sign: int) -> Fraction:
    return m + sign * m * Fraction(1, 2**k)


F32_ULP_POINTS = st.builds(lambda s, e, sub: Fraction(s) * Fraction(2) ** e if not sub else Fraction(s, 2**149),
                           st.integers(1, 2**24), st.integers(-150, 104), st.booleans())


@st.composite
def rationals(draw: st.DrawFn) -> Fraction:
    """Plain rationals, float32 midpoints (ties), midpoints nudged by less than a float64 ulp (the double-rounding
    cases), subnormal/near-subnormal and huge values, and the overflow threshold."""
    kind = draw(st.sampled_from(["plain", "tie", "nudged", "tiny", "huge", "overflow"]))
    sign = draw(st.sampled_from([1, -1]))
    if kind == "plain":
        return sign * Fraction(draw(st.integers(1, 2**80)), draw(st.integers(1, 2**80)))
    if kind == "overflow":
        t = Fraction(2**128 - 2**103)
        return sign * (t + draw(st.sampled_from([0, 1, -1])) * Fraction(2**60))
    a = draw(F32_ULP_POINTS)
    mid = a + (a / 2**24 if a >= 2**-126 else Fraction(1, 2**150))  # a float32 grid point plus half an ulp
    if kind == "tie":
        return sign * mid
    if kind == "nudged":
        return sign * _midpoint_plus(mid, draw(st.integers(54, 120)), draw(st.sampled_from([1, -1])))
    if kind == "tiny":
        return sign * Fraction(draw(st.integers(1, 2**40)), 2 ** draw(st.integers(140, 200)))
    return sign * Fraction(draw(st.integers(1, 2**40))) * 2 ** draw(st.integers(90, 140))


@settings(deadline=None, max_examples=400)
@given(rationals())
def test_round_exact_float32_matches_brute_force_oracle(q: Fraction) -> None:
    got = round_exact(q, "float32")
    want = _oracle32(q)
    assert got == want or (math.isnan(got) and math.isnan(want)), (q, got, want)
    assert math.copysign(1.0, got) == math.copysign(1.0, want)


@settings(deadline=None)
@given(rationals())
def test_round_exact_float64_is_the_correctly_rounded_float(q: Fraction) -> None:
    got = round_exact(q, torch.float64)
    if abs(q) >= 2**1023:
        return
    f = Fraction(got)
    lo, hi = np.nextafter(got, -math.inf), np.nextafter(got, math.inf)
    assert abs(f - q) <= abs(Fraction(float(lo)) - q) and abs(f - q) <= abs(Fraction(float(hi)) - q)


def test_double_rounding_cases_differ_from_the_old_conversion() -> None:
    """Rationals whose Fraction -> float64 -> float32 conversion is wrong: one rounding gets them right."""
    for q in [Fraction(1) + Fraction(1, 2**24) + Fraction(1, 2**60),          # rounds up; the old path ties to even (down)
              1 + Fraction(3, 2**24) - Fraction(1, 2**80),                   # rounds down; the old path ties up
              Fraction(1, 2**150) + Fraction(1, 2**220)]:                    # just above half the smallest subnormal
        old = float(np.float32(float(q)))
        assert round_exact(q, "float32") == _oracle32(q) != old


def test_round_array_shape_and_types() -> None:
    a = round_array([Fraction(1, 3), 2, 0.5], torch.float32, (3,))
    assert a.dtype == np.float32 and a.tolist() == [float(np.float32(1 / 3)), 2.0, 0.5]
    assert round_array([], "float64").shape == (0,)
    with pytest.raises(HmmtxError, match="float32 or float64"):
        round_array([1], "float16")


def test_float32_construction_weights_are_rounded_once() -> None:
    """H1 on an HMM whose entries double-round: the float32 module holds the single rounding of each entry, never
    the old Fraction -> float64 -> float32 value (fails on the old conversion)."""
    from constructions.exact_filter import build
    from hmm.model import HMM

    a = Fraction(3, 4) + Fraction(1, 2**25) + Fraction(1, 2**70)      # just above a float32 midpoint: rounds up
    b = Fraction(3, 4) + Fraction(3, 2**25) - Fraction(1, 2**70)      # just below one: rounds down
    old = {float(np.float32(float(v))) for v in (a, b)}
    new = {round_exact(v, "float32") for v in (a, b)}
    assert old != new
    h = HMM.from_arrays([Fraction(1, 2)] * 2, [[a, 1 - a], [1 - a, a]], [[b, 1 - b], [Fraction(1, 2)] * 2])
    m32 = build(h, 4).materialise(torch.float32)
    held = {float(x) for t in m32.state_dict().values() if t.is_floating_point() for x in t.flatten().tolist()}
    assert new <= held
    assert not (old - new) & held


def test_standard_variant_float32_weights_are_rounded_once() -> None:
    """exact-filter-std in float32: the embedding/unembedding (where the HMM's entries live) hold the single
    rounding; every other weight is a float32 number already (so its float64 -> float32 conversion is exact)."""
    from constructions import registry
    from hmm.model import HMM

    a = Fraction(3, 4) + Fraction(1, 2**25) + Fraction(1, 2**70)
    h = HMM.from_arrays([Fraction(1, 3), Fraction(2, 3)], [[a, 1 - a], [1 - a, a]],
                        [[a, 1 - a], [Fraction(1, 7), Fraction(6, 7)]])
    e = registry.get("exact-filter-std")
    std = e.build(h, np.array([0, 1, 1]), attention=e.attention.attention, beta=e.attention.beta)
    for k, v in std.weights.state_dict().items():
        if k not in ("embed.W_E", "unembed.W_U"):
            v = np.asarray(v)
            assert np.array_equal(v.astype(np.float32).astype(np.float64), v), k
    m = std.materialise(torch.float32)
    held = set(m.W_E.flatten().tolist()) | set(m.W_U.flatten().tolist())
    assert round_exact(a, "float32") in held and float(np.float32(float(a))) not in held
