"""``hmmtx bench exact``: the fast exact backend and certified mode (a benchmark, not a unit test).

    hmmtx bench exact [--states 16] [--length 2048] [--vocab 4] [--seed 0] [--rounds 1] [--fraction/--no-fraction]
                      [--gmpy2/--no-gmpy2] [--h1/--no-h1] [--json OUT]

On a rational Dirichlet(2) HMM (the zoo's small-denominator mode) with S states and T sampled tokens: (1) the exact
forward filter with python-flint (``backend="flint"``: integer rows, lazily reduced outputs) against the readable
Fraction recursion, interleaved (``--rounds`` rounds, alternating which goes first; medians), outputs checked
identical twice: ``==`` on every entry, then every flint entry reduced to lowest terms (timed: what an eager
backend would add) and its numerator and denominator compared; gmpy2 ``mpq`` (the same recursion, once) when
installed; (2) H1 (``exact-filter``, hard attention, no filtered layer) run bit-exactly by the fast executor,
checked against the flint filter; (3) certified mode: the same H1 weights in ball arithmetic
(``constructions.certified.enclose``) against a plain float64 run. The machine's load average is recorded before
and after.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from verify.benchmarks import add_problem_args


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "exact",
        help="fast exact backend (flint vs Fraction, gmpy2), H1 bit-exact at scale, certified-mode overhead",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_problem_args(p)
    p.add_argument("--fraction", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the Fraction forward filter (minutes at S=16, T=2048; default on)")
    p.add_argument("--gmpy2", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the same recursion with gmpy2 mpq when gmpy2 is installed (default on)")
    p.add_argument("--h1", action=argparse.BooleanOptionalAction, default=True,
                   help="also run H1 bit-exactly and in certified mode (default on)")
    p.add_argument("--rounds", type=int, default=1,
                   help="interleaved rounds of the flint and Fraction filters (alternating order; medians reported)")
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


FIELDS = ("filtered_probs", "predicted_probs", "next_token_probs")


def bench_exact(S: int = 16, T: int = 2048, V: int = 4, seed: int = 0, fraction: bool = True, gmpy2: bool = True,
                h1: bool = True, rounds: int = 1) -> dict:
    """Numbers of one exact-backend benchmark (times in seconds; per-round lists and their medians)."""
    from hmm.errors import HmmtxError
    from hmm.sampling import sample
    from hmm.zoo import make
    from verify.benchmarks import machine_info

    for name, v in (("--states", S), ("--length", T), ("--vocab", V), ("--rounds", rounds)):
        if v < 1:
            raise HmmtxError(f"{name} must be at least 1, got {v}")
    hmm = make("dirichlet", S, V, seed=seed, concentration=2.0, rational=True)
    x = sample(hmm, 1, T, seed=seed + 1).tokens[0]
    out: dict[str, Any] = {"S": S, "T": T, "V": V, "seed": seed, "rounds": rounds, "machine": machine_info()}
    fl, fr = _interleaved_filters(hmm, x, rounds, fraction, out)
    if fraction:
        out.update(_identical(fr, fl))
        eager = out["filter_flint_seconds"] + out["flint_lowest_terms_seconds"]
        out["flint_eager_speedup"] = out["filter_fraction_seconds"] / eager
    if gmpy2:
        out.update(_bench_gmpy2(hmm, x, fl))
    out["machine_after"] = {"loadavg_1min": machine_info()["loadavg_1min"]}
    if h1:
        out.update(_bench_h1(hmm, x, fl))
    return out


def _interleaved_filters(hmm: Any, x: Any, rounds: int, fraction: bool, out: dict) -> tuple:
    """flint and Fraction filters in alternating order, ``rounds`` times each (round r: flint first when r is
    even); the last results of each are returned for the identity check."""
    import statistics

    from hmm.reference import forward_filter_exact

    times: dict[str, list[float]] = {"flint": [], "fraction": []}
    res: dict[str, Any] = {}
    for r in range(rounds):
        order = ["flint", "fraction"] if r % 2 == 0 else ["fraction", "flint"]
        for backend in order:
            if backend == "fraction" and not fraction:
                continue
            t0 = time.perf_counter()
            res[backend] = forward_filter_exact(hmm, x, backend=backend)
            times[backend].append(time.perf_counter() - t0)
    out["filter_flint_seconds_rounds"] = times["flint"]
    out["filter_flint_seconds"] = statistics.median(times["flint"])
    if fraction:
        out["filter_fraction_seconds_rounds"] = times["fraction"]
        out["filter_fraction_seconds"] = statistics.median(times["fraction"])
        out["flint_speedup"] = out["filter_fraction_seconds"] / out["filter_flint_seconds"]
    return res["flint"], res.get("fraction")


def _identical(fr: Any, fl: Any) -> dict:
    """Bit-for-bit identity of the flint outputs with the Fraction outputs: ``==`` on every entry (cross products,
    the lazy form), then every entry reduced to lowest terms and its (numerator, denominator) compared; the time of
    the reduction is what an eager backend (a Fraction in lowest terms per entry) would add to the filter."""
    import numpy as np

    from hmm.fastq import reduce_all

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    out["flint_identical"] = all(np.array_equal(getattr(fr, f), getattr(fl, f)) for f in FIELDS)
    out["identity_check_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in FIELDS:
        reduce_all(getattr(fl, f))
    out["flint_lowest_terms_seconds"] = time.perf_counter() - t0
    out["flint_bit_identical"] = all(
        (a.numerator, a.denominator) == (b.numerator, b.denominator)
        for f in FIELDS for a, b in zip(getattr(fr, f).ravel(), getattr(fl, f).ravel())
    )
    return out


def _bench_gmpy2(hmm: Any, x: Any, fl: Any) -> dict:
    try:
        t0 = time.perf_counter()
        g = _gmpy2_filter(hmm, x)
        sec = time.perf_counter() - t0
    except ImportError:
        return {"filter_gmpy2_seconds": None}
    same = all(int(a.numerator) == b.numerator and int(a.denominator) == b.denominator
               for ra, rb in zip(g, fl.next_token_probs) for a, b in zip(ra, rb))
    return {"filter_gmpy2_seconds": sec, "gmpy2_identical": same}


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
    from verify.benchmarks import print_result

    res = bench_exact(args.states, args.length, args.vocab, args.seed, args.fraction, args.gmpy2, args.h1, args.rounds)
    return print_result(f"exact backend, S={res['S']} T={res['T']} V={res['V']}", res,
                        ("S", "T", "V", "machine", "machine_after"), args.json, skip_lists=True)
