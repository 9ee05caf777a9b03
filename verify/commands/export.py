"""``hmmtx export NAME``: write a construction's standard-block variant as safetensors or TransformerLens weights.

    hmmtx export exact-filter --hmm FILE [--tokens "0 1 2"] --format safetensors --out DIR
    hmmtx export window --hmm FILE --r 3 --format transformer-lens --out DIR [--dtype float32] [--act relu]

NAME is a construction (its ``NAME-std`` variant is exported) or a ``-std`` name. ``--tokens`` sizes the model
(positions, ``max_len``; default: the construction's example). The directory is written atomically (a temporary
sibling renamed at the end): a bad request (unknown format, existing or unwritable ``--out``, a construction
without a standard variant) prints one line, exits 2 and leaves nothing behind. Contents: ``docs/export.md``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from verify.commands._construction_cli import constructions_listing, entry_parser, load_source, register_generic

DESCRIPTION = (
    "Export a construction's standard-block variant (softmax attention with learned absolute positions, gated MLP, "
    "unembedding; TransformerLens parameter names) with its JSON config and labelled residual layout."
)


def register(subparsers: Any) -> None:
    register_generic(subparsers, "export", "export a construction's standard-block variant (safetensors, TransformerLens)",
                     DESCRIPTION, run)


def _common(p: argparse.ArgumentParser, entry: Any) -> None:
    from constructions.export import DTYPES, FORMATS

    p.add_argument("--format", required=True, help=f"export format: {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory to write (must not exist)")
    p.add_argument("--tokens", default=None, help="tokens that size the model (default: the construction's example)")
    p.add_argument("--dtype", default="float64", help=f"dtype of the written weights: {', '.join(DTYPES)} (default float64)")


def run(args: argparse.Namespace) -> int:
    from constructions.export import export_standard, standard_entry
    from constructions.runner import build_model, parse_tokens
    from hmm.errors import HmmtxError

    name = "--help" if getattr(args, "_help", False) and args.name is None else args.name
    if name in (None, "-h", "--help"):
        print(f"usage: hmmtx export NAME [options] --format FORMAT --out DIR\n\n{DESCRIPTION}\n\n{constructions_listing()}")
        if name is None:
            raise HmmtxError("export: give a construction NAME first")
        return 0
    entry = standard_entry(name)
    parser = entry_parser("export", entry, _common, DESCRIPTION)
    argv = list(args.rest or [])
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help(sys.stdout)
        return 0
    ns = parser.parse_args(argv)
    from constructions.export import DTYPES, FORMATS

    if ns.format not in FORMATS:  # checked before any work, so a bad request costs nothing
        raise HmmtxError(f"--format must be one of {', '.join(FORMATS)}, got {ns.format!r}")
    if ns.dtype not in DTYPES:
        raise HmmtxError(f"--dtype must be one of {', '.join(DTYPES)}, got {ns.dtype!r}")
    source = load_source(entry, ns)
    tokens = parse_tokens(entry, ns.tokens if ns.tokens is not None else entry.default_tokens)
    std = build_model(entry, source, tokens, attention=entry.attention.attention, beta=entry.attention.beta,
                      params=entry.param_values(ns))
    res = export_standard(std, ns.out, ns.format, dtype=ns.dtype)
    c = std.config
    ideal = std.idealised.spec
    print(f"exported {entry.name} ({ns.format}, {ns.dtype}) to {res.path}: {c.n_layers} layers, {c.n_heads} heads "
          f"(d_head {c.d_head}), d_model {c.d_model}, d_mlp {c.d_mlp} ({c.act_fn}-gated), n_ctx {c.n_ctx}; "
          f"{res.parameters} parameters")
    print(f"idealised {ideal.name}: {ideal.layers} layers, {ideal.heads} heads, width {ideal.width}, FFN width {ideal.ffn_width}")
    print("files: " + ", ".join(res.files))
    print("output rule: probabilities = logits / logits.sum(-1) (masses, not softmax); see docs/export.md")
    return 0
