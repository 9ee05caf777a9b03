"""``hmmtx memory-table``: exact l1 error of H DP-free heads (lin- and log-type RPE) against H, with fitted rates.

Rows (Wang & E, W1/W3; a reconstruction, see docs/constructions/memory_kernels.md): a light-tailed kernel
``e^{-lam s}`` and a heavy-tailed one ``s^{-alpha}`` with both RPE types (Insight 4a), and spikes ``delta_T`` at
growing lags T (fixed memories). Each error is ``sum_s |K(s) - rho(s)|``, the sup over inputs ``|x| <= 1`` of the
memory-extraction error, computed exactly over lags ``1..S`` plus a tail bound. Next to each row: the fitted log-log
slope k (error ~ H^-k) and exponential rate r (error ~ e^{-rH}), the rate in the paper notes, and the size of the
fitted head output weights (they grow huge: log10 max |c_k|, log10 of the amplification sum|c_k| / sum|K|, Gram
condition).
"""

from __future__ import annotations

import argparse

from hmm.errors import HmmtxError
from verify.cli_args import float_arg


def _int_list(text: str) -> tuple[int, ...]:
    """argparse type: a list of integers (argparse turns the error into one usage line and exit 2)."""
    from hmm.io import parse_int_list

    try:
        return tuple(parse_int_list(text, "value"))
    except HmmtxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "memory-table",
        help="memory-kernel error vs heads H for lin/log RPE (Wang & E W1/W3), fitted rates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--heads", type=_int_list, default=None, help="H values for the kernel rows (default 1,2,4,8,16,32)")
    p.add_argument("--spike-heads", type=_int_list, default=None, help="H values for the spike rows (default 8,16,32,64,128)")
    p.add_argument("--spike-lags", type=_int_list, default=None, help="spike lags T (default 2,4,8,16)")
    p.add_argument("--no-spikes", action="store_true", help="leave out the spike rows")
    p.add_argument("--beta", type=float_arg(0, 100, lo_open=True), default=0.1, help="exponent spacing of the head grids (default 0.1)")
    p.add_argument("--p0-lin", type=float_arg(0, 1000, lo_open=True), default=0.1, help="lin-type base exponent (default 0.1)")
    p.add_argument("--p0-log", type=float_arg(1, 1000, lo_open=True), default=2.0, help="log-type base exponent, > 1 (default 2)")
    p.add_argument("--lam", type=float_arg(0, 700, lo_open=True), default=0.35, help="light-tailed target e^(-lam s) (default 0.35)")
    p.add_argument("--alpha", type=float_arg(1, 1000, lo_open=True), default=2.25, help="heavy-tailed target s^(-alpha), > 1 (default 2.25)")
    p.add_argument("--eps", type=float_arg(0, 1, lo_open=True, hi_open=True), default=1e-2, help="error level for 'heads needed' (default 1e-2)")
    p.add_argument("--gram-max-heads", type=int, default=16, help="Gram condition numbers up to this H (default 16)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the results as JSON (atomic)")
    p.add_argument("--plot", metavar="PNG", default=None, help="log-log plot of error vs H (matplotlib Agg, atomic)")
    p.add_argument("--quiet", action="store_true", help="no table on stdout")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    from constructions.memory.rates import TableConfig

    kw = dict(beta=args.beta, p0_lin=args.p0_lin, p0_log=args.p0_log, lam=args.lam, alpha=args.alpha, eps=args.eps,
              gram_max_heads=args.gram_max_heads)
    if args.heads is not None:
        kw["heads"] = args.heads
    if args.spike_heads is not None:
        kw["spike_heads"] = args.spike_heads
    if args.no_spikes:
        kw["spike_lags"] = ()
    elif args.spike_lags is not None:
        kw["spike_lags"] = args.spike_lags
    if args.gram_max_heads < 0:
        raise HmmtxError(f"--gram-max-heads={args.gram_max_heads} must be >= 0")
    return TableConfig(**kw)


def _fmt(v, spec: str = ".2e") -> str:
    return "-" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from constructions.memory.rates import memory_table, table_to_json
    from hmm.io import atomic_write_json

    cfg = _config(args)
    for opt in ("json", "plot"):
        path = getattr(args, opt)
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise HmmtxError(f"--{opt} {path}: folder {Path(path).parent} does not exist")
    tab = memory_table(cfg)
    data = table_to_json(tab)
    if args.json:
        atomic_write_json(args.json, data)
    if args.plot:
        _plot(tab, args.plot)
    if not args.quiet:
        _print(tab)
    return 0


