"""``hmmtx zoo``: list the HMM families of :mod:`hmm.zoo`, or build one, show its diagnostics and save it as JSON."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Without NAME: list the zoo's HMM families (sizes, parameters with defaults, mixing / strictly positive A).
With NAME: build that HMM (seeded), print its diagnostics (stationary distribution, projective diameter Delta(A),
Birkhoff tau(A), Dobrushin coefficient, sigma_min(B)) and its arrays, and write it with --out FILE (the format that
--hmm takes). Family parameters: --param key=value (repeatable), e.g. --param eps=0.01 or --param x=3/20.
--rational builds an exact HMM with small-denominator rationals."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "zoo",
        help="list the HMM zoo, or build one HMM, show its diagnostics and save it",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", default=None, help="family name (omit to list the families)")
    p.add_argument("--states", type=str, default=None, metavar="S", help="hidden states (family default)")
    p.add_argument("--obs", type=str, default=None, metavar="V", help="observation symbols (family default)")
    p.add_argument("--seed", type=str, default="0", metavar="N", help="seed (0)")
    p.add_argument("--rational", action="store_true", help="exact HMM with small-denominator rationals")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a family parameter")
    p.add_argument("--out", metavar="FILE", default=None, help="write the HMM as JSON here")
    p.set_defaults(func=run)


def _int(text: str | None, flag: str) -> int | None:
    from hmm.errors import HmmtxError

    import argparse

    from verify.cli_args import RANGES, int_arg

    if text is None:
        return None
    lo, hi = RANGES["seed"] if flag == "--seed" else RANGES["states"]
    try:
        return int_arg(lo, hi)(text)  # the shared range of every --seed / --states / --obs
    except argparse.ArgumentTypeError as exc:
        raise HmmtxError(f"{flag}: {exc}") from None


def _value(text: str) -> Any:
    """``"2"`` -> 2, ``"0.15"`` -> 0.15, ``"3/20"`` stays a string (an exact rational), ``"none"`` -> None."""
    if text.lower() == "none":
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _params(items: list[str]) -> dict[str, Any]:
    from hmm.errors import HmmtxError

    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise HmmtxError(f"--param: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = _value(val.strip())
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hmm import zoo
    from hmm.diagnostics import summary
    from hmm.io import fraction_display, save_hmm

    console = Console(width=140)
    if args.name is None:
        table = Table(title="hmm.zoo families (hmmtx zoo NAME --param key=value ...)")
        for col in ("family", "S / V", "parameters (defaults)", "mixing", "A > 0", "description"):
            table.add_column(col, overflow="fold")
        for name, fam in zoo.FAMILIES.items():
            size = f"{fam.fixed_size[0]} / {fam.fixed_size[1]}" if fam.fixed_size else (
                f"any ({fam.default_size[0]} / {fam.default_size[1]})")
            params = ", ".join(f"{k}={v!r}" for k, v in fam.params.items())
            table.add_row(name, size, params, "yes" if fam.mixing else "no", "yes" if fam.strictly_positive else "no",
                          fam.description)
        console.print(table)
        return 0

    hmm = zoo.make(args.name, _int(args.states, "--states"), _int(args.obs, "--obs"), seed=_int(args.seed, "--seed"),
                   rational=args.rational, **_params(args.param))
    s = summary(hmm)
    fmt = (lambda v: fraction_display(v, 12)) if hmm.exact else (lambda v: f"{float(v):.6g}")  # noqa: E731
    from rich.markup import escape

    console.print(f"[bold]{escape(hmm.name)}[/bold]: S={s.num_states}, V={s.num_obs}, {'exact' if s.exact else 'float64'}")
    diag = Table(show_header=False)
    rows = [
        ("stationary distribution", "not unique" if s.stationary is None else "[" + ", ".join(fmt(v) for v in s.stationary) + "]"),
        ("projective diameter Delta(A)", f"{s.projective_diameter:.6g}"),
        ("Birkhoff tau(A) = tanh(Delta/4)", f"{s.birkhoff_contraction:.6g}"),
        ("Dobrushin coefficient", f"{s.dobrushin:.6g}"),
        ("sigma_min(B)", f"{s.sigma_min_emission:.6g}"),
        ("A strictly positive / min entry", f"{s.strictly_positive} / {s.min_transition:.6g}"),
        ("rank(A)", str(s.transition_rank)),
    ]
    for k, v in rows:
        diag.add_row(k, v)
    console.print(diag)
    if s.num_states <= 12 and s.num_obs <= 12:
        for label, arr in (("initial_probs", [hmm.initial_probs]), ("transition_matrix", hmm.transition_matrix),
                           ("emission_probs", hmm.emission_probs)):
            t = Table(title=label, show_header=False)
            for row in arr:
                t.add_row(*(fmt(v) for v in row))
            console.print(t)
    if args.out:
        save_hmm(hmm, args.out)
        console.print(f"wrote {args.out}", markup=False)
    return 0
