"""``hmmtx probe``: layerwise probes and attention position-independence (the analogues of Hao et al. 2025's
Figures 2 and 3) on constructed and trained Transformers, side by side."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Per-layer linear probes (held-out accuracy) for the token k positions back, the hidden state, the belief
(R^2) and the task identity, and the per-layer attention position-independence score under random permutations
of the demonstrations (mean +- std over permutations). Definitions: docs/diagnostics.md.

--model may be given several times: constructed:NAME (any registered construction with probe hooks, e.g.
bayes-multitask, icl, window, exact-filter) or checkpoint:PATH (from `hmmtx train`). All subjects are probed on
the same contexts: the checkpoint's own task mixture and context layout when a checkpoint is given, else --tasks
FILE or a zoo mixture (--zoo-mixture). Constructions that read one sequence (window, exact-filter) are probed on
sequences of the mixture's first task with no demonstrations (no task probe, no position-independence score)."""



def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe",
        help="layerwise probes and attention position-independence (Hao et al. Figs 2-3 analogues)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", required=True, metavar="SPEC",
                   help="constructed:NAME or checkpoint:PATH (repeatable)")
    p.add_argument("--tasks", default=None, metavar="FILE", help="task mixture JSON (when no checkpoint is given)")
    p.add_argument("--zoo-mixture", default="dirichlet", metavar="FAMILY", help="zoo family for the default mixture")
    p.add_argument("--num-tasks", type=int, default=4, help="tasks of the default zoo mixture")
    p.add_argument("--states", type=int, default=3, help="hidden states per task of the default zoo mixture")
    p.add_argument("--vocab", type=int, default=4, help="observation symbols of the default zoo mixture")
    p.add_argument("--mixture-seed", type=int, default=0, help="seed of the default zoo mixture")
    p.add_argument("--demos", type=int, default=None, help="demonstrations per context (default: checkpoint's, or 4)")
    p.add_argument("--demo-len", type=int, default=None, help="tokens per demonstration (default: checkpoint's, or 8)")
    p.add_argument("--test-len", type=int, default=None, help="tokens in the test segment (default: checkpoint's, or 8)")
    p.add_argument("--contexts", type=int, default=600, help="contexts sampled (70%% fit the probes, 30%% score them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe contexts and of the permutations")
    p.add_argument("--lags", default="1,2,3,4", help="token distances k for the previous-token probes")
    p.add_argument("--perms", type=int, default=8, help="random permutations of the demonstrations")
    p.add_argument("--r", type=int, default=None,
                   help="window length r passed to the constructions' probe builders (icl default 2, window default 4)")
    p.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots (fig2/fig3 analogues) into DIR")
    p.add_argument("--json", default=None, metavar="OUT", help="write all numbers as JSON")
    p.set_defaults(func=run, _outputs={"json": "file", "plot": "folder"})


# ---------------------------------------------------------------------------------------------- subjects
def _probe_entries() -> dict:
    """Registered constructions that are probe subjects (their entry has ``probe`` hooks), by name."""
    from constructions import registry

    return {n: e for n, e in registry.entries().items() if e.probe is not None}


def _parse_specs(specs: list[str]) -> list[tuple[str, str]]:
    from hmm.errors import HmmtxError

    out = []
    probe_able = None
    for s in specs:
        kind, sep, val = s.partition(":")
        if not sep or not val or kind not in ("constructed", "checkpoint"):
            raise HmmtxError(f"--model {s!r}: expected constructed:NAME or checkpoint:PATH")
        if kind == "constructed":
            probe_able = _probe_entries() if probe_able is None else probe_able
            if val not in probe_able:
                raise HmmtxError(f"--model {s!r}: construction '{val}' has no probe hooks "
                                 f"(choose from {', '.join(probe_able) or 'none'})")
        out.append((kind, val))
    return out


