"""Construction registry: the typed contract between a construction and the framework.

One :class:`ConstructionEntry` per construction gives ``hmmtx run``, ``inspect``, ``verify`` and ``probe`` (and the
reports) everything they need; no command lists constructions by hand. ``docs/extending.md`` is the tutorial.

The contract (every field typed; no string-keyed dicts)::

    from constructions.registry import ConstructionEntry, Param, VerifySweep, register

    register(ConstructionEntry(
        name="exact-filter", summary="...", provenance="...", input_kind="hmm",
        build=build_entry,            # build(source, tokens, *, attention, beta, **params) -> ConstructedTransformer
        reference=reference_entry,    # reference(source, tokens, *, exact, **params) -> {output name: array}
        parse_tokens=parse_tokens,    # CLI string -> tokens in the construction's format
        params=(Param("r", int, 4, "window length"),),   # extra build/CLI parameters (become --r)
        families=("dirichlet", "sticky"),                 # zoo families verify draws inputs from
        outputs=("next_token_probs", "filtered_probs"),  # names of model.run(...).outputs
        bound="round-off allowance + certified softmax leakage",   # one line: what the claimed bound is
        verify=VerifySweep(betas=(20.0,)),                # how `hmmtx verify` sweeps it
        probe=ProbeHooks(reads="sequence", build=...),    # optional: makes it a `hmmtx probe` subject
    ))

Every field, with its type and meaning, is documented on :class:`ConstructionEntry` and in ``docs/extending.md``.
The claimed bound itself comes from the built model (``model.claimed_bound(tokens, mode) -> BoundReport``); a
model's construction-specific metadata is a dataclass subclass of :class:`constructions.types.ModelInfo`.

Migration from the former ``extra`` dict (still accepted, with a DeprecationWarning; unknown keys are an error):
``extra["bound"]`` -> ``bound``; ``extra["verify_outputs"]`` -> ``bound_covers``; ``extra["report"]`` ->
``report``; ``extra["default_attention"]`` / ``extra["default_beta"]`` -> ``attention=AttentionDefaults(...)``;
``extra["verify_betas"]`` / ``["verify_vocab"]`` / ``["verify_tasks"]`` -> ``verify=VerifySweep(betas, vocab,
tasks)``; ``extra["verify_adapter"]`` -> ``verify=VerifySweep(custom=CustomSweep(points, inputs))`` (a verify-side
adapter class can no longer be named here: constructions never import ``verify``). ``entry.extra`` still reads the
dict that was given. ``model.info["key"]`` keeps working as an alias of ``model.info.key``.

Discovery (:func:`entries`, :func:`get`): the modules of the ``constructions`` package (framework modules register
nothing), the entry-point group ``hmmtx.constructions`` of installed distributions (each entry point names a module
to import, or a callable returning entries), and plugin files (``hmmtx --plugin FILE.py``, :func:`load_plugin`).
Imports are lazy: importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple, Sequence

from hmm.errors import HmmtxError

#: Output-name endings of probability outputs (covered by a construction's probability bound by default).
PROBABILITY_SUFFIXES = ("_probs", "_posterior", "_predicted")

#: Framework modules of the package (imported by construction modules anyway; never register anything).
FRAMEWORK_MODULES = frozenset({"layout", "blocks", "transformer", "exact", "registry", "prefix", "runner", "types", "estimates"})

#: Entry-point group through which installed distributions register constructions.
ENTRY_POINT_GROUP = "hmmtx.constructions"

#: Number modes a construction can run in (``exact``: the Fraction executor, hard attention only).
ALL_MODES = ("exact", "float64", "float32")

#: Default softmax inverse temperatures swept by ``hmmtx verify`` (float64 only).
DEFAULT_VERIFY_BETAS: tuple[float, ...] = (20.0,)

#: The exact-reference rule (:func:`use_exact_reference`): float modes are compared with the exact (Fraction)
#: reference while the input has at most this many hidden states (per task) and tokens, with float64 beyond.
EXACT_REFERENCE_MAX_STATES = 4
EXACT_REFERENCE_MAX_LENGTH = 64


# ---------------------------------------------------------------------------------------------- contract parts
@dataclass(frozen=True)
class Param:
    """An extra construction parameter: becomes ``--<name>`` (underscores -> dashes) on ``hmmtx run/inspect``
    and a keyword argument of ``build``/``reference``. ``type`` converts the CLI string; ``choices`` optional."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        flag = "--" + self.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": self.name, "type": self.type, "default": self.default, "help": self.help}
        if self.choices is not None:
            kw["choices"] = self.choices
        parser.add_argument(flag, **kw)


