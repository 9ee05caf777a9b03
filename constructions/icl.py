"""H4: the in-context learner — lower layers gather neighbours, upper layers run gradient descent on the context.

A reconstruction in the spirit of Hao et al. 2025 (lower layers extract task-independent features from
neighbouring tokens; upper layers, decoupled from positions, learn the task from the demonstrations, one
gradient-descent step per layer), built from the templates of von Oswald et al. 2023 (in-context GD) and Bai et al.
2023 (the iterate stored in the residual stream, one GD step per layer). The paper's own construction could not be
read; nothing here is its Theorem. See ``docs/constructions/icl.md`` for the maths and the bound.

Stream (one context): position 0 = BOS (also the gather sink), then ``d_1 SEP d_2 SEP ... SEP test``; input ids
``0..V-1`` observations, ``V`` = SEP, ``V + 1`` = BOS. The weights depend on ``V, r, K, eta`` only — never on the
tasks: the same Transformer serves every task of every mixture over V symbols.

Layers (``G = ceil(log2(r + 1))``):

* ``gather0 .. gather{G-1}`` (positional heads of :mod:`constructions.gather`): ``slot[j]`` = one-hot of the token
  at lag ``j = 0..r``. SEP/BOS have an empty (zero) ``slot[0]``, so a slot is empty exactly where its lag lands on a
  SEP/BOS/the sink. The LAST gather layer carries the **feature FFN** (ReLU, token-local): the window *stops at the
  first empty slot* (older lags become pads: windows never reach across a SEP), giving
  ``x_cur`` (lags ``0..r-1``: the query's feature) and ``x_prev`` (lags ``1..r``, gated by ``is_train``: the
  feature of the training pair whose target is this token).
* ``moments`` (bilinear FFN, token-local): ``xx = x_prev x_prev^T`` (structural non-zeros only) and
  ``xy = x_prev y^T`` with ``y = slot[0]``.
* ``aggregate`` (one content head, no FFN): query ``one``, key ``is_train``, zero relative bias, so hard attention
  is uniform over the training tokens ``v <= u`` **selected by content** (the same weights whatever their
  positions); it writes ``A = mean xx`` and ``B = mean xy`` at every position.
* ``gd1 .. gdK`` (bilinear FFN, token-local, no attention): ``W <- W - eta (A W - B)`` from ``W = 0``.
* ``readout`` (bilinear FFN): ``z = W^T x_cur``; the unembedding reads ``z`` (next-token masses).

Features (``kind``): ``"pattern"`` (one-hot of the whole pad-aware window, ``d_x = sum_{j<=r} V^j``; A diagonal,
stored as ``A_diag``) or ``"concat"`` (per-lag one-hots over V + 1 symbols, ``d_x = r (V + 1)``; full ``A``).
"""

from __future__ import annotations

import math

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch

from constructions.blocks import (
    ONE,
    AttentionHead,
    BilinearBuilder,
    Embedding,
    Layer,
    Literal,
    ReLUBuilder,
    ReLUFFN,
    block_sum,
    frac_zeros,
    literal,
    negated,
    readout,
)
from constructions.gather import Gather
from constructions.layout import Layout
from constructions.estimates import icl_bytes
from constructions.registry import ConstructionEntry, Param, ProbeHooks, VerifySweep, register
from constructions.transformer import BoundReport, ConstructedTransformer, check_attention, spec_for
from constructions.types import ModelInfo
from hmm.errors import HmmtxError
from hmm.model import parse_fraction, show_number
from hmm.icl_reference import (
    FEATURE_KINDS,
    STATUS_NEGATIVE,
    STATUS_OK,
    STATUS_ZERO,
    ICLFeatures,
    normalise_masses,
    stream_codes,
)

NAME = "icl"
PROVENANCE = (
    "Reconstruction in the spirit of Hao et al. 2025 (lower layers gather neighbouring tokens; upper layers, "
    "position-independent, learn the task in context by one gradient-descent step per layer), with the in-context "
    "GD templates of von Oswald et al. 2023 and Bai et al. 2023; gather heads as in Rajaraman et al. 2024. Layer "
    "weights, feature maps and the bound are written for this project, not taken from any of these papers"
)
#: Multiplier of the stated float round-off allowance (see :func:`roundoff_allowance`).
ROUNDOFF_C = 32


