"""Files and command-line values: HMM / mixture JSON, token strings, atomic writes, exact-number formatting.

File formats (SPEC §2):

* HMM: ``{"initial_probs": [...], "transition_matrix": [[...]], "emission_probs": [[...]]}``; entries are numbers
  or strings ``"p/q"`` (exact rationals). An HMM is exact when any entry is a string (plain ints and floats give a
  float HMM). Optional ``"name"``.
* Mixture: ``{"task_prior": [...], "tasks": [HMM, ...]}``.
* Tokens: ``"0 1 2 ..."`` (spaces or commas); contexts ``"0 1 2 | 1 0 | 2"`` with ``|`` = SEP.

Every problem raises :class:`~hmm.errors.HmmtxError` naming the file, key or token.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture
from hmm.model import HMM

_HMM_KEYS = {"initial_probs", "transition_matrix", "emission_probs"}
_INT_TOKEN = re.compile(r"-?[0-9]+")
_HMM_OPTIONAL = {"name", "description"}


# ---------------------------------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise HmmtxError(f"{path}: cannot write, folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise HmmtxError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        # mkstemp creates the file with mode 0600; give it the mode an ordinary open() would (0666 less umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise HmmtxError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    with unlimited_int_digits():
        text = json.dumps(obj, indent=indent, allow_nan=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Fraction):
        return fraction_to_str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


# ---------------------------------------------------------------------------------------------- exact numbers
@contextmanager
def unlimited_int_digits() -> Iterator[None]:
    """Lift Python's 4300-digit limit on int <-> str conversion for the duration (exact results get that long)."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


def fraction_to_str(value: Fraction) -> str:
    """Full ``"p/q"`` string of an exact value, however many digits (used for JSON)."""
    with unlimited_int_digits():
        return str(Fraction(value))


def fraction_display(value: Fraction, max_digits: int = 24) -> str:
    """Short display: ``"p/q"`` when both fit in ``max_digits`` digits, else the float value and digit counts."""
    value = Fraction(value)
    nd = _digits(value.numerator)
    dd = _digits(value.denominator)
    if nd <= max_digits and dd <= max_digits:
        return str(value)
    return f"{float(value):.6g} ({nd}/{dd} digits)"


def _digits(n: int) -> int:
    n = abs(int(n))
    if n < 10:
        return 1
    d = int(n.bit_length() * math.log10(2))  # within one of the true count; fix up without str()
    return d + 1 if n >= 10**d else d


