"""The small GPT trainer: determinism, learning beyond the unigram baseline, the probe protocol of its trace,
checkpoints (atomic, weights_only loading) and config validation."""

import numpy as np
import pytest
import torch

from hmm.errors import HmmtxError
from verify.icl_data import sample_context_batch
from verify.training import (
    TrainConfig,
    build_model,
    deterministic_torch,
    load_checkpoint,
    preset,
    save_checkpoint,
    train,
)

MICRO = dict(steps=25, eval_contexts=50)


@pytest.fixture(scope="module")
def tiny_run():
    return train(preset("tiny"))


def test_tiny_training_beats_the_unigram_baseline(tiny_run):
    m = tiny_run.metrics
    assert m.tv_model < 0.5 * m.tv_unigram
    assert m.ce_bayes <= m.ce_model < m.ce_unigram
    assert np.mean(tiny_run.losses[-10:]) < np.mean(tiny_run.losses[:10])
    assert m.n_positions == 200 * 12  # 2 demos x 4 + 4 test tokens: 12 observation targets per context


def test_segment_breakdown(tiny_run):
    from verify.training import evaluate_segments

    b = sample_context_batch(tiny_run.mixture, tiny_run.config.layout, 100, np.random.default_rng(3))
    seg = evaluate_segments(tiny_run.model, tiny_run.mixture, b)
    assert list(seg.n_positions) == [400, 400, 400]  # 4 targets per segment, BOS/SEP positions predict the first
    assert seg.tv_segment_only[0] < 1e-12  # nothing precedes the first demonstration
    assert np.all(seg.tv_segment_only[1:] > 0.01)  # later segments lose the earlier demonstrations' evidence
    assert np.all(seg.task_posterior_max[1:] >= seg.task_posterior_max[0])
    assert np.all(seg.tv_model < seg.tv_unigram)


def test_training_is_deterministic_given_the_seed():
    a = train(preset("tiny", **MICRO))
    b = train(preset("tiny", **MICRO))
    c = train(preset("tiny", seed=1, **MICRO))
    assert a.losses == b.losses
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.losses != c.losses
    assert a.metrics == b.metrics


def test_device_resolution_and_an_absent_cuda_is_an_error(monkeypatch):
    from verify.training import resolve_device

    assert resolve_device("cpu") == "cpu"
    for bad in ("tpu", "cuda:x", "", "CPU", "cuda:", "cuda:00", "cuda:\uff10", " cuda", "gpu"):
        with pytest.raises(HmmtxError, match="device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    # without CUDA: auto is the CPU and an explicit cuda request is an error, never a silent fall-back
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    for name in ("cuda", "cuda:0"):
        with pytest.raises(HmmtxError, match="no CUDA device is available"):
            resolve_device(name)
    with pytest.raises(HmmtxError, match="no CUDA device is available"):
        train(preset("tiny", **MICRO), device="cuda")
    # with CUDA (faked): auto picks it, an index past the device count is an error
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(HmmtxError, match="only 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("pos", ["learned", "rpe"])
def test_forward_and_backward_stay_on_the_model_device(pos):
    """No tensor of the forward pass is created on the CPU behind the device's back (CUDA training): on the
    ``meta`` device (shapes only, no data) a CPU-made index or mask raises a device mismatch."""
    model = build_model(preset("tiny", pos=pos)).to("meta")
    tokens = torch.zeros(2, 7, dtype=torch.long, device="meta")
    logits = model(tokens)
    assert logits.device.type == "meta" and logits.shape == (2, 7, preset("tiny").vocab_size)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters() if p.requires_grad)


def test_cli_train_on_an_absent_cuda_is_one_error_line(tmp_path, monkeypatch, capsys):
    from verify.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "m.pt"
    assert main(["train", "--config", "tiny", "--device", "cuda", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device is available" in err, err
    assert not out.exists()


def test_deterministic_torch_restores_global_settings():
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    with deterministic_torch(1):
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


@pytest.mark.parametrize("pos", ["learned", "rpe"])
def test_trace_follows_the_probe_protocol(pos):
    cfg = preset("tiny", pos=pos)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    from verify.training import make_mixture

    batch = sample_context_batch(make_mixture(cfg), cfg.layout, 3, np.random.default_rng(0))
    tr = model.trace(batch.tokens)
    L, N, T, D = cfg.n_layers, 3, cfg.layout.length, cfg.d_model
    assert tr.residuals.shape == (L + 1, N, T, D)
    assert len(tr.attn_scores) == L and tr.attn_scores[0].shape == (N, cfg.n_heads, T, T)
    upper = np.triu(np.ones((T, T), dtype=bool), 1)
    for s, w in zip(tr.attn_scores, tr.attn_weights):
        assert np.all(np.isneginf(s[..., upper])) and np.all(np.isfinite(s[..., ~upper]))
        np.testing.assert_allclose(w, torch.softmax(torch.as_tensor(s), -1).numpy(), rtol=0, atol=1e-6)
    # the last residual is what the unembedding reads
    with torch.no_grad():
        logits = model.W_U(model.ln_f(torch.as_tensor(tr.residuals[-1]))).double()
    np.testing.assert_allclose(tr.next_token_probs, torch.softmax(logits, -1).numpy(), rtol=0, atol=1e-6)
    # causal: changing the last token changes nothing before it
    tok2 = batch.tokens.copy()
    tok2[:, -1] = (tok2[:, -1] + 1) % cfg.vocab_size
    tr2 = model.trace(tok2)
    np.testing.assert_array_equal(tr2.residuals[:, :, :-1], tr.residuals[:, :, :-1])


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    res = train(preset("tiny", **MICRO))
    path = save_checkpoint(res, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "hmmtx-trained-gpt-v1" and raw["config"]["steps"] == 25
    ck = load_checkpoint(path)
    assert ck.config == res.config
    assert ck.metrics["tv_model"] == res.metrics.tv_model
    assert ck.mixture.to_dict() == res.mixture.to_dict()
    x = torch.as_tensor(sample_context_batch(ck.mixture, ck.config.layout, 4, np.random.default_rng(5)).tokens)
    with torch.no_grad():
        assert torch.equal(ck.model(x), res.model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_bad_checkpoints_and_configs_are_reported(tmp_path):
    with pytest.raises(HmmtxError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HmmtxError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(HmmtxError, match="not an hmmtx training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(HmmtxError, match="d_model = 10 must be divisible by n_heads = 4"):
        TrainConfig(d_model=10, n_heads=4)
    with pytest.raises(HmmtxError, match="steps must be a positive integer"):
        preset("tiny", steps=0)
    with pytest.raises(HmmtxError, match="pos must be one of"):
        preset("tiny", pos="sinusoidal")
    with pytest.raises(HmmtxError, match="unknown training config 'huge'"):
        preset("huge")
    with pytest.raises(HmmtxError, match="unknown key"):
        TrainConfig.from_dict({"steps": 3, "bogus": 1})
