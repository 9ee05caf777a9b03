"""``hmmtx window-curve``: the window (fixed-memory) filter's error and both bounds against the window length r.

    hmmtx window-curve --hmm FILE | --zoo NAME [--states S --obs V --zoo-seed K] --r-max R
                       [--prior stationary|uniform|'1/2,1/4,1/4'] [--seqs N --length T --seed K]
                       [--plot PNG] [--json OUT]

For r = 1..R it samples N sequences of length T from the HMM and measures the L1 error of the window-filtered
belief (and next-token probabilities) against the exact forward filter, next to the a-priori Birkhoff bound
(sequence-independent; absent when A has a zero entry) and the a-posteriori bound from the window's own product
(see ``docs/constructions/window_filter.md``). Prints a rich table with the ratios and the fitted geometric decay
rate; ``--plot`` writes a log-scale plot (matplotlib Agg), ``--json`` the numbers; both atomically.
"""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = __doc__.split("\n\n")[2].replace("\n", " ")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("window-curve", help="window-filter error and its bounds against the window length r",
                              description=DESCRIPTION)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hmm", metavar="FILE", help="HMM JSON file")
    src.add_argument("--zoo", metavar="NAME", help="zoo family (dirichlet, sticky, cyclic, low_rank, observable, "
                     "mess3, rrxor, even, golden_mean)")
    p.add_argument("--states", type=int, default=None, help="--zoo: number of hidden states (family default)")
    p.add_argument("--obs", type=int, default=None, help="--zoo: number of symbols (family default)")
    p.add_argument("--zoo-seed", type=int, default=0, help="--zoo: seed of the random family (default 0)")
    p.add_argument("--r-max", type=int, required=True, help="largest window length (r = 1..R)")
    p.add_argument("--prior", default="stationary", help="reference prior: stationary (default), uniform, or "
                   "probabilities '1/2,1/4,1/4'")
    p.add_argument("--seqs", type=int, default=16, help="sampled sequences (default 16)")
    p.add_argument("--length", type=int, default=200, help="sequence length T (default 200; must exceed R)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--no-exact-check", action="store_true",
                   help="skip the exact-arithmetic check where the a-priori bound is below float round-off")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a log-scale plot (atomically)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the curve as JSON (atomically)")
    p.set_defaults(func=run)


def _source(ns: argparse.Namespace) -> Any:
    from hmm.errors import HmmtxError

    if ns.hmm is not None:
        if ns.states is not None or ns.obs is not None:
            raise HmmtxError("--states / --obs apply to --zoo only")
        from hmm.io import load_hmm

        return load_hmm(ns.hmm)
    from hmm import zoo

    hmm = zoo.make(ns.zoo, ns.states, ns.obs, seed=ns.zoo_seed)
    return hmm


def run(ns: argparse.Namespace) -> int:
    from hmm.io import atomic_write_json
    from hmm.window import parse_prior, window_curve

    from verify.cli_args import require_fits

    hmm = _source(ns)
    S, V = hmm.num_states, hmm.num_obs
    require_fits(f"window-curve ({ns.seqs} sequences of length {ns.length}, r up to {ns.r_max})",
                 8.0 * ns.seqs * ns.length * (S * S + 2 * S + V) * 4 + 8.0 * min(V ** ns.r_max, 2.0**62) * S,
                 "reduce --seqs, --length or --r-max")
    curve = window_curve(hmm, ns.r_max, prior=parse_prior(ns.prior), num_sequences=ns.seqs, length=ns.length,
                         seed=ns.seed, exact_check=not ns.no_exact_check)
    name = ns.zoo if ns.zoo else ns.hmm
    data = curve.as_dict()
    data["source"] = name
    data["explanation"] = explain(curve)
    _print(curve, name)
    if ns.plot:
        plot_curve(curve, ns.plot, title=f"window filter: {name}")
    if ns.json:
        atomic_write_json(ns.json, data)
    return 0 if bool(curve.holds.all()) else 1


