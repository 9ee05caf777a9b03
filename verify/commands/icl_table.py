"""``hmmtx icl-table``: the Figure-1 analogue of Hao et al. 2025 for the H4 in-context learner.

Over a grid (number of demonstrations) x (test length), contexts ``demo_1 SEP ... SEP demo_n SEP test`` are
sampled from a task mixture; the H4 construction (one Transformer for all tasks) predicts the token after the test
segment. Per cell it reports, averaged over the sampled contexts (definitions in ``docs/constructions/icl.md``):

* ``tv_icl_bayes``:   mean total variation ``0.5 ||p_icl - p_bayes||_1`` (the construction vs the Bayes predictive);
* ``acc_icl_bayes``:  top-1 agreement, ``argmax p_icl == argmax p_bayes`` (ties: lowest id; a uniform fallback has
  argmax 0);
* ``acc_icl_next``:   ``argmax p_icl ==`` the sampled next token; ``acc_bayes_next`` the same for Bayes (the
  Bayes-optimal top-1 accuracy, up to sampling noise);
* ``tv_bayes_true``:  the Bayes predictive vs the true task's predictive (what the task uncertainty costs Bayes);
  ``tv_icl_true`` the construction vs the true task;
* ``zero_mass``:      fraction of contexts whose query window was never seen (zero masses, uniform fallback);
  ``negative``: fraction with negative masses (concat features only);
* ``check_max_abs``:  max |construction - closed-form learner| on the first 8 contexts of the cell (float64;
  ~1e-16 expected; the full equality is the subject of the construction's tests).

The core, :func:`icl_table`, is importable; the command prints rich tables, and optionally writes a heatmap
(``--plot``, matplotlib Agg) and JSON (``--json``), both atomically.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple, Sequence

METRICS = (
    "tv_icl_bayes",
    "acc_icl_bayes",
    "acc_icl_next",
    "acc_bayes_next",
    "tv_bayes_true",
    "tv_icl_true",
    "zero_mass",
    "negative",
    "check_max_abs",
)


class ICLTable(NamedTuple):
    """Result of :func:`icl_table`.

    Fields:
        demos:        the numbers of demonstrations (rows)
        test_lengths: the test lengths (columns)
        metrics:      name -> (len(demos), len(test_lengths)) float64 array (see the module docstring)
        params:       the run's parameters (JSON-ready)
        spec:         the construction's size/provenance report (``ConstructionSpec.as_dict()``)
    """

    demos: tuple
    test_lengths: tuple
    metrics: dict
    params: dict
    spec: dict


def icl_table(
    mixture: Any,
    demos: Sequence[int],
    test_lengths: Sequence[int],
    *,
    demo_len: int = 10,
    contexts: int = 64,
    r: int = 2,
    K: int = 4,
    eta: Any = "1/2",
    features: str = "pattern",
    prior_mass: Any = "0",
    seed: int = 0,
    check: bool = True,
    check_contexts: int = 8,
) -> ICLTable:
    """Run the grid (see the module docstring). Every cell samples its own ``contexts`` contexts with the seed
    ``SeedSequence([seed, n_demos, test_len])`` (cells are reproducible one by one); the test segment is sampled
    with ``test_len + 1`` tokens and its last token is held out as the true next token."""
    import numpy as np
    import torch

    from constructions.icl import ICLContexts, build, parse_eta
    from hmm.errors import HmmtxError
    from hmm.icl_reference import ICLFeatures, icl_reference
    from hmm.mixture import HMMMixture, bayes_predictive
    from hmm.reference import forward_filter
    from hmm.sampling import sample_contexts
    from verify.icl_data import ContextBatch, mixture_references
    from verify.icl_data import ContextLayout

    if not isinstance(mixture, HMMMixture):
        raise HmmtxError(f"icl-table: expected a task mixture, got {type(mixture).__name__}")
    mixture = mixture.as_float()
    for nm, v, lo in (("--demo-length", demo_len, 1), ("--contexts", contexts, 1), ("--r", r, 1), ("--K", K, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise HmmtxError(f"{nm} must be an integer >= {lo}, got {v!r}")
    demos, test_lengths = tuple(int(n) for n in demos), tuple(int(t) for t in test_lengths)
    if not demos or min(demos) < 0:
        raise HmmtxError(f"--demos: need non-negative numbers of demonstrations, got {demos}")
    if not test_lengths or min(test_lengths) < 1:
        raise HmmtxError(f"--test-lengths: need test lengths >= 1, got {test_lengths}")
    eta_q = parse_eta(eta)
    alpha = parse_eta(prior_mass, "--prior-mass", allow_zero=True)
    V = mixture.num_obs
    max_len = 1 + max(demos) * (demo_len + 1) + max(test_lengths)
    if max_len > 4096:
        raise HmmtxError(f"the longest context has {max_len} stream positions (> 4096): use fewer demonstrations or shorter demos")
    model = build(V, r, K, eta_q, features, max_len, alpha)
    feats = ICLFeatures(V, r, features)
    shape = (len(demos), len(test_lengths))
    out = {m: np.zeros(shape) for m in METRICS}
    for i, n in enumerate(demos):
        for j, t in enumerate(test_lengths):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), n, t]))
            cs = sample_contexts(mixture, contexts, n, demo_len, t + 1, rng)
            ctxs = [[d for d in cs.demo_tokens[c]] + [cs.test_tokens[c, :t]] for c in range(contexts)]
            nxt = cs.test_tokens[:, t]
            with torch.no_grad():
                res = model.run(ICLContexts(ctxs), "float64", record="final").outputs
            p_icl = res["next_token_probs"][:, -1].numpy()
            status = res["status"][:, -1].numpy()
            ids = model.codec.encode(ICLContexts(ctxs))
            batch = ContextBatch(ids, np.full(ids.shape, -1), cs.tasks, ContextLayout(n, demo_len, t), V)
            p_bayes = mixture_references(mixture, batch).next_token_probs[:, -1]  # batched Bayes filter
            # spot check of the batched filter against hmm.mixture.bayes_predictive on the first context
            if np.abs(p_bayes[0] - bayes_predictive(mixture, ctxs[0]).next_token_probs[-1]).max() > 1e-12:
                raise HmmtxError("internal: batched Bayes predictive disagrees with hmm.mixture.bayes_predictive")
            p_true = np.empty_like(p_bayes)
            for k, h in enumerate(mixture.tasks):
                idx = np.flatnonzero(cs.tasks == k)
                if idx.size:
                    p_true[idx] = forward_filter(h, cs.test_tokens[idx, :t]).next_token_probs[..., -1, :]
            tv = lambda a, b: 0.5 * np.abs(a - b).sum(axis=-1)  # noqa: E731
            out["tv_icl_bayes"][i, j] = tv(p_icl, p_bayes).mean()
            out["tv_bayes_true"][i, j] = tv(p_bayes, p_true).mean()
            out["tv_icl_true"][i, j] = tv(p_icl, p_true).mean()
            out["acc_icl_bayes"][i, j] = (p_icl.argmax(-1) == p_bayes.argmax(-1)).mean()
            out["acc_icl_next"][i, j] = (p_icl.argmax(-1) == nxt).mean()
            out["acc_bayes_next"][i, j] = (p_bayes.argmax(-1) == nxt).mean()
            out["zero_mass"][i, j] = (status == 1).mean()
            out["negative"][i, j] = (status == 2).mean()
            if check:
                z = res["masses"][:, -1].numpy()
                m = min(check_contexts, contexts)  # spot check: the closed form on the first contexts of the cell
                ref = np.stack([icl_reference(c, feats, float(eta_q), K).masses[-1] for c in ctxs[:m]]) + float(alpha) / V
                out["check_max_abs"][i, j] = float(np.abs(z[:m] - ref).max())
            else:
                out["check_max_abs"][i, j] = np.nan
    params = {
        "demos": list(demos), "test_lengths": list(test_lengths), "demo_len": int(demo_len), "contexts": int(contexts),
        "r": int(r), "K": int(K), "eta": str(eta_q), "features": features, "prior_mass": str(alpha), "seed": int(seed),
        "num_tasks": mixture.num_tasks, "V": V, "state_sizes": list(mixture.state_sizes),
    }
    return ICLTable(demos, test_lengths, out, params, model.spec.as_dict())


# ---------------------------------------------------------------------------------------------- output
def _fmt(v: float, name: str) -> str:
    import math

    if isinstance(v, float) and math.isnan(v):
        return "-"
    if name == "check_max_abs":
        return f"{v:.1e}"
    return f"{v:.3f}"


def render_tables(table: ICLTable, metrics: Sequence[str] = ("tv_icl_bayes", "acc_icl_bayes", "tv_bayes_true")) -> list:
    """Rich tables (rows = demonstrations, columns = test lengths), one per metric."""
    from rich.table import Table

    out = []
    for m in metrics:
        tb = Table(title=m, title_justify="left")
        tb.add_column("demos \\ test len", justify="right")
        for t in table.test_lengths:
            tb.add_column(str(t), justify="right")
        for i, n in enumerate(table.demos):
            tb.add_row(str(n), *[_fmt(float(table.metrics[m][i, j]), m) for j in range(len(table.test_lengths))])
        out.append(tb)
    return out


def markdown_table(table: ICLTable, metric: str) -> str:
    """A metric as a Markdown table (what docs/constructions/icl.md records)."""
    head = "| demos \\ test length | " + " | ".join(str(t) for t in table.test_lengths) + " |"
    sep = "|---:|" + "---:|" * len(table.test_lengths)
    rows = [f"| {n} | " + " | ".join(_fmt(float(table.metrics[metric][i, j]), metric) for j in range(len(table.test_lengths))) + " |"
            for i, n in enumerate(table.demos)]
    return "\n".join([head, sep, *rows])


def plot_table(table: ICLTable, path: str) -> None:
    """Heatmaps of tv_icl_bayes, acc_icl_bayes and tv_bayes_true, written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hmm.io import atomic_write_bytes

    panels = [("tv_icl_bayes", "TV(construction, Bayes)", "viridis_r"), ("acc_icl_bayes", "top-1 agreement with Bayes", "viridis"),
              ("tv_bayes_true", "TV(Bayes, true task)", "viridis_r")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (m, title, cmap) in zip(axes, panels):
        data = table.metrics[m]
        im = ax.imshow(data, origin="lower", aspect="auto", cmap=cmap)
        ax.set_xticks(range(len(table.test_lengths)), [str(t) for t in table.test_lengths])
        ax.set_yticks(range(len(table.demos)), [str(n) for n in table.demos])
        ax.set_xlabel("test length")
        ax.set_ylabel("demonstrations")
        ax.set_title(title)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                rgb = im.cmap(im.norm(data[i, j]))[:3]
                light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.5
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7, color="k" if light else "w")
        fig.colorbar(im, ax=ax, fraction=0.046)
    p = table.params
    fig.suptitle(f"H4 in-context learner (r={p['r']}, K={p['K']}, eta={p['eta']}, {p['features']}, alpha={p['prior_mass']}), "
                 f"{p['num_tasks']} tasks, V={p['V']}, demo length {p['demo_len']}, {p['contexts']} contexts/cell")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def table_json(table: ICLTable, command: str) -> dict:
    import math

    clean = lambda a: [[None if math.isnan(float(v)) else float(v) for v in row] for row in a]  # noqa: E731
    return {
        "command": command,
        "construction": table.spec,
        "params": table.params,
        "demos": list(table.demos),
        "test_lengths": list(table.test_lengths),
        "metrics": {m: clean(v) for m, v in table.metrics.items()},
        "definitions": {
            "tv_icl_bayes": "mean 0.5*||p_icl - p_bayes||_1 over contexts",
            "acc_icl_bayes": "mean [argmax p_icl == argmax p_bayes] (ties: lowest id)",
            "acc_icl_next": "mean [argmax p_icl == held-out next token]",
            "acc_bayes_next": "mean [argmax p_bayes == held-out next token]",
            "tv_bayes_true": "mean 0.5*||p_bayes - p_true_task||_1",
            "tv_icl_true": "mean 0.5*||p_icl - p_true_task||_1",
            "zero_mass": "fraction of contexts with zero masses (unseen query window; uniform fallback)",
            "negative": "fraction of contexts with negative masses (kept signed)",
            "check_max_abs": "max |masses - closed-form masses| (float64)",
        },
    }


