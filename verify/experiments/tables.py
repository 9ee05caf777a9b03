"""Aggregation of a result store over seeds: per cell (all runs that differ only in the seed), the mean and a
two-sided 95 % Student-t confidence interval ``mean +- t_{0.975, n-1} * s / sqrt(n)`` (``s`` the sample standard
deviation, ddof = 1) of each summary statistic and of each per-layer curve. With one seed the interval is undefined
(shown as ``n=1``).

Summary statistics of one run (definitions in docs/diagnostics.md, "Experiment summaries"):

* ``tv``: held-out next-token total variation against the Bayes predictive (trained runs);
* ``acc_demo1`` / ``acc_test``: Figure-1 top-1 accuracy averaged over the first / the test segment (subject);
  ``bayes_test``: the same for the Bayes predictive;
* ``tok_k1``, ``tok_kmax``: best-over-layers previous-token accuracy at the smallest / largest lag;
  ``tok_peak_shift``: peak residual index of the largest lag minus that of the smallest, over the depth L;
* ``state_at``: first residual index within 0.02 of the best state accuracy, over L (undefined when no layer gains
  0.02 over the embedding); ``task_at``: the same for the task probe (also undefined when the task probe never
  reaches half its Bayes ceiling); ``task_late``:
  ``task_at - state_at`` (> 0: task identity becomes readable later than the state);
  ``task_final``: final-residual task accuracy over its Bayes ceiling;
* ``law_at``, ``law_late``, ``law_final``: the same three for the task-law probe (R^2 of the task's token-pair law;
  undefined when its best R^2 stays below half the Bayes posterior mean's R^2): the task measure that still works
  with 1024 tasks, where the classifier cannot be fitted;
* ``pi_rise``: mean position-independence score of the upper half of the attention layers minus the lower half
  (> 0: upper layers are more position-independent); ``pi_first``, ``pi_last``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from hmm.errors import HmmtxError

SUMMARY_GROUPS = (
    ("next-token quality and Figure 1", ("tv", "acc_demo1", "acc_test", "bayes_test")),
    ("Figure 3 (probes)", ("tok_k1", "tok_kmax", "tok_peak_shift", "state_at", "task_at", "task_late", "task_final",
                           "law_at", "law_late", "law_final")),
    ("Figure 2 (position independence)", ("pi_first", "pi_last", "pi_rise")),
)
#: ``task_at`` / ``task_late`` are undefined when the best task accuracy stays below this fraction of its Bayes
#: ceiling (e.g. 1024 tasks: a linear probe fitted on a few hundred contexts cannot separate 1024 classes).
TASK_READ_FRACTION = 0.5
SUMMARY_KEYS = tuple(k for _, keys in SUMMARY_GROUPS for k in keys)


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (mpmath root of the regularised incomplete beta CDF)."""
    import mpmath

    if df < 1 or not 0.5 <= p < 1:
        raise HmmtxError(f"t_quantile: need df >= 1 and 0.5 <= p < 1, got df={df}, p={p}")
    if p == 0.5:
        return 0.0

    def cdf(x: Any) -> Any:
        return 1 - mpmath.betainc(df / 2, 0.5, 0, df / (df + x * x), regularized=True) / 2

    z = mpmath.sqrt(2) * mpmath.erfinv(2 * p - 1)  # normal start
    return float(mpmath.findroot(lambda x: cdf(x) - p, (z, z * 3 + 10), solver="anderson"))


