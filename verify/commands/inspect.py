"""``hmmtx inspect NAME``: print a construction's residual layout and its weight matrices with named rows/columns.

    hmmtx inspect exact-filter --hmm FILE [--layer L] [--plot PNG] [--tokens "0 1 0"]
    hmmtx inspect bayes-multitask --tasks FILE --layer 0

The model is sized for ``--tokens`` (default: the entry's short example). Matrices are shown on their non-zero
rows and columns, truncated to ``--max-rows`` x ``--max-cols``; ``--plot`` writes heatmaps (PNG, atomically).
Construction-specific options come from the registry entry (``hmmtx inspect NAME --help``).
"""

from __future__ import annotations

import argparse
from typing import Any

from verify.commands._construction_cli import (
    add_attention_arguments,
    check_beta,
    load_source,
    register_generic,
    resolve,
)

DESCRIPTION = (
    "Show a construction's named residual layout and every weight matrix (rows and columns named by the layout), "
    "layer by layer; optionally write heatmaps."
)


def register(subparsers: Any) -> None:
    register_generic(subparsers, "inspect", "show a construction's layout and named weight matrices", DESCRIPTION, run)


def _common(p: argparse.ArgumentParser, entry: Any) -> None:
    p.add_argument("--tokens", default=None, help=f"tokens that size the model (default {entry.default_tokens!r})")
    p.add_argument("--layer", default=None, help="only this layer (index 0.., or 'embed' / 'readout')")
    add_attention_arguments(p, entry)
    p.add_argument("--max-rows", type=int, default=24, help="rows shown per matrix (default 24)")
    p.add_argument("--max-cols", type=int, default=12, help="columns shown per matrix (default 12)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write heatmaps of the shown matrices to PNG")


def run(args: argparse.Namespace) -> int:
    from hmm.errors import HmmtxError

    got = resolve(args, _common, DESCRIPTION)
    if got is None:
        return 0
    entry, ns = got
    if ns.max_rows < 1 or ns.max_cols < 1:
        raise HmmtxError(f"--max-rows and --max-cols must be positive, got {ns.max_rows} and {ns.max_cols}")
    if ns.plot is not None and not str(ns.plot).lower().endswith(".png"):
        raise HmmtxError(f"--plot: expected a .png path, got {ns.plot!r}")
    beta = check_beta(ns.attention, ns.beta, getattr(ns, "_default_beta", None))
    source = load_source(entry, ns)
    from constructions.runner import build_model, parse_tokens
    from verify.commands._construction_cli import check_size, check_tokens

    tokens = parse_tokens(entry, ns.tokens if ns.tokens is not None else entry.default_tokens)
    check_tokens(entry, source, tokens)
    check_size(entry, source, tokens, entry.param_values(ns), getattr(ns, "mode", "float64"))
    model = build_model(entry, source, tokens, attention=ns.attention, beta=beta, params=entry.param_values(ns))
    tables = select_tables(model, ns.layer)
    show(model, tables, ns.max_rows, ns.max_cols)
    if ns.plot:
        plot_tables(tables, ns.plot)
        print(f"heatmaps written to {ns.plot}")
    return 0


def select_tables(model: Any, layer: str | None) -> list[dict]:
    """Weight tables of one layer (index or 'embed'/'readout'), or all of them."""
    from hmm.errors import HmmtxError

    tables = model.weight_tables()
    if layer is None:
        return tables
    if layer in ("embed", "readout"):
        return [t for t in tables if t["layer"] == layer]
    try:
        li = int(layer)
    except ValueError:
        raise HmmtxError(f"--layer: expected a layer index, 'embed' or 'readout', got {layer!r}") from None
    if not 0 <= li < len(model.layers):
        raise HmmtxError(f"--layer {li}: the model has layers 0..{len(model.layers) - 1}")
    name = model.layers[li].name
    return [t for t in tables if t["layer"] == name]


def _cell(v: Any) -> str:
    from fractions import Fraction

    from hmm.io import fraction_display

    if v == 0:
        return "·"
    return fraction_display(Fraction(v), max_digits=8) if isinstance(v, Fraction) else f"{float(v):.4g}"