def build_construction(name: str, source: Any, layout: Any, r: int | None) -> Any:
    """Build construction ``name`` sized for ``layout``'s streams with its registry entry's ``probe.build`` hook
    (source: the mixture, or one HMM for constructions that read one sequence)."""
    from constructions.runner import ConstructionError
    from hmm.errors import HmmtxError

    entry = _probe_entries().get(name)
    if entry is None:
        raise HmmtxError(f"no probe hooks for construction '{name}'")
    try:
        model = entry.probe.build(source, layout.length, r)
    except HmmtxError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        raise ConstructionError(f"construction '{name}': probe build raised {type(exc).__name__}: {exc}") from exc
    if not hasattr(model, "forward") or not hasattr(model, "layers"):
        raise ConstructionError(f"construction '{name}': probe build returned {type(model).__name__}, not a model")
    return model


def _subject(name: str, mixture: Any, data: Any, single: list, args: argparse.Namespace) -> tuple[Any, Any]:
    """(probe subject, its probe data) for construction ``name``; ``single`` caches the one-sequence data."""
    from hmm.mixture import HMMMixture
    from verify.icl_data import ContextLayout
    from verify.probes import ConstructedSubject, make_probe_data

    entry = _probe_entries()[name]
    if entry.probe.reads == "contexts":
        model = build_construction(name, mixture, data.batch.layout, args.r)
        return ConstructedSubject(model, name=f"constructed:{name}", tokens=entry.probe.tokens), data
    if not single:
        task0 = HMMMixture.from_arrays([1.0], [mixture.tasks[0]])
        length = data.batch.layout.length
        single += [task0, make_probe_data(task0, ContextLayout(0, 1, length - 1), args.contexts, args.seed)]
    model = build_construction(name, single[0].tasks[0], single[1].batch.layout, args.r)
    return ConstructedSubject(model, name=f"constructed:{name}", input_kind="hmm"), single[1]


# ---------------------------------------------------------------------------------------------- output
def _fmt(x: float, digits: int = 3) -> str:
    import math

    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _tables(results: list[dict], lags: list[int]) -> list[Any]:
    """One table per subject (rows = residual index), then a side-by-side summary of all subjects."""
    from rich.markup import escape
    from rich.table import Table

    tables = []
    for r in results:
        rep, pi = r["report"], r.get("independence")
        t = Table(title=f"{escape(r['label'])}: held-out probe accuracy / R^2 per residual index; attention position-independence per layer")
        t.add_column("i", justify="right")
        t.add_column("after layer")
        for k in lags:
            t.add_column(f"tok k={k}", justify="right")
        t.add_column("state", justify="right")
        t.add_column("belief R2", justify="right")
        t.add_column("task", justify="right")
        t.add_column("task law R2", justify="right")
        t.add_column("pos.-indep. of layer i", justify="right")
        for i, name in enumerate(rep.layers):
            row = [str(i), name]
            row += [_fmt(float(rep.token[k].accuracy[i])) if k in rep.token else "-" for k in lags]
            row += [_fmt(float(rep.state.accuracy[i])), _fmt(float(rep.belief.r2[i])),
                    _fmt(float(rep.task.accuracy[i])) if rep.task is not None else "-",
                    _fmt(float(rep.task_law.r2[i])) if rep.task_law is not None else "-"]
            if pi is None or i == 0:
                row.append("")
            else:
                m, sd = pi.mean[i - 1], pi.std[i - 1]
                row.append("no attention" if m != m else f"{m:.3f} +- {sd:.3f}")
            t.add_row(*row)
        cap = ["majority rate: " + ", ".join(f"k={k} {_fmt(rep.token[k].majority)}" for k in lags if k in rep.token),
               f"state {_fmt(rep.state.majority)}" + (f", task {_fmt(rep.task.majority)}" if rep.task is not None else ""),
               f"Bayes ceiling: state {_fmt(rep.state.ceiling)}" + (f", task {_fmt(rep.task.ceiling)}" if rep.task is not None else "")
               + (f", task law R2 {_fmt(rep.task_law.ceiling)}" if rep.task_law is not None else "")]
        t.caption = "; ".join(cap)
        tables.append(t)

    s = Table(title="side by side: where each quantity becomes readable (residual index; - = never)")
    s.add_column("measurement")
    for r in results:
        s.add_column(escape(r["label"]), justify="right")

    def first(acc: Any, level: float) -> str:
        import numpy as np

        hits = np.flatnonzero(np.asarray(acc) >= level)
        return "-" if hits.size == 0 else str(int(hits[0]))

    for k in lags:
        s.add_row(f"token k={k}: first i with acc >= 0.95", *[first(r["report"].token[k].accuracy, 0.95) if k in r["report"].token else "-" for r in results])
    s.add_row("state: best acc / Bayes", *[f"{_fmt(float(max(r['report'].state.accuracy)))} / {_fmt(r['report'].state.ceiling)}" for r in results])
    s.add_row("state: first i within 0.02 of best", *[first(r["report"].state.accuracy, float(max(r["report"].state.accuracy)) - 0.02) for r in results])
    s.add_row("task: final acc / Bayes", *[("-" if r["report"].task is None else f"{_fmt(float(r['report'].task.accuracy[-1]))} / {_fmt(r['report'].task.ceiling)}") for r in results])
    s.add_row("task: first i within 0.02 of Bayes", *[("-" if r["report"].task is None else first(r["report"].task.accuracy, r["report"].task.ceiling - 0.02)) for r in results])

    def by_layer(r: dict) -> str:
        pi = r.get("independence")
        if pi is None:
            return "-"
        return " ".join(f"{m:.2f}" for m in pi.mean if m == m) or "-"

    s.add_row("pos.-indep. of the attention layers, bottom to top", *[by_layer(r) for r in results])
    tables.append(s)
    return tables


