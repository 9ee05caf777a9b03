"""``hmmtx bench scale``: the fast exact filter against hmmlearn, dynamax and pomegranate at scale.

Workloads (sequences x length x states, V = 8 observation symbols, a ``dirichlet`` zoo HMM, seed 0):

* ``small``: 1000 x 256 x 8;  ``large``: 10000 x 1024 x 16;  ``long``: 1 x 100000 x 8.

Every implementation computes the log-likelihood of every sequence (what the peers' calls return):

* ``hmmtx fast (numba)``: :func:`hmm.fast.forward_filter_fast` with ``outputs="loglik"`` (compiled loop, O(S)
  working memory); ``hmmtx numpy streaming``: the same with ``backend="numpy"`` (BLAS capped at one thread);
  ``hmmtx reference (numpy)``: the readable :func:`hmm.reference.forward_filter` (all (N, T, .) arrays; skipped on
  ``large`` unless ``--reference-large``: it needs ~4 GB there).
* peers, each measured only when installed (otherwise a note says why it was skipped): hmmlearn
  ``CategoricalHMM.score(X, lengths)`` (one call, implementations ``scaling`` and ``log``); dynamax
  ``hmm_filter`` (jit + vmap over chunks of sequences, float64, compile excluded); pomegranate ``DenseHMM.forward``
  (torch float64, chunks of sequences, the emission lookup included).

Timing: ``--rounds`` interleaved rounds (each implementation once per round, in the same order; one whose first
round exceeded ``--budget`` seconds is not repeated), medians over rounds; ratio = median over rounds of (time of
the peer's faster implementation / hmmtx fast) in the same round, so load changes on a shared machine hit both.
Agreement: max |loglik difference| of every implementation against the hmmtx reference (or the fast filter where
the reference was skipped), absolute and relative to |loglik|.
Memory: the peak of Python-traced allocations (tracemalloc; numpy registers its buffers there) during one fast
call on each workload, and the process's peak RSS. Machine limit: measured 1-thread dense matmul rate and copy
bandwidth, and the floor max(flops / rate, bytes / bandwidth) of each workload.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, NamedTuple

from verify.benchmarks import positive_int

WORKLOADS = {"small": (1000, 256, 8), "large": (10000, 1024, 16), "long": (1, 100000, 8)}
OBS = 8
PEERS = ("hmmlearn", "dynamax", "pomegranate")
#: Agreement tolerance on log-likelihoods: absolute 1e-10, or 1e-13 relative to |loglik| (a sum of 1e5 logs of
#: magnitude ~2 carries ~1e-10 of honest float64 round-off in any implementation).
LL_ATOL, LL_RTOL = 1e-10, 1e-13
#: With ``--dtype float32`` the hmmtx rows run in float32 and the peers in float64: relative 1e-5.
LL_RTOL_F32 = 1e-5


class Impl(NamedTuple):
    """One timed implementation: ``fn()`` returns the (N,) float64 log-likelihoods; ``group`` = "hmmtx" or a peer."""

    name: str
    group: str
    fn: Callable[[], Any]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scale", help="fast exact filter vs hmmlearn / dynamax / pomegranate on small, large and long workloads",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workloads", default="small,large,long", help="comma-separated subset of small,large,long")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every workload's number of sequences and length by this (e.g. 0.01 for a smoke run)")
    p.add_argument("--rounds", type=positive_int, default=11,
                   help="interleaved rounds on small and long (11); medians are reported")
    p.add_argument("--rounds-large", type=positive_int, default=3, help="interleaved rounds on large (3)")
    p.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers to try (all)")
    p.add_argument("--pause", type=float, default=0.25,
                   help="seconds of sleep before each timed call (idle worker threads of the previous implementation "
                        "stop spinning; 0.25)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds: an implementation whose first round took longer is not repeated (60)")
    p.add_argument("--reference-large", action="store_true", help="also time the readable reference on 'large'")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="hmmtx dtype (float64)")
    p.add_argument("--blas-threads", type=positive_int, default=1,
                   help="BLAS, torch and XLA threads for the whole run (1: every implementation on one core; a second "
                        "OpenBLAS thread on small per-step matmuls made the numpy filter 4x slower on a 2-core machine)")
    p.add_argument("--seed", type=int, default=0, help="seed of the HMMs and samples (0)")
    p.add_argument("--json", metavar="OUT", default=None, help="write every figure as JSON here")
    p.set_defaults(func=run)


def _workload_sizes(names: str, scale: float) -> dict[str, tuple[int, int, int]]:
    from hmm.errors import HmmtxError

    out = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name not in WORKLOADS:
            raise HmmtxError(f"--workloads: unknown workload {name!r} (choose from {', '.join(WORKLOADS)})")
        N, T, S = WORKLOADS[name]
        out[name] = (max(1, round(N * scale)), max(2, round(T * scale)), S)
    if not out:
        raise HmmtxError("--workloads: name at least one workload")
    if not scale > 0:
        raise HmmtxError(f"--scale must be > 0, got {scale}")
    return out


# ---------------------------------------------------------------------------------------------- implementations
def hmmtx_impls(hmm: Any, x: Any, dtype: Any, reference: bool) -> list[Impl]:
    import numpy as np

    from hmm.fast import forward_filter_fast, have_numba
    from hmm.reference import forward_filter

    out = []
    if have_numba():
        forward_filter_fast(hmm, x[:1, :4], dtype)  # compile (or load the cache) outside the timing
        out.append(Impl("hmmtx fast (numba)", "hmmtx", lambda: forward_filter_fast(hmm, x, dtype).marginal_loglik))
    out.append(Impl("hmmtx numpy streaming", "hmmtx",
                    lambda: forward_filter_fast(hmm, x, dtype, backend="numpy").marginal_loglik))
    if reference:
        out.append(Impl("hmmtx reference (numpy)", "hmmtx", lambda: np.asarray(forward_filter(hmm, x, dtype).marginal_loglik)))
    return out


def hmmlearn_impls(hmm: Any, x: Any) -> list[Impl]:
    import numpy as np
    from hmmlearn.hmm import CategoricalHMM

    pi, A, B = hmm.arrays(np.float64)
    N, T = x.shape
    flat, lengths = x.reshape(-1, 1), np.full(N, T)
    out = []
    for impl in ("scaling", "log"):
        m = CategoricalHMM(n_components=len(pi), n_features=B.shape[1], implementation=impl)
        m.startprob_, m.transmat_, m.emissionprob_ = pi, A, B
        m.score(flat[:4], lengths=[4])

        def fn(m=m):
            # score(X, lengths) returns the total; per-sequence values come from the same C++ forward pass per call,
            # so the timed call is the total and agreement is checked on it (see _agreement).
            return np.array([m.score(flat, lengths=lengths)])

        out.append(Impl(f"hmmlearn score(X, lengths) ({impl})", "hmmlearn", fn))
    return out


def dynamax_impls(hmm: Any, x: Any, chunk: int = 500) -> list[Impl]:
    import os
    import sys

    if "jax" not in sys.modules:  # one XLA thread, like every other implementation here (see one_thread_each)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from dynamax.hidden_markov_model import hmm_filter

    pi, A, B = (jnp.asarray(a) for a in hmm.arrays(np.float64))
    with np.errstate(divide="ignore"):
        logB = jnp.asarray(np.log(np.asarray(B)))

    @jax.jit
    def loglik(xc):
        return jax.vmap(lambda xs: hmm_filter(pi, A, logB[:, xs].T).marginal_loglik)(xc)

    N = x.shape[0]
    chunks = [jnp.asarray(x[s : s + chunk]) for s in range(0, N, chunk)]
    for c in {c.shape: c for c in chunks}.values():
        loglik(c).block_until_ready()  # compile every chunk shape outside the timing

    def fn():
        return np.concatenate([np.asarray(loglik(c).block_until_ready()) for c in chunks])

    return [Impl(f"dynamax hmm_filter (jit, vmap, chunks of {min(chunk, N)})", "dynamax", fn)]


def pomegranate_impls(hmm: Any, x: Any, chunk: int = 1000) -> list[Impl]:
    import numpy as np
    import torch
    from pomegranate.distributions import Categorical
    from pomegranate.hmm import DenseHMM

    pi, A, B = hmm.arrays(np.float64)
    S = len(pi)
    dists = [Categorical(torch.tensor(B[i : i + 1], dtype=torch.float64)) for i in range(S)]
    model = DenseHMM(dists, edges=torch.tensor(A), starts=torch.tensor(pi))
    with np.errstate(divide="ignore"):
        logBt = torch.tensor(np.log(B).T.copy())  # (V, S)
    xt = torch.as_tensor(x)

    def fn():
        with torch.no_grad():
            out = []
            for s in range(0, xt.shape[0], chunk):
                f = model.forward(emissions=logBt[xt[s : s + chunk]])  # (n, T, S) log forward lattice
                out.append(torch.logsumexp(f[:, -1], dim=1))
            return torch.cat(out).numpy()

    fn_small = x[:2, :4]
    model.forward(emissions=logBt[torch.as_tensor(fn_small)])
    return [Impl(f"pomegranate DenseHMM.forward (torch float64, chunks of {min(chunk, x.shape[0])})", "pomegranate", fn)]


def peer_impls(name: str, hmm: Any, x: Any) -> tuple[list[Impl], str | None]:
    """The peer's implementations, or ([], note) when it is not installed or fails to set up."""
    makers = {"hmmlearn": hmmlearn_impls, "dynamax": dynamax_impls, "pomegranate": pomegranate_impls}
    try:
        return makers[name](hmm, x), None
    except ImportError as exc:
        return [], f"{name} skipped: not installed ({exc.name or exc}); pip install 'hmmtx[bench]'"


