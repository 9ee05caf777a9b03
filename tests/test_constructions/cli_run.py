"""Shared by the construction tests that run ``hmmtx run`` in-process on the ill-conditioned regression inputs
(copies of ``shared/cases/ill-conditioned`` in ``tests/data/ill_conditioned``)."""

from __future__ import annotations

import json
from pathlib import Path

from verify.cli import main

ILL_DATA = Path(__file__).resolve().parents[1] / "data" / "ill_conditioned"


def run_json(tmp_path: Path, *args: str) -> dict:
    """``hmmtx run ARGS --json OUT``: the exit status is 0, the report is strict JSON (no NaN), and the measured error
    is within the claimed bound; returns the report."""
    out = tmp_path / "out.json"
    rc = main(["run", *args, "--json", str(out)])
    data = json.loads(out.read_text())  # strict JSON: no NaN
    assert rc == 0, data["bound"]["notes"]
    assert data["within_bound"] and data["max_abs_error"] <= data["claimed_bound"]
    return data