def _json_safe(x: Any) -> Any:
    import math

    import numpy as np

    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(x, np.integer):
        return int(x)
    return x


def result_json(r: dict) -> dict:
    rep = r["report"]
    cls = lambda c: None if c is None else {"accuracy": c.accuracy, "majority": c.majority, "n_classes": c.n_classes,  # noqa: E731
                                            "n_test": c.n_test, "bayes_ceiling": c.ceiling}
    out = {
        "subject": r["label"],
        "kind": r["kind"],
        "residual_labels": list(rep.layers),
        "token": {str(k): cls(v) for k, v in rep.token.items()},
        "state": cls(rep.state),
        "belief": {"r2": rep.belief.r2, "tv": rep.belief.tv, "n_test": rep.belief.n_test},
        "task": cls(rep.task),
        "task_law": None if rep.task_law is None else {"r2": rep.task_law.r2, "bayes_ceiling": rep.task_law.ceiling,
                                                        "n_test": rep.task_law.n_test},
        "data": r["data"],
    }
    if r.get("segments") is not None:
        out["next_token_by_segment"] = r["segments"]
    pi = r.get("independence")
    if pi is not None:
        out["independence"] = {"layers": list(pi.layers), "mean": pi.mean, "std": pi.std, "n_perms": pi.n_perms,
                               "per_head": [None if h is None else h for h in pi.per_head]}
    return _json_safe(out)


