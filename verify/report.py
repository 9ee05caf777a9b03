"""Reports of a verification run: per-construction summaries, the JSON report, reproducers, the rich table.

The JSON format is documented in ``docs/report-format.md`` and fixed by the JSON Schema shipped beside this module
(``verify/report_schema.json``, :func:`load_schema`). Every file is written atomically (:mod:`hmm.io`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import shlex
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from hmm.errors import HmmtxError
from hmm.io import atomic_write_json, atomic_write_text
from verify.suite import DTYPES, CaseResult, Plan

#: Identifies the report format; bump the number on an incompatible change.
SCHEMA_ID = "hmmtx.verify-report/1"

#: Default folder for reproducers when neither --reproducers nor --json is given (relative to the working directory).
DEFAULT_REPRODUCER_DIR = "hmmtx-reproducers"


# ---------------------------------------------------------------------------------------------- summaries
class DtypeSummary(NamedTuple):
    """One number mode of one construction.

    ``max_bound`` is the largest *finite* claimed bound (None if every bound was infinite or every case crashed);
    ``max_ratio`` the largest error / (bound + allowance) (None when undefined everywhere).
    """

    dtype: str
    cases: int
    failed: int
    max_error: float | None
    max_bound: float | None
    max_allowance: float | None
    max_ratio: float | None
    exact_agree: int | None  # exact mode: how many cases agreed bit for bit; None for float modes
    seconds: float
    allowance_kind: str = "heuristic"  # the kinds of the allowances of these cases (comma-joined, sorted)
    max_certified: float | None = None  # --certify: the largest certified round-off (None without --certify)


class ConstructionSummary(NamedTuple):
    """All cases of one construction: counts, maxima, the worst case and where its reproducer went."""

    construction: str
    summary: str
    provenance: str
    cases: int
    failed: int
    crashed: int
    max_error: float | None
    max_bound: float | None
    max_allowance: float | None
    max_ratio: float | None
    exact_cases: int
    exact_agree: int
    seconds: float
    by_dtype: tuple[DtypeSummary, ...]
    worst: CaseResult | None
    reproducer: str | None  # folder of the worst case's reproducer (None when none was written)
    replay_command: str | None
    largest: CaseResult | None = None  # the case with the widest built model (its ``size`` is reported)

    @property
    def passed(self) -> bool:
        return self.failed == 0


def _max(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return max(vals) if vals else None


def _finite_max(values: Iterable[float | None]) -> float | None:
    return _max(v for v in values if v is not None and math.isfinite(v))


def largest_case(results: Sequence[CaseResult]) -> CaseResult | None:
    """The case whose built model is largest (width, then layers, then FFN width); None without sizes."""
    sized = [r for r in results if r.size and "width" in r.size]
    if not sized:
        return None
    key = lambda r: (r.size.get("width", 0), r.size.get("layers", 0), r.size.get("ffn_width", 0))  # noqa: E731
    return max(sized, key=key)


def worst_case(results: Sequence[CaseResult]) -> CaseResult | None:
    """The case to reproduce: a crash first, then a broken exact check, then the largest tightness ratio, then the
    largest error (ties: the first)."""
    if not results:
        return None

    def key(r: CaseResult) -> tuple[int, float, float]:
        rank = {"crash": 3, "exact": 2, "bound": 1, "pass": 0}[r.status]
        ratio = r.ratio if r.ratio is not None else (-1.0 if r.status == "pass" else math.inf)
        return (rank, ratio, r.error if r.error is not None else -1.0)

    best = results[0]
    for r in results[1:]:
        if key(r) > key(best):
            best = r
    return best


def summarise(
    results: Sequence[CaseResult],
    info: Mapping[str, tuple[str, str]] | None = None,
    reproducers: Mapping[str, Path] | None = None,
) -> list[ConstructionSummary]:
    """Group results by construction (first-seen order). ``info`` maps a name to (summary, provenance);
    ``reproducers`` maps a name to the folder its worst case was written to."""
    info = info or {}
    reproducers = reproducers or {}
    order: dict[str, list[CaseResult]] = {}
    for r in results:
        order.setdefault(r.case.construction, []).append(r)
    out = []
    for name, rs in order.items():
        by = []
        for d in DTYPES:
            ds = [r for r in rs if r.case.dtype == d]
            if not ds:
                continue
            by.append(
                DtypeSummary(
                    dtype=d,
                    cases=len(ds),
                    failed=sum(not r.passed for r in ds),
                    max_error=_max(r.error for r in ds),
                    max_bound=_finite_max(r.bound for r in ds),
                    max_allowance=_max(r.allowance for r in ds),
                    max_ratio=_max(r.ratio for r in ds),
                    exact_agree=sum(r.exact_ok is True for r in ds) if d == "exact" else None,
                    seconds=sum(r.seconds for r in ds),
                    allowance_kind=",".join(sorted({getattr(r, "allowance_kind", "heuristic") for r in ds
                                                    if r.status != "crash"})) or "-",
                    max_certified=_max((r.certified or {}).get("roundoff") for r in ds
                                       if getattr(r, "certified", None)),
                )
            )
        worst = worst_case(rs)
        folder = reproducers.get(name)
        summary, provenance = info.get(name, ("", ""))
        out.append(
            ConstructionSummary(
                construction=name,
                summary=summary,
                provenance=provenance,
                cases=len(rs),
                failed=sum(not r.passed for r in rs),
                crashed=sum(r.status == "crash" for r in rs),
                max_error=_max(r.error for r in rs),
                max_bound=_finite_max(r.bound for r in rs),
                max_allowance=_max(r.allowance for r in rs),
                max_ratio=_max(r.ratio for r in rs),
                exact_cases=sum(r.case.dtype == "exact" for r in rs),
                exact_agree=sum(r.exact_ok is True for r in rs if r.case.dtype == "exact"),
                seconds=sum(r.seconds for r in rs),
                by_dtype=tuple(by),
                worst=worst,
                reproducer=str(folder) if folder is not None else None,
                replay_command=replay_command(worst, folder) if (worst and folder is not None) else None,
                largest=largest_case(rs),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- reproducers
def replay_command(result: CaseResult, folder: Path | str) -> str | None:
    """The exact ``hmmtx run`` command line that replays ``result`` from its reproducer folder."""
    rp = result.replay
    if rp is None:
        return None
    from constructions.registry import plugin_of

    folder = Path(folder)
    plugin = plugin_of(result.case.construction)
    argv = ["hmmtx"] + (["--plugin", plugin] if plugin else []) + ["run", result.case.construction]
    if rp.model_kind is not None:
        argv += [f"--{rp.model_kind}", str(folder / f"{rp.model_kind}.json")]
    if rp.tokens is not None:
        argv += ["--tokens", rp.tokens]
    argv += list(rp.run_args)
    argv += ["--json", str(folder / "replay.json")]
    return shlex.join(argv)


def write_reproducer(result: CaseResult, folder: Path | str) -> Path:
    """Write one case's reproducer into ``folder`` (created if missing) and return the folder.

    Files: ``case.json`` (the case record, the replay command), ``<hmm|tasks>.json`` (the model, SPEC §2 format),
    ``tokens.txt`` (the token string), ``replay.sh`` (the command). All written atomically.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HmmtxError(f"{folder}: cannot create the reproducer folder ({exc.strerror or exc})") from None
    rp = result.replay
    cmd = replay_command(result, folder)
    if rp is not None and rp.model_kind is not None and rp.model is not None:
        atomic_write_json(folder / f"{rp.model_kind}.json", dict(rp.model))
    if rp is not None and rp.tokens is not None:
        atomic_write_text(folder / "tokens.txt", rp.tokens + "\n")
    record = case_record(result)
    record["replay_command"] = cmd
    atomic_write_json(folder / "case.json", record)
    script = "#!/bin/sh\n# Replays the worst case of hmmtx verify for " + result.case.construction + "\n"
    script += f"# case: {result.case.case_id}\n# status: {result.status}"
    script += f" ({result.message})\n" if result.message else "\n"
    script += (cmd or "echo 'this case has no replay command (its inputs could not be rebuilt)'; exit 2") + "\n"
    atomic_write_text(folder / "replay.sh", script)
    (folder / "replay.sh").chmod(0o755)
    return folder


