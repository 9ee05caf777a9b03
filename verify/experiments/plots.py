"""Per-layer curves of a result store as one figure (``hmmtx experiment table DIR --plot FILE``): the analogues of
Hao et al. 2025's Figure 3 (state, task and previous-token probes per residual) and Figure 2 (position
independence per attention layer), mean over seeds with the 95 % t-interval shaded; one panel row per number of
tasks, one colour per depth, solid learned / dashed relative positions, the constructions in black.

Cells are told apart by ``num_tasks`` (row), ``n_layers`` (colour) and ``pos`` (line style) only, the axes of
``grids/hao-ablation.toml``; a grid that varies another axis (``steps``, ``n_demos``, ...) draws cells that differ
there alike: use ``--layers`` / ``--markdown`` for those."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

from verify.experiments.tables import Cell, cells, layer_curves

#: panel columns: (curve name in :func:`layer_curves`, title)
PANELS = (
    ("state", "hidden-state probe (accuracy)"),
    ("task", "task probe (accuracy)"),
    ("task_law", "task-law probe (R^2)"),
    ("tok_k1", "token probe, lag 1 (accuracy)"),
    ("pi", "position independence (attention layer)"),
)
_DEPTH_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _style(cell: Cell, depths: list) -> dict:
    if cell.kind != "trained":
        ls = {"constructed:bayes-multitask": "-.", "constructed:icl": ":"}.get(cell.kind, "--")
        return {"color": "k", "ls": ls, "label": cell.kind.replace("constructed:", "construction ")}
    L = cell.results[0]["run"]["config"]["n_layers"]
    pos = cell.results[0]["run"]["config"]["pos"]
    colour = _DEPTH_COLOURS[depths.index(L) % len(_DEPTH_COLOURS)]
    return {"color": colour, "ls": "-" if pos == "learned" else "--", "label": f"L={L} {pos}"}


def _draw(ax: object, cell: Cell, name: str, style: dict) -> bool:
    cur = layer_curves(cell).get(name)
    if not cur or not any(math.isfinite(iv.mean) for iv in cur):
        return False
    n = len(cur) if name == "pi" else len(cur) - 1  # pi: one value per layer (attention layers only); probes: L + 1
    pts = [((i + 1 if name == "pi" else i) / n, iv) for i, iv in enumerate(cur) if math.isfinite(iv.mean)]
    xs = [x for x, _ in pts]
    ax.plot(xs, [iv.mean for _, iv in pts], marker=".", ms=4, lw=1.2, **style)
    lo = [iv.lo if math.isfinite(iv.lo) else iv.mean for _, iv in pts]
    hi = [iv.hi if math.isfinite(iv.hi) else iv.mean for _, iv in pts]
    ax.fill_between(xs, lo, hi, color=style["color"], alpha=0.12, lw=0)
    return True


def plot_layer_curves(results: Sequence[dict], path: str | Path) -> Path:
    """Write the figure (module docstring) atomically as PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hmm.io import atomic_write_bytes

    _, cs = cells(results)
    tasks = sorted({c.results[0]["run"]["config"]["num_tasks"] for c in cs})
    depths = sorted({c.results[0]["run"]["config"]["n_layers"] for c in cs if c.kind == "trained"})
    fig, axes = plt.subplots(len(tasks), len(PANELS), figsize=(3.2 * len(PANELS), 2.6 * len(tasks)), squeeze=False)
    for row, K in enumerate(tasks):
        for col, (name, title) in enumerate(PANELS):
            ax = axes[row][col]
            for c in cs:
                if c.results[0]["run"]["config"]["num_tasks"] == K:
                    _draw(ax, c, name, _style(c, depths))
            ax.set_title(f"K={K}: {title}", fontsize=8)
            ax.set_xlabel("layer / depth" if name == "pi" else "residual index / depth", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.legend(fontsize=6, loc="lower right")
    n_seeds = max(len(c.seeds) for c in cs)
    fig.suptitle(f"Per-layer probes (Figure 3 analogue) and position independence (Figure 2 analogue); mean and 95% "
                 f"t-interval over up to {n_seeds} seeds", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


__all__ = ["PANELS", "plot_layer_curves"]
