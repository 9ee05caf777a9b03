"""``hmmtx experiment table DIR``: means and 95 % t-intervals over seeds of a result folder."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("table", help="tabulate a grid's results (mean and 95%% t-interval over seeds)",
                              description="Summaries per cell (runs equal apart from the seed): mean and two-sided "
                                          "95% Student-t interval over seeds (wall and CPU seconds per run beside them). --layers adds per-layer curves, --findings the verdicts on Hao et al.'s findings, "
                                          "--markdown FILE writes everything as Markdown.")
    p.add_argument("dir", metavar="DIR", help="result folder of `hmmtx experiment grid`")
    p.add_argument("--layers", action="store_true", help="also print per-layer curves and Figure-1 grids per cell")
    p.add_argument("--findings", action="store_true",
                   help="also print the verdict per cell on each of Hao et al.'s layerwise findings (Markdown)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write the per-layer curves (probes and position independence) as one figure (atomically)")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write the tables as Markdown (atomically)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from hmm.io import atomic_write_text
    from verify.experiments.markdown import markdown_report
    from verify.experiments.runner import ResultStore

    if args.plot:
        from verify.plots import require_matplotlib

        require_matplotlib("--plot")
    results = ResultStore(args.dir).results()
    console = Console() if sys.stdout.isatty() else Console(width=220)
    print_tables(results, console, layers=args.layers)
    if args.findings:
        from verify.experiments.findings import findings_markdown

        print(findings_markdown(results))
    if args.plot:  # an empty store: one error line (nothing to draw), like --markdown
        from verify.experiments.plots import plot_layer_curves

        console.print(f"wrote {plot_layer_curves(results, args.plot)}")
    if args.markdown:
        atomic_write_text(args.markdown, markdown_report(results))
        console.print(f"wrote {args.markdown}")
    return 0


def print_tables(results: list, console: Any, layers: bool = False) -> None:
    from rich.table import Table

    from verify.experiments.tables import SUMMARY_GROUPS, cell_cpu_seconds, cell_seconds, cell_summary, cells, fmt, layer_curves, setting_text

    if not results:
        console.print("no finished runs")
        return
    names, cs = cells(results)
    sums = [cell_summary(c) for c in cs]
    for gi, (title, keys) in enumerate(SUMMARY_GROUPS):
        t = Table(title=f"{title}: mean [95% t-interval] over seeds (definitions: docs/diagnostics.md)")
        for col in ["kind", *names, "n", *keys] + (["wall s/run", "cpu s/run"] if gi == 0 else []):
            t.add_column(col, justify="right")
        for c, s in zip(cs, sums):
            extra = [fmt(cell_seconds(c), 0), fmt(cell_cpu_seconds(c), 0)] if gi == 0 else []
            t.add_row(c.kind.replace("constructed:", "c:"), *[setting_text(c, n) for n in names], str(len(c.seeds)),
                      *[fmt(s[k], 2) for k in keys], *extra)
        console.print(t)
    from verify.experiments.tables import device_note

    note = device_note(cs)
    if note is not None:
        console.print(note, highlight=False, markup=False)
    if not layers:
        return
    for c in cs:
        cur = layer_curves(c)
        lt = Table(title=f"{c.kind} {c.setting}: per residual index (pi: per attention layer i-1)")
        lt.add_column("i", justify="right")
        for name in cur:
            lt.add_column(name, justify="right")
        n = max(len(v) for v in cur.values())
        for i in range(n):
            row = [str(i)]
            for name, col in cur.items():
                j = i - 1 if name == "pi" else i
                row.append(fmt(col[j], 2) if 0 <= j < len(col) else "")
            lt.add_row(*row)
        console.print(lt)
