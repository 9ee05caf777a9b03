"""Derived floating-point round-off bound of the window construction (H2, both readouts) and of its float64
reference: ``|p^_c - p_c| <= p_c expm1(R) + a`` for every output entry, a **relative** term whose ``R`` depends
only on ``S``, ``V``, ``r`` and the mode (not on the conditioning of the HMM) plus an **absolute** underflow term
``a`` (a few subnormals, amplified only where the input is that extreme), both stated before the run.
Derivation: ``docs/constructions/window_filter.md`` ("Round-off bound"); the model of :mod:`constructions.roundoff`
(H1/H3) extended to underflow.

Model (IEEE 754, round to nearest, gradual underflow): ``fl(a op b) = (a op b)(1 + d) + e`` with ``|d| <= u``,
``|e| <= eta / 2`` (``eta`` = smallest subnormal), ``d e = 0``, ``e = 0`` for an addition, and ``e = 0`` whenever
the result is at least ``tiny`` (smallest normal). All quantities are non-negative. Every computed normalised vector
is written ``v^ = v o exp(theta) + a``: a relative part whose log-ratios ``theta`` spread over at most ``osc``
(a scale common to all entries does not count: projective normalisation) and an absolute part ``|a_c| <= alpha_c``.
``ub = -log(1 - u)`` per rounding; a weight is an exact rational rounded once to the dtype (:mod:`hmm.rounding`);
``wb = ub + ub64`` (``ub`` in float64) is the older double-rounding allowance, kept (an upper bound of ``ub``).

Relative part (product readout = the normalised vector chain of :mod:`constructions.window_filter`):

* ``prior`` holds one rounded weight per entry: ``osc = 2 wb``;
* a chain step ``z_j = sum_c A[c, j] fl(B[c, x] v_c)`` (at most ``S`` non-zero terms; the marker's terms
  ``pi_j v_c`` have fewer roundings) carries ``2 wb + 2 ub`` per term and ``(S - 1) ub`` for the sum, so
  ``osc <- osc + 2 (2 wb + (S + 1) ub)``; normalising divides by the sum (a common factor) with one rounding:
  ``+ 2 ub``;
* the final layer: ``belief`` (``fl(B[c, x_t] v_c)``) adds ``2 (wb + ub)``, ``pred`` a chain step's
  ``2 (2 wb + (S + 1) ub)``, both ``+ 2 ub`` for the division;
* a readout ``z_c = sum of k <= S terms W[c, j] h_j`` normalised over ``w`` entries:
  ``R = osc + 2 (wb + k ub) + w ub`` (the belief readout, weight 1: ``osc + w ub``).

Absolute part (:class:`UnderflowTracker`, run alongside the float64 chain :func:`hmm.window.window_filter` on the
same tokens): an exactly zero term is computed exactly; a term whose float64 value ``T64`` satisfies
``T64 / 2 - slack >= tiny`` of the mode (``slack`` = the absolute uncertainty it inherits from ``alpha``) is normal
in the run too (the run's relative parts are within ``exp(R + R64) < 2`` of the float64 chain's), so it has no
absolute error; any other exactly-positive term adds at most ``2 eta`` (two products). The same test decides
whether a quotient may be subnormal (``+ eta / 2``). With ``g = exp(2 wb + 2 (S + 1) ub)`` (the rounding
factors an absolute error can pick up in a step) a step gives ``beta_j = g (sum_c alpha_c B[c, x] A[c, j] + 2 eta
n_j)`` (``n_j`` = underflowing terms of ``z_j``) and, normalised by a sum ``c`` at least half the float64 chain's
(checked: ``sum beta <= c / 32``), ``alpha'_j = 2 g beta_j / c + eta / 2`` where the quotient is below ``4 tiny``
(else 0). The readouts divide by a sum of about 1: ``a = 2 g beta + eta / 2``. If every term of the whole run is
normal the absolute part is zero and the bound is purely relative; when ``sum beta > c / 32`` (underflow comparable
to the mass) or ``R > 1/4`` the bound does not apply and the trivial one is claimed.

Lookup readout: the firing unit is exactly 1 and the rest exactly 0 (integer arithmetic), so ``belief`` and
``pred`` hold one rounded weight each (``osc = 2 wb``; absolute ``eta / 2``); the readouts as above, absolute part
``16 S (V + 1) eta``, no condition (their normalisers are about 1).

float64 reference (:func:`hmm.window.window_filter` with the prior rounded from its exact value): the same chain;
its outputs are ``pred @ B`` (no second normalisation) and ``joint / sum joint``, so ``R_ref = osc_pre(pred) +
2 S ub + wb`` and ``osc_pre(belief) + S ub`` (``osc_pre`` before the final division), absolute part the tracker's
in float64.

Softmax attention: the slots are not exact one-hots, so every sum has ``S (V + 1)`` terms and the units are not
exactly 0/1; the same recursion with those counts is a **heuristic** allowance (the computed softmax weights are
assumed to be within a few ulps); ``--certify`` is the certified alternative.
"""