# ---------------------------------------------------------------------------------------------- measuring
def interleaved(impls: list[Impl], rounds: int, budget: float = float("inf"),
                pause: float = 0.0) -> tuple[dict, dict, dict[str, Any]]:
    """Each implementation once per round, in order; returns wall-clock times, CPU times (this process, all its
    threads) and the last results. An implementation whose first round took longer than ``budget`` seconds (wall)
    is not repeated (its lists have one entry). ``pause`` seconds of sleep before each timed call let the previous
    implementation's idle worker threads (OpenMP, XLA) stop spinning, which otherwise bills their CPU to the next."""
    wall: dict[str, list[float]] = {i.name: [] for i in impls}
    cpu: dict[str, list[float]] = {i.name: [] for i in impls}
    results: dict[str, Any] = {}
    for r in range(rounds):
        for i in impls:
            if r > 0 and wall[i.name][0] > budget:
                continue
            time.sleep(pause)
            c0, t0 = time.process_time(), time.perf_counter()
            results[i.name] = i.fn()
            wall[i.name].append(time.perf_counter() - t0)
            cpu[i.name].append(time.process_time() - c0)
    return wall, cpu, results


def _agreement(results: dict[str, Any], impls: list[Impl], ref_name: str, rtol: float) -> dict[str, dict]:
    import numpy as np

    ref = np.asarray(results[ref_name], dtype=np.float64)
    out = {}
    for i in impls:
        got = np.asarray(results[i.name], dtype=np.float64)
        r = ref if got.shape == ref.shape else np.array([ref.sum()])  # hmmlearn returns the total
        d = float(np.abs(got - r).max())
        rel = d / max(1.0, float(np.abs(r).max()))
        out[i.name] = {"max_abs_diff": d, "max_rel_diff": rel, "ok": bool(d <= LL_ATOL or rel <= rtol)}
    return out


