"""The ``hmmtx`` command line.

Sub-commands live in :mod:`verify.commands`, one module each, and are discovered automatically: a module defines
``register(subparsers)`` which adds its parser and sets ``func`` (called with the parsed namespace, returning an
exit status). Heavy imports belong inside ``func`` so that ``hmmtx --help`` stays fast.

``hmmtx --plugin FILE.py COMMAND ...`` imports a file that registers constructions before the command runs (the
other route is the ``hmmtx.constructions`` entry-point group; ``docs/extending.md``).

Every :class:`~hmm.errors.HmmtxError` (bad HMM, bad tokens, unreadable file, a construction's own failure, ...)
becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from hmm.errors import HmmtxError


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through the CLI tests
        self.exit(2, f"hmmtx: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import verify.commands as commands

    parser = _Parser(prog="hmmtx", description="Hand-built Transformers checked against exact references.")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="load a Python file that registers constructions (repeatable; see docs/extending.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"verify.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.plugin:
            from constructions.registry import load_plugin

            for path in args.plugin:
                load_plugin(path)
        return int(args.func(args) or 0)
    except HmmtxError as exc:
        print(f"hmmtx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("hmmtx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
