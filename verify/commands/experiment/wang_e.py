"""``hmmtx experiment wang-e --table N``: Wang & E's Tables 2-8 at small scale (our designs from the captions).

Trains the table's grid of models over several seeds (deterministic from each seed, CPU), prints the final validation
loss per cell (mean +- sample std over seeds) next to the insight it tests, the verdict that follows from the numbers
(two cells differ only beyond about two standard errors) and the matching construction's error where one exists
(memory-kernel for Tables 3, 5, 6 and 8). Sizes: ``quick`` (seconds; the tests), ``small`` (minutes; what the docs
report), ``full`` (about an hour per table on 2 free cores). Writes JSON and a plot on request. With ``--out-dir``
every finished run is checkpointed and a rerun reuses it (loaded with weights_only) instead of training again.
"""

from __future__ import annotations

import argparse

from hmm.errors import HmmtxError
from verify.cli_args import positive_int


def _int_list(text: str) -> tuple[int, ...]:
    from hmm.io import parse_int_list

    from verify.cli_args import SEED_MAX

    try:
        seeds = tuple(parse_int_list(text, "--seeds", minimum=0, unique=True))
    except HmmtxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if any(s > SEED_MAX for s in seeds):
        raise argparse.ArgumentTypeError(f"--seeds: values must be <= {SEED_MAX}")
    return seeds


def register(subparsers: argparse._SubParsersAction) -> None:
    from verify.experiments.wang_e import SIZES, TABLES

    p = subparsers.add_parser("wang-e", help="Wang & E's Tables 2-8 (training over seeds, verdict per insight)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=int, required=True, choices=TABLES, help="table number (2-8)")
    p.add_argument("--size", choices=SIZES, default="small", help="grid and training size (default small)")
    p.add_argument("--quick", action="store_const", const="quick", dest="size", help="same as --size quick")
    p.add_argument("--seeds", type=_int_list, default=None, help="seeds, e.g. 0,1,2 (default: the size's)")
    p.add_argument("--steps", type=positive_int, default=None, help="override the optimiser steps of every run")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default 1)")
    p.add_argument("--out-dir", default=None, metavar="DIR", help="checkpoint every run here; reuse finished ones")
    p.add_argument("--json", default=None, metavar="OUT", help="write the table as JSON (atomic)")
    p.add_argument("--plot", default=None, metavar="PNG", help="plot of loss per cell (atomic)")
    p.add_argument("--progress", action="store_true", help="a progress bar per training run (stderr)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hmm.io import atomic_write_json
    from verify.experiments.wang_e import plot, run_table, to_json

    for opt in ("json", "plot"):
        path = getattr(args, opt)
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise HmmtxError(f"--{opt} {path}: folder {Path(path).parent} does not exist")
    tr = run_table(args.table, args.size, seeds=args.seeds, steps=args.steps, threads=args.threads,
                   progress=args.progress, out_dir=args.out_dir)
    _print(tr)
    if args.json:
        atomic_write_json(args.json, to_json(tr))
    if args.plot:
        plot(tr, args.plot)
    return 0


def _construction_cell(tr, r) -> str:
    c = tr.construction
    if not c:
        return ""
    if "by_H" in c:
        v = c["by_H"].get(str(r.cell.coords.get("H")))
        return "-" if v is None else f"{v:.2e}"
    if "by_cell" in c:
        d = r.cell.coords
        v = c["by_cell"].get(f"{d['kernel']} {d['rpe']} H={d['H']}")
        return "-" if v is None else f"{v['l1_error']:.2e} / {v['relative_mse']:.2e}"
    return ""


def _print(tr) -> None:
    from rich.console import Console
    from rich.table import Table

    from verify.experiments.wang_e import bayes_floor, fmt_loss

    con = Console(width=160)
    spec = tr.spec
    con.print(f"[bold]Wang & E, Table {spec.number} (Insight {spec.insight})[/bold], size {tr.size_name}, "
              f"seeds {list(tr.size.seeds)}, {tr.size.run.steps} steps each")
    con.print(f"paper (caption, paraphrased): {spec.caption}")
    con.print(f"our design: {spec.design}")
    for t in tr.tasks.values():
        con.print(f"task: {t.describe()}")
    c = tr.construction
    t = Table(title="final validation loss, mean +- std over seeds")
    for a in next(iter(tr.results.values())).cell.coords:
        t.add_column(a)
    t.add_column("params", justify="right")
    t.add_column("loss before", justify="right")
    t.add_column("final loss", justify="right")
    col = None
    if c and "by_H" in c:
        col = "construction: attention l1 error"
    elif c and "by_cell" in c:
        col = "construction: l1 / rel. MSE"
    if col:
        t.add_column(col, justify="right")
    for r in tr.results.values():
        row = [str(v) for v in r.cell.coords.values()] + [str(r.n_params), f"{sum(r.initial) / len(r.initial):.4g}",
                                                          fmt_loss(r.mean, r.std)]
        if col:
            row.append(_construction_cell(tr, r))
        t.add_row(*row)
    con.print(t)
    floor = bayes_floor(tr)
    if floor is not None:
        con.print(f"Bayes floor of the LM stand-in (exact, same validation texts): {floor:.4f} nats")
    if c:
        from verify.experiments.wang_e import construction_summary

        extra = construction_summary(c)
        con.print(f"construction ({c['name']}): {c['what']}" + (f"\n  {extra}" if extra else ""))
    for v in tr.verdicts:
        colour = {"reproduced": "green", "not reproduced": "red"}.get(v.verdict, "yellow")
        con.print(f"Insight {v.insight}: {v.claim} -> [{colour}]{v.verdict}[/{colour}] ({v.reason})")
    con.print(f"[{tr.seconds:.1f} s]")