def write_reproducers(results: Sequence[CaseResult], root: Path | str) -> dict[str, Path]:
    """The worst case of each construction into ``root/<construction>/``; returns name -> folder.

    Also writes ``root/index.json`` listing this run's reproducers (older folders of constructions not in this
    run are left alone, and not listed)."""
    root = Path(root)
    groups: dict[str, list[CaseResult]] = {}
    for r in results:
        groups.setdefault(r.case.construction, []).append(r)
    out: dict[str, Path] = {}
    for name, rs in groups.items():
        worst = worst_case(rs)
        if worst is not None:
            out[name] = write_reproducer(worst, root / name)
    index = {
        name: {"folder": str(path), "case": worst_case(groups[name]).case.case_id,  # type: ignore[union-attr]
               "status": worst_case(groups[name]).status}  # type: ignore[union-attr]
        for name, path in out.items()
    }
    atomic_write_json(root / "index.json", {"schema": "hmmtx.reproducers/1", "reproducers": index})
    return out


def default_reproducer_dir(json_path: str | None, explicit: str | None) -> Path:
    """``--reproducers DIR`` if given; else ``hmmtx-reproducers/`` beside the ``--json`` file; else in the cwd."""
    if explicit:
        return Path(explicit)
    if json_path:
        return Path(json_path).parent / DEFAULT_REPRODUCER_DIR
    return Path(DEFAULT_REPRODUCER_DIR)