class Interval(NamedTuple):
    """Mean over seeds and the 95 % t-interval bounds (NaN when fewer than 2 finite values); ``n`` values used."""

    mean: float
    lo: float
    hi: float
    n: int


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n == 1:
        return Interval(m, math.nan, math.nan, 1)
    half = t_quantile(0.5 + level / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


# ---------------------------------------------------------------------------------------------- per-run summaries
def _first_within(acc: Sequence[float | None], tol: float = 0.02) -> float:
    """First residual index within ``tol`` of the best accuracy; NaN when no layer adds ``tol`` over the
    embedding (residual 0): then nothing becomes readable and "where" is undefined."""
    a = np.array([np.nan if v is None else v for v in acc], dtype=float)
    if not np.isfinite(a).any():
        return math.nan
    best = np.nanmax(a)
    if not best - a[0] >= tol:
        return math.nan
    return float(np.flatnonzero(a >= best - tol)[0])


def _mean_rows(grid: Any, rows: slice) -> float:
    a = np.array([[np.nan if v is None else v for v in row] for row in grid[rows]], dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def summarise(result: dict) -> dict[str, float]:
    """The summary statistics (module docstring) of one run's result."""
    pr = result["probes"]
    L = len(pr["layers"]) - 1
    out = {k: math.nan for k in SUMMARY_KEYS}
    if "train" in result:
        out["tv"] = result["train"]["metrics"]["tv_model"]
    fig1 = result["fig1"]
    if "model" in fig1:
        out["acc_demo1"] = _mean_rows(fig1["model"], slice(0, 1))
        out["acc_test"] = _mean_rows(fig1["model"], slice(-1, None))
    out["bayes_test"] = _mean_rows(fig1["bayes"], slice(-1, None))
    lags = sorted(pr["token"], key=int)
    if lags:
        a1 = np.array(pr["token"][lags[0]]["accuracy"], dtype=float)
        ak = np.array(pr["token"][lags[-1]]["accuracy"], dtype=float)
        out["tok_k1"], out["tok_kmax"] = float(a1.max()), float(ak.max())
        out["tok_peak_shift"] = (int(ak.argmax()) - int(a1.argmax())) / L
    out["state_at"] = _first_within(pr["state"]["accuracy"]) / L
    for name, probe, curve in (("task", pr["task"], "accuracy"), ("law", pr.get("task_law"), "r2")):
        if probe is None:  # no demonstrations, one task, or a result from before the task-law probe existed
            continue
        ceil = probe["ceiling"]
        acc = [math.nan if v is None else v for v in probe[curve]]
        out[f"{name}_final"] = acc[-1] / ceil if ceil else math.nan
        if ceil and np.nanmax(acc) >= TASK_READ_FRACTION * ceil:  # else the probe never reads the task at all
            out[f"{name}_at"] = _first_within(acc) / L
            out[f"{name}_late"] = out[f"{name}_at"] - out["state_at"]
    ind = result.get("independence")
    if ind is not None:
        m = [v for v in ind["mean"] if v is not None]
        if m:
            out["pi_first"], out["pi_last"] = m[0], m[-1]
            h = len(m) // 2
            out["pi_rise"] = float(np.mean(m[len(m) - h:]) - np.mean(m[:h])) if h else math.nan
    return out


# ---------------------------------------------------------------------------------------------- cells
class Cell(NamedTuple):
    """All runs of one setting (equal apart from the seed): ``kind``, ``setting`` (the config fields that vary across
    the store, name -> value), ``seeds``, ``results``."""

    kind: str
    setting: dict
    seeds: list
    results: list


def cells(results: Sequence[dict]) -> tuple[list[str], list[Cell]]:
    """Group results into cells; returns the names of the config fields that vary (the table's axes) and the cells,
    sorted by kind then by those fields."""
    if not results:
        raise HmmtxError("no finished runs to tabulate")
    from verify.experiments.spec import DATA_FIELDS

    def varying(rs: Sequence[dict]) -> set:
        cs = [r["run"]["config"] for r in rs]
        return {k for k in cs[0] if k != "seed" and len({json_key(c.get(k)) for c in cs}) > 1} if cs else set()

    trained = [r for r in results if r["run"]["kind"] == "trained"]
    vary = varying(trained) | (varying(results) & set(DATA_FIELDS))
    names = [k for k in results[0]["run"]["config"] if k in vary]
    groups: dict[Any, list[dict]] = {}
    for r in results:
        c = r["run"]["config"]
        ident = (r["run"]["kind"], json_key({k: v for k, v in c.items() if k != "seed"}), json_key(r["run"]["probe"]))
        groups.setdefault(ident, []).append(r)
    out = []
    for (kind, _, _), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["run"]["config"]["seed"])
        c = rs[0]["run"]["config"]
        out.append(Cell(kind, {k: c[k] for k in names}, [r["run"]["config"]["seed"] for r in rs], rs))
    out.sort(key=lambda cl: (cl.kind != "trained", cl.kind, [_order(cl.setting[k]) for k in names]))
    return names, out


def _order(x: Any) -> tuple:
    """Sort key of an axis value: numbers by value (4 < 64 < 1024), anything else by its JSON text after them."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return (0, float(x), "")
    return (1, 0.0, json_key(x))


def json_key(x: Any) -> str:
    import json

    return json.dumps(x, sort_keys=True)


def cell_summary(cell: Cell) -> dict[str, Interval]:
    per_run = [summarise(r) for r in cell.results]
    return {k: mean_ci([s[k] for s in per_run]) for k in SUMMARY_KEYS}


def cell_seconds(cell: Cell) -> Interval:
    """Mean wall seconds per run of the cell (training or building, then probing), with its t-interval."""
    return mean_ci([r["timing"]["subject_s"] + r["timing"]["probe_s"] for r in cell.results])


def cell_cpu_seconds(cell: Cell) -> Interval:
    """Mean CPU seconds per run of the worker process (``timing.cpu_s``; a machine-load-independent cost, unlike
    wall seconds, which include waiting for the CPU and any pause of the grid). Runs made before the field
    existed are left out (the interval's ``n`` says how many had it)."""
    return mean_ci([r["timing"]["cpu_s"] for r in cell.results if "cpu_s" in r["timing"]])


def device_note(cs: Sequence[Cell]) -> str | None:
    """A line naming the devices the models were trained on, when any was not the CPU (``timing.device``; results
    from before the field existed were trained on the CPU), and the cells that mix devices (CUDA does not
    reproduce CPU bits, so such a cell's seeds differ by more than the seed); None when everything ran on the CPU."""
    devs = {id(c): sorted({r["timing"].get("device", "cpu") for r in c.results}) for c in cs}
    if all(d == ["cpu"] for d in devs.values()):
        return None
    mixed = [f"{c.kind} {c.setting}" for c in cs if len(devs[id(c)]) > 1]
    used = sorted({d for ds in devs.values() for d in ds})
    return f"trained on: {', '.join(used)}" + (f"; cells mixing devices: {'; '.join(mixed)}" if mixed else "")


def layer_curves(cell: Cell) -> dict[str, list[Interval]]:
    """Per residual index (probes) or per layer (``pi``): mean and CI over the cell's seeds."""
    curves: dict[str, list[list[float]]] = {}
    for r in cell.results:
        pr = r["probes"]
        rows = {f"tok_k{k}": pr["token"][k]["accuracy"] for k in sorted(pr["token"], key=int)}
        rows["state"] = pr["state"]["accuracy"]
        rows["belief_r2"] = pr["belief_r2"]
        if pr["task"] is not None:
            rows["task"] = pr["task"]["accuracy"]
        if pr.get("task_law") is not None:
            rows["task_law"] = pr["task_law"]["r2"]
        if r.get("independence") is not None:
            rows["pi"] = r["independence"]["mean"]
        for name, vals in rows.items():
            curves.setdefault(name, []).append([math.nan if v is None else v for v in vals])
    return {name: [mean_ci(col) for col in zip(*vals)] for name, vals in curves.items()}


def fig1_curves(cell: Cell, which: str) -> list[list[Interval]] | None:
    grids = [r["fig1"].get(which) for r in cell.results]
    if any(g is None for g in grids):
        return None
    rows = len(grids[0])
    return [[mean_ci([g[s][j] for g in grids]) for j in range(len(grids[0][s]))] for s in range(rows)]


def setting_text(cell: Cell, name: str) -> str:
    """A cell's value of an axis; construction runs show only data fields (their model fields are unused)."""
    from verify.experiments.spec import DATA_FIELDS

    if cell.kind != "trained" and name not in DATA_FIELDS:
        return "."
    return str(cell.setting[name])


def fmt(iv: Interval, digits: int = 3) -> str:
    if iv.n == 0 or not math.isfinite(iv.mean):
        return "-"
    if iv.n == 1:
        return f"{iv.mean:.{digits}f} (n=1)"
    return f"{iv.mean:.{digits}f} [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"


__all__ = ["SUMMARY_GROUPS", "SUMMARY_KEYS", "setting_text", "t_quantile", "Interval", "mean_ci", "summarise", "Cell", "cells", "cell_summary", "cell_seconds", "cell_cpu_seconds", "device_note",
           "layer_curves", "fig1_curves", "fmt"]