from __future__ import annotations

import math
import numpy as np

from constructions.roundoff import TINY, unit_log

#: Smallest positive subnormal per float mode.
ETA = {"float64": float(np.finfo(np.float64).smallest_subnormal),
       "float32": float(np.finfo(np.float32).smallest_subnormal)}
#: Largest ``R`` (log-ratio) for which the margin argument of the no-underflow check holds.
MAX_LOG_RATIO = 0.25


def weight_log(mode: str) -> float:
    """``wb``: the largest ``|log(w^ / w)|`` of a weight rounded from its exact value (float32: twice)."""
    ub = unit_log(mode)
    return ub if mode == "float64" else ub + unit_log("float64")


def chain_osc(S: int, r: int, mode: str, *, terms: int | None = None) -> tuple[float, float, float]:
    """``(osc of the normalised v[1], osc_pre of belief, osc_pre of pred)`` of the product chain (before the final
    divisions); ``terms`` overrides the ``S`` terms per sum (softmax: ``S (V + 1)``)."""
    ub, wb = unit_log(mode), weight_log(mode)
    n = S if terms is None else terms
    step = 2.0 * (2.0 * wb + (n + 1) * ub)
    osc = 2.0 * wb + (r - 1) * (step + 2.0 * ub)
    return osc, osc + 2.0 * (wb + ub), osc + step


def model_log_ratio(S: int, V: int, r: int, mode: str, readout: str, *, softmax: bool = False) -> dict:
    """``R`` per output name of the window model (``readout`` ``"product"`` or ``"lookup"``) in ``mode``."""
    ub, wb = unit_log(mode), weight_log(mode)
    n = S * (V + 1) if softmax else S
    if readout == "product":
        _, b_pre, p_pre = chain_osc(S, r, mode, terms=n)
        osc_b, osc_p = b_pre + 2.0 * ub, p_pre + 2.0 * ub
    else:
        osc_b = osc_p = 2.0 * wb + (2.0 * n * ub if softmax else 0.0)
    return {"filtered_probs": osc_b + S * ub, "next_token_probs": osc_p + 2.0 * (wb + S * ub) + V * ub}


def reference_log_ratio(S: int, r: int) -> dict:
    """``R`` per output name of the float64 reference :func:`hmm.window.window_filter`."""
    ub, wb = unit_log("float64"), weight_log("float64")
    _, b_pre, p_pre = chain_osc(S, r, "float64")
    return {"filtered_probs": b_pre + S * ub, "next_token_probs": p_pre + 2.0 * S * ub + wb}


def lookup_absolute(S: int, V: int, mode: str) -> float:
    """The lookup readout's absolute underflow term ``16 S (V + 1) eta``."""
    return 16.0 * S * (V + 1) * ETA[mode]


