"""Markdown rendering of a result store (the tables of docs/findings.md are generated with it)."""

from __future__ import annotations

from typing import Sequence

from verify.experiments.tables import SUMMARY_GROUPS, cell_cpu_seconds, cell_seconds, cell_summary, cells, fig1_curves, fmt, layer_curves, setting_text


def _row(cells_: Sequence[str]) -> str:
    return "| " + " | ".join(cells_) + " |"


def summary_markdown(results: Sequence[dict], keys: Sequence[str], seconds: bool = False) -> str:
    names, cs = cells(results)
    head = ["kind", *names, "n", *keys] + (["wall s / run", "cpu s / run"] if seconds else [])
    lines = [_row(head), _row(["---"] * len(head))]
    for c in cs:
        s = cell_summary(c)
        row = [c.kind, *[setting_text(c, n) for n in names], str(len(c.seeds)), *[fmt(s[k], 2) for k in keys]]
        lines.append(_row(row + ([fmt(cell_seconds(c), 0), fmt(cell_cpu_seconds(c), 0)] if seconds else [])))
    return "\n".join(lines)


def cell_markdown(cell) -> str:
    cur = layer_curves(cell)
    head = ["i", *cur]
    setting = ", ".join(f"{n}={v}" for n in cell.setting if (v := setting_text(cell, n)) != ".")
    lines = [f"**{cell.kind} {setting}** (seeds {cell.seeds}); rows: residual index i (pi: attention layer i-1)",
             "", _row(head), _row(["---"] * len(head))]
    n = max(len(v) for v in cur.values())
    for i in range(n):
        row = [str(i)]
        for name, col in cur.items():
            j = i - 1 if name == "pi" else i
            row.append(fmt(col[j], 2) if 0 <= j < len(col) else "")
        lines.append(_row(row))
    for which in ("model", "bayes"):
        g = fig1_curves(cell, which)
        if g is None:
            continue
        width = max(len(r) for r in g)
        lines += ["", f"Figure-1 analogue ({which}): top-1 accuracy by segment (demos seen) x offset j (tokens seen)",
                  "", _row(["segment", *[f"j={j}" for j in range(width)]]), _row(["---"] * (width + 1))]
        for s, r in enumerate(g):
            name = "test" if s == len(g) - 1 else f"demo {s + 1}"
            lines.append(_row([f"{name} ({s} seen)", *[fmt(iv, 2) for iv in r]]))
    return "\n".join(lines)


def markdown_report(results: Sequence[dict]) -> str:
    from verify.experiments.findings import findings_markdown

    _, cs = cells(results)
    parts = ["### Findings: verdict per cell, mean [95% t-interval] of its statistic over seeds", "",
             "Definitions and the verdict rule: `verify/experiments/findings.py` (docs/experiments/grids.md §4).", "",
             findings_markdown(results), ""]
    for title, keys in SUMMARY_GROUPS:
        parts += [f"### {title}: mean [95% t-interval] over seeds", "",
                  summary_markdown(results, keys, seconds=title.startswith("next-token")), ""]
    from verify.experiments.tables import device_note

    note = device_note(cs)
    if note is not None:
        parts += [f"Devices: {note}.", ""]
    parts += ["### Per-layer curves per cell", ""]
    for c in cs:
        parts += [cell_markdown(c), ""]
    return "\n".join(parts) + "\n"


__all__ = ["summary_markdown", "cell_markdown", "markdown_report"]
