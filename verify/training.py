"""A small GPT-style Transformer trained on in-context mixtures of HMMs, exposing the probe protocol.

The model is a standard decoder-only, pre-LayerNorm Transformer (GPT-2 style): token embedding ``W_E``, learned
absolute positions (``pos="learned"``) or a learned per-head relative-position bias ``b_h(u - v)`` on the
attention logits (``pos="rpe"``, T5-style without buckets), causal softmax attention (``W_Q, W_K, W_V, W_O``), GELU
MLP, final LayerNorm and unembedding ``W_U`` onto the V observation symbols. It is trained with next-token
cross-entropy on the positions whose next stream item is an observation (SEPs are deterministic in the fixed
layout and the Bayes predictive is a law over observations only).

:meth:`TinyGPT.trace` returns a :class:`verify.probes.ProbeTrace`: every layer's residual stream (embeddings first) and
every layer's pre-softmax attention logits, the same protocol the constructions expose, so the probes run on
both.

Determinism: :func:`train` seeds torch and numpy from ``config.seed``, runs with
``torch.use_deterministic_algorithms(True)`` and ``torch.set_num_threads(config.threads)`` (both restored on
exit); the data are fresh samples every step from ``numpy.random.default_rng(seed)``. Same seed, same threads,
same machine, same device -> bit-identical weights.

Device: ``train(config, device=...)`` takes ``"cpu"`` (the default), ``"cuda"`` / ``"cuda:N"`` or ``"auto"`` (CUDA
when ``torch.cuda.is_available()``, else the CPU); see :func:`resolve_device`. The device is not part of the
config: it decides speed, not the experiment, but a CUDA run is not bit-identical to a CPU run (different
kernels), so callers record it beside their results. The weights are initialised on the CPU (same initial weights
on every device), trained on the device, and the model returned on the CPU, so evaluation, probes and
checkpoints never depend on it. On CUDA, cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for deterministic
algorithms; :func:`train` sets it when unset.
"""

from __future__ import annotations

import io
import math
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from verify.cli_args import SEED_MAX
from hmm.mixture import HMMMixture
from verify.icl_data import (
    ContextBatch,
    ContextLayout,
    mixture_references,
    sample_context_batch,
    target_mask,
    unigram_probs,
)

