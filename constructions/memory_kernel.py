"""W1/W3 memory kernels (Wang & E 2024) as a registered construction: ``hmmtx run memory-kernel``.

A reconstruction in the spirit of Wang & E (2024); the weights, conventions and bound are documented in
:mod:`constructions.memory.model` and ``docs/constructions/memory_kernels.md``. This module builds the framework
:class:`~constructions.transformer.ConstructedTransformer` (one layer: DP-free RPE heads + ReLU FFN), the reference
(the target functional) and the claimed bound, and registers the construction (with a verify adapter, since its
inputs are real sequences, not HMM tokens).

Framework notes (nothing in the framework was changed): real inputs ride the id-based embedding through a value
vocabulary (input id ``i`` = the value ``v_i``, id 0 = BOS with value 0); lag 0 is masked by a finite bias
(:data:`~constructions.memory.model.LAG0_MASK`) since the exact weight tables hold rationals, not ``-inf``; the
outputs are read from the residual blocks ``y`` and ``mem`` (a :class:`Readout` normalises to a distribution).
"""

from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass
from typing import Any, NamedTuple

import mpmath
import numpy as np

from constructions.blocks import AttentionHead, Embedding, Layer, ReLUFFN, frac_zeros
from constructions.layout import Layout
from constructions.memory.kernels import KernelFit, head_weight, rpe_kind
from constructions.memory.model import (
    LAG0_MASK,
    NAME,
    PROVENANCE,
    READOUTS,
    MemorySpec,
    ReadoutNet,
    default_rpe,
    fit_memories,
    parse_memories,
    readout_net,
)
from constructions.estimates import memory_kernel_bytes
from constructions.registry import AttentionDefaults, ConstructionEntry, Param, VerifySweep, register
from constructions.transformer import BoundReport, ConstructedTransformer, check_attention, spec_for
from constructions.types import ModelInfo
from hmm.errors import HmmtxError
from hmm.model import parse_fraction, show_text

#: Default input-value grid always in the vocabulary (so ``inspect`` and short examples work).
DEFAULT_VALUES = tuple(Fraction(k, 4) for k in range(-4, 5))
#: Largest sequence length whose claimed bound is computed (finite-window kernels in mpmath, O(T^2 H)).
MAX_BOUND_LENGTH = 1024


# ---------------------------------------------------------------------------------------------- inputs
def parse_inputs(text: str) -> np.ndarray:
    """``"0.5 -1 0.25"`` (spaces or commas; ``|`` separates sequences of equal length) -> (N, T) float64 in [-1, 1]."""
    if not isinstance(text, str) or not text.strip():
        raise HmmtxError("--tokens: give a real input sequence, e.g. '0.5 -1 0.25 0'")
    seqs = []
    for part in text.split("|"):
        items = part.replace(",", " ").split()
        vals = []
        for i, v in enumerate(items):
            q = parse_fraction(v, f"--tokens item {i}")
            if abs(q) > 1:  # every input lies in [-1, 1] (checked here, before float() could overflow)
                raise HmmtxError(f"--tokens item {i}: {show_text(v)!r} is outside [-1, 1]")
            vals.append(float(q))
        seqs.append(vals)
    if len({len(q) for q in seqs}) > 1:
        raise HmmtxError(f"--tokens: sequences separated by '|' must have equal lengths, got {[len(q) for q in seqs]}")
    arr = check_inputs(seqs)
    return arr[0] if arr.shape[0] == 1 else arr