@dataclass(frozen=True)
class AttentionDefaults:
    """Default ``--attention`` / ``--beta`` of ``hmmtx run/inspect`` for this construction.

    Fields: ``attention`` (``"hard"`` or ``"softmax"``), ``beta`` (inverse temperature, None for hard attention).
    """

    attention: Literal["hard", "softmax"] = "hard"
    beta: float | None = None


class ProblemSize(NamedTuple):
    """Size of one input, as the exact-reference rule sees it.

    Fields: ``states`` (hidden states of the HMM, the largest per task of a mixture; None without an HMM) and
    ``length`` (tokens; for in-context inputs the flattened stream: demonstrations, separators, test segment).
    """

    states: int | None
    length: int


class SweepInput(NamedTuple):
    """One input of a custom verify sweep (:class:`CustomSweep`).

    Fields: ``source`` (what ``build``/``reference`` take first: an HMM, a mixture or None), ``tokens`` (in the
    construction's format), ``tokens_text`` (the same tokens as the CLI's ``--tokens`` string, for reproducers),
    ``vocab`` (V for the report, or None).
    """

    source: Any
    tokens: Any
    tokens_text: str
    vocab: int | None = None


@dataclass(frozen=True)
class SweepPoint:
    """One point of a custom verify sweep: a labelled configuration at one length.

    Fields:
        label:     the configuration's name (the case's ``family`` column; also part of its seed)
        length:    T, the sequence length
        modes:     the number modes this point runs in (intersected with the plan's)
        attention: ``"hard"`` or ``"softmax"``
        beta:      inverse temperature (softmax), else None
        params:    the construction's parameters for ``build``/``reference`` (``Param`` names -> values)
    """

    label: str
    length: int
    modes: tuple[str, ...]
    attention: str = "hard"
    beta: float | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(dict(self.params).items()))


@dataclass(frozen=True)
class CustomSweep:
    """Inputs for ``hmmtx verify`` when they are not zoo HMMs (``input_kind="none"``, e.g. real sequences).

    Fields:
        points: ``points(lengths) -> [SweepPoint]`` for the plan's lengths (tuple of ints)
        inputs: ``inputs(point, seed) -> SweepInput``, deterministic in ``seed``
    """

    points: Callable[[tuple[int, ...]], Sequence[SweepPoint]]
    inputs: Callable[[SweepPoint, int], SweepInput]