# ---------------------------------------------------------------------------------------------- CLI
def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "icl-table",
        help="Figure-1 analogue: the H4 in-context learner vs the Bayes predictive over (demonstrations x test length)",
        description=(
            "Sample in-context tasks from a mixture, run the H4 construction (one Transformer for every task) and "
            "report, per (number of demonstrations, test length), the mean total variation to the Bayes predictive, "
            "top-1 agreement with it, accuracy on the held-out next token, and the Bayes predictive's own error "
            "against the true task."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tasks", metavar="FILE", help="task mixture JSON ({task_prior, tasks})")
    src.add_argument("--zoo-mixture", metavar="NAME", help="zoo family for a random mixture (e.g. dirichlet, sticky)")
    p.add_argument("--tasks-count", type=int, default=4, help="number of tasks of the zoo mixture (default 4)")
    p.add_argument("--num-states", type=int, default=None, help="hidden states per zoo task (family default)")
    p.add_argument("--num-obs", type=int, default=None, help="observation symbols of the zoo tasks (family default)")
    p.add_argument("--demos", default="0,1,2,4,8,16", help="numbers of demonstrations (default 0,1,2,4,8,16)")
    p.add_argument("--test-lengths", default="1,2,4,8", help="test lengths (default 1,2,4,8)")
    p.add_argument("--demo-length", type=int, default=10, help="length of every demonstration (default 10)")
    p.add_argument("--contexts", type=int, default=64, help="sampled contexts per cell (default 64)")
    p.add_argument("--r", type=int, default=2, help="feature window length (default 2)")
    p.add_argument("--K", type=int, default=4, help="gradient-descent layers (default 4)")
    p.add_argument("--eta", default="1/2", help="GD step size (default 1/2)")
    p.add_argument("--features", choices=("pattern", "concat"), default="pattern", help="feature map (default pattern)")
    p.add_argument("--prior-mass", default="0", help="uniform pseudo-mass alpha added by the readout (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the zoo mixture and of the sampled contexts")
    p.add_argument("--no-check", action="store_true", help="skip the per-cell check against the closed form")
    p.add_argument("--plot", metavar="PNG", default=None, help="write heatmaps (PNG, atomic)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the table as JSON (atomic)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    import time

    from rich.console import Console

    from hmm.errors import HmmtxError
    from hmm.io import atomic_write_json, load_mixture, parse_int_list

    demos = parse_int_list(args.demos, "--demos", 0, unique=True)
    tests = parse_int_list(args.test_lengths, "--test-lengths", 1, unique=True)
    if args.tasks:
        mixture = load_mixture(args.tasks)
        source = f"task file {args.tasks}"
    else:
        from hmm.zoo import make_mixture

        if args.tasks_count < 1:
            raise HmmtxError(f"--tasks-count must be >= 1, got {args.tasks_count}")
        mixture = make_mixture(args.zoo_mixture, args.tasks_count, args.num_states, args.num_obs, seed=args.seed)
        source = f"zoo mixture {args.zoo_mixture} x {args.tasks_count} (seed {args.seed})"
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise HmmtxError(f"--plot: expected a .png path, got {args.plot!r}")
    from verify.cli_args import require_fits

    V = mixture.num_obs
    P = V ** args.r if args.features == "pattern" else args.r * V
    length = 1 + max(demos) * (args.demo_length + 1) + max(tests)
    require_fits(f"icl-table ({args.contexts} contexts of up to {length} positions, {P} features, K = {args.K})",
                 8.0 * args.contexts * length * (P * (V + 4) + 64) * (args.K + 4) + 8.0 * P * P * length,
                 "reduce --contexts, --r, --K or the lengths")
    import torch

    torch.set_num_threads(1)  # (N, P, D) element-wise work: one thread is faster on small shared machines
    t0 = time.perf_counter()
    table = icl_table(mixture, demos, tests, demo_len=args.demo_length, contexts=args.contexts, r=args.r, K=args.K,
                      eta=args.eta, features=args.features, prior_mass=args.prior_mass, seed=args.seed, check=not args.no_check)
    elapsed = time.perf_counter() - t0
    con = Console()
    s = table.spec
    from rich.markup import escape

    con.print(f"[bold]H4 in-context learner[/bold] on {escape(source)}: {escape(repr(mixture))}")
    con.print(f"construction: {s['layers']} layers, width D = {s['width']}, FFN width {s['ffn_width']}, "
              f"d_x = {s['parameters']['d_x']}, r = {args.r}, K = {args.K}, eta = {table.params['eta']}, {args.features}, "
              f"prior mass {table.params['prior_mass']}")
    con.print(f"{args.contexts} contexts per cell, demonstrations of length {args.demo_length}; {elapsed:.1f} s")
    for tb in render_tables(table, ("tv_icl_bayes", "acc_icl_bayes", "acc_icl_next", "acc_bayes_next", "tv_bayes_true", "zero_mass")):
        con.print(tb)
    check_failed = 0
    if not args.no_check:
        import numpy as np

        chk = np.asarray(table.metrics["check_max_abs"], dtype=float)
        check_failed = int((~np.isfinite(chk)).sum())
        if check_failed:  # never print nan and exit 0: a check that cannot be computed has failed
            con.print(f"construction vs closed-form learner: the check is not finite (nan/inf) in {check_failed} of "
                      f"{chk.size} cells (largest finite difference "
                      f"{np.max(chk[np.isfinite(chk)], initial=0.0):.2e}); CHECK FAILED", markup=False)
        else:
            con.print(f"construction vs closed-form learner: max |masses difference| = {chk.max():.2e}")
    command = "hmmtx " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("hmmtx") else "hmmtx icl-table ..."
    if args.plot:
        plot_table(table, args.plot)
        con.print(f"heatmap written to {args.plot}", markup=False)
    if args.json:
        atomic_write_json(args.json, table_json(table, command))
        con.print(f"JSON written to {args.json}", markup=False)
    return 1 if check_failed else 0


__all__ = ["ICLTable", "METRICS", "icl_table", "render_tables", "markdown_table", "plot_table", "table_json", "register", "run"]
