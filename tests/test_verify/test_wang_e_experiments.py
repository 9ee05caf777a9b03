"""Wang & E's training tables (``hmmtx experiment wang-e``): the model family against a numpy reference of its layer
equations, the tasks against their definitions, checkpoints, the verdict rule, and every table end to end in its
quick size (structure, and training lowers the validation loss of every run)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from hmm.errors import HmmtxError
from verify.experiments import wang_e
from verify.experiments.wang_e import CellResult, Cell, run_table, separated, to_json
from verify.experiments.wang_e_model import (
    ModelConfig,
    RunConfig,
    build_model,
    load_checkpoint,
    model_config_for,
    save_checkpoint,
    t5_bucket_table,
    train,
)
from verify.experiments.wang_e_tasks import ComplexReadout, DyckHMMText, KernelMemory, SparseBoolean


# ---------------------------------------------------------------------------------------------- model vs reference
def _reference_forward(model, x: np.ndarray) -> np.ndarray:
    """The layer equations of the module docstring in numpy float64, reading the model's weights by name."""
    c = model.config
    P = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    T = x.shape[1]
    if c.input_kind == "tokens":
        h = P["embed.weight"][x]
    else:
        h = x[..., None] * P["embed.weight"][:, 0] + P["embed.bias"]
    lag = np.arange(T)[:, None] - np.arange(T)[None, :]
    allowed = lag >= 0
    if c.mask_lag0:
        allowed = (lag >= 1) | ((lag == 0) & (np.arange(T)[:, None] == 0))

    def ln(z, pre):
        if not c.layer_norm:
            return z
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-5) * P[pre + ".weight"] + P[pre + ".bias"]

    for i in range(c.n_layers):
        b = f"blocks.{i}."
        a = ln(h, b + "n1")
        out = np.zeros_like(h)
        for hd in range(c.n_heads):
            rows = slice(hd * c.d_head, (hd + 1) * c.d_head)
            s = lag.clip(min=0).astype(float)
            if c.rpe == "lin":
                bias = -P[b + "attn.rpe.slope"][hd] * s
            elif c.rpe == "log":
                bias = -P[b + "attn.rpe.slope"][hd] * np.log(np.maximum(s, 1.0))
            elif c.rpe == "t5":
                bias = P[b + "attn.rpe.table"][hd][t5_bucket_table(T, c.t5_buckets, c.t5_max_distance)[lag.clip(min=0)]]
            else:
                bias = np.zeros((T, T))
            scores = np.broadcast_to(bias, (x.shape[0], T, T)).copy()
            if c.attention == "dp":
                q = a @ P[b + "attn.W_Q.weight"][rows].T
                k = a @ P[b + "attn.W_K.weight"][rows].T
                scores = scores + q @ k.transpose(0, 2, 1) / math.sqrt(c.d_head)
            scores = np.where(allowed, scores, -np.inf)
            w = np.exp(scores - scores.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            v = a @ P[b + "attn.W_V.weight"][rows].T
            out += (w @ v) @ P[b + "attn.W_O.weight"][:, rows].T
        h = h + out
        if c.ffn_width:
            z = ln(h, b + "n2") @ P[b + "ffn.0.weight"].T + P[b + "ffn.0.bias"]
            h = h + np.maximum(z, 0) @ P[b + "ffn.2.weight"].T + P[b + "ffn.2.bias"]
    h = ln(h, "norm")
    return h @ P["unembed.weight"].T + P["unembed.bias"]


ARCHS = [
    dict(n_layers=1, n_heads=3, ffn_width=0, attention="dpf", rpe="lin", mask_lag0=True),
    dict(n_layers=1, n_heads=2, ffn_width=5, attention="dpf", rpe="log", mask_lag0=True),
    dict(n_layers=2, n_heads=2, ffn_width=6, attention="dp", rpe="lin"),
    dict(n_layers=2, n_heads=1, ffn_width=4, attention="dp", rpe="none", layer_norm=True),
    dict(n_layers=2, n_heads=2, ffn_width=4, attention="dpf", rpe="t5", layer_norm=True, input_kind="tokens",
         vocab_size=5, out_dim=5),
    dict(n_layers=1, n_heads=2, ffn_width=4, attention="dp", rpe="log", layer_norm=True, input_kind="tokens",
         vocab_size=4, out_dim=4),
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"L{a['n_layers']}-{a['attention']}-{a['rpe']}")
def test_model_matches_numpy_reference_of_its_equations(arch):
    cfg = ModelConfig(d_model=6, d_head=3, max_len=20, t5_buckets=8, t5_max_distance=12, **arch)
    torch.manual_seed(1)
    model = build_model(cfg).double()
    with torch.no_grad():  # random RPE parameters too (the t5 table starts at zero)
        for name, p in model.named_parameters():
            if "rpe" in name:
                p.uniform_(-1.5, 1.5) if "table" in name else p.uniform_(0.2, 2.0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, size=(3, 20)) if cfg.input_kind == "tokens" else rng.uniform(-1, 1, (3, 20))
    with torch.no_grad():
        got = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, _reference_forward(model, x), rtol=1e-10, atol=1e-12)