@dataclass(frozen=True)
class VerifySweep:
    """How ``hmmtx verify`` sweeps a construction (all optional).

    Fields:
        betas:  softmax inverse temperatures swept in float64 besides hard attention (``()``: hard only)
        vocab:  V of the zoo HMMs drawn for ``input_kind="hmm"`` / ``"mixture"`` (at least S for ``observable``)
        tasks:  number of tasks of the zoo mixtures drawn for ``input_kind="mixture"``
        custom: a :class:`CustomSweep` replacing the zoo inputs (required for ``input_kind="none"``)
        exact_at_scale: the exact reference is fast enough for the plan's large exact-reference points
                        (``Plan.exact_scale_points`` of ``hmmtx verify --full``: S = 8-16, T up to 1024): verify
                        then runs the float modes there against the exact reference (``--reference exact``), and
                        exact mode where ``T <= Plan.exact_scale_max_length``
        max_lengths: the construction's stated length limit per number mode, ``((mode, T_max), ...)``: verify
                     plans no case of that mode with ``T > T_max`` (a standard variant without projective
                     normalisation, whose unnormalised float32 masses underflow on long inputs: ``docs/export.md``).
                     A mode not listed has no limit.
    """

    betas: tuple[float, ...] = DEFAULT_VERIFY_BETAS
    vocab: int = 3
    tasks: int = 2
    custom: CustomSweep | None = None
    exact_at_scale: bool = False
    max_lengths: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for pair in self.max_lengths:
            if (len(pair) != 2 or not isinstance(pair[0], str) or isinstance(pair[1], bool)
                    or not isinstance(pair[1], int) or pair[1] < 1):
                raise HmmtxError(f"VerifySweep.max_lengths: {pair!r} is not a (mode, length >= 1) pair")

    def max_length(self, mode: str) -> int | None:
        """The stated length limit in ``mode`` (None: none stated)."""
        return dict(self.max_lengths).get(mode)


@dataclass(frozen=True)
class ProbeHooks:
    """Makes a construction a subject of ``hmmtx probe`` (layerwise probes, position independence).

    Fields:
        reads: ``"sequence"`` (one HMM sequence; probed on sequences of the mixture's first task) or
               ``"contexts"`` (in-context streams of the task mixture)
        build: ``build(source, length, r) -> ConstructedTransformer`` sized for streams of ``length`` items
               (BOS included); ``source`` is an HMM (``reads="sequence"``) or the mixture; ``r`` is probe's
               ``--r`` (None: the construction's default)
        tokens: ``tokens(segments) -> tokens`` for ``reads="contexts"``: the construction's token format for a
               list of contexts, each a list of segments (1-D int arrays); None: the list itself
    """

    reads: Literal["sequence", "contexts"]
    build: Callable[[Any, int, int | None], Any]
    tokens: Callable[[list], Any] | None = None


# ---------------------------------------------------------------------------------------------- the entry
#: Keys the former ``extra`` dict could hold (mapped onto typed fields by ``ConstructionEntry.__post_init__``).
_LEGACY_EXTRA = ("bound", "verify_outputs", "report", "default_attention", "default_beta", "verify_betas",
                 "verify_vocab", "verify_tasks", "verify_adapter")