def write_plots(results: list[dict], lags: list[int], folder: Any) -> list[str]:
    """fig3b-token-probes.png, fig3a-state-task.png, fig2-independence.png (matplotlib Agg, atomic writes)."""
    import io
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hmm.io import write_file_set

    folder = Path(folder)
    rendered: dict[str, bytes] = {}

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        rendered[name] = buf.getvalue()

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], results):
        rep = r["report"]
        for k in lags:
            if k in rep.token:
                ax.plot(range(len(rep.layers)), rep.token[k].accuracy, marker="o", label=f"k={k}")
        ax.set_title(r["label"], fontsize=9)
        ax.set_xlabel("residual index (0 = embedding)")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("held-out accuracy")
    labelled = [ax for ax in axes[0] if ax.get_legend_handles_labels()[0]]
    if labelled:  # a model may have no readable lag at all (e.g. segments shorter than every k)
        labelled[-1].legend(fontsize=8)
    fig.suptitle("token k positions back (cf. Hao et al. Fig. 3b)", fontsize=10)
    save(fig, "fig3b-token-probes.png")

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], results):
        rep = r["report"]
        x = range(len(rep.layers))
        ax.plot(x, rep.state.accuracy, marker="o", label="hidden state")
        ax.axhline(rep.state.ceiling, ls=":", color="tab:blue", lw=1)
        if rep.task is not None:
            ax.plot(x, rep.task.accuracy, marker="s", label="task identity")
            ax.axhline(rep.task.ceiling, ls=":", color="tab:orange", lw=1)
        ax.set_title(r["label"], fontsize=9)
        ax.set_xlabel("residual index (0 = embedding)")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("held-out accuracy (dotted: Bayes)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("hidden state vs task identity (cf. Hao et al. Fig. 3a)", fontsize=10)
    save(fig, "fig3a-state-task.png")

    with_pi = [r for r in results if r.get("independence") is not None]
    if with_pi:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for r in with_pi:
            pi = r["independence"]
            import numpy as np

            ok = np.isfinite(np.asarray(pi.mean, dtype=float))  # layers without attention have no score
            xs = np.arange(len(pi.layers))[ok]
            ax.errorbar(xs, np.asarray(pi.mean)[ok], yerr=np.asarray(pi.std)[ok], marker="o", capsize=3, label=r["label"])
        ax.set_xlabel("layer (only layers with attention)")
        ax.set_ylabel("position-independence score")
        ax.set_ylim(-0.1, 1.05)
        ax.legend(fontsize=8)
        ax.set_title("attention logits under demo permutations (cf. Hao et al. Fig. 2)", fontsize=10)
        save(fig, "fig2-independence.png")
    # all-or-nothing: a full disk or an interrupt never leaves part of the set
    return [str(f) for f in write_file_set(folder, rendered, "--plot")]


# ---------------------------------------------------------------------------------------------- main
def _check_args(args: argparse.Namespace) -> list[int]:
    """Validate the numeric options and output places; returns the lags."""
    from pathlib import Path

    from hmm.errors import HmmtxError
    from hmm.io import parse_int_list

    lags = parse_int_list(args.lags, "--lags")
    if any(k < 1 for k in lags):
        raise HmmtxError(f"--lags: distances must be >= 1, got {lags}")
    if args.contexts < 10:
        raise HmmtxError(f"--contexts must be >= 10, got {args.contexts}")
    if args.perms < 1:
        raise HmmtxError(f"--perms must be >= 1, got {args.perms}")
    if args.r is not None and args.r < 1:
        raise HmmtxError(f"--r must be >= 1, got {args.r}")
    if args.json is not None:  # (the generic checks in verify.cli_args ran already; a checkpoint is an input too)
        from hmm.io import check_output_path

        check_output_path(args.json, "--json", [v for k, v in _parse_specs(args.model) if k == "checkpoint"]
                          + [args.tasks])
    return lags


def _mixture_and_layout(args: argparse.Namespace, checkpoints: dict) -> tuple[Any, Any]:
    """The task mixture and context layout every subject is probed on (the checkpoint's when one is given)."""
    from hmm.errors import HmmtxError
    from hmm.io import load_mixture
    from verify.icl_data import ContextLayout

    layout_default = (4, 8, 8)
    if checkpoints:
        first = next(iter(checkpoints.values()))
        mixture = first.mixture
        layout_default = (first.config.n_demos, first.config.demo_len, first.config.test_len)
        if args.tasks:
            raise HmmtxError("--tasks: a checkpoint fixes the task mixture (its training tasks); leave --tasks out")
    elif args.tasks:
        mixture = load_mixture(args.tasks)
    else:
        from hmm.zoo import make_mixture

        mixture = make_mixture(args.zoo_mixture, args.num_tasks, args.states, args.vocab, seed=args.mixture_seed)
    if mixture.exact:
        mixture = mixture.as_float()
    layout = ContextLayout(
        layout_default[0] if args.demos is None else args.demos,
        layout_default[1] if args.demo_len is None else args.demo_len,
        layout_default[2] if args.test_len is None else args.test_len,
    )
    for path, ck in checkpoints.items():
        c = ck.config
        if ck.mixture.num_obs != mixture.num_obs:
            raise HmmtxError(f"checkpoint {path}: V = {ck.mixture.num_obs} differs from the probe data's V = {mixture.num_obs}")
        if layout.length > c.layout.length:
            raise HmmtxError(f"checkpoint {path}: contexts of length {layout.length} exceed the trained length {c.layout.length}")
    return mixture, layout


def _probe_one(subj: Any, d: Any, kind: str, lags: list[int], args: argparse.Namespace) -> dict:
    """Probes and (with at least two demonstrations) position independence of one subject."""
    from verify.probes import position_independence, run_probes

    tr = subj.trace(d.batch)
    report = run_probes(subj, d, lags=lags, trace=tr)
    pi = None
    if d.batch.layout.n_demos >= 2:
        pi = position_independence(subj, d.batch, n_perms=args.perms, seed=args.seed, base_trace=tr)
    lay = d.batch.layout
    return {
        "label": subj.name, "kind": kind, "report": report, "independence": pi,
        "data": {"n_contexts": int(d.batch.tokens.shape[0]), "n_train_contexts": int(d.n_train),
                 "n_demos": lay.n_demos, "demo_len": lay.demo_len, "test_len": lay.test_len,
                 "num_tasks": int(d.refs.task_posterior.shape[-1]), "seed": args.seed},
        "layers": list(subj.layer_names),
    }


def _segment_tables(checkpoints: dict, mixture: Any, data: Any, layout: Any, results: list[dict], console: Any) -> None:
    """Next-token quality by segment of each checkpoint (printed, and stored in its result)."""
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table

    from verify.training import evaluate_segments

    for path, ck in checkpoints.items():
        seg = evaluate_segments(ck.model, mixture, data.batch)
        t = Table(title=f"trained:{escape(Path(path).name)}: next-token quality by segment of the predicted token "
                        f"({data.batch.tokens.shape[0]} probe contexts)")
        for c in ("segment", "TV model vs Bayes", "TV unigram vs Bayes", "TV segment-only Bayes vs Bayes", "CE model",
                  "CE Bayes", "Bayes max task post."):
            t.add_column(c, justify="right")
        for i in range(len(seg.n_positions)):
            name = f"demo {i + 1}" if i < layout.n_demos else "test"
            t.add_row(name, f"{seg.tv_model[i]:.4f}", f"{seg.tv_unigram[i]:.4f}", f"{seg.tv_segment_only[i]:.4f}", f"{seg.ce_model[i]:.4f}",
                      f"{seg.ce_bayes[i]:.4f}", f"{seg.task_posterior_max[i]:.3f}")
        console.print(t)
        for r in results:
            if r["label"] == f"trained:{Path(path).name}":
                r["segments"] = {k: v for k, v in seg._asdict().items()}


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from rich.console import Console

    from hmm.io import atomic_write_json
    from verify.probes import TrainedSubject, make_probe_data

    specs = _parse_specs(args.model)
    lags = _check_args(args)
    checkpoints = {}
    for kind, val in specs:
        if kind == "checkpoint" and val not in checkpoints:
            from verify.training import load_checkpoint

            checkpoints[val] = load_checkpoint(val)
    mixture, layout = _mixture_and_layout(args, checkpoints)
    console = Console() if sys.stdout.isatty() else Console(width=130)
    from verify.cli_args import require_fits

    width = max([256] + [c.config.d_model * 4 for c in checkpoints.values()])
    require_fits(f"probe ({args.contexts} contexts of {layout.length} positions, {len(specs)} model(s))",
                 8.0 * args.contexts * layout.length * width * 16 * (1 + args.perms / 4) * len(specs),
                 "reduce --contexts, --perms or the context lengths")
    data = make_probe_data(mixture, layout, args.contexts, args.seed)
    single: list = []  # [task-0 mixture, its probe data] for constructions that read one sequence
    results = []
    for kind, val in specs:
        if kind == "checkpoint":
            subj, d = TrainedSubject(checkpoints[val].model, name=f"trained:{Path(val).name}"), data
        else:
            subj, d = _subject(val, mixture, data, single, args)
        console.print(f"probing {subj.name} ({len(subj.layer_names)} layers) ...", style="dim", markup=False)
        results.append(_probe_one(subj, d, kind, lags, args))

    for t in _tables(results, lags):
        console.print(t)
    _segment_tables(checkpoints, mixture, data, layout, results, console)
    if args.plot:
        for f in write_plots(results, lags, args.plot):
            console.print(f"wrote {f}", markup=False)
    if args.json:
        payload = {"command": "probe", "models": args.model, "seed": args.seed, "contexts": args.contexts,
                   "lags": lags, "perms": args.perms, "mixture": mixture.to_dict(exact=False),
                   "subjects": [result_json(r) for r in results]}
        atomic_write_json(args.json, payload)
        console.print(f"wrote {args.json}", markup=False)
    return 0