class UnderflowTracker:
    """The absolute part of the bound (module docstring), as an observer of :func:`hmm.window.window_filter`.

    After the run, ``absolute`` is the bound on the absolute part of every output entry (``inf`` with ``reason``
    set when the check ``sum beta <= c / 32`` failed somewhere)."""

    def __init__(self, hmm, r: int, mode: str) -> None:
        h = hmm.as_exact()
        self.r, self.mode = r, mode
        self.eta, self.tiny = ETA[mode], TINY[mode]
        S = h.num_states
        ub, wb = unit_log(mode), weight_log(mode)
        self.g = math.exp(2.0 * wb + 2.0 * (S + 1) * ub)
        up = math.exp(unit_log("float64"))  # exact weight <= float64 weight * up
        self.A = np.array([[float(v) for v in row] for row in h.transition_matrix]) * up
        self.B = np.array([[float(v) for v in row] for row in h.emission_probs]) * up
        self.pi = np.array([float(v) for v in h.initial_probs]) * up
        self.posA = np.array([[v > 0 for v in row] for row in h.transition_matrix])
        self.posB = np.array([[v > 0 for v in row] for row in h.emission_probs])
        self.pos_pi = np.array([v > 0 for v in h.initial_probs])
        self.absolute, self.reason = 0.0, ""

    def _fail(self, what: str, beta: np.ndarray, c: np.ndarray) -> None:
        bad = beta.sum(axis=-1) > c / 32.0
        if bool(np.any(bad)) and not self.reason:
            self.reason = (f"{what}: underflow of order {float(np.max(beta.sum(axis=-1)[bad])):.3g} against a "
                           f"mass of {float(np.min(c[bad])):.3g} ({self.mode})")
            self.absolute = math.inf

    def _risky(self, v: np.ndarray, sup: np.ndarray, slack: np.ndarray | float = 0.0) -> np.ndarray:
        """Where an exactly positive quantity whose float64 value is ``v`` may be below ``tiny`` in the run: the
        run's value is at least ``v / 2 - slack`` (``slack``: the absolute uncertainty it inherits)."""
        return sup & (0.5 * v - slack < self.tiny)

    def prior(self, p: np.ndarray) -> None:
        N, T, S = p.shape
        reaches = np.arange(T) <= self.r - 1
        self.sup = np.broadcast_to(np.where(reaches[:, None], self.pos_pi[None, :], True)[None], p.shape).copy()
        self.alpha = np.where(self._risky(p, self.sup), self.eta / 2, 0.0)

    def marker(self, idx: np.ndarray) -> None:
        """``v <- (sum v) pi`` normalised, for windows ``idx`` (their ``v`` is ``pi``): terms ``pi_j pi_c``."""
        a, sp = self.alpha[:, idx], self.sup[:, idx]
        terms = self.pi[None, :] * self.pi[:, None]  # [c, j]
        slack = self.g * a[..., :, None] * self.pi[None, :]
        n = self._risky(terms, sp[..., :, None] & self.pos_pi[None, :], slack).sum(axis=-2)
        beta = self.g * (a.sum(axis=-1, keepdims=True) * self.pi + 2 * self.eta * n)
        self._fail("marker step", beta, np.ones(beta.shape[:-1]))
        a2 = 2 * self.g * beta
        self.alpha[:, idx] = a2 + np.where(self._risky(self.pi, self.pos_pi, a2), self.eta / 2, 0.0)
        self.sup[:, idx] = self.pos_pi

    def _terms(self, xs: np.ndarray, p: np.ndarray, a: np.ndarray, sp: np.ndarray) -> tuple:
        """Per window: ``(beta of z = (p * B[:, x]) @ A, support of z)``."""
        Bx = self.B.T[xs]
        sB = sp & self.posB.T[xs]
        terms = (p * Bx)[..., :, None] * self.A  # [.., c, j]
        tsup = sB[..., :, None] & self.posA
        n = self._risky(terms, tsup, self.g * (a * Bx)[..., :, None] * self.A).sum(axis=-2)
        beta = self.g * ((a * Bx) @ self.A + 2 * self.eta * n)
        return beta, tsup.any(axis=-2), Bx, sB

    def step(self, idx: np.ndarray, xs: np.ndarray, p: np.ndarray, z: np.ndarray, c: np.ndarray) -> None:
        beta, sup, _, _ = self._terms(xs, p, self.alpha[:, idx], self.sup[:, idx])
        self._fail("chain step", beta, c)
        with np.errstate(divide="ignore", invalid="ignore"):
            a2 = 2 * self.g * beta / c[..., None]
            self.alpha[:, idx] = a2 + np.where(self._risky(z / c[..., None], sup, a2), self.eta / 2, 0.0)
        self.sup[:, idx] = sup

    def final(self, x: np.ndarray, p: np.ndarray, joint: np.ndarray, pred: np.ndarray) -> None:
        beta_p, sup_p, Bx, sB = self._terms(x, p, self.alpha, self.sup)
        beta_b = self.g * (self.alpha * Bx + 2 * self.eta * self._risky(joint, sB, self.g * self.alpha * Bx))
        c = joint.sum(axis=-1)
        self._fail("current token (belief)", beta_b, c)
        self._fail("current token (pred)", beta_p, c)
        if self.reason:
            return
        half = self.eta / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            a_b = 2 * self.g * beta_b / c[..., None]
            a_b = a_b + np.where(self._risky(joint / c[..., None], sB, a_b), half, 0.0)
            q = pred / c[..., None]
            a_p = 2 * self.g * beta_p / c[..., None]
            a_p = a_p + np.where(self._risky(q, sup_p, a_p), half, 0.0)
        terms = q[..., :, None] * self.B  # [.., j, v]: the next-token readout's products
        slack = self.g * a_p[..., :, None] * self.B
        n = self._risky(terms, sup_p[..., :, None] & self.posB, slack).sum(axis=-2)
        beta_n = self.g * (a_p @ self.B + 2 * self.eta * n)
        self.absolute = float(max(np.max(2 * self.g * a_b + half, initial=0.0),
                                  np.max(2 * self.g * beta_n + half, initial=0.0)))


def window_absolute(hmm, tokens, r: int, mu, mode: str) -> tuple[float, str]:
    """``(absolute part, reason)`` of the bound in ``mode`` for the window chain on ``tokens`` (``mu``: the prior,
    exact); ``(inf, why)`` when the underflow check fails."""
    from hmm.window import window_filter

    tr = UnderflowTracker(hmm, r, mode)
    window_filter(hmm, tokens, r, mu, observer=tr)
    return tr.absolute, tr.reason


__all__ = ["ETA", "MAX_LOG_RATIO", "weight_log", "chain_osc", "model_log_ratio", "reference_log_ratio",
           "lookup_absolute", "UnderflowTracker", "window_absolute"]
