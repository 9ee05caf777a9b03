"""Benchmark targets of ``hmmtx bench <target>``, one module per target, discovered automatically.

To add a target, create ``verify/benchmarks/<name>.py`` (no other file needs editing) defining::

    def register(subparsers) -> None:
        p = subparsers.add_parser("<name>", help="...", description="...")
        p.add_argument(...)
        p.set_defaults(func=run)          # run(args) -> exit status

Keep heavy imports inside ``run`` so that ``hmmtx --help`` stays fast. Modules whose name starts with ``_`` are
skipped. Use the helpers below for the machine description and best-of-N timing, and record the figures in
``docs/performance.md`` (one section per target).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import time
from typing import Any, Callable

from verify.cli_args import positive_int  # noqa: F401 - re-exported for the benchmark targets


def discover() -> list[str]:
    """Names of the target modules in this package (sorted)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def register_all(subparsers: Any) -> None:
    """Call ``register(subparsers)`` of every target module."""
    for name in discover():
        importlib.import_module(f"{__name__}.{name}").register(subparsers)


def add_problem_args(p: Any, *, states: int = 16, length: int = 2048, vocab: int = 4) -> None:
    """The problem flags shared by the HMM benchmarks (``bench h1``, ``bench exact``): ``--states``, ``--length``,
    ``--vocab`` (defaults as given) and ``--seed`` (default 0, seeds the HMM and the tokens)."""
    p.add_argument("--states", type=int, default=states, help=f"hidden states S (default {states})")
    p.add_argument("--length", type=int, default=length, help=f"sequence length T (default {length})")
    p.add_argument("--vocab", type=int, default=vocab, help=f"observation symbols V (default {vocab})")
    p.add_argument("--seed", type=int, default=0, help="seed of the HMM and the tokens")


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Run ``fn`` ``repeats`` times; returns (best seconds, all seconds, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def machine_info() -> dict[str, Any]:
    """nproc, CPU model (/proc/cpuinfo), load average, Python / numpy / torch / hmmlearn versions."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        info["loadavg_1min"] = os.getloadavg()[0]
    except OSError:
        info["loadavg_1min"] = None
    from importlib import metadata

    for dist in ("numpy", "torch", "hmmlearn"):  # versions from the installed metadata: no (slow) imports
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    return info


__all__ = ["discover", "register_all", "positive_int", "add_problem_args", "best_of", "machine_info"]


def print_result(title: str, res: dict, skip: tuple, json_path: Any, skip_lists: bool = False) -> int:
    """Print a benchmark's result dict as a quantity/value table (leaving out the keys in ``skip``, and list values
    with ``skip_lists``),
    write it as JSON (atomically) when ``json_path`` is given; the command's exit status (0)."""
    from rich.console import Console
    from rich.table import Table

    from hmm.io import atomic_write_json

    tab = Table(title=title)
    tab.add_column("quantity")
    tab.add_column("value", justify="right")
    for k, v in res.items():
        if k in skip or (skip_lists and isinstance(v, list)):
            continue
        tab.add_row(k, f"{v:.3g}" if isinstance(v, float) else str(v))
    Console().print(tab)
    if json_path:
        atomic_write_json(json_path, res)
    return 0

