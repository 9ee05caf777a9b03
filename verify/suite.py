"""The verification suite: sweep every registered construction over HMMs and lengths and check it.

Vocabulary (also used by the JSON report, ``docs/report-format.md``):

* a **case** (:class:`Case`) is one construction run on one input: a zoo family and seed (the HMM or task mixture),
  a number of hidden states ``S``, a sequence length ``T``, a number mode (``float64``, ``float32`` or ``exact``)
  and the construction's own parameters (attention kind, beta, window r, ...);
* an **outcome** (:class:`Outcome`) is what running a case measures: the error against the exact reference, the
  construction's claimed bound for that input, the stated round-off allowance, and for exact mode whether the
  Fraction run agrees bit for bit with the Fraction reference;
* a **result** (:class:`CaseResult`) is the outcome judged: ``pass``, ``bound`` (error > bound + allowance),
  ``exact`` (exact mode disagrees) or ``crash`` (the construction raised).

Constructions are discovered from the registry (:mod:`constructions.registry`); this module never lists them by
hand. The registry says what a construction *is* (builder, reference, bound); the verify-side :class:`Adapter`
protocol adds what a sweep needs: which cases to run for a plan (:meth:`Adapter.cases`) and how to run one
(:meth:`Adapter.run`). :func:`adapters` builds one adapter per registered construction.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from hmm.errors import HmmtxError

#: Number modes a case can run in. ``exact`` runs the construction's Fraction executor (hard attention).
DTYPES: tuple[str, ...] = ("float64", "float32", "exact")

#: Case statuses, in the order a summary reports them.
STATUSES: tuple[str, ...] = ("pass", "bound", "exact", "crash")


# ---------------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Plan:
    """What a sweep covers (the generic axes; each adapter maps them onto its own inputs).

    Fields:
        preset:  ``"quick"``, ``"full"`` or ``"custom"`` (recorded in the report)
        states:  hidden-state counts S to sweep
        lengths: sequence lengths T to sweep
        dtypes:  number modes (subset of :data:`DTYPES`)
        seed:    base seed; case seeds are derived from it deterministically
        exact_max_states, exact_max_length: exact (Fraction) mode runs only where S and T are at most these
            (Fractions grow with T; SPEC §6 asks for bit-exactness at S <= 4, T <= 64)
        seeds_per_point: HMMs drawn per (family, S, T) point
        classic_lengths_per_family: each classic process (fixed size) runs at this many of the plan's lengths,
            chosen by rotation so that together they cover the lengths (0: every length)
        certify: run every float case also in ball arithmetic (``--certify``): the verdict then reads bound +
            certified round-off (:mod:`constructions.certified`), the heuristic allowance is reported next to it
        softmax_max_length: softmax-attention variants run only where T is at most this (their certified leakage
            bounds are computed position by position and dominate the time at large T)
        exact_scale_points: (S, T) points beyond the exact-reference rule at which constructions whose registry
            entry sets ``VerifySweep.exact_at_scale`` run their float modes (hard attention) against the exact
            reference (case parameter ``reference=exact``) and exact mode where ``T <= exact_scale_max_length``
        exact_scale_max_length: longest T of the exact-mode (bit-exact executor) cases at the scale points
    """

    preset: str
    states: tuple[int, ...]
    lengths: tuple[int, ...]
    dtypes: tuple[str, ...]
    seed: int = 0
    exact_max_states: int = 4
    exact_max_length: int = 64
    seeds_per_point: int = 1
    classic_lengths_per_family: int = 0
    softmax_max_length: int = 1 << 30
    certify: bool = False
    exact_scale_points: tuple[tuple[int, int], ...] = ()
    exact_scale_max_length: int = 0

    def __post_init__(self) -> None:
        if not self.states:
            raise HmmtxError("--states: give at least one state count")
        if not self.lengths:
            raise HmmtxError("--lengths: give at least one sequence length")
        if not self.dtypes:
            raise HmmtxError("--dtype: give at least one of " + ", ".join(DTYPES))
        for s in self.states:
            if not isinstance(s, int) or s < 1:
                raise HmmtxError(f"--states: {s!r} is not a state count >= 1")
        for t in self.lengths:
            if not isinstance(t, int) or t < 1:
                raise HmmtxError(f"--lengths: {t!r} is not a sequence length >= 1")
        for d in self.dtypes:
            if d not in DTYPES:
                raise HmmtxError(f"--dtype: {d!r} is not one of {', '.join(DTYPES)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise HmmtxError(f"--seed: {self.seed!r} is not an integer >= 0")
        if self.seeds_per_point < 1:
            raise HmmtxError(f"seeds_per_point: {self.seeds_per_point} must be >= 1")
        for pt in self.exact_scale_points:
            if len(pt) != 2 or any(not isinstance(v, int) or v < 1 for v in pt):
                raise HmmtxError(f"exact_scale_points: {pt!r} is not an (S, T) pair of integers >= 1")

    def exact_allowed(self, states: int | None, length: int) -> bool:
        return (states is None or states <= self.exact_max_states) and length <= self.exact_max_length

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "states": list(self.states),
            "lengths": list(self.lengths),
            "dtypes": list(self.dtypes),
            "seed": self.seed,
            "exact_max_states": self.exact_max_states,
            "exact_max_length": self.exact_max_length,
            "seeds_per_point": self.seeds_per_point,
            "classic_lengths_per_family": self.classic_lengths_per_family,
            "softmax_max_length": self.softmax_max_length,
            "certify": self.certify,
            "exact_scale_points": [list(p) for p in self.exact_scale_points],
            "exact_scale_max_length": self.exact_scale_max_length,
        }

    def classic_lengths(self, index: int) -> tuple[int, ...]:
        """The lengths at which the ``index``-th classic process of a construction runs (rotation)."""
        n = len(self.lengths)
        m = self.classic_lengths_per_family
        if m <= 0 or m >= n:
            return tuple(self.lengths)
        return tuple(self.lengths[(index + k) % n] for k in range(m))


#: ``--quick``: small sizes, every mode; under a minute on 2 cores for every registered construction.
QUICK = Plan(preset="quick", states=(2, 3), lengths=(4, 16), dtypes=DTYPES, seed=0, classic_lengths_per_family=1)

#: ``--full``: S up to 8, T up to 1024; exact mode where S <= 4 and T <= 64; softmax variants up to T = 256; and,
#: for constructions with a fast exact reference (``VerifySweep.exact_at_scale``: H1, H3), float modes against the
#: exact reference at S = 8, 12, 16 (T = 1024, 512, 1024) with H1/H3 bit-exact (exact mode) at S = 8, T = 256.
FULL = Plan(preset="full", states=(2, 4, 8), lengths=(16, 64, 256, 1024), dtypes=DTYPES, seed=0,
            classic_lengths_per_family=2, softmax_max_length=256,
            exact_scale_points=((8, 256), (8, 1024), (12, 512), (16, 1024)), exact_scale_max_length=256)

PRESETS: dict[str, Plan] = {"quick": QUICK, "full": FULL}


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One construction run on one input.

    Fields:
        construction: CLI name (``exact-filter``, ``window``, ...)
        family:       zoo family the HMM / task mixture was drawn from (``""`` when none applies)
        states:       S, hidden states per HMM (None when the construction has no HMM)
        length:       T, length of the token sequence (for in-context inputs: the flattened stream)
        dtype:        one of :data:`DTYPES`
        seed:         seed of the drawn HMM and tokens
        params:       the construction's own parameters, sorted ``(name, value)`` pairs with JSON values
    """

    construction: str
    family: str
    states: int | None
    length: int
    dtype: str
    seed: int
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise HmmtxError(f"case {self.construction}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.length < 1:
            raise HmmtxError(f"case {self.construction}: length {self.length} must be >= 1")
        if self.states is not None and self.states < 1:
            raise HmmtxError(f"case {self.construction}: states {self.states} must be >= 1")
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def case_id(self) -> str:
        """Stable, human-readable id: ``exact-filter/random/S3/T16/float64/seed7[/attention=softmax,beta=20]``."""
        parts = [self.construction, self.family or "-"]
        parts.append(f"S{self.states}" if self.states is not None else "S-")
        parts += [f"T{self.length}", self.dtype, f"seed{self.seed}"]
        if self.params:
            parts.append(",".join(f"{k}={_fmt_param(v)}" for k, v in self.params))
        return "/".join(parts)


def _fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


class Replay(NamedTuple):
    """What a reproducer needs to replay a case with ``hmmtx run``.

    Fields:
        model_kind: ``"hmm"`` (written to ``hmm.json``, passed as ``--hmm``), ``"tasks"`` (``tasks.json``,
                    ``--tasks``) or None (the construction takes no model file)
        model:      the JSON object of that file (SPEC §2 format), or None
        tokens:     the token string as the CLI takes it (``"0 1 2 | 1 0"``), or None
        run_args:   the remaining ``hmmtx run`` arguments (``["--mode", "float32", "--attention", "softmax", ...]``)
    """

    model_kind: str | None
    model: Mapping[str, Any] | None
    tokens: str | None
    run_args: tuple[str, ...]


class Outcome(NamedTuple):
    """What running one case measured.

    Fields:
        error:     max |construction - exact reference| over the compared quantity (a float; in exact mode the
                   difference of Fractions converted to float)
        bound:     the construction's claimed bound for this input (``math.inf`` when it has no finite bound)
        allowance: the stated round-off allowance added to the bound in float modes (0 in exact mode)
        exact_ok:  exact mode only: True when every compared Fraction equals the reference's; None otherwise
        quantity:  what was compared (``next_token_probs``, ``bayes_predictive``, ...)
        replay:    the inputs, for the reproducer
        vocab:     V (observation symbols), None when not applicable
        size:      construction size (``layers``, ``heads``, ``width``, ``ffn_width``; more keys allowed)
        note:      free text shown in the report (how the bound was obtained, ...)
    """

    error: float
    bound: float
    allowance: float
    exact_ok: bool | None
    quantity: str
    replay: Replay
    vocab: int | None = None
    size: Mapping[str, Any] = {}
    note: str = ""
    allowance_kind: str = "heuristic"
    certified: Mapping[str, Any] | None = None


class CaseResult(NamedTuple):
    """A judged case (one row of the report's ``cases``).

    ``status`` is ``pass``, ``bound`` (error > bound + allowance), ``exact`` (exact mode disagrees with the Fraction
    reference) or ``crash`` (the construction raised: ``message`` says what). ``ratio`` is
    ``error / (bound + allowance)`` (the tightness; <= 1 exactly when the bound holds), None when undefined (no
    finite bound, or a crash).
    """

    case: Case
    status: str
    error: float | None
    bound: float | None
    allowance: float | None
    ratio: float | None
    exact_ok: bool | None
    seconds: float
    quantity: str
    vocab: int | None
    size: Mapping[str, Any]
    message: str
    replay: Replay | None
    allowance_kind: str = "heuristic"
    certified: Mapping[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def tightness(error: float, bound: float, allowance: float) -> float | None:
    """``error / (bound + allowance)``; None for an infinite bound; 0/0 = 0; x/0 = inf (a broken bound)."""
    if math.isinf(bound):
        return None
    total = bound + allowance
    if total == 0:
        return 0.0 if error == 0 else math.inf
    return error / total


def judge(case: Case, outcome: Outcome, seconds: float) -> CaseResult:
    """Turn an outcome into a result: the bound check (``error <= bound + allowance``) and the exact check."""
    err, bound, allow = float(outcome.error), float(outcome.bound), float(outcome.allowance)
    cert = outcome.certified if outcome.certified and "within" in outcome.certified else None
    if math.isnan(err) or err < 0:
        status, msg = "bound", f"measured error is {err!r} (NaN or negative): the construction output is not usable"
    elif case.dtype == "exact" and outcome.exact_ok is not True:
        status, msg = "exact", f"exact mode disagrees with the Fraction reference (max difference {err:.3e})"
    elif cert is not None and not cert["within"]:  # --certify: the verdict reads the certified bound
        status = "bound"
        msg = (f"error {err:.3e} exceeds the certified bound {cert['bound']:.3e} (bound {bound:.3e} + certified "
               f"round-off {cert['roundoff']:.3e})")
    elif cert is None and not (err <= bound + allow):
        status = "bound"
        msg = f"error {err:.3e} exceeds bound {bound:.3e} + {outcome.allowance_kind} allowance {allow:.3e}"
    else:
        status, msg = "pass", outcome.note
    ratio = None if math.isnan(err) else tightness(err, bound, allow)
    return CaseResult(
        case=case,
        status=status,
        error=err,
        bound=bound,
        allowance=allow,
        ratio=ratio,
        exact_ok=outcome.exact_ok if case.dtype == "exact" else None,
        seconds=seconds,
        quantity=outcome.quantity,
        vocab=outcome.vocab,
        size=dict(outcome.size),
        message=msg if status != "pass" else outcome.note,
        replay=outcome.replay,
        allowance_kind=outcome.allowance_kind,
        certified=dict(outcome.certified) if outcome.certified else None,
    )


def crashed(case: Case, exc: BaseException, seconds: float, replay: Replay | None = None) -> CaseResult:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return CaseResult(
        case=case,
        status="crash",
        error=None,
        bound=None,
        allowance=None,
        ratio=None,
        exact_ok=False if case.dtype == "exact" else None,
        seconds=seconds,
        quantity="",
        vocab=None,
        size={},
        message=f"{type(exc).__name__}: {exc}{loc}",
        replay=replay,
    )


# ---------------------------------------------------------------------------------------------- adapters
class Adapter(Protocol):
    """Verify-side view of one registered construction.

    Attributes:
        name, summary, provenance: from the registry entry
        dtypes: number modes it supports (``exact`` only with a Fraction executor)
    """

    name: str
    summary: str
    provenance: str
    dtypes: tuple[str, ...]

    def cases(self, plan: Plan) -> list[Case]:
        """The cases this construction runs for ``plan`` (deterministic in ``plan.seed``)."""
        ...

    def run(self, case: Case) -> Outcome:
        """Build the construction for the case's input, run it, compare with the exact reference."""
        ...

    def replay_for(self, case: Case) -> Replay | None:
        """The reproducer inputs of a case without running it (used when :meth:`run` crashed)."""
        ...


def adapters() -> list[Adapter]:
    """One adapter per construction in the registry, in registry order; a construction module (or entry point,
    or plugin) that failed to load gets an adapter whose one case crashes with the error (so verify fails and
    names it)."""
    from constructions import registry

    out = [adapter_for(entry) for entry in registry.entries().values()]
    for where, message in registry.import_errors().items():
        name = where if " " in where else f"constructions.{where}"
        out.append(_Unavailable(name, f"failed to load: {message}"))
    return out


def stated_limit_lines(selected: Sequence[Adapter], plan: Plan) -> list[str]:
    """One line per construction and number mode whose stated length limit (``VerifySweep.max_lengths``) cuts the
    plan: those cases are not planned (never run to crash), and the report says so instead of dropping them
    silently."""
    longest = max(plan.lengths, default=0)
    lines = []
    for a in selected:
        entry = getattr(a, "entry", None)
        for mode, limit in getattr(getattr(entry, "verify", None), "max_lengths", ()):
            if mode in plan.dtypes and mode in a.dtypes and longest > limit:
                lines.append(f"{a.name}: {mode} cases longer than T = {limit} not planned (stated length limit)")
    return lines


class _Unavailable:
    """A construction verify cannot sweep (import failure, no case generator): one case that crashes, with why."""

    dtypes: tuple[str, ...] = ("float64",)

    def __init__(self, name: str, why: str, summary: str = "", provenance: str = "") -> None:
        self.name, self.why, self.summary, self.provenance = name, why, summary, provenance

    def cases(self, plan: Plan) -> list[Case]:
        return [Case(self.name, "", None, 1, "float64", plan.seed)]

    def run(self, case: Case) -> Outcome:
        raise HmmtxError(self.why)

    def replay_for(self, case: Case) -> Replay | None:
        return None


def adapter_for(entry: Any) -> Adapter:
    """The verify adapter of a registry entry (:class:`RegistryAdapter`: every entry is swept through its typed
    contract; ``entry.verify.custom`` supplies the inputs of constructions that do not read zoo HMMs)."""
    return RegistryAdapter(entry)


def derived_seed(base: int, *parts: Any) -> int:
    """A deterministic seed in [0, 2**31) from the base seed and the case coordinates (stable across runs)."""
    key = "/".join(str(p) for p in parts).encode()
    return (int(base) * 1_000_003 + zlib.crc32(key)) % (2**31)


#: Default softmax inverse temperatures swept (float64 only) for constructions that accept ``attention="softmax"``.
DEFAULT_BETAS: tuple[float, ...] = (20.0,)


class _Inputs(NamedTuple):
    source: Any  # HMM, HMMMixture or None
    tokens_text: str
    tokens: Any  # entry.parse_tokens(tokens_text)
    vocab: int | None


class RegistryAdapter:
    """Sweeps one registry entry (the generic case generator; no construction is named here).

    Zoo inputs (``entry.input_kind`` ``hmm`` / ``mixture``): for every (S, T) of the plan one of the entry's random
    zoo families (rotating diagonally, so each family meets several S and T), plus each classic zoo process (fixed
    size) whose S is within the plan's largest S, at :meth:`Plan.classic_lengths`. Each point runs in every
    supported mode (``exact`` only where :meth:`Plan.exact_allowed`), with hard attention; float64 also with
    softmax attention at each beta of ``entry.verify.betas`` (``()`` turns it off). HMMs are drawn with small
    rational entries (zoo ``rational=True``, so Fractions stay small) and the same HMM, tokens and built model serve
    every mode of a point.

        ``hmm``: the zoo HMM (V = ``entry.verify.vocab``; at least S for ``observable``) and T tokens sampled from it;
        ``mixture``: ``entry.verify.tasks`` tasks of the family and one context of total stream length about T (3
        demonstrations when T >= 8, else 1; the test segment a quarter of it).

    Custom inputs (``entry.verify.custom``, required for ``input_kind="none"``): the construction's
    :class:`~constructions.registry.SweepPoint` s for the plan's lengths, each in the plan's modes it lists; the
    case's family column is the point's label and its params ``(("config", label),)``.

    Run: :func:`constructions.runner.run_construction` (the one run-and-compare path, with its one exact-reference
    rule); error = max |output - reference| over the bound-covered outputs; bound and allowance from the claimed
    bound (``allowance = min(roundoff, value)``, ``bound = value - allowance``).
    """

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.name = entry.name
        self.summary = entry.summary
        self.provenance = entry.provenance
        self.dtypes = tuple(d for d in DTYPES if d in entry.modes)
        self.betas = tuple(float(b) for b in entry.verify.betas)
        self.vocab = int(entry.verify.vocab)
        self.num_tasks = int(entry.verify.tasks)
        self.custom = entry.verify.custom
        self.compared_outputs = compared_outputs(entry)
        # Cases of one (family, S, T, seed) point come one after another: a few cached inputs, models and
        # references let the float64, float32 and exact cases share one build.
        self._input_cache: dict = {}
        self._model_cache: dict = {}
        self._ref_cache: dict = {}
        self._points: dict[str, Any] = {}

    # -------------------------------------------------------------- cases
    def _families(self) -> tuple[list[str], list[tuple[str, int]]]:
        from hmm.zoo import FAMILIES

        unknown = [f for f in self.entry.families if f not in FAMILIES]
        if unknown:  # a family the construction claims but verify cannot draw would go untested: say so
            raise HmmtxError(
                f"registry entry '{self.name}' names zoo families {unknown} that hmm.zoo does not have "
                f"(known: {', '.join(FAMILIES)})"
            )
        fams = list(self.entry.families) or ["dirichlet"]
        random_f = [f for f in fams if FAMILIES[f].fixed_size is None]
        classic = [(f, FAMILIES[f].fixed_size[0]) for f in fams if FAMILIES[f].fixed_size is not None]
        return random_f, classic

    def _variants(self, dtype: str, softmax: bool = True) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"attention": "hard"}]
        if dtype == "float64" and softmax:
            out += [{"attention": "softmax", "beta": b} for b in self.betas]
        return out

    def cases(self, plan: Plan) -> list[Case]:
        if self.custom is not None:
            return self._custom_cases(plan)
        if self.entry.input_kind not in ("hmm", "mixture"):
            raise HmmtxError(
                f"construction '{self.name}' has input kind {self.entry.input_kind!r}: verify needs "
                "verify=VerifySweep(custom=CustomSweep(...)) in its registry entry to sweep it"
            )
        random_f, classic = self._families()
        points: list[tuple[str, int, int]] = []
        for si, S in enumerate(plan.states):
            for ti, T in enumerate(plan.lengths):
                if random_f:  # diagonal rotation: each family meets several S and several T
                    points.append((random_f[(si + ti) % len(random_f)], S, T))
        for j, (fam, S) in enumerate(classic):
            if S <= max(plan.states):
                points += [(fam, S, T) for T in plan.classic_lengths(j)]
        out = []
        for fam, S, T in points:
            for k in range(plan.seeds_per_point):
                seed = derived_seed(plan.seed, self.name, fam, S, T, k)
                for d in plan.dtypes:
                    if not self._planned(d, T) or (d == "exact" and not plan.exact_allowed(S, T)):
                        continue
                    for v in self._variants(d, T <= plan.softmax_max_length):
                        out.append(Case(self.name, fam, S, T, d, seed, tuple(v.items())))
        return out + self._exact_scale_cases(plan, random_f)

    def _planned(self, dtype: str, length: int) -> bool:
        """Whether a case of ``dtype`` at length ``length`` is planned: the construction runs the mode and ``length``
        is within its stated length limit for it (``VerifySweep.max_lengths``): a case the construction says in
        advance it cannot run is not planned, never run to crash."""
        limit = self.entry.verify.max_length(dtype)
        return dtype in self.dtypes and (limit is None or length <= limit)

    def _exact_scale_cases(self, plan: Plan, random_f: list[str]) -> list[Case]:
        """Cases at ``plan.exact_scale_points`` (entries with ``verify.exact_at_scale`` only): float modes, hard
        attention, against the exact reference; exact mode up to ``plan.exact_scale_max_length``. Families rotate
        over the entry's random families; seeds are derived apart from the regular points'."""
        if not getattr(self.entry.verify, "exact_at_scale", False) or not random_f:
            return []
        out = []
        for i, (S, T) in enumerate(plan.exact_scale_points):
            fam = random_f[i % len(random_f)]
            seed = derived_seed(plan.seed, self.name, "exact-scale", fam, S, T)
            for d in plan.dtypes:
                if not self._planned(d, T) or (d == "exact" and T > plan.exact_scale_max_length):
                    continue
                out.append(Case(self.name, fam, S, T, d, seed, (("attention", "hard"), ("reference", "exact"))))
        return out

    def _custom_cases(self, plan: Plan) -> list[Case]:
        points = list(self.custom.points(tuple(int(T) for T in plan.lengths)))
        out = []
        by_label: dict[str, list] = {}
        for pt in points:
            by_label.setdefault(pt.label, []).append(pt)
        for label, pts in by_label.items():
            for pt in sorted(pts, key=lambda q: q.length):
                self._points[(label, pt.length)] = pt
                for k in range(plan.seeds_per_point):
                    seed = derived_seed(plan.seed, self.name, label, pt.length, k)
                    for d in plan.dtypes:
                        if (self._planned(d, pt.length) and d in pt.modes
                                and (d != "exact" or plan.exact_allowed(None, pt.length))):
                            out.append(Case(self.name, label, None, pt.length, d, seed, (("config", label),)))
        return out

    def _point(self, case: Case) -> Any:
        pt = self._points.get((case.family, case.length))
        if pt is None:  # a fresh adapter (worker process): regenerate the points of this length
            for q in self.custom.points((case.length,)):
                self._points[(q.label, q.length)] = q
            pt = self._points.get((case.family, case.length))
        if pt is None:
            raise HmmtxError(f"{self.name}: no sweep point {case.family!r} at T={case.length}")
        return pt

    # -------------------------------------------------------------- inputs
    def _vocab_for(self, family: str, S: int) -> int:
        from hmm.zoo import FAMILIES

        fam = FAMILIES[family]
        if fam.fixed_size is not None:
            return fam.fixed_size[1]
        return max(self.vocab, S) if family == "observable" else self.vocab

    def inputs(self, case: Case) -> _Inputs:
        """The HMM (or mixture, or custom input) and tokens of a case, rebuilt deterministically from its
        coordinates."""
        key = (case.family, case.states, case.length, case.seed)
        hit = self._input_cache.get(key)
        if hit is not None:
            return hit
        if self.custom is not None:
            got = self.custom.inputs(self._point(case), case.seed)
            out = _Inputs(got.source, got.tokens_text, got.tokens, got.vocab)
        else:
            out = self._zoo_inputs(case)
        _remember(self._input_cache, key, out)
        return out

    def _zoo_inputs(self, case: Case) -> _Inputs:
        from hmm import zoo
        from hmm.sampling import sample, sample_contexts

        fam = zoo.FAMILIES[case.family]
        S = None if fam.fixed_size is not None else case.states
        V = self._vocab_for(case.family, case.states or 1)
        Vn = None if fam.fixed_size is not None else V
        if self.entry.input_kind == "hmm":
            source = zoo.make(case.family, S, Vn, seed=case.seed, rational=True)
            toks = sample(source, 1, case.length, seed=case.seed + 1).tokens[0]
            text = " ".join(str(int(x)) for x in toks)
        else:
            source = zoo.make_mixture(case.family, self.num_tasks, S, Vn, seed=case.seed, rational=True)
            n_demos, demo_len, test_len = context_shape(case.length)
            ctx = sample_contexts(source, 1, n_demos, demo_len, test_len, seed=case.seed + 1)
            text = " | ".join(" ".join(str(int(x)) for x in seg) for seg in ctx.segments(0))
        return _Inputs(source, text, self.entry.parse_tokens(text), V)

    def _params(self, case: Case) -> tuple[str, float | None, dict[str, Any]]:
        if self.custom is not None:
            pt = self._point(case)
            values = {q.name: q.default for q in self.entry.params}
            values.update(dict(pt.params))
            return pt.attention, pt.beta, values
        p = case.param_dict
        attention = p.pop("attention", "hard")
        beta = p.pop("beta", None)
        p.pop("reference", None)  # see _reference
        values = {q.name: p.get(q.name, q.default) for q in self.entry.params}
        return attention, beta, values

    def replay_for(self, case: Case) -> Replay:
        inp = self.inputs(case)
        return self._replay(case, inp)

    def _replay(self, case: Case, inp: _Inputs) -> Replay:
        """``hmmtx run`` arguments replaying the case; ``--reference auto`` (the default) picks the same reference
        as verify did, since both use :func:`constructions.registry.use_exact_reference`."""
        attention, beta, values = self._params(case)
        args = ["--mode", case.dtype, "--attention", attention]
        if beta is not None:
            args += ["--beta", repr(float(beta))]
        if self._reference(case) != "auto":
            args += ["--reference", self._reference(case)]
        for name, val in values.items():
            if val is not None:
                args += ["--" + name.replace("_", "-"), str(val)]
        kind = {"hmm": "hmm", "mixture": "tasks"}.get(self.entry.input_kind)
        model = inp.source.to_dict() if kind is not None and inp.source is not None else None
        return Replay(kind if model is not None else None, model, inp.tokens_text, tuple(args))

    @staticmethod
    def _reference(case: Case) -> str:
        """The case's ``--reference``: ``exact`` at the exact-scale points, else ``auto`` (the size rule)."""
        return str(case.param_dict.get("reference", "auto"))

    # -------------------------------------------------------------- run
    def run(self, case: Case) -> Outcome:
        from constructions.runner import run_construction

        inp = self.inputs(case)
        attention, beta, values = self._params(case)
        point = (case.family, case.states, case.length, case.seed)
        mkey = point + (attention, beta, tuple(sorted(values.items(), key=lambda kv: kv[0])))
        refs = self._ref_cache.get(mkey[:4] + (mkey[-1],))
        if refs is None:
            refs = {}
            _remember(self._ref_cache, mkey[:4] + (mkey[-1],), refs)
        res = run_construction(self.entry, inp.source, inp.tokens, mode=case.dtype, attention=attention, beta=beta,
                               params=values, reference=self._reference(case), model=self._model_cache.get(mkey),
                               reference_cache=refs)
        _remember(self._model_cache, mkey, res.model)
        br = res.bound
        allowance = min(float(br.roundoff), float(br.value))
        certified = None
        if getattr(self, "certify", False) and case.dtype != "exact":
            from constructions.certified import certify_run

            try:
                certified = certify_run(res, inp.tokens).as_dict()
            except HmmtxError as exc:  # undecidable in balls: reported, the heuristic verdict stays
                certified = {"kind": "certified", "error": str(exc)}
        spec = res.model.spec
        size = {"layers": spec.layers, "heads": spec.heads, "width": spec.width, "ffn_width": spec.ffn_width}
        return Outcome(
            error=res.max_abs_error,
            bound=float(br.value) - allowance,
            allowance=allowance,
            exact_ok=res.bit_identical,
            quantity=",".join(res.compared),
            replay=self._replay(case, inp),
            vocab=inp.vocab,
            size=size,
            note=str(br.notes),
            allowance_kind=str(getattr(br, "roundoff_kind", "heuristic")),
            certified=certified,
        )


