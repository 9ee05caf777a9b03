"""``hmmtx verify`` end to end on tiny sweeps: exit statuses, the table, the JSON report against its schema,
reproducers that replay, plots, and a deliberately broken construction (one weight perturbed) that must fail."""

from __future__ import annotations

import dataclasses
import json
import shlex
from fractions import Fraction

import pytest

from constructions import registry
from verify import report as rep
from verify import suite
from verify.cli import main

# One worker: the broken-construction fixture monkeypatches the registry of this process.
TINY = ["--states", "2", "--lengths", "3", "--jobs", "1"]


def _run(capsys, *argv):
    code = main(["verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def perturb_one_weight(model):
    """The same construction with one unembedding weight of the next-token readout changed by 1/8 (a weight that
    multiplies a coordinate the readout actually uses, so every next-token distribution moves)."""
    from constructions.transformer import ConstructedTransformer

    name = next(n for n, r in model.readouts.items() if r.W_U.shape[0] >= 2)
    ro = model.readouts[name]
    W = ro.W_U.todense() if hasattr(ro.W_U, "todense") else ro.W_U.copy()  # dense or SparseFrac weights
    col = next(j for j in range(W.shape[1]) if W[0, j] != 0)
    W[0, col] = W[0, col] + Fraction(1, 8)
    readouts = [dataclasses.replace(r, W_U=W) if r.name == name else r for r in model.readouts.values()]
    return ConstructedTransformer(
        model.layout, model.embedding, model.layers, readouts, model.spec, model.codec,
        bound_fn=model.bound_fn, attention=model.attention, beta=model.beta, dtype=model.dtype, info=model.info,
    )


@pytest.fixture
def broken_exact_filter(monkeypatch):
    entry = registry.get("exact-filter")
    build = entry.build

    def broken_build(*args, **kwargs):
        return perturb_one_weight(build(*args, **kwargs))

    monkeypatch.setitem(registry._REGISTRY, "exact-filter", dataclasses.replace(entry, build=broken_build))
    return entry


def test_every_registered_construction_is_swept_by_quick_and_full():
    names = list(registry.entries())
    adapters = suite.adapters()
    assert [a.name for a in adapters] == names and names  # discovered, not listed by hand
    for a in adapters:
        for plan in (suite.QUICK, suite.FULL):
            cases = a.cases(plan)
            assert cases, (a.name, plan.preset)
            modes = {c.dtype for c in cases}
            assert modes == set(a.dtypes), (a.name, plan.preset, modes)  # exact mode included where supported
        full = a.cases(suite.FULL)
        if any(c.states is not None for c in full):  # HMM constructions: S up to 8 and T up to 1024, together
            assert (8, 1024) in {(c.states, c.length) for c in full}, a.name
        else:  # constructions without an HMM (memory-kernel) sweep T up to their own stated cap
            assert len({c.length for c in full}) >= 2, a.name


def test_unperturbed_run_exits_0_and_writes_a_valid_report(tmp_path, capsys):
    js = tmp_path / "r.json"
    code, out, err = _run(capsys, "-c", "exact-filter", *TINY, "--json", str(js), "--plots", str(tmp_path / "p"))
    assert code == 0, out + err
    assert "exact-filter" in out and "FAIL" not in out and "all 8 cases within their bounds" in out
    report = json.loads(js.read_text())
    rep.validate_report(report)
    assert report["passed"] and report["exit_status"] == 0
    assert report["reproducer_dir"] == str(tmp_path / "hmmtx-reproducers")  # default: beside the JSON file
    (s,) = report["constructions"]
    assert s["cases"] == 8 and s["exact_cases"] == s["exact_agree"] == 2
    assert s["max_ratio"] <= 1
    # the largest model's size is reported: H1 has D = 2 S^2 + O(1) and one head per layer (SPEC §4)
    size = s["largest_size"]
    assert set(size) >= {"layers", "heads", "width", "ffn_width"} and size["heads"] == 1
    assert 2 * 2**2 <= size["width"] <= 2 * 2**2 + 16 and size["layers"] >= 2
    assert "largest model built per construction" in out
    assert sorted(p.rsplit("/", 1)[-1] for p in report["plots"]) == ["exact-filter-vs-S.png", "exact-filter-vs-T.png"]
    assert report["command"].startswith("hmmtx verify --quick -c") or report["command"].startswith(
        "hmmtx verify --quick --construction exact-filter")


def test_broken_construction_exits_1_names_it_and_its_reproducer(broken_exact_filter, tmp_path, capsys):
    repro = tmp_path / "repro"
    js = tmp_path / "r.json"
    code, out, err = _run(capsys, "-c", "exact-filter", *TINY, "--json", str(js), "--reproducers", str(repro))
    assert code == 1
    assert "FAIL exact-filter:" in out and f"reproducer: {repro / 'exact-filter'}" in out
    assert "replay: hmmtx run exact-filter --hmm" in out
    report = json.loads(js.read_text())
    rep.validate_report(report)
    assert not report["passed"] and report["exit_status"] == 1
    statuses = {c["dtype"]: c["status"] for c in report["cases"] if c["params"]["attention"] == "hard"}
    assert statuses == {"float64": "bound", "float32": "bound", "exact": "exact"}
    (s,) = report["constructions"]
    worst = next(c for c in report["cases"] if c["id"] == s["worst_case"])
    assert worst["status"] == "exact"  # an exact disagreement outranks broken float bounds
    # The reproducer replays the very case through `hmmtx run` (still broken: the fixture is active).
    case = json.loads((repro / "exact-filter" / "case.json").read_text())
    assert case["id"] == s["worst_case"] and case["replay_command"] == s["replay_command"]
    assert f"  replay: {s['replay_command']}\n" in out  # printed whole, on one line (copy-pasteable)
    argv = shlex.split(case["replay_command"])
    assert argv[:3] == ["hmmtx", "run", "exact-filter"]
    assert main(argv[1:]) == 1  # the replay reproduces the failure, and `run` says so in its exit status
    capsys.readouterr()
    replay = json.loads((repro / "exact-filter" / "replay.json").read_text())
    assert replay["bit_identical"] is False
    assert replay["max_abs_error"] == pytest.approx(worst["error"], rel=1e-12, abs=0)


def test_replay_of_a_passing_case_reproduces_its_error(tmp_path, capsys):
    repro = tmp_path / "repro"
    code, out, _ = _run(capsys, "-c", "exact-filter", *TINY, "--dtype", "float32", "--reproducers", str(repro))
    assert code == 0
    case = json.loads((repro / "exact-filter" / "case.json").read_text())
    assert main(shlex.split(case["replay_command"])[1:]) == 0
    capsys.readouterr()
    replay = json.loads((repro / "exact-filter" / "replay.json").read_text())
    assert replay["mode"] == "float32"
    assert replay["max_abs_error"] == pytest.approx(case["error"], rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--states", "0"], "--states"),
        (["--lengths", "4,x"], "--lengths"),
        (["--dtype", "float16"], "float16"),
        (["--seed", "-3"], "--seed"),
        (["-c", "no-such-construction"], "no-such-construction"),
        (["--json", "/nonexistent-dir/r.json"], "does not exist"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hmmtx: error:") and needle in err


def test_two_workers_give_the_same_cases_and_verdicts(tmp_path, capsys):
    args = ["-c", "exact-filter", "--states", "2", "--lengths", "3", "--dtype", "float64,exact"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert _run(capsys, *args, "--jobs", "1", "--json", str(one))[0] == 0
    assert _run(capsys, *args, "--jobs", "2", "--json", str(two))[0] == 0
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    rep.validate_report(r2)
    assert r2["jobs"] == 2
    assert [c["id"] for c in r1["cases"]] == [c["id"] for c in r2["cases"]]  # same cases, same order
    for a, b in zip(r1["cases"], r2["cases"]):
        assert a["status"] == b["status"] == "pass" and a["exact_ok"] == b["exact_ok"]
        assert a["error"] == pytest.approx(b["error"], rel=0, abs=1e-15)
        assert a["bound"] == pytest.approx(b["bound"], rel=1e-9, abs=0)


@pytest.mark.parametrize("flag", ["--plots", "--reproducers"])
def test_output_folder_that_is_a_file_is_a_one_line_error(flag, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    code, out, err = _run(capsys, "-c", "exact-filter", *TINY, flag, str(f))
    assert code == 2 and "not a folder" in err and err.count("\n") == 1


def test_plots_without_matplotlib_is_a_one_line_error(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out, err = _run(capsys, "-c", "exact-filter", *TINY, "--plots", "plots-dir")
    assert code == 2 and "hmmtx[plot]" in err and err.count("\n") == 1


def test_list_names_every_registered_construction(capsys):
    code, out, _ = _run(capsys, "--list")
    assert code == 0
    for name in registry.entries():
        assert name in out


def test_quick_and_full_are_exclusive(capsys):
    # usage errors return 2 from main() (one line on stderr) like every other bad input
    assert main(["verify", "--quick", "--full"]) == 2
    assert "not allowed with argument --quick" in capsys.readouterr().err
