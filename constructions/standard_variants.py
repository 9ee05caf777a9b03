"""The standard-block variants, registered like any construction: ``exact-filter-std``, ``window-std``,
``bayes-multitask-std``, ``icl-std``, ``adaptive-memory-std``, ``memory-kernel-std``.

Each builds the idealised construction (hard attention; memory-kernel: its own softmax) and compiles it with
:func:`constructions.standard.compile_standard`. Its claimed bound (:func:`standard_bound`) is the idealised
model's bound on the same tokens plus the substitution errors:

* one-hot positions, ReLU units through the constant coordinate, bilinear units as ReGLU pairs: exact (no term);
* hard attention as softmax at ``beta = 4096``: the off-target weight of a query is at most
  ``(P - 1) e^{-4096 gap}``; in float32/float64 it underflows to exactly 0 when ``4096 gap`` exceeds ~104/~745, so
  the float computation is the hard one. Checked a posteriori (:func:`_pattern_mismatch`: the variant's patterns
  must equal the idealised hard patterns exactly), else only the trivial bound is claimed;
* **prefix constructions** (H1, H3; :func:`prefix_std_bound`): the compiled layers are the idealised fresh-block
  layers without the projective normalisation, so the float run performs a subset of the idealised run's
  roundings (one per embedded entry, one per product, ``n - 1`` per sum; copies, clears ``x - x`` and additions to
  an exact zero are exact) and the idealised **derived** round-off bound
  (:func:`constructions.roundoff.prefix_roundoff`, relative per output) holds for it, with its no-underflow
  condition checked on the variant's own run in ``mode`` (the unnormalised products) and no overflow (every value
  finite). GeGLU/SwiGLU add an activation term per product (``2 (ACT_ULPS + n) ub``: the computed
  ``act(a) b + act(-a)(-b)`` is within a few ulps of ``a b``; **heuristic**, measured <= 2.4 ulps);
* dropped projective normalisation elsewhere (window ``--readout product``): the unnormalised products are
  non-negative, so each float product has entrywise relative error at most ``gamma_{n+1}`` on top of its factors'
  (first-order model); a position's output involves at most
  ``P + L`` products and one ``n^2``-term readout sum, and normalising ``z / sum z`` turns an entrywise relative
  error ``delta`` into at most ``2 delta / (1 - delta)``. The term added is ``2 (2 delta / (1 - delta) + u)`` with
  ``delta = ((P + L)(n + 2) + n^2 + 4) u`` (a stated heuristic allowance, like the idealised ones). It holds while
  no product leaves the normal float range: the bound checks it a posteriori (every dropped-norm block's mass in
  ``[2^-1000, 2^1000]`` in float64, ``[2^-100, 2^100]`` in float32) and claims only the trivial bound otherwise
  (the length limit, ``docs/export.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from constructions import adaptive_memory, bayes_multitask, exact_filter, icl, memory_kernel, window_filter
from constructions.estimates import with_one_hot_positions
from constructions.registry import AttentionDefaults, ConstructionEntry, CustomSweep, Param, SweepPoint, VerifySweep, register
from constructions.prefix import PrefixInfo
from constructions.roundoff import unit_log
from constructions.standard import ACTIVATIONS, CONST_GATE, HARD_BETA, StandardTransformer, compile_standard
from constructions.types import BoundReport, check_bound
from hmm.errors import HmmtxError

#: Normal-range limits of the unnormalised masses (log2), per float mode.
MASS_RANGE_LOG2 = {"float64": 1000, "float32": 100}
#: The stated float32 length limit of the prefix variants (H1, H3 without projective normalisation): ``hmmtx
#: verify`` plans no float32 case longer than this (``VerifySweep.max_lengths``). Past it the unnormalised masses of
#: the zoo's near-deterministic families (cyclic at S = 8) underflow float32 at T = 1024 and the output cannot be
#: read (zero total mass); at T <= 256 every ``--full`` case runs. A stated limit, not a guarantee for every input:
#: the bound's a-posteriori mass check still decides per input (``docs/export.md``, "What does not export").
PREFIX_FLOAT32_MAX_LENGTH = 256
#: Heuristic allowance (ulps) for the computed GELU/SiLU value ``act(a)`` in a gated pair ``act(a) b + act(-a)(-b)``
#: (not proved: torch's erf/exp accuracy is not specified; the whole pair measured within 2.4 ulps of ``a b``).
ACT_ULPS = 8


@dataclass(frozen=True)
class Variant:
    """How one construction compiles.

    Fields:
        base:        the idealised construction's registry entry
        drop_norms:  ``drop_norms(params) -> bool``: whether its projective normalisations are dropped (the caller
                     vouches that the normalised blocks are used projectively)
        mass_scale:  ``mass_scale(model) -> {block: c}`` (embedding scaling of dropped-norm blocks)
        head_blocks: residual blocks the unembedding reads when the construction has no readout
        verify:      the verify sweep (default: hard attention only)
    """

    base: ConstructionEntry
    drop_norms: Callable[[dict], bool] = lambda params: False
    mass_scale: Callable[[Any], dict] = lambda model: {}
    head_blocks: tuple[str, ...] = ()
    verify: VerifySweep = VerifySweep(betas=())


def _mass_check(std: StandardTransformer, tokens: Any, mode: str) -> tuple[bool, float, float]:
    """(every dropped-norm block's mass inside the normal range, smallest mass, largest mass) for these tokens."""
    blocks = set(std.info.dropped_norms)
    if not blocks:
        return True, math.nan, math.nan
    ids = std.check_input_ids(std.codec.encode(tokens))
    m = std if std.dtype == (torch.float64 if mode == "float64" else torch.float32) else std.materialise(
        torch.float64 if mode == "float64" else torch.float32)
    with torch.no_grad():
        res = m.forward(ids, record="residuals")
    lo, hi = math.inf, 0.0
    for li, layer in enumerate(std.idealised.layers):
        for n in layer.norms:
            m = res.residuals[li + 1][..., std.layout[n.block]].sum(dim=-1).to(torch.float64)
            lo, hi = min(lo, float(m.min())), max(hi, float(m.max()))
    e = MASS_RANGE_LOG2[mode]
    ok = math.isfinite(lo) and math.isfinite(hi) and lo >= 2.0**-e and hi <= 2.0**e
    return ok, lo, hi


def _pattern_mismatch(std: StandardTransformer, ideal: Any, ids: Any, mode: str) -> tuple[str, Any]:
    """('' when the variant's softmax patterns equal the idealised hard patterns exactly (one-hot rows, equal weights
    on ties) for every idealised head in ``mode``, else where they first differ; the variant's run in ``mode`` with
    every layer recorded). This checks the large-beta argument a posteriori: it needs every hard score gap to
    exceed ~745 / beta (float64) or ~104 / beta (float32). The idealised hard run is in ``mode`` (float64 when that
    refuses the input, e.g. a normalisation that underflows in float32: its positional targets are the same)."""
    dt = torch.float64 if mode == "float64" else torch.float32
    s = std if std.dtype == dt else std.materialise(dt)
    with torch.no_grad():
        ts = s.forward(ids, record="all")
        try:
            i = ideal if ideal.dtype == dt else ideal.materialise(dt)
            ti = i.forward(ids, attention="hard", record="all")
        except HmmtxError:
            i = ideal if ideal.dtype == torch.float64 else ideal.materialise(torch.float64)
            ti = i.forward(ids, attention="hard", record="all")
    for l, w in enumerate(ti.attn_weights):
        if w is None:
            continue
        if not torch.equal(ts.attn_weights[l][:, : w.shape[1]].to(w.dtype), w):
            return f"block {l}", ts
    return "", ts


def standard_bound(std: StandardTransformer, tokens: Any, mode: str = "float64") -> BoundReport:
    """The idealised bound on the same tokens plus the substitution terms (module docstring)."""
    if mode not in ("float64", "float32"):
        raise HmmtxError(f"{std.spec.name}: standard variants run in float64/float32 (softmax attention), got {mode!r}")
    ideal = std.idealised
    ids = std.check_input_ids(std.codec.encode(tokens))
    P, L = ids.shape[1], std.config.n_layers
    note = ""
    if ideal.attention == "hard":
        note = (f"hard -> softmax at beta={std.beta:g}: patterns equal to the hard ones in {mode} (checked); "
                f"exact-arithmetic off-target weight <= {P - 1} e^(-beta gap)")
    from constructions.standard import QUAD_BLOCK

    if QUAD_BLOCK in std.layout and mode == "float32" and 2 * P * P >= 2**24:
        return BoundReport(1.0, 1.0, 0.0, 1.0, note + f"; {P} positions: the quadratic position scores are not exact "
                           "in float32 beyond 2896 positions (trivial bound only)", "trivial")
    trace = None
    if ideal.attention == "hard":
        bad, trace = _pattern_mismatch(std, ideal, ids, mode)
        if bad:
            return BoundReport(1.0, 1.0, 0.0, 1.0, note + f"; {bad}: hard attention not reproduced (score gap below "
                               f"~{745 if mode == 'float64' else 104}/beta), trivial bound only", "trivial")
    if isinstance(ideal.info, PrefixInfo) and trace is not None:
        return prefix_std_bound(std, tokens, mode, trace, note)
    if not std.info.dropped_norms:
        base = check_bound(ideal.claimed_bound(tokens, mode), ideal.spec.name)
        return BoundReport(base.value, base.leakage, base.roundoff, base.trivial,
                           f"idealised {ideal.spec.name}: {base.notes}; {note}; other substitutions exact",
                           base.roundoff_kind)
    if ideal.attention != "hard":
        raise HmmtxError(f"{std.spec.name}: projective normalisation is dropped only from hard-attention models")
    base = BoundReport(0.0, 0.0, 0.0, 1.0, "")
    ok, lo, hi = _mass_check(std, tokens, mode)
    if not ok:
        return BoundReport(base.trivial, base.trivial, 0.0, base.trivial,
                           note + f"; the unnormalised masses ({lo:.3g} .. {hi:.3g}) left the normal {mode} range "
                           "(projective normalisation dropped): past the variant's length limit, trivial bound only",
                           "trivial")
    return normfree_bound(std, base, P, L, mode, lo, note)


def prefix_std_bound(std: StandardTransformer, tokens: Any, mode: str, trace: Any, note: str) -> BoundReport:
    """The claimed bound of a compiled prefix construction (H1, H3; module docstring): the idealised model's
    derived round-off bound with its no-underflow condition checked on ``trace`` (the variant's own run in ``mode``,
    hard patterns already checked), no overflow (every value of the run finite), and for GeGLU/SwiGLU the
    heuristic activation term ``2 (ACT_ULPS + n) ub`` per product. Beyond the variant's length limit (an
    unnormalised product under- or overflows) only the trivial bound is claimed."""
    ideal = std.idealised
    if not all(bool(torch.isfinite(r).all()) for r in trace.residuals):
        return BoundReport(1.0, 1.0, 0.0, 1.0, note + "; an unnormalised product overflowed (projective normalisation "
                           "dropped): past the variant's length limit, trivial bound only", "trivial")
    extra = 0.0
    act = std.config.act_fn
    if act != "relu":
        fn = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[act]
        g = torch.tensor(CONST_GATE, dtype=torch.float64 if mode == "float64" else torch.float32)
        if float(fn(g)) != CONST_GATE:
            return BoundReport(1.0, 1.0, 0.0, 1.0, note + f"; {act}({CONST_GATE:g}) != {CONST_GATE:g} in {mode} in this "
                               "torch build: the constant-factor units do not clear exactly, trivial bound only", "trivial")
        extra = 2.0 * (ACT_ULPS + int(std.info.n)) * unit_log(mode)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # masses unnormalised (leakage terms unused)
        base = check_bound(ideal.bound_fn(ideal, tokens, mode, trace=trace, product_extra=extra), ideal.spec.name)
    if base.roundoff_kind == "trivial":
        return BoundReport(base.trivial, base.trivial, 0.0, base.trivial,
                           note + f"; {base.notes} (unnormalised products of the variant: past its length limit), "
                           "trivial bound only", "trivial")
    act_note = "ReGLU pairs exact" if act == "relu" else f"{act} pairs within {ACT_ULPS} ulps per product (heuristic)"
    return BoundReport(base.value, base.leakage, base.roundoff, base.trivial,
                       note + f"; idealised {ideal.spec.name} {base.notes}; no-underflow condition checked on this "
                       f"variant's unnormalised {mode} run, no overflow; projective normalisation dropped (one "
                       f"rounding fewer per product), {act_note}", base.roundoff_kind)


def normfree_bound(std: StandardTransformer, base: BoundReport, P: int, L: int, mode: str, lo: float,
                   note: str) -> BoundReport:
    """The claimed bound of a variant whose projective normalisation was dropped (module docstring): the idealised
    model's leakage (0 for hard attention) plus the round-off of non-negative unnormalised products, plus the same
    for a float64 reference filter over the sequence (so the claim also holds against a float64 reference).
    It replaces the idealised round-off allowance (window ``--readout product``: its products are non-negative
    and written into fresh blocks, no cancellation to cover)."""
    u = float(torch.finfo(torch.float64 if mode == "float64" else torch.float32).eps) / 2
    u64 = 2.0**-53
    tiny = 2.0**-1074 if mode == "float64" else 2.0**-149
    n = int(std.info.n)
    delta = ((P + L) * (n + 2) + n * n + 4) * u + n * n * tiny / lo
    delta_ref = (P + 1) * (n + 2) * u64
    rnd = 2 * (2 * delta / (1 - delta) + u) + 2 * (2 * delta_ref / (1 - delta_ref) + u64)
    value = min(base.trivial, base.leakage + rnd)
    return BoundReport(value, base.leakage, min(value, rnd), base.trivial,
                       note + f"; projective normalisation dropped: stated round-off {rnd:.3g} of non-negative "
                       f"unnormalised products (delta = {delta:.3g}, replaces the idealised allowance: no cancellation "
                       f"in non-negative products; masses >= {lo:.3g}, inside the normal range)")


# ---------------------------------------------------------------------------------------------- registration
def _std_build(v: Variant) -> Callable[..., StandardTransformer]:
    default = v.base.attention

    def build(source: Any, tokens: Any, *, attention: str = default.attention, beta: float | None = None,
              act: str = "relu", **params: Any) -> StandardTransformer:
        if default.attention == "hard":
            if attention != "hard" or beta is not None:
                raise HmmtxError(f"{v.base.name}-std compiles the hard-attention construction (as softmax at beta = "
                                 f"{HARD_BETA:g}): use --attention hard without --beta")
        model = v.base.build(source, tokens, attention=attention, beta=beta, **params)
        return compile_standard(model, act=act, drop_norms=v.drop_norms(params), head_blocks=v.head_blocks,
                                mass_scale=v.mass_scale(model), bound_fn=standard_bound)

    return build


def _std_reference(v: Variant) -> Callable[..., dict]:
    def reference(source: Any, tokens: Any, *, exact: bool, act: str = "relu", **params: Any) -> dict:
        return v.base.reference(source, tokens, exact=exact, **params)

    return reference


def register_variant(v: Variant) -> ConstructionEntry:
    """Register ``<base>-std`` for the variant ``v``."""
    b = v.base
    return register(ConstructionEntry(
        name=f"{b.name}-std",
        summary=f"standard-block variant of {b.name} (TransformerLens architecture: W_pos, softmax, gated MLP)",
        provenance=f"standard-block compilation (hmmtx) of: {b.provenance}",
        input_kind=b.input_kind,
        build=_std_build(v),
        reference=_std_reference(v),
        parse_tokens=b.parse_tokens,
        params=b.params + (Param("act", str, "relu", "gated-MLP activation (relu = ReGLU, gelu = GeGLU, silu = SwiGLU)",
                                 choices=ACTIVATIONS),),
        families=b.families,
        outputs=b.outputs,
        default_tokens=b.default_tokens,
        modes=tuple(m for m in b.modes if m != "exact"),
        bound_covers=b.bound_covers,
        bound=f"idealised bound ({b.bound}) + substitution errors (docs/export.md)",
        exact_reference=b.exact_reference,
        size=b.size,
        attention=b.attention,
        verify=v.verify,
        estimate_bytes=with_one_hot_positions(b.estimate_bytes) if b.estimate_bytes else None,
    ))


def _op_scale(model: Any) -> dict:
    """The embedded operators (block ``op``; ``op_alt`` is 0 in the embedding) scaled by ``n`` (exactly), when ``op``
    is normalised at all (with one doubling layer only ``op_alt`` is: no scaling needed for so few factors)."""
    normalised = {n.block for layer in model.layers for n in layer.norms}
    return {"op": model.layout.block("op").shape[0]} if "op" in normalised else {}


def _memory_points(lengths: tuple[int, ...]) -> list[SweepPoint]:
    """memory-kernel's sweep with a short burn-in (one-hot positions make n_ctx = T + prefix + 1 wide) and
    lengths capped at 256."""
    from constructions.memory.sweep import points

    out = []
    for p in points(tuple(min(int(T), 256) for T in lengths)):
        out.append(SweepPoint(p.label, p.length, p.modes, p.attention, p.beta, tuple({**dict(p.params), "prefix": 32}.items())))
    return out


def _hard_float_sweep(sweep: VerifySweep) -> VerifySweep:
    """The base construction's custom sweep restricted to what a hard-compiled variant runs: hard attention, float
    modes."""
    base = sweep.custom

    def points(lengths: tuple[int, ...]) -> list[SweepPoint]:
        out = []
        for p in base.points(lengths):
            modes = tuple(m for m in p.modes if m != "exact")
            if p.attention == "hard" and modes:
                out.append(SweepPoint(p.label, p.length, modes, "hard", None, p.params))
        return out

    return VerifySweep(betas=(), custom=CustomSweep(points, base.inputs))


def _memory_inputs(point: SweepPoint, seed: int) -> Any:
    from constructions.memory.sweep import inputs

    return inputs(point, seed)


#: The prefix variants' sweep: hard attention only, float32 up to their stated length limit.
_PREFIX_SWEEP = VerifySweep(betas=(), max_lengths=(("float32", PREFIX_FLOAT32_MAX_LENGTH),))

VARIANTS = (
    Variant(exact_filter.ENTRY, drop_norms=lambda p: True, mass_scale=_op_scale, verify=_PREFIX_SWEEP),
    Variant(window_filter.ENTRY, drop_norms=lambda p: p.get("readout", "lookup") == "product"),
    Variant(bayes_multitask.ENTRY, drop_norms=lambda p: True, mass_scale=_op_scale, verify=_PREFIX_SWEEP),
    Variant(icl.ENTRY),
    Variant(adaptive_memory.ENTRY, head_blocks=("y",), verify=_hard_float_sweep(adaptive_memory.ENTRY.verify)),
    Variant(memory_kernel.ENTRY, head_blocks=("y", "mem"),
            verify=VerifySweep(betas=(), custom=CustomSweep(_memory_points, _memory_inputs))),
)

ENTRIES = tuple(register_variant(v) for v in VARIANTS)

__all__ = ["Variant", "VARIANTS", "ENTRIES", "standard_bound", "prefix_std_bound", "register_variant", "MASS_RANGE_LOG2",
           "PREFIX_FLOAT32_MAX_LENGTH",
           "ACT_ULPS"]