# ---------------------------------------------------------------------------------------------- JSON
def _num(x: float | None) -> float | None:
    """JSON has no inf/NaN: non-finite numbers become null (the schema and docs say what null means)."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def case_record(r: CaseResult) -> dict[str, Any]:
    c = r.case
    return {
        "id": c.case_id,
        "construction": c.construction,
        "family": c.family,
        "states": c.states,
        "vocab": r.vocab,
        "length": c.length,
        "dtype": c.dtype,
        "seed": c.seed,
        "params": dict(c.params),
        "quantity": r.quantity,
        "status": r.status,
        "passed": r.passed,
        "error": _num(r.error),
        "bound": _num(r.bound),
        "bound_finite": None if r.bound is None else bool(math.isfinite(r.bound)),
        "allowance": _num(r.allowance),
        "allowance_kind": getattr(r, "allowance_kind", "heuristic"),
        "certified": _certified_record(getattr(r, "certified", None)),
        "ratio": _num(r.ratio),
        "exact_ok": r.exact_ok,
        "seconds": round(float(r.seconds), 6),
        "size": dict(r.size),
        "message": r.message,
    }


def _certified_record(c: Any) -> dict[str, Any] | None:
    """The ``certified`` object of a case (``--certify``): enclosure radius, certified round-off, bound, verdict."""
    if not c:
        return None
    out = {"kind": "certified"}
    for k in ("roundoff", "radius", "bound", "seconds"):
        if k in c:
            out[k] = _num(c[k])
    for k in ("within", "contains_reference", "prec", "error"):
        if k in c:
            out[k] = c[k]
    return out


def summary_record(s: ConstructionSummary) -> dict[str, Any]:
    return {
        "construction": s.construction,
        "summary": s.summary,
        "provenance": s.provenance,
        "passed": s.passed,
        "cases": s.cases,
        "failed": s.failed,
        "crashed": s.crashed,
        "max_error": _num(s.max_error),
        "max_bound": _num(s.max_bound),
        "max_allowance": _num(s.max_allowance),
        "max_ratio": _num(s.max_ratio),
        "exact_cases": s.exact_cases,
        "exact_agree": s.exact_agree,
        "seconds": round(float(s.seconds), 6),
        "by_dtype": [
            {
                "dtype": d.dtype,
                "cases": d.cases,
                "failed": d.failed,
                "max_error": _num(d.max_error),
                "max_bound": _num(d.max_bound),
                "max_allowance": _num(d.max_allowance),
                "max_ratio": _num(d.max_ratio),
                "exact_agree": d.exact_agree,
                "seconds": round(float(d.seconds), 6),
                "allowance_kind": d.allowance_kind,
                "max_certified": _num(d.max_certified),
            }
            for d in s.by_dtype
        ],
        "worst_case": s.worst.case.case_id if s.worst else None,
        "largest_case": s.largest.case.case_id if s.largest else None,
        "largest_size": dict(s.largest.size) if s.largest else None,
        "reproducer": s.reproducer,
        "replay_command": s.replay_command,
    }


def environment() -> dict[str, Any]:
    import numpy

    env = {"python": platform.python_version(), "platform": platform.platform(), "numpy": numpy.__version__}
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        env["torch"] = None
    return env


def hmmtx_version() -> str:
    try:
        from importlib.metadata import version

        return version("hmmtx")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "unknown"


def build_report(
    results: Sequence[CaseResult],
    summaries: Sequence[ConstructionSummary],
    plan: Plan,
    *,
    command: Sequence[str] | str = "",
    seconds: float = 0.0,
    reproducer_dir: Path | str | None = None,
    plots: Sequence[Path | str] = (),
    jobs: int = 1,
) -> dict[str, Any]:
    """The JSON report (see ``docs/report-format.md``)."""
    passed = all(s.passed for s in summaries)
    return {
        "schema": SCHEMA_ID,
        "hmmtx_version": hmmtx_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command if isinstance(command, str) else shlex.join(list(command)),
        "settings": plan.to_dict(),
        "environment": environment(),
        "passed": passed,
        "exit_status": 0 if passed else 1,
        "seconds": round(float(seconds), 6),
        "jobs": int(jobs),
        "reproducer_dir": str(reproducer_dir) if reproducer_dir is not None else None,
        "plots": [str(p) for p in plots],
        "constructions": [summary_record(s) for s in summaries],
        "cases": [case_record(r) for r in results],
    }


def write_report(path: Path | str, report: Mapping[str, Any]) -> Path:
    """Write the JSON report atomically (the folder must exist; a missing one is an HmmtxError naming it)."""
    return atomic_write_json(path, dict(report))


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the report, shipped as ``verify/report_schema.json``."""
    try:
        text = resources.files("verify").joinpath("report_schema.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise HmmtxError(
            "verify/report_schema.json is missing from this installation (it must be shipped as package data)"
        ) from None
    return json.loads(text)