@dataclass(frozen=True)
class ConstructionEntry:
    """Everything the CLI, the runner and the verification suite know about one construction.

    Fields:
        name:            CLI name (``exact-filter``, ``window``, ...): lower case, no spaces
        summary:         one line for listings
        provenance:      honest source line (standard construction named, or "reconstruction in the spirit of ...")
        input_kind:      ``"hmm"`` (``--hmm FILE``), ``"mixture"`` (``--tasks FILE``) or ``"none"`` (no model file)
        build:           ``build(source, tokens, *, attention, beta, **params) -> ConstructedTransformer``;
                         ``tokens`` (None for ``inspect`` without ``--tokens``) lets it size ``max_len``
        reference:       ``reference(source, tokens, *, exact, **params) -> {name: array}``: for every name of
                         ``outputs`` it can compute, rows aligned with the model's output of that name; exact
                         Fractions (object arrays) when ``exact`` else float64
        parse_tokens:    CLI ``--tokens`` string -> tokens in the construction's format
        params:          extra parameters (:class:`Param`), added to the CLI and passed to build/reference
        families:        zoo families verify draws inputs from (``input_kind`` hmm/mixture)
        outputs:         names of the decoded outputs (keys of ``model.run(...).outputs``)
        bound_covers:    the outputs the claimed bound covers; None: the probability outputs (names ending in
                         ``_probs``, ``_posterior``, ``_predicted``, without a ``bayes_`` prefix); see
                         :meth:`bounded_outputs`
        bound:           one line saying what the claimed bound is (shown by listings and docs)
        add_arguments:   optional hook for CLI options :class:`Param` cannot express
        default_tokens:  a short example token string (``inspect`` sizes the model with it)
        modes:           number modes supported (``exact`` needs hard attention and exact weights)
        exact_reference: whether ``reference(..., exact=True)`` is exact (False: float64 only, e.g. a real-valued
                         target); see :func:`use_exact_reference`
        size:            ``size(source, tokens) -> ProblemSize`` for the exact-reference rule; None: the default
                         (:func:`default_problem_size`)
        attention:       :class:`AttentionDefaults` of ``run``/``inspect``
        report:          optional ``report(source, tokens, *, exact, **params) -> dict`` of extra JSON keys for
                         ``hmmtx run`` (e.g. the window construction's memory-error bounds)
        estimate_bytes:  optional ``estimate_bytes(source, tokens, *, mode, **params) -> float``: rough memory (bytes)
                         of building and running the model (weights + recorded residual streams + attention scores;
                         exact mode's Fraction object arrays at about 12x); ``hmmtx run/inspect`` refuse a request
                         over the memory limit before building (``verify.cli_args.require_fits``). It must be cheap
                         (no model build). ``tokens`` is None for ``inspect`` without ``--tokens``.
        verify:          :class:`VerifySweep` (how ``hmmtx verify`` sweeps it)
        probe:           :class:`ProbeHooks`, or None (not a ``hmmtx probe`` subject)
        extra:           deprecated free-form dict (former contract); known keys are mapped onto the fields above
    """

    name: str
    summary: str
    provenance: str
    input_kind: Literal["hmm", "mixture", "none"]
    build: Callable[..., Any]
    reference: Callable[..., dict]
    parse_tokens: Callable[[str], Any]
    params: tuple[Param, ...] = ()
    families: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("next_token_probs",)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    default_tokens: str = "0"
    modes: tuple[str, ...] = ALL_MODES
    bound_covers: tuple[str, ...] | None = None
    bound: str = ""
    exact_reference: bool = True
    size: Callable[[Any, Any], ProblemSize] | None = None
    attention: AttentionDefaults = AttentionDefaults()
    report: Callable[..., dict] | None = None
    estimate_bytes: Callable[..., float] | None = None
    verify: VerifySweep = VerifySweep()
    probe: ProbeHooks | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.extra:
            self._apply_legacy_extra()
        self.validate()

    def _apply_legacy_extra(self) -> None:
        ex = dict(self.extra)
        unknown = sorted(set(ex) - set(_LEGACY_EXTRA))
        if unknown:
            raise HmmtxError(f"construction '{self.name}': unknown extra keys {unknown}; the contract is typed now "
                             "(see constructions/registry.py)")
        if "verify_adapter" in ex:
            raise HmmtxError(f"construction '{self.name}': extra['verify_adapter'] is gone (constructions never import "
                             "verify); declare verify=VerifySweep(custom=CustomSweep(points, inputs))")
        warnings.warn(f"construction '{self.name}': ConstructionEntry(extra=...) is deprecated; use the typed fields "
                      "(constructions/registry.py)", DeprecationWarning, stacklevel=4)
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        if "bound" in ex:
            put("bound", str(ex["bound"]))
        if "verify_outputs" in ex:
            put("bound_covers", tuple(ex["verify_outputs"]))
        if "report" in ex:
            put("report", ex["report"])
        if "default_attention" in ex or "default_beta" in ex:
            put("attention", AttentionDefaults(ex.get("default_attention", "hard"), ex.get("default_beta")))
        if any(k in ex for k in ("verify_betas", "verify_vocab", "verify_tasks")):
            v = self.verify
            put("verify", VerifySweep(tuple(ex.get("verify_betas", v.betas)), int(ex.get("verify_vocab", v.vocab)),
                                      int(ex.get("verify_tasks", v.tasks)), v.custom))

    def validate(self) -> None:
        """HmmtxError naming the construction and the field when the entry is malformed."""
        who = f"construction entry '{self.name}'"
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise HmmtxError(f"construction entry: name must be a non-empty string without spaces, got {self.name!r}")
        if self.input_kind not in ("hmm", "mixture", "none"):
            raise HmmtxError(f"{who}: input_kind must be 'hmm', 'mixture' or 'none', got {self.input_kind!r}")
        for f in ("build", "reference", "parse_tokens"):
            if not callable(getattr(self, f)):
                raise HmmtxError(f"{who}: {f} must be callable")
        for f in ("size", "report", "estimate_bytes"):
            if getattr(self, f) is not None and not callable(getattr(self, f)):
                raise HmmtxError(f"{who}: {f} must be callable or None")
        if not self.outputs or not all(isinstance(o, str) for o in self.outputs):
            raise HmmtxError(f"{who}: outputs must name at least one output")
        if not self.modes or any(m not in ALL_MODES for m in self.modes):
            raise HmmtxError(f"{who}: modes must be among {ALL_MODES}, got {self.modes!r}")
        if self.bound_covers is not None:
            missing = [o for o in self.bound_covers if o not in self.outputs]
            if missing or not self.bound_covers:
                raise HmmtxError(f"{who}: bound_covers {list(self.bound_covers)} must be among outputs {list(self.outputs)}")
        if not all(isinstance(p, Param) for p in self.params):
            raise HmmtxError(f"{who}: params must be Param instances")
        if not isinstance(self.attention, AttentionDefaults) or self.attention.attention not in ("hard", "softmax"):
            raise HmmtxError(f"{who}: attention must be AttentionDefaults('hard' or 'softmax', beta)")
        if not isinstance(self.verify, VerifySweep):
            raise HmmtxError(f"{who}: verify must be a VerifySweep")
        if any(not (isinstance(b, (int, float)) and math.isfinite(b) and b > 0) for b in self.verify.betas):
            raise HmmtxError(f"{who}: verify betas must be finite numbers > 0, got {self.verify.betas!r}")
        if self.probe is not None and (not isinstance(self.probe, ProbeHooks) or self.probe.reads not in ("sequence", "contexts")):
            raise HmmtxError(f"{who}: probe must be ProbeHooks(reads='sequence' or 'contexts', build=...)")

    def add_cli_arguments(self, parser: argparse.ArgumentParser) -> None:
        for p in self.params:
            p.add_to(parser)
        if self.add_arguments is not None:
            self.add_arguments(parser)

    def param_values(self, namespace: Any) -> dict:
        """The construction's parameters read from a parsed namespace (defaults when absent)."""
        return {p.name: getattr(namespace, p.name, p.default) for p in self.params}

    def bounded_outputs(self) -> tuple[str, ...]:
        """The outputs the claimed bound covers (what ``hmmtx run`` and ``hmmtx verify`` hold to it):
        ``bound_covers`` when given, else the probability outputs (names ending in ``_probs``, ``_posterior``,
        ``_predicted``; a ``bayes_`` prefix marks a statistical comparison and is left out). Un-normalised masses,
        statuses and counts are reported but not covered by a probability bound."""
        if self.bound_covers is not None:
            return tuple(self.bound_covers)
        names = [n for n in self.outputs if n.endswith(PROBABILITY_SUFFIXES) and not n.startswith("bayes_")]
        return tuple(names or [self.outputs[0]])

    def problem_size(self, source: Any, tokens: Any) -> ProblemSize:
        """The input's size for the exact-reference rule (``size`` hook, else :func:`default_problem_size`)."""
        return (self.size or default_problem_size)(source, tokens)


