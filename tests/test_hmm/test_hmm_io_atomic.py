"""Atomic writes: complete file or nothing, ordinary permissions, clear errors."""

import os
import stat

import pytest

from hmm.errors import HmmtxError
from hmm.io import atomic_write_json, atomic_write_text, read_json


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "out.txt", "hello")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert path.read_text() == "hello"


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_atomic_write_into_missing_folder_names_it(tmp_path):
    with pytest.raises(HmmtxError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.txt", "data")


def test_failed_json_serialisation_keeps_old_file(tmp_path):
    target = tmp_path / "keep.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"bad": float("nan")})  # allow_nan=False refuses before anything is written
    assert read_json(target) == {"ok": True}