def explain(curve: Any) -> str:
    """Why the a-priori bound is tight, loose or absent for this HMM, in words."""
    import math

    if not math.isfinite(curve.Delta):
        return ("A has a zero entry: Delta(A) = inf, tau(A) = 1, Birkhoff's theorem gives no contraction, so there is "
                "no a-priori bound; the a-posteriori bound (from each window's own product) still applies"
                + ("" if not (curve.max_error[-1] > 0.5) else
                   "; the measured worst-case error does not vanish: some windows do not determine the hidden "
                   "state (e.g. the phase of a permutation chain, or the parity of a run of 1s in the even process), "
                   "and A alone does not forget"))
    if curve.tau > 0.9:
        return (f"tau(A) = {curve.tau:.4g} is close to 1 (slow mixing: sticky or near-deterministic transitions, or a "
                "tiny entry of A making Delta large), so the a-priori bound decays like tau^r and stays loose; the "
                "a-posteriori bound tracks the measured error")
    return f"tau(A) = {curve.tau:.4g}: the a-priori bound decays geometrically like tau^r"


def _fmt(v: float) -> str:
    import math

    return "—" if not math.isfinite(v) else f"{v:.3g}"


def _print(curve: Any, name: str) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal and console.width < 132:
        console = Console(width=132)  # a table of 11 numeric columns; pipes default to 80 columns
    p = curve.params
    from rich.markup import escape

    console.print(f"[bold]window-curve[/bold]  {escape(str(name))}  S={p['S']} V={p['V']}  prior={p['prior']}  "
                  f"{p['num_sequences']} sequences x {p['length']} tokens (seed {p['seed']})")
    console.print(f"Delta(A) = {_fmt(curve.Delta)}   tau(A) = {_fmt(curve.tau)}   delta_mu = {_fmt(curve.prior_distance)}"
                  f"   fitted decay rate of the mean error = {_fmt(curve.rate)}")
    tab = Table(title="L1 error of the window-filtered belief vs bounds (max over positions t >= r)")
    for col in ("r", "max error", "mean error", "a-posteriori", "ratio", "a-priori", "ratio", "next-token err",
                "next a-priori", "check", "holds"):
        tab.add_column(col, justify="right", no_wrap=True)
    for i, r in enumerate(curve.r):
        e, post, pri = curve.max_error[i], curve.a_posteriori[i], curve.a_priori[i]
        rat = lambda b: _fmt(e / b) if (math.isfinite(b) and b > 0) else "—"  # noqa: E731
        tab.add_row(str(int(r)), _fmt(e), _fmt(curve.mean_error[i]), _fmt(post), rat(post), _fmt(pri), rat(pri),
                    _fmt(curve.max_error_next[i]), _fmt(curve.a_priori_next[i]), curve.check[i],
                    "[green]yes[/green]" if curve.holds[i] else "[red]NO[/red]")
    console.print(tab)
    console.print(f"[dim]a-priori: {curve.note}[/dim]")
    console.print(explain(curve))
    msg = f"round-off allowance per comparison: {_fmt(float(curve.allowance.max()))} (float64)"
    if "exact" in curve.check:
        msg += "; 'exact' rows (bound below round-off) were checked in Fractions against mpmath bounds"
    console.print(f"[dim]{msg}[/dim]")


def plot_curve(curve: Any, path: str, title: str = "window filter") -> None:
    """Log-scale plot: measured max/mean error, a-posteriori and a-priori bounds against r (atomic PNG write)."""
    import io
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hmm.io import atomic_write_bytes

    floor = 1e-17
    r = curve.r
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.semilogy(r, np.maximum(curve.max_error, floor), "o-", label="measured max error", color="tab:blue")
    ax.semilogy(r, np.maximum(curve.mean_error, floor), ".:", label="measured mean error", color="tab:blue")
    ax.semilogy(r, np.maximum(curve.a_posteriori, floor), "s--", label="a-posteriori bound (max)", color="tab:green")
    if np.isfinite(curve.a_priori).any():
        ax.semilogy(r, curve.a_priori, "^--", label="a-priori bound 2tanh(d_r/4)", color="tab:red")
    else:
        ax.text(0.02, 0.04, "no a-priori bound: A has a zero entry", transform=ax.transAxes, color="tab:red")
    if math.isfinite(curve.rate):
        ax.text(0.98, 0.96, f"fitted rate {curve.rate:.3g}, tau(A) {curve.tau:.3g}", transform=ax.transAxes,
                ha="right", va="top", fontsize=8)
    ax.set_xlabel("window length r")
    ax.set_ylabel("L1 error of the filtered belief")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