CHECKPOINT_FORMAT = "hmmtx-trained-gpt-v1"
_DTYPES = ("float32", "float64")
_POS = ("learned", "rpe")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (data, model, optimiser, seed). Validated on construction.

    Data: a zoo mixture of ``num_tasks`` random HMMs (``num_states`` states, ``vocab_size`` symbols, Dirichlet
    concentration ``concentration``; the mixture itself is drawn from ``mixture_seed``), contexts of ``n_demos``
    demonstrations of ``demo_len`` tokens and a test segment of ``test_len`` tokens.
    """

    # data
    num_tasks: int = 4
    num_states: int = 3
    vocab_size: int = 4
    concentration: float = 0.5
    mixture_seed: int = 0
    n_demos: int = 4
    demo_len: int = 8
    test_len: int = 8
    # model
    d_model: int = 64
    n_layers: int = 6
    n_heads: int = 4
    d_ff: int = 128
    pos: str = "learned"
    # optimiser
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # run
    seed: int = 0
    threads: int = 1
    dtype: str = "float32"
    eval_contexts: int = 2000

    def __post_init__(self) -> None:
        positive = ("num_tasks", "num_states", "vocab_size", "demo_len", "test_len", "d_model", "n_layers", "n_heads",
                    "d_ff", "steps", "batch_size", "threads", "eval_contexts")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise HmmtxError(f"train config: {name} must be a positive integer, got {v!r}")
        if self.vocab_size < 2:
            raise HmmtxError(f"train config: vocab_size must be >= 2, got {self.vocab_size}")
        if not isinstance(self.n_demos, int) or self.n_demos < 0:
            raise HmmtxError(f"train config: n_demos must be an integer >= 0, got {self.n_demos!r}")
        if self.d_model % self.n_heads:
            raise HmmtxError(
                f"train config: d_model = {self.d_model} must be divisible by n_heads = {self.n_heads}"
            )
        for name in ("lr", "concentration"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise HmmtxError(f"train config: {name} must be a positive finite number, got {v!r}")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise HmmtxError(f"train config: {name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise HmmtxError(f"train config: warmup must be an integer >= 0, got {self.warmup!r}")
        if self.pos not in _POS:
            raise HmmtxError(f"train config: pos must be one of {_POS}, got {self.pos!r}")
        if self.dtype not in _DTYPES:
            raise HmmtxError(f"train config: dtype must be one of {_DTYPES}, got {self.dtype!r}")
        for name in ("seed", "mixture_seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= SEED_MAX:
                raise HmmtxError(f"train config: {name} must be an integer in [0, {SEED_MAX}], got {v!r}")

    def estimated_bytes(self) -> float:
        """Rough memory of training this config (float32 weights, gradients and two Adam moments; activations of
        one batch through every layer; the evaluation batch), for the resource check before anything is built."""
        d, L, f, V = self.d_model, self.n_layers, self.d_ff, self.vocab_size + 3
        n = self.layout.length
        params = L * (4 * d * d + 2 * d * f + 6 * d) + 2 * V * d + n * d
        acts = max(self.batch_size, min(self.eval_contexts, 512)) * n * (L * (8 * d + 2 * f + 2 * self.n_heads * n) + V)
        return 4.0 * (4 * params + 2 * acts)

    @property
    def layout(self) -> ContextLayout:
        return ContextLayout(self.n_demos, self.demo_len, self.test_len)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HmmtxError(f"train config: unknown key(s) {sorted(unknown)}")
        return cls(**data)


#: Named presets. ``default`` needs about 6.5 CPU-minutes (one thread; measured: 34 min of wall time on a 2-core
#: machine shared at load ~9, so about 6-7 minutes when the core is free); ``tiny`` takes seconds (tests).
#: One thread by default: with other processes on the cores, 2 OpenMP threads measured 10x slower per step here.
#: float32 is used for the trained model (not for any reference): training speed on CPU, and the reported errors
#: (TV ~1e-2) are far above float32 round-off.
PRESETS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    "tiny": TrainConfig(
        num_tasks=2, num_states=2, vocab_size=3, n_demos=2, demo_len=4, test_len=4, d_model=16, n_layers=2,
        n_heads=2, d_ff=32, steps=120, batch_size=32, lr=1e-2, warmup=10, eval_contexts=200, concentration=0.3,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise HmmtxError(f"unknown training config {name!r}; choose one of {sorted(PRESETS)}")
    try:
        return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    except TypeError as exc:
        raise HmmtxError(f"train config: {exc}") from None


def make_mixture(config: TrainConfig) -> HMMMixture:
    """The training mixture: ``hmm.zoo.make_mixture("dirichlet", num_tasks, num_states, vocab_size,
    seed=mixture_seed, concentration=concentration)`` (rows of A and B Dirichlet(concentration), random initial
    law, uniform task prior). Checkpoints store the mixture itself, so a saved model is probed on its own tasks."""
    from hmm.zoo import make_mixture as zoo_mixture

    return zoo_mixture("dirichlet", config.num_tasks, config.num_states, config.vocab_size, seed=config.mixture_seed,
                       concentration=float(config.concentration))


# ---------------------------------------------------------------------------------------------------- model
def _torch():
    import torch

    return torch


def _build_model_class():
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        """Pre-LN block: ``h <- h + Attn(LN(h)); h <- h + MLP(LN(h))``."""

        def __init__(self, d: int, h: int, d_ff: int, T: int, rpe: bool):
            super().__init__()
            self.n_heads, self.d_head = h, d // h
            self.ln1 = nn.LayerNorm(d)
            self.W_Q = nn.Linear(d, d)
            self.W_K = nn.Linear(d, d)
            self.W_V = nn.Linear(d, d)
            self.W_O = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.W_in = nn.Linear(d, d_ff)
            self.W_out = nn.Linear(d_ff, d)
            # rpe_bias[h, s] = b_h(s) for lag s = u - v in [0, T)
            self.rpe_bias = nn.Parameter(torch.zeros(h, T)) if rpe else None

        def forward(self, x: Any, mask: Any, lags: Any):
            N, T, D = x.shape
            a = self.ln1(x)
            split = lambda y: y.view(N, T, self.n_heads, self.d_head).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.W_Q(a)), split(self.W_K(a)), split(self.W_V(a))
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (N, H, T, T)
            if self.rpe_bias is not None:
                scores = scores + self.rpe_bias[:, lags.clamp(min=0)]
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            out = (weights @ v).transpose(1, 2).reshape(N, T, D)
            x = x + self.W_O(out)
            x = x + self.W_out(F.gelu(self.W_in(self.ln2(x))))
            return x, scores, weights

    class TinyGPT(nn.Module):
        """Decoder-only pre-LN Transformer over stream ids (observations, SEP, BOS) predicting observations."""

        def __init__(self, config: TrainConfig):
            super().__init__()
            c = config
            T = c.layout.length
            self.config = c
            self.max_len = T
            self.W_E = nn.Embedding(c.vocab_size + 2, c.d_model)
            self.W_pos = nn.Embedding(T, c.d_model) if c.pos == "learned" else None
            self.blocks = nn.ModuleList(
                Block(c.d_model, c.n_heads, c.d_ff, T, c.pos == "rpe") for _ in range(c.n_layers)
            )
            self.ln_f = nn.LayerNorm(c.d_model)
            self.W_U = nn.Linear(c.d_model, c.vocab_size)
            self.apply(self._init)

        @staticmethod
        def _init(m: Any) -> None:
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

        @property
        def num_layers(self) -> int:
            return len(self.blocks)

        def _run(self, tokens: Any, keep: bool):
            N, T = tokens.shape
            if T > self.max_len:
                raise HmmtxError(f"tokens: length {T} exceeds the model's maximum {self.max_len}")
            pos = torch.arange(T, device=tokens.device)  # on the tokens' device (CUDA training)
            lags = pos[:, None] - pos[None, :]
            mask = lags >= 0
            x = self.W_E(tokens)
            if self.W_pos is not None:
                x = x + self.W_pos(pos)[None]
            res, scores, weights = [x], [], []
            for blk in self.blocks:
                x, s, w = blk(x, mask, lags)
                if keep:
                    res.append(x)
                    scores.append(s)
                    weights.append(w)
            logits = self.W_U(self.ln_f(x))
            return logits, res, scores, weights

        def forward(self, tokens: Any) -> Any:
            """(N, T) stream ids -> (N, T, V) next-observation logits."""
            return self._run(tokens, keep=False)[0]

        def trace(self, tokens: Any):
            """Forward pass keeping every residual stream and attention logit (see :class:`verify.probes.ProbeTrace`)."""
            from verify.probes import ProbeTrace

            with torch.no_grad():
                logits, res, scores, weights = self._run(torch.as_tensor(tokens), keep=True)
            return ProbeTrace(
                residuals=torch.stack(res).numpy(),
                attn_scores=[s.numpy() for s in scores],
                attn_weights=[w.numpy() for w in weights],
                next_token_probs=torch.softmax(logits.double(), dim=-1).numpy(),
            )

    return TinyGPT


_MODEL_CLASS = None


def build_model(config: TrainConfig):
    """A freshly initialised :class:`TinyGPT` (torch must be seeded by the caller for reproducibility)."""
    global _MODEL_CLASS
    if _MODEL_CLASS is None:
        _MODEL_CLASS = _build_model_class()
    torch = _torch()
    model = _MODEL_CLASS(config)
    return model.to(getattr(torch, config.dtype))


# ---------------------------------------------------------------------------------------------------- training
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:(0|[1-9][0-9]*))?", re.ASCII)


def check_device_name(name: str) -> str:
    """The syntax of a device name alone (no torch, nothing probed): ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise HmmtxError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` if ``torch.cuda.is_available()`` else ``"cpu"``; ``"cpu"``, ``"cuda"``, ``"cuda:N"``
    are checked (a CUDA device that is not there is a :class:`HmmtxError`, never a silent fall-back)."""
    check_device_name(name)
    torch = _torch()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    index = name.partition(":")[2]
    if not torch.cuda.is_available():
        raise HmmtxError(f"device {name!r}: no CUDA device is available here (torch.cuda.is_available() is False)")
    if index and int(index) >= torch.cuda.device_count():
        raise HmmtxError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return name


@contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """CPU determinism for the duration: deterministic algorithms on, ``threads`` intra-op threads; restored after."""
    torch = _torch()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


class EvalMetrics(NamedTuple):
    """Next-token quality on fresh contexts, over the positions whose next item is an observation.

    Fields (means over those positions):
        tv_model:    ``0.5 ||p_model - p_bayes||_1``
        tv_unigram:  ``0.5 ||p_unigram - p_bayes||_1`` (empirical observation frequencies of the same contexts)
        ce_model, ce_unigram, ce_bayes: cross-entropy (nats) of the sampled next observation
        tv_model_test: ``tv_model`` restricted to the test segment's predictions
        n_positions: number of scored positions
    """

    tv_model: float
    tv_unigram: float
    ce_model: float
    ce_unigram: float
    ce_bayes: float
    tv_model_test: float
    n_positions: int


def evaluate(model: Any, mixture: HMMMixture, batch: ContextBatch) -> EvalMetrics:
    """Compare the model's next-observation law with the Bayes predictive (:func:`verify.icl_data.mixture_references`,
    itself checked against :func:`hmm.mixture.bayes_predictive`) and with the unigram baseline."""
    torch = _torch()
    with torch.no_grad():
        logits = model(torch.as_tensor(batch.tokens))
    p_model = torch.softmax(logits.double(), dim=-1).numpy()
    ref = mixture_references(mixture, batch)
    p_bayes = ref.next_token_probs
    uni = unigram_probs(batch)
    mask = target_mask(batch)
    nxt = np.zeros_like(batch.tokens)
    nxt[:, :-1] = batch.tokens[:, 1:]
    nxt = np.where(mask, nxt, 0)
    tv_m = 0.5 * np.abs(p_model - p_bayes).sum(-1)
    tv_u = 0.5 * np.abs(uni[None, None] - p_bayes).sum(-1)
    pick = lambda p: np.take_along_axis(p, nxt[..., None], axis=-1)[..., 0]  # noqa: E731
    with np.errstate(divide="ignore"):
        ce_m = -np.log(pick(p_model))
        ce_b = -np.log(pick(p_bayes))
        ce_u = -np.log(uni[nxt])
    test = mask & batch.layout.positions().is_test[None, :]
    # the last test position predicts past the end of the stream: it has no target and is excluded by `mask`
    return EvalMetrics(
        float(tv_m[mask].mean()), float(tv_u[mask].mean()), float(ce_m[mask].mean()), float(ce_u[mask].mean()),
        float(ce_b[mask].mean()), float(tv_m[test].mean()) if test.any() else float("nan"), int(mask.sum()),
    )


class SegmentMetrics(NamedTuple):
    """Next-token quality by the segment of the predicted token (0..n_demos-1 demonstrations, n_demos = test):
    the in-context analogue of Hao et al.'s Figure 1 axis "number of demonstrations seen".

    Fields (arrays of shape (n_demos + 1,)): ``tv_model``, ``tv_unigram`` (TV against the Bayes predictive),
    ``tv_segment_only`` (TV against the Bayes predictive of the Bayes predictor that sees only the current segment:
    what a model ignoring the other demonstrations can reach at best), ``ce_model``, ``ce_bayes`` (cross-entropy of
    the sampled token, nats), ``task_posterior_max`` (mean Bayes posterior probability of the most likely task when
    the token is predicted), ``n_positions``.
    """

    tv_model: np.ndarray
    tv_unigram: np.ndarray
    tv_segment_only: np.ndarray
    ce_model: np.ndarray
    ce_bayes: np.ndarray
    task_posterior_max: np.ndarray
    n_positions: np.ndarray


def evaluate_segments(model: Any, mixture: HMMMixture, batch: ContextBatch) -> SegmentMetrics:
    """:func:`evaluate` broken down by the segment that the predicted token belongs to."""
    torch = _torch()
    with torch.no_grad():
        logits = model(torch.as_tensor(batch.tokens))
    p_model = torch.softmax(logits.double(), dim=-1).numpy()
    ref = mixture_references(mixture, batch)
    uni = unigram_probs(batch)
    mask = target_mask(batch)
    nxt = np.zeros_like(batch.tokens)
    nxt[:, :-1] = batch.tokens[:, 1:]
    nxt = np.where(mask, nxt, 0)
    seg_of_target = np.full(batch.tokens.shape[1], -1)
    seg_of_target[:-1] = batch.layout.positions().segment[1:]
    tv_m = 0.5 * np.abs(p_model - ref.next_token_probs).sum(-1)
    tv_u = 0.5 * np.abs(uni[None, None] - ref.next_token_probs).sum(-1)
    pick = lambda p: np.take_along_axis(p, nxt[..., None], axis=-1)[..., 0]  # noqa: E731
    with np.errstate(divide="ignore"):
        ce_m, ce_b = -np.log(pick(p_model)), -np.log(pick(ref.next_token_probs))
    post = ref.task_posterior.max(axis=-1)
    idx = batch.layout.positions()
    out = {k: [] for k in ("tv_m", "tv_u", "tv_s", "ce_m", "ce_b", "post", "n")}
    for s in range(batch.layout.n_demos + 1):
        sel = mask & (seg_of_target == s)[None, :]
        out["tv_m"].append(tv_m[sel].mean())
        out["tv_u"].append(tv_u[sel].mean())
        # the segment alone, after a fresh BOS: its predictions of tokens 0..n-1 align with the full stream's
        # predictions made at positions start-1 .. start+n-2 (start-1 is the preceding SEP, or BOS)
        pos = np.flatnonzero(idx.is_obs & (idx.segment == s))
        alone = ContextBatch(np.concatenate([batch.tokens[:, :1], batch.tokens[:, pos]], axis=1),
                             np.concatenate([batch.states[:, :1], batch.states[:, pos]], axis=1), batch.task,
                             ContextLayout(0, 1, len(pos)), batch.vocab_size)
        p_alone = mixture_references(mixture, alone).next_token_probs[:, : len(pos)]
        tv_s = 0.5 * np.abs(p_alone - ref.next_token_probs[:, pos - 1]).sum(-1)
        out["tv_s"].append(tv_s.mean())
        out["ce_m"].append(ce_m[sel].mean())
        out["ce_b"].append(ce_b[sel].mean())
        out["post"].append(post[sel].mean())
        out["n"].append(int(sel.sum()))
    a = {k: np.array(v) for k, v in out.items()}
    return SegmentMetrics(a["tv_m"], a["tv_u"], a["tv_s"], a["ce_m"], a["ce_b"], a["post"], a["n"])


class TrainResult(NamedTuple):
    """Fields: ``model`` (trained, eval mode), ``config``, ``mixture``, ``losses`` (per step), ``metrics``
    (:class:`EvalMetrics` on ``config.eval_contexts`` fresh contexts), ``seconds`` (wall time of training)."""

    model: Any
    config: TrainConfig
    mixture: HMMMixture
    losses: list
    metrics: EvalMetrics
    seconds: float


def lr_at(step: int, c: TrainConfig) -> float:
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    frac = (step - c.warmup) / max(1, c.steps - c.warmup)
    return c.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def train(config: TrainConfig, *, device: str = "cpu", progress: bool = False,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train :class:`TinyGPT` on fresh in-context mixture data; deterministic from ``config.seed`` (and the
    device: module docstring). The returned model is on the CPU."""
    import os

    torch = _torch()
    dev = resolve_device(device)
    if dev != "cpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism (module docstring)
    mixture = make_mixture(config)
    layout = config.layout
    with deterministic_torch(config.threads):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = build_model(config).to(dev)  # initialised on the CPU: the same start on every device
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "rpe_bias" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "rpe_bias" not in n)]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=(0.9, 0.98),
        )
        losses: list[float] = []
        t0 = time.perf_counter()
        bar = progress_bar(progress, config.steps)
        with bar as pb:
            task_id = pb.add_task("training", total=config.steps, loss=float("nan")) if pb is not None else None
            for step in range(config.steps):
                batch = sample_context_batch(mixture, layout, config.batch_size, rng)
                tokens = torch.as_tensor(batch.tokens, device=dev)
                mask = torch.as_tensor(target_mask(batch), device=dev)
                targets = torch.zeros_like(tokens)
                targets[:, :-1] = tokens[:, 1:]
                logits = model(tokens)
                loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
                lv = optimizer_step(model, opt, loss, lr=lr_at(step, config), grad_clip=config.grad_clip)
                if not math.isfinite(lv):
                    raise HmmtxError(f"training diverged at step {step} (loss {lv}); lower --lr")
                losses.append(lv)
                if pb is not None:
                    pb.update(task_id, advance=1, loss=lv)
                if on_step is not None:
                    on_step(step, lv)
        seconds = time.perf_counter() - t0
        model = model.to("cpu")
        model.eval()
        eval_rng = np.random.default_rng([config.seed, 1])  # held-out stream, independent of the training draws
        metrics = evaluate(model, mixture, sample_context_batch(mixture, layout, config.eval_contexts, eval_rng))
    return TrainResult(model, config, mixture, losses, metrics, seconds)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def optimizer_step(model: Any, opt: Any, loss: Any, *, lr: float, grad_clip: float) -> float:
    """One update shared by every trainer of the package: ``lr`` on every parameter group, ``loss.backward()``,
    the gradient norm clipped to ``grad_clip`` (0: no clipping), ``opt.step()``. Returns the loss as a float (the
    caller decides what a non-finite loss means)."""
    import torch

    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(loss.detach())


def progress_bar(enabled: bool, total: int):
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
    )


# ---------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(result: TrainResult, path: str | Path) -> Path:
    """Atomically write ``{format, config, mixture, state_dict, metrics, losses}`` (loadable with weights_only)."""
    from hmm.io import atomic_write_bytes

    torch = _torch()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": result.config.to_dict(),
        "mixture": result.mixture.to_dict(exact=False),
        "state_dict": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
        "metrics": dict(result.metrics._asdict()),
        "losses": [float(x) for x in result.losses],
        "seconds": float(result.seconds),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the model (eval mode), its config and training mixture, and the recorded metrics."""

    model: Any
    config: TrainConfig
    mixture: HMMMixture
    metrics: dict
    losses: list


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load with ``torch.load(..., weights_only=True)``; every problem is a HmmtxError naming the file."""
    from hmm.io import mixture_from_dict

    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise HmmtxError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files; keep its explanation, on one line
        text = _one_line(exc)
        if "WeightsUnpickler error:" in text:  # torch's reason, whole, without its advice to load unsafely
            reason = text[text.index("WeightsUnpickler error:"):].split(" Please use")[0].split(" Check the doc")[0]
            if "Unsupported global" in reason:  # code or arbitrary objects: refused, never executed
                raise HmmtxError(f"{path}: refused, unsafe checkpoint: it holds objects that weights-only loading "
                                 f"does not allow, and it was not executed ({reason})") from None
            raise HmmtxError(f"{path}: not a readable checkpoint ({reason})") from None
        raise HmmtxError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {text[:1000]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise HmmtxError(f"{path}: not an hmmtx training checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    missing = [k for k in ("config", "mixture", "state_dict") if k not in payload]
    if missing:
        raise HmmtxError(f"{path}: malformed checkpoint, missing key(s) {missing}")
    if not isinstance(payload["config"], dict) or not isinstance(payload["state_dict"], dict):
        raise HmmtxError(f"{path}: malformed checkpoint, 'config' and 'state_dict' must be dictionaries")
    try:
        config = TrainConfig.from_dict(payload["config"])
    except HmmtxError as exc:
        raise HmmtxError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise HmmtxError(f"{path}: malformed checkpoint config ({_one_line(exc)})") from None
    from verify.cli_args import require_fits

    require_fits(f"{path}: the checkpoint's model (d_model={config.d_model}, {config.n_layers} layers, d_ff="
                 f"{config.d_ff})", config.estimated_bytes(), "the checkpoint config is implausibly large")
    mixture = mixture_from_dict(payload["mixture"], where=f"{path}: mixture")
    model = build_model(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise HmmtxError(f"{path}: weights do not match the stored config ({_one_line(exc)[:200]})") from None
    model.eval()
    metrics, losses = payload.get("metrics", {}), payload.get("losses", [])
    if not isinstance(metrics, dict) or not isinstance(losses, (list, tuple)):
        raise HmmtxError(f"{path}: malformed checkpoint, 'metrics' must be a dictionary and 'losses' a list")
    return Checkpoint(model, config, mixture, dict(metrics), list(losses))


def _one_line(exc: BaseException) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch decorates some messages with terminal escapes
    return " ".join(text.split()) or type(exc).__name__


__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "PRESETS",
    "preset",
    "make_mixture",
    "build_model",
    "deterministic_torch",
    "EvalMetrics",
    "evaluate",
    "SegmentMetrics",
    "evaluate_segments",
    "TrainResult",
    "train",
    "save_checkpoint",
    "Checkpoint",
    "load_checkpoint",
]
