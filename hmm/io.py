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
import stat
import sys
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture
from hmm.model import HMM

_HMM_KEYS = {"initial_probs", "transition_matrix", "emission_probs"}
_INT_TOKEN = re.compile(r"-?[0-9]+")
_HMM_OPTIONAL = {"name", "description"}


# ---------------------------------------------------------------------------------------------- outputs
def check_output_path(path: Any, flag: str = "output", inputs: Sequence[Any] = ()) -> Path:
    """Refuse, before any work, an output path that cannot be written safely (one HmmtxError naming ``flag``).

    Refused: an empty path; a path whose folder does not exist; an existing folder, device node, FIFO or socket
    (only regular files are ever replaced); a symbolic link (never followed to replace its target); a path that
    is one of ``inputs`` (the same file under another name counts)."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(text, str) or not text.strip():
        raise HmmtxError(f"{flag}: the output path is empty")
    p = Path(text)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise HmmtxError(f"{flag} {text}: cannot write, folder {folder} does not exist")
    _refuse_special(p, flag)
    for other in inputs:
        if other is None or (isinstance(other, str) and not other.strip()):
            continue
        if _same_file(p, Path(other)):
            raise HmmtxError(f"{flag} {text}: is the input file {other}; refusing to overwrite an input")
    return p


def check_output_folder(path: Any, flag: str = "output folder") -> Path:
    """Refuse an output folder that cannot be used: empty path, an existing non-folder, a symbolic link, a missing
    parent folder, or a folder this user cannot write into."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(text, str) or not text.strip():
        raise HmmtxError(f"{flag}: the output folder path is empty")
    p = Path(text)
    if p.is_symlink():
        raise HmmtxError(f"{flag} {text}: is a symbolic link; refusing to write through it")
    if p.exists():
        if not p.is_dir():
            raise HmmtxError(f"{flag} {text}: exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise HmmtxError(f"{flag} {text}: folder is not writable")
        return p
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise HmmtxError(f"{flag} {text}: cannot create it, folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HmmtxError(f"{flag} {text}: cannot create it, folder {parent} is not writable")
    return p


def _refuse_special(p: Path, flag: str) -> None:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HmmtxError(f"{flag} {p}: cannot write ({exc.strerror or exc})") from None
    if stat.S_ISLNK(st.st_mode):
        raise HmmtxError(f"{flag} {p}: is a symbolic link; refusing to replace it or write through it")
    if stat.S_ISDIR(st.st_mode):
        raise HmmtxError(f"{flag} {p}: is a folder, expected a file path")
    if not stat.S_ISREG(st.st_mode):
        raise HmmtxError(f"{flag} {p}: is a device or special file, not a regular file; refusing to replace it")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _tmp_file(path: Path, folder: Path) -> tuple[int, str]:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise HmmtxError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return fd, tmp


def _fill_tmp(fd: int, tmp: str, data: bytes) -> None:
    # mkstemp creates the file with mode 0600; give it the mode an ordinary open() would (0666 less umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _unlink_quietly(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Only regular files are replaced: an empty path, a symbolic link, a folder or a device node is refused with a
    HmmtxError (see :func:`check_output_path`). The temporary file is removed on ANY exception, including
    KeyboardInterrupt and the SIGTERM the CLI turns into an exception, so an interrupted write leaves nothing."""
    path = check_output_path(path, "output")
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = _tmp_file(path, folder)
    try:
        _fill_tmp(fd, tmp, data)
        _refuse_special(path, "output")  # re-check just before the rename (the place may have changed meanwhile)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise HmmtxError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def write_file_set(folder: str | os.PathLike, files: dict[str, bytes], flag: str = "output folder") -> list[Path]:
    """Write several files into ``folder`` all-or-nothing (e.g. a set of plots).

    Every file is first written to a temporary file beside its target; only when all are complete are they renamed
    into place. On any failure or interrupt the temporaries are removed (and the folder too when this call created
    it and it is empty), so a full disk never leaves part of a set. Names must be plain file names."""
    root = check_output_folder(folder, flag)
    for name in files:
        if not name or Path(name).name != name:
            raise HmmtxError(f"{flag}: {name!r} is not a plain file name")
    created = not root.exists()
    try:
        root.mkdir(parents=False, exist_ok=True)
    except OSError as exc:
        raise HmmtxError(f"{flag} {root}: cannot create the folder ({exc.strerror or exc})") from None
    targets = [check_output_path(root / name, flag) for name in files]
    temps: list[str] = []
    done = False
    try:
        for target, data in zip(targets, files.values()):
            fd, tmp = _tmp_file(target, root)
            temps.append(tmp)
            _fill_tmp(fd, tmp, data)
        for target, tmp in zip(targets, temps):
            os.replace(tmp, target)
        done = True
    except OSError as exc:
        raise HmmtxError(f"{flag} {root}: cannot write the files ({exc.strerror or exc}); none was written") from None
    finally:
        if not done:
            for tmp in temps:
                _unlink_quietly(tmp)
            if created:
                try:
                    root.rmdir()
                except OSError:
                    pass
    return targets


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


def fraction_full(value: Fraction) -> str:
    """The exact value written in full (``"p/q"``, ``"p"`` for integers), however many digits: the form of exact
    values in ``hmmtx run --json``. Same as :func:`fraction_to_str`; read back with :func:`parse_fraction_full`."""
    return fraction_to_str(value)


def parse_fraction_full(text: str) -> Fraction:
    """Inverse of :func:`fraction_full` (any number of digits)."""
    try:
        with unlimited_int_digits():
            return Fraction(str(text))
    except (ValueError, ZeroDivisionError) as exc:
        raise HmmtxError(f"not an exact rational 'p/q': {str(text)[:40]!r} ({exc})") from None


def _digits(n: int) -> int:
    n = abs(int(n))
    if n < 10:
        return 1
    d = int(n.bit_length() * math.log10(2))  # within one of the true count; fix up without str()
    return d + 1 if n >= 10**d else d


# ---------------------------------------------------------------------------------------------- JSON files
#: Input limits (the input-reading layer). Files larger than the byte limit are refused (raise it with the
#: environment variable HMMTX_MAX_INPUT_MB, or ``hmmtx --max-input-mb N``); JSON nesting deeper than
#: MAX_JSON_DEPTH and integers longer than MAX_INT_DIGITS digits are refused (NaN and infinite numbers are refused
#: by the array checks, which name the entry).
DEFAULT_MAX_INPUT_MB = 64
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 64


def env_size_limit(name: str, default: float, unit: str, unit_bytes: int, cap: float) -> int:
    """A size limit in bytes from the environment variable ``name`` (a positive number of ``unit``s, at most
    ``cap`` of them; ``default`` when unset); HmmtxError naming the variable when it is not such a number."""
    text = os.environ.get(name, "").strip()
    try:
        n = float(text) if text else default
    except ValueError:
        raise HmmtxError(f"{name}: {text!r} is not a number of {unit}") from None
    if not (math.isfinite(n) and n > 0):
        raise HmmtxError(f"{name}: must be a positive number of {unit}, got {text!r}")
    return int(min(n, cap) * unit_bytes)


def max_input_bytes() -> int:
    """The input-file size limit in bytes (HMMTX_MAX_INPUT_MB, default 64 MiB)."""
    return env_size_limit("HMMTX_MAX_INPUT_MB", DEFAULT_MAX_INPUT_MB, "MiB", 2**20, 2.0**40)


def read_input_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """Read at most the input limit from a regular file (or a pipe); missing files, folders, devices (e.g.
    ``/dev/zero``) and files over the limit raise HmmtxError naming the file. Never reads without bound."""
    text = os.fspath(path)
    if not str(text).strip():
        raise HmmtxError(f"{what}: the input path is empty")
    path = Path(path)
    limit = max_input_bytes()
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                raise HmmtxError(f"{path}: is a device or socket, not a {what}")
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise HmmtxError(_too_large(path, what, st.st_size, limit))
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise HmmtxError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise HmmtxError(f"{path}: is a directory, expected a {what}") from None
    except OSError as exc:
        raise HmmtxError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise HmmtxError(_too_large(path, what, None, limit))
    return data


def _too_large(path: Path, what: str, size: int | None, limit: int) -> str:
    got = f"{size / 2**20:.1f} MiB" if size is not None else "more than that"
    return (f"{path}: {what} is larger than the input limit of {limit / 2**20:g} MiB ({got}); raise it with "
            f"HMMTX_MAX_INPUT_MB or hmmtx --max-input-mb")


def _json_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _JsonValueError(f"an integer with {digits} digits (more than {MAX_INT_DIGITS})")
    return int(text)


class _JsonValueError(Exception):
    """A JSON value outside what hmmtx reads (raised inside the decoder hooks)."""


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _check_depth(obj: Any, path: Path) -> None:
    """Iterative walk: nesting deeper than MAX_JSON_DEPTH is refused (no input format needs more than 4)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise HmmtxError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_json_bytes(data: bytes, path: Any, what: str = "file") -> Any:
    """Decode JSON with the input limits (depth, integer digits, finite floats); HmmtxError names ``path``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HmmtxError(f"{path}: cannot read {what} (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    try:
        # NaN / Infinity / 1e400 (-> inf) are left to the array checks, which name the key and entry
        obj = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise HmmtxError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _JsonValueError as exc:
        raise HmmtxError(f"{path}: {exc}") from None
    except RecursionError:
        raise HmmtxError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_depth(obj, Path(str(path)))
    return obj


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file through the input layer: missing, unreadable, oversized, endless (``/dev/zero``), too
    deeply nested or malformed files, and numbers hmmtx cannot represent, raise HmmtxError naming the file."""
    data = read_input_bytes(path, what)
    return parse_json_bytes(data, Path(path), what)


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
        v = int(p) if len(p) <= 24 else 2**63
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
        if len(p) > 24 and _INT_TOKEN.fullmatch(p):
            raise HmmtxError(f"{name}: {_clip(p)} is far too large ({len(p)} digits)")
        try:
            v = int(p)
        except ValueError:
            raise HmmtxError(f"{name}: {_clip(p)!r} is not an integer") from None
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
    "fraction_full",
    "parse_fraction_full",
    "fraction_to_str",
    "fraction_display",
    "read_json",
    "read_input_bytes",
    "parse_json_bytes",
    "env_size_limit",
    "max_input_bytes",
    "check_output_path",
    "check_output_folder",
    "write_file_set",
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