_CACHE_SIZE = 4


def compared_outputs(entry: Any) -> tuple[str, ...]:
    """The outputs verify compares with the reference: the entry's :meth:`bounded_outputs`."""
    return entry.bounded_outputs()


def _remember(cache: dict, key: Any, value: Any) -> None:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.pop(next(iter(cache)))


def context_shape(length: int) -> tuple[int, int, int]:
    """(demonstrations, demonstration length, test length) of a context whose stream (demonstrations, SEPs and test,
    BOS excluded) has about ``length`` tokens: 3 demonstrations when length >= 8, else 1 (or none below 3)."""
    if length < 3:
        return 0, 1, length
    n = 3 if length >= 8 else 1
    test = max(1, length // 4)
    demo = max(1, (length - test) // n - 1)
    return n, demo, test


def compare(got: Any, ref: Any, *, exact: bool, what: str = "output") -> tuple[float, bool]:
    """(max |got - ref| as a float, exact equality): :func:`constructions.runner.compare` (the one comparison)."""
    from constructions.runner import compare as _compare

    return _compare(got, ref, exact=exact, what=what)


def run_case(adapter: Adapter, case: Case) -> CaseResult:
    """Run one case and judge it; any exception becomes a ``crash`` result (never propagates)."""
    t0 = time.perf_counter()
    try:
        outcome = adapter.run(case)
    except Exception as exc:  # noqa: BLE001 - a verifier reports a crashing construction, it does not die with it
        seconds = time.perf_counter() - t0
        try:
            replay = adapter.replay_for(case)
        except Exception:  # noqa: BLE001
            replay = None
        return crashed(case, exc, seconds, replay)
    return judge(case, outcome, time.perf_counter() - t0)


def run_suite(
    selected: Sequence[Adapter],
    plan: Plan,
    progress: Callable[[CaseResult, int, int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    jobs: int = 1,
) -> list[CaseResult]:
    """Run every case of every selected adapter for ``plan``; results in case order; ``progress`` is called after
    each case (in completion order).

    ``jobs > 1`` runs the registry constructions' cases in that many worker processes (``spawn``: each worker
    imports the registry afresh, so monkeypatched entries are seen only with ``jobs=1``). The cases of one
    (family, S, T, seed) point stay together in one worker so they share the built model; points go out largest
    first. Other adapters (test doubles, stand-ins) run in this process.
    """
    todo: list[tuple[Any, Case]] = []
    for a in selected:
        if isinstance(a, RegistryAdapter):
            a.certify = plan.certify  # --certify: ball-arithmetic enclosures next to the heuristic allowance
        try:
            cases = a.cases(plan)
        except Exception as exc:  # noqa: BLE001 - reported as one crashing case of that construction
            stand_in = _Unavailable(a.name, f"cannot generate cases: {type(exc).__name__}: {exc}", a.summary,
                                    a.provenance)
            todo += [(stand_in, c) for c in stand_in.cases(plan)]
            continue
        todo += [(a, c) for c in cases]
    if on_plan is not None:
        on_plan(len(todo))
    results: list[CaseResult | None] = [None] * len(todo)
    done = 0

    def record(i: int, res: CaseResult) -> None:
        nonlocal done
        results[i] = res
        done += 1
        if progress is not None:
            progress(res, done, len(todo))

    remote = [i for i, (a, _) in enumerate(todo) if type(a) is RegistryAdapter] if jobs > 1 else []
    if len(remote) > 1:
        groups: dict[tuple, list[int]] = {}
        for i in remote:
            c = todo[i][1]
            groups.setdefault((c.construction, c.family, c.states, c.length, c.seed), []).append(i)
        order = sorted(groups.values(), key=lambda ix: -_cost(todo[ix[0]][1]))
        from constructions.registry import plugin_paths

        with worker_pool(min(jobs, len(order)), initargs=(plugin_paths(),)) as pool:
            remote_set = set(remote)
            local = [i for i in range(len(todo)) if i not in remote_set]
            for i in local:
                record(i, run_case(todo[i][0], todo[i][1]))
            payload = [(ix, [todo[i][1] for i in ix], plan.certify) for ix in order]
            for ix, rs in pool.imap_unordered(_worker_run, payload):
                for i, r in zip(ix, rs):
                    record(i, r)
    else:
        for i, (adapter, case) in enumerate(todo):
            record(i, run_case(adapter, case))
    return [r for r in results if r is not None]


@contextlib.contextmanager
def worker_pool(n: int, initargs: tuple = ()) -> Iterator[Any]:
    """A spawn pool whose workers never outlive it and never print on Ctrl-C.

    Workers start with SIGINT ignored (the disposition survives exec), so a terminal Ctrl-C reaches only the parent,
    which prints one line; on any exit of the block (normal, exception, KeyboardInterrupt, the CLI's SIGTERM
    exception) the workers are terminated and joined, so no worker is left when the command returns."""
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _in_main_thread() else None
    try:
        pool = ctx.Pool(n, initializer=_worker_init, initargs=initargs)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    ok = False
    try:
        yield pool
        ok = True
    finally:
        if ok:
            pool.close()
        else:
            pool.terminate()
        pool.join()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _cost(case: Case) -> float:
    """Rough relative cost of a point, for scheduling (width ~ S^2, positions ~ T)."""
    return float((case.states or 1) ** 2 * case.length)


_WORKER_ADAPTERS: dict[str, Adapter] = {}


def _worker_init(plugins: tuple[str, ...] = ()) -> None:  # pragma: no cover - runs in worker processes
    import os
    import warnings

    import torch

    from constructions.registry import load_plugin

    if not os.environ.get("HMMTX_WARNINGS"):
        warnings.simplefilter("ignore")  # like the CLI: warnings never add lines to the output

    torch.set_num_threads(1)
    for path in plugins:  # the parent's --plugin files (a fresh process has only the installed constructions)
        load_plugin(path)


def _worker_run(payload: tuple[list[int], list[Case], bool]) -> tuple[list[int], list[CaseResult]]:  # pragma: no cover
    ix, cases, certify = payload
    if not _WORKER_ADAPTERS:
        _WORKER_ADAPTERS.update({a.name: a for a in adapters()})
    adapter = _WORKER_ADAPTERS[cases[0].construction]
    adapter.certify = certify
    return ix, [run_case(adapter, c) for c in cases]


def select(all_adapters: Sequence[Adapter], names: Iterable[str] | None) -> list[Adapter]:
    """The adapters named (in registry order), all of them for None; unknown names raise HmmtxError listing the known."""
    if not names:
        return list(all_adapters)
    known = {a.name: a for a in all_adapters}
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise HmmtxError(
            f"--construction: unknown construction {', '.join(map(repr, unknown))}; registered: "
            + (", ".join(known) or "(none)")
        )
    return [a for a in all_adapters if a.name in wanted]


__all__ = [
    "DTYPES",
    "STATUSES",
    "Plan",
    "QUICK",
    "FULL",
    "PRESETS",
    "Case",
    "Replay",
    "Outcome",
    "CaseResult",
    "Adapter",
    "tightness",
    "judge",
    "crashed",
    "run_case",
    "run_suite",
    "select",
    "adapters",
    "stated_limit_lines",
    "adapter_for",
    "derived_seed",
    "RegistryAdapter",
    "DEFAULT_BETAS",
    "context_shape",
    "compare",
    "compared_outputs",
]
