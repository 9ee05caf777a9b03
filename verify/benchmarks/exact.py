"""``hmmtx bench exact``: the fast exact backend and certified mode (a benchmark, not a unit test).

    hmmtx bench exact [--states 16] [--length 2048] [--vocab 4] [--seed 0] [--fraction/--no-fraction]
                      [--gmpy2/--no-gmpy2] [--json OUT]

On a rational Dirichlet(2) HMM (the zoo's small-denominator mode) with S states and T sampled tokens: (1) the exact
forward filter with python-flint (``backend="flint"``) against the readable Fraction recursion (and gmpy2 ``mpq``
when installed), outputs checked identical; (2) H1 (``exact-filter``, hard attention, no filtered layer) run
bit-exactly by the fast executor, checked against the flint filter; (3) certified mode: the same H1 weights in
ball arithmetic (``constructions.certified.enclose``) against a plain float64 run. Timings are one run each
(the Fraction filter alone takes minutes at the default size); interleaving is by target, the machine's load
average is recorded.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "exact",
        help="fast exact backend (flint vs Fraction, gmpy2), H1 bit-exact at scale, certified-mode overhead",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--states", type=int, default=16, help="hidden states S (default 16)")
    p.add_argument("--length", type=int, default=2048, help="sequence length T (default 2048)")
    p.add_argument("--vocab", type=int, default=4, help="observation symbols V (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the HMM and the tokens")
    p.add_argument("--fraction", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the Fraction forward filter (minutes at S=16, T=2048; default on)")
    p.add_argument("--gmpy2", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the same recursion with gmpy2 mpq when gmpy2 is installed (default on)")
    p.add_argument("--h1", action=argparse.BooleanOptionalAction, default=True,
                   help="also run H1 bit-exactly and in certified mode (default on)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the numbers as JSON (atomically)")
    p.set_defaults(func=run)


def _gmpy2_filter(hmm: Any, x: Any) -> list:
    """Next-token probabilities of the exact forward recursion in gmpy2 ``mpq`` (the same operations)."""
    import gmpy2

    q = lambda f: gmpy2.mpq(f.numerator, f.denominator)  # noqa: E731
    A = [[q(a) for a in r] for r in hmm.transition_matrix.tolist()]
    B = [[q(b) for b in r] for r in hmm.emission_probs.tolist()]
    alpha = [q(p) for p in hmm.initial_probs.tolist()]
    S, V = len(A), len(B[0])
    out = []
    for o in x.tolist():
        joint = [alpha[i] * B[i][o] for i in range(S)]
        alpha = [sum(joint[i] * A[i][j] for i in range(S)) for j in range(S)]
        mass = sum(alpha)
        out.append([sum(alpha[j] * B[j][v] for j in range(S)) / mass for v in range(V)])
    return out


def bench_exact(S: int = 16, T: int = 2048, V: int = 4, seed: int = 0, fraction: bool = True, gmpy2: bool = True,
                h1: bool = True) -> dict:
    """Numbers of one exact-backend benchmark (times in seconds)."""
    import numpy as np

    from hmm.errors import HmmtxError
    from hmm.reference import forward_filter_exact
    from hmm.sampling import sample
    from hmm.zoo import make
    from verify.benchmarks import machine_info

    for name, v in (("--states", S), ("--length", T), ("--vocab", V)):
        if v < 1:
            raise HmmtxError(f"{name} must be at least 1, got {v}")
    hmm = make("dirichlet", S, V, seed=seed, concentration=2.0, rational=True)
    x = sample(hmm, 1, T, seed=seed + 1).tokens[0]
    out: dict[str, Any] = {"S": S, "T": T, "V": V, "seed": seed, "machine": machine_info()}
    t0 = time.perf_counter()
    fl = forward_filter_exact(hmm, x, backend="flint")
    out["filter_flint_seconds"] = time.perf_counter() - t0
    if gmpy2:
        try:
            t0 = time.perf_counter()
            g = _gmpy2_filter(hmm, x)
            out["filter_gmpy2_seconds"] = time.perf_counter() - t0
            out["gmpy2_identical"] = all(int(a.numerator) == b.numerator and int(a.denominator) == b.denominator
                                         for ra, rb in zip(g, fl.next_token_probs) for a, b in zip(ra, rb))
        except ImportError:
            out["filter_gmpy2_seconds"] = None
    if fraction:
        t0 = time.perf_counter()
        fr = forward_filter_exact(hmm, x, backend="fraction")
        out["filter_fraction_seconds"] = time.perf_counter() - t0
        out["flint_identical"] = all(np.array_equal(getattr(fr, f), getattr(fl, f))
                                     for f in ("filtered_probs", "predicted_probs", "next_token_probs"))
        out["flint_speedup"] = out["filter_fraction_seconds"] / out["filter_flint_seconds"]
    if h1:
        out.update(_bench_h1(hmm, x, fl))
    return out


def _bench_h1(hmm: Any, x: Any, fl: Any) -> dict:
    import numpy as np

    from constructions.certified import certified_roundoff, contains, enclose
    from constructions.exact_filter import build

    T = len(x)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    model = build(hmm, T, filtered=False)
    out["h1_build_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex = model.run(x, "exact", record="final").outputs
    out["h1_exact_seconds"] = time.perf_counter() - t0
    out["h1_bit_identical"] = bool(np.array_equal(ex["next_token_probs"], fl.next_token_probs)
                                   and np.array_equal(ex["predicted_probs"], fl.predicted_probs))
    t0 = time.perf_counter()
    f64 = model.run(x, "float64", record="final").outputs
    out["h1_float64_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cert = enclose(model, x)
    out["h1_certify_seconds"] = time.perf_counter() - t0
    names = ["next_token_probs", "predicted_probs"]
    refs = {"next_token_probs": fl.next_token_probs, "predicted_probs": fl.predicted_probs}
    out["certified_roundoff"] = certified_roundoff(cert, f64, names)
    out["enclosure_radius"] = cert.radius
    out["exact_inside_enclosure"] = contains(cert, refs, names)
    out["certify_overhead"] = out["h1_certify_seconds"] / out["h1_float64_seconds"]
    t0 = time.perf_counter()
    bound = model.claimed_bound(x, "float64")
    out["derived_bound_seconds"] = time.perf_counter() - t0
    out["derived_bound"] = bound.value
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    res = bench_exact(args.states, args.length, args.vocab, args.seed, args.fraction, args.gmpy2, args.h1)
    tab = Table(title=f"exact backend, S={res['S']} T={res['T']} V={res['V']}")
    tab.add_column("quantity")
    tab.add_column("value", justify="right")
    for k, v in res.items():
        if k in ("S", "T", "V", "machine"):
            continue
        tab.add_row(k, f"{v:.3g}" if isinstance(v, float) else str(v))
    Console().print(tab)
    if args.json:
        from hmm.io import atomic_write_json

        atomic_write_json(args.json, res)
    return 0
