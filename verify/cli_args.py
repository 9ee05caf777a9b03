"""The argument-validation layer of the ``hmmtx`` command line (see docs/robustness.md).

Three guarantees for every command, including new ones:

* :func:`harden_parser` (applied by ``verify.cli`` to every sub-command parser, and by ``hmmtx run/inspect`` to
  each construction's parser) replaces ``type=int`` / ``type=float`` by checked versions: integers are plain ASCII
  digits within int64 (no 4300-digit crash), floats are finite, and flags with a conventional name get their range
  from :data:`RANGES` (every ``--seed`` / ``--*-seed`` is in ``[0, 2**63 - 1]``, ``--threads`` within the machine,
  ``--K``, ``--r``, ``--heads``, ``--ffn-width``, ``--max-len``, ``--contexts``, ``--seqs`` ... positive and
  bounded). A violation is one usage line naming the flag and exit status 2.
* :func:`int_arg` / :func:`float_arg` build explicit range-checked argparse types for any other flag.
* :func:`require_fits` compares a command's estimate of what it would build (bytes) with the memory limit
  (default :data:`DEFAULT_MAX_MEMORY_GB` GiB; raised by ``hmmtx --max-memory-gb N`` or ``HMMTX_MAX_MEMORY_GB``) and
  refuses, in one line giving the estimate and the limit, what cannot fit.

This module imports neither torch nor numpy (``hmmtx --help`` stays fast).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from typing import Any, Callable

from hmm.errors import HmmtxError

#: Largest seed accepted anywhere (numpy SeedSequence and torch.manual_seed both take it).
SEED_MAX = 2**63 - 1
INT64_MAX = 2**63 - 1
#: Memory limit for what one command may build (GiB), unless raised.
DEFAULT_MAX_MEMORY_GB = 8.0

_INT = re.compile(r"[+-]?[0-9]{1,24}")


def _max_threads() -> int:
    return max(8, 4 * (os.cpu_count() or 1))


#: Ranges by argparse ``dest`` (inclusive; None = unbounded on that side). A flag of one of these names gets the
#: range automatically through :func:`harden_parser`; the same name means the same thing in every command.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, SEED_MAX),
    "threads": (1, None),  # upper bound from the machine, see _range()
    "K": (1, 4096),
    "r": (1, 1024),
    "r_max": (1, 4096),
    "heads": (1, 64),
    "ffn_width": (1, 2**24),
    "max_len": (0, 2**24),
    "prefix": (0, 2**24),
    "contexts": (1, 2**31),
    "seqs": (1, 2**31),
    "sequences": (1, 2**31),
    "perms": (1, 2**20),
    "length": (1, 2**31),
    "steps": (1, 2**31),
    "n_layers": (1, 1024),
    "layers": (1, 1024),
    "demos": (0, 2**20),
    "demo_len": (1, 2**24),
    "demo_length": (1, 2**24),
    "test_len": (1, 2**24),
    "num_tasks": (1, 2**16),
    "tasks_count": (1, 2**16),
    "states": (1, 2**16),
    "num_states": (1, 2**16),
    "obs": (1, 2**16),
    "num_obs": (1, 2**16),
    "vocab": (1, 2**16),
    "rows": (1, 2**31),
    "max_rows": (1, 2**31),
    "max_cols": (1, 2**31),
    "max_lag": (0, 2**40),
    "num_buckets": (1, 2**20),
    "max_distance": (1, 2**40),
    "gram_max_heads": (0, 4096),
    "lr": (0.0, 1e3),
}


def _range(dest: str) -> tuple[float | None, float | None] | None:
    if dest == "threads":
        return (1, _max_threads())
    if dest in RANGES:
        return RANGES[dest]
    if dest.endswith("_seed"):
        return RANGES["seed"]
    return None


def _bounds_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo:g}, {hi:g}]" if isinstance(lo, float) or isinstance(hi, float) else f"in [{lo}, {hi}]"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return "a number"


def _clip(text: str, n: int = 30) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def int_arg(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: a plain decimal integer in ``[lo, hi]`` (and within int64)."""
    lo_ = -INT64_MAX - 1 if lo is None else int(lo)
    hi_ = INT64_MAX if hi is None else int(hi)

    def parse(text: str) -> int:
        s = str(text).strip()
        if not _INT.fullmatch(s):
            if re.fullmatch(r"[+-]?[0-9]+", s):
                raise argparse.ArgumentTypeError(f"{_clip(s)} is far too large ({len(s.lstrip('+-'))} digits); "
                                                 f"must be an integer {_bounds_text(lo, hi)}")
            raise argparse.ArgumentTypeError(f"{_clip(s)!r} is not an integer")
        v = int(s)
        if not lo_ <= v <= hi_:
            raise argparse.ArgumentTypeError(f"{_clip(s)} is out of range: must be an integer {_bounds_text(lo, hi)}")
        return v

    parse.__name__ = "int"
    parse._hmmtx_checked = True  # type: ignore[attr-defined]
    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a usage error, i.e. one line and exit 2, otherwise)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float in ``[lo, hi]`` (``lo_open`` / ``hi_open`` exclude the ends)."""

    def parse(text: str) -> float:
        s = str(text).strip()
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_clip(s)!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{_clip(s)} is not a finite number (overflows float64)")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"{_clip(s)} is out of range: must be {'>' if lo_open else '>='} {lo:g}"
                                             + (f" and {'<' if hi_open else '<='} {hi:g}" if hi is not None else ""))
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise argparse.ArgumentTypeError(f"{_clip(s)} is out of range: must be {'<' if hi_open else '<='} {hi:g}"
                                             + (f" and {'>' if lo_open else '>='} {lo:g}" if lo is not None else ""))
        return v

    parse.__name__ = "float"
    parse._hmmtx_checked = True  # type: ignore[attr-defined]
    return parse


def seed_arg(text: str) -> int:
    """argparse type of every seed: an integer in ``[0, 2**63 - 1]``."""
    return int_arg(0, SEED_MAX)(text)


def harden_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Replace plain ``int`` / ``float`` types of ``parser`` (and its sub-parsers) by checked ones (see module
    docstring). Types that are already custom callables are kept: they are the command's own validation."""
    kinds = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                harden_parser(sub)
            continue
        if action.dest in OUTPUTS:  # metavar DIR / FOLDER marks a folder output (e.g. probe --plot DIR)
            kinds[action.dest] = "folder" if str(action.metavar or "").upper() in ("DIR", "FOLDER") else OUTPUTS[action.dest]
        rng = _range(action.dest)
        if action.type is int:
            action.type = int_arg(*(rng if rng else (None, None)))  # type: ignore[arg-type]
        elif action.type is float:
            action.type = float_arg(*(rng if rng else (None, None)))
        elif rng is not None and callable(action.type) and not getattr(action.type, "_hmmtx_checked", False):
            action.type = _with_range(action.type, *rng)  # a command's own type still gets the shared range
    if any(OUTPUTS[d] != k for d, k in kinds.items()) and parser.get_default("_outputs") is None:
        parser.set_defaults(_outputs={**OUTPUTS, **kinds})
    return parser