def _ratios(times: dict[str, list[float]], impls: list[Impl], ours: str) -> dict[str, float]:
    """Per peer: median over rounds of (faster implementation of the peer in that round / ours in that round); a
    round where the peer was not repeated (over the time budget) compares its first time with ours of that round."""
    import numpy as np

    out = {}
    for g in sorted({i.group for i in impls} - {"hmmtx"}):
        names = [i.name for i in impls if i.group == g]
        per_round = [min(times[n][min(r, len(times[n]) - 1)] for n in names) / times[ours][r]
                     for r in range(len(times[ours]))]
        out[g] = float(np.median(per_round))
    return out


def traced_peak(fn: Callable[[], Any]) -> float:
    """Peak bytes of Python-traced allocations (numpy buffers included) during one call of ``fn``."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return float(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def machine_limits() -> dict[str, float]:
    """One-thread dense float64 matmul rate (flop/s) and large-array copy bandwidth (bytes/s, read + write)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((1024, 1024))
    with threadpool_limits(1, user_api="blas"):
        a @ a
        mm = min(_timed(lambda: a @ a) for _ in range(3))
    src = np.ones(8 * 1024 * 1024)  # 64 MB, far beyond the caches
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(3))
    return {"matmul_flops_per_s_1thread": 2 * 1024**3 / mm, "copy_bytes_per_s": 2 * src.nbytes / best}


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def workload_floor(N: int, T: int, S: int, limits: dict[str, float]) -> dict[str, float]:
    """Work of the filter: per token 2 S^2 (A^T f) + 3 S (emission, sum, scale) flops; bytes: the int64 tokens once."""
    flops = N * T * (2.0 * S * S + 3.0 * S)
    nbytes = N * T * 8.0
    return {"flops": flops, "bytes": nbytes, "floor_s": max(flops / limits["matmul_flops_per_s_1thread"],
                                                             nbytes / limits["copy_bytes_per_s"])}


