"""Wang & E's Transformer family for training experiments: L layers, H heads, FFN width m, DP or DP-free, RPE type.

A reconstruction in the spirit of the hypothesis class of Wang & E (2024) (``shared/papers/wang_e2024_expressive.md``
§2.1; the paper's text was not available). Layer ``l`` (residual, optional pre-LayerNorm ``N``, identity when off):

    a_t^(h)   = sum_{s=0..t} pi_t^(h)(s) W_V^(h) N(x)_{t-s}
    pi_t^(h)(s) = softmax_s( [DP] <W_Q^(h) N(x)_t, W_K^(h) N(x)_{t-s}> / sqrt(d_head) + r^(h)(s) )
    x        <- x + sum_h W_O^(h) a^(h)
    x        <- x + W_2 relu(W_1 N(x) + b_1) + b_2                 (width m; absent when m = 0, "FFN-free")
    output   = W_U N(x) + b_U                                      (scalar regression or next-token logits)

The DP term is present for ``attention="dp"`` and absent for ``attention="dpf"`` (DP-free: the attention weights
depend on the lag only, one ``(H, T, T)`` matrix shared by the batch). The RPE ``r^(h)(s)`` at lag ``s >= 0``:

* ``lin``: ``-p_h s`` (ALiBi family; learnable scalar ``p_h`` per head, kernel ``~ e^{-p s}``),
* ``log``: ``-p_h log(max(s, 1))`` (learnable ``p_h``; kernel ``~ s^{-p}`` on lags ``s >= 1``; lag 0 gets the weight
  of lag 1, our convention for the undefined ``log 0`` (the construction in ``constructions/memory`` masks lag 0
  instead; a model here can cancel the lag-0 share through the residual stream, which carries ``x_t``),
* ``t5``: a learned bias per head and T5 bucket (``constructions.memory.t5.relative_position_bucket``, causal),
* ``none``: no positional information besides causality.

``mask_lag0=True`` removes lag 0 from every head (the construction's convention: the current token rides the
residual stream; position 0 keeps its lag 0, having nothing else to attend to).

Inputs are real scalars (``input_kind="real"``, embedded by ``W_E x + b_E``) or token ids (``"tokens"``).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError

CHECKPOINT_FORMAT = "hmmtx-wang-e-model-v1"
ATTENTION = ("dp", "dpf")
RPE = ("lin", "log", "t5", "none")
INPUT_KINDS = ("real", "tokens")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture (validated on construction). ``ffn_width = 0`` is the FFN-free model."""

    n_layers: int = 1
    n_heads: int = 4
    d_model: int = 32
    d_head: int = 8
    ffn_width: int = 32
    attention: str = "dp"
    rpe: str = "lin"
    layer_norm: bool = False
    mask_lag0: bool = False
    input_kind: str = "real"
    vocab_size: int = 0
    out_dim: int = 1
    max_len: int = 64
    t5_buckets: int = 32
    t5_max_distance: int = 128

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_head", "out_dim", "max_len", "t5_buckets",
                     "t5_max_distance"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise HmmtxError(f"model config: {name} must be a positive integer, got {v!r}")
        for name in ("ffn_width", "vocab_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise HmmtxError(f"model config: {name} must be an integer >= 0, got {v!r}")
        for name, allowed in (("attention", ATTENTION), ("rpe", RPE), ("input_kind", INPUT_KINDS)):
            if getattr(self, name) not in allowed:
                raise HmmtxError(f"model config: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.input_kind == "tokens" and self.vocab_size < 2:
            raise HmmtxError(f"model config: token inputs need vocab_size >= 2, got {self.vocab_size}")
        if self.attention == "dpf" and self.rpe == "none":
            raise HmmtxError("model config: DP-free attention without RPE is a plain running average; pick an rpe")
        if self.rpe == "t5":
            from constructions.memory.t5 import check_config

            check_config(self.t5_buckets, self.t5_max_distance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise HmmtxError(f"model config: unknown key(s) {sorted(unknown)}")
        return cls(**data)

    def label(self) -> str:
        ffn = f"m={self.ffn_width}" if self.ffn_width else "FFN-free"
        return f"L={self.n_layers} H={self.n_heads} {ffn} {self.attention.upper()} {self.rpe}-RPE"


def t5_bucket_table(T: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """(T,) int64: T5 bucket of each causal lag ``0..T-1``."""
    from constructions.memory.t5 import relative_position_bucket

    return np.array([relative_position_bucket(s, num_buckets, max_distance) for s in range(T)], dtype=np.int64)


def initial_rpe_slopes(rpe: str, H: int) -> np.ndarray:
    """Initial ``p_h``: spread over scales so heads start at different memory lengths.

    lin: ``p_h`` geometric in ``[0.05, 2]`` (kernel lengths 0.5 .. 20 lags); log: ``p_h`` evenly in ``[0.5, 3]``.
    One head starts in the middle of the range.
    """
    if rpe == "lin":
        return np.geomspace(0.05, 2.0, H) if H > 1 else np.array([0.3])
    return np.linspace(0.5, 3.0, H) if H > 1 else np.array([1.5])


def _torch():
    import torch

    return torch


def _build_classes():
    torch = _torch()
    nn = torch.nn

    class RPE(nn.Module):
        """``r^(h)(s)`` on the ``(T, T)`` lag grid: lin / log with learnable slopes, T5 buckets, or zero."""

        def __init__(self, c: ModelConfig):
            super().__init__()
            self.kind = c.rpe
            T = c.max_len
            lags = torch.arange(T)[:, None] - torch.arange(T)[None, :]
            # lag 0 masked (except at t = 0, which has nothing else): the construction's convention, x_t rides the residual
            allowed = (lags >= 1) | ((lags == 0) & (torch.arange(T)[:, None] == 0)) if c.mask_lag0 else lags >= 0
            self.register_buffer("causal", allowed, persistent=False)
            # integer lags; phi(s) is formed in the parameters' dtype at each call (exact for .double() models)
            self.register_buffer("lags", lags.clamp(min=0), persistent=False)
            if self.kind in ("lin", "log"):
                self.slope = nn.Parameter(torch.as_tensor(initial_rpe_slopes(self.kind, c.n_heads),
                                                          dtype=torch.get_default_dtype()))
            elif self.kind == "t5":
                buckets = torch.as_tensor(t5_bucket_table(T, c.t5_buckets, c.t5_max_distance))
                self.register_buffer("bucket", buckets[lags.clamp(min=0)], persistent=False)
                self.table = nn.Parameter(torch.zeros(c.n_heads, c.t5_buckets))

        def forward(self, T: int):
            """(H or 1, T, T) additive logits, ``-inf`` above the diagonal (causal)."""
            if self.kind in ("lin", "log"):
                s = self.lags[:T, :T].to(self.slope.dtype)
                phi = -s if self.kind == "lin" else -torch.log(s.clamp(min=1.0))
                bias = self.slope[:, None, None] * phi[None]
            elif self.kind == "t5":
                bias = self.table[:, self.bucket[:T, :T]]
            else:
                bias = torch.zeros(1, T, T)
            return bias.masked_fill(~self.causal[:T, :T], float("-inf"))

    class Attention(nn.Module):
        """H heads of width ``d_head``; DP-free heads skip ``W_Q, W_K`` and share one weight matrix per head."""

        def __init__(self, c: ModelConfig):
            super().__init__()
            self.H, self.dh, self.dp = c.n_heads, c.d_head, c.attention == "dp"
            inner = c.n_heads * c.d_head
            if self.dp:
                self.W_Q = nn.Linear(c.d_model, inner, bias=False)
                self.W_K = nn.Linear(c.d_model, inner, bias=False)
            self.W_V = nn.Linear(c.d_model, inner, bias=False)
            self.W_O = nn.Linear(inner, c.d_model, bias=False)
            self.rpe = RPE(c)

        def forward(self, x):
            N, T, _ = x.shape
            split = lambda y: y.view(N, T, self.H, self.dh).transpose(1, 2)  # noqa: E731  (N, H, T, dh)
            v = split(self.W_V(x))
            bias = self.rpe(T)
            if self.dp:
                q, k = split(self.W_Q(x)), split(self.W_K(x))
                w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh) + bias, dim=-1)  # (N, H, T, T)
                out = w @ v
            else:
                w = torch.softmax(bias.expand(self.H, T, T), dim=-1)  # (H, T, T): lag-only weights
                out = torch.einsum("htu,nhud->nhtd", w, v)
            return self.W_O(out.transpose(1, 2).reshape(N, T, self.H * self.dh))

    class Block(nn.Module):
        def __init__(self, c: ModelConfig):
            super().__init__()
            norm = (lambda: nn.LayerNorm(c.d_model)) if c.layer_norm else nn.Identity
            self.n1, self.attn = norm(), Attention(c)
            self.ffn = None
            if c.ffn_width:
                self.n2 = norm()
                self.ffn = nn.Sequential(nn.Linear(c.d_model, c.ffn_width), nn.ReLU(), nn.Linear(c.ffn_width, c.d_model))

        def forward(self, x):
            x = x + self.attn(self.n1(x))
            if self.ffn is not None:
                x = x + self.ffn(self.n2(x))
            return x

    class WangETransformer(nn.Module):
        """``forward((N, T) inputs) -> (N, T, out_dim)``: real scalars or token ids in, regression or logits out."""

        def __init__(self, c: ModelConfig):
            super().__init__()
            self.config = c
            self.embed = nn.Embedding(c.vocab_size, c.d_model) if c.input_kind == "tokens" else nn.Linear(1, c.d_model)
            self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
            self.norm = nn.LayerNorm(c.d_model) if c.layer_norm else nn.Identity()
            self.unembed = nn.Linear(c.d_model, c.out_dim)

        def forward(self, inputs):
            T = inputs.shape[1]
            if T > self.config.max_len:
                raise HmmtxError(f"inputs: length {T} exceeds the model's maximum {self.config.max_len}")
            x = self.embed(inputs) if self.config.input_kind == "tokens" else self.embed(inputs[..., None])
            for blk in self.blocks:
                x = blk(x)
            return self.unembed(self.norm(x))

    return WangETransformer


_CLASS = None


def build_model(config: ModelConfig):
    """A freshly initialised model in float32 (PyTorch default init; the caller seeds torch)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build_classes()
    return _CLASS(config)


def count_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class RunConfig:
    """Optimiser and run settings: AdamW, linear warm-up then cosine decay (the ICL trainer's schedule,
    :func:`verify.training.lr_at`), gradient clipping, ``seed`` for the initialisation and the training draws,
    ``threads`` torch intra-op threads, ``eval_size`` validation sequences, ``n_evals`` validation points."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    eval_size: int = 256
    n_evals: int = 10
    data_seed: int = 12345
    train_size: int = 0  # > 0: a fixed training corpus of this many sequences (the LM stand-in); 0: fresh samples

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "threads", "eval_size", "n_evals"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise HmmtxError(f"run config: {name} must be a positive integer, got {v!r}")
        for name in ("warmup", "seed", "data_seed", "train_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise HmmtxError(f"run config: {name} must be an integer >= 0, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise HmmtxError(f"run config: lr must be a positive finite number, got {self.lr!r}")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise HmmtxError(f"run config: {name} must be a finite number >= 0, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunResult(NamedTuple):
    """One trained model. ``losses`` (steps,) training loss per step; ``val_steps``/``val_losses`` the validation
    curve (step 0 = the untrained model, last = the final model); ``final_val`` = ``val_losses[-1]``;
    ``initial_val`` = ``val_losses[0]``; ``bayes_val`` the Bayes-optimal validation loss where known (LM stand-in),
    else None; ``n_params``; ``seconds`` wall time of training."""

    model: Any
    config: ModelConfig
    run: RunConfig
    losses: list
    val_steps: list
    val_losses: list
    initial_val: float
    final_val: float
    bayes_val: float | None
    n_params: int
    seconds: float


def _loss(task: Any, out: Any, targets: Any, mask: Any):
    torch = _torch()
    if task.loss == "ce":
        return torch.nn.functional.cross_entropy(out[mask], targets[mask])
    return torch.mean((out[..., 0][mask] - targets[mask]) ** 2)


def _tensors(task: Any, batch: Any):
    from verify.experiments.wang_e_tasks import scored

    torch = _torch()
    return torch.as_tensor(batch.inputs), torch.as_tensor(batch.targets), torch.as_tensor(scored(task, batch))


def evaluate(model: Any, task: Any, batch: Any) -> float:
    """Mean loss of ``model`` on ``batch`` over the scored positions (MSE or next-token cross-entropy, nats)."""
    torch = _torch()
    x, y, m = _tensors(task, batch)
    with torch.no_grad():
        return float(_loss(task, model(x), y, m))


def model_config_for(task: Any, **arch: Any) -> ModelConfig:
    """The architecture ``arch`` with the task's input kind, vocabulary, output size and length filled in."""
    return ModelConfig(input_kind=task.input_kind, vocab_size=task.vocab_size, out_dim=task.out_dim,
                       max_len=task.seq_len, **arch)


def train(config: ModelConfig, task: Any, run: RunConfig, *, progress: bool = False) -> RunResult:
    """Train a fresh model on ``task``; deterministic from ``run.seed`` (same seed, threads, machine -> same weights).

    Training batches: fresh draws from ``default_rng([seed, 0])``, or rows of a fixed corpus of ``run.train_size``
    sequences (drawn from ``default_rng([data_seed, 1])``, the same for every seed). Validation: ``eval_size``
    sequences from ``default_rng([data_seed, 2])``, the same for every model and seed.
    """
    from verify.training import deterministic_torch, lr_at, optimizer_step, progress_bar

    torch = _torch()
    val = task.sample(run.eval_size, np.random.default_rng([run.data_seed, 2]))
    corpus = task.sample(run.train_size, np.random.default_rng([run.data_seed, 1])) if run.train_size else None
    bayes = None
    if val.bayes_nll is not None:
        from verify.experiments.wang_e_tasks import scored

        bayes = float(val.bayes_nll[scored(task, val)].mean())
    eval_at = sorted({0, *np.linspace(0, run.steps, run.n_evals + 1).astype(int).tolist()})
    with deterministic_torch(run.threads):
        torch.manual_seed(run.seed)
        rng = np.random.default_rng([run.seed, 0])
        model = build_model(config)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "rpe" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "rpe" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": run.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=run.lr, betas=(0.9, 0.98))
        losses: list[float] = []
        val_steps, val_losses = [], []
        t0 = time.perf_counter()
        with progress_bar(progress, run.steps) as pb:
            bar = pb.add_task(config.label(), total=run.steps, loss=float("nan")) if pb is not None else None
            for step in range(run.steps):
                if step in eval_at:
                    model.eval()
                    val_steps.append(step)
                    val_losses.append(evaluate(model, task, val))
                    model.train()
                if corpus is None:
                    batch = task.sample(run.batch_size, rng)
                else:
                    idx = rng.integers(0, run.train_size, size=run.batch_size)
                    batch = type(corpus)(corpus.inputs[idx], corpus.targets[idx], None)
                x, y, m = _tensors(task, batch)
                loss = _loss(task, model(x), y, m)
                lv = optimizer_step(model, opt, loss, lr=lr_at(step, run), grad_clip=run.grad_clip)
                if not math.isfinite(lv):
                    raise HmmtxError(f"training {config.label()} diverged at step {step} (loss {lv}); lower the lr")
                losses.append(lv)
                if pb is not None:
                    pb.update(bar, advance=1, loss=lv)
        seconds = time.perf_counter() - t0
        model.eval()
        val_steps.append(run.steps)
        val_losses.append(evaluate(model, task, val))
    return RunResult(model, config, run, losses, val_steps, val_losses, val_losses[0], val_losses[-1], bayes,
                     count_parameters(model), seconds)


# ---------------------------------------------------------------------------------------------- checkpoints
class Checkpoint(NamedTuple):
    """A loaded run: the model (eval mode), its config, and the run's metadata (task, optimiser, seed, metrics)."""

    model: Any
    config: ModelConfig
    meta: dict


def save_checkpoint(model: Any, config: ModelConfig, meta: dict, path: str | Path) -> Path:
    """Atomically write ``{format, config, meta, state_dict}`` (plain containers: loadable with weights_only)."""
    from hmm.io import atomic_write_bytes

    torch = _torch()
    payload = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "meta": meta,
               "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """``torch.load(..., weights_only=True)``; every problem is one HmmtxError naming the file."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise HmmtxError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise HmmtxError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise HmmtxError(f"{path}: not a Wang & E experiment checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    config = ModelConfig.from_dict(payload["config"])
    model = build_model(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise HmmtxError(f"{path}: weights do not match the stored config ({str(exc).splitlines()[0][:200]})") from None
    model.eval()
    return Checkpoint(model, config, dict(payload.get("meta", {})))


__all__ = ["RunConfig", "RunResult", "train", "evaluate", "model_config_for", "ModelConfig", "ATTENTION", "RPE", "build_model", "count_parameters", "t5_bucket_table",
           "initial_rpe_slopes", "Checkpoint", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]
