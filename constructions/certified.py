"""Certified enclosures (``--certify``): ball arithmetic over the same weights and input.

The construction's layers run in python-flint's ``arb`` balls (midpoint-radius intervals with rigorous error
propagation: every operation returns a ball guaranteed to contain the exact result for all points of its inputs)
through the generic executor of :mod:`constructions.exact_fast` (``arb_mat`` products for the doubling layers,
``exp`` for softmax). Every weight enters as the ball of its exact rational value, so the returned balls contain
the **exact-arithmetic output of the construction** for these weights and tokens (hard attention: the exact
reference itself, bit-identical by the exactness tests; softmax: the real-arithmetic softmax output).

The certified verdict of a float run then reads (docs/certified.md):

    |float output - exact reference| <= leakage (mathematical bound) + certified round-off,
    certified round-off = max over outputs of |float - mid| + rad      (rounded up; every term proved)

since the exact-arithmetic output lies in ``[mid - rad, mid + rad]``. Undecidable comparisons (a ball straddling 0
in a normalising sum, a hard-attention maximum between overlapping balls) raise HmmtxError instead of guessing.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Any, NamedTuple, Sequence

import numpy as np

from constructions.exact_fast import Field, _compile, execute
from hmm.errors import HmmtxError
from hmm.ball import interval, is_ball, precision
from hmm.fastq import require

#: Working precision (bits) of the balls: radii ~2^-128 relative, far below float64 round-off.
DEFAULT_PREC = 128


class Certificate(NamedTuple):
    """Enclosures of a construction's exact-arithmetic outputs.

    Fields:
        balls:   output name -> object array of ``flint.arb`` (same shape as the decoded output)
        radius:  largest ball radius over the outputs (a float rounded up)
        prec:    working precision in bits
        seconds: wall time of the ball-arithmetic run
    """

    balls: dict
    radius: float
    prec: int
    seconds: float


def arb_field() -> Field:
    """The ball-arithmetic :class:`~constructions.exact_fast.Field` (current ``flint.ctx.prec``)."""
    f = require()

    def num(v: Any) -> Any:
        q = v if isinstance(v, Fraction) else Fraction(v)
        return f.arb(f.fmpq(q.numerator, q.denominator))

    def positive(v: Any) -> bool:
        if v > 0:
            return True
        if v <= 0:
            return False
        raise HmmtxError(f"certification: the sign of {v.str(5)} cannot be decided in ball arithmetic "
                         "(a normalising sum or an attention score too close to a tie)")

    def relu(v: Any) -> Any:
        return v if v > 0 else (f.arb(0) if v <= 0 else v.nonnegative_part())

    return Field(num, f.arb_mat, f.arb(0), lambda v: not v.is_zero(), positive, relu, lambda v: v.exp(),
                 lambda v: v, "ball", lambda m: [v for row in m.tolist() for v in row])


def enclose(model: Any, tokens: Any, *, prec: int = DEFAULT_PREC) -> Certificate:
    """Run ``model``'s exact weights on ``tokens`` in ball arithmetic with the model's own attention (hard, or
    softmax at its beta); returns balls containing the exact-arithmetic outputs (decoded like ``model.run``)."""
    t0 = time.perf_counter()
    ids = model.check_input_ids(model.codec.encode(tokens))
    with precision(prec):
        caches = model.__dict__.setdefault("_certify_cache", {})
        if prec not in caches:
            caches[prec] = _compile(model, arb_field())
        beta = None if model.attention == "hard" else arb_field().num(Fraction(float(model.beta)))
        trace = execute(model, caches[prec], ids, model.attention, beta)
        out = model.codec.decode(model, trace, tokens)
    balls = {k: np.asarray(v, dtype=object) for k, v in out.items() if _is_ball_array(v)}
    rad = max((_up(float(b.rad())) for arr in balls.values() for b in arr.ravel()), default=0.0)
    return Certificate(balls, rad, int(prec), time.perf_counter() - t0)


def _is_ball_array(v: Any) -> bool:
    a = np.asarray(v, dtype=object)
    return a.size > 0 and hasattr(a.ravel()[0], "rad")


def _up(x: float) -> float:
    """``x`` rounded up to the next float (a conversion to float rounds to nearest)."""
    return math.nextafter(x, math.inf) if math.isfinite(x) else x


def certified_roundoff(cert: Certificate, outputs: dict, names: Sequence[str]) -> float:
    """``max |float - mid| + rad`` over the named outputs, rounded up: with the exact-arithmetic output inside
    the ball, ``|float - exact| <= |float - mid| + rad`` for every entry."""
    worst = 0.0
    with precision(cert.prec):
        for n in names:
            if n not in cert.balls or n not in outputs:
                continue
            got = _float_array(outputs[n])
            balls = cert.balls[n]
            if got.shape != balls.shape:
                raise HmmtxError(f"certification: output '{n}' has shape {got.shape}, its enclosure {balls.shape}")
            for g, b in zip(got.ravel(), balls.ravel()):
                if not math.isfinite(g):
                    return math.inf
                worst = max(worst, distance_bound(g, b))
    return worst


def distance_bound(g: float, b: Any) -> float:
    """An upper bound (a float, rounded up) on ``max |g - v|`` over the ball ``b``, in ball arithmetic at the
    current precision (a float converts to a ball exactly; ``upper()`` bounds the result from above)."""
    f = require()
    return _up(float(abs(f.arb(float(g)) - b).upper()))


def contains(cert: Certificate, reference: dict, names: Sequence[str]) -> bool:
    """True when every reference value of the named outputs lies in its ball, decided in exact arithmetic on the
    ball's dyadic end points (cross-multiplied integers, no gcd). A reference value is an exact rational (a
    Fraction, or a float taken exactly), or a ball (:mod:`hmm.ball`: a rigorous enclosure of the exact reference,
    for sequences too long for rationals): then the reference ball must lie inside the certificate's ball, which
    proves ``exact reference in reference ball subset certificate ball``."""
    for n in names:
        if n not in cert.balls or n not in reference:
            continue
        ref = np.asarray(reference[n], dtype=object)
        if ref.shape != cert.balls[n].shape:
            raise HmmtxError(f"certification: reference '{n}' has shape {ref.shape}, its enclosure "
                             f"{cert.balls[n].shape}")
        for r, b in zip(ref.ravel(), cert.balls[n].ravel()):
            if is_ball(r):
                if not b.contains(r):  # exact end-point comparison: R subset of C
                    return False
                continue
            lo, hi = interval(b)
            p, q = _parts(r)
            if not (lo.p * q <= p * lo.q and p * hi.q <= hi.p * q):  # lo <= p/q <= hi, all denominators > 0
                return False
    return True


def _parts(v: Any) -> tuple[Any, Any]:
    """An exact rational as ``(p, q)`` ``flint.fmpz`` with ``q > 0`` (a Fraction's numerator and denominator; a
    float converted exactly). Comparisons then cross-multiply instead of building ``fmpq`` (whose canonicalising
    gcd dominates on the ~10^5-bit entries of a long exact reference)."""
    f = require()
    q = v if isinstance(v, Fraction) else Fraction(v)
    return f.fmpz(q.numerator), f.fmpz(q.denominator)


def _float_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype != object else np.vectorize(float, otypes=[np.float64])(a)


class CertifiedVerdict(NamedTuple):
    """What ``--certify`` adds to a run (JSON key ``certified``).

    Fields:
        roundoff:   certified round-off ``max |float - mid| + rad`` (0 in exact mode)
        radius:     largest enclosure radius (the enclosure's half-width)
        bound:      leakage (mathematical bound) + certified round-off
        within:     ``error <= bound``
        contains_reference: the exact reference lies in every ball (None when the reference is float64)
        prec:       ball precision in bits
        seconds:    time of the ball-arithmetic run
    """

    roundoff: float
    radius: float
    bound: float
    within: bool
    contains_reference: bool | None
    prec: int
    seconds: float

    def as_dict(self) -> dict:
        return {"roundoff": self.roundoff, "radius": self.radius, "bound": self.bound, "within": self.within,
                "contains_reference": self.contains_reference, "prec": self.prec, "seconds": self.seconds,
                "kind": "certified"}


def certify_run(res: Any, tokens: Any, *, prec: int = DEFAULT_PREC) -> CertifiedVerdict:
    """The certified verdict of a :class:`~constructions.runner.ConstructionRun` (float or exact mode)."""
    # a standard-block variant: enclose its idealised construction. Its substitutions are exact in exact arithmetic
    # and, with hard attention, the idealised exact output is the exact reference, so the balls enclose what the
    # verdict compares with (the variant's float run is then judged against them like any float run)
    enclosed = getattr(res.model, "idealised", res.model)
    cert = enclose(enclosed, tokens, prec=prec)
    names = [n for n in res.compared if n in cert.balls] if hasattr(res, "compared") else list(cert.balls)
    rnd = 0.0 if res.result.mode == "exact" else certified_roundoff(cert, res.result.outputs, names)
    leak = float(res.bound.leakage)
    bound = leak + rnd
    # the balls enclose the exact-arithmetic output of the construction as run: with hard attention that is the
    # exact reference; with softmax it differs from it by the leakage, so containment is not expected
    hard = enclosed.attention == "hard"
    inside = contains(cert, res.reference, names) if res.reference_kind == "exact" and hard else None
    err = exact_error(res.result.outputs, res.reference, names) if res.reference_kind == "exact" else res.max_abs_error
    return CertifiedVerdict(rnd, cert.radius, bound, bool(err <= bound), inside, cert.prec, cert.seconds)


def exact_error(outputs: dict, reference: dict, names: Sequence[str]) -> float:
    """``max |float - exact|`` over the named outputs, computed exactly and rounded up (the float64 difference
    ``|f - fl(exact)|`` can differ from it by half an ulp, which matters against a tight certified bound).

    A reference value may be a ball of :mod:`hmm.ball` (a rigorous enclosure of the exact value): its entry then
    contributes ``max |f - v|`` over the ball, a proved upper bound on ``|f - exact|`` that exceeds it by at most
    the ball's diameter (~1e-70 relative at the default 256 bits)."""
    from hmm.ball import REFERENCE_PREC

    f = require()
    worst, worst_ball = (f.fmpz(0), f.fmpz(1)), 0.0
    with precision(REFERENCE_PREC):  # the working precision of the ball differences (Fractions are exact)
        for n in names:
            got = _float_array(outputs[n]).ravel()
            ref = np.asarray(reference[n], dtype=object).ravel()
            if got.shape != ref.shape:
                raise HmmtxError(f"output '{n}' has {got.size} entries, its reference {ref.size}")
            for g, r in zip(got, ref):
                if not math.isfinite(g):
                    return math.inf
                if is_ball(r):
                    worst_ball = max(worst_ball, distance_bound(g, r))
                    continue
                gp, gq = _parts(float(g))
                rp, rq = _parts(r)
                d = (abs(gp * rq - rp * gq), gq * rq)  # |g - r| exactly, as an unreduced fraction
                if d[0] * worst[1] > worst[0] * d[1]:
                    worst = d
    return max(_up(float(Fraction(int(worst[0]), int(worst[1])))), worst_ball)


__all__ = ["DEFAULT_PREC", "Certificate", "CertifiedVerdict", "arb_field", "enclose", "certified_roundoff",
           "distance_bound", "contains", "exact_error", "certify_run"]