def default_problem_size(source: Any, tokens: Any) -> ProblemSize:
    """States: ``source.num_states`` (an HMM), ``max(source.state_sizes)`` (a mixture), else None. Length: the
    last axis of an array of tokens; for a list of segments (a context) the flattened stream ``sum len + seps``;
    for a list of contexts the longest."""
    import numpy as np

    states = None
    if hasattr(source, "state_sizes"):
        states = max(int(s) for s in source.state_sizes)
    elif hasattr(source, "num_states"):
        states = int(source.num_states)

    def stream(c: Any) -> int:
        segs = list(c)
        return sum(len(s) for s in segs) + len(segs) - 1

    if isinstance(tokens, np.ndarray) and tokens.dtype != object:
        length = int(tokens.shape[-1]) if tokens.ndim else 1
    elif isinstance(tokens, (list, tuple)) and tokens and all(isinstance(s, (list, tuple)) for s in tokens):
        length = max(stream(c) for c in tokens)  # several contexts, each a list of segments
    elif isinstance(tokens, (list, tuple)):
        length = stream(tokens) if tokens and all(hasattr(s, "__len__") for s in tokens) else len(tokens)
    else:
        length = int(np.asarray(tokens).shape[-1])
    return ProblemSize(states, length)


def use_exact_reference(entry: ConstructionEntry, mode: str, size: ProblemSize) -> bool:
    """THE rule for when the exact (Fraction) reference is used (``hmmtx run --reference auto``, ``verify``,
    reproducers): always in exact mode; in float modes when the construction has an exact reference and the input
    is small (at most :data:`EXACT_REFERENCE_MAX_STATES` states and :data:`EXACT_REFERENCE_MAX_LENGTH` tokens);
    float64 otherwise (its own round-off, about ``T eps``, lies far inside every float allowance)."""
    if mode == "exact":
        return True
    if not entry.exact_reference:
        return False
    return (size.states is None or size.states <= EXACT_REFERENCE_MAX_STATES) and size.length <= EXACT_REFERENCE_MAX_LENGTH


