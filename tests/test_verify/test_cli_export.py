"""``hmmtx export``: safetensors / TransformerLens directories that reload without hmmtx and reproduce its outputs;
bad requests are one error line, exit 2, and leave no directory behind."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions import registry
from constructions.export import export_construction, export_standard, standard_entry
from hmm.errors import HmmtxError
from hmm.testing import rational_hmms, token_sequences
from verify.cli import main

HMM_JSON = {"initial_probs": ["1/2", "1/2"], "transition_matrix": [["9/10", "1/10"], ["1/5", "4/5"]],
            "emission_probs": [["7/10", "3/10"], ["1/4", "3/4"]]}


def _loader(d: Path):
    spec = importlib.util.spec_from_file_location(f"hmmtx_load_{abs(hash(str(d)))}", d / "hmmtx_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _hmm_file(tmp_path: Path) -> Path:
    p = tmp_path / "h.json"
    p.write_text(json.dumps(HMM_JSON))
    return p


# ---------------------------------------------------------------------------------------------- round trips
@settings(max_examples=4, deadline=None)
@given(data=st.data(), name=st.sampled_from(["exact-filter", "window"]), fmt=st.sampled_from(["safetensors", "transformer-lens"]))
def test_export_reloads_and_reproduces_hmmtx_outputs_to_round_off(tmp_path_factory, data, name, fmt):
    h = data.draw(rational_hmms(min_states=1, max_states=3, min_obs=1, max_obs=3))
    x = data.draw(token_sequences(h, min_len=1, max_len=8))
    d = tmp_path_factory.mktemp("ex") / "out"
    params = {"r": 2, "prior": "uniform"} if name == "window" else {}
    res = export_construction(name, h, x, d, fmt, **params)
    assert res.path == d and sorted(p.name for p in d.iterdir()) == sorted(res.files)
    std = standard_entry(name).build(h, x, **params)
    mod = _loader(d)
    exp = mod.load(str(d))
    ids = std.check_input_ids(std.codec.encode(x))
    out = mod.forward(exp, ids)
    tr = std.forward(ids)
    np.testing.assert_allclose(out["logits"], tr.readouts["logits"].numpy(), rtol=1e-12, atol=1e-300)
    for l, r in enumerate(out["residuals"]):
        np.testing.assert_allclose(r, tr.residuals[l].numpy(), rtol=1e-12, atol=1e-13)
    got = mod.probabilities(out["logits"])[0, 2:]
    want = std.run(x, "float64").outputs["next_token_probs"].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    if name == "exact-filter":  # a labelled readout (probe) reads the filtered belief off the last residual
        np.testing.assert_allclose(mod.probe(exp, out["residuals"][-1], "filtered")[0, 2:],
                                   std.run(x, "float64").outputs["filtered_probs"].numpy(), rtol=0, atol=1e-14)


def test_export_is_loadable_with_hmmtx_blocked(tmp_path):
    h = _hmm_file(tmp_path)
    d = tmp_path / "ex"
    assert main(["export", "exact-filter", "--hmm", str(h), "--tokens", "0 1 1 0 1", "--format", "safetensors",
                 "--out", str(d)]) == 0
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('hmm', 'constructions', 'verify'):\n"
        "            raise ImportError('hmmtx is blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(d)!r})\n"
        "import json, numpy as np, hmmtx_load\n"
        f"exp = hmmtx_load.load({str(d)!r})\n"
        "ids = [[exp.layout['input_ids'].index(n) for n in ('NULL', 'BOS', 'x=0', 'x=1', 'x=1', 'x=0', 'x=1')]]\n"
        "p = hmmtx_load.probabilities(hmmtx_load.forward(exp, ids)['logits'])[0, 2:]\n"
        "print(json.dumps(p.tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = np.array(json.loads(out.stdout))
    from hmm.io import load_hmm
    from hmm.reference import forward_filter

    ref = forward_filter(load_hmm(h), np.array([0, 1, 1, 0, 1])).next_token_probs
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_layout_labels_every_residual_direction_and_the_head(tmp_path):
    d = tmp_path / "ex"
    assert main(["export", "exact-filter", "--hmm", str(_hmm_file(tmp_path)), "--format", "safetensors", "--out", str(d)]) == 0
    lay = json.loads((d / "layout.json").read_text())
    cfg = json.loads((d / "config.json").read_text())
    labels = [lbl for b in lay["blocks"] for lbl in b["labels"]]
    D = cfg["hooked_transformer_config"]["d_model"]
    assert len(labels) == D == lay["d_model"] and len(set(labels)) == D
    assert lay["blocks"][-1]["stop"] == D
    assert lay["head"]["labels"] == ["x=0", "x=1"] and "z / z.sum(-1)" in lay["head"]["output_rule"]
    assert {p["name"] for p in lay["probes"]} == {"next_token", "predicted", "filtered"}
    assert len(lay["layers"]) == cfg["hooked_transformer_config"]["n_layers"]
    assert all(len(l["units"]) <= cfg["hooked_transformer_config"]["d_mlp"] for l in lay["layers"])
    assert any(h["hook"] == "blocks.{l}.attn.hook_pattern" for h in lay["hooks"])
    assert cfg["hmmtx"]["sizes"]["idealised"]["layers"] == cfg["hooked_transformer_config"]["n_layers"]
    assert cfg["hooked_transformer_config"]["use_attn_scale"] is False


# ---------------------------------------------------------------------------------------------- bad requests
def _no_partial(tmp_path: Path) -> None:
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.name == "out"]


@pytest.mark.parametrize("argv, message", [
    (["--format", "onnx"], "--format must be one of safetensors, transformer-lens"),
    (["--format", "safetensors", "--dtype", "float16"], "--dtype must be one of"),
    (["--format", "safetensors", "--act", "tanh"], "invalid choice"),
    (["--format", "safetensors", "--r", "2"], "unrecognized arguments: --r 2"),
])
def test_bad_requests_are_one_line_exit_2_and_leave_nothing(tmp_path, capsys, argv, message):
    h = _hmm_file(tmp_path)
    code = main(["export", "exact-filter", "--hmm", str(h), "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("hmmtx: error:") and message in err
    _no_partial(tmp_path)


def test_unwritable_or_existing_out_and_unexportable_constructions(tmp_path, capsys, monkeypatch):
    h = _hmm_file(tmp_path)
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file" / "sub", "does not exist"), (tmp_path / "file", "already exists")):
        assert main(["export", "exact-filter", "--hmm", str(h), "--format", "safetensors", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert main(["export", "nosuch", "--format", "safetensors", "--out", str(tmp_path / "out")]) == 2
    assert "unknown construction 'nosuch'" in capsys.readouterr().err
    entry = registry.get("exact-filter")
    import dataclasses

    monkeypatch.setitem(registry._REGISTRY, "plain", dataclasses.replace(entry, name="plain"))
    assert main(["export", "plain", "--hmm", str(h), "--format", "safetensors", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "construction 'plain' cannot be exported: it has no standard-block variant" in err
    _no_partial(tmp_path)


def test_a_failure_while_writing_leaves_no_partial_directory(tmp_path, monkeypatch):
    from constructions import export as ex

    std = standard_entry("exact-filter").build(__import__("hmm.io", fromlist=["load_hmm"]).load_hmm(_hmm_file(tmp_path)),
                                               np.array([0, 1]))

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "_readme", broken)
    with pytest.raises(HmmtxError, match="cannot write.*No space left"):
        export_standard(std, tmp_path / "out")
    _no_partial(tmp_path)
    monkeypatch.setattr(ex.tempfile, "mkdtemp", broken)
    with pytest.raises(HmmtxError, match="cannot write in"):
        export_standard(std, tmp_path / "out")
    monkeypatch.setattr(ex, "MAX_EXPORT_PARAMETERS", 10)
    with pytest.raises(HmmtxError, match="limit 10"):
        export_standard(std, tmp_path / "out")
    _no_partial(tmp_path)


def test_help_lists_constructions_and_options(capsys):
    assert main(["export", "exact-filter", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--format" in out and "--act" in out and "--hmm" in out
    assert main(["export"]) == 2
    assert "give a construction NAME" in capsys.readouterr().err


def test_float32_export_writes_float32_tensors(tmp_path):
    d = tmp_path / "ex"
    assert main(["export", "window", "--hmm", str(_hmm_file(tmp_path)), "--r", "2", "--format", "transformer-lens",
                 "--dtype", "float32", "--out", str(d)]) == 0
    sd = torch.load(d / "state_dict.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in sd.values()) and "blocks.0.mlp.W_gate" in sd


def test_inspect_shows_the_standard_variant_weights_with_labels(tmp_path, capsys):
    assert main(["inspect", "exact-filter-std", "--hmm", str(_hmm_file(tmp_path)), "--layer", "0"]) == 0
    out = capsys.readouterr().out
    assert "std.pos" in out and "mlp.W_gate" in out and "lag1.W_O" in out and "lag1.W_Q" in out
    assert "move" not in out and "std.held" not in out  # the fresh-block layout needs no move head