def _nonzero(mat: Any) -> tuple[list[int], list[int]]:
    """Indices of the rows and columns holding a non-zero (dense object arrays or SparseFrac)."""
    from constructions.blocks import nonzeros

    nz = nonzeros(mat)
    return sorted({i for i, _, _ in nz}), sorted({j for _, j, _ in nz})


def show(model: Any, tables: list[dict], max_rows: int, max_cols: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    spec = model.spec
    st = Table(title=f"{spec.name}: size")
    for k in ("layers", "heads", "width", "ffn_width", "max_positions", "attention", "beta"):
        st.add_column(k)
    st.add_row(*(str(getattr(spec, k)) for k in ("layers", "heads", "width", "ffn_width", "max_positions", "attention", "beta")))
    console.print(st)
    console.print(f"[dim]provenance: {escape(spec.provenance)}[/dim]")
    lt = Table(title="residual layout (named blocks)")
    for c in ("name", "start", "stop", "size", "shape", "description"):
        lt.add_column(c)
    for row in model.layout.table():
        lt.add_row(escape(row["name"]), str(row["start"]), str(row["stop"]), str(row["size"]), "x".join(map(str, row["shape"])),
                   escape(row["description"]))
    console.print(lt)
    for layer in model.layers:
        if any(t["layer"] == layer.name for t in tables):
            console.print(f"[bold]{escape(layer.name)}[/bold]: " + escape(layer.description
                          + ("" if not layer.norms else "  [projective normalisation (non-standard): "
                             + ", ".join(f"{n.block} / sum({n.denominator})" for n in layer.norms) + "]")))
    for t in tables:
        mat = t["matrix"]
        rows, cols = _nonzero(mat)
        if t["name"].endswith("rel_bias"):
            cols = list(range(mat.shape[1]))  # a bias table: every lag, zeros included (the target lag has b = 0)
        title = escape(f"{t['layer']} / {t['name']}  {mat.shape[0]}x{mat.shape[1]}")
        if not rows:
            console.print(f"{title}: all zeros")
            continue
        shown_r, shown_c = rows[:max_rows], cols[:max_cols]
        note = f" (non-zero: {len(rows)} rows, {len(cols)} cols"
        note += f"; showing {len(shown_r)} x {len(shown_c)})" if (len(shown_r) < len(rows) or len(shown_c) < len(cols)) else ")"
        tab = Table(title=title + note, show_lines=False)
        tab.add_column("row \\ col", no_wrap=True)
        for j in shown_c:
            tab.add_column(escape(str(t["cols"][j])), justify="right")
        for i in shown_r:
            tab.add_row(escape(str(t["rows"][i])), *(_cell(mat[i, j]) for j in shown_c))
        console.print(tab)


def plot_tables(tables: list[dict], path: str, max_panels: int = 16) -> None:
    """Heatmaps (float values) of up to ``max_panels`` matrices, restricted to their non-zero rows/columns."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hmm.io import atomic_write_bytes

    panels = [t for t in tables if _nonzero(t["matrix"])[0]][:max_panels]
    if not panels:
        from hmm.errors import HmmtxError

        raise HmmtxError("--plot: the selected matrices are all zero, nothing to plot")
    ncol = min(4, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.8 * nrow), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, t in zip(axes.ravel(), panels):
        rows, cols = _nonzero(t["matrix"])
        mat = t["matrix"]
        sub = np.array([[float(mat[i, j]) for j in cols] for i in rows], dtype=np.float64)
        im = ax.imshow(sub, aspect="auto", cmap="RdBu_r", vmin=-np.abs(sub).max(), vmax=np.abs(sub).max(), interpolation="nearest")
        ax.set_title(f"{t['layer']} / {t['name']}", fontsize=8)
        if len(rows) <= 24:
            ax.set_yticks(range(len(rows)), [str(t["rows"][i]) for i in rows], fontsize=5)
        if len(cols) <= 24:
            ax.set_xticks(range(len(cols)), [str(t["cols"][j]) for j in cols], fontsize=5, rotation=90)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
