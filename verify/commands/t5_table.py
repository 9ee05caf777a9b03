"""``hmmtx t5-table``: T5's bucketed relative position per lag (Wang & E's Table 1, regenerated from the formula).

One row per lag ``n = 0..max_lag``: its bucket ``r(n)``, the RPE value ``-r(n)`` and the regime (exact lags =
lin-type, then log-spaced buckets = log-type, then the last bucket beyond ``max_distance``). Causal by default
(32 buckets, maximum distance 128, as in T5). The table is regenerated, not copied: the paper's printed numbers
were not available (see docs/constructions/memory_kernels.md).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "t5-table",
        help="T5 relative-position buckets per lag (Wang & E Table 1: lin then log)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--num-buckets", type=int, default=32, help="T5 num_buckets (default 32)")
    p.add_argument("--max-distance", type=int, default=128, help="T5 max_distance (default 128)")
    p.add_argument("--max-lag", type=int, default=None, help="last lag tabulated (default: max_distance)")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional bucketing (half the buckets per side)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the table as JSON (atomic)")
    p.add_argument("--quiet", action="store_true", help="no table on stdout (with --json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from constructions.memory.t5 import check_config, t5_table
    from hmm.io import atomic_write_json

    from verify.cli_args import require_fits

    cfg = check_config(args.num_buckets, args.max_distance, args.bidirectional)
    lags = (cfg.max_distance if args.max_lag is None else args.max_lag) + 1
    require_fits(f"t5-table with {lags} rows", 600.0 * lags, "reduce --max-lag")
    rows = t5_table(args.max_lag, cfg.num_buckets, cfg.max_distance, cfg.bidirectional)
    per_side = cfg.num_buckets // 2 if cfg.bidirectional else cfg.num_buckets
    summary = {
        "num_buckets": cfg.num_buckets,
        "max_distance": cfg.max_distance,
        "bidirectional": cfg.bidirectional,
        "exact_region": per_side // 2,
        "formula": "r(n) = n for n < B; B + floor((K) ln(n/B) / ln(D/B)) capped at B+K-1 otherwise "
        "(B = exact region, K = buckets per side - B, D = max_distance); evaluated exactly in integers",
        "source": "T5 _relative_position_bucket (Raffel et al. 2020); Wang & E 2024 Table 1 regenerated, not copied",
    }
    if args.json:
        atomic_write_json(args.json, {**summary, "rows": [r._asdict() for r in rows]})
    if not args.quiet:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"T5 relative-position buckets ({'bidirectional' if cfg.bidirectional else 'causal'}, "
                        f"{cfg.num_buckets} buckets, max distance {cfg.max_distance}; exact region B={per_side // 2})")
        for c in ("lag n", "bucket r(n)", "-r(n)", "regime"):
            t.add_column(c, justify="right" if c != "regime" else "left")
        for r in rows:
            t.add_row(str(r.lag), str(r.bucket), str(r.bias), r.regime)
        Console(width=100).print(t)
    return 0
