"""`hmmtx train` and `hmmtx probe` end to end (tiny sizes), and their input errors (one line, exit 2)."""

import json

import pytest
import torch

from verify.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    out = d / "tiny.pt"
    rc = main(["train", "--config", "tiny", "--steps", "40", "--out", str(out), "--json", str(d / "train.json"),
               "--no-progress"])
    assert rc == 0
    return out, json.loads((d / "train.json").read_text())


def test_train_writes_a_loadable_checkpoint_and_metrics(checkpoint, capsys):
    out, meta = checkpoint
    payload = torch.load(out, weights_only=True)
    assert payload["config"]["steps"] == 40 and payload["config"]["seed"] == 0
    assert meta["metrics"]["tv_model"] == payload["metrics"]["tv_model"]
    assert 0 <= meta["metrics"]["tv_model"] < meta["metrics"]["tv_unigram"]


def test_probe_constructed_and_trained_side_by_side(checkpoint, tmp_path, capsys):
    out, _ = checkpoint
    js = tmp_path / "probe.json"
    rc = main(["probe", "--model", "constructed:icl", "--model", f"checkpoint:{out}", "--contexts", "60",
               "--perms", "2", "--lags", "1,2", "--json", str(js), "--plot", str(tmp_path / "plots")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "constructed:icl" in text and "trained:tiny.pt" in text and "side by side" in text
    data = json.loads(js.read_text())
    icl, trained = data["subjects"]
    assert icl["residual_labels"][:3] == ["embed", "gather0", "gather1"]
    assert icl["token"]["1"]["accuracy"][1] == 1.0 and icl["token"]["2"]["accuracy"][2] == 1.0
    assert icl["independence"]["mean"][icl["independence"]["layers"].index("aggregate")] == pytest.approx(1.0, abs=1e-12)
    assert len(trained["residual_labels"]) == 3 and len(trained["independence"]["mean"]) == 2
    assert trained["data"] == icl["data"]  # the same contexts for both subjects
    seg = trained["next_token_by_segment"]
    assert len(seg["tv_model"]) == 3 and sum(seg["n_positions"]) == 60 * 12
    assert all(0 <= m < u for m, u in zip(seg["tv_model"], seg["tv_unigram"]))
    assert "next-token quality by segment" in text
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["fig2-independence.png", "fig3a-state-task.png", "fig3b-token-probes.png"]
    assert all((tmp_path / "plots" / n).read_bytes()[:4] == b"\x89PNG" for n in names)


def test_probe_single_hmm_construction_without_checkpoint(tmp_path, capsys):
    rc = main(["probe", "--model", "constructed:window", "--num-tasks", "2", "--states", "2", "--vocab", "3",
               "--demos", "2", "--demo-len", "3", "--test-len", "3", "--contexts", "40", "--lags", "1,2,3",
               "--json", str(tmp_path / "w.json")])
    assert rc == 0
    w = json.loads((tmp_path / "w.json").read_text())["subjects"][0]
    assert w["task"] is None and "independence" not in w
    assert w["token"]["3"]["accuracy"][2] == 1.0  # lag 3 from gather layer 1 (residual 2)


def test_probe_with_a_task_file(tmp_path, capsys):
    from hmm.io import save_mixture
    from hmm.zoo import make_mixture

    save_mixture(make_mixture("sticky", 2, 2, 3, seed=1, rational=True), tmp_path / "tasks.json")
    rc = main(["probe", "--model", "constructed:bayes-multitask", "--model", "constructed:exact-filter",
               "--tasks", str(tmp_path / "tasks.json"), "--demos", "2", "--demo-len", "3", "--test-len", "2",
               "--contexts", "30", "--perms", "1", "--lags", "1", "--json", str(tmp_path / "t.json")])
    assert rc == 0
    h3, h1 = json.loads((tmp_path / "t.json").read_text())["subjects"]
    assert h3["task"]["bayes_ceiling"] is not None and h1["task"] is None
    assert h3["belief"]["r2"][-1] > 0.99 and h1["belief"]["r2"][-1] > 0.99


@pytest.mark.parametrize(
    "argv, message",
    [
        (["probe", "--model", "icl"], "expected constructed:NAME or checkpoint:PATH"),
        (["probe", "--model", "constructed:memory-kernel"], "has no probe hooks"),
        (["probe", "--model", "checkpoint:/nonexistent/m.pt"], "checkpoint not found"),
        (["probe", "--model", "constructed:icl", "--lags", "0,1"], "--lags"),
        (["probe", "--model", "constructed:icl", "--lags", "a"], "is not an integer"),
        (["probe", "--model", "constructed:icl", "--contexts", "3"], "--contexts"),
        (["probe", "--model", "constructed:icl", "--json", "/nonexistent/x.json"], "does not exist"),
        (["probe", "--model", "constructed:icl", "--demos", "-1"], "--demos"),
        (["train", "--config", "huge"], "unknown training config"),
        (["train", "--config", "tiny", "--steps", "0"], "--steps"),
        (["train", "--config", "tiny", "--out", "/nonexistent/m.pt"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hmmtx: error:") and message in err and "\n" not in err
