"""``hmmtx filter``: exact or float64 forward filtering of one token sequence under an HMM file.

Prints a table with, for every position ``t``: the token, the filtered belief ``P(z_t | x_0..x_t)`` and the
next-token distribution ``P(x_{t+1} | x_0..x_t)``; then ``log P(x_0..x_{T-1})``. ``--json OUT`` writes
``filtered_probs``, ``predicted_probs``, ``next_token_probs`` (one row per position) and ``marginal_loglik``; in
``--exact`` mode the probabilities are full ``"p/q"`` strings (however many digits) and ``sequence_probability`` is
added. On screen, long fractions are shown as a float with their digit counts.
"""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Filter one token sequence under an HMM file (SPEC format: initial_probs, transition_matrix, emission_probs; entries
numbers or "p/q" strings). Prints, per position t, the token x_t, the filtered belief P(z_t | x_0..x_t) and the
next-token distribution P(x_{t+1} | x_0..x_t), then log P(x_0..x_{T-1}).

--exact runs the Fraction filter (a float HMM is converted exactly, so numbers get long: they are shown as a float
plus digit counts, and written in full to --json). Bad input (file, HMM, tokens, zero-probability sequence) gives
one line on stderr and exit status 2."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "filter",
        help="filtered beliefs and next-token probabilities of one sequence (exact or float64)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--hmm", required=True, metavar="FILE", help="HMM JSON file")
    p.add_argument("--tokens", required=True, metavar='"0 1 2 ..."', help="token ids separated by spaces or commas")
    p.add_argument("--exact", action="store_true", help="exact rational arithmetic (Fractions)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the results as JSON here")
    p.set_defaults(func=run)


def _row_float(v: Any) -> str:
    return "[" + ", ".join(f"{float(a):.6g}" for a in v) + "]"


def _row_exact(v: Any) -> str:
    from hmm.io import fraction_display

    return "[" + ", ".join(fraction_display(a) for a in v) + "]"


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from hmm.io import atomic_write_json, fraction_to_str, load_hmm, parse_tokens
    from hmm.model import validate_tokens
    from hmm.reference import forward_filter, forward_filter_exact, sequence_probability_exact

    hmm = load_hmm(args.hmm)
    tokens = validate_tokens(parse_tokens(args.tokens), hmm.num_obs, name="--tokens")
    if args.exact:
        res = forward_filter_exact(hmm.as_exact(), tokens)
        fmt = _row_exact
    else:
        res = forward_filter(hmm.as_float(), tokens, np.float64)
        fmt = _row_float

    mode = "exact (Fractions)" if args.exact else "float64"
    from rich.markup import escape

    table = Table(title=f"{escape(hmm.name or args.hmm)}: S={hmm.num_states}, V={hmm.num_obs}, T={len(tokens)}, {mode}")
    table.add_column("t", justify="right")
    table.add_column("x_t", justify="right")
    table.add_column("P(z_t | x_0..t)", overflow="fold")
    table.add_column("P(x_t+1 | x_0..t)", overflow="fold")
    for t, x in enumerate(tokens.tolist()):
        table.add_row(str(t), str(x), fmt(res.filtered_probs[t]), fmt(res.next_token_probs[t]))
    console = Console(width=max(120, 40 + 30 * max(hmm.num_states, hmm.num_obs)), soft_wrap=False)
    console.print(table)
    console.print(f"log P(x_0..x_{len(tokens) - 1}) = {res.marginal_loglik:.12g}")

    if args.json:
        if args.exact:
            rows = lambda a: [[fraction_to_str(v) for v in r] for r in a]  # noqa: E731
        else:
            rows = lambda a: np.asarray(a, dtype=np.float64).tolist()  # noqa: E731
        out = {
            "hmm": str(args.hmm),
            "exact": bool(args.exact),
            "tokens": tokens.tolist(),
            "filtered_probs": rows(res.filtered_probs),
            "predicted_probs": rows(res.predicted_probs),
            "next_token_probs": rows(res.next_token_probs),
            "marginal_loglik": float(res.marginal_loglik),
        }
        if args.exact:
            out["sequence_probability"] = fraction_to_str(sequence_probability_exact(hmm, tokens))
        atomic_write_json(args.json, out)
        console.print(f"wrote {args.json}", markup=False)
    return 0
