"""THE run-and-compare path: build a registered construction, run it in a mode, compute the reference, compare,
claim the bound. ``hmmtx run``, ``hmmtx verify`` (every case), ``hmmtx bench h1`` and the tests all call
:func:`run_construction`; the one rule for when the exact reference is used is
:func:`constructions.registry.use_exact_reference`.

Anything a construction's own code raises (build, run, decode, reference, bound) that is not an
:class:`~hmm.errors.HmmtxError` comes back as :class:`ConstructionError` naming the construction and the step, so
the CLI prints one line (exit 2) and ``verify`` records a failed case, never a traceback. Wrong output shapes, a
missing reference output and a negative or NaN bound are errors of the same kind.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Any, Callable, MutableMapping, NamedTuple

import numpy as np

from constructions.registry import ConstructionEntry, use_exact_reference
from constructions.types import MODES, BoundReport, RunResult, check_bound
from hmm.errors import HmmtxError

class ConstructionError(HmmtxError):
    """A construction's own code failed (raised, returned the wrong thing): the message names it and the step."""


class ConstructionRun(NamedTuple):
    """Everything one run measured.

    Fields:
        entry:          the registry entry
        model:          the built :class:`~constructions.transformer.ConstructedTransformer`
        result:         :class:`~constructions.types.RunResult` (outputs, trace, input ids (N, P), mode)
        reference:      {output name: array} (Fractions for an exact reference, float64 otherwise)
        reference_kind: ``"exact"`` or ``"float64"``
        errors:         output name -> max |output - reference| for every output both sides have (float; the
                        difference is taken exactly when both sides are exact)
        max_abs_error:  max of ``errors`` over :attr:`compared` (the outputs the claimed bound covers)
        bit_identical:  exact mode: True when every compared output equals the exact reference exactly; else None
        bound:          the checked :class:`~constructions.types.BoundReport`
        seconds:        wall time of build, run, reference, bound
        compared:       the bound-covered outputs that were compared (in the entry's order)
    """

    entry: ConstructionEntry
    model: Any
    result: RunResult
    reference: dict
    reference_kind: str
    errors: dict
    max_abs_error: float
    bit_identical: bool | None
    bound: BoundReport
    seconds: dict
    compared: tuple = ()