# ---------------------------------------------------------------------------------------------- one workload
def bench_workload(name: str, size: tuple[int, int, int], args: argparse.Namespace, peers: list[str],
                   limits: dict[str, float]) -> dict:
    import numpy as np

    from hmm import zoo
    from hmm.fast import forward_filter_fast
    from hmm.sampling import sample

    N, T, S = size
    hmm = zoo.make("dirichlet", S, OBS, seed=args.seed)
    x = np.ascontiguousarray(sample(hmm, N, T, seed=args.seed).tokens)
    dtype = np.float64 if args.dtype == "float64" else np.float32
    impls = hmmtx_impls(hmm, x, dtype, reference=name != "large" or args.reference_large)
    notes = []
    for p in peers:
        got, note = peer_impls(p, hmm, x)
        impls += got
        if note:
            notes.append(note)
    rounds = args.rounds_large if name == "large" else args.rounds
    times, cpu, results = interleaved(impls, rounds, args.budget, args.pause)
    ours = impls[0].name
    ref = "hmmtx reference (numpy)" if "hmmtx reference (numpy)" in results else ours
    mem = traced_peak(lambda: forward_filter_fast(hmm, x, dtype))
    return {
        "workload": {"name": name, "sequences": N, "length": T, "states": S, "obs": OBS, "seed": args.seed},
        "ours": ours,
        "times_s": times,
        "cpu_times_s": cpu,
        "median_s": {k: float(np.median(v)) for k, v in times.items()},
        "median_cpu_s": {k: float(np.median(v)) for k, v in cpu.items()},
        "ratios_peer_over_ours": _ratios(times, impls, ours),
        "cpu_ratios_peer_over_ours": _ratios(cpu, impls, ours),
        "rounds": rounds,
        "agreement_vs": ref,
        "agreement": _agreement(results, impls, ref, LL_RTOL if dtype == np.float64 else LL_RTOL_F32),
        "traced_peak_bytes_fast": mem,
        "token_bytes": int(x.nbytes),
        "floor": workload_floor(N, T, S, limits),
        "notes": notes,
    }


def _versions() -> dict[str, Any]:
    from importlib import metadata

    out = {}
    for dist in ("numba", "jax", "dynamax", "pomegranate", "hmmlearn", "threadpoolctl"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _blas() -> list[dict]:
    from threadpoolctl import threadpool_info

    return [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "architecture")}
            for d in threadpool_info()]


