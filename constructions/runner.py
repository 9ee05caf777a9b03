"""Run a registered construction end to end: build, execute, compare with the reference, claimed bound.

This is what ``hmmtx run`` prints; the verification suite may use it too. Generic over the registry.
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from constructions.registry import ConstructionEntry
from constructions.transformer import MODES, BoundReport, ConstructedTransformer, RunResult
from hmm.errors import HmmtxError

#: Float modes compare with the exact (Fraction) reference while ``T * n^2`` stays below this, else with float64.
EXACT_REFERENCE_BUDGET = 40_000


class ConstructionRun(NamedTuple):
    """Everything one run measured.

    Fields:
        entry:          the registry entry
        model:          the built :class:`ConstructedTransformer`
        result:         :class:`RunResult` (outputs, trace, input ids, mode)
        reference:      dict of reference outputs (Fractions for an exact reference, float64 otherwise)
        reference_kind: ``"exact"`` or ``"float64"``
        errors:         output name -> max |output - reference| (float; computed exactly for exact references)
        max_abs_error:  max of ``errors`` over the outputs the bound covers (``entry.bounded_outputs()``)
        bit_identical:  True when every compared output equals the exact reference exactly (exact mode), else None
        bound:          :class:`BoundReport`
        seconds:        wall time of build, run, reference
    """

    entry: ConstructionEntry
    model: ConstructedTransformer
    result: RunResult
    reference: dict
    reference_kind: str
    errors: dict
    max_abs_error: float
    bit_identical: bool | None
    bound: BoundReport
    seconds: dict


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def output_error(got: Any, ref: Any) -> tuple[float, bool]:
    """(max |got - ref|, exactly equal). Exact (Fraction) differences when both are object arrays."""
    g, r = _np(got), _np(ref)
    if g.shape != r.shape:
        raise HmmtxError(f"output shape {g.shape} differs from the reference's {r.shape}")
    if g.size == 0:
        return 0.0, True
    if g.dtype == object and r.dtype == object:
        d = max(abs(Fraction(a) - Fraction(b)) for a, b in zip(g.ravel(), r.ravel()))
        return float(d), d == 0
    gf = np.array(g.tolist(), dtype=np.float64) if g.dtype == object else g.astype(np.float64)
    rf = np.array(r.tolist(), dtype=np.float64) if r.dtype == object else r.astype(np.float64)
    d = np.abs(gf - rf)
    return float(d.max()), bool((d == 0).all())


def run_construction(
    entry: ConstructionEntry,
    source: Any,
    tokens: Any,
    *,
    mode: str = "float64",
    attention: str = "hard",
    beta: float | None = None,
    params: dict | None = None,
    reference: str = "auto",
    record: str = "final",
) -> ConstructionRun:
    """Build ``entry`` for ``source``/``tokens``, run it in ``mode``, compare every output the reference names.

    ``reference``: ``"exact"``, ``"float64"`` or ``"auto"`` (exact in exact mode or for small inputs, see
    :data:`EXACT_REFERENCE_BUDGET`). In exact mode the source is converted to exact rationals first, so the
    construction and the reference see the same numbers.
    """
    if mode not in MODES:
        raise HmmtxError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode not in entry.modes:
        raise HmmtxError(f"construction '{entry.name}' does not support mode {mode!r} (modes: {', '.join(entry.modes)})")
    if mode == "exact" and reference == "float64":
        raise HmmtxError("--reference float64 with --mode exact would compare exact outputs with rounded ones: "
                         "exact mode is always checked against the exact reference")
    if mode == "exact" and attention != "hard":
        raise HmmtxError("exact mode runs hard attention only (softmax weights are not rational): use --attention hard")
    params = dict(params or {})
    if mode == "exact" and source is not None and hasattr(source, "as_exact"):
        source = source.as_exact()
    t0 = time.perf_counter()
    model = entry.build(source, tokens, attention=attention, beta=beta, **params)
    t1 = time.perf_counter()
    result = model.run(tokens, mode, record=record)
    t2 = time.perf_counter()
    if reference == "auto":
        n = model.info.get("n", 1) if isinstance(model.info, dict) else 1
        T = result.input_ids.shape[1]
        exact_ref = mode == "exact" or T * n * n <= EXACT_REFERENCE_BUDGET
    elif reference in ("exact", "float64"):
        exact_ref = reference == "exact"
    else:
        raise HmmtxError(f"reference must be 'auto', 'exact' or 'float64', got {reference!r}")
    ref = entry.reference(source, tokens, exact=exact_ref, **params)
    t3 = time.perf_counter()
    errors, same = {}, True
    for name in entry.outputs:
        if name in result.outputs and name in ref:
            e, ok = output_error(result.outputs[name], ref[name])
            errors[name] = e
            same = same and ok
    if not errors:
        raise HmmtxError(f"{entry.name}: the model's outputs {sorted(result.outputs)} share no name with the reference's {sorted(ref)}")
    # the claimed bound covers the bounded outputs (probabilities); masses and statuses are reported, not bounded
    bounded = [errors[n] for n in entry.bounded_outputs() if n in errors] or list(errors.values())
    bound = model.claimed_bound(tokens, mode)
    t4 = time.perf_counter()
    return ConstructionRun(
        entry, model, result, ref, "exact" if exact_ref else "float64", errors, max(bounded),
        same if mode == "exact" else None, bound,
        {"build": t1 - t0, "run": t2 - t1, "reference": t3 - t2, "bound": t4 - t3},
    )


__all__ = ["ConstructionRun", "run_construction", "output_error", "EXACT_REFERENCE_BUDGET"]
