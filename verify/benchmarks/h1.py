"""``hmmtx bench h1``: time the H1 construction against its references (a benchmark, not a unit test).

    hmmtx bench h1 [--states 16] [--length 2048] [--vocab 4] [--seed 0] [--mode float64]
                  [--repeats 3] [--exact-reference/--no-exact-reference] [--dense/--no-dense] [--json OUT]

H1 (the exact filter, ``exact-filter``): builds the construction for a random Dirichlet HMM (concentration 2, a
mixing HMM) with S states, samples T tokens, runs the torch module (hard attention, ``record="final"``), and
compares its next-token probabilities with the numpy float64 forward filter and (optionally, slow at large T)
the exact Fraction forward filter :func:`hmm.reference.forward_filter_exact`, reporting the times of all three.
The same weights also run on the structured executor (:class:`constructions.structured.StructuredExecutor`:
gathers and batched matrix products read off the weights); module, structured executor, numpy filter and fast
filter (``outputs="all"``) are timed in interleaved rounds (best of the rounds), and the ratios
structured / numpy filter and structured / fast filter are reported with the structured executor's error.
The library function :func:`bench_h1` returns the same numbers as a dict.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from verify.benchmarks import add_problem_args


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "h1",
        help="the H1 exact-filter construction vs the numpy and exact forward filters (S=16, T=2048)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_problem_args(p)
    p.add_argument("--mode", choices=["float64", "float32"], default="float64", help="number mode (default float64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the module (best reported; default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: small per-layer ops gain nothing from threads, and OpenMP "
                        "barriers stall on an oversubscribed machine)")
    p.add_argument("--rational", action="store_true",
                   help="draw the HMM with small-denominator rationals (the zoo's rational mode): the exact filter's "
                        "Fractions stay far smaller than for float entries (2^-53 denominators)")
    p.add_argument("--exact-reference", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the exact Fraction forward filter (slow at large T; default on)")
    p.add_argument("--dense", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the dense torch module (slow; default on)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the numbers as JSON (atomically)")
    p.set_defaults(func=run)


def bench_h1(S: int = 16, T: int = 2048, V: int = 4, seed: int = 0, mode: str = "float64", repeats: int = 3,
             exact_reference: bool = True, rational: bool = False, dense: bool = True) -> dict:
    """Numbers of one H1 benchmark (errors are max-abs over next-token probabilities; times in seconds)."""
    import os

    import numpy as np
    import torch

    from constructions import registry
    from constructions.exact_filter import build
    from constructions.runner import compare, run_construction
    from hmm.errors import HmmtxError
    from hmm.reference import forward_filter_exact
    from hmm.sampling import sample
    from hmm.zoo import make

    for name, v, lo in (("--states", S, 1), ("--length", T, 1), ("--vocab", V, 1), ("--repeats", repeats, 1)):
        if v < lo:
            raise HmmtxError(f"{name} must be at least {lo}, got {v}")
    from types import SimpleNamespace

    from verify.cli_args import require_fits
    from constructions.estimates import prefix_bytes

    est = prefix_bytes(SimpleNamespace(num_states=S, num_obs=V), np.zeros(T, dtype=np.int64), mode=mode)
    require_fits(f"bench h1 (S={S}, T={T}, V={V})", est, "reduce --states or --length")
    hmm = make("dirichlet", S, V, seed=seed, concentration=2.0, rational=rational)
    x = sample(hmm, 1, T, seed=seed + 1).tokens[0]
    if rational:
        hmm_f = hmm.as_float()  # the float references and the module see the rationals rounded to float64
    else:
        hmm_f = hmm
    t0 = time.perf_counter()
    model = build(hmm_f, T, filtered=False, dtype=torch.float64 if mode == "float64" else torch.float32)
    t_build = time.perf_counter() - t0
    ids = model.codec.encode(x)
    from constructions.structured import StructuredExecutor
    from hmm.fast import forward_filter_fast
    from hmm.reference import forward_filter

    t0 = time.perf_counter()
    ex = StructuredExecutor(model)
    t_plan = time.perf_counter() - t0
    jobs = {"structured": lambda: ex.forward(ids, record="final"),
            "numpy": lambda: forward_filter(hmm_f, x),
            "fast": lambda: forward_filter_fast(hmm_f, x, outputs="all")}
    if dense:
        jobs["module"] = lambda: model.forward(ids, record="final")
    jobs["structured"]()  # warm-up: per-length gather targets are computed once and cached
    jobs["fast"]()  # compile / load the kernels
    times: dict = {k: [] for k in jobs}
    res: dict = {}
    with torch.no_grad():
        for _ in range(repeats):  # interleaved rounds
            for k, fn in jobs.items():
                t0 = time.perf_counter()
                res[k] = fn()
                times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    got_s = model.read(res["structured"], "next_token", slice(2, None))[0].double().numpy()
    ref = res["numpy"]
    out = {
        "construction": "exact-filter",
        "mode": mode,
        "S": S, "T": T, "V": V, "seed": seed, "rational": rational,
        "layers": model.spec.layers, "width": model.spec.width, "ffn_width": model.spec.ffn_width,
        "build_seconds": t_build,
        "structured_plan_seconds": t_plan,
        "structured_seconds_best": best["structured"],
        "numpy_filter_seconds": best["numpy"],
        "fast_filter_all_seconds": best["fast"],
        "structured_over_numpy_filter": best["structured"] / best["numpy"],
        "structured_over_fast_filter": best["structured"] / best["fast"],
        "structured_max_abs_error_vs_float64_filter": float(np.abs(got_s - ref.next_token_probs).max()),
        "seconds_all_rounds": times,
        "claimed_bound": model.claimed_bound(x, mode).value,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    # the dense module's comparisons go through the one run-and-compare path (constructions.runner)
    entry = registry.get("exact-filter")
    params = {"filtered": False}
    if dense:
        vs_float = run_construction(entry, hmm_f, x, mode=mode, params=params, reference="float64", model=model)
        got = model.read(res["module"], "next_token", slice(2, None))[0].double().numpy()
        out["module_seconds_best"] = best["module"]
        out["module_over_numpy_filter"] = best["module"] / best["numpy"]
        out["max_abs_error_vs_float64_filter"] = vs_float.errors["next_token_probs"]
        out["structured_vs_module_max_abs_diff"] = float(np.abs(got - got_s).max())
    if exact_reference:
        # the exact filter of the HMM as drawn (rationals when --rational), against the same float weights
        if dense:
            vs_exact = run_construction(entry, hmm, x, mode=mode, params=params, reference="exact", model=model)
            exact_probs, out["exact_filter_seconds"] = vs_exact.reference["next_token_probs"], vs_exact.seconds["reference"]
            out["max_abs_error_vs_exact_filter"] = vs_exact.errors["next_token_probs"]
        else:
            t0 = time.perf_counter()
            exact_probs = forward_filter_exact(hmm, x).next_token_probs
            out["exact_filter_seconds"] = time.perf_counter() - t0
        out["structured_max_abs_error_vs_exact_filter"] = compare(got_s, exact_probs, exact=False)[0]
        out["float64_filter_error_vs_exact"] = compare(ref.next_token_probs, exact_probs, exact=False)[0]
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from verify.benchmarks import print_result

    if args.threads is not None:
        from hmm.errors import HmmtxError

        if args.threads < 1:
            raise HmmtxError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    res = bench_h1(args.states, args.length, args.vocab, args.seed, args.mode, args.repeats, args.exact_reference,
                   args.rational, args.dense)
    return print_result(f"H1 exact filter, S={res['S']} T={res['T']} V={res['V']} ({res['mode']})", res,
                        ("construction", "S", "T", "V", "mode", "seconds_all_rounds"), args.json)