# ---------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, ConstructionEntry] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_PLUGINS: list[str] = []
_PLUGIN_OF: dict[str, str] = {}
_DISCOVERED = False


def _origin(entry: ConstructionEntry) -> str | None:
    """Where an entry's code lives (its build function's file): the same file registering again (a re-import, or
    a plugin both installed and given with --plugin) is not a duplicate."""
    code = getattr(entry.build, "__code__", None)
    if code is not None:
        return os.path.realpath(code.co_filename)
    return getattr(entry.build, "__module__", None)


def register(entry: ConstructionEntry) -> ConstructionEntry:
    """Add ``entry`` (idempotent for the same name and module re-import; a different duplicate is an error)."""
    if not isinstance(entry, ConstructionEntry):
        raise HmmtxError(f"register() takes a ConstructionEntry, got {type(entry).__name__}")
    old = _REGISTRY.get(entry.name)
    if old is not None and _origin(old) != _origin(entry):
        raise HmmtxError(f"construction name '{entry.name}' is registered twice ({_origin(old)}, {_origin(entry)})")
    _REGISTRY[entry.name] = entry
    return entry


def _note_failure(where: str, exc: BaseException) -> None:
    _IMPORT_ERRORS[where] = f"{type(exc).__name__}: {exc}"


def _load_entry_points() -> None:
    """Import the ``hmmtx.constructions`` entry points: each names a module (registering on import) or a callable
    returning a ConstructionEntry or an iterable of them."""
    from importlib import metadata

    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # noqa: BLE001 - broken metadata must not hide the built-in constructions
        _note_failure(f"entry points {ENTRY_POINT_GROUP}", exc)
        return
    for ep in sorted(eps, key=lambda e: e.name):
        try:
            obj = ep.load()
            if callable(obj):
                got = obj()
                for e in ([got] if isinstance(got, ConstructionEntry) else list(got or ())):
                    register(e)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, it does not hide the others
            _note_failure(f"entry point {ep.name} ({ep.value})", exc)