def check_inputs(x: Any) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (ValueError, TypeError):
        raise HmmtxError("inputs: sequences must be numbers of equal length") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise HmmtxError(f"inputs: expected shape (N, T) with T >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise HmmtxError("inputs: values must be finite")
    if np.any(np.abs(arr) > 1):
        i = np.argwhere(np.abs(arr) > 1)[0]
        raise HmmtxError(f"inputs: value {float(arr[tuple(i)])!r} at sequence {i[0]}, position {i[1]} is outside [-1, 1]")
    return arr


class MemoryCodec:
    """Real inputs <-> input ids; outputs from the residual blocks.

    Id 0 = PAD (value 0), id i = ``values[i-1]``. Every sequence is preceded by ``prefix + 1`` PAD positions (a BOS
    and a burn-in of zeros): they hold no data but take part in every head's softmax normalisation, so near the
    sequence start each head's kernel is normalised over ``t + prefix + 1`` lags, close to the infinite past.
    """

    def __init__(self, values: tuple[float, ...], layout: Layout, prefix: int) -> None:
        self.values = values
        self.index = {v: i + 1 for i, v in enumerate(values)}
        self.layout = layout
        self.prefix = int(prefix)

    def encode(self, tokens: Any) -> np.ndarray:
        x = check_inputs(tokens)
        off = self.prefix + 1
        ids = np.zeros((x.shape[0], x.shape[1] + off), dtype=np.int64)
        for (n, t), v in np.ndenumerate(x):
            i = self.index.get(float(v))
            if i is None:
                raise HmmtxError(f"input value {v!r} is not in this model's value vocabulary (rebuild with these inputs)")
            ids[n, t + off] = i
        return ids

    def decode(self, model: ConstructedTransformer, trace: Any, tokens: Any) -> dict:
        h = trace.residuals[-1][:, self.prefix + 1 :]
        if np.ndim(tokens) == 1:  # a single sequence given as (T,): outputs without the batch axis
            h = h[0]
        return {"y": h[..., self.layout.index("y")], "memory": h[..., self.layout["mem"]]}


# ---------------------------------------------------------------------------------------------- build
def _spec_from_params(memories: str, rpe: str, heads: int, grid_beta: float, p0_lin: float, p0_log: float,
                      readout: str, ffn_width: int, seed: int, matched: bool) -> MemorySpec:
    mems = parse_memories(memories)
    if rpe == "auto":
        types = tuple(default_rpe(m) for m in mems)
    else:
        types = tuple(t.strip() for t in rpe.split(","))
        if len(types) == 1:
            types = types * len(mems)
    return MemorySpec(mems, types, int(heads), float(grid_beta), float(p0_lin), float(p0_log), readout,
                      int(ffn_width), int(seed), bool(matched))


def _lag_bias(fit_rpe: str, p: float, n_lags: int, beta: float) -> np.ndarray:
    """Exact table ``b(s)`` for lags ``0..n_lags-1``: ``LAG0_MASK / beta``, then ``p phi(s) / beta`` (float64 values,
    exactly). Every entry is divided by beta, the mask included, so the score ``beta b(s)`` and the kernel do not
    depend on beta (an undivided mask let the current token leak into every head at small beta)."""
    out = np.empty(n_lags, dtype=object)
    out[0] = Fraction(LAG0_MASK / beta)
    for s in range(1, n_lags):
        v = -p * rpe_kind(fit_rpe).phi_scalar(s) / beta
        out[s] = Fraction(v)
    return out


@dataclass(frozen=True)
class MemoryInfo(ModelInfo):
    """Model metadata of the memory-kernel construction (``model.info``; read by its bound and tests).

    Fields:
        spec:   the :class:`~constructions.memory.model.MemorySpec`
        fits:   one :class:`~constructions.memory.kernels.KernelFit` per memory
        net:    the :class:`~constructions.memory.model.ReadoutNet`
        radius: radius of the FFN inputs
        prefix: zero-valued burn-in positions before the data
    """

    spec: MemorySpec
    fits: tuple
    net: ReadoutNet
    radius: float
    prefix: int


def build(spec: MemorySpec, *, max_len: int = 64, values: Any = (), beta: float = 1.0, prefix: int = 256,
          dtype: Any = None) -> ConstructedTransformer:
    """The single-layer DP-free construction for ``spec`` on sequences of length <= ``max_len``.

    ``prefix``: zero-valued burn-in positions before the data (after the BOS); see :class:`MemoryCodec`.

    ``values``: input values the embedding must know (the default grid ``k/4`` is always included).
    ``beta``: the framework's softmax inverse temperature; biases are divided by it so the kernel is unchanged.
    """
    import torch

    if not isinstance(max_len, int) or max_len < 1:
        raise HmmtxError(f"max_len={max_len!r} must be a positive integer")
    if not isinstance(prefix, int) or not 0 <= prefix <= 4096:
        raise HmmtxError(f"prefix={prefix!r} must be an integer in 0..4096")
    beta = check_attention("softmax", beta)
    fits = fit_memories(spec)
    M = len(fits)
    vals = sorted({float(v) for v in DEFAULT_VALUES} | {float(v) for v in np.asarray(values, dtype=np.float64).ravel()})
    check_inputs(np.array(vals))
    # FFN inputs in the model: |x| + sum_k |mem_k| <= 1 + sum |c| (each head averages x); used for round-off.
    radius = 1.0 + sum(float(np.sum(np.abs(f.weights))) for f in fits)
    # the target's ridge variable x_t + sum_k z_k has |.| <= 1 + M (|x| <= 1, unit-l1 kernels): the tanh readout is
    # interpolated there; outside, the interpolant continues with slopes in [0, 1], so its Lipschitz bound holds.
    net = readout_net(spec.readout, M, spec.ffn_width, spec.seed, 1.0 + M)

    lay = Layout()
    lay.add("x", 1, "the current input x_t (0 at BOS)")
    lay.add("mem", M, "extracted memories z_k = sum_s K_k(s) x_{t-s}")
    lay.add("y", 1, "readout f(x_t, z_1..z_M)")
    lay.freeze()
    D = lay.width

    W_E = frac_zeros(len(vals) + 1, D)
    for i, v in enumerate(vals):
        W_E[i + 1, lay.index("x")] = Fraction(v)  # id i+1 embeds its value; BOS (id 0) is the zero vector
    emb = Embedding(W_E, ("PAD",) + tuple(f"x={v:g}" for v in vals))

    heads = []
    n_lags = max_len + prefix + 1
    for k, fit in enumerate(fits):
        for h, (p, c) in enumerate(zip(fit.grid.exponents, fit.weights)):
            if not math.isfinite(c):
                raise HmmtxError(f"memory {k}: head weight {h} overflows float64 (H={fit.grid.H} too large to run)")
            W_V = frac_zeros(1, D)
            W_V[0, lay.index("x")] = Fraction(1)  # value = x_{t-s}
            W_O = frac_zeros(D, 1)
            W_O[lay.index("mem", k), 0] = Fraction(float(c))  # mem[k] += c_h * (head average of x)
            # DP-free: zero query/key rows; the score is the RPE bias alone, softmax over lags >= 1 gives a_p.
            heads.append(AttentionHead(frac_zeros(0, D), frac_zeros(0, D), W_V, W_O, _lag_bias(fit.grid.rpe, float(p), n_lags, beta),
                                       name=f"m{k}h{h}", description=f"{fit.grid.rpe}-type p={p:g} -> mem[{k}] * {c:.6g}",
                                       value_labels=("x",)))
    m = net.W.shape[0]
    W_in = frac_zeros(m, D)
    b_in = np.array([Fraction(float(v)) for v in net.b], dtype=object)
    W_out = frac_zeros(D, m)
    b_out = frac_zeros(D)
    cols = [lay.index("x")] + [lay.index("mem", k) for k in range(M)]
    for j in range(m):
        for i, col in enumerate(cols):
            W_in[j, col] = Fraction(float(net.W[j, i]))
        W_out[lay.index("y"), j] = Fraction(float(net.a[j]))  # y = a . relu(W v + b) + c
    b_out[lay.index("y")] = Fraction(float(net.c))
    ffn = ReLUFFN(W_in, b_in, W_out, b_out, tuple(f"u{j}" for j in range(m)))
    layer = Layer("layer0", tuple(heads), ffn, (), "DP-free RPE heads extract memories; ReLU FFN computes the readout")
    sp = spec_for(NAME, lay, [layer], max_positions=n_lags, attention="softmax", beta=beta, provenance=PROVENANCE,
                  parameters={"memories": [t.label for t in spec.memories], "rpe": list(spec.rpe), "heads_per_memory":
                              [f.grid.H for f in fits], "readout": spec.readout, "max_len": max_len, "prefix": prefix,
                              "log10_max_weight": max(f.log10_max_weight for f in fits)})
    model = ConstructedTransformer(lay, emb, [layer], [], sp, MemoryCodec(tuple(vals), lay, prefix), bound_fn=claimed_bound,
                                   attention="softmax", beta=beta, dtype=dtype or torch.float64,
                                   info=MemoryInfo(spec=spec, fits=tuple(fits), net=net, radius=radius, prefix=prefix))
    return model


# ---------------------------------------------------------------------------------------------- reference and bound
def reference(spec: MemorySpec, tokens: Any, net: ReadoutNet | None = None) -> dict:
    """Target functional (float64): ``z_k(t) = sum_{s=1..t} rho_k(s) x_{t-s}``; ``y_t = f(x_t, z(t))``."""
    x = check_inputs(tokens)
    N, T = x.shape
    s = np.arange(1, T + 1)
    z = np.zeros((N, T, len(spec.memories)))
    for k, t in enumerate(spec.memories):
        rho = t.values(s)
        for tt in range(1, T):
            z[:, tt, k] = x[:, tt - 1 :: -1][:, :tt] @ rho[:tt]
    if net is None:
        fits_radius = 1.0  # only the target function is needed
        net = readout_net(spec.readout, len(spec.memories), spec.ffn_width, spec.seed, fits_radius + 1)
    v = np.concatenate([x[..., None], z], axis=-1)
    out = {"y": net.target(v), "memory": z}
    if np.ndim(tokens) == 1:
        out = {k: a[0] for k, a in out.items()}
    return out


class PositionBound(NamedTuple):
    """Per-position bound parts, (T,) arrays: ``kernel[t, k] = E_k(t)`` (exact finite-window l1 error), ``memory``
    = ``xmax max_k E_k(t)``, ``y`` = ``sum_k L_k xmax E_k(t) + E_ffn``."""

    kernel: np.ndarray
    memory: np.ndarray
    y: np.ndarray


def position_bounds(fits: list[KernelFit], net: ReadoutNet, T: int, xmax: float = 1.0, prefix: int = 0) -> PositionBound:
    """``E_k(t) = sum_{s=1..t} |K_k^{(n)}(s) - rho_k(s)|``, ``n = t + prefix + 1``, for ``t = 0..T-1`` (160 bits).

    ``K^{(n)}(s) = sum_h c_h w_h(s) / Z_h(n)``: the heads normalise over the ``n`` lags ``1..n`` (lags beyond ``t``
    are the BOS and the burn-in, value 0: they enter the normaliser but not the sum).
    """
    if T > MAX_BOUND_LENGTH:
        raise HmmtxError(f"claimed bound computed up to T={MAX_BOUND_LENGTH} positions, got {T}")
    E = np.zeros((T, len(fits)))
    with mpmath.workprec(160):
        for k, fit in enumerate(fits):
            ps = fit.grid.exponents_mp()
            w = [[head_weight(fit.grid.rpe, p, mpmath.mpf(s)) for s in range(1, T + prefix + 1)] for p in ps]
            Z = [list(np.cumsum(np.array(wk, dtype=object))) for wk in w]
            rho = fit.target.values_mp(T)
            for t in range(1, T):
                n = t + prefix + 1
                coef = [fit.weights_mp[h] / Z[h][n - 1] for h in range(len(ps))]
                E[t, k] = float(mpmath.fsum(abs(mpmath.fsum(coef[h] * w[h][s] for h in range(len(ps))) - rho[s])
                                            for s in range(t)))
    L = net.lipschitz[1:]
    return PositionBound(E, xmax * E.max(axis=1), xmax * (E @ L) + net.ffn_error)


def roundoff_allowance(model: ConstructedTransformer, T: int, mode: str, xmax: float = 1.0) -> float:
    """Stated float allowance ``4 (1 + max L) xmax u sum_{k,h} |c_kh| (4 E_h|b| + 2P + 10) + 4 u sum_j |a_j|(|W_j|_1 R + |b_j|)(D + 8)``.

    ``u`` = unit round-off of the mode; ``P`` = positions (data, BOS and burn-in); ``E_h|b|`` = the mean |score| of
    head h under its own attention weights over the longest window (each weight's exponent is rounded with
    relative error ~ u |b|, twice: the bias table and the max-subtraction); the softmax sum of P terms, the exp
    and the division give ``(2P + 10) u``; the FFN's dot products add the second term (``R`` = radius of the FFN
    inputs, ``D`` = width). The factor 4 covers second-order terms. Worst-case (not statistical) bounds.
    """
    u = 2.0**-53 if mode == "float64" else 2.0**-24
    fits, net, R = model.info.fits, model.info.net, model.info.radius
    P = T + 1 + model.info.prefix
    lags = np.arange(1, P, dtype=np.float64)
    heads = 0.0
    for fit in fits:
        for p, c in zip(fit.grid.exponents, fit.weights):
            score = p * rpe_kind(fit.grid.rpe).phi(lags)
            w = np.exp(-(score - score.min()))
            mean_b = float(np.sum(w * score) / np.sum(w)) if len(lags) else 0.0
            heads += abs(float(c)) * (4 * mean_b * (1 + 1e-6) + 2 * P + 10)
    ffn = float(np.sum(np.abs(net.a) * (np.abs(net.W).sum(axis=1) * R + np.abs(net.b))))
    D = model.layout.width
    return 4 * u * (heads * xmax * (1 + float(np.max(net.lipschitz))) + ffn * (D + 8))


def claimed_bound(model: ConstructedTransformer, tokens: Any, mode: str = "float64") -> BoundReport:
    """max over positions and outputs (``y`` and ``memory``) of the bound in :mod:`constructions.memory.model`."""
    if mode not in ("float64", "float32"):
        raise HmmtxError(f"memory-kernel runs in float64/float32 (softmax weights are not rational), got mode {mode!r}")
    x = check_inputs(tokens)
    xmax = float(np.max(np.abs(x))) if x.size else 0.0
    T = x.shape[1]
    pb = position_bounds(model.info.fits, model.info.net, T, xmax, model.info.prefix)
    leak = float(max(pb.memory.max(), pb.y.max()))
    allow = roundoff_allowance(model, T, mode, max(xmax, 1e-300))
    csum = sum(float(np.sum(np.abs(f.weights))) for f in model.info.fits)
    trivial = float(np.max(model.info.net.lipschitz)) * (1 + csum) * 2 + model.info.net.ffn_error + 2
    note = (f"exact finite-window l1 kernel errors (max_t E_k(t) = {pb.kernel.max():.3e}) x Lipschitz + FFN "
            f"error {model.info.net.ffn_error:.2e}; heuristic round-off allowance {allow:.2e} ({mode})")
    if leak + allow >= trivial:
        note = (f"VACUOUS: the claimed bound {leak + allow:.3g} is not below the trivial bound {trivial:.3g} "
                f"(Lipschitz x (1 + sum |c|) x 2 + FFN error + 2); " + note)
    return BoundReport(leak + allow, leak, allow, max(trivial, leak + allow), note)


# ---------------------------------------------------------------------------------------------- registry hooks
_PARAMS = (
    Param("memories", str, "exp:0.35,power:2.25", "memories: kind:param list (exp:LAM, power:ALPHA, spike:T)"),
    Param("rpe", str, "auto", "RPE type per memory: auto (lin for exp/spike, log for power), lin, log, or a list"),
    Param("heads", int, 8, "heads per memory (1..64)"),
    Param("grid_beta", float, 0.1, "exponent spacing of the head grid (p_k = p0 + grid_beta (k-1))"),
    Param("p0_lin", float, 0.1, "lin-type base exponent"),
    Param("p0_log", float, 2.0, "log-type base exponent (> 1)"),
    Param("readout", str, "tanh", "readout f: tanh (smooth, PL-approximated at width m), relu (exact ReLU net), identity",
          choices=READOUTS),
    Param("ffn_width", int, 32, "FFN width m"),
    Param("seed", int, 0, "seed of the random ReLU readout"),
    Param("max_len", int, 0, "longest sequence (0: the input's length, at least 64)"),
    Param("prefix", int, 256, "zero-valued burn-in positions before the data (softmax normalisers near the infinite past)"),
)


def _params_spec(params: dict) -> tuple[MemorySpec, int]:
    p = dict(params)
    max_len = int(p.pop("max_len", 0) or 0)
    prefix = p.pop("prefix", 256)
    matched = bool(p.pop("matched", False))
    return _spec_from_params(matched=matched, **p), max_len, prefix


def _build_entry(source: Any, tokens: Any, *, attention: str = "softmax", beta: float | None = None, **params: Any):
    if attention != "softmax":
        raise HmmtxError("memory-kernel needs softmax attention (its heads are RPE kernels): use --attention softmax --beta 1")
    spec, max_len, prefix = _params_spec(params)
    x = None if tokens is None else check_inputs(tokens)
    T = 0 if x is None else x.shape[1]
    return build(spec, max_len=max(max_len or 64, T), values=() if x is None else x, beta=1.0 if beta is None else beta,
                 prefix=prefix)


def _reference_entry(source: Any, tokens: Any, *, exact: bool = False, **params: Any) -> dict:
    spec, _, _ = _params_spec(params)
    return reference(spec, tokens)


def _register() -> ConstructionEntry:
    from constructions.memory.sweep import SWEEP

    return register(ConstructionEntry(
        name=NAME,
        estimate_bytes=memory_kernel_bytes,
        summary="W1/W3 (Wang & E): one layer of DP-free lin/log RPE heads extracts memories, a ReLU FFN reads out",
        provenance=PROVENANCE,
        input_kind="none",
        build=_build_entry,
        reference=_reference_entry,
        parse_tokens=parse_inputs,
        params=_PARAMS,
        outputs=("y", "memory"),
        default_tokens="0.5 -1 0.25 0 1 -0.5 0.75",
        modes=("float64", "float32"),
        bound="exact finite-window l1 kernel error x readout Lipschitz + FFN error + round-off allowance",
        bound_covers=("y", "memory"),
        exact_reference=False,  # the target functional is evaluated in float64 (no rational reference)
        # DP-free heads are softmax heads; their biases are divided by beta, so beta changes nothing
        attention=AttentionDefaults("softmax", 1.0),
        verify=VerifySweep(betas=(), custom=SWEEP),
    ))


ENTRY = _register()

__all__ = ["build", "reference", "claimed_bound", "position_bounds", "roundoff_allowance", "parse_inputs",
           "check_inputs", "MemoryCodec", "ENTRY", "DEFAULT_VALUES"]
