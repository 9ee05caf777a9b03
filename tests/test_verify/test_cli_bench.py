"""``hmmtx bench``: the target registry (auto-discovery) and a tiny ``bench filter`` run (agreement, JSON, errors).

Timings are not asserted (shared machines make them flaky); the >= 10x figure is measured by ``hmmtx bench filter``
and recorded in docs/performance.md.
"""

from __future__ import annotations

import json
import sys

import pytest

import verify.benchmarks as benchmarks
from verify.cli import main


def _run(capsys, *argv):
    try:
        code = main(["bench", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_filter_target_small_workload(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    code, out, err = _run(capsys, "filter", "--sequences", "12", "--length", "9", "--states", "3", "--obs", "2",
                          "--repeats", "1", "--no-torch", "--json", str(out_json))
    assert code == 0, err
    assert "hmmlearn score (scaling), per sequence" in out and "speedup" in out and "OK" in out
    data = json.loads(out_json.read_text())
    assert data["benchmark"] == "filter" and data["workload"]["sequences"] == 12
    assert data["agreement"]["ok"] is True
    assert data["agreement"]["max_abs_loglik_diff"] <= 1e-9 and data["agreement"]["max_abs_filtered_diff"] <= 1e-12
    assert set(data["timings_s"]) >= {"numpy float64 (batched)", "hmmlearn score (log), per sequence"}
    assert data["speedup_vs_hmmlearn_per_sequence"] > 0
    assert data["machine"]["nproc"] >= 1 and data["machine"]["numpy"]


def test_classic_family_fixes_its_sizes(capsys):
    code, out, err = _run(capsys, "filter", "--sequences", "3", "--length", "5", "--family", "mess3", "--repeats", "1", "--no-torch")
    assert code == 0 and "S=3, V=3" in out


@pytest.mark.parametrize("argv, fragment", [
    (["filter", "--sequences", "0"], "--sequences: must be >= 1"),
    (["filter", "--length", "x"], "--length: 'x' is not an integer"),
    (["nope"], "invalid choice: 'nope'"),
])
def test_bad_arguments_one_line_exit_2(capsys, argv, fragment):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_bad_family_is_an_hmmtx_error(capsys):
    code, _, err = _run(capsys, "filter", "--family", "nope", "--sequences", "2", "--length", "2")
    assert code == 2 and err.count("\n") == 1 and "unknown HMM family 'nope'" in err


def test_targets_are_discovered_without_editing_the_registry(tmp_path, monkeypatch, capsys):
    """A new module dropped into the benchmarks package becomes `hmmtx bench <name>`."""
    pkg_dir = tmp_path / "extra"
    pkg_dir.mkdir()
    (pkg_dir / "toy_target.py").write_text(
        "def register(sub):\n"
        "    p = sub.add_parser('toy_target', help='toy')\n"
        "    p.set_defaults(func=lambda args: (print('toy ran'), 0)[1])\n"
    )
    (pkg_dir / "_private.py").write_text("raise RuntimeError('private modules are not imported')\n")
    monkeypatch.setattr(benchmarks, "__path__", [*benchmarks.__path__, str(pkg_dir)])
    monkeypatch.delitem(sys.modules, "verify.benchmarks.toy_target", raising=False)
    assert "toy_target" in benchmarks.discover() and "filter" in benchmarks.discover()
    assert "_private" not in benchmarks.discover()
    code, out, _ = _run(capsys, "toy_target")
    assert code == 0 and "toy ran" in out


def test_bench_without_target_prints_help(capsys):
    code, out, _ = _run(capsys)
    assert code == 2 and "TARGET" in out and "filter" in out


def test_scale_target_tiny_run_agrees_and_records(tmp_path, capsys, monkeypatch):
    """`bench scale` on tiny workloads: hmmtx rows and hmmlearn agree, a missing peer is skipped with a note."""
    import verify.benchmarks.scale as scale

    def missing(hmm, x):
        raise ImportError("no module", name="pomegranate")

    monkeypatch.setattr(scale, "pomegranate_impls", missing)
    out_json = tmp_path / "scale.json"
    code, out, err = _run(capsys, "scale", "--scale", "0.002", "--rounds", "2", "--rounds-large", "2",
                          "--peers", "hmmlearn,pomegranate",
                          "--json", str(out_json))
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["agreement_ok"] is True and [w["workload"]["name"] for w in data["workloads"]] == ["small", "large", "long"]
    for w in data["workloads"]:
        assert set(w["times_s"]) >= {"hmmtx fast (numba)", "hmmtx numpy streaming", "hmmlearn score(X, lengths) (scaling)"}
        assert all(len(v) == 2 for v in w["times_s"].values())
        assert w["ratios_peer_over_ours"]["hmmlearn"] > 0 and "pomegranate" not in w["ratios_peer_over_ours"]
        assert set(w["cpu_ratios_peer_over_ours"]) == {"hmmlearn"} and w["rounds"] == 2
        assert any("pomegranate skipped: not installed" in n for n in w["notes"])
        assert all(a["max_abs_diff"] <= 1e-10 for a in w["agreement"].values())
        assert w["floor"]["flops"] > 0 and w["traced_peak_bytes_fast"] >= 0
    assert data["machine"]["limits"]["matmul_flops_per_s_1thread"] > 0 and data["machine"]["numba"]
    assert "pomegranate skipped" in out and "no GPU used" in out


def test_scale_target_rejects_unknown_workload_and_peer(capsys):
    code, _, err = _run(capsys, "scale", "--workloads", "huge")
    assert code == 2 and "unknown workload 'huge'" in err
    code, _, err = _run(capsys, "scale", "--peers", "nope", "--scale", "0.001")
    assert code == 2 and "unknown peer 'nope'" in err


def test_h1_target_times_the_structured_executor(tmp_path, capsys):
    out_json = tmp_path / "h1.json"
    code, out, err = _run(capsys, "h1", "--states", "3", "--length", "20", "--repeats", "1", "--no-exact-reference",
                          "--json", str(out_json))
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["structured_max_abs_error_vs_float64_filter"] <= data["claimed_bound"]
    assert data["structured_vs_module_max_abs_diff"] <= 1e-12
    assert data["structured_over_numpy_filter"] > 0 and data["torch_threads"] == 1
    assert set(data["seconds_all_rounds"]) == {"structured", "numpy", "fast", "module"}


def test_scale_interleaved_rounds_and_budget():
    """Rounds interleave implementations; one over the time budget runs once; ratios are per-round medians."""
    import time

    from verify.benchmarks.scale import Impl, _ratios, interleaved

    calls = []
    impls = [Impl("ours", "hmmtx", lambda: calls.append("ours")),
             Impl("slow", "peer", lambda: (calls.append("slow"), time.sleep(0.02))),
             Impl("quick", "peer", lambda: calls.append("quick"))]
    times, cpu, _ = interleaved(impls, 3, budget=0.01)
    assert calls == ["ours", "slow", "quick", "ours", "quick", "ours", "quick"]
    assert [len(times[k]) for k in ("ours", "slow", "quick")] == [3, 1, 3]
    assert [len(cpu[k]) for k in ("ours", "slow", "quick")] == [3, 1, 3] and all(v >= 0 for v in cpu["slow"])
    ratios = _ratios({"ours": [1.0, 2.0, 4.0], "slow": [9.0], "quick": [3.0, 3.0, 3.0]}, impls, "ours")
    assert ratios == {"peer": 1.5}  # per round min(peer) / ours: 3/1, 3/2, 3/4 -> median 1.5


def test_exact_target_interleaves_and_checks_identity(tmp_path, capsys):
    """``bench exact`` at a tiny size: both filters per round, outputs identical (== and lowest terms), H1
    bit-exact and the exact reference inside the certified balls; bad sizes exit 2."""
    out_json = tmp_path / "exact.json"
    code, out, err = _run(capsys, "exact", "--states", "3", "--length", "12", "--rounds", "2", "--no-gmpy2",
                          "--json", str(out_json))
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert len(data["filter_flint_seconds_rounds"]) == len(data["filter_fraction_seconds_rounds"]) == 2
    assert data["flint_identical"] is True and data["flint_bit_identical"] is True
    assert data["flint_speedup"] > 0 and data["flint_eager_speedup"] > 0 and data["flint_lowest_terms_seconds"] >= 0
    assert data["h1_bit_identical"] is True and data["exact_inside_enclosure"] is True
    assert data["machine"]["nproc"] >= 1 and "loadavg_1min" in data["machine_after"]
    code, _, err = _run(capsys, "exact", "--rounds", "0")
    assert code == 2 and "--rounds must be at least 1" in err


@pytest.mark.parametrize("target", ["h1", "exact"])
def test_h1_and_exact_share_the_problem_flags(target, capsys):
    """`bench h1` and `bench exact` take --states/--length/--vocab/--seed from one helper: same defaults, same help,
    values parsed and range-checked alike."""
    from verify.cli import build_parser

    parser = build_parser()
    ns = parser.parse_args(["bench", target])
    assert (ns.states, ns.length, ns.vocab, ns.seed) == (16, 2048, 4, 0)
    ns = parser.parse_args(["bench", target, "--states", "3", "--length", "5", "--vocab", "2", "--seed", "7"])
    assert (ns.states, ns.length, ns.vocab, ns.seed) == (3, 5, 2, 7)
    code, out, _ = _run(capsys, target, "--help")
    assert code == 0
    for text in ("hidden states S (default 16)", "sequence length T (default 2048)", "observation symbols V",
                 "seed of the HMM and the tokens"):
        assert text in " ".join(out.split()), text
    code, _, err = _run(capsys, target, "--states", "0")
    assert code == 2 and "--states" in err
