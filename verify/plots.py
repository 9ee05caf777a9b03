"""Plots of a verification run: measured error and claimed bound against T and against S, per construction.

Each construction gets two PNGs, ``<construction>-vs-T.png`` and ``<construction>-vs-S.png``. At every T (or S)
the plot shows, per float number mode and parameter variant (hard / softmax attention, ...), the largest measured
error (markers, solid), the largest claimed bound (dashed) and bound + allowance (dotted) over the other axes' cases. Exact mode is a yes/no check and is not drawn.
A log axis cannot show 0: zero errors are drawn at the floor :data:`ZERO_FLOOR` with hollow markers; infinite
bounds (no finite bound for that input) are left out. matplotlib runs headless (Agg); files are written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

from hmm.errors import HmmtxError
from hmm.io import atomic_write_bytes, write_file_set
from verify.suite import CaseResult

#: Where zero errors are drawn on the log axis.
ZERO_FLOOR = 1e-20

_AXES = {"T": ("length", "sequence length T"), "S": ("states", "hidden states S")}
_FLOAT_MODES = ("float64", "float32")


def _label(dtype: str, params: tuple) -> str:
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params)
    return f"{dtype}, {shown}" if shown else dtype


def _series(results: Sequence[CaseResult], axis: str, dtype: str, params: tuple) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per x value: (xs, max error, max finite bound, max finite bound + allowance) over the cases of one float
    mode and one parameter variant; crashes and NaN errors are skipped."""
    attr = _AXES[axis][0]
    groups: dict[int, list[CaseResult]] = {}
    for r in results:
        x = getattr(r.case, attr)
        if r.case.dtype != dtype or r.case.params != params or x is None or r.error is None or math.isnan(r.error):
            continue
        groups.setdefault(int(x), []).append(r)
    xs = sorted(groups)
    err, bnd, tot = [], [], []
    for x in xs:
        rs = groups[x]
        err.append(max(r.error for r in rs))  # type: ignore[type-var]
        finite = [r for r in rs if r.bound is not None and math.isfinite(r.bound)]
        bnd.append(max((r.bound for r in finite), default=math.nan))  # type: ignore[type-var]
        tot.append(max((r.bound + (r.allowance or 0.0) for r in finite), default=math.nan))  # type: ignore[operator]
    return xs, err, bnd, tot


def plot_construction(results: Sequence[CaseResult], construction: str, axis: str, path: Path | str) -> Path | None:
    """One PNG of error and bound against ``axis`` (``"T"`` or ``"S"``), written atomically; None (no file) when
    nothing to draw. See :func:`render_construction`."""
    png = render_construction(results, construction, axis)
    return None if png is None else atomic_write_bytes(path, png)


def render_construction(results: Sequence[CaseResult], construction: str, axis: str) -> bytes | None:
    """The PNG bytes of error and bound against ``axis`` (``"T"`` or ``"S"``); None when nothing to draw.

    One colour per float mode and parameter variant (e.g. hard vs softmax attention): markers = largest error,
    dashed = largest finite bound, dotted = bound + allowance, each at every x over the other axes' cases."""
    if axis not in _AXES:
        raise HmmtxError(f"plot axis must be 'T' or 'S', got {axis!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in results if r.case.construction == construction and r.case.dtype in _FLOAT_MODES]
    variants = list(dict.fromkeys((r.case.dtype, r.case.params) for r in mine))
    fig, ax = plt.subplots(figsize=(8.6, 4.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for k, (dtype, params) in enumerate(variants):
        xs, err, bnd, tot = _series(mine, axis, dtype, params)
        if not xs:
            continue
        drawn = True
        colour = colours[k % len(colours)]
        label = _label(dtype, params)
        shown = [e if e > 0 else ZERO_FLOOR for e in err]
        ax.plot(xs, shown, "o-", color=colour, label=f"error ({label})")
        zeros = [(x, ZERO_FLOOR) for x, e in zip(xs, err) if e == 0]
        if zeros:
            ax.plot(*zip(*zeros), "o", mfc="white", color=colour)
        if any(math.isfinite(b) and b > 0 for b in bnd):
            ax.plot(xs, [b if b > 0 else math.nan for b in bnd], "--", color=colour, label=f"bound ({label})")
        if any(math.isfinite(t) and t > 0 for t in tot) and tot != bnd:
            ax.plot(xs, [t if t > 0 else math.nan for t in tot], ":", color=colour,
                    label=f"bound + allowance ({label})")
    if not drawn:
        plt.close(fig)
        return None
    if len({x for r in mine for x in [getattr(r.case, _AXES[axis][0])] if x is not None}) > 1:
        ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(_AXES[axis][1])
    ax.set_ylabel("max |error| (log)")
    ax.set_title(f"{construction}: error and bound against {axis}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def require_matplotlib(flag: str = "--plots") -> None:
    """HmmtxError (one line, exit 2) when matplotlib, an optional extra, is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HmmtxError(f"{flag} needs matplotlib, an optional extra: pip install 'hmmtx[plot]'") from None


def write_plots(results: Sequence[CaseResult], folder: Path | str) -> list[Path]:
    """Both plots for every construction in ``results`` into ``folder`` (created if missing), all-or-nothing (a
    failed or interrupted write leaves none of the set); returns the files."""
    require_matplotlib()
    names = list(dict.fromkeys(r.case.construction for r in results))
    rendered: dict[str, bytes] = {}
    for name in names:
        for axis in ("T", "S"):
            png = render_construction(results, name, axis)
            if png is not None:
                rendered[f"{name}-vs-{axis}.png"] = png
    return write_file_set(folder, rendered, "--plots")


__all__ = ["ZERO_FLOOR", "plot_construction", "render_construction", "write_plots", "require_matplotlib"]
