"""``hmmtx adaptive-table``: the necessity side of the adaptive-memory construction (Wang & E Task II), measured.

Three tables (a reconstruction in the spirit of Wang & E 2024; definitions in docs/constructions/adaptive_memory.md):

1. DP vs DP-free (Type I, one memory, lag g(c) = c + 1 over the whole lag range T): the DP + RPE construction
   (2 layers, 1 head) in hard mode and at --beta, against a DP-free single layer: the proved lower bound (sup error
   >= 1 when H < T heads, any RPE and FFN) and the best fit of lin/log-type RPE heads for H >= T (achievable errors).
2. lin- vs log-type RPE at growing lag ranges: lin-type RPE + DP on one linear position channel (exact best over
   all slopes), and the two working peak heads (log: P = 2T^2; lin: kappa = 1; log with a fixed P = 32): score
   gap, beta needed for leakage <= 1e-3, logit magnitude, measured error and bound in float64 and float32.
3. depth vs nesting (nested Type II, M memories): measured error of the L-layer model, L = 2..M+1.
"""

from __future__ import annotations

import argparse
import math

from hmm.errors import HmmtxError


def _int_list(text: str) -> tuple[int, ...]:
    from hmm.io import parse_int_list

    try:
        return tuple(parse_int_list(text, "value", minimum=1))
    except HmmtxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("adaptive-table", help="adaptive memories (Wang & E Task II): DP vs DP-free, lin vs log "
                              "RPE, depth vs nesting, measured", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dp-lags", type=_int_list, default=(2, 4, 8, 16), help="lag ranges T of table 1 (default 2,4,8,16)")
    p.add_argument("--linlog-lags", type=_int_list, default=(4, 16, 64, 256),
                   help="lag ranges T of table 2 (default 4,16,64,256)")
    p.add_argument("--depth-memories", type=_int_list, default=(2, 3, 4), help="M of table 3 (default 2,3,4)")
    p.add_argument("--beta", type=float, default=4.0, help="softmax inverse temperature of the measured runs (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and lag tables (default 0)")
    p.add_argument("--sequences", type=int, default=32,
                   help="random sequences of the depth experiment; a quarter of them for the measured errors (default 32)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the results as JSON (atomic)")
    p.add_argument("--plot", metavar="PNG", default=None, help="plot the three tables (matplotlib Agg, atomic)")
    p.add_argument("--quiet", action="store_true", help="no tables on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from constructions.adaptive.necessity import adaptive_table, table_to_json
    from hmm.io import atomic_write_json

    for opt in ("json", "plot"):
        path = getattr(args, opt)
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise HmmtxError(f"--{opt} {path}: folder {Path(path).parent} does not exist")
    if args.seed < 0:
        raise HmmtxError(f"--seed={args.seed} must be >= 0")
    tab = adaptive_table(dp_Ts=args.dp_lags, linlog_Ts=args.linlog_lags, depth_Ms=args.depth_memories,
                         beta=args.beta, seed=args.seed, sequences=args.sequences)
    data = table_to_json(tab)
    data["claims"] = claims(tab)
    if args.json:
        atomic_write_json(args.json, data)
    if args.plot:
        _plot(tab, args.plot)
    if not args.quiet:
        _print(tab, data["claims"])
    return 0


def _e(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.2e}"


def claims(tab) -> dict:
    """Verdicts on the paper's claims from the measured numbers (reproduced / not reproduced / not testable here)."""
    out = {}
    t1 = all(r.dp_hard == 0 and r.dp_softmax <= r.dp_bound for r in tab.dp)
    out["type1_two_layers"] = {
        "verdict": "reproduced" if t1 else "not reproduced",
        "evidence": "Type I with 2 layers (1 head per memory): hard-mode error " +
                    ", ".join(f"T={r.T}: {r.dp_hard:g}" for r in tab.dp) + "; softmax error <= claimed bound"}
    ok = all(r.errors[r.M + 1] == 0 and all(r.errors[L] > 0 for L in range(2, r.M + 1)) for r in tab.depth)
    out["type2_M_plus_1_layers"] = {
        "verdict": "reproduced (sufficiency; shallower: greedy model only)" if ok else "not reproduced",
        "evidence": "; ".join(f"M={r.M}: " + ", ".join(f"L={L}: {e:.2g}" for L, e in sorted(r.errors.items()))
                              for r in tab.depth)}
    coop = all(r.dp_hard == 0 and all(v == 1.0 for v in r.lower.values() if v is not None) for r in tab.dp)
    lin1 = min(r.lin_one_channel for r in tab.linlog) if tab.linlog else None
    out["dp_rpe_cooperate"] = {
        "verdict": "reproduced" if coop and (lin1 is None or lin1 > 1) else "not reproduced",
        "evidence": f"DP-free single layer: sup error >= 1 with H < T heads (proved); DP + log-RPE: 0 with 1 head; "
                    f"lin-RPE + DP on one position channel: best sup error >= {_e(lin1)} (exact optimum over slopes)"}
    if tab.linlog:
        big = max(tab.linlog, key=lambda r: r.T)
        lg, ln = big.variants["log"], big.variants["lin"]
        out["lin_vs_log_peak"] = {
            "verdict": "measured (the paper's Task-II RPE statements were not recovered)",
            "evidence": f"T={big.T}: log peak (P = 2T^2) beta {lg['beta_needed']:.3g}, logit magnitude {lg['logit']:.2e}; "
                        f"lin peak (quadratic DP) beta {ln['beta_needed']:.3g}, logit magnitude {ln['logit']:.2e}; "
                        f"log with fixed P = 32: gap {big.variants['log_fixed']['gap']:.2e}, beta "
                        f"{big.variants['log_fixed']['beta_needed']:.3g}"}
    return out


def _print(tab, verdicts) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=220)
    t = Table(title="1. DP vs DP-free (Type I, one memory, lag g(c) = c + 1, all T lags used): sup error")
    for c in ("T", "DP+RPE hard (1 head)", f"DP+RPE softmax", "bound", "DP-free H<T (proved)", "DP-free lin fit",
              "DP-free log fit", "heads for 1e-2 lin/log"):
        t.add_column(c, justify="right")
    for r in tab.dp:
        t.add_row(str(r.T), _e(r.dp_hard), f"{_e(r.dp_softmax)} (b={r.beta:g})", _e(r.dp_bound),
                  ">= 1 at H <= " + str(max([H for H, v in r.lower.items() if v is not None], default=0)),
                  " ".join(f"H={H}:{e:.1e}" for H, e in r.fit["lin"].items()),
                  " ".join(f"H={H}:{e:.1e}" for H, e in r.fit["log"].items()),
                  f"{r.heads_needed['lin'] or '>' + str(max(r.fit['lin']))} / {r.heads_needed['log'] or '>' + str(max(r.fit['log']))}")
    con.print(t)
    t = Table(title="2. lin- vs log-type RPE at growing lag range T (window n = 2T + 64)")
    for c in ("T", "lin-RPE+DP 1 channel (best)", "variant", "gap at T", "beta for leak<=1e-3", "logit magnitude",
              "float64 err / bound", "float32 err / bound"):
        t.add_column(c, justify="right")
    for r in tab.linlog:
        for i, (name, v) in enumerate(r.variants.items()):
            t.add_row(str(r.T) if i == 0 else "", _e(r.lin_one_channel) if i == 0 else "", name, f"{v['gap']:.3g}",
                      f"{v['beta_needed']:.4g}", f"{v['logit']:.2e}", f"{_e(v['float64'][0])} / {_e(v['float64'][1])}",
                      f"{_e(v['float32'][0])} / {_e(v['float32'][1])}")
    con.print(t)
    t = Table(title="3. depth vs nesting (nested Type II, hard attention): max |y - f| of the L-layer model "
                    "(L < M+1: greedy shallow model) [fraction of positions with a wrong lag]")
    t.add_column("M")
    Ls = sorted({L for r in tab.depth for L in r.errors})
    for L in Ls:
        t.add_column(f"L={L}", justify="right")
    t.add_column("2-layer enumeration heads", justify="right")
    for r in tab.depth:
        t.add_row(str(r.M), *[f"{r.errors[L]:.3g} [{r.wrong[L]:.2f}]" if L in r.errors else "" for L in Ls],
                  str(r.enumeration_heads))
    con.print(t)
    for k, v in verdicts.items():
        con.print(f"{k}: [bold]{v['verdict']}[/bold] — {v['evidence']}")
    con.print(f"[{tab.seconds:.1f} s]")


def _plot(tab, path: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hmm.io import atomic_write_bytes

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    for rpe, st in (("lin", "-"), ("log", "--")):
        for r in tab.dp:
            H = sorted(r.fit[rpe])
            ax[0].semilogy(H, [max(r.fit[rpe][h], 1e-17) for h in H], st, marker="o", label=f"DP-free {rpe}, T={r.T}")
    ax[0].axhline(1.0, color="k", lw=0.8)
    ax[0].set_xscale("log", base=2)
    ax[0].set_xlabel("heads H (DP-free single layer)")
    ax[0].set_ylabel("sup error (1 = proved floor for H < T)")
    ax[0].set_title("DP-free vs DP (DP + RPE: 1 head, error 0)")
    ax[0].legend(fontsize=6)
    Ts = [r.T for r in tab.linlog]
    for name, st in (("log", "-"), ("lin", "--"), ("log_fixed", ":")):
        ax[1].loglog(Ts, [r.variants[name]["beta_needed"] for r in tab.linlog], st, marker="o", label=f"{name}: beta needed")
        ax[1].loglog(Ts, [r.variants[name]["logit"] for r in tab.linlog], st, marker="x", label=f"{name}: logit magnitude")
    ax[1].set_xlabel("lag range T")
    ax[1].set_title("lin vs log peak heads: cost at long lags")
    ax[1].legend(fontsize=6)
    for r in tab.depth:
        Ls = sorted(r.errors)
        ax[2].plot(Ls, [r.errors[L] for L in Ls], marker="o", label=f"M={r.M}")
    ax[2].set_xlabel("layers L (M + 1 = the construction)")
    ax[2].set_ylabel("max |y - f| (hard attention)")
    ax[2].set_title("depth vs nesting (Type II)")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
