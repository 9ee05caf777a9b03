"""Error against the number of heads H for lin- and log-type DP-free heads, with fitted rates (``memory-table``).

Rows: a light-tailed (exponential) and a heavy-tailed (power-law) kernel, each with both RPE types (Wang & E's
Insight 4a: log-type suits heavy tails, lin-type light ones), and spikes ``delta_T`` at growing lags T (Task I:
fixed memories; heads needed grow exponentially in T for lin-type, polynomially for log-type, per the notes'
rates). Errors are the exact l1 kernel errors of :func:`constructions.memory.kernels.l1_error`. Rates fitted:
the log-log slope ``k`` (error ~ H^-k) and the exponential rate ``r`` (error ~ e^{-r H}); for spikes also the
growth of the heads needed for a fixed error with T.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from constructions.memory.kernels import (
    HeadGrid,
    attained_error,
    TargetKernel,
    fit_kernel,
    gram_condition,
    l1_error,
)
from hmm.errors import HmmtxError

#: Errors below this are treated as fit round-off when fitting rates (the float64 Chebyshev fit's floor).
RATE_FLOOR = 1e-12
#: Errors above this are pre-asymptotic (the trivial kernel K = 0 has error 1) and are left out of rate fits.
RATE_CEIL = 0.5


def _ints(name: str, values: Sequence[Any], lo: int) -> tuple[int, ...]:
    out = []
    for v in values:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise HmmtxError(f"{name}: every value must be an integer >= {lo}, got {v!r}")
        out.append(int(v))
    if not out:
        raise HmmtxError(f"{name}: give at least one value")
    if len(set(out)) != len(out):
        raise HmmtxError(f"{name}: values must be distinct, got {list(out)}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class TableConfig:
    """Parameters of a memory table (validated).

    ``heads``: H values for the exponential/power-law rows; ``spike_heads``: H values for the spike rows;
    ``beta``: exponent spacing of both grids; ``p0_lin``/``p0_log``: base exponents; ``lam``/``alpha``: target
    kernels ``e^{-lam s}`` and ``s^{-alpha}`` (unit l1 norm); ``spike_lags``: T values; ``eps``: the error level
    for "heads needed"; ``gram_max_heads``: Gram condition numbers are computed (mpmath) up to this H.
    """

    heads: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    spike_heads: tuple[int, ...] = (8, 16, 32, 64, 128)
    beta: float = 0.1
    p0_lin: float = 0.1
    p0_log: float = 2.0
    lam: float = 0.35
    alpha: float = 2.25
    spike_lags: tuple[int, ...] = (2, 4, 8, 16)
    eps: float = 1e-2
    gram_max_heads: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _ints("--heads", self.heads, 1))
        object.__setattr__(self, "spike_heads", _ints("--spike-heads", self.spike_heads, 1))
        object.__setattr__(self, "spike_lags", _ints("--spike-lags", self.spike_lags, 1) if self.spike_lags else ())
        if max(self.heads + self.spike_heads) > 512:
            raise HmmtxError(f"H up to 512 supported (exact monomial weights get ~1e300), got {max(self.heads + self.spike_heads)}")
        for name in ("beta", "p0_lin", "p0_log", "lam", "alpha", "eps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise HmmtxError(f"--{name.replace('_', '-')}={v!r} must be a finite number > 0")
        if self.p0_log <= 1:
            raise HmmtxError(f"--p0-log={self.p0_log} must be > 1 (log-type head kernels s^-p need p > 1)")
        if self.alpha <= 1:
            raise HmmtxError(f"--alpha={self.alpha} must be > 1 (power-law kernel must be summable)")
        if self.eps >= 1:
            raise HmmtxError(f"--eps={self.eps} must be < 1 (error 1 is the trivial kernel K = 0)")
        HeadGrid("lin", 1, self.p0_lin, self.beta)
        HeadGrid("log", 1, self.p0_log, self.beta)

    def grid(self, rpe: str, H: int) -> HeadGrid:
        return HeadGrid(rpe, H, self.p0_lin if rpe == "lin" else self.p0_log, self.beta)


class Point(NamedTuple):
    """One (target, rpe, H) measurement: exact l1 error (``total`` = ``finite`` + ``tail`` + ``rounding``) and the
    size of the fitted head output weights (``log10`` of max and of the sum of ``|c_k|``; ``log10_amplification`` =
    ``log10(sum |c_k| / sum_s |K(s)|)``, the factor by which relative round-off in the heads is amplified);
    ``attained``: the error of the worst-case input ``sign(K - rho)`` evaluated independently in float64 (matches
    ``finite`` within ``attained_allowance``, its stated float round-off: the sup is attained)."""

    H: int
    total: float
    finite: float
    tail: float
    rounding: float
    log10_max_weight: float
    log10_weight_l1: float
    log10_amplification: float
    gram_cond: float | None
    attained: float
    attained_allowance: float
    seconds: float


class Rates(NamedTuple):
    """Fitted rates over the points with ``RATE_FLOOR < error < RATE_CEIL``: ``algebraic`` = k in error ~ H^-k,
    ``exponential`` = r in error ~ e^{-r H} (least squares on logs), ``points`` = how many were used."""

    algebraic: float | None
    exponential: float | None
    points: int


class Row(NamedTuple):
    target: str
    kind: str
    param: float
    rpe: str
    matched: bool
    points: list
    rates: Rates
    notes_rate: str


def fit_rates(H: Sequence[int], err: Sequence[float]) -> Rates:
    """Least-squares slopes of ``log err`` against ``log H`` (algebraic) and against ``H`` (exponential)."""
    pts = [(h, e) for h, e in zip(H, err) if RATE_FLOOR < e < RATE_CEIL and math.isfinite(e)]
    if len(pts) < 2:
        return Rates(None, None, len(pts))
    h = np.array([p[0] for p in pts], dtype=np.float64)
    le = np.log(np.array([p[1] for p in pts]))
    k = -float(np.polyfit(np.log(h), le, 1)[0])
    r = -float(np.polyfit(h, le, 1)[0])
    return Rates(k, r, len(pts))


def _notes_rate(t: TargetKernel, rpe: str, cfg: TableConfig) -> tuple[bool, str]:
    """(matched?, the notes' rate for this row in short form; the notes use beta = 0.01, we use ``cfg.beta``)."""
    if t.kind == "spike":
        if rpe == "lin":
            return True, "C(n) e^(beta(n+1)T) / H^n, any n (3.0c)"
        return True, "C(n) T^((1+beta)(n+1)) / H^n, any n (3.0c)"
    p0 = cfg.p0_lin if rpe == "lin" else cfg.p0_log
    if (t.kind, rpe) in (("exp", "lin"), ("power", "log")):
        a = (t.param - p0) / cfg.beta
        if a == int(a):
            return True, f"C(n)/H^n (3.3); q = u^{int(a)} polynomial: exact for H > {int(a)}"
        return True, f"C(n)/H^n for q in C^n (3.3); q ~ u^{a:g} is C^{math.floor(a)}"
    return False, "mismatched: slower, no rate recovered (3.3)"


def _measure(t: TargetKernel, grid: HeadGrid, gram_max: int) -> Point:
    t0 = time.perf_counter()
    fit = fit_kernel(t, grid)
    err = l1_error(fit)
    amp = fit.log10_weight_l1 - math.log10(err.kernel_l1) if err.kernel_l1 > 0 else None
    cond = gram_condition(grid) if grid.H <= gram_max else None
    if cond is not None and not math.isfinite(cond):
        cond = None  # Gram matrix numerically singular even in mpmath (JSON has no inf)
    return Point(grid.H, err.total, err.finite, err.tail, err.rounding, fit.log10_max_weight, fit.log10_weight_l1,
                 amp, cond, *attained_error(fit, err.S), time.perf_counter() - t0)


def _row(t: TargetKernel, rpe: str, heads: Sequence[int], cfg: TableConfig) -> Row:
    pts = [_measure(t, cfg.grid(rpe, H), cfg.gram_max_heads) for H in heads]
    matched, notes = _notes_rate(t, rpe, cfg)
    return Row(t.label, t.kind, float(t.param), rpe, matched, pts, fit_rates([p.H for p in pts], [p.total for p in pts]), notes)


class Growth(NamedTuple):
    """Heads needed for error <= eps against the spike lag T, and fitted growth laws.

    ``needed``: {T: smallest H in the spike grid with error <= eps, or None}; ``exp_rate``: r in H ~ e^{r T};
    ``power``: k in H ~ T^k (least squares over the T with a finite need); ``notes``: the notes' prediction.
    """

    rpe: str
    needed: dict
    exp_rate: float | None
    power: float | None
    notes: str


def _growth(rows: Sequence[Row], rpe: str, eps: float, beta: float) -> Growth:
    needed = {}
    for r in rows:
        if r.kind != "spike" or r.rpe != rpe:
            continue
        ok = [p.H for p in r.points if p.total <= eps]
        needed[int(r.param)] = min(ok) if ok else None
    pts = [(T, H) for T, H in needed.items() if H is not None]
    exp_rate = power = None
    if len(pts) >= 2:
        T = np.array([p[0] for p in pts], dtype=np.float64)
        lh = np.log(np.array([p[1] for p in pts], dtype=np.float64))
        exp_rate = float(np.polyfit(T, lh, 1)[0])
        power = float(np.polyfit(np.log(T), lh, 1)[0])
    notes = (f"notes: H ~ e^(beta T (n+1)/n) -> exponential rate >= beta = {beta:g}" if rpe == "lin"
             else f"notes: H ~ T^((1+beta)(n+1)/n) -> power >= 1 + beta = {1 + beta:g}")
    return Growth(rpe, needed, exp_rate, power, notes)


class MemoryTable(NamedTuple):
    config: TableConfig
    rows: list
    growth: list
    insight_4a: dict
    seconds: float


def memory_table(cfg: TableConfig | None = None) -> MemoryTable:
    """Measure every row of the table (see module docstring)."""
    cfg = cfg or TableConfig()
    t0 = time.perf_counter()
    rows: list[Row] = []
    for t in (TargetKernel("exp", cfg.lam), TargetKernel("power", cfg.alpha)):
        for rpe in ("lin", "log"):
            rows.append(_row(t, rpe, cfg.heads, cfg))
    for T in cfg.spike_lags:
        for rpe in ("lin", "log"):
            rows.append(_row(TargetKernel("spike", T), rpe, cfg.spike_heads, cfg))
    growth = [_growth(rows, rpe, cfg.eps, cfg.beta) for rpe in ("lin", "log")] if cfg.spike_lags else []
    return MemoryTable(cfg, rows, growth, insight_4a(rows), time.perf_counter() - t0)


def insight_4a(rows: Sequence[Row]) -> dict:
    """Insight 4a at equal H: on the power law log-type's error < lin-type's; on the exponential the reverse.

    Returns ``{"power": {H: bool}, "exp": {H: bool}}`` (True where the matched type wins at that H) and ``"all"``.
    """
    out: dict[str, Any] = {}
    for kind, winner in (("power", "log"), ("exp", "lin")):
        by = {r.rpe: {p.H: p.total for p in r.points} for r in rows if r.kind == kind}
        if "lin" not in by or "log" not in by:
            continue
        loser = "lin" if winner == "log" else "log"
        out[kind] = {H: bool(by[winner][H] < by[loser][H]) for H in sorted(by[winner]) if H in by[loser]}
    out["all"] = all(all(v.values()) for k, v in out.items() if k != "all")
    return out


def table_to_json(tab: MemoryTable) -> dict:
    cfg = asdict(tab.config)
    return {
        "config": cfg,
        "conventions": {
            "lags": "s >= 1 (lag 0 masked; the current token rides the residual stream)",
            "heads": "lin: weight e^{-p s}, log: s^{-p}; exponents p_k = p0 + beta (k-1); kernels normalised over the infinite past",
            "targets": "unit l1 norm: exp (e^lam - 1) e^{-lam s}; power s^-alpha / zeta(alpha); spike delta_T",
            "error": "sum_{s>=1} |K(s) - rho(s)| = sup over |x| <= 1 of the memory-extraction error; exact over s <= S "
                     "(fixed point, rounding bound), tail bound beyond (grid-estimated block sups)",
            "fit": "IRLS towards least l1 in the Chebyshev basis of u (float64); monomial head weights exact",
        },
        "rows": [
            {
                "target": r.target, "kind": r.kind, "param": r.param, "rpe": r.rpe, "matched": r.matched,
                "points": [p._asdict() for p in r.points], "rates": r.rates._asdict(), "notes_rate": r.notes_rate,
            }
            for r in tab.rows
        ],
        "growth": [{**g._asdict(), "needed": {str(k): v for k, v in g.needed.items()}} for g in tab.growth],
        "insight_4a": {k: ({str(h): b for h, b in v.items()} if isinstance(v, dict) else v) for k, v in tab.insight_4a.items()},
        "seconds": tab.seconds,
    }


__all__ = [
    "RATE_FLOOR",
    "RATE_CEIL",
    "TableConfig",
    "Point",
    "Rates",
    "Row",
    "Growth",
    "MemoryTable",
    "fit_rates",
    "memory_table",
    "insight_4a",
    "table_to_json",
]
