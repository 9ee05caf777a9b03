"""Verdicts per cell on the layerwise findings of Hao et al. 2025 (in the spirit of the paper, whose full text was
not available; the list below is what is known of its Figures 1-3, ``shared/papers/hao2025_hmm.md``).

Each finding is a claim about one statistic of a run (``docs/diagnostics.md`` §7), computed per run, then averaged
over the cell's seeds with its two-sided 95 % Student-t interval (:func:`verify.experiments.tables.mean_ci`):

* ``demos-help`` (Figure 1): ``acc_gain = acc_test - acc_demo1 > 0``, accuracy rises with demonstrations seen;
* ``tokens-fade`` (Figure 3b): ``tok_fade = tok_k1 - tok_kmax > 0``, previous tokens fade with distance;
* ``peak-deeper`` (Figure 3b): ``tok_peak_shift > 0``, the farther token peaks deeper;
* ``state-early`` (Figure 3a): ``state_at <= 1/2``, the hidden state is read within the first half of the depth;
* ``task-late`` (Figure 3a): ``task_late > 0``, task identity (classifier) becomes readable after the state;
* ``law-late`` (Figure 3a): ``law_late > 0``, the same with the task-law probe (works with 1024 tasks);
* ``law-share-late`` (Figure 3a, a check of the two above that does not hinge on their 0.02 tolerance):
  ``law_share_late = share(task-law R^2) - share(state accuracy) > 0``, where ``share(a) = (a_L - a_1) / (a_L - a_0)``
  is the part of a probe's gain over the embedding made *after* the first block (undefined when ``a_L - a_0 <
  0.02``): the task information accumulates later through the depth than the state's;
* ``task-after-tokens`` (Figure 3, our reference where the state probe is uninformative, i.e. with many tasks, whose
  state indices mean nothing across tasks): ``task_share_late = share(task accuracy) - share(lag-1 token
  accuracy) > 0``, task identity (classifier) accumulates later than the neighbouring-token feature the paper's
  lower layers gather (the classifier's share is undefined unless it gains at least 0.05 over the embedding: at
  1024 tasks it cannot be fitted);
* ``pi-rise`` (Figure 2): ``pi_rise > 0``, upper attention layers are more position-independent.

Verdict of a cell (``n`` seeds, interval ``[lo, hi]``; for ``state-early`` read ``> 0`` as ``<= 1/2``):
``yes`` when the whole interval is on the claimed side (``lo > 0``), ``no`` when none of it is (``hi <= 0``: the
opposite, or exactly zero in every seed), ``unclear`` when it straddles; with one seed the sign of the value
followed by ``(n=1)``; ``-`` when the statistic is undefined in every seed (e.g. no state probe signal at 1024
tasks). Seeds where the statistic is undefined are left out of the interval, and the table says so (``k of n
seeds``): a verdict resting on fewer seeds than the cell has is weaker than it looks, since "undefined" means the
probe found nothing to locate. The statistics are discrete (multiples of ``1/L`` for the ``*_at``, ``*_late`` and
``peak`` statistics), so seeds often agree exactly and the interval has zero width: read ``[x, x]`` as "all seeds
gave x", not as certainty beyond the seeds run. The thresholds are ours; the paper states its findings
qualitatively.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

from verify.experiments.tables import Cell, Interval, cells, fmt, mean_ci, setting_text, summarise


class Finding(NamedTuple):
    key: str  # short name, a column of the verdict table
    claim: str  # what the paper reports, in words
    statistic: str  # per-run statistic (a summary key or a derived one, :func:`run_statistics`)
    side: str  # ">": claimed statistic > threshold; "<=": claimed statistic <= threshold
    threshold: float


FINDINGS = (
    Finding("demos-help", "Figure 1: accuracy rises with the demonstrations seen", "acc_gain", ">", 0.0),
    Finding("tokens-fade", "Figure 3b: previous tokens are less decodable the further back", "tok_fade", ">", 0.0),
    Finding("peak-deeper", "Figure 3b: a farther token is best decoded deeper", "tok_peak_shift", ">", 0.0),
    Finding("state-early", "Figure 3a: the hidden state is decodable early", "state_at", "<=", 0.5),
    Finding("task-late", "Figure 3a: task identity later than the state (classifier)", "task_late", ">", 0.0),
    Finding("law-late", "Figure 3a: task identity later than the state (task-law probe)", "law_late", ">", 0.0),
    Finding("law-share-late", "Figure 3a: task information accumulates later than the state's (share after block 1)",
            "law_share_late", ">", 0.0),
    Finding("task-after-tokens", "Figure 3: task identity accumulates later than the lag-1 token (share after block 1)",
            "task_share_late", ">", 0.0),
    Finding("pi-rise", "Figure 2: upper attention layers more position-independent", "pi_rise", ">", 0.0),
)
VERDICTS = ("yes", "no", "unclear")


#: ``share`` is undefined when the probe gains less than this over the embedding (nothing becomes readable).
SHARE_MIN_GAIN = 0.02
#: ... and for the task classifier, whose accuracy at 1024 tasks wanders between 0.00 and 0.03 (cannot be fitted).
TASK_SHARE_MIN_GAIN = 0.05


def late_share(curve: Sequence[float | None], min_gain: float = SHARE_MIN_GAIN) -> float:
    """``(a_L - a_1) / (a_L - a_0)``: the part of a per-residual probe curve's gain over the embedding made after the
    first block; NaN when the gain is below ``min_gain`` or a value is missing."""
    if len(curve) < 2 or any(v is None or not math.isfinite(v) for v in (curve[0], curve[1], curve[-1])):
        return math.nan
    gain = curve[-1] - curve[0]
    return (curve[-1] - curve[1]) / gain if gain >= min_gain else math.nan


def run_statistics(result: dict) -> dict[str, float]:
    """The summary statistics of one run plus the derived differences ``acc_gain``, ``tok_fade`` and
    ``law_share_late`` (paired within the run, so their interval over seeds is that of the difference)."""
    s = summarise(result)
    s["acc_gain"] = s["acc_test"] - s["acc_demo1"]
    s["tok_fade"] = s["tok_k1"] - s["tok_kmax"]
    law = result["probes"].get("task_law")
    state = late_share(result["probes"]["state"]["accuracy"])
    s["law_share_late"] = late_share(law["r2"]) - state if law is not None else math.nan
    pr = result["probes"]
    lag1 = sorted(pr["token"], key=int)[0] if pr["token"] else None
    task = pr["task"]
    s["task_share_late"] = (late_share(task["accuracy"], TASK_SHARE_MIN_GAIN) - late_share(pr["token"][lag1]["accuracy"])
                            if task is not None and lag1 is not None else math.nan)
    return s


def finding_interval(cell: Cell, finding: Finding) -> Interval:
    return mean_ci([run_statistics(r)[finding.statistic] for r in cell.results])


def _margin(finding: Finding, x: float) -> float:
    """How far ``x`` is on the claimed side of the threshold (negative: on the other side)."""
    return x - finding.threshold if finding.side == ">" else finding.threshold - x


def _claimed(finding: Finding, x: float) -> bool:
    m = _margin(finding, x)
    return m > 0 or (finding.side == "<=" and m == 0)  # "<=": state_at exactly 1/2 still counts as early


def verdict(iv: Interval, finding: Finding) -> str:
    """``yes`` / ``no`` / ``unclear`` (module docstring); ``yes (n=1)`` / ``no (n=1)`` for one seed; ``-`` undefined."""
    if iv.n == 0 or not math.isfinite(iv.mean):
        return "-"
    if iv.n == 1:
        return ("yes" if _claimed(finding, iv.mean) else "no") + " (n=1)"
    worst, best = sorted((iv.lo, iv.hi), key=lambda x: _margin(finding, x))
    if _claimed(finding, worst):
        return "yes"
    if not _claimed(finding, best):
        return "no"
    return "unclear"


def cell_label(cell: Cell, names: Sequence[str]) -> str:
    parts = [f"{n}={v}" for n in names if (v := setting_text(cell, n)) != "."]
    return f"{cell.kind} " + " ".join(parts)


def findings_markdown(results: Sequence[dict]) -> str:
    """The verdict table (one row per cell, one column per finding: verdict, mean and interval) and, per finding,
    the cells grouped by verdict."""
    names, cs = cells(results)
    head = ["kind", *names, "n", *[f.key for f in FINDINGS]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    by: dict[str, dict[str, list[str]]] = {f.key: {v: [] for v in VERDICTS} for f in FINDINGS}
    for c in cs:
        row = [c.kind, *[setting_text(c, n) for n in names], str(len(c.seeds))]
        for f in FINDINGS:
            iv = finding_interval(c, f)
            v = verdict(iv, f)
            text = "-" if v == "-" else f"{v}: {fmt(iv, 2)}".replace(" (n=1): ", ": ")
            if 1 < iv.n < len(c.seeds):  # the statistic is undefined in some seeds: say how many it rests on
                text += f" ({iv.n} of {len(c.seeds)} seeds)"
            row.append(text)
            if v in VERDICTS:
                by[f.key][v].append(cell_label(c, names))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Per finding, the cells by verdict (cells with one seed or an undefined statistic are left out):", ""]
    for f in FINDINGS:
        counts = ", ".join(f"{v} {len(by[f.key][v])}" for v in VERDICTS)
        lines.append(f"- **{f.key}** ({f.claim}; `{f.statistic} {f.side} {f.threshold:g}`): {counts}.")
        for v in VERDICTS:
            if by[f.key][v]:
                lines.append(f"  - {v}: " + "; ".join(by[f.key][v]))
    return "\n".join(lines)


__all__ = ["Finding", "FINDINGS", "VERDICTS", "SHARE_MIN_GAIN", "TASK_SHARE_MIN_GAIN", "late_share", "run_statistics", "finding_interval", "verdict", "findings_markdown"]
