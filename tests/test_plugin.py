"""The extension path: a construction written outside hmmtx (``examples/plugin/prev_token_copier.py``) works through
both registration routes (``hmmtx --plugin FILE.py`` and the ``hmmtx.constructions`` entry-point group) with
``run``, ``inspect``, ``verify`` (its own bound) and ``probe``; broken constructions get one error line (exit 2) or
failing verify cases (exit 1), never a traceback."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from constructions import registry
from hmm.errors import HmmtxError
from verify.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"
PLUGIN = EXAMPLE / "prev_token_copier.py"
HMM = ROOT / "examples" / "hmm.json"
NAME = "prev-token-copier"
SMALL = ["--states", "2", "--lengths", "4,8", "--jobs", "1"]  # a short verify sweep


@pytest.fixture
def clean_registry():
    """Plugins loaded in a test are unloaded afterwards (the registry is process-global). Discovery runs first, so
    the snapshot holds the built-in constructions whatever test ran before."""
    registry.discover()
    saved = dict(registry._REGISTRY), list(registry._PLUGINS), dict(registry._IMPORT_ERRORS), dict(registry._PLUGIN_OF)
    mods = set(sys.modules)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._PLUGINS[:] = saved[1]
    registry._PLUGIN_OF.clear()
    registry._PLUGIN_OF.update(saved[3])
    registry._IMPORT_ERRORS.clear()
    registry._IMPORT_ERRORS.update(saved[2])
    for m in set(sys.modules) - mods:
        if m.startswith("hmmtx_plugin_") or m == "prev_token_copier":
            del sys.modules[m]


def _main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *needles: str) -> None:
    err = err.strip()
    assert err.startswith("hmmtx: error:") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


# ---------------------------------------------------------------------------------------------- route 1: --plugin
def test_plugin_file_run_inspect_verify_probe(clean_registry, capsys, tmp_path):
    P = ["--plugin", str(PLUGIN)]
    out_json = tmp_path / "run.json"
    code, out, _ = _main(capsys, *P, "run", NAME, "--hmm", str(HMM), "--tokens", "0 1 1 0 1", "--k", "2",
                         "--attention", "softmax", "--beta", "3", "--json", str(out_json))
    data = json.loads(out_json.read_text())
    assert code == 0 and data["within_bound"] and data["reference_kind"] == "exact"
    # the derived bound is tight here: the error is the softmax leakage itself, just under the claim
    assert 0.5 * data["bound"]["leakage"] < data["max_abs_error"] <= data["claimed_bound"]
    assert np.argmax(data["copy_probs"], axis=1).tolist() == [3, 3, 0, 1, 1]  # x_{t-2}; first "none" (V = 3)

    code, out, _ = _main(capsys, *P, "inspect", NAME, "--hmm", str(HMM))
    assert code == 0 and "prev.W_O" in out and "rel_bias" in out

    rep = tmp_path / "verify.json"
    code, out, _ = _main(capsys, *P, "verify", "-c", NAME, *SMALL, "--json", str(rep))
    report = json.loads(rep.read_text())
    cases = report["cases"]
    assert code == 0 and report["passed"] and {c["construction"] for c in cases} == {NAME}
    assert {c["dtype"] for c in cases} == {"exact", "float64", "float32"}
    soft = [c for c in cases if c["params"].get("attention") == "softmax"]
    assert soft and all(0 < c["error"] <= c["bound"] + c["allowance"] for c in soft)  # its own (non-zero) bound

    code, out, _ = _main(capsys, *P, "probe", "--model", f"constructed:{NAME}", "--contexts", "40", "--perms", "1",
                         "--lags", "1,2", "--json", str(tmp_path / "probe.json"))
    subj = json.loads((tmp_path / "probe.json").read_text())["subjects"][0]
    assert code == 0 and subj["subject"] == f"constructed:{NAME}"
    acc = subj["token"]["1"]["accuracy"]
    assert acc[1] == 1.0 and acc[0] < 0.95  # token 1 back: readable exactly after the copy layer, not before


def test_plugin_reaches_verify_worker_processes(clean_registry, capsys, tmp_path):
    code, out, _ = _main(capsys, "--plugin", str(PLUGIN), "verify", "-c", NAME, "--states", "2", "--lengths", "4",
                         "--dtype", "float64", "--jobs", "2", "--reproducers", str(tmp_path / "r"))
    assert code == 0 and "all 2 cases within their bounds" in out  # one zoo point x (hard, softmax attention)


def _broken_copy(tmp_path: Path) -> Path:
    """The example with its head aimed one lag too far (a wrong construction under a new name)."""
    src = PLUGIN.read_text()
    assert "lag_bias(k, P)" in src and 'NAME = "prev-token-copier"' in src
    bad = src.replace("lag_bias(k, P)", "lag_bias(k + 1, P)").replace(
        'NAME = "prev-token-copier"', 'NAME = "prev-token-copier-broken"')
    path = tmp_path / "broken_copier.py"
    path.write_text(bad)
    return path


def test_a_broken_copy_fails_verify_naming_it(clean_registry, capsys, tmp_path):
    code, out, _ = _main(capsys, "--plugin", str(_broken_copy(tmp_path)), "verify", "-c", "prev-token-copier-broken",
                         *SMALL, "--reproducers", str(tmp_path / "r"))
    assert code == 1 and "FAILED" in out
    assert re.search(r"prev-token-copier-broken\S*/exact/.*exact mode disagrees", out), out
    assert re.search(r"replay: hmmtx --plugin \S*broken_copier.py run prev-token-copier-broken ", out), out


@pytest.mark.parametrize("text, needle", [
    ("raise RuntimeError('boom')\n", "importing it raised RuntimeError: boom"),
    ("x = 1\n", "registered no construction"),
    ("from constructions.registry import ConstructionEntry, register\n"
     "register(ConstructionEntry(name='bad name', summary='', provenance='', input_kind='hmm',\n"
     "    build=print, reference=print, parse_tokens=print))\n", "name must be a non-empty string without spaces"),
])
def test_a_plugin_file_that_fails_to_load_is_one_line(clean_registry, capsys, tmp_path, text, needle):
    path = tmp_path / "bad_plugin.py"
    path.write_text(text)
    code, _, err = _main(capsys, "--plugin", str(path), "run", "--help")
    assert code == 2
    _one_line_error(err, "--plugin", needle)
    code, _, err = _main(capsys, "--plugin", str(tmp_path / "missing.py"), "verify", "--list")
    assert code == 2
    _one_line_error(err, "no such file")


# ---------------------------------------------------------------------------------------------- broken constructions
def _patched(monkeypatch, **changes):
    """Register the example under the name 'copier-patched' with some contract fields replaced."""
    registry.load_plugin(PLUGIN)
    entry = dataclasses.replace(registry.get(NAME), name="copier-patched", **changes)
    monkeypatch.setitem(registry._REGISTRY, "copier-patched", entry)
    return entry


def _raises(*a, **k):
    raise ValueError("a bug in the construction")


def _wrong_shape(hmm, tokens, *, exact, k=1):
    return {"copy_probs": np.zeros((len(tokens) + 1, hmm.num_obs + 1))}


def _bound_of(value):
    from constructions.types import BoundReport

    def build(hmm, tokens, *, attention="hard", beta=None, k=1):
        model = registry.get(NAME).build(hmm, tokens, attention=attention, beta=beta, k=k)
        model.bound_fn = lambda m, t, mode: BoundReport(value, 0.0, 0.0, 1.0, "patched")
        return model

    return build


@pytest.mark.parametrize("change, needle", [
    ({"build": _raises}, "build raised ValueError: a bug in the construction"),
    ({"reference": _raises}, "reference raised ValueError"),
    ({"reference": _wrong_shape}, "output 'copy_probs': shape ("),
    ({"build": _bound_of(float("nan"))}, "claimed bound value = nan"),
    ({"build": _bound_of(-0.5)}, "claimed bound value = -0.5"),
    ({"build": lambda *a, **k: "not a model"}, "build returned str"),
])
def test_a_broken_construction_is_one_line_in_run_and_a_failed_case_in_verify(clean_registry, monkeypatch, capsys,
                                                                                tmp_path, change, needle):
    _patched(monkeypatch, **change)
    code, _, err = _main(capsys, "run", "copier-patched", "--hmm", str(HMM), "--tokens", "0 1 1 0 1")
    assert code == 2
    _one_line_error(err, "copier-patched", needle)
    code, out, _ = _main(capsys, "verify", "-c", "copier-patched", "--states", "2", "--lengths", "4", "--dtype",
                         "float64", "--jobs", "1", "--reproducers", str(tmp_path / "r"))
    assert code == 1 and f"FAIL copier-patched" in out and needle in out and "Traceback" not in out


def test_entry_validation_names_the_field():
    with pytest.raises(HmmtxError, match="modes must be among"):
        registry.ConstructionEntry(name="x", summary="", provenance="", input_kind="hmm", build=print,
                                   reference=print, parse_tokens=print, modes=("float16",))
    with pytest.raises(HmmtxError, match="bound_covers"):
        registry.ConstructionEntry(name="x", summary="", provenance="", input_kind="hmm", build=print,
                                   reference=print, parse_tokens=print, bound_covers=("nope",))
    with pytest.raises(HmmtxError, match="verify_adapter"):
        registry.ConstructionEntry(name="x", summary="", provenance="", input_kind="hmm", build=print,
                                   reference=print, parse_tokens=print, extra={"verify_adapter": object})
    with pytest.warns(DeprecationWarning):
        e = registry.ConstructionEntry(name="x", summary="", provenance="", input_kind="hmm", build=print,
                                       reference=print, parse_tokens=print,
                                       extra={"verify_betas": (), "default_attention": "softmax", "default_beta": 2.0})
    assert e.verify.betas == () and e.attention == registry.AttentionDefaults("softmax", 2.0)


# ---------------------------------------------------------------------------------------------- route 2: entry points
def _entry_point_line() -> str:
    """``name = value`` of the example's ``hmmtx.constructions`` entry point, read from its pyproject.toml."""
    text = (EXAMPLE / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."hmmtx.constructions"]', 1)[1].split("\n[", 1)[0]
    lines = [ln.strip() for ln in section.splitlines() if "=" in ln and not ln.strip().startswith("#")]
    assert len(lines) == 1, lines
    name, value = (s.strip().strip('"') for s in lines[0].split("=", 1))
    return f"{name} = {value}"