def discover() -> None:
    """Import every construction module once, then the entry points (failures are remembered and reported by
    :func:`get` and :func:`import_errors`; ``hmmtx verify`` turns them into failing cases)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import constructions

    for info in sorted(pkgutil.iter_modules(constructions.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in FRAMEWORK_MODULES:
            continue
        try:
            importlib.import_module(f"constructions.{info.name}")
        except Exception as exc:  # a broken construction must not hide the others
            _note_failure(info.name, exc)
    _load_entry_points()


def load_plugin(path: str | os.PathLike) -> list[str]:
    """Import a plugin file (``hmmtx --plugin FILE.py``): a Python file that calls :func:`register`. Returns the
    names it registered; an unreadable or failing file raises HmmtxError (one line, exit 2 on the CLI).

    The path is remembered (:func:`plugin_paths`) so that worker processes (``hmmtx verify --jobs N``) load it too.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise HmmtxError(f"--plugin {path}: no such file")
    if p.suffix != ".py":
        raise HmmtxError(f"--plugin {path}: expected a Python file (.py)")
    discover()
    before = set(_REGISTRY)
    mod_name = "hmmtx_plugin_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    if str(p) in _PLUGINS and mod_name in sys.modules:
        return []
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise HmmtxError(f"--plugin {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except HmmtxError as exc:
        sys.modules.pop(mod_name, None)
        raise HmmtxError(f"--plugin {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a broken plugin gets one line, not a traceback
        sys.modules.pop(mod_name, None)
        raise HmmtxError(f"--plugin {path}: importing it raised {type(exc).__name__}: {exc}") from None
    if str(p) not in _PLUGINS:
        _PLUGINS.append(str(p))
    added = sorted(set(_REGISTRY) - before)
    for name in added:
        _PLUGIN_OF[name] = str(p)
    if not added:
        raise HmmtxError(f"--plugin {path}: the file registered no construction (call constructions.registry.register)")
    return added


def plugin_paths() -> tuple[str, ...]:
    """The plugin files loaded in this process (for worker processes)."""
    return tuple(_PLUGINS)


def plugin_of(name: str) -> str | None:
    """The plugin file that registered construction ``name`` (None for packaged or entry-point constructions);
    reproducers replay such a construction with ``hmmtx --plugin FILE run ...``."""
    return _PLUGIN_OF.get(name)


def entries() -> dict[str, ConstructionEntry]:
    """All registered constructions by CLI name (after discovery)."""
    discover()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> ConstructionEntry:
    """The entry for ``name``; unknown names raise HmmtxError listing the known ones (and import failures)."""
    known = entries()
    if name in known:
        return known[name]
    msg = f"unknown construction '{name}' (known: {', '.join(known) or 'none'})"
    if _IMPORT_ERRORS:
        msg += "; modules that failed to import: " + "; ".join(f"{k} ({v})" for k, v in _IMPORT_ERRORS.items())
    raise HmmtxError(msg)


def import_errors() -> dict[str, str]:
    """Construction modules / entry points that failed to load: where -> ``"ErrorType: message"``."""
    discover()
    return dict(_IMPORT_ERRORS)


__all__ = [
    "Param",
    "AttentionDefaults",
    "ProblemSize",
    "SweepInput",
    "SweepPoint",
    "CustomSweep",
    "VerifySweep",
    "ProbeHooks",
    "ConstructionEntry",
    "register",
    "discover",
    "entries",
    "get",
    "import_errors",
    "load_plugin",
    "plugin_paths",
    "plugin_of",
    "default_problem_size",
    "use_exact_reference",
    "FRAMEWORK_MODULES",
    "ENTRY_POINT_GROUP",
    "EXACT_REFERENCE_MAX_STATES",
    "EXACT_REFERENCE_MAX_LENGTH",
    "DEFAULT_VERIFY_BETAS",
]