def _with_range(parse: Callable[[str], Any], lo: float | None, hi: float | None) -> Callable[[str], Any]:
    """Wrap a command's own argparse type: its numeric results must also lie in ``[lo, hi]``."""

    def checked(text: str) -> Any:
        value = parse(text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise argparse.ArgumentTypeError(f"{_clip(str(text))} is out of range: must be {_bounds_text(lo, hi)}")
        return value

    checked.__name__ = getattr(parse, "__name__", "value")
    checked._hmmtx_checked = True  # type: ignore[attr-defined]
    return checked


def check_int(value: Any, flag: str, lo: int | None = None, hi: int | None = None) -> int:
    """Range check of an already-parsed integer (HmmtxError naming ``flag``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise HmmtxError(f"{flag}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise HmmtxError(f"{flag}: {value} is out of range, must be an integer {_bounds_text(lo, hi)}")
    return value


# ---------------------------------------------------------------------------------------------- paths
#: Output flags (argparse dest -> "file" or "folder") checked before any work by :func:`check_paths`. A flag with
#: ``metavar="DIR"`` is a folder (e.g. probe's ``--plot DIR``, experiment grid's ``--out DIR``); a command can also
#: override with ``parser.set_defaults(_outputs={...})``.
OUTPUTS = {"json": "file", "out": "file", "plot": "file", "plots": "folder", "reproducers": "folder",
           "out_dir": "folder"}
#: Input-file flags an output must never equal (extend with ``parser.set_defaults(_inputs=(...))``).
INPUTS = ("hmm", "tasks", "plugin")


def check_paths(ns: argparse.Namespace) -> None:
    """Refuse unusable output paths before the command does any work: an empty path, a missing folder, a device
    node, a symbolic link, an existing non-folder for a folder output, or an output equal to an input file (one
    HmmtxError naming the flag). Called by ``verify.cli`` for every command and by ``hmmtx run/inspect``."""
    from hmm.io import check_output_folder, check_output_path

    outputs = getattr(ns, "_outputs", None) or OUTPUTS
    inputs = []
    for d in (*INPUTS, *(getattr(ns, "_inputs", None) or ())):
        v = getattr(ns, d, None)
        inputs += list(v) if isinstance(v, (list, tuple)) else [v]
    inputs = [x for x in inputs if isinstance(x, str) and x.strip()]
    for dest, kind in outputs.items():
        value = getattr(ns, dest, None)
        if value is None or not isinstance(value, str):
            continue
        flag = "--" + dest.replace("_", "-")
        if kind == "folder":
            check_output_folder(value, flag)
        else:
            check_output_path(value, flag, inputs)
    for dest in (*INPUTS, *(getattr(ns, "_inputs", None) or ())):
        value = getattr(ns, dest, None)
        if isinstance(value, str) and not value.strip():
            raise HmmtxError(f"--{dest.replace('_', '-')}: the input path is empty")


# ---------------------------------------------------------------------------------------------- size budget
def max_memory_bytes() -> int:
    """The memory limit of one command (HMMTX_MAX_MEMORY_GB, set by ``hmmtx --max-memory-gb``; default 8 GiB)."""
    from hmm.io import env_size_limit

    return env_size_limit("HMMTX_MAX_MEMORY_GB", DEFAULT_MAX_MEMORY_GB, "GiB", 2**30, 2.0**20)


def fmt_bytes(n: float) -> str:
    if not math.isfinite(n):
        return "an unbounded amount"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 1e6 else f"{v:.2e} {unit}"
    return f"{int(n)} bytes"


def require_fits(what: str, nbytes: float, hint: str = "") -> None:
    """Refuse (HmmtxError, one line) when the estimated memory ``nbytes`` of ``what`` exceeds the limit; the
    message gives the estimate, the limit, what to reduce (``hint``) and how to raise the limit."""
    limit = max_memory_bytes()
    if not (nbytes <= limit):  # also catches NaN
        raise HmmtxError(f"{what} would need about {fmt_bytes(nbytes)} (estimate), over the memory limit of "
                         f"{fmt_bytes(limit)}" + (f"; {hint}" if hint else "")
                         + "; raise the limit with hmmtx --max-memory-gb N")


__all__ = [
    "SEED_MAX",
    "RANGES",
    "DEFAULT_MAX_MEMORY_GB",
    "int_arg",
    "float_arg",
    "seed_arg",
    "harden_parser",
    "check_int",
    "OUTPUTS",
    "INPUTS",
    "check_paths",
    "max_memory_bytes",
    "fmt_bytes",
    "require_fits",
]
