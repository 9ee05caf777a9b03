"""The single-layer DP-free Transformer for W1 (fixed sparse memories) and W3 (kernel memories), Wang & E 2024.

A reconstruction in the spirit of Wang & E (2024), notes §3.1 "explicit construction" (see
``docs/constructions/memory_kernels.md``). Target, for inputs ``x_0..x_{T-1}`` in ``[-1, 1]`` (values before the
sequence start count as 0)::

    z_k(t) = sum_{s=1..t} rho_k(s) x_{t-s}        (memory k: a spike delta_{T_k} for W1, a kernel for W3)
    y_t    = f(x_t, z_1(t), ..., z_M(t))

Model (framework :class:`~constructions.transformer.ConstructedTransformer`, softmax attention):

* positions: ``BOS`` (value 0) then the inputs; embedding ``W_E[id] = value`` into the residual block ``x``: the
  real inputs are carried by a value vocabulary (one input id per distinct value), so the framework's id-based
  embedding is used unchanged.
* layer 0 attention: for memory k, heads ``h = 1..H`` with **no query/key** (``W_Q``, ``W_K`` of zero rows: DP-free)
  and the RPE bias ``b_h(s) = p_h phi(s) / beta`` (lin ``phi(s) = -s``, log ``phi(s) = -log s``) for lags ``s >= 1``
  and a masking bias ``-2000`` at lag 0 (its softmax weight underflows to exactly 0 in float32 and float64);
  ``W_V`` reads ``x``; ``W_O`` writes ``c_h`` (the fitted output weight) into ``mem[k]``.
  *Proof sketch*: the head's attention at lag ``s`` is ``w_p(s) / sum_{j=1..t+1} w_p(j)`` (the BOS sits at lag
  ``t+1`` with value 0), so ``mem[k]`` holds ``sum_s K_k^{(t+1)}(s) x_{t-s}`` with the finite-window kernel
  ``K^{(n)} = sum_h c_h w_{p_h} / Z_h(n)``; see :func:`constructions.memory.kernels.finite_window_kernel`.
* layer 0 FFN: a ReLU network computing ``f`` from ``x`` and ``mem`` into block ``y`` (a known ReLU readout, exact;
  or the piecewise-linear interpolant of a smooth readout at width m).

Error bound at position t (every input with ``|x| <= xmax``): ``|mem_k - z_k| <= xmax E_k(t)`` with the exact
finite-window l1 error ``E_k(t) = sum_{s=1..t} |K_k^{(t+1)}(s) - rho_k(s)|``, and
``|y - f| <= sum_k L_k xmax E_k(t) + E_ffn`` with ``L_k`` the readout network's Lipschitz constant in ``z_k``;
plus a stated float round-off allowance (:func:`roundoff_allowance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from constructions.memory.kernels import (
    HeadGrid,
    KernelFit,
    TargetKernel,
    fit_kernel,
    single_head_fit,
)
from hmm.errors import HmmtxError

NAME = "memory-kernel"
PROVENANCE = (
    "reconstruction in the spirit of Wang & E 2024 (NeurIPS; arXiv 2402.00522), notes §3.1 explicit construction: "
    "single-layer DP-free Transformer, RPE heads extract the memories, ReLU FFN computes the readout"
)
#: Bias at lag 0 (the current token is carried by the residual stream, not by the memory heads).
LAG0_MASK = -2000
READOUTS = ("relu", "tanh", "identity")


# ---------------------------------------------------------------------------------------------- memories
def parse_memories(text: str) -> tuple[TargetKernel, ...]:
    """``"exp:0.35,power:2.25"`` / ``"spike:3,spike:10"`` -> target kernels (``HmmtxError`` naming the item)."""
    if not isinstance(text, str) or not text.strip():
        raise HmmtxError("--memories: give at least one memory, e.g. 'spike:3,spike:10' or 'exp:0.35,power:2.25'")
    out = []
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        kind, _, val = item.partition(":")
        if not val:
            raise HmmtxError(f"--memories: item {item!r} must look like kind:parameter (exp:0.3, power:2.5, spike:7)")
        try:
            v = float(val)
        except ValueError:
            raise HmmtxError(f"--memories: parameter of {item!r} is not a number") from None
        if kind.strip() == "spike":
            if v != int(v):
                raise HmmtxError(f"--memories: spike lag in {item!r} must be an integer")
            v = int(v)
        out.append(TargetKernel(kind.strip(), v))
    if not out:
        raise HmmtxError("--memories: give at least one memory")
    return tuple(out)


def default_rpe(t: TargetKernel) -> str:
    """lin-type for light tails (exp), log-type for heavy tails (power); lin for spikes (cheaper at short lags)."""
    return "log" if t.kind == "power" else "lin"


@dataclass(frozen=True)
class MemorySpec:
    """Everything that fixes a memory-kernel construction (validated)."""

    memories: tuple[TargetKernel, ...]
    rpe: tuple[str, ...]
    heads: int = 8
    grid_beta: float = 0.1
    p0_lin: float = 0.1
    p0_log: float = 2.0
    readout: str = "tanh"
    ffn_width: int = 16
    seed: int = 0
    matched: bool = False

    def __post_init__(self) -> None:
        if len(self.rpe) != len(self.memories):
            raise HmmtxError(f"rpe: {len(self.rpe)} types for {len(self.memories)} memories")
        for r in self.rpe:
            if r not in ("lin", "log"):
                raise HmmtxError(f"--rpe: {r!r} is not lin or log")
        if not isinstance(self.heads, int) or self.heads < 1 or self.heads > 64:
            raise HmmtxError(f"--heads={self.heads!r} must be an integer in 1..64 (heads per memory)")
        if self.readout not in READOUTS:
            raise HmmtxError(f"--readout={self.readout!r} must be one of {', '.join(READOUTS)}")
        if not isinstance(self.ffn_width, int) or self.ffn_width < 2:
            raise HmmtxError(f"--ffn-width={self.ffn_width!r} must be an integer >= 2")
        for r in self.rpe:
            HeadGrid(r, self.heads, self.p0_lin if r == "lin" else self.p0_log, self.grid_beta)


_FIT_CACHE: dict = {}


def fit_memories(spec: MemorySpec) -> list[KernelFit]:
    """Fitted head groups, one per memory (``matched``: one exactly matched head where the type allows it).

    Deterministic in ``spec``; the last few results are cached (verify builds the same spec at several lengths).
    """
    hit = _FIT_CACHE.get(spec)
    if hit is not None:
        return list(hit)
    fits = _fit_memories(spec)
    _FIT_CACHE[spec] = tuple(fits)
    while len(_FIT_CACHE) > 8:
        _FIT_CACHE.pop(next(iter(_FIT_CACHE)))
    return fits


def _fit_memories(spec: MemorySpec) -> list[KernelFit]:
    fits = []
    for t, r in zip(spec.memories, spec.rpe):
        if spec.matched and (t.kind, r) in (("exp", "lin"), ("power", "log")):
            fits.append(single_head_fit(t, r))
        else:
            fits.append(fit_kernel(t, HeadGrid(r, spec.heads, spec.p0_lin if r == "lin" else spec.p0_log, spec.grid_beta)))
    return fits


# ---------------------------------------------------------------------------------------------- readout networks
class ReadoutNet(NamedTuple):
    """``f(v) = a . relu(W v + b) + c`` on ``v = (x, z_1..z_M)`` with exact (dyadic) weights.

    ``lipschitz[i]`` bounds ``|df/dv_i|`` (``sum_j |a_j| |W_ji|``); ``ffn_error`` bounds ``|f_net - f|`` on the
    box ``|v_i| <= radius`` (0 for the ``relu`` readout, which *is* the network); ``target`` evaluates ``f``.
    """

    W: np.ndarray  # (m, 1+M) float64 (dyadic values, converted exactly)
    b: np.ndarray  # (m,)
    a: np.ndarray  # (m,)
    c: float
    lipschitz: np.ndarray  # (1+M,)
    ffn_error: float
    radius: float
    kind: str
    target: Any

    def __call__(self, v: np.ndarray) -> np.ndarray:
        return np.maximum(v @ self.W.T + self.b, 0.0) @ self.a + self.c


def _dyadic(x: float, bits: int = 20) -> float:
    return round(x * (1 << bits)) / (1 << bits)


def readout_net(kind: str, M: int, width: int, seed: int, radius: float) -> ReadoutNet:
    """The FFN's readout network.

    * ``relu``: a random ReLU network of width ``m`` (dyadic weights; the target ``f`` *is* this network, so the FFN
      error is 0 and the attention error is isolated);
    * ``tanh``: ``f(v) = tanh(x + sum_k z_k)``, approximated by its piecewise-linear interpolant in the ridge
      variable ``r`` at ``m`` equispaced knots on ``[-R, R]`` (``R = radius``, a bound on the target's ``|r|``):
      one ReLU unit per knot. The interpolant is constant left of ``-R`` and continues with its last chord slope
      right of ``R``, so it is Lipschitz with constant ``max chord slope <= 1`` on the whole line.
      Error ``<= h^2/8 max|tanh''| = h^2 * 4/(3 sqrt 3) / 8`` with ``h = 2R/(m-1)``; Lipschitz 1 per argument.
    * ``identity``: ``f(v) = sum_k z_k`` as ``relu(r) - relu(-r)`` (exact).
    """
    n = 1 + M
    if kind == "relu":
        rng = np.random.default_rng(seed)
        W = np.vectorize(_dyadic)(rng.normal(size=(width, n)) / math.sqrt(n))
        b = np.vectorize(_dyadic)(rng.uniform(-0.5, 0.5, size=width))
        a = np.vectorize(_dyadic)(rng.normal(size=width) / math.sqrt(width))
        lip = np.abs(a) @ np.abs(W)

        def target(v: np.ndarray) -> np.ndarray:
            return np.maximum(v @ W.T + b, 0.0) @ a

        return ReadoutNet(W, b, a, 0.0, lip, 0.0, radius, kind, target)
    if kind == "identity":
        W = np.zeros((2, n))
        W[0, 1:], W[1, 1:] = 1.0, -1.0
        return ReadoutNet(W, np.zeros(2), np.array([1.0, -1.0]), 0.0, np.array([0.0] + [1.0] * M), 0.0, radius,
                          kind, lambda v: v[..., 1:].sum(axis=-1))
    # tanh ridge, piecewise-linear interpolation at m knots r_0 < ... < r_{m-1}
    R = float(radius)
    knots = np.linspace(-R, R, width)
    vals = np.tanh(knots)
    slopes = np.diff(vals) / np.diff(knots)  # m-1 chord slopes
    # g(r) = tanh(-R) + s_0 relu(r + R) + sum_{j>=1} (s_j - s_{j-1}) relu(r - r_j): m-1 units, one spare with a = 0
    W = np.ones((width, n))
    b = np.concatenate([[R], -knots[1:-1], [0.0]])
    a = np.concatenate([[slopes[0]], np.diff(slopes), [0.0]])
    h = 2 * R / (width - 1)
    err = h * h / 8 * 4 / (3 * math.sqrt(3)) * (1 + 1e-12)
    lip = np.full(n, float(np.max(np.abs(slopes))))  # the interpolant's Lipschitz constant in each argument
    return ReadoutNet(W, b, a, float(vals[0]), lip, err, radius, kind, lambda v: np.tanh(v.sum(axis=-1)))


__all__ = [
    "NAME",
    "PROVENANCE",
    "LAG0_MASK",
    "READOUTS",
    "MemorySpec",
    "ReadoutNet",
    "parse_memories",
    "default_rpe",
    "fit_memories",
    "readout_net",
]
