"""Construction registry: one entry per construction, discovered by the CLI (``hmmtx run/inspect``) and by the
verification suite, so no construction is listed twice.

A construction module registers itself at import time::

    from constructions.registry import ConstructionEntry, Param, register

    register(ConstructionEntry(
        name="exact-filter", summary="...", provenance="...", input_kind="hmm",
        build=build_entry,            # build(source, tokens, *, attention, beta, **params) -> ConstructedTransformer
        reference=reference_entry,    # reference(source, tokens, *, exact, **params) -> dict of arrays
        parse_tokens=parse_tokens,    # CLI string -> tokens in the construction's format
        params=(Param("r", int, 4, "window length"),),   # extra build/CLI parameters (become --r)
        families=("dirichlet", "sticky", ...),
        outputs=("next_token_probs", ...),
    ))

Discovery (:func:`entries`, :func:`get`) imports every module of the ``constructions`` package (framework modules
register nothing), so a new construction file only needs to call :func:`register`. Imports are lazy: importing
this module does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from hmm.errors import HmmtxError

#: Output-name endings of probability outputs (covered by a construction's probability bound).
PROBABILITY_SUFFIXES = ("_probs", "_posterior", "_predicted")

#: Framework modules of the package (imported by construction modules anyway; never register anything).
FRAMEWORK_MODULES = frozenset({"layout", "blocks", "transformer", "exact", "registry", "prefix", "runner"})


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
class ConstructionEntry:
    """Everything the CLI and the verification suite need to know about one construction.

    Fields:
        name:         CLI name (``exact-filter``, ``window``, ``bayes-multitask``, ``icl``, ``memory-kernel``)
        summary:      one line
        provenance:   honest source line (standard construction named, or "reconstruction in the spirit of ...")
        input_kind:   ``"hmm"`` (``--hmm FILE``), ``"mixture"`` (``--tasks FILE``) or ``"none"``
        build:        ``build(source, tokens, *, attention, beta, **params) -> ConstructedTransformer``; ``tokens``
                      (possibly None, e.g. for ``inspect``) lets it size ``max_len``
        reference:    ``reference(source, tokens, *, exact, **params) -> dict`` with at least
                      ``"next_token_probs"`` ((T, V) rows aligned with the model's ``next_token_probs``); exact
                      Fractions when ``exact`` else float64
        parse_tokens: CLI ``--tokens`` string -> tokens in the construction's format
        params:       extra parameters (:class:`Param`), added to the CLI and passed to build/reference
        families:     zoo families the construction applies to (used by sweeps)
        outputs:      names of the decoded outputs (keys of ``model.run(...).outputs``)
        add_arguments: optional hook for anything :class:`Param` cannot express
        default_tokens: a short example token string (used by ``inspect`` to size the model)
        modes:        execution modes supported (``exact`` needs hard attention)
        extra:        free-form metadata (e.g. ``{"bound": "a priori"}``)
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
    modes: tuple[str, ...] = ("exact", "float64", "float32")
    extra: dict = field(default_factory=dict)

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
        ``extra["verify_outputs"]`` when given, else the probability outputs (names ending in ``_probs``,
        ``_posterior``, ``_predicted``; a ``bayes_`` prefix marks a statistical comparison and is left out).
        Un-normalised masses, statuses and counts are reported but not covered by a probability bound."""
        extra = self.extra if isinstance(self.extra, dict) else {}
        if "verify_outputs" in extra:
            return tuple(extra["verify_outputs"])
        names = [n for n in self.outputs if n.endswith(PROBABILITY_SUFFIXES) and not n.startswith("bayes_")]
        return tuple(names or ["next_token_probs"])


_REGISTRY: dict[str, ConstructionEntry] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_DISCOVERED = False


def register(entry: ConstructionEntry) -> ConstructionEntry:
    """Add ``entry`` (idempotent for the same name and module re-import; a different duplicate is an error)."""
    old = _REGISTRY.get(entry.name)
    if old is not None and getattr(old.build, "__module__", None) != getattr(entry.build, "__module__", None):
        raise HmmtxError(f"construction name '{entry.name}' is registered twice ({old.build.__module__}, {entry.build.__module__})")
    _REGISTRY[entry.name] = entry
    return entry


def discover() -> None:
    """Import every construction module once (failures are remembered and reported by :func:`get`)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import constructions

    for info in sorted(pkgutil.iter_modules(constructions.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in FRAMEWORK_MODULES:
            continue
        try:
            importlib.import_module(f"constructions.{info.name}")
        except Exception as exc:  # a broken construction must not hide the others
            _IMPORT_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"
    _DISCOVERED = True


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
    discover()
    return dict(_IMPORT_ERRORS)


__all__ = ["Param", "ConstructionEntry", "register", "discover", "entries", "get", "import_errors", "FRAMEWORK_MODULES"]