def test_dp_free_lin_head_is_the_geometric_kernel_of_the_construction():
    """One DP-free lin head with lag 0 masked attends to lag s with weight e^{-ps} / sum_{j=1..t} e^{-pj}."""
    cfg = ModelConfig(n_heads=1, d_model=1, d_head=1, ffn_width=0, attention="dpf", rpe="lin", mask_lag0=True,
                      max_len=12)
    model = build_model(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.weight.fill_(1.0)
        model.blocks[0].attn.W_V.weight.fill_(1.0)
        model.blocks[0].attn.W_O.weight.fill_(1.0)
        model.blocks[0].attn.rpe.slope.fill_(0.7)
        model.unembed.weight.fill_(1.0)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 12))
    with torch.no_grad():
        y = model(torch.as_tensor(x))[..., 0].numpy()
    for t in range(1, 12):
        w = np.exp(-0.7 * np.arange(1, t + 1))
        np.testing.assert_allclose(y[:, t], x[:, t] + (x[:, t - 1::-1] * w).sum(-1) / w.sum(), rtol=1e-12)


def test_model_config_errors_are_one_clear_line():
    with pytest.raises(HmmtxError, match="attention"):
        ModelConfig(attention="xx")
    with pytest.raises(HmmtxError, match="running average"):
        ModelConfig(attention="dpf", rpe="none")
    with pytest.raises(HmmtxError, match="vocab_size"):
        ModelConfig(input_kind="tokens", vocab_size=0)
    with pytest.raises(HmmtxError, match="ffn_width"):
        ModelConfig(ffn_width=-1)
    with pytest.raises(HmmtxError, match="lr"):
        RunConfig(lr=float("nan"))
    with pytest.raises(HmmtxError, match="exceeds"):
        build_model(ModelConfig(max_len=4))(torch.zeros(1, 5))


# ---------------------------------------------------------------------------------------------- tasks
def test_sparse_boolean_and_kernel_targets_follow_their_definitions():
    rng = np.random.default_rng(0)
    b = SparseBoolean((1, 3), 12).sample(4, rng)
    t = np.arange(3, 12)
    np.testing.assert_array_equal(b.targets[:, t], b.inputs[:, t - 1] * b.inputs[:, t - 3])
    task = KernelMemory("power", 2.0, 16)
    kb = task.sample(3, rng)
    rho = task.target.values(np.arange(1, 16))
    for tt in range(task.score_from, 16):
        direct = sum(rho[s - 1] * kb.inputs[:, tt - s].astype(np.float64) for s in range(1, tt + 1)) / task.sigma
        np.testing.assert_allclose(kb.targets[:, tt], direct, rtol=1e-5, atol=1e-6)
    assert np.all(kb.targets[:, : task.score_from] == 0)
    cr = ComplexReadout(seq_len=8).sample(2000, rng)
    assert abs(cr.targets[:, 1:].mean()) < 0.1 and abs(cr.targets[:, 1:].var() - 1) < 0.1  # standardised
    with pytest.raises(HmmtxError, match="lags"):
        SparseBoolean((0, 2), 12)
    with pytest.raises(HmmtxError, match="seq_len/2"):
        SparseBoolean((1, 9), 12)