# ---------------------------------------------------------------------------------------------- configuration
def parse_eta(value: Any, name: str = "--eta", *, allow_zero: bool = False) -> Fraction:
    """A positive (or, with ``allow_zero``, non-negative) exact rational (``"1/2"``, ``0.5``, ``Fraction``)."""
    if isinstance(value, str):
        eta = parse_fraction(value, name)
    else:
        try:
            eta = Fraction(value)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            raise HmmtxError(f"{name}: cannot read {value!r} as a number or a fraction 'p/q'") from None
    if not (eta >= 0 if allow_zero else eta > 0):
        raise HmmtxError(f"{name}: must be {'non-negative' if allow_zero else 'positive'}, got {show_number(eta)}")
    if eta > MAX_ETA:
        raise HmmtxError(f"{name}: {show_number(eta)} is out of range, must be <= {MAX_ETA} (GD with a larger step "
                         "overflows float64 within a few layers)")
    return eta


#: Largest --eta / --prior-mass accepted (convergence needs eta < 2 / lam_max anyway; see ICLConfig.eta_safe).
MAX_ETA = 1000


@dataclass(frozen=True)
class ICLConfig:
    """Parameters of the H4 construction.

    Fields:
        vocab_size: V (observation symbols; SEP and BOS are extra input ids)
        r:          window length of the features (lags 1..r for a training pair, 0..r-1 for the query)
        K:          number of gradient-descent layers (K >= 1)
        eta:        step size (exact rational; ``0 < eta < 2 / lam_max(A)`` for convergence, see :attr:`eta_safe`)
        features:   ``"pattern"`` or ``"concat"``
        max_len:    longest stream (BOS + tokens + SEPs) the relative-position tables cover
        prior_mass: alpha >= 0 (exact rational): the readout adds ``alpha / V`` to every mass, a uniform
                    pseudo-mass (0 = the pure learner; > 0 = shrinkage towards uniform, never a zero total mass)
    """

    vocab_size: int
    r: int = 2
    K: int = 4
    eta: Fraction = Fraction(1, 2)
    features: str = "pattern"
    max_len: int = 256
    prior_mass: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        for nm, v, lo in (("vocab_size", self.vocab_size, 1), ("--r", self.r, 1), ("--K", self.K, 1), ("--max-len", self.max_len, 2)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise HmmtxError(f"{nm} must be an integer >= {lo}, got {v!r}")
        object.__setattr__(self, "eta", parse_eta(self.eta))
        object.__setattr__(self, "prior_mass", parse_eta(self.prior_mass, "--prior-mass", allow_zero=True))
        if self.features not in FEATURE_KINDS:
            raise HmmtxError(f"--features must be one of {', '.join(FEATURE_KINDS)}, got {self.features!r}")
        ICLFeatures(int(self.vocab_size), int(self.r), self.features)  # validates the feature dimension

    @property
    def feats(self) -> ICLFeatures:
        return ICLFeatures(int(self.vocab_size), int(self.r), self.features)

    @property
    def lam_max_bound(self) -> int:
        """An a-priori bound on ``lam_max(A)``: ``||x||^2`` = 1 (pattern) or r (concat; every lag block has one 1)."""
        return 1 if self.features == "pattern" else int(self.r)

    @property
    def eta_safe(self) -> bool:
        """``eta * lam_max_bound < 2``: GD converges (to ``A^+ B`` on range(A)) for every context."""
        return self.eta * self.lam_max_bound < 2


# ---------------------------------------------------------------------------------------------- codec
class ICLContexts(list):
    """A batch of contexts (each a list of segments) of equal stream length, for :meth:`ConstructedTransformer.run`.
    A plain list of segments is one context."""


def _as_contexts(tokens: Any) -> tuple[list, bool]:
    if isinstance(tokens, ICLContexts):
        if len(tokens) == 0:
            raise HmmtxError("contexts: the batch is empty")
        return list(tokens), False
    return [tokens], True


@dataclass(frozen=True)
class ICLCodec:
    """Contexts -> ids ``[BOS, d_1..., SEP, ..., test...]``; outputs at positions ``1..`` (one row per stream item,
    aligned with :func:`hmm.mixture.bayes_predictive`)."""

    num_obs: int
    max_len: int

    @property
    def sep(self) -> int:
        return self.num_obs

    @property
    def bos(self) -> int:
        return self.num_obs + 1

    def encode(self, tokens: Any) -> np.ndarray:
        ctxs, _ = _as_contexts(tokens)
        rows = []
        for c in ctxs:
            codes = stream_codes(c, self.num_obs)
            ids = np.where(codes >= 0, codes, np.where(codes == -1, self.sep, self.bos)).astype(np.int64)
            rows.append(ids)
        lens = {len(r) for r in rows}
        if len(lens) != 1:
            raise HmmtxError(f"contexts: a batch needs equal stream lengths, got {sorted(lens)}")
        P = lens.pop()
        if P > self.max_len:
            raise HmmtxError(f"context: stream length {P} (BOS, tokens and SEPs) exceeds max_len {self.max_len}")
        return np.stack(rows)

    def decode(self, model: ConstructedTransformer, trace: Any, tokens: Any) -> dict:
        _, single = _as_contexts(tokens)
        z = trace.readouts["next_token"][:, 1:]
        if isinstance(z, torch.Tensor):
            rep = normalise_masses(z.detach().cpu().to(torch.float64).numpy())
            out = {
                "next_token_probs": torch.as_tensor(rep.probs, dtype=z.dtype),
                "masses": z,
                "status": torch.as_tensor(rep.status),
                "negative_mass": torch.as_tensor(rep.negative_mass, dtype=z.dtype),
            }
        else:
            probs, status, neg = normalise_masses_exact(z)
            out = {"next_token_probs": probs, "masses": z, "status": status, "negative_mass": neg}
        return {k: v[0] for k, v in out.items()} if single else out


def normalise_masses_exact(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact counterpart of :func:`hmm.icl_reference.normalise_masses` (policy ``"report"``) over Fractions:
    ``z / sum z`` when the sum is positive (status 2 if some entry is negative, kept signed), uniform when the sum is
    not positive (status 1 without negatives, 2 with). Returns (probs, status int8, negative_mass)."""
    z = np.asarray(z, dtype=object)
    V = z.shape[-1]
    probs = np.empty(z.shape, dtype=object)
    status = np.zeros(z.shape[:-1], dtype=np.int8)
    neg = np.empty(z.shape[:-1], dtype=object)
    for idx in np.ndindex(z.shape[:-1]):
        row = list(z[idx])
        s = sum(row, Fraction(0))
        n = sum((v for v in row if v < 0), Fraction(0))
        neg[idx] = n
        has_neg = any(v < 0 for v in row)
        if s > 0:
            probs[idx] = [v / s for v in row]
        else:
            probs[idx] = [Fraction(1, V)] * V
        status[idx] = STATUS_NEGATIVE if has_neg else (STATUS_OK if s > 0 else STATUS_ZERO)
    return probs, status, neg


# ---------------------------------------------------------------------------------------------- layout helpers
def _pairs(cfg: ICLConfig) -> list[tuple[int, int]]:
    """Entries ``(i, j)`` of ``x x^T`` that can be non-zero: the diagonal (pattern: one-hot), or pairs from
    different lags plus the diagonal (concat: within one lag block at most one coordinate is 1)."""
    d = cfg.feats.dim
    if cfg.features == "pattern":
        return [(i, i) for i in range(d)]
    V1 = int(cfg.vocab_size) + 1
    return [(i, j) for i in range(d) for j in range(d) if i == j or i // V1 != j // V1]


def _a_coord(cfg: ICLConfig, name: str, i: int, j: int) -> tuple:
    return (f"{name}_diag", i) if cfg.features == "pattern" else (name, i, j)


def icl_layout(cfg: ICLConfig, plan: Gather) -> Layout:
    """The residual layout (not frozen)."""
    d, V = cfg.feats.dim, int(cfg.vocab_size)
    lay = Layout()
    lay.add("one", 1, "constant 1 (biases of bilinear units)")
    lay.add("is_train", 1, "1 at observation tokens (each is one training pair)")
    lay.add("is_sep", 1, "1 at SEP")
    lay.add("is_bos", 1, "1 at BOS (position 0, also the gather sink)")
    plan.add_blocks(lay, "observations 0..V-1 (SEP/BOS: empty)")
    lay.add("x_prev", d, f"feature of the window ending at v-1 (lags 1..{cfg.r}), 0 unless is_train [{cfg.features}]")
    lay.add("x_cur", d, f"query feature: window ending here (lags 0..{cfg.r - 1}) [{cfg.features}]")
    if cfg.features == "pattern":
        lay.add("xx_diag", d, "diagonal of x_prev x_prev^T (= x_prev: one-hot)")
        lay.add("A_diag", d, "diagonal of A = mean over training tokens of x x^T")
    else:
        lay.add("xx", (d, d), "x_prev x_prev^T (structural non-zeros written)")
        lay.add("A", (d, d), "A = mean over training tokens of x x^T")
    lay.add("xy", (d, V), "x_prev y^T, y = one-hot of this token")
    lay.add("B", (d, V), "B = mean over training tokens of x y^T")
    lay.add("W", (d, V), "GD iterate W_k (W_0 = 0)")
    lay.add("z", V, "next-token masses W_K^T x_cur")
    return lay


# ---------------------------------------------------------------------------------------------- layers
def feature_ffn(cfg: ICLConfig, lay: Layout, plan: Gather) -> ReLUFFN:
    """ReLU FFN writing ``x_cur`` and ``x_prev`` from the slots (exact 0/1 outputs on 0/1 slot inputs).

    Every unit is a conjunction (:meth:`~constructions.blocks.ReLUBuilder.conjunction`) of 0/1 literals,
    ``relu(sum literals - (n - 1))`` = 1 iff all n hold, else <= 0 (each literal is a slot entry, or
    ``1 - occupancy`` for "this lag is empty", or ``is_train``). The window stops at its first empty slot: a feature
    with j real lags tests lags ``< j`` and that lag ``j`` is empty — older lags are not read, so nothing leaks
    across a SEP. ``x_cur`` reads slots ``0..r-1``; ``x_prev`` reads slots ``1..r`` and is gated by ``is_train``.
    """
    b = ReLUBuilder(lay)
    for off, block, gated in ((0, "x_cur", False), (1, "x_prev", True)):
        gate = [literal("is_train")] if gated else []
        if cfg.feats.kind == "pattern":
            _pattern_units(b, cfg, lay, plan, off, block, gate)
        else:
            _concat_units(b, cfg, lay, plan, off, block, gate)
    return b.build()


def _pattern_units(b: ReLUBuilder, cfg: ICLConfig, lay: Layout, plan: Gather, off: int, block: str,
                   gate: list[Literal]) -> None:
    """One unit per window pattern: its ``j`` real lags match and (when ``j < r``) lag ``j`` is empty."""
    r = int(cfg.r)
    for idx in range(cfg.feats.dim):
        lags = cfg.feats.window_of(idx)
        j = sum(1 for t in lags if t is not None)
        lits = [literal((plan.slot(l + off), int(lags[l]))) for l in range(j)]
        if j < r:
            lits.append(negated(block_sum(lay, plan.slot(j + off))))
        b.conjunction(lits + gate, [((block, idx), 1)], label=f"{block}[{_fmt_window(lags)}]")


def _concat_units(b: ReLUBuilder, cfg: ICLConfig, lay: Layout, plan: Gather, off: int, block: str,
                  gate: list[Literal]) -> None:
    """Per lag ``l``: symbol ``s`` at lag ``l`` with every newer lag occupied; and "the first empty lag is ``l``",
    which marks lags ``l..r-1`` as pads."""
    V, r = int(cfg.vocab_size), int(cfg.r)
    V1 = V + 1
    for l in range(r):
        newer = [block_sum(lay, plan.slot(l2 + off)) for l2 in range(l)]
        for s in range(V):
            b.conjunction([literal((plan.slot(l + off), s))] + newer + gate, [((block, l * V1 + s), 1)],
                          label=f"{block}[lag{l + off}={s}]")
        b.conjunction(newer + [negated(block_sum(lay, plan.slot(l + off)))] + gate,
                      [((block, l3 * V1 + V), 1) for l3 in range(l, r)], label=f"{block}[first pad at lag{l + off}]")


def _fmt_window(lags: Sequence[int | None]) -> str:
    return ",".join("_" if t is None else str(t) for t in lags)


def moments_ffn(cfg: ICLConfig, lay: Layout) -> Any:
    """Bilinear FFN: ``xx[i, j] = x_prev[i] x_prev[j]`` on the structural non-zeros, ``xy[i, o] = x_prev[i] y[o]``
    with ``y = slot[0]`` (the token's one-hot; zero at SEP/BOS, and x_prev is zero there anyway)."""
    b = BilinearBuilder(lay)
    d, V = cfg.feats.dim, int(cfg.vocab_size)
    for i, j in _pairs(cfg):
        b.unit(("x_prev", i), ("x_prev", j), [(_a_coord(cfg, "xx", i, j), 1)], label=f"x{i}*x{j}")
    for i in range(d):
        for o in range(V):
            b.unit(("x_prev", i), ("slot[0]", o), [(("xy", i, o), 1)], label=f"x{i}*y{o}")
    return b.build()


def aggregation_head(cfg: ICLConfig, lay: Layout, n_lags: int) -> AttentionHead:
    """Content-selected uniform average of ``[xx; xy]`` over training tokens, written into ``[A; B]``.

    Score of query u at key v <= u: ``q . k = one_u * is_train_v`` (1 on training tokens, 0 elsewhere) plus a zero
    relative bias: no position enters. Hard attention averages over the tied maxima = all training tokens
    ``v <= u``, so the head outputs ``mean_v xx_v = A`` and ``mean_v xy_v = B`` exactly. (No training token yet: all
    scores tie at 0, the average runs over BOS/SEP keys whose xx, xy are 0, so A = B = 0.)
    """
    D = lay.width
    d, V = cfg.feats.dim, int(cfg.vocab_size)
    srcs: list[tuple[int, int, str]] = []
    for i, j in _pairs(cfg):
        srcs.append((lay.index(*_a_coord(cfg, "xx", i, j)), lay.index(*_a_coord(cfg, "A", i, j)), f"xx[{i},{j}]"))
    for i in range(d):
        for o in range(V):
            srcs.append((lay.index("xy", i, o), lay.index("B", i, o), f"xy[{i},{o}]"))
    W_V = frac_zeros(len(srcs), D)
    W_O = frac_zeros(D, len(srcs))
    for k, (s, t, _) in enumerate(srcs):
        W_V[k, s] = ONE
        W_O[t, k] = ONE
    W_Q = frac_zeros(1, D)
    W_K = frac_zeros(1, D)
    W_Q[0, lay.index("one")] = ONE
    W_K[0, lay.index("is_train")] = ONE
    return AttentionHead(
        W_Q, W_K, W_V, W_O, frac_zeros(n_lags), name="aggregate",
        description="content head: score = is_train(key) (zero relative bias); uniform over training tokens; "
        "writes A = mean x x^T, B = mean x y^T",
        value_labels=tuple(lbl for _, _, lbl in srcs),
    )


def gd_ffn(cfg: ICLConfig, lay: Layout) -> Any:
    """One GD step ``W <- W - eta (A W - B)`` as a bilinear FFN: unit ``A[i,j] * W[j,o]`` adds ``-eta`` to
    ``W[i,o]`` (only structural non-zeros of A), unit ``B[i,o] * one`` adds ``+eta``. The residual connection keeps
    W, so the layer output is exactly ``W - eta (A W - B)``."""
    b = BilinearBuilder(lay)
    d, V, eta = cfg.feats.dim, int(cfg.vocab_size), cfg.eta
    for i, j in _pairs(cfg):
        for o in range(V):
            b.unit(_a_coord(cfg, "A", i, j), ("W", j, o), [(("W", i, o), -eta)], label=f"A[{i},{j}]*W[{j},{o}]")
    for i in range(d):
        for o in range(V):
            b.unit(("B", i, o), "one", [(("W", i, o), eta)], label=f"B[{i},{o}]")
    return b.build()


def readout_ffn(cfg: ICLConfig, lay: Layout) -> Any:
    """``z[o] = sum_j W[j, o] x_cur[j] + alpha / V`` (bilinear units ``W[j,o] * x_cur[j]``; the prior mass, when
    ``alpha > 0``, is one unit ``one * one``)."""
    b = BilinearBuilder(lay)
    V = int(cfg.vocab_size)
    for j in range(cfg.feats.dim):
        for o in range(V):
            b.unit(("W", j, o), ("x_cur", j), [(("z", o), 1)], label=f"W[{j},{o}]*x_cur[{j}]")
    if cfg.prior_mass:
        b.unit("one", "one", [(("z", o), cfg.prior_mass / V) for o in range(V)], label="prior mass alpha/V")
    return b.build()


# ---------------------------------------------------------------------------------------------- build
@dataclass(frozen=True)
class ICLInfo(ModelInfo):
    """Model metadata of the in-context learner (``model.info``; read by its bound, probes and tests).

    Fields:
        config:          the :class:`ICLConfig`
        gather:          the :class:`~constructions.gather.Gather` plan of the gather layers
        layer_roles:     one role per layer (``gather``, ``moments``, ``aggregate``, ``gd``, ``readout``)
        aggregate_layer: index of the aggregation layer
    """

    config: ICLConfig
    gather: Gather
    layer_roles: tuple[str, ...]
    aggregate_layer: int


def build(
    vocab_size: int,
    r: int = 2,
    K: int = 4,
    eta: Any = Fraction(1, 2),
    features: str = "pattern",
    max_len: int = 256,
    prior_mass: Any = 0,
    *,
    attention: str = "hard",
    beta: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
) -> ConstructedTransformer:
    """Build the H4 in-context learner (see the module docstring). Task-independent: only V enters the weights."""
    cfg = ICLConfig(int(vocab_size) if isinstance(vocab_size, (int, np.integer)) and not isinstance(vocab_size, bool) else vocab_size,
                    r, K, eta, features, max_len, prior_mass)
    beta = check_attention(attention, beta)
    V = int(cfg.vocab_size)
    plan = Gather(num_slots=int(cfg.r) + 1, alphabet=V, prefix="slot")
    lay = icl_layout(cfg, plan).freeze()
    D = lay.width

    # embedding: observation o -> one, is_train, slot[0][o]; SEP -> one, is_sep; BOS -> one, is_bos (empty slots)
    W_E = frac_zeros(V + 2, D)
    for o in range(V):
        W_E[o, lay.index("one")] = ONE
        W_E[o, lay.index("is_train")] = ONE
        W_E[o, lay.index("slot[0]", o)] = ONE
    W_E[V, lay.index("one")] = ONE
    W_E[V, lay.index("is_sep")] = ONE
    W_E[V + 1, lay.index("one")] = ONE
    W_E[V + 1, lay.index("is_bos")] = ONE
    emb = Embedding(W_E, tuple(f"x={o}" for o in range(V)) + ("SEP", "BOS"))

    n_lags = int(cfg.max_len)
    layers = plan.layers(lay, n_lags, name="gather")
    layers[-1] = replace(layers[-1], ffn=feature_ffn(cfg, lay, plan),
                         description=layers[-1].description + "; FFN: window features x_cur, x_prev (ReLU conjunctions)")
    layers.append(Layer("moments", ffn=moments_ffn(cfg, lay), description="xx = x_prev x_prev^T, xy = x_prev y^T"))
    layers.append(Layer("aggregate", heads=(aggregation_head(cfg, lay, n_lags),),
                        description="uniform attention over training tokens (by content): A = mean xx, B = mean xy"))
    gd = gd_ffn(cfg, lay)
    for k in range(int(cfg.K)):
        layers.append(Layer(f"gd{k + 1}", ffn=gd, description=f"GD step {k + 1}: W <- W - eta (A W - B), eta = {cfg.eta}"))
    layers.append(Layer("readout", ffn=readout_ffn(cfg, lay), description="z = W^T x_cur"))
    ro = readout(lay, "next_token", [(o, ("z", o), 1) for o in range(V)], (V,),
                 description="next-token masses z (normalised z / sum z; zero or negative masses reported)",
                 labels=[f"x={o}" for o in range(V)])
    roles = ["gather"] * plan.depth + ["moments", "aggregate"] + ["gd"] * int(cfg.K) + ["readout"]
    spec = spec_for(
        NAME, lay, layers, max_positions=n_lags, attention=attention, beta=beta, provenance=PROVENANCE,
        parameters={"V": V, "r": int(cfg.r), "K": int(cfg.K), "eta": str(cfg.eta), "features": cfg.features,
                    "d_x": cfg.feats.dim, "max_len": n_lags, "eta_safe": cfg.eta_safe, "prior_mass": str(cfg.prior_mass)},
    )
    info = ICLInfo(config=cfg, gather=plan, layer_roles=tuple(roles), aggregate_layer=plan.depth + 1)
    return ConstructedTransformer(lay, emb, layers, [ro], spec, ICLCodec(V, n_lags), bound_fn=claimed_bound,
                                  attention=attention, beta=beta, dtype=dtype, device=device, info=info)


# ---------------------------------------------------------------------------------------------- bound
def roundoff_allowance(cfg: ICLConfig, masses: np.ndarray, counts: np.ndarray, eps: float) -> float:
    """Stated float allowance on ``max |next_token_probs - exact|`` (a-posteriori, from the run's own masses).

    Per position p with total mass ``s_p = sum z_p > 0``: ``ROUNDOFF_C * eps * (n_p + d_x + 4) * (K + 1) *
    (1 + eta) * amp_p`` with ``amp_p = (1 + ||z_p||_1) / s_p``. Heuristic model: the mean over ``n_p`` training
    tokens carries a relative error ``<= (n_p + 1) eps``; each GD step adds ``<= (d_x + 2) eps`` relative to
    ``(1 + eta) max(|W|, eta |B|)`` and does not amplify earlier errors when ``eta lam_max <= 2``; normalisation
    divides by ``s_p``.

    Pattern features with ``eta <= 1/2`` and non-negative masses: ``A`` is diagonal with entries in ``[0, 1]``, so
    every iterate ``W <- (I - eta A) W + eta B`` is a non-negative combination of non-negative numbers with
    ``1 - eta A_ii >= 1/2``: the one subtraction (``W - eta A_ii W``) loses at most a factor 2, so rounding errors
    stay *relative* to each mass, and normalising masses with relative errors ``<= delta`` moves each probability
    by at most about ``2 delta``: ``amp_p = 2``, with no ``1 / s_p`` amplification (which made the allowance
    vacuous for rare query windows in long contexts).

    It is a stated allowance, not a theorem; the tests and ``hmmtx verify`` check it on every case.
    """
    z = np.asarray(masses, dtype=np.float64)
    s = z.sum(axis=-1)
    l1 = np.abs(z).sum(axis=-1)
    n = np.asarray(counts, dtype=np.float64)
    d = cfg.feats.dim
    relative = cfg.features == "pattern" and cfg.eta <= Fraction(1, 2) and bool(np.all(z >= 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = np.full(s.shape, 2.0) if relative else (1 + l1) / np.abs(s)
        per = ROUNDOFF_C * eps * (n + d + 4) * (int(cfg.K) + 1) * (1 + float(cfg.eta)) * amp
    per = np.where(np.abs(s) > 0, per, 0.0)
    return float(per.max()) if per.size else 0.0


def claimed_bound(model: ConstructedTransformer, tokens: Any, mode: str = "float64") -> BoundReport:
    """Bound on ``max |next_token_probs - the closed-form learner's normalised masses|`` (the deterministic
    reference ``[I - (I - eta A)^K] A^+ B`` read at ``x_query``). Exact mode: 0 (bit-exact claim). Float: the stated
    round-off allowance of :func:`roundoff_allowance`. Softmax attention: no leakage bound is derived here, trivial
    bound 1. The statistical error against the Bayes predictive is measured (``hmmtx icl-table``), not claimed."""
    from hmm.icl_reference import icl_reference

    cfg: ICLConfig = model.info.config
    unsafe = mode != "exact" and not cfg.eta_safe
    if model.attention == "softmax" or unsafe:
        why = ("softmax attention: no leakage bound derived for icl" if model.attention == "softmax" else
               f"eta = {cfg.eta} may exceed 2 / lam_max (GD can diverge; the round-off model assumes it does not)")
        if cfg.features == "pattern" and not unsafe:
            return BoundReport(1.0, 1.0, 0.0, 1.0, f"{why} (trivial bound 1)")
        # signed (concat) or possibly divergent outputs z / sum z are not distributions: the trivial bound is the
        # a-posteriori max |p_model| + max |p_reference| (both computed here), at least 1
        with torch.no_grad():
            got = model.run(tokens, mode if mode != "exact" else "float64", record="final").outputs["next_token_probs"]
        ctxs, _ = _as_contexts(tokens)
        ref_max = 0.0
        for c in ctxs:
            ref = icl_reference(c, cfg.feats, float(cfg.eta), int(cfg.K), method="iterate")
            z = ref.masses[1:] + float(cfg.prior_mass) / int(cfg.vocab_size)
            ref_max = max(ref_max, float(np.abs(normalise_masses(z).probs).max()))
        triv = max(1.0, float(got.abs().max()) + ref_max)
        if not math.isfinite(triv):
            triv = math.inf
        return BoundReport(triv, triv, 0.0, triv, f"{why}; {cfg.features} features: trivial a-posteriori bound "
                           f"max|p_model| + max|p_ref| = {triv:.3g}")
    if mode == "exact":
        return BoundReport(0.0, 0.0, 0.0, 1.0, "hard attention, exact arithmetic: bit-exact equality with the closed form")
    eps = float(np.finfo(np.float32 if mode == "float32" else np.float64).eps)
    ctxs, _ = _as_contexts(tokens)
    worst = 0.0
    for c in ctxs:
        ref = icl_reference(c, cfg.feats, float(cfg.eta), int(cfg.K), method="iterate")
        z = ref.masses[1:] + float(cfg.prior_mass) / int(cfg.vocab_size)
        worst = max(worst, roundoff_allowance(cfg, z, ref.moments.count[1:], eps))
    worst = min(1.0, worst)
    return BoundReport(worst, 0.0, worst, 1.0, f"stated {mode} round-off allowance (ROUNDOFF_C = {ROUNDOFF_C}); hard attention")


# ---------------------------------------------------------------------------------------------- registry
def _vocab(source: Any) -> int:
    from hmm.mixture import HMMMixture
    from hmm.model import HMM

    if isinstance(source, HMMMixture):
        return source.num_obs
    if isinstance(source, HMM):
        return source.num_obs
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return int(source)
    raise HmmtxError(f"icl: expected a task mixture (--tasks) or a vocabulary size, got {type(source).__name__}")


def _stream_len(tokens: Any) -> int:
    ctxs, _ = _as_contexts(tokens)
    return max(sum(len(s) for s in c) + len(c) for c in ctxs)  # BOS + tokens + SEPs


def _build_entry(source: Any, tokens: Any, *, attention: str = "hard", beta: float | None = None, r: int = 2,
                 K: int = 4, eta: Any = "1/2", features: str = "pattern", max_len: int = 0,
                 prior_mass: Any = "0") -> ConstructedTransformer:
    P = 256 if tokens is None else _stream_len(tokens)
    return build(_vocab(source), r, K, eta, features, max(int(max_len or 0), P, 2), prior_mass,
                 attention=attention, beta=beta)


def _reference_entry(source: Any, tokens: Any, *, exact: bool, r: int = 2, K: int = 4, eta: Any = "1/2",
                     features: str = "pattern", max_len: int = 0, prior_mass: Any = "0") -> dict:
    from hmm.icl_reference import icl_reference
    from hmm.mixture import HMMMixture, bayes_predictive

    eta = parse_eta(eta)
    alpha = parse_eta(prior_mass, "--prior-mass", allow_zero=True)
    feats = ICLFeatures(_vocab(source), int(r), features)
    if exact:
        ref = icl_reference(tokens, feats, eta, int(K), dtype=object)
        z = ref.masses[1:] + alpha / feats.vocab_size
        probs, status, neg = normalise_masses_exact(z)
    else:
        # explicit GD in numpy (structural zeros stay exactly zero, so zero-mass statuses agree with exact mode);
        # the eigendecomposition closed form agrees with it to ~1e-15 on the masses (tests/test_hmm)
        ref = icl_reference(tokens, feats, float(eta), int(K), method="iterate")
        z = ref.masses[1:] + float(alpha) / feats.vocab_size
        rep = normalise_masses(z)
        probs, status, neg = rep.probs, rep.status, rep.negative_mass
    out = {"next_token_probs": probs, "masses": z, "status": status, "negative_mass": neg}
    if isinstance(source, HMMMixture) and not exact:
        out["bayes_next_token_probs"] = bayes_predictive(source, tokens).next_token_probs
    return out


def _parse_tokens(text: str) -> list:
    from hmm.io import parse_context

    return parse_context(text)


def _probe_build(source: Any, length: int, r: int | None = None) -> ConstructedTransformer:
    """``hmmtx probe`` subject: the learner for the mixture's vocabulary, window ``r`` (default 2), sized for
    streams of ``length`` items."""
    return build(_vocab(source), r=2 if r is None else r, max_len=max(length, 2))


ENTRY = register(
    ConstructionEntry(
        name=NAME,
        estimate_bytes=icl_bytes,
        summary="H4: in-context learner (gather -> window features -> content-selected moments -> K GD layers)",
        provenance=PROVENANCE,
        input_kind="mixture",
        build=_build_entry,
        reference=_reference_entry,
        parse_tokens=_parse_tokens,
        params=(
            Param("r", int, 2, "window length of the features (lags 1..r)"),
            Param("K", int, 4, "number of gradient-descent layers"),
            Param("eta", str, "1/2", "GD step size (rational 'p/q' or decimal)"),
            Param("features", str, "pattern", "feature map: pattern (V^r one-hot) or concat (per-lag one-hots)",
                  choices=FEATURE_KINDS),
            Param("max_len", int, 0, "longest stream covered (0: from the tokens)"),
            Param("prior_mass", str, "0", "uniform pseudo-mass alpha added to the readout (alpha/V per token; 0 = pure learner)"),
        ),
        families=("dirichlet", "sticky", "low_rank", "observable", "mess3"),
        outputs=("next_token_probs", "masses", "status", "negative_mass"),
        default_tokens="0 1 0 | 1 1 | 0",
        bound="exact: bit-exact with the closed form; float: stated round-off allowance; statistical error measured, not claimed",
        # No leakage bound is derived for softmax attention (its claimed bound is the trivial 1), so the
        # verification suite sweeps hard attention only; softmax runs stay available through `hmmtx run`.
        verify=VerifySweep(betas=()),
        probe=ProbeHooks("contexts", _probe_build, ICLContexts),
    )
)

__all__ = [
    "build",
    "claimed_bound",
    "roundoff_allowance",
    "normalise_masses_exact",
    "parse_eta",
    "ICLConfig",
    "ICLCodec",
    "ICLContexts",
    "icl_layout",
    "feature_ffn",
    "moments_ffn",
    "aggregation_head",
    "gd_ffn",
    "readout_ffn",
    "ENTRY",
    "NAME",
    "PROVENANCE",
]
