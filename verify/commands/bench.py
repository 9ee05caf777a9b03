"""``hmmtx bench <target>``: benchmarks, one target per module of :mod:`verify.benchmarks` (discovered there)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from verify.benchmarks import discover, register_all

    p = subparsers.add_parser(
        "bench",
        help="benchmarks (targets: " + ", ".join(discover()) + ")",
        description="Run a benchmark target. Each target prints its timings and the machine, and can write JSON. "
        "Targets live in verify/benchmarks/ (one module each); figures are recorded in docs/performance.md.",
    )
    targets = p.add_subparsers(dest="bench_target", metavar="TARGET", parser_class=type(p))
    register_all(targets)
    p.set_defaults(func=_no_target(p))


def _no_target(parser: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run