# ---------------------------------------------------------------------------------------------- JSON files
def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file; missing, unreadable or malformed files raise HmmtxError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HmmtxError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise HmmtxError(f"{path}: is a directory, expected a JSON {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HmmtxError(f"{path}: cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HmmtxError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def hmm_from_dict(data: Any, where: str = "hmm") -> HMM:
    """Build an HMM from the JSON structure; errors name ``where`` and the key."""
    if not isinstance(data, dict):
        raise HmmtxError(f"{where}: expected a JSON object with keys {sorted(_HMM_KEYS)}, got {type(data).__name__}")
    missing = _HMM_KEYS - data.keys()
    if missing:
        raise HmmtxError(f"{where}: missing key(s) {sorted(missing)}")
    unknown = data.keys() - _HMM_KEYS - _HMM_OPTIONAL
    if unknown:
        raise HmmtxError(f"{where}: unknown key(s) {sorted(unknown)}")
    try:
        return HMM.from_arrays(
            data["initial_probs"], data["transition_matrix"], data["emission_probs"], name=str(data.get("name", ""))
        )
    except HmmtxError as exc:
        raise HmmtxError(f"{where}: {exc}") from None


def mixture_from_dict(data: Any, where: str = "tasks") -> HMMMixture:
    if not isinstance(data, dict) or "tasks" not in data or "task_prior" not in data:
        raise HmmtxError(f"{where}: expected a JSON object with keys 'task_prior' and 'tasks'")
    unknown = data.keys() - {"task_prior", "tasks", "name", "description"}
    if unknown:
        raise HmmtxError(f"{where}: unknown key(s) {sorted(unknown)}")
    if not isinstance(data["tasks"], list) or not data["tasks"]:
        raise HmmtxError(f"{where}: 'tasks' must be a non-empty list of HMMs")
    tasks = [hmm_from_dict(t, f"{where}: tasks[{k}]") for k, t in enumerate(data["tasks"])]
    try:
        return HMMMixture.from_arrays(data["task_prior"], tasks)
    except HmmtxError as exc:
        raise HmmtxError(f"{where}: {exc}") from None


def load_hmm(path: str | os.PathLike) -> HMM:
    return hmm_from_dict(read_json(path, "HMM file"), where=str(path))


def load_mixture(path: str | os.PathLike) -> HMMMixture:
    return mixture_from_dict(read_json(path, "task file"), where=str(path))


def save_hmm(hmm: HMM, path: str | os.PathLike, exact: bool | None = None) -> Path:
    return atomic_write_json(path, hmm.to_dict(exact))


def save_mixture(mixture: HMMMixture, path: str | os.PathLike, exact: bool | None = None) -> Path:
    return atomic_write_json(path, mixture.to_dict(exact))


# ---------------------------------------------------------------------------------------------- tokens
def parse_tokens(text: str, name: str = "--tokens") -> np.ndarray:
    """``"0 1 2"`` or ``"0,1,2"`` -> int64 array (T,). Rejects ``|`` (that is a multi-task context)."""
    if "|" in text:
        raise HmmtxError(f"{name}: '|' separates demonstrations; use a task file (--tasks) for in-context input")
    parts = text.replace(",", " ").split()
    if not parts:
        raise HmmtxError(f"{name}: the sequence is empty (need at least one token)")
    out = []
    for i, p in enumerate(parts):
        # plain ASCII integers only (int() would also take "1_0", "+1" or non-ASCII digits)
        if not _INT_TOKEN.fullmatch(p):
            raise HmmtxError(f"{name}: {p!r} at position {i} is not an integer token id")
        v = int(p)
        if not -(2**63) <= v < 2**63:
            raise HmmtxError(f"{name}: token {p} at position {i} is out of range (far beyond any vocabulary)")
        out.append(v)
    return np.array(out, dtype=np.int64)


def parse_int_list(text: str, name: str, minimum: int | None = None, unique: bool = False) -> list[int]:
    """``"1,2 4"`` -> ``[1, 2, 4]`` (commas and/or spaces); errors name ``name`` and the offending part."""
    parts = str(text).replace(",", " ").split()
    if not parts:
        raise HmmtxError(f"{name}: expected a list of integers separated by commas or spaces, got {text!r}")
    out = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            raise HmmtxError(f"{name}: {p!r} is not an integer") from None
        if minimum is not None and v < minimum:
            raise HmmtxError(f"{name}: values must be >= {minimum}, got {v}")
        out.append(v)
    if unique and len(set(out)) != len(out):
        raise HmmtxError(f"{name}: duplicate values in {text!r}")
    return out


def parse_context(text: str, name: str = "--tokens") -> list[np.ndarray]:
    """``"0 1 2 | 1 0 | 2"`` -> list of int64 segments (demonstrations then the test segment)."""
    if not text.replace("|", " ").replace(",", " ").split():
        raise HmmtxError(f"{name}: the sequence is empty (need at least one token)")
    segs = text.split("|")
    out = []
    for i, s in enumerate(segs):
        if not s.replace(",", " ").split():
            raise HmmtxError(f"{name}: segment {i} is empty (two '|' in a row, or '|' at an end)")
        out.append(parse_tokens(s, name=f"{name} segment {i}"))
    return out


__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "unlimited_int_digits",
    "fraction_to_str",
    "fraction_display",
    "read_json",
    "hmm_from_dict",
    "mixture_from_dict",
    "load_hmm",
    "load_mixture",
    "save_hmm",
    "save_mixture",
    "parse_tokens",
    "parse_int_list",
    "parse_context",
]
