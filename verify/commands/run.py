"""``hmmtx run NAME``: build a registered construction, run it on tokens, compare with the exact reference.

    hmmtx run exact-filter --hmm FILE --tokens "0 1 2" [--mode exact|float64|float32]
              [--attention hard|softmax --beta B] [--json OUT]
    hmmtx run bayes-multitask --tasks FILE --tokens "0 1 2 | 1 0 | 2"

Prints a table (per position: token, model next-token probabilities, reference, max |error|) and the claimed
bound; ``--json`` writes the machine-readable result (keys documented in :func:`result_json`). Construction-specific
options come from the registry entry (``hmmtx run NAME --help``). Exit status: 0 within the claimed bound (and
bit-identical in exact mode), 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from verify.commands._construction_cli import (
    add_attention_arguments,
    check_beta,
    check_size,
    load_source,
    register_generic,
    resolve,
)

DESCRIPTION = (
    "Build a hand-constructed Transformer (a registered construction), run it on --tokens in the chosen number "
    "mode, and compare its outputs with the exact reference; report the max error next to the claimed bound."
)

def register(subparsers: Any) -> None:
    register_generic(subparsers, "run", "run a construction on tokens and compare with the exact reference", DESCRIPTION, run)


def _common(p: argparse.ArgumentParser, entry: Any) -> None:
    p.add_argument("--tokens", required=True, help='tokens, e.g. "0 1 2" (multi-task: "0 1 2 | 1 0 | 2", | = SEP)')
    p.add_argument("--mode", default="float64", choices=list(entry.modes), help="number mode (default float64)")
    add_attention_arguments(p, entry)
    p.add_argument("--reference", default="auto", choices=["auto", "exact", "float64"],
                   help="reference arithmetic for float modes (auto: exact where S <= 4 and T <= 64, the rule verify uses)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the result as JSON (atomically)")
    p.add_argument("--certify", action="store_true",
                   help="also run the same weights in ball arithmetic (python-flint arb) and judge the run by "
                        "leakage + CERTIFIED round-off (|float - enclosure midpoint| + radius; docs/certified.md)")
    p.add_argument("--rows", type=int, default=12, help="positions shown in the table (first and last; default 12)")


def run(args: argparse.Namespace) -> int:
    from hmm.errors import HmmtxError

    got = resolve(args, _common, DESCRIPTION)
    if got is None:
        return 0
    entry, ns = got
    if ns.rows < 1:
        raise HmmtxError(f"--rows must be positive, got {ns.rows}")
    beta = check_beta(ns.attention, ns.beta, getattr(ns, "_default_beta", None))
    source = load_source(entry, ns)
    from constructions.runner import parse_tokens, run_construction

    tokens = parse_tokens(entry, ns.tokens)
    check_size(entry, source, tokens, entry.param_values(ns), ns.mode)

    res = run_construction(entry, source, tokens, mode=ns.mode, attention=ns.attention, beta=beta,
                           params=entry.param_values(ns), reference=ns.reference)
    if not math.isfinite(res.max_abs_error):
        raise HmmtxError(f"{entry.name}: the {ns.mode} run produced non-finite outputs (overflow or 0/0 in {ns.mode}), "
                         f"so its error cannot be measured; try --mode float64 (or a smaller model)")
    data = result_json(res, ns.tokens)
    cv = None
    if ns.certify:
        from constructions.certified import certify_run

        cv = certify_run(res, tokens)
        data["certified"] = cv.as_dict()
    extra = _extra_report(entry, source, tokens, ns)
    data.update(extra)
    _print(res, ns, data)
    if cv is not None:
        _print_certified(res, cv)
    _print_extra(extra)
    if ns.json:
        from hmm.io import atomic_write_json

        atomic_write_json(ns.json, data)
    # like `hmmtx verify`: exit 1 when the run breaks its claimed bound (the certified one with --certify) or exact
    # mode is not bit-identical
    within = cv.within if cv is not None else data["within_bound"]
    return 0 if within and res.bit_identical is not False else 1


def _print_certified(res: Any, cv: Any) -> None:
    from rich.console import Console

    verdict = "[green]within certified bound[/green]" if cv.within else "[red]EXCEEDS CERTIFIED BOUND[/red]"
    inside = {True: "; exact reference inside every ball", False: "; [red]exact reference OUTSIDE a ball[/red]",
              None: ""}[cv.contains_reference]
    Console().print(
        f"certified: |error| {res.max_abs_error:.3g} <= leakage {res.bound.leakage:.3g} + certified round-off "
        f"{cv.roundoff:.3g} = {cv.bound:.3g}   {verdict}   (enclosure radius {cv.radius:.2g} at {cv.prec} bits, "
        f"{cv.seconds:.2g} s; {res.bound.roundoff_kind} round-off {res.bound.roundoff:.3g}){inside}")


def _extra_report(entry: Any, source: Any, tokens: Any, ns: argparse.Namespace) -> dict:
    from hmm.errors import HmmtxError

    """Construction-specific extra JSON keys: ``entry.report(source, tokens, exact=..., **params)`` (e.g. the
    window construction's ``r``, ``a_priori_bound``, ``a_posteriori_bound``); {} when absent."""
    if entry.report is None:
        return {}
    from constructions.runner import ConstructionError

    exact = ns.mode == "exact"
    if exact and source is not None and hasattr(source, "as_exact"):
        source = source.as_exact()
    try:
        got = entry.report(source, tokens, exact=exact, **entry.param_values(ns))
    except HmmtxError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        raise ConstructionError(f"construction '{entry.name}': report raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(got, dict):
        raise ConstructionError(f"construction '{entry.name}': report returned {type(got).__name__}, not a dict")
    return dict(got)


def _print_extra(extra: dict) -> None:
    if not extra:
        return
    from rich.console import Console

    console = Console()
    for k, v in extra.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk} = {vv:.3g}" if isinstance(vv, float) else f"{kk} = {vv}" for kk, vv in v.items())
        elif isinstance(v, float):
            v = f"{v:.3g}"
        console.print(f"{k}: {v}")


# ---------------------------------------------------------------------------------------------- JSON
def _num(v: Any) -> Any:
    """Exact values as full "p/q" strings (any number of digits: :func:`hmm.io.fraction_full`); floats as numbers,
    non-finite floats (overflow, 0/0 in an unbounded output) as null (JSON has no NaN)."""
    from fractions import Fraction

    if isinstance(v, Fraction):
        from hmm.io import fraction_full

        return fraction_full(v)
    f = float(v)
    return f if math.isfinite(f) else None


def _finite_or_none(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _rows(a: Any) -> list:
    import numpy as np

    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim == 0:
        return _num(a.item())
    return [_rows(r) for r in a] if a.ndim > 1 else [_num(v) for v in a.tolist()]


def result_json(res: Any, tokens_text: str) -> dict:
    """JSON-ready dict. Keys: construction, mode, attention, beta, tokens, next_token_probs (one row per position),
    reference_next_token_probs, max_abs_error, errors (per output), bit_identical (exact mode), claimed_bound,
    bound (value/leakage/roundoff/trivial/notes), bound_ratio (error / bound), reference_kind, layers, heads, width,
    ffn_width, provenance, seconds; plus every other output the construction names and its reference_* (e.g.
    task_posterior / reference_task_posterior for bayes-multitask). Exact values are "p/q" strings written in full
    (read back with :func:`hmm.io.parse_fraction_full`); non-finite floats are null and the outputs holding them
    are listed under non_finite_outputs."""
    spec = res.model.spec
    out = {
        "construction": res.entry.name,
        "mode": res.result.mode,
        "attention": res.model.attention,
        "beta": res.model.beta,
        "tokens": tokens_text,
        "reference_kind": res.reference_kind,
    }
    for name in res.entry.outputs:
        if name in res.result.outputs:
            out[name] = _rows(res.result.outputs[name])
        if name in res.reference:
            out[f"reference_{name}"] = _rows(res.reference[name])
    b = res.bound
    out.update({
        "max_abs_error": res.max_abs_error,
        "errors": {k: _finite_or_none(float(v)) for k, v in res.errors.items()},
        "certified": None,
        "non_finite_outputs": sorted(k for k, v in res.errors.items() if not math.isfinite(float(v))),
        "bit_identical": res.bit_identical,
        "claimed_bound": b.value,
        "bound": {"value": b.value, "leakage": b.leakage, "roundoff": b.roundoff, "trivial": b.trivial, "notes": b.notes,
                  "roundoff_kind": b.roundoff_kind},
        "bound_ratio": (res.max_abs_error / b.value) if b.value > 0 else (0.0 if res.max_abs_error == 0 else None),
        "within_bound": res.max_abs_error <= b.value,
        "layers": spec.layers,
        "heads": spec.heads,
        "width": spec.width,
        "ffn_width": spec.ffn_width,
        "provenance": spec.provenance,
        "parameters": spec.parameters,
        "seconds": res.seconds,
    })
    return out


# ---------------------------------------------------------------------------------------------- table
def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v if len(v) <= 14 else v[:13] + "…"
    return f"{v:.6g}"


def _print(res: Any, ns: argparse.Namespace, data: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    spec = res.model.spec
    console.print(
        f"[bold]{res.entry.name}[/bold]  mode={res.result.mode}  attention={res.model.attention}"
        + (f" beta={res.model.beta:g}" if res.model.beta else "")
        + f"  layers={spec.layers} heads={spec.heads} width={spec.width} ffn_width={spec.ffn_width}"
    )
    console.print(f"[dim]{spec.provenance}[/dim]")
    # the displayed output: next_token_probs, else the construction's first output with a reference
    shown = "next_token_probs" if "next_token_probs" in data else next(
        (n for n in res.entry.outputs if n in data and f"reference_{n}" in data), "next_token_probs")
    pred = data[shown]
    ref = data[f"reference_{shown}"]
    items = _token_items(ns.tokens)
    n = len(pred)
    show = list(range(n)) if n <= ns.rows else list(range(ns.rows // 2)) + [-1] + list(range(n - (ns.rows - ns.rows // 2), n))
    tab = Table(title="next-token probabilities (model vs reference)" if shown == "next_token_probs" else f"{shown} (model vs reference)")
    tab.add_column("t", justify="right")
    tab.add_column("item")
    tab.add_column("model")
    tab.add_column("reference")
    tab.add_column("max |err|", justify="right")
    if "task_posterior" in data:
        tab.add_column("task posterior")
    from constructions.runner import output_error

    got, refa = res.result.outputs[shown], res.reference[shown]

    for t in show:
        if t == -1:
            tab.add_row("…", "", "", "", "")
            continue
        e, _ = output_error(got[t], refa[t])
        row = [str(t), items[t] if t < len(items) else "", " ".join(_fmt(v) for v in _items(pred[t])), " ".join(_fmt(v) for v in _items(ref[t])), f"{e:.3g}"]
        if "task_posterior" in data:
            row.append(" ".join(_fmt(v) for v in data["task_posterior"][t]))
        tab.add_row(*row)
    console.print(tab)
    b = res.bound
    ratio = data["bound_ratio"]
    verdict = "[green]within bound[/green]" if data["within_bound"] else "[red]EXCEEDS BOUND[/red]"
    console.print(
        f"max |error| = {res.max_abs_error:.3g} (reference: {res.reference_kind})   claimed bound = {b.value:.3g}"
        f" (leakage {b.leakage:.3g} + round-off {b.roundoff:.3g})"
        + (f"   ratio = {ratio:.3g}" if ratio is not None else "") + f"   {verdict}"
    )
    if res.bit_identical is not None:
        console.print("bit-identical to the exact reference: " + ("[green]yes[/green]" if res.bit_identical else "[red]no[/red]"))
    console.print(f"[dim]round-off part: {b.roundoff_kind}; {b.notes}[/dim]")
    if data.get("non_finite_outputs"):
        console.print(f"[yellow]non-finite values (overflow or 0/0) in unbounded outputs: "
                      f"{', '.join(data['non_finite_outputs'])} (written as null in --json)[/yellow]")


def _items(v: Any) -> list:
    """A row of an output as a list (scalar outputs, e.g. memory-kernel's ``y``, give one item)."""
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _token_items(text: str) -> list[str]:
    out = []
    for i, seg in enumerate(text.split("|")):
        if i:
            out.append("SEP")
        out.extend(seg.replace(",", " ").split())
    return out
