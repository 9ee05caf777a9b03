"""Derived floating-point round-off bound of the prefix constructions (H1, H3): a relative bound per layer,
propagated through the doubling tree. Derivation: ``docs/constructions/exact_filter.md`` ("Round-off bound").

Model (IEEE 754, round to nearest, no underflow and no overflow): every ``+ - * /`` of two floats returns
``x (1 + d)`` with ``|d| <= u`` (``u = eps / 2``). All quantities of the prefix constructions are non-negative, so
errors are measured as **log-ratios**: for exact ``X >= 0`` and computed ``X^`` with the same zero pattern,
``osc(X^, X) = max_ij log(X^_ij / X_ij) - min_ij log(X^_ij / X_ij)`` (over the non-zeros; a scale factor common to
all entries does not count, which is what projective normalisation needs). With ``ub = -log(1 - u)``:

* a rounded input entry (an exact weight rounded ONCE to the dtype, :mod:`hmm.rounding`), a product or a quotient:
  ``2 ub`` each;
* a sum of ``k`` non-negative terms in any order (any summation tree, FMA or not; adding an exact zero is exact):
  each term passes through at most ``k - 1`` roundings, so the sum's log-ratio lies in ``[-(k-1) ub, (k-1) ub]``;
* the product ``F Q`` of the doubling FFN: ``osc(F^ Q^) <= osc(F^) + osc(Q^) + 2 n ub`` (one product, ``n - 1``
  additions per term); writing it into the **fresh** block and clearing the old one is exact;
* projective normalisation: the common divisor does not count, the division rounds once: ``+ 2 ub``;
* hard attention copies exactly.

So after the embedding ``osc = 2 ub`` and every doubling layer maps ``osc_u <- osc_t + osc_u + 2 (n + 1) ub``
(t the attended position). A readout ``z_c = sum of k_c terms Q_ij M_jc`` adds ``2 (k + 1) ub``, and the output
``p_c = z_c / sum_c z_c`` (``w`` entries) satisfies ``|log(p^_c / p_c)| <= osc_z + w ub =: R``, hence
``|p^_c - p_c| <= p_c expm1(R) <= expm1(R)``: a **relative** bound on every output, independent of the
conditioning of the HMM. The no-underflow condition is checked on the hard float64 run (:func:`underflow_check`);
when it fails the derived bound does not apply and the caller must fall back to the trivial bound.

Softmax attention mixes ``P`` rows with computed ``exp`` weights; the recursion then adds ``2 (P + 2) ub`` per
layer for the mixing (a **heuristic** allowance: it assumes the computed weights are within a few ulps of the
exact ones, which is not proved here); the certified alternative is ``--certify`` (:mod:`constructions.certified`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from hmm.errors import HmmtxError

#: Smallest positive normal number per float mode (below it the relative rounding model does not hold).
TINY = {"float64": float(np.finfo(np.float64).tiny), "float32": float(np.finfo(np.float32).tiny)}
#: Unit round-off per float mode (``eps / 2``).
UNIT = {"float64": float(np.finfo(np.float64).eps) / 2, "float32": float(np.finfo(np.float32).eps) / 2}


class RoundoffBound(NamedTuple):
    """A round-off bound on every output of a prefix construction in one float mode.

    Fields:
        value:     bound on ``|p^ - p|`` for every output entry (``expm1(log_ratio)``; 1 when not ``valid``)
        log_ratio: ``R`` with ``|log(p^_c / p_c)| <= R`` for every output entry (relative bound)
        kind:      ``"derived"`` (proved under the IEEE model, conditions checked) or ``"heuristic"``
        valid:     False when the no-underflow condition failed (then ``value`` is the trivial 1)
        note:      one line: how it was computed
    """

    value: float
    log_ratio: float
    kind: str
    valid: bool
    note: str


def unit_log(mode: str) -> float:
    """``ub = -log(1 - u)``: the largest ``|log(1 + d)|`` of one rounding in ``mode``."""
    if mode not in UNIT:
        raise HmmtxError(f"round-off bound: mode must be float64 or float32, got {mode!r}")
    return -math.log1p(-UNIT[mode])


def tree_osc(P: int, L: int, n: int, ub: float, *, mixing: float = 0.0) -> np.ndarray:
    """``osc`` (P,) of the held product at every position after ``L`` doubling layers (positions ``0..P-1``,
    position 0 the NULL sink): ``osc_u <- osc_t + osc_u + 2 (n + 1) ub + mixing`` with ``t = u - 2^l`` (or 0)."""
    pos = np.arange(P)
    osc = np.full(P, 2.0 * ub)
    for l in range(L):
        t = np.where(pos >= 2**l, pos - 2**l, 0)
        osc = osc[t] + osc + 2.0 * (n + 1) * ub + mixing
    return osc


def output_log_ratio(osc: float, k_terms: int, width: int, ub: float) -> float:
    """``R = osc + 2 (k + 1) ub + width ub`` for a readout of ``k`` terms per output, normalised over ``width``."""
    return float(osc + 2.0 * (k_terms + 1) * ub + width * ub)


def readout_terms(readout: Any) -> tuple[int, int]:
    """(largest number of non-zero terms of one output row, output width normalised over) of a Readout."""
    from constructions.blocks import nonzeros

    rows = np.bincount([r for r, _, _ in nonzeros(readout.W_U)], minlength=readout.W_U.shape[0])
    return int(rows.max(initial=1)), int(readout.shape[-1])


def prefix_roundoff(model: Any, P: int, mode: str, *, extra_osc: dict | None = None,
                    valid: bool = True, why: str = "", product_extra: float = 0.0) -> RoundoffBound:
    """The round-off bound of a prefix construction with ``L = len(model.info.prefix_layers)`` doubling
    layers on ``P`` positions in ``mode``. ``extra_osc`` maps a readout name to the ``osc`` of the block it reads
    when that is not the final product (H1's filtered belief); every other readout reads the final product.
    Softmax attention adds the heuristic mixing term (see module docstring); ``product_extra`` (a log-ratio, e.g.
    the gated-MLP activation term of a standard-block variant, heuristic) is added at every doubling layer."""
    ub = unit_log(mode)
    n = int(model.info.n)
    L = len(model.info.prefix_layers)
    soft = model.attention == "softmax"
    mixing = (2.0 * (P + 2) * ub if soft else 0.0) + float(product_extra)
    osc_final = float(tree_osc(P, L, n, ub, mixing=mixing).max())
    R = 0.0
    for name, r in model.readouts.items():
        k, w = readout_terms(r)
        f = (extra_osc or {}).get(name)
        osc = f(osc_final) if f is not None else osc_final
        R = max(R, output_log_ratio(osc, k, w, ub))
    kind = "heuristic" if soft or product_extra > 0 else "derived"
    terms = ([", softmax mixing term heuristic"] if soft else []) + \
        ([f", activation term {product_extra:.3g} per product heuristic"] if product_extra > 0 else [])
    note = (f"{kind} round-off bound: |log(p^/p)| <= {R:.3g} (relative, per output; n={n}, L={L}, P={P}, "
            f"u={UNIT[mode]:.3g}{''.join(terms)})")
    if not valid:
        return RoundoffBound(1.0, math.inf, kind, False, f"{kind} round-off bound not applicable: {why}")
    return RoundoffBound(float(math.expm1(R)), R, kind, True, note)


def underflow_check(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], mode: str, margin: float = 4.0) -> str:
    """``""`` when every product ``a * b`` of non-zero entries that the run forms stays above ``margin * tiny``
    (so no operand or result of a product, sum or division leaves the normal range), else a one-line reason.

    ``pairs``: ``(where, a_min, b_min)`` with the smallest positive entry of each factor per position (N, P)
    (``inf`` where a factor has no positive entry)."""
    tiny = TINY[mode] * margin
    for where, a, b in pairs:
        with np.errstate(over="ignore", invalid="ignore"):
            prod = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
        bad = prod < tiny
        if bool(np.any(bad)):
            return (f"{where}: a product of positive entries reaches {float(np.min(prod)):.3g} < {tiny:.3g} "
                    f"(the {mode} run may underflow)")
    return ""


def min_positive(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Smallest positive entry over ``axes`` (``inf`` where none)."""
    return np.where(x > 0, x, np.inf).min(axis=axes)


__all__ = ["RoundoffBound", "TINY", "UNIT", "unit_log", "tree_osc", "output_log_ratio", "readout_terms",
           "prefix_roundoff", "underflow_check", "min_positive"]