# ---------------------------------------------------------------------------------------------- comparison
def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def compare(got: Any, ref: Any, *, exact: bool, what: str = "output") -> tuple[float, bool]:
    """(max |got - ref| as a float, exact equality) of two arrays whose shapes agree up to a leading batch axis of
    size 1 (N = 1 runs against a single-sequence reference).

    ``exact``: both must hold exact numbers (object arrays of Fractions / ints) and the difference is taken
    exactly before converting to float; a float on either side is an error. Otherwise float64 differences; a NaN
    gives ``(nan, False)``.
    """
    g, r = _as_numpy(got), _as_numpy(ref)
    if g.shape != r.shape:
        if g.ndim == r.ndim + 1 and g.shape[0] == 1 and g.shape[1:] == r.shape:
            g = g[0]
        elif r.ndim == g.ndim + 1 and r.shape[0] == 1 and r.shape[1:] == g.shape:
            r = r[0]
        else:
            raise HmmtxError(f"{what}: shape {g.shape} differs from the reference's {r.shape}")
    if g.size == 0:
        return 0.0, True
    if exact:
        if np.issubdtype(g.dtype, np.floating) or np.issubdtype(r.dtype, np.floating):
            raise HmmtxError(f"{what}: exact mode needs exact numbers on both sides, got {g.dtype} and {r.dtype}")
        # equal entries first (cheap for the flint reference's lazily reduced LazyFractions: cross products)
        diffs = [Fraction(0) if a == b else abs(Fraction(a) - Fraction(b)) for a, b in zip(g.ravel(), r.ravel())]
        m = max(diffs)
        return float(m), m == 0
    try:
        gf = g.astype(np.float64) if g.dtype != object else np.array(g.tolist(), dtype=np.float64)
        rf = r.astype(np.float64) if r.dtype != object else np.array(r.tolist(), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HmmtxError(f"{what}: values are not numbers ({exc})") from None
    except OverflowError:
        raise HmmtxError(f"{what}: the exact reference's values overflow float64 (the computation diverges for "
                         "these parameters, e.g. a GD step --eta far beyond 2 / lam_max with many layers --K)") from None
    d = np.abs(gf - rf)
    if np.isnan(d).any():
        return math.nan, False
    return float(d.max()), bool((d == 0).all())


def output_error(got: Any, ref: Any) -> tuple[float, bool]:
    """(max |got - ref|, exactly equal), exact when both are object arrays (former helper of ``hmmtx run``)."""
    g, r = _as_numpy(got), _as_numpy(ref)
    return compare(g, r, exact=g.dtype == object and r.dtype == object)


# ---------------------------------------------------------------------------------------------- steps
def _call(entry: ConstructionEntry, step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a non-HmmtxError becomes a :class:`ConstructionError` naming the step."""
    try:
        return fn(*args, **kwargs)
    except HmmtxError:
        raise
    except Exception as exc:  # noqa: BLE001 - a construction's bug is reported in one line, not as a traceback
        raise ConstructionError(f"construction '{entry.name}': {step} raised {type(exc).__name__}: {exc}") from exc


def check_run_request(entry: ConstructionEntry, mode: str, attention: str, reference: str) -> None:
    """HmmtxError for a mode / attention / reference combination the construction cannot run."""
    if mode not in MODES:
        raise HmmtxError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode not in entry.modes:
        raise HmmtxError(f"construction '{entry.name}' does not support mode {mode!r} (modes: {', '.join(entry.modes)})")
    if reference not in ("auto", "exact", "float64"):
        raise HmmtxError(f"reference must be 'auto', 'exact' or 'float64', got {reference!r}")
    if mode == "exact" and reference == "float64":
        raise HmmtxError("--reference float64 with --mode exact would compare exact outputs with rounded ones: "
                         "exact mode is always checked against the exact reference")
    if reference == "exact" and not entry.exact_reference:
        raise HmmtxError(f"construction '{entry.name}' has no exact reference (use --reference float64 or auto)")
    if mode == "exact" and attention != "hard":
        raise HmmtxError("exact mode runs hard attention only (softmax weights are not rational): use --attention hard")


def reference_is_exact(entry: ConstructionEntry, source: Any, tokens: Any, mode: str, reference: str = "auto") -> bool:
    """Whether the run uses the exact reference: ``reference`` when given, else :func:`use_exact_reference`."""
    if reference == "auto":
        return use_exact_reference(entry, mode, entry.problem_size(source, tokens))
    return reference == "exact"


def compare_outputs(entry: ConstructionEntry, outputs: dict, ref: dict, mode: str) -> tuple[dict, tuple, float, bool]:
    """Compare every output both sides name. Returns (errors by name, compared bound-covered names, max error over
    them, all of them exactly equal). Bound-covered outputs in exact mode must be exact on both sides."""
    if not isinstance(ref, dict):
        raise ConstructionError(f"construction '{entry.name}': reference returned {type(ref).__name__}, not a dict of outputs")
    errors: dict[str, float] = {}
    equal: dict[str, bool] = {}
    covered = entry.bounded_outputs()
    for name in entry.outputs:
        if name in outputs and name in ref:
            exact = mode == "exact" and name in covered
            if not exact:  # uncovered outputs (statuses, masses): exactly when both sides are exact
                exact = _as_numpy(outputs[name]).dtype == object and _as_numpy(ref[name]).dtype == object
            errors[name], equal[name] = compare(outputs[name], ref[name], exact=exact,
                                                what=f"{entry.name} output '{name}'")
    compared = tuple(n for n in covered if n in errors)
    if not compared:
        raise ConstructionError(
            f"construction '{entry.name}': the model's outputs {sorted(outputs)} and the reference's {sorted(ref)} "
            f"share none of the bound-covered outputs {list(covered)}")
    errs = [errors[n] for n in compared]
    worst = float("nan") if any(e != e for e in errs) else max(errs)  # a NaN error is never hidden by max()
    return errors, compared, worst, all(equal[n] for n in compared)


def parse_tokens(entry: ConstructionEntry, text: str) -> Any:
    """``entry.parse_tokens(text)``; the construction's own failures become one-line errors."""
    return _call(entry, "parse_tokens", entry.parse_tokens, text)


def build_model(entry: ConstructionEntry, source: Any, tokens: Any, *, attention: str = "hard",
                beta: float | None = None, params: dict | None = None) -> Any:
    """``entry.build(...)`` checked: a non-HmmtxError or something that is not a model becomes a
    :class:`ConstructionError` naming the construction."""
    model = _call(entry, "build", entry.build, source, tokens, attention=attention, beta=beta, **dict(params or {}))
    if not hasattr(model, "run") or not hasattr(model, "claimed_bound"):
        raise ConstructionError(f"construction '{entry.name}': build returned {type(model).__name__}, "
                                "not a ConstructedTransformer")
    return model


# ---------------------------------------------------------------------------------------------- the one path
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
    model: Any = None,
    reference_cache: MutableMapping[bool, dict] | None = None,
) -> ConstructionRun:
    """Build ``entry`` for ``source``/``tokens``, run it in ``mode``, compare with the reference, claim the bound.

    Args:
        entry: the registry entry.
        source: what ``entry.build``/``entry.reference`` take first (HMM, task mixture, or None).
        tokens: in the construction's format (``entry.parse_tokens`` of a CLI string).
        mode: ``"exact"``, ``"float64"`` or ``"float32"``.
        attention, beta: ``"hard"``, or ``"softmax"`` with inverse temperature ``beta``.
        params: the construction's own parameters (:class:`~constructions.registry.Param` names).
        reference: ``"auto"`` (:func:`~constructions.registry.use_exact_reference`), ``"exact"`` or ``"float64"``.
        record: trace level of the run (``"final"`` keeps the last residual and the readouts).
        model: an already built model for exactly these arguments (verify reuses one across modes).
        reference_cache: {exact?: reference outputs} shared by runs on the same source, tokens and params.

    In exact mode the source is converted to exact rationals first, so the construction and the reference see the
    same numbers. Raises HmmtxError (``ConstructionError`` for the construction's own failures).
    """
    check_run_request(entry, mode, attention, reference)
    params = dict(params or {})
    if mode == "exact" and source is not None and hasattr(source, "as_exact"):
        source = source.as_exact()
    t0 = time.perf_counter()
    if model is None:
        model = build_model(entry, source, tokens, attention=attention, beta=beta, params=params)
    t1 = time.perf_counter()
    result = _call(entry, "run", model.run, tokens, mode, record=record)
    t2 = time.perf_counter()
    exact_ref = reference_is_exact(entry, source, tokens, mode, reference)
    ref = None if reference_cache is None else reference_cache.get(exact_ref)
    if ref is None:
        ref = _call(entry, "reference", entry.reference, source, tokens, exact=exact_ref, **params)
        if reference_cache is not None:
            reference_cache[exact_ref] = ref
    t3 = time.perf_counter()
    errors, compared, max_err, same = compare_outputs(entry, result.outputs, ref, mode)
    bound = check_bound(_call(entry, "claimed bound", model.claimed_bound, tokens, mode), entry.name)
    t4 = time.perf_counter()
    return ConstructionRun(
        entry, model, result, ref, "exact" if exact_ref else "float64", errors, max_err,
        same if mode == "exact" else None, bound,
        {"build": t1 - t0, "run": t2 - t1, "reference": t3 - t2, "bound": t4 - t3}, compared,
    )


__all__ = [
    "ConstructionRun",
    "ConstructionError",
    "run_construction",
    "compare",
    "compare_outputs",
    "output_error",
    "check_run_request",
    "build_model",
    "parse_tokens",
    "reference_is_exact",
]
