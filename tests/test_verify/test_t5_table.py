"""T5 relative-position buckets (Wang & E Table 1) against an independent re-implementation of T5's code logic."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.memory.t5 import relative_position_bucket, t5_table
from hmm.errors import HmmtxError
from verify.cli import main


def t5_reference(relative_position: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """Transcription of T5's ``_relative_position_bucket`` (mesh-tensorflow / Hugging Face) in plain Python floats.

    ``relative_position = key - query``; T5 negates it, so ``n`` is the lag for keys in the past.
    """
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0) * num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + int(
        math.log(max(n, 1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    )
    val_if_large = min(val_if_large, num_buckets - 1)
    return ret + (n if is_small else val_if_large)


@pytest.mark.parametrize("nb,md,bi", [(32, 128, False), (32, 128, True), (16, 64, False), (64, 512, False),
                                      (8, 20, True), (128, 1000, False)])
def test_bucket_matches_t5_code_on_many_lags(nb: int, md: int, bi: bool) -> None:
    lags = range(-300 if bi else 0, 5000)
    bad = [n for n in lags if relative_position_bucket(n, nb, md, bi) != t5_reference(-n, bi, nb, md)]
    assert bad == []


@given(n=st.integers(0, 10**6), nb=st.sampled_from([4, 8, 16, 32, 64]), extra=st.integers(1, 2000))
@settings(max_examples=60)
def test_bucket_matches_t5_code_property(n: int, nb: int, extra: int) -> None:
    md = nb // 2 + extra
    assert relative_position_bucket(n, nb, md) == t5_reference(-n, False, nb, md)


def test_default_table_lin_then_log() -> None:
    rows = t5_table()
    assert [r.lag for r in rows] == list(range(129))
    assert [r.bucket for r in rows[:16]] == list(range(16))  # exact region: lin-type, -r(n) = -n
    assert all(r.regime == "exact (lin)" for r in rows[:16]) and rows[16].regime == "log"
    assert rows[16].bucket == 16 and rows[32].bucket == 21 and rows[64].bucket == 26 and rows[127].bucket == 31
    assert rows[128].bucket == 31 and rows[128].regime == "capped" and rows[128].bias == -31
    b = [r.bucket for r in rows]
    assert all(x <= y for x, y in zip(b, b[1:]))  # monotone
    # log region: bucket - 16 = floor(16 log(n/16) / log 8)
    for r in rows[16:128]:
        assert r.bucket == min(31, 16 + math.floor(16 * math.log(r.lag / 16) / math.log(8) + 1e-12))


def test_invalid_configs_raise() -> None:
    with pytest.raises(HmmtxError, match="num_buckets"):
        relative_position_bucket(3, 1, 128)
    with pytest.raises(HmmtxError, match="max_distance"):
        relative_position_bucket(3, 32, 16)
    with pytest.raises(HmmtxError, match="max_lag"):
        t5_table(-1)


def test_cli_writes_json_and_prints_table(tmp_path, capsys) -> None:
    out = tmp_path / "t5.json"
    assert main(["t5-table", "--json", str(out), "--max-lag", "40"]) == 0
    data = json.loads(out.read_text())
    assert data["num_buckets"] == 32 and data["max_distance"] == 128 and len(data["rows"]) == 41
    assert data["rows"][32] == {"lag": 32, "bucket": 21, "bias": -21, "regime": "log"}
    assert "T5 relative-position buckets" in capsys.readouterr().out
    assert main(["t5-table", "--num-buckets", "16", "--max-distance", "64", "--quiet", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][8]["regime"] == "log"


@pytest.mark.parametrize("argv", [["--num-buckets", "1"], ["--max-distance", "8"], ["--max-lag", "-3"],
                                  ["--num-buckets", "x"], ["--json", "/nonexistent/dir/t.json"]])
def test_cli_bad_arguments_exit_2_with_one_line(argv, capsys) -> None:
    try:
        code = main(["t5-table", "--quiet", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hmmtx: error:") and "\n" not in err