def test_installed_distribution_registers_through_the_entry_point_group(clean_registry, monkeypatch, capsys, tmp_path):
    """A site folder holding the example module and its dist-info (what ``pip install ./examples/plugin`` writes)
    on ``sys.path``: ``importlib.metadata`` finds the entry point there and the registry imports it; no --plugin."""
    site = tmp_path / "site"
    dist = site / "hmmtx_prev_token_copier-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "prev_token_copier.py").write_text(PLUGIN.read_text())
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hmmtx-prev-token-copier\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[hmmtx.constructions]\n{_entry_point_line()}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "prev_token_copier", raising=False)
    registry._load_entry_points()
    assert NAME in registry.entries() and registry.plugin_of(NAME) is None
    assert registry.get(NAME).build.__module__ == "prev_token_copier"  # imported by the entry point, not a file
    code, out, _ = _main(capsys, "run", NAME, "--hmm", str(HMM), "--tokens", "0 1 1 0 1", "--mode", "exact")
    assert code == 0 and "bit-identical to the exact reference: yes" in out
    code, out, _ = _main(capsys, "verify", "-c", NAME, "--states", "2", "--lengths", "4", "--jobs", "1",
                         "--reproducers", str(tmp_path / "r"))
    assert code == 0 and re.search(r"all \d+ cases within their bounds", out)


def test_without_the_dist_info_the_entry_point_group_registers_nothing(clean_registry, monkeypatch, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "prev_token_copier.py").write_text(PLUGIN.read_text())  # the module alone is not an entry point
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "prev_token_copier", raising=False)
    registry._REGISTRY.pop(NAME, None)
    registry._load_entry_points()
    assert NAME not in registry._REGISTRY and "prev_token_copier" not in sys.modules


def test_a_failing_entry_point_is_a_failing_verify_case(clean_registry, monkeypatch, capsys, tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hmmtx.constructions]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(site))
    registry._load_entry_points()
    code, out, _ = _main(capsys, "verify", "--list")
    assert code == 0 and "entry point broken (no_such_module_xyz)" in out