def test_lm_stand_in_is_a_well_nested_grammar_with_its_exact_bayes_loss():
    task = DyckHMMText(seq_len=40, max_depth=3)
    b = task.sample(200, np.random.default_rng(1))
    W = task.n_words
    for row in b.inputs:
        stack = []
        for tok in row:
            if tok >= W and (tok - W) % 2 == 0:
                stack.append((tok - W) // 2)
                assert len(stack) <= 3
            elif tok >= W:
                assert stack and stack.pop() == (tok - W) // 2  # a closing bracket matches the innermost open one
    np.testing.assert_array_equal(b.targets[:, :-1], b.inputs[:, 1:])
    assert np.all(b.targets[:, -1] == -1)
    nll = b.bayes_nll[:, :-1]
    closes = (b.targets[:, :-1] >= W) & ((b.targets[:, :-1] - W) % 2 == 1)
    np.testing.assert_allclose(nll[closes], -math.log(task.p_close), rtol=1e-12)  # the type is determined
    # the Bayes loss beats the unigram code length of the same texts
    freq = np.bincount(b.inputs.ravel(), minlength=task.vocab_size) / b.inputs.size
    assert nll.mean() < -np.log(freq[b.targets[:, :-1]]).mean()


# ---------------------------------------------------------------------------------------------- training, checkpoints
def test_training_is_deterministic_and_checkpoints_round_trip(tmp_path):
    task = SparseBoolean((1, 2), 8)
    cfg = model_config_for(task, n_heads=2, d_model=4, d_head=2, ffn_width=4, mask_lag0=True)
    run = RunConfig(steps=8, batch_size=8, eval_size=16, n_evals=2, warmup=1)
    a, b = train(cfg, task, run), train(cfg, task, run)
    assert a.losses == b.losses and a.val_losses == b.val_losses
    assert train(cfg, task, RunConfig(steps=8, batch_size=8, eval_size=16, n_evals=2, warmup=1, seed=1)).losses != a.losses
    path = save_checkpoint(a.model, cfg, {"note": "x"}, tmp_path / "m.pt")
    got = load_checkpoint(path)
    x = torch.as_tensor(task.sample(2, np.random.default_rng(0)).inputs)
    with torch.no_grad():
        assert torch.equal(got.model(x), a.model(x))
    assert got.config == cfg and got.meta == {"note": "x"}
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HmmtxError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_run_table_reuses_finished_checkpoints(tmp_path, monkeypatch):
    first = run_table(5, "quick", seeds=(0,), steps=5, out_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == len(first.results)
    import verify.experiments.wang_e_model as wm

    monkeypatch.setattr(wm, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = run_table(5, "quick", seeds=(0,), steps=5, out_dir=tmp_path)
    assert [r.final for r in again.results.values()] == [r.final for r in first.results.values()]


# ---------------------------------------------------------------------------------------------- verdict rule
def _cell(values):
    return CellResult(Cell({"x": 0}, {}), 1, list(range(len(values))), list(values), [1.0] * len(values), [], [])


def test_a_still_falling_loss_is_flagged():
    falling = CellResult(Cell({"x": 0}, {}), 1, [0, 1], [0.5, 0.5], [1, 1], [[[0, 8, 10], [1.0, 0.8, 0.5]]] * 2, [])
    flat = CellResult(Cell({"x": 0}, {}), 1, [0, 1], [0.5, 0.5], [1, 1], [[[0, 8, 10], [1.0, 0.52, 0.5]]] * 2, [])
    assert wang_e.still_improving(falling) and not wang_e.still_improving(flat)


def test_cells_differ_only_beyond_two_standard_errors():
    assert separated(_cell([0.10, 0.11, 0.12]), _cell([0.50, 0.52, 0.51]))
    assert not separated(_cell([0.10, 0.30, 0.50]), _cell([0.20, 0.40, 0.60]))  # a trend inside seed noise
    assert not separated(_cell([0.1]), _cell([0.9]))  # one seed: no noise estimate, never separated


# ---------------------------------------------------------------------------------------------- tables end to end
@pytest.fixture(scope="module")
def quick_tables():
    return {n: run_table(n, "quick") for n in wang_e.TABLES}


@pytest.mark.parametrize("number", wang_e.TABLES)
def test_every_table_runs_quick_and_training_lowers_the_loss(quick_tables, number):
    tr = quick_tables[number]
    spec = wang_e.SPECS[number]
    size = spec.sizes["quick"]
    cells = spec.cells(size)
    assert [r.cell for r in tr.results.values()] == cells
    for r in tr.results.values():
        assert r.seeds == list(size.seeds) and len(r.final) == len(size.seeds) >= 2
        assert all(math.isfinite(v) for v in r.final)
        assert all(f < i for f, i in zip(r.final, r.initial)), (r.cell.label, r.final, r.initial)
    assert tr.verdicts and all(v.verdict in wang_e.VERDICTS and v.insight == spec.insight for v in tr.verdicts)
    data = json.loads(json.dumps(to_json(tr), allow_nan=False))
    assert data["table"] == number and data["size"] == "quick" and data["seeds"] == list(size.seeds)
    assert len(data["cells"]) == len(cells)
    md = wang_e.to_markdown(data)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == len(cells) + 1 and all(f"**{v.verdict}**" in md for v in tr.verdicts)  # header + cells
    if number in (3, 5, 6):
        assert set(data["construction"]["by_H"]) == {str(c.coords["H"]) for c in cells}
    if number == 8:  # the memory-kernel construction beside the trained models: matched single heads are exact
        by = data["construction"]["by_cell"]
        assert by["heavy log H=1"]["l1_error"] < by["heavy lin H=1"]["l1_error"]
    if number in (2, 7):
        assert 0 < data["bayes_floor"] < min(c["mean"] for c in data["cells"])
    if number == 2:  # depth buys nesting: the construction with M + 1 layers is exact, the greedy shallow one is not
        by = data["construction"]["by_M"]["3"]
        assert by["4"] == 0 and by["2"] > 0
    if number == 7:  # DP + RPE exact with one head; DP-free provably >= 1
        assert all(d["dp_rpe_one_head"] == 0 and d["dp_free_lower_bound_H_lt_T"] >= 1
                   for d in data["construction"]["by_T"].values())


def test_cli_writes_json_and_plot_and_rejects_bad_input(tmp_path, capsys):
    from verify.cli import main

    out, png = tmp_path / "t6.json", tmp_path / "t6.png"
    assert main(["experiment", "wang-e", "--table", "6", "--quick", "--steps", "5", "--seeds", "0,1",
                 "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "Insight 3a" in text and "Table 6" in text
    assert json.loads(out.read_text())["run"]["steps"] == 5 and png.stat().st_size > 1000
    bad = [["--table", "9"], ["--table", "3", "--seeds", "0,x"], ["--table", "3", "--seeds", str(2**70)],
           ["--table", "3", "--steps", "0"], ["--table", "3", "--json", str(tmp_path / "no/x.json")]]
    for args in bad:
        r = subprocess.run([sys.executable, "-m", "verify.cli", "experiment", "wang-e", *args],
                           capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