def _print(tab) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    cfg = tab.config
    for title, kinds, heads in (
        (f"kernels: exp(lam={cfg.lam:g}) light tail, power(alpha={cfg.alpha:g}) heavy tail", ("exp", "power"), cfg.heads),
        ("spikes delta_T (fixed memories, Task I)", ("spike",), cfg.spike_heads),
    ):
        rows = [r for r in tab.rows if r.kind in kinds]
        if not rows:
            continue
        t = Table(title=f"{title}: exact l1 error vs heads H (beta={cfg.beta:g}, p0 lin={cfg.p0_lin:g}, log={cfg.p0_log:g})")
        t.add_column("target")
        t.add_column("rpe")
        for H in heads:
            t.add_column(f"H={H}", justify="right")
        for c in ("slope k", "exp rate r", "log10 max|c|", "log10 amplif.", "Gram cond", "notes' rate"):
            t.add_column(c, justify="right" if c != "notes' rate" else "left", overflow="fold",
                         max_width=46 if c == "notes' rate" else None)
        for r in rows:
            last = r.points[-1]
            gc = [p.gram_cond for p in r.points if p.gram_cond is not None]
            t.add_row(r.target, r.rpe, *[f"{p.total:.2e}" for p in r.points], _fmt(r.rates.algebraic, ".2f"),
                      _fmt(r.rates.exponential, ".3f"), f"{last.log10_max_weight:.1f}", _fmt(last.log10_amplification, ".1f"),
                      f"{gc[-1]:.1e} (H={[p.H for p in r.points if p.gram_cond is not None][-1]})" if gc else "-",
                      r.notes_rate)
        con.print(t)
    if tab.growth:
        g = Table(title=f"heads needed for l1 error <= {cfg.eps:g} (smallest H of {list(cfg.spike_heads)}; '>' = none)")
        g.add_column("rpe")
        for T in cfg.spike_lags:
            g.add_column(f"T={T}", justify="right")
        g.add_column("fit H~e^(rT): r", justify="right")
        g.add_column("fit H~T^k: k", justify="right")
        g.add_column("notes")
        for gr in tab.growth:
            g.add_row(gr.rpe, *[str(gr.needed[T]) if gr.needed[T] else f">{max(cfg.spike_heads)}" for T in cfg.spike_lags],
                      _fmt(gr.exp_rate, ".3f"), _fmt(gr.power, ".2f"), gr.notes)
        con.print(g)
    ins = tab.insight_4a
    parts = []
    for kind, win in (("power", "log"), ("exp", "lin")):
        if kind in ins:
            lost = [H for H, ok in ins[kind].items() if not ok]
            parts.append(f"{kind}: {win}-type better at every H" if not lost else f"{kind}: {win}-type better except at H={lost}")
    if parts:
        con.print("Insight 4a (equal H): " + "; ".join(parts))
    pts = [p for r in tab.rows for p in r.points]
    ok = sum(abs(p.attained - p.finite) <= p.attained_allowance for p in pts)
    gap = max((abs(p.attained - p.finite) for p in pts), default=0.0)
    con.print(f"worst-case inputs x = sign(K - rho) attain the exact finite error at {ok}/{len(pts)} points "
              f"(float64 evaluation; largest gap {gap:.1e}, each within its stated allowance)"
              if ok == len(pts) else
              f"[red]worst-case check: only {ok}/{len(pts)} points attain the exact error within the allowance[/red]")
    con.print(f"[{tab.seconds:.1f} s]")


def _plot(tab, path: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hmm.io import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"lin": "-", "log": "--"}
    for ax, kinds, title in ((axes[0], ("exp", "power"), "kernels"), (axes[1], ("spike",), "spikes delta_T")):
        for r in tab.rows:
            if r.kind not in kinds:
                continue
            H = [p.H for p in r.points]
            e = [max(p.total, 1e-17) for p in r.points]
            ax.loglog(H, e, styles[r.rpe], marker="o" if r.matched else "x", label=f"{r.target} {r.rpe}")
        ax.set_xlabel("heads H")
        ax.set_ylabel("exact l1 kernel error")
        ax.set_title(f"{title} (beta={tab.config.beta:g})")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
