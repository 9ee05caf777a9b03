"""``hmmtx experiment ...``: training experiments, one sub-command per module of this package.

A small dispatcher: every module here (not starting with ``_``) defines ``register(subparsers)`` like the top-level
commands (:mod:`verify.cli`), and is discovered automatically, so experiments are added without touching this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="training experiments (experiment grids, Wang & E tables, ...), each a sub-command",
        description="Training experiments that test the papers' claims at small scale; see `hmmtx experiment NAME -h`.",
    )
    sub = p.add_subparsers(dest="experiment", metavar="NAME", parser_class=type(p))
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
