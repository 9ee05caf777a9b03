"""H2: the fixed-memory (window) filter — gather the last r tokens, then turn them into the belief.

A construction in the spirit of Hao et al. 2025 (lower layers gather neighbouring tokens; a fixed-length memory
stands in for the whole past under an observability / mixing assumption). The gather mechanism is the doubling
copy of Rajaraman et al. 2024's composed induction heads (:mod:`constructions.gather`); the readouts and all weights
below are our reconstruction, not code or weights from either paper.

**Input.** Positions ``0 = NULL`` (sink), ``1 = BOS``, ``2 + t = x_t``. Vocabulary ids ``0..V-1`` = tokens,
``V`` = BOS, ``V + 1`` = NULL. Every slot is a one-hot over ``V + 1`` symbols; symbol ``V`` ("start marker") is what
BOS and NULL hold, so a slot whose lag reaches BOS or beyond reads the marker.

**Layers** (R = r + 1 slots, lags ``0..r``; slot ``r`` is read only for its marker: "does the window start at the
sequence start?", which decides between the prior ``mu`` and ``initial_probs``):

* ``ceil(log2(r + 1))`` gather layers (one positional head each).
* readout ``"lookup"``: one ReLU FFN in the last gather layer with one hidden unit per window pattern — ``V^r``
  full windows (prior ``mu``), ``V^k`` windows of ``k <= r`` tokens reaching BOS (prior ``initial_probs``) and one
  unit for BOS/NULL — so width ``V^r + V + ... + V^r + 1``. Exactly one unit equals 1, every other is 0, and its
  output column holds the exact window belief (and belief times ``A``) of its pattern. Depth ``ceil(log2(r+1))``.
* readout ``"product"``: the H1 operator algebra restricted to the window, applied as a **normalised vector
  chain** (float-stable). The last gather layer's FFN writes the prior row vector (``mu``, or ``pi`` when slot ``r``
  is the marker); then one bilinear layer per lag ``l = r-1..1`` applies that slot's operator to the running vector,
  ``v[l] ∝ v[l+1] diag(B[:, x]) A`` (``(sum v) pi`` at the marker), writing a fresh block that is normalised to sum
  1; a final bilinear layer applies the current token: ``belief ∝ v diag(B[:, x_t])``, ``pred ∝ v diag(B[:, x_t])
  A``. Each unit multiplies the vector entry by ``B[c, x]`` before ``A[c, j]`` (every weight one HMM entry);
  every quantity is a normalised window belief and every sum has at most S non-negative terms, so a product below
  the normal range is an absolute error of a subnormal against a vector of mass 1. Depth ``ceil(log2(r+1)) + r``,
  FFN width ``S (V + 1)``. Float round-off: a derived relative bound plus an absolute underflow term
  (:mod:`constructions.window_roundoff`).

Readouts: ``next_token = B^T pred`` (unnormalised masses; output ``z / sum z``) and ``belief`` (the window-filtered
state distribution). At BOS/NULL both blocks hold ``initial_probs``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from constructions.blocks import (
    ONE,
    BilinearBuilder,
    Embedding,
    Layer,
    ProjectiveNorm,
    ReLUFFN,
    frac_zeros,
)
from constructions.blocks import readout as make_readout
from constructions.gather import Gather, leakage_per_head
from constructions.layout import Layout
from constructions.transformer import BoundReport, ConstructedTransformer, spec_for
from constructions.types import ModelInfo
from hmm.errors import HmmtxError
from hmm.model import HMM, validate_tokens
from hmm.window import check_window_length, resolve_prior

READOUTS = ("lookup", "product")
#: Largest lookup FFN width :func:`build` accepts (beyond it use readout="product").
MAX_LOOKUP_WIDTH = 1 << 16

PROVENANCE = (
    "Reconstruction in the spirit of Hao et al. 2025 (fixed-length memory; lower layers gather neighbouring tokens); "
    "doubling gather heads as in Rajaraman et al. 2024 (composed induction heads); readouts (pattern lookup, "
    "operator products over the window) and the Birkhoff bound derived here, not taken from either paper"
)


def lookup_width(V: int, r: int) -> int:
    """Hidden width of the lookup FFN: ``V^r`` full windows + ``sum_{k=1..r} V^k`` windows reaching BOS + 1."""
    return V**r + sum(V**k for k in range(1, r + 1)) + 1


# ---------------------------------------------------------------------------------------------- codec
@dataclass(frozen=True)
class WindowCodec:
    """Tokens (T,) or (N, T) -> ids ``[NULL, BOS, x_0, ...]``; outputs at positions ``2..`` (one row per token)."""

    num_obs: int
    max_len: int

    @property
    def bos(self) -> int:
        return self.num_obs

    @property
    def null(self) -> int:
        return self.num_obs + 1

    def encode(self, tokens: Any) -> np.ndarray:
        x = validate_tokens(tokens, self.num_obs, max_len=self.max_len)
        x = x[None] if x.ndim == 1 else x
        pre = np.broadcast_to(np.array([self.null, self.bos], dtype=np.int64), (x.shape[0], 2))
        return np.concatenate([pre, x], axis=1)

    def decode(self, model: ConstructedTransformer, trace: Any, tokens: Any) -> dict:
        single = np.asarray(tokens).ndim == 1
        out = {
            "next_token_probs": model.read(trace, "next_token", slice(2, None)),
            "filtered_probs": model.read(trace, "belief", slice(2, None)),
        }
        return {k: v[0] for k, v in out.items()} if single else out


# ---------------------------------------------------------------------------------------------- helpers
def _exact_params(hmm: HMM, prior: Any) -> tuple[list, list, list, list]:
    h = hmm.as_exact()
    mu = resolve_prior(h, prior, exact=True)
    return (list(h.initial_probs), [list(r) for r in h.transition_matrix], [list(r) for r in h.emission_probs],
            list(mu))


def _lookup_entries(pi: list, A: list, B: list, mu: list, r: int):
    """Yield ``(pattern, reaches_start, belief, pred)``: ``pattern`` oldest token first, exact Fractions.

    Depth-first over window prefixes (shared prefixes computed once); a pattern impossible from its prior gets
    zero vectors (its unit then yields zero mass, which the readout reports as a probability-zero input).
    """
    S, V = len(A), len(B[0])
    zero = Fraction(0)

    def step(alpha: list, o: int) -> list:
        return [alpha[i] * B[i][o] for i in range(S)]

    def trans(alpha: list) -> list:
        return [sum((alpha[i] * A[i][j] for i in range(S)), zero) for j in range(S)]

    def finish(alpha: list) -> tuple[list, list]:
        m = sum(alpha, zero)
        if m == 0:
            return [zero] * S, [zero] * S
        b = [a / m for a in alpha]
        return b, trans(b)

    def dfs(prefix: list, alpha: list, depth: int, from_start: bool):
        for o in range(V):
            a = step(alpha, o)
            pat = prefix + [o]
            if from_start or depth + 1 == r:
                yield (tuple(pat), from_start) + finish(a)
            if depth + 1 < r:
                yield from dfs(pat, trans(a), depth + 1, from_start)

    yield from dfs([], list(mu), 0, False)
    yield from dfs([], list(pi), 0, True)


# ---------------------------------------------------------------------------------------------- build
@dataclass(frozen=True)
class WindowInfo(ModelInfo):
    """Model metadata of the window construction (``model.info``; read by its bound and tests).

    Fields:
        hmm:            the HMM the weights were built from
        n:              S, hidden states
        r:              window length
        prior:          the prior argument as given (``"stationary"``, ``"uniform"`` or probabilities)
        readout:        ``"lookup"`` or ``"product"``
        gather:         the :class:`~constructions.gather.Gather` plan of the gather layers
        mu:             (S,) exact prior of the window's first state
        operator_ratio: ``(log K, log K_prior)`` of :func:`operator_ratio` (product readout), else None
    """

    hmm: Any
    n: int
    r: int
    prior: Any
    readout: str
    gather: Gather
    mu: tuple
    operator_ratio: tuple[float, float] | None


def build(
    hmm: HMM,
    r: int,
    readout: str = "lookup",
    prior: Any = "stationary",
    max_len: int = 256,
    *,
    attention: str = "hard",
    beta: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
    max_lookup_width: int = MAX_LOOKUP_WIDTH,
) -> ConstructedTransformer:
    """Build the window-filter Transformer for ``hmm`` with window length ``r``.

    Args:
        readout: ``"lookup"`` (ReLU pattern table, width :func:`lookup_width`) or ``"product"`` (operator
            products over the window).
        prior: reference prior of the window's first hidden state (``"stationary"``, ``"uniform"`` or a vector).
        max_len: longest token sequence the relative-position tables cover.
    """
    if not isinstance(hmm, HMM):
        raise HmmtxError(f"window: expected an HMM, got {type(hmm).__name__}")
    r = check_window_length(r, "--r")
    if readout not in READOUTS:
        raise HmmtxError(f"--readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise HmmtxError(f"--max-len must be an integer >= 1, got {max_len!r}")
    max_len = int(max_len)
    S, V = hmm.num_states, hmm.num_obs
    if readout == "lookup" and lookup_width(V, r) > max_lookup_width:
        raise HmmtxError(
            f"window lookup readout needs {lookup_width(V, r)} hidden units for V = {V}, r = {r} (limit "
            f"{max_lookup_width}); use --readout product"
        )
    pi, A, B, mu = _exact_params(hmm, prior)
    M = V  # the start marker's symbol index in every slot
    plan = Gather(num_slots=r + 1, alphabet=V + 1)

    lay = Layout()
    lay.add("one", 1, "constant 1")
    plan.add_blocks(lay, symbol_names=f"0..{V - 1} = tokens, {V} = start marker (BOS/NULL or before)")
    if readout == "product":
        lay.add("prior", S, "prior row vector of the window's first state: mu, or initial_probs if slot[r] is the marker")
        for l in range(r - 1, 0, -1):
            lay.add(f"v[{l}]", S, f"window product through lag {l}: v[{l + 1}] Op(slot[{l}]), normalised to sum 1")
    lay.add("belief", S, "window-filtered belief P_mu(z_t | x_{t-r+1..t}) (initial_probs at BOS/NULL)")
    lay.add("pred", S, "belief A: predicted next state (initial_probs at BOS/NULL)")
    lay.freeze()
    D = lay.width
    n_lags = max_len + 2

    # -- embedding: slot[0] = one-hot of the own symbol, one = 1 (proof: the gather invariant starts here)
    vocab = tuple(f"x={v}" for v in range(V)) + ("BOS", "NULL")
    W_E = frac_zeros(V + 2, D)
    for i in range(V + 2):
        W_E[i, lay.index("one")] = ONE
        W_E[i, lay.index(plan.slot(0), min(i, M))] = ONE
    emb = Embedding(W_E, vocab)

    layers = plan.layers(lay, n_lags)
    if readout == "lookup":
        layers[-1] = dataclasses.replace(layers[-1], ffn=_lookup_ffn(lay, plan, pi, A, B, mu, r),
                                         description=layers[-1].description + "; ReLU lookup over window patterns")
    else:
        layers[-1] = dataclasses.replace(layers[-1], ffn=_prior_ffn(lay, plan, pi, mu, r),
                                         description=layers[-1].description + "; FFN: slot[r] -> prior")
        for l in range(r - 1, 0, -1):
            layers.append(_chain_layer(lay, plan, pi, A, B, l, "prior" if l == r - 1 else f"v[{l + 1}]"))
        layers.append(_final_layer(lay, plan, pi, A, B, "v[1]" if r > 1 else "prior"))

    outs = [
        make_readout(lay, "next_token", [(v, ("pred", j), B[j][v]) for v in range(V) for j in range(S) if B[j][v] != 0],
                (V,), description="next-token masses B^T pred", labels=[f"x={v}" for v in range(V)]),
        make_readout(lay, "belief", [(i, ("belief", i), 1) for i in range(S)], (S,),
                description="window-filtered belief", labels=[f"z={i}" for i in range(S)]),
    ]
    spec = spec_for(
        "window", lay, layers, max_positions=n_lags, attention=attention, beta=beta, provenance=PROVENANCE,
        parameters={"S": S, "V": V, "r": r, "readout": readout,
                    "prior": prior if isinstance(prior, str) else [str(v) for v in mu],
                    "max_len": max_len, "gather_layers": plan.depth},
    )
    info = WindowInfo(hmm=hmm, n=S, r=r, prior=prior, readout=readout, gather=plan, mu=tuple(mu),
                      operator_ratio=operator_ratio(hmm, prior) if readout == "product" else None)
    return ConstructedTransformer(lay, emb, layers, outs, spec, WindowCodec(V, max_len), bound_fn=claimed_bound,
                                  attention=attention, beta=beta, dtype=dtype, device=device, info=info)


def _lookup_ffn(lay: Layout, plan: Gather, pi: list, A: list, B: list, mu: list, r: int) -> ReLUFFN:
    """One ReLU unit per window pattern. Proof that exactly one unit is 1 and the rest 0 at an observation position:
    slots are one-hots; a unit's pre-activation counts its matched slots minus (number of slots it tests - 1), so it is
    1 iff every tested slot matches, else <= 0. Full pattern ``w`` tests slots ``0..r-1`` against ``w`` and slot ``r``
    against "not the marker" (weight -1 on the marker, offset absorbed in the bias); a pattern of ``k`` tokens reaching
    BOS tests slots ``0..k-1`` and "slot ``k`` is the marker". The gather invariant makes exactly one of them hold."""
    S, M = len(A), len(B[0])
    entries = list(_lookup_entries(pi, A, B, mu, r))
    m = len(entries) + 1
    D = lay.width
    W_in, b_in, W_out, b_out = frac_zeros(m, D), frac_zeros(m), frac_zeros(D, m), frac_zeros(D)
    labels = []
    for u, (pat, from_start, belief, pred) in enumerate(entries):
        k = len(pat)
        for l in range(k):  # slot l holds lag l = the pattern's (k-1-l)-th token (oldest first)
            W_in[u, lay.index(plan.slot(l), pat[k - 1 - l])] = ONE
        if from_start:
            W_in[u, lay.index(plan.slot(k), M)] = ONE
            b_in[u] = Fraction(-k)
        else:
            W_in[u, lay.index(plan.slot(r), M)] = Fraction(-1)
            b_in[u] = Fraction(-(r - 1))
        for i in range(S):
            W_out[lay.index("belief", i), u] = belief[i]
            W_out[lay.index("pred", i), u] = pred[i]
        labels.append(("BOS " if from_start else "") + "".join(str(o) for o in pat))
    u = m - 1  # BOS/NULL unit: slot[0] is the marker
    W_in[u, lay.index(plan.slot(0), M)] = ONE
    for i in range(S):
        W_out[lay.index("belief", i), u] = pi[i]
        W_out[lay.index("pred", i), u] = pi[i]
    labels.append("BOS/NULL")
    return ReLUFFN(W_in, b_in, W_out, b_out, tuple(labels))


def _prior_ffn(lay: Layout, plan: Gather, pi: list, mu: list, r: int):
    """``prior = sum_{x<V} slot[r][x] mu + slot[r][marker] pi`` (bilinear units ``one * slot[r][x]``; exact because
    the slot is a one-hot: the block receives one weight, rounded once in a float mode)."""
    V = plan.alphabet - 1
    bb = BilinearBuilder(lay)
    for x in range(V + 1):
        vec = mu if x < V else pi
        bb.unit("one", (plan.slot(r), x), [(("prior", j), vec[j]) for j in range(len(vec)) if vec[j]],
                label=f"prior<-slot[{r}]={x if x < V else 'marker'}")
    return bb.build()


def _chain_layer(lay: Layout, plan: Gather, pi: list, A: list, B: list, l: int, src: str) -> Layer:
    """One step of the window chain: ``v[l] ∝ src Op(slot[l])`` with ``Op_x = diag(B[:, x]) A`` and
    ``Op_marker = 1 pi^T``, then ``v[l]`` is normalised to sum 1.

    Units ``(B[c, x] src[c]) * slot[l][x]`` write ``A[c, j]`` into ``v[l][j]`` (the emission scales the first
    factor, the transition is the output weight: every weight is one HMM entry); marker units
    ``src[c] * slot[l][marker]`` write ``pi[j]``. Exact because the slot is a one-hot; every output is a sum of at most
    S non-negative terms (no cancellation), written into a fresh block."""
    S, V = len(A), len(B[0])
    bb = BilinearBuilder(lay)
    out = f"v[{l}]"
    for c in range(S):
        for x in range(V + 1):
            if x < V:
                if B[c][x] == 0:
                    continue
                writes, scale = [((out, j), A[c][j]) for j in range(S) if A[c][j]], B[c][x]
            else:
                writes, scale = [((out, j), pi[j]) for j in range(S) if pi[j]], 1
            bb.unit((src, c), (plan.slot(l), x), writes, a_scale=scale,
                    label=f"{out}<-{src}[{c}]*slot[{l}]={x if x < V else 'marker'}")
    return Layer(f"chain[{l}]", ffn=bb.build(), norms=(ProjectiveNorm(out),),
                 description=f"window chain, lag {l}: {out} = {src} diag(B[:,x]) A (1 pi^T at the marker), normalised")


def _final_layer(lay: Layout, plan: Gather, pi: list, A: list, B: list, v: str) -> Layer:
    """``belief ∝ v diag(B[:, x_t])`` and ``pred ∝ v diag(B[:, x_t]) A`` from the chain's last vector ``v`` and slot
    0 (units ``(B[c, x] v[c]) * slot[0][x]`` writing 1 into ``belief[c]`` and ``A[c, j]`` into ``pred[j]``); at the
    marker (BOS/NULL) both become ``(sum v) pi``. Then both are normalised."""
    S, V = len(A), len(B[0])
    bb = BilinearBuilder(lay)
    for c in range(S):
        for x in range(V + 1):
            if x < V:
                if B[c][x] == 0:
                    continue
                writes, scale = [(("belief", c), 1)] + [(("pred", j), A[c][j]) for j in range(S) if A[c][j]], B[c][x]
            else:
                writes = [(("belief", j), pi[j]) for j in range(S) if pi[j]] + \
                    [(("pred", j), pi[j]) for j in range(S) if pi[j]]
                scale = 1
            bb.unit((v, c), (plan.slot(0), x), writes, a_scale=scale,
                    label=f"{v}[{c}]*slot[0]={x if x < V else 'marker'}")
    return Layer("current_token", ffn=bb.build(), norms=(ProjectiveNorm("belief"), ProjectiveNorm("pred")),
                 description="apply the current token: belief = v diag(B[:,x_t]), pred = v diag(B[:,x_t]) A")


# ---------------------------------------------------------------------------------------------- bounds
def softmax_lookup_leakage(model: ConstructedTransformer, beta: float) -> float:
    """Certified bound on the max-abs output error caused by softmax attention (lookup readout), exact arithmetic.

    Proof sketch (docs/constructions/window_filter.md): one tent-bias head puts weight at most
    ``lam = 2 e^-beta / (1 - e^-beta)`` off its target, so by induction every slot stays a probability vector with
    at most ``eps_j <= popcount(j) lam`` of its mass on wrong symbols (slot 0 is exact). The firing lookup unit then
    has activation in ``[1 - E, 1]`` and every other unit at most ``E``, ``E = sum_j eps_j``; the normalised output
    is a convex combination of table rows with weight at most ``(W - 1) E / (1 - E)`` off the correct row, so the
    max-abs error is at most that (``W`` = FFN width). Capped at 1.
    """
    lam = leakage_per_head(beta)
    plan = model.info.gather
    E = sum(bin(j).count("1") for j in range(plan.num_slots)) * lam
    if E >= 1:
        return 1.0
    W = model.spec.ffn_width
    return min(1.0, (W - 1) * E / (1 - E))


def _frac_log(v: Fraction) -> float:
    """``log v`` of a positive Fraction without converting it to float (no overflow for huge or tiny ratios)."""
    return math.log(v.numerator) - math.log(v.denominator)


def operator_ratio(hmm: HMM, prior: Any) -> tuple[float, float]:
    """``(log K, log K_prior)``: logs of the largest entrywise ratio between any two slot operators
    (``diag(B[:,y]) A`` for tokens, ``1 pi^T`` for the marker) and between the two possible priors (``mu``, ``pi``);
    ``inf`` when an operator or prior has a zero entry (then no softmax bound is claimed for the product readout).
    Logs, because the ratios of ill-conditioned HMMs overflow a float (entries near 1e-170 give K ~ 1e340)."""
    pi, A, B, mu = _exact_params(hmm, prior)
    S, V = len(A), len(B[0])
    ops = [[[B[i][y] * A[i][j] for j in range(S)] for i in range(S)] for y in range(V)]
    ops.append([[pi[j] for j in range(S)] for _ in range(S)])
    flat = [v for op in ops for row in op for v in row]
    if any(v == 0 for v in flat) or any(v == 0 for v in pi):
        return float("inf"), float("inf")
    K = max(_frac_log(Fraction(a[i][j]) / Fraction(b[i][j])) for a in ops for b in ops for i in range(S)
            for j in range(S))
    Kp = max(max(_frac_log(Fraction(m) / Fraction(q)), _frac_log(Fraction(q) / Fraction(m))) for m, q in zip(mu, pi))
    return K, Kp


def softmax_product_leakage(model: ConstructedTransformer, beta: float) -> float:
    """Certified bound on the max-abs output error caused by softmax attention (product readout), exact arithmetic.

    Every slot ``l`` is ``(1 - e_l) onehot + e_l q_l`` with ``e_l <= popcount(l) lam`` (gather lemma), so
    ``op[l] = (1 - e_l) O_l + e_l Q_l`` with ``Q_l`` a convex combination of operators, ``0 <= Q_l <= K O_l``
    entrywise. Products of non-negative matrices are monotone, so the perturbed product ``P~`` satisfies
    ``c P <= P~ <= C P`` entrywise with ``c = prod (1 - e_l)``, ``C = prod (1 - e_l + e_l K_l)`` (``K_prior`` for
    slot ``r``); hence ``d_H(P~, P) <= log(C / c)`` and the max-abs error of a normalised output is at most
    ``tanh(log(C/c) / 4)`` (L1 / 2; ``A B`` is an L1 contraction). Infinite ``K`` (zeros): returns 1.
    ``log(1 - e + e K) - log(1 - e)`` is evaluated from ``log K`` (no overflow for huge K).
    """
    K, Kp = model.info.operator_ratio  # logs
    if not (math.isfinite(K) and math.isfinite(Kp)):
        return 1.0
    lam = leakage_per_head(beta)
    r = model.info.r
    d = 0.0
    for l in range(1, r + 1):
        e = bin(l).count("1") * lam
        if e >= 1:
            return 1.0
        logk = Kp if l == r else K
        if logk > 0 and e > 0:
            d += float(np.logaddexp(math.log1p(-e), math.log(e) + logk)) - math.log1p(-e)
    return min(1.0, math.tanh(d / 4))


def claimed_bound(model: ConstructedTransformer, tokens: Any, mode: str = "float64") -> BoundReport:
    """Bound on ``max |output - window reference|`` for ``next_token_probs`` and ``filtered_probs``.

    The construction's exact target is the window (restarted) filter of :mod:`hmm.window`; its distance to the true
    filter (the memory error) is bounded separately by :func:`hmm.window.a_priori_bound` /
    :func:`hmm.window.a_posteriori_bound` (reported by :func:`report_extra` and ``hmmtx window-curve``).

    * exact mode, hard attention: 0 (bit-identical).
    * float modes: the derived round-off bound of :mod:`constructions.window_roundoff` for the model in its dtype
      (relative per output entry plus a few subnormals) plus the same for the float64 reference, stated from
      ``S``, ``V``, ``r`` and the mode; valid when the no-underflow check on the float64 chain passes (product
      readout: for the model's dtype; both readouts: for the float64 reference), else the trivial bound.
    * softmax attention: plus :func:`softmax_lookup_leakage` (lookup readout) or :func:`softmax_product_leakage`
      (product readout; trivial 1 when an operator or prior has a zero entry); the round-off part is then
      heuristic (module docstring of :mod:`constructions.window_roundoff`).
    """
    from constructions.transformer import MODES

    if mode not in MODES:
        raise HmmtxError(f"mode must be one of {MODES}, got {mode!r}")
    validate_tokens(tokens, model.info.hmm.num_obs)
    if mode == "exact":
        if model.attention != "hard":
            raise HmmtxError("exact mode runs hard attention only")
        return BoundReport(0.0, 0.0, 0.0, 1.0, "exact rational arithmetic, hard attention: bit-identical to the "
                           "exact window filter", "exact")
    rnd, note, kind = _roundoff(model, tokens, mode)
    if kind == "trivial":
        return BoundReport(1.0, 0.0, 1.0, 1.0, note, "trivial")
    leak = 0.0
    if model.attention == "softmax":
        if model.info.readout == "lookup":
            leak = softmax_lookup_leakage(model, model.beta)
            note += f"; softmax leakage (certified, lookup readout) {leak:.3g} at beta={model.beta:g}"
        else:
            leak = softmax_product_leakage(model, model.beta)
            K, Kp = model.info.operator_ratio
            if math.isfinite(K) and math.isfinite(Kp):
                note += (f"; softmax leakage (certified, product readout, operator ratio log K={K:.3g}) {leak:.3g} at "
                         f"beta={model.beta:g}")
            else:
                note += ("; softmax attention with the product readout: an operator or prior has a zero entry, so no "
                         "leakage bound is derived (trivial bound only)")
    return BoundReport(min(1.0, leak + rnd), leak, rnd, 1.0, note, kind)


def _roundoff(model: ConstructedTransformer, tokens: Any, mode: str) -> tuple[float, str, str]:
    """``(round-off part, note, kind)`` of :func:`claimed_bound` in a float mode: the derived bound of
    :mod:`constructions.window_roundoff` for the model plus the float64 reference (kind ``"trivial"`` when its
    underflow check fails or ``R`` is too large for it)."""
    from constructions.window_roundoff import (MAX_LOG_RATIO, lookup_absolute, model_log_ratio, reference_log_ratio,
                                               window_absolute)

    S, V, r, readout = model.info.n, model.info.hmm.num_obs, model.info.r, model.info.readout
    soft = model.attention == "softmax"
    R = max(model_log_ratio(S, V, r, mode, readout, softmax=soft).values())
    R_ref = max(reference_log_ratio(S, r).values())
    if R > MAX_LOG_RATIO:
        return 1.0, f"round-off log-ratio {R:.3g} > {MAX_LOG_RATIO} (S={S}, r={r}, {mode}): trivial bound claimed", \
            "trivial"
    mu = np.array(model.info.mu, dtype=object)
    a_ref, why = window_absolute(model.info.hmm, tokens, r, mu, "float64")
    if readout == "product":
        a_own, why_own = (a_ref, why) if mode == "float64" else window_absolute(model.info.hmm, tokens, r, mu, mode)
        why = why_own or why
    else:
        a_own = lookup_absolute(S, V, mode)
    if why:
        return 1.0, f"underflow check of the derived round-off bound failed ({why}): trivial bound claimed", "trivial"
    kind = "heuristic" if soft else "derived"
    own, ref = math.expm1(R) + a_own, math.expm1(R_ref) + a_ref
    note = (f"{kind} round-off bound: |p^ - p| <= p expm1(R) + a, R = {R:.3g}, a = {a_own:.3g} ({readout} readout, "
            f"S={S}, V={V}, r={r}, {mode}{'; softmax terms heuristic' if soft else ''}) + float64 reference "
            f"{ref:.3g}")
    return own + ref, note, kind


def report_extra(hmm: HMM, tokens: Any, *, r: int, prior: Any = "stationary", exact: bool = False, **_: Any) -> dict:
    """Extra report keys for ``hmmtx run window``: the memory error of the window filter against the true filter
    and both bounds on it (L1 norms, max over positions; see :mod:`hmm.window`).

    Keys: ``r``, ``memory_error`` (``{"filtered", "next_token"}``), ``a_priori_bound`` (same keys, or None with
    ``a_priori_note`` saying why), ``a_posteriori_bound`` (same keys), ``a_priori_note``, ``bound_holds``.
    """
    from hmm.window import (a_posteriori_bound, a_posteriori_bound_exact, a_priori_bound, exact_le,
                            roundoff_allowance, window_error, window_error_exact)

    x = validate_tokens(tokens, hmm.num_obs)
    x = x[0] if x.ndim == 2 and x.shape[0] == 1 else x
    T = x.shape[-1]
    if exact:
        if x.ndim != 1:
            raise HmmtxError("window report: exact mode takes one sequence")
        err = window_error_exact(hmm, x, r, prior)
        post = a_posteriori_bound_exact(hmm, x, r, prior)
        pri = a_priori_bound(hmm, r, prior, dps=50)
        me = {"filtered": max(err.filtered), "next_token": max(err.next_token)}
        pb = {"filtered": max(post.filtered), "next_token": max(post.next_token)}
        holds = all(me[k] <= pb[k] for k in me)
        if pri.filtered is not None:
            holds = holds and exact_le(me["filtered"], pri.filtered) and exact_le(me["next_token"], pri.next_token)
        fl = float
        allowance = 0.0
    else:
        err = window_error(hmm, x, r, prior)
        post = a_posteriori_bound(hmm, x, r, prior)
        pri = a_priori_bound(hmm, r, prior)
        me = {"filtered": float(np.max(err.filtered)), "next_token": float(np.max(err.next_token))}
        pb = {"filtered": float(np.max(post.filtered)), "next_token": float(np.max(post.next_token))}
        allowance = roundoff_allowance(hmm.num_states, T, r)
        holds = all(me[k] <= pb[k] + allowance for k in me)
        if pri.filtered is not None:
            holds = holds and me["filtered"] <= float(pri.filtered) + allowance and \
                me["next_token"] <= float(pri.next_token) + allowance
        fl = float
    return {
        "r": r,
        "memory_error": {k: fl(v) for k, v in me.items()},
        "a_priori_bound": None if pri.filtered is None else {"filtered": float(pri.filtered),
                                                             "next_token": float(pri.next_token)},
        "a_priori_note": pri.note,
        "a_posteriori_bound": {k: fl(v) for k, v in pb.items()},
        "roundoff_allowance": allowance,
        "bound_holds": bool(holds),
    }


# ---------------------------------------------------------------------------------------------- registry
def _parse_prior(text: Any) -> Any:
    from hmm.window import parse_prior

    return parse_prior(text)


def _build_entry(hmm: HMM, tokens: Any, *, attention: str = "hard", beta: float | None = None, r: int = 4,
                 readout: str = "lookup", prior: str = "stationary", max_len: int | None = None) -> ConstructedTransformer:
    T = 16 if tokens is None else int(np.asarray(tokens).shape[-1])
    ml = max(T, 1) if max_len is None else max_len
    return build(hmm, r, readout=readout, prior=_parse_prior(prior), max_len=ml, attention=attention, beta=beta)


def _reference_entry(hmm: HMM, tokens: Any, *, exact: bool, r: int = 4, readout: str = "lookup",
                     prior: str = "stationary", max_len: int | None = None) -> dict:
    """The construction's exact target, the window filter (keys ``next_token_probs``, ``filtered_probs``). The
    float64 reference takes the prior rounded from its exact value (as the model's weights), so its round-off is the
    derived one of :func:`constructions.window_roundoff.reference_roundoff`."""
    from hmm.window import resolve_prior, window_filter, window_filter_exact

    p = _parse_prior(prior)
    if exact:
        w = window_filter_exact(hmm, tokens, r, p)
    else:
        w = window_filter(hmm, tokens, r, resolve_prior(hmm, p, exact=True))
    return {"next_token_probs": w.next_token_probs, "filtered_probs": w.filtered_probs}


def _report_entry(hmm: HMM, tokens: Any, *, exact: bool = False, r: int = 4, prior: str = "stationary", **_: Any) -> dict:
    return report_extra(hmm, tokens, r=r, prior=_parse_prior(prior), exact=exact)


def _parse_tokens(text: str) -> np.ndarray:
    from hmm.io import parse_tokens

    return parse_tokens(text)


def _probe_build(hmm: HMM, length: int, r: int | None = None) -> ConstructedTransformer:
    """``hmmtx probe`` subject: window ``r`` (default 4), sized for BOS + ``length - 1`` observations."""
    return build(hmm, 4 if r is None else r, max_len=length - 1)


def _register() -> Any:
    from constructions.estimates import window_bytes
    from constructions.registry import ConstructionEntry, Param, ProbeHooks, register

    return register(ConstructionEntry(
        name="window",
        estimate_bytes=window_bytes,
        summary="H2: fixed-memory window filter: ceil(log2(r+1)) gather layers + lookup or operator-product readout",
        provenance=PROVENANCE,
        input_kind="hmm",
        build=_build_entry,
        reference=_reference_entry,
        parse_tokens=_parse_tokens,
        params=(
            Param("r", int, 4, "window length r >= 1 (the last r tokens)"),
            Param("readout", str, "lookup", "readout: lookup (ReLU pattern table, width ~2 V^r) or product "
                  "(operator products over the window)", choices=READOUTS),
            Param("prior", str, "stationary", "reference prior of the window's first state: stationary, uniform, "
                  "or probabilities '1/2,1/4,1/4'"),
        ),
        families=("dirichlet", "low_rank", "observable", "sticky", "cyclic", "mess3", "even", "golden_mean"),
        outputs=("next_token_probs", "filtered_probs"),
        default_tokens="0 1 0 1 1 0",
        bound="vs the window filter: derived relative round-off bound (+ certified softmax leakage: lookup readout "
              "always, product readout for strictly positive HMMs); memory error vs the true filter reported "
              "separately with a-priori and a-posteriori bounds",
        report=_report_entry,
        probe=ProbeHooks("sequence", _probe_build),
    ))


ENTRY = _register()

__all__ = ["build", "claimed_bound", "report_extra", "softmax_lookup_leakage", "softmax_product_leakage", "operator_ratio", "ENTRY", "lookup_width", "WindowCodec", "READOUTS", "MAX_LOOKUP_WIDTH", "PROVENANCE"]