def validate_report(report: Mapping[str, Any]) -> None:
    """Validate against :func:`load_schema` (needs the ``jsonschema`` package, a test extra); HmmtxError on failure."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a test dependency
        raise HmmtxError("validating a report needs the jsonschema package (pip install 'hmmtx[test]')") from None
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(dict(report)), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top)"
        raise HmmtxError(f"report: {where}: {e.message} ({len(errors)} schema error(s))")


# ---------------------------------------------------------------------------------------------- terminal
def fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    return f"{x:.{digits}e}"


def _kind_letters(kinds: str) -> str:
    """``"derived,heuristic"`` -> ``"DH"`` (the allowance kinds of a summary row, one letter each)."""
    return "".join(k[0].upper() for k in kinds.split(",") if k and k != "-") or "-"


def summary_table(summaries: Sequence[ConstructionSummary], title: str = "hmmtx verify") -> Any:
    """A rich Table: one row per construction and number mode."""
    from rich.table import Table

    from rich import box

    table = Table(title=title, title_justify="left", show_lines=False, header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("construction", no_wrap=True, min_width=max([12] + [len(x.construction) for x in summaries]))
    table.add_column("mode", no_wrap=True, min_width=7)
    table.add_column("cases", justify="right", min_width=5)
    # numbers never get cut (min_width = len("1.23e-45"), no spaces inside); headers wrap on narrow terminals
    certified = any(d.max_certified is not None for s in summaries for d in s.by_dtype)
    names = ("max error", "max bound", "allowance", "certified", "max err/bound") if certified else (
        "max error", "max bound", "allowance", "max err/bound")
    for name in names:
        table.add_column(name, justify="right", min_width=10 if name == "allowance" else 8)
    table.caption = ("allowance kind: D derived (proved, conditions checked), H heuristic, T trivial, E exact"
                     + ("; certified: largest certified round-off (--certify, ball arithmetic)" if certified else ""))
    table.add_column("exact agree", justify="right", min_width=5)
    table.add_column("time", justify="right", min_width=6)
    table.add_column("status", min_width=6)
    for s in summaries:
        for i, d in enumerate(s.by_dtype):
            ok = d.failed == 0
            table.add_row(
                s.construction if i == 0 else "",
                d.dtype,
                str(d.cases),
                fmt(d.max_error),
                fmt(d.max_bound),
                fmt(d.max_allowance) + " " + _kind_letters(d.allowance_kind),
                *([fmt(d.max_certified)] if certified else []),
                fmt(d.max_ratio),
                f"{d.exact_agree}/{d.cases}" if d.exact_agree is not None else "-",
                f"{d.seconds:.2f}s",
                "[green]ok[/green]" if ok else f"[bold red]FAIL {d.failed}[/bold red]",
                end_section=(i == len(s.by_dtype) - 1),
            )
    return table


def size_table(summaries: Sequence[ConstructionSummary]) -> Any:
    """A rich Table: the size of the largest model each construction built in the sweep."""
    from rich import box
    from rich.table import Table

    table = Table(title="largest model built per construction", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD)
    table.add_column("construction", no_wrap=True, min_width=max([12] + [len(x.construction) for x in summaries]))
    table.add_column("at case", no_wrap=False)
    for name in ("layers", "heads", "width D", "FFN width"):
        table.add_column(name, justify="right", min_width=5)
    for s in summaries:
        if s.largest is None:
            continue
        z, c = s.largest.size, s.largest.case
        where = ", ".join(x for x in (c.family, f"S={c.states}" if c.states is not None else "", f"T={c.length}") if x)
        table.add_row(s.construction, where, *(str(z.get(k, "-")) for k in ("layers", "heads", "width", "ffn_width")))
    return table


def failure_lines(summaries: Sequence[ConstructionSummary]) -> list[str]:
    """One line per failing construction: its name, the worst case, why, and the reproducer + replay command."""
    lines = []
    for s in summaries:
        if s.passed or s.worst is None:
            continue
        w = s.worst
        lines.append(
            f"FAIL {s.construction}: {s.failed} of {s.cases} case(s) failed; worst {w.case.case_id}: {w.message}"
        )
        if s.reproducer:
            lines.append(f"  reproducer: {s.reproducer}")
        if s.replay_command:
            lines.append(f"  replay: {s.replay_command}")
    return lines


__all__ = [
    "SCHEMA_ID",
    "DEFAULT_REPRODUCER_DIR",
    "DtypeSummary",
    "ConstructionSummary",
    "worst_case",
    "summarise",
    "replay_command",
    "write_reproducer",
    "write_reproducers",
    "default_reproducer_dir",
    "case_record",
    "summary_record",
    "build_report",
    "write_report",
    "load_schema",
    "validate_report",
    "summary_table",
    "size_table",
    "largest_case",
    "failure_lines",
    "fmt",
]
