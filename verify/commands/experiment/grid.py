"""``hmmtx experiment grid FILE``: run a grid of training + probing runs resumably (local processes or Dask)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Run every run of the grid FILE (TOML or JSON; format: docs/experiments/grids.md) that has no finished result
under --out. Each finished run is written atomically to OUT/runs/KEY.json (KEY: a hash of
the run's config, seed and probe settings); a finished run is never recomputed, so an interrupted grid continues
where it stopped. Runs execute in --workers local processes, or on the Dask distributed scheduler at --cluster.
Then prints the table of means and 95% t-intervals over seeds (also: hmmtx experiment table OUT)."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("grid", help="run a grid of training+probing runs resumably", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="grid file (.toml or .json)")
    p.add_argument("--out", default=None, metavar="DIR", help="result folder (default: experiments/NAME)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1; 0 = inside this process)")
    p.add_argument("--cluster", default=None, metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for the --cluster scheduler (default 5)")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="train on auto (CUDA where a worker has it, else CPU; default), cpu, cuda or cuda:N")
    p.add_argument("--dry-run", action="store_true", help="list the runs and which are finished; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from rich.console import Console

    from hmm.errors import HmmtxError
    from verify.commands.experiment.table import print_tables
    from verify.experiments.runner import ResultStore, connect_dask, run_grid
    from verify.experiments.spec import load_grid

    grid = load_grid(args.file)
    out = Path(args.out) if args.out else Path("experiments") / grid.name
    if args.cluster is None and args.workers < 0:
        raise HmmtxError(f"--workers must be >= 0, got {args.workers}")
    err = Console(stderr=True)
    store = ResultStore(out)
    if args.dry_run:
        for r in grid.runs:
            state = "done" if store.load(r.key) is not None else "todo"
            print(f"{r.key}  {state}  {r.label}")
        return 0
    from verify.training import check_device_name, resolve_device

    check_device_name(args.device)  # a misspelt device: one error line before anything runs, cluster or not
    if args.cluster is None:
        resolve_device(args.device)  # an absent CUDA device here: one error line (a cluster's workers resolve it)
    if args.cluster is not None:
        if not args.connect_timeout > 0:
            raise HmmtxError(f"--connect-timeout must be > 0, got {args.connect_timeout}")
        connect_dask(args.cluster, args.connect_timeout).close()  # fail fast, before any bar is drawn
    progress = not args.no_progress and sys.stderr.isatty()
    outcome = run_grid(grid, out, workers=args.workers, cluster=args.cluster, device=args.device, progress=progress,
                       log=lambda line: err.print(line, highlight=False, markup=False))
    err.print(f"grid {grid.name}: {len(grid.runs)} runs; computed {len(outcome.computed)}, already finished "
              f"{len(outcome.skipped)}, failed {len(outcome.failed)}; {outcome.seconds:.1f} s; results in {out}",
              highlight=False, markup=False)
    print_tables(store.results(), Console(width=200) if not sys.stdout.isatty() else Console())
    return 1 if outcome.failed else 0
