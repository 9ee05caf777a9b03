"""Shared plumbing of ``hmmtx run`` and ``hmmtx inspect`` (generic over the construction registry).

Both commands take the construction NAME first; everything after it is parsed by a per-construction parser built
from the registry entry (common options + the entry's :class:`~constructions.registry.Param` s + its
``add_arguments`` hook). So a new construction adds its own options (``--r``, ``--steps``, ...) without editing these
files, and ``hmmtx --help`` stays fast (the registry, and torch, are imported only when the command runs).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from hmm.errors import HmmtxError


class _EntryParser(argparse.ArgumentParser):
    """Usage errors become HmmtxError (one line, exit 2 via verify.cli), not argparse's own exit."""

    def error(self, message: str) -> None:
        raise HmmtxError(f"{self.prog}: {message}")


def register_generic(subparsers: Any, command: str, help_text: str, description: str, func: Callable) -> None:
    p = subparsers.add_parser(command, help=help_text, description=description, add_help=False)
    p.add_argument("name", nargs="?", metavar="NAME", help="construction name (see `hmmtx %s --help`)" % command)
    # help before NAME prints the listing (resolve() handles it); after NAME it belongs to the construction's parser
    p.add_argument("-h", "--help", dest="_help", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=func, _command=command, _description=description)


def constructions_listing() -> str:
    from constructions import registry

    lines = [f"  {name:<17} {e.summary}" for name, e in registry.entries().items()]
    errs = registry.import_errors()
    if errs:
        lines.append("  (failed to import: " + ", ".join(errs) + ")")
    return "constructions:\n" + ("\n".join(lines) if lines else "  (none registered)")


def entry_parser(command: str, entry: Any, add_common: Callable[[argparse.ArgumentParser, Any], None], description: str) -> argparse.ArgumentParser:
    p = _EntryParser(prog=f"hmmtx {command} {entry.name}", description=f"{description}\n\n{entry.name}: {entry.summary}\n"
                     f"provenance: {entry.provenance}", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(p, entry)
    add_common(p, entry)
    if entry.params or entry.add_arguments is not None:
        g = p.add_argument_group(f"{entry.name} options")
        for prm in entry.params:
            prm.add_to(g)  # type: ignore[arg-type]
        if entry.add_arguments is not None:
            entry.add_arguments(g)  # type: ignore[arg-type]
    from verify.cli_args import harden_parser

    return harden_parser(p)


def add_source_arguments(p: argparse.ArgumentParser, entry: Any) -> None:
    if entry.input_kind == "hmm":
        p.add_argument("--hmm", required=True, metavar="FILE", help="HMM JSON file")
    elif entry.input_kind == "mixture":
        p.add_argument("--tasks", required=True, metavar="FILE", help="task-mixture JSON file")


def resolve(args: argparse.Namespace, add_common: Callable[[argparse.ArgumentParser, Any], None],
            description: str) -> tuple[Any, argparse.Namespace] | None:
    """The registry entry named by ``args.name`` and its parsed options; None when only help was printed (the
    listing of constructions without a name, or one construction's options with ``--help``)."""
    from constructions import registry

    name = "--help" if getattr(args, "_help", False) and args.name is None else args.name
    if name in (None, "-h", "--help"):
        print(f"usage: hmmtx {args._command} NAME [options]\n\n{args._description}\n\n{constructions_listing()}\n\n"
              f"Run `hmmtx {args._command} NAME --help` for the options of one construction.")
        if name is None:
            raise HmmtxError(f"{args._command}: give a construction NAME first")
        return None
    entry = registry.get(name)
    argv = list(args.rest or [])
    parser = entry_parser(args._command, entry, add_common, description)
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help(sys.stdout)
        return None
    ns = parser.parse_args(argv)
    from verify.cli_args import check_paths

    check_paths(ns)
    return entry, ns


def load_source(entry: Any, ns: argparse.Namespace) -> Any:
    from hmm.io import load_hmm, load_mixture

    if entry.input_kind == "hmm":
        return load_hmm(ns.hmm)
    if entry.input_kind == "mixture":
        return load_mixture(ns.tasks)
    return None


def check_tokens(entry: Any, source: Any, tokens: Any) -> None:
    """Token ids must lie in the source's alphabet ``0..V-1`` (``inspect`` only sizes the model with them, so
    nothing else would catch an out-of-range id there). HmmtxError names --tokens and the position."""
    from hmm.model import validate_tokens

    V = getattr(source, "num_obs", None)
    if V is None or tokens is None:
        return
    segments = tokens if entry.input_kind == "mixture" and isinstance(tokens, (list, tuple)) else [tokens]
    for k, seg in enumerate(segments):
        validate_tokens(seg, V, name="--tokens" + (f" segment {k}" if len(segments) > 1 else ""))


def entry_estimate(entry: Any, source: Any, tokens: Any, params: dict, mode: str) -> float | None:
    """The construction's memory estimate (bytes) from its ``estimate_bytes`` hook (the contract field; the
    built-in constructions' formulas are in :mod:`constructions.estimates`); None when the entry has no hook (the
    model is then built unchecked, docs/robustness.md). A hook that raises something other than HmmtxError or
    returns no number is a ConstructionError."""
    from constructions.runner import ConstructionError

    hook = getattr(entry, "estimate_bytes", None)
    if hook is None:
        return None
    try:
        est = hook(source, tokens, mode=mode, **params)
        return float(est)
    except HmmtxError:
        raise
    except Exception as exc:  # noqa: BLE001 - a construction's bug is one line, not a traceback
        raise ConstructionError(f"construction '{entry.name}': estimate_bytes raised {type(exc).__name__}: {exc}") from exc


def check_size(entry: Any, source: Any, tokens: Any, params: dict, mode: str) -> None:
    """Refuse (one line with the estimate and the limit) a construction that cannot fit in memory."""
    from verify.cli_args import require_fits

    est = entry_estimate(entry, source, tokens, params, mode)
    if est is not None:
        require_fits(f"{entry.name} (mode {mode})", est,
                     "use a smaller HMM / mixture, fewer tokens or smaller construction options")


def add_attention_arguments(p: argparse.ArgumentParser, entry: Any) -> None:
    """``--attention`` / ``--beta`` with the construction's defaults (``entry.attention``, an
    :class:`~constructions.registry.AttentionDefaults`)."""
    att = entry.attention.attention
    beta = entry.attention.beta
    from verify.cli_args import float_arg

    p.add_argument("--attention", default=att, choices=["hard", "softmax"], help=f"attention kind (default {att})")
    # --beta defaults to None; the construction's default beta is filled in only for softmax (check_beta), so
    # `--attention hard` alone is never blamed on a --beta the user did not give
    p.add_argument("--beta", type=float_arg(0, None, lo_open=True), default=None,
                   help="inverse temperature for --attention softmax" + (f" (default {beta:g})" if beta is not None else ""))
    p.set_defaults(_default_beta=beta)


def check_beta(attention: str, beta: Any, default: Any = None) -> float | None:
    """The beta to use: ``--beta`` if given, else the construction's default (softmax only); a --beta given with
    --attention hard is refused (naming --beta, which is the flag at fault)."""
    from constructions.transformer import check_attention

    if attention == "softmax" and beta is None:
        beta = default
    if attention == "hard" and beta is not None:
        raise HmmtxError("--beta applies to --attention softmax only")
    return check_attention(attention, beta)


__all__ = [
    "register_generic",
    "resolve",
    "entry_parser",
    "load_source",
    "check_beta",
    "check_size",
    "check_tokens",
    "entry_estimate",
    "add_attention_arguments",
    "constructions_listing",
]
