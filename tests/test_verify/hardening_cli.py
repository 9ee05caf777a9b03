"""Helpers of the hardening tests (issue 12): run the CLI as a subprocess and check the bad-input contract.

The contract (README, docs/robustness.md): exit status 2, exactly one line on stderr naming the culprit, no
traceback, no temporary file left, no existing file changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("HMMTX_TRACEBACK", "HMMTX_WARNINGS", "HMMTX_MAX_MEMORY_GB", "HMMTX_MAX_INPUT_MB"):
        env.pop(k, None)
    env.update(extra)
    return env


def hmmtx(args: Sequence[str], cwd: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    """``python -m verify.cli ARGS`` in ``cwd`` (the installed ``hmmtx`` entry point runs the same main())."""
    return subprocess.run([sys.executable, "-m", "verify.cli", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def hmmtx_many(variants: Sequence[Sequence[str]], cwd: Path, workers: int = 3) -> list[subprocess.CompletedProcess]:
    """Several invocations, a few at a time (each starts Python, most start torch)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: hmmtx(a, cwd), variants))


def assert_refused(res: subprocess.CompletedProcess, *culprits: str, status: int = 2) -> str:
    """Exit ``status`` (2), exactly one stderr line containing every culprit string, no traceback."""
    err = res.stderr
    lines = err.strip().splitlines()
    where = f"args={res.args[3:]!r}\nstderr={err[-2000:]!r}"
    assert res.returncode == status, f"exit {res.returncode}, expected {status}; {where}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}; {where}"
    assert "Traceback" not in err, where
    assert lines[0].startswith("hmmtx: "), where
    for c in culprits:
        assert c in lines[0], f"{c!r} not named; {where}"
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (not following links) -> (kind, size, sha256)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = ("link", os.readlink(p), None)
        elif p.is_file():
            out[str(p.relative_to(folder))] = ("file", p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        elif p.is_dir():
            out[str(p.relative_to(folder))] = ("dir", None, None)
    return out


def assert_untouched(before: dict, folder: Path) -> None:
    """No file changed, none added (in particular no ``.NAME.XXXX.tmp``), none removed."""
    after = snapshot(folder)
    assert after == before, (f"files changed: added {sorted(set(after) - set(before))}, removed "
                             f"{sorted(set(before) - set(after))}, modified "
                             f"{sorted(k for k in set(after) & set(before) if after[k] != before[k])}")


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _live_processes_where(field: int, value: int) -> list[int]:
    """Live (non-zombie) processes whose /proc stat field number ``field`` (counted after the command name:
    1 = parent pid, 3 = session id) equals ``value``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[field]) == value and fields[0] != "Z":
            found.append(int(d.name))
    return found


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc; zombies excluded)."""
    return _live_processes_where(1, pid)


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` (a child started with start_new_session=True)."""
    return _live_processes_where(3, sid)


_DRIVER = r"""
import contextlib, io, json, os, sys, traceback
from verify.cli import main
env = dict(os.environ)
out = []
for argv in json.loads(sys.argv[1]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
    os.environ.clear(); os.environ.update(env)
    out.append({"args": argv, "returncode": rc, "stdout": o.getvalue(), "stderr": e.getvalue()})
print(json.dumps(out))
"""


def hmmtx_batch(variants: Sequence[Sequence[str]], cwd: Path, timeout: float = 300,
                **env: str) -> list[subprocess.CompletedProcess]:
    """Several invocations of the CLI's ``main()`` in ONE fresh subprocess (torch is started once, not per
    variant): each gets its own captured stdout/stderr and exit status; an exception escaping ``main()`` is
    printed as a traceback into that variant's stderr, so :func:`assert_refused` catches it. Used for variants
    that import torch; the cheap ones and the signal tests run one real process each (:func:`hmmtx`)."""
    res = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([list(v) for v in variants])], cwd=cwd,
                         env=cli_env(**env), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return [subprocess.CompletedProcess(["python", "-m", "verify.cli", *d["args"]], d["returncode"], d["stdout"],
                                        d["stderr"]) for d in json.loads(res.stdout.strip().splitlines()[-1])]