def print_workload(console: Any, res: dict) -> None:
    from rich.table import Table

    w = res["workload"]
    tab = Table(title=f"{w['name']}: {w['sequences']} x {w['length']} x {w['states']} (V={w['obs']})")
    for col in ("implementation", "median s", "time / ours", "CPU s", "CPU / ours", "max |dll|", "agrees"):
        tab.add_column(col, justify="left" if col == "implementation" else "right")
    base, cbase = res["median_s"][res["ours"]], res["median_cpu_s"][res["ours"]]
    for k, v in res["median_s"].items():
        a, c = res["agreement"][k], res["median_cpu_s"][k]
        tab.add_row(k, f"{v:.4f}", f"{v / base:.2f}", f"{c:.4f}", f"{c / cbase:.2f}", f"{a['max_abs_diff']:.1e}",
                    "OK" if a["ok"] else "MISMATCH")
    console.print(tab)
    rat = ", ".join(f"{g} {r:.1f}x (CPU {res['cpu_ratios_peer_over_ours'][g]:.1f}x)"
                    for g, r in res["ratios_peer_over_ours"].items()) or "no peer measured"
    fl = res["floor"]
    console.print(f"  ratios (peer's faster implementation / ours, median of {res['rounds']} rounds; wall clock, and "
                  f"CPU time of all threads): {rat}")
    console.print(f"  floor {fl['floor_s']:.4f} s ({fl['flops']:.3g} flop, {fl['bytes']:.3g} B); ours / floor "
                  f"{base / fl['floor_s']:.1f}; traced peak of one fast call {res['traced_peak_bytes_fast'] / 1e6:.2f} MB "
                  f"(tokens {res['token_bytes'] / 1e6:.1f} MB)")
    for n in res["notes"]:
        console.print(f"  note: {n}")


def one_thread_each(threads: int) -> int:
    """Every implementation on ``threads`` threads: torch intra-op threads (pomegranate; idle OpenMP workers spin
    after each parallel region and steal the next implementation's core on a 2-core machine), BLAS (set by the
    caller), XLA (dynamax, set before jax is imported). The compiled hmmtx filter is single-threaded."""
    import torch

    torch.set_num_threads(threads)
    return torch.get_num_threads()


def run(args: argparse.Namespace) -> int:
    import os
    import resource

    from rich.console import Console

    from hmm.io import atomic_write_json
    from verify.benchmarks import machine_info

    sizes = _workload_sizes(args.workloads, args.scale)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad:
        from hmm.errors import HmmtxError

        raise HmmtxError(f"--peers: unknown peer {bad[0]!r} (choose from {', '.join(PEERS)})")
    from threadpoolctl import threadpool_limits

    import torch

    console = Console(width=120)
    before = torch.get_num_threads()
    torch_threads = one_thread_each(args.blas_threads)
    try:
        with threadpool_limits(args.blas_threads, user_api="blas"):
            limits = machine_limits()
            res = []
            for n, s in sizes.items():  # printed as each workload completes
                res.append(bench_workload(n, s, args, peers, limits))
                print_workload(console, res[-1])
    finally:
        torch.set_num_threads(before)
    machine = {**machine_info(), **_versions(), "blas": _blas(), "blas_threads_during_run": args.blas_threads,
               "torch_threads_during_run": torch_threads, "xla_flags": os.environ.get("XLA_FLAGS"),
               "limits": limits,
               "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    console.print(f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, load {machine['loadavg_1min']}, "
                  f"matmul {limits['matmul_flops_per_s_1thread'] / 1e9:.1f} GFlop/s (1 thread), copy "
                  f"{limits['copy_bytes_per_s'] / 1e9:.1f} GB/s; numba {machine['numba']}, hmmlearn "
                  f"{machine['hmmlearn']}, dynamax {machine['dynamax']}, jax {machine['jax']}, pomegranate "
                  f"{machine['pomegranate']}; no GPU used (CUDA unmeasured)")
    ok = all(a["ok"] for r in res for a in r["agreement"].values())
    if args.json:
        atomic_write_json(args.json, {"benchmark": "scale", "dtype": args.dtype, "rounds": args.rounds,
                                      "rounds_large": args.rounds_large,
                                      "workloads": res, "machine": machine, "agreement_ok": ok})
        console.print(f"wrote {args.json}")
    return 0 if ok else 1
