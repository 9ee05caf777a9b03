"""``hmmtx verify``: build every registered construction over a sweep of HMMs and lengths and check it.

Per construction and number mode it prints the number of cases, the largest error against the exact reference, the
largest claimed bound, the largest error / (bound + allowance), how many exact-mode cases agree bit for bit, and the
time. Exit status 1 when any case breaks its bound or its exact check (or crashes), 0 otherwise; 2 for bad input.
The worst case of each construction is saved as a reproducer (see ``docs/reading-a-report.md``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = """\
Build every registered construction over a sweep of HMMs (zoo families, state counts S) and sequence lengths T,
run it against its exact reference in each number mode, and report per construction how far it is from the truth
and from its claimed bound. Exit status 1 when any case breaks its bound or its exact check, 0 otherwise.

Presets: --quick (default; small S and T, every mode, under a minute) and --full (S up to 8, T up to 1024).
--states / --lengths / --dtype override the preset's axes. Exact mode runs where S <= 4 and T <= 64.
The worst case of each construction is written as a reproducer to --reproducers DIR (default: hmmtx-reproducers/
beside the --json file, or in the current folder)."""


def max_jobs() -> int:
    """Most worker processes accepted (4 per core, at least 8): more only thrash the machine."""
    import os

    return max(8, 4 * (os.cpu_count() or 1))


def register(subparsers: Any) -> None:
    from verify.cli_args import int_arg, seed_arg

    p = subparsers.add_parser(
        "verify",
        help="check every construction against its exact reference and bound over a sweep",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="small sweep (the default; what `make run` runs)")
    preset.add_argument("--full", action="store_true", help="S up to 8, T up to 1024 (a few minutes)")
    p.add_argument("--construction", "-c", action="extend", nargs="+", metavar="NAME", default=None,
                   help="only these constructions (registry names; default: all)")
    p.add_argument("--states", action="extend", nargs="+", metavar="S", default=None,
                   help="hidden-state counts, e.g. --states 2 4 8 or --states 2,4,8")
    p.add_argument("--lengths", action="extend", nargs="+", metavar="T", default=None,
                   help="sequence lengths, e.g. --lengths 16,64")
    p.add_argument("--dtype", action="extend", nargs="+", metavar="MODE", default=None,
                   help="number modes among float64,float32,exact (default: all three)")
    p.add_argument("--seed", type=seed_arg, default=None, metavar="N", help="base seed (default 0)")
    p.add_argument("--certify", action="store_true",
                   help="also run every float case in ball arithmetic (python-flint arb): verdicts read bound + "
                        "CERTIFIED round-off, shown next to the heuristic/derived allowance (docs/certified.md)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the JSON report here (docs/report-format.md)")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="write error-and-bound plots against T and S (PNG) into DIR")
    p.add_argument("--reproducers", metavar="DIR", default=None,
                   help="folder for the worst case of each construction (default: hmmtx-reproducers/ beside --json,"
                   " else in the current folder)")
    p.add_argument("--jobs", "-j", type=int_arg(1, max_jobs()), default=None, metavar="N",
                   help=f"worker processes, 1..{max_jobs()} (default: 2, or 1 on a one-core machine)")
    p.add_argument("--list", action="store_true", help="list the registered constructions and exit")
    p.set_defaults(func=main)


def make_plan(args: argparse.Namespace) -> Any:
    """The sweep plan from the preset and the overrides (HmmtxError on bad values)."""
    import dataclasses

    from hmm.errors import HmmtxError
    from hmm.io import parse_int_list
    from verify.suite import DTYPES, FULL, QUICK

    base = FULL if args.full else QUICK
    changes: dict[str, Any] = {}
    if args.states:
        changes["states"] = tuple(parse_int_list(" ".join(args.states), "--states"))
    if args.lengths:
        changes["lengths"] = tuple(parse_int_list(" ".join(args.lengths), "--lengths"))
    if args.dtype:
        modes = " ".join(args.dtype).replace(",", " ").split()
        bad = [m for m in modes if m not in DTYPES]
        if bad:
            raise HmmtxError(f"--dtype: {bad[0]!r} is not one of {', '.join(DTYPES)}")
        changes["dtypes"] = tuple(dict.fromkeys(modes))
    if args.seed is not None:
        try:
            seed = int(args.seed)
        except ValueError:
            raise HmmtxError(f"--seed: {args.seed!r} is not an integer") from None
        changes["seed"] = seed
    if any(k in changes for k in ("states", "lengths", "dtypes")):
        changes["preset"] = "custom"
    if getattr(args, "certify", False):
        changes["certify"] = True
    return dataclasses.replace(base, **changes)


def default_jobs() -> int:
    import os

    return max(1, min(2, os.cpu_count() or 1))


def parse_jobs(text: str | None) -> int:
    from hmm.errors import HmmtxError

    if text is None:
        return default_jobs()
    try:
        n = int(text)
    except ValueError:
        raise HmmtxError(f"--jobs: {text!r} is not an integer") from None
    if not 1 <= n <= max_jobs():
        raise HmmtxError(f"--jobs: {n} is out of range, must be an integer in [1, {max_jobs()}]")
    return n


def canonical_command(args: argparse.Namespace) -> list[str]:
    """The command line that reruns this sweep (recorded in the JSON report)."""
    cmd = ["hmmtx"]
    for path in getattr(args, "plugin", None) or ():
        cmd += ["--plugin", path]
    cmd += ["verify", "--full" if args.full else "--quick"]
    if args.construction:
        cmd += ["--construction", *args.construction]
    for flag, value in (("--states", args.states), ("--lengths", args.lengths), ("--dtype", args.dtype)):
        if value:
            cmd += [flag, ",".join(" ".join(value).replace(",", " ").split())]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if getattr(args, "certify", False):
        cmd += ["--certify"]
    if args.jobs is not None:
        cmd += ["--jobs", str(args.jobs)]
    for flag, value in (("--json", args.json), ("--plots", args.plots), ("--reproducers", args.reproducers)):
        if value:
            cmd += [flag, value]
    return cmd


def main(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hmm.errors import HmmtxError
    from verify import report as rep
    from verify import suite

    out = Console(width=None if sys.stdout.isatty() else 128, highlight=False)
    all_adapters = suite.adapters()
    if args.list:
        for a in all_adapters:
            print(f"{a.name:16} {a.summary} (modes: {', '.join(a.dtypes)})")
        return 0
    plan = make_plan(args)
    jobs = parse_jobs(args.jobs)
    selected = suite.select(all_adapters, args.construction)
    if not selected:
        raise HmmtxError("no construction is registered (constructions.registry is empty)")
    # Check the output places before spending minutes on the sweep.
    if args.json:
        folder = Path(args.json).parent
        if str(folder) and not folder.is_dir():
            raise HmmtxError(f"--json {args.json}: folder {folder} does not exist")
    if args.plots:
        from verify.plots import require_matplotlib

        require_matplotlib()
        if Path(args.plots).exists() and not Path(args.plots).is_dir():
            raise HmmtxError(f"--plots {args.plots}: exists and is not a folder")
    repro_dir = rep.default_reproducer_dir(args.json, args.reproducers)
    if repro_dir.exists() and not repro_dir.is_dir():
        raise HmmtxError(f"--reproducers {repro_dir}: exists and is not a folder")

    err = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]verify[/bold] {task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("", total=None)

        def on_plan(n: int) -> None:
            progress.update(task, total=n)

        def on_case(res: suite.CaseResult, done: int, total: int) -> None:
            progress.update(task, completed=done, description=res.case.construction)

        results = suite.run_suite(selected, plan, progress=on_case, on_plan=on_plan, jobs=jobs)
    seconds = time.perf_counter() - t0
    if not results:  # a filter that selects nothing is a usage error, never "all 0 cases within their bounds"
        raise HmmtxError("the selection runs no case: " + " ".join(canonical_command(args)[1:])
                         + " (check --construction, --dtype, --states and --lengths; `hmmtx verify --list` shows "
                         "each construction's number modes; some state a length limit per mode, docs/export.md)")

    reproducers = rep.write_reproducers(results, repro_dir) if results else {}
    info = {a.name: (a.summary, a.provenance) for a in selected}
    summaries = rep.summarise(results, info, reproducers)
    plots = []
    if args.plots:
        from verify.plots import write_plots

        plots = write_plots(results, args.plots)

    title = (f"hmmtx verify --{plan.preset}" if plan.preset != "custom" else "hmmtx verify (custom sweep)")
    title += f": S in {list(plan.states)}, T in {list(plan.lengths)}, seed {plan.seed}"
    out.print(rep.summary_table(summaries, title=title))
    if any(s.largest is not None for s in summaries):
        out.print(rep.size_table(summaries))
    n = len(results)
    failed = sum(not r.passed for r in results)
    if failed:
        for line in rep.failure_lines(summaries):
            out.print(line, markup=False, soft_wrap=True)
        out.print(f"{failed} of {n} cases FAILED in {seconds:.1f} s", markup=False)
    else:
        out.print(f"all {n} cases within their bounds (exact mode bit-exact) in {seconds:.1f} s", markup=False)
    for line in suite.stated_limit_lines(selected, plan):
        out.print(line, markup=False, soft_wrap=True)
    out.print(f"reproducers (worst case per construction): {repro_dir}/  [{jobs} worker(s)]", markup=False, soft_wrap=True)
    if args.json:
        command = canonical_command(args)
        report = rep.build_report(results, summaries, plan, command=command, seconds=seconds,
                                  reproducer_dir=repro_dir, plots=plots, jobs=jobs)
        rep.write_report(args.json, report)
        out.print(f"JSON report: {args.json}", markup=False)
    if plots:
        out.print(f"plots: {len(plots)} PNG files in {args.plots}/", markup=False)
    return 1 if failed else 0
