"""The grid file: which runs (configs x seeds) an experiment consists of, validated before anything runs.

A grid file is TOML (``.toml``) or JSON (``.json``) with these keys (every other key is an error)::

    name = "hao-ablation"            # free text, shown in progress bars and tables
    seeds = [0, 1, 2]                # training seeds (each run's probe contexts use seed + PROBE_SEED_OFFSET)
    constructions = ["bayes-multitask"]   # optional: probe these hand-built subjects on each data setting too
    seed_order = "inner"             # optional: "inner" (all seeds of a cell, then the next cell) or "outer"
                                     # (every cell with the first seed, then the second seed, ...)

    [base]                           # verify.training.TrainConfig fields shared by all runs
    steps = 2000

    [axes]                           # TrainConfig fields to sweep (cartesian product; an axis overrides [base])
    n_layers = [2, 6, 12]
    num_tasks = [4, 64, 1024]
    pos = ["learned", "rpe"]

    [probe]                          # probe settings shared by all runs (defaults: ProbeSettings)
    contexts = 400
    perms = 4
    lags = [1, 2, 3, 4]

``seed`` may not appear in ``base`` or ``axes`` (seeds are their own list). Every resulting TrainConfig is
validated (:class:`verify.training.TrainConfig`); the first problem is one :class:`HmmtxError` naming the file.

Each run has a *key*: the first 16 hex digits of the SHA-256 of its canonical JSON (kind, full config with seed,
probe settings, result format). The key names its result file, so a finished run is found again whatever order or
grid it appears in.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hmm.errors import HmmtxError
from verify.training import TrainConfig

#: Bumped whenever the content of a run's result changes meaning; part of every key, so old results are not reused.
RESULT_FORMAT = "hmmtx-experiment-run-v1"
#: Probe contexts of a run with training seed s come from ``numpy.random.default_rng(s + PROBE_SEED_OFFSET)``
#: (disjoint from the training stream ``default_rng(s)`` and the evaluation stream ``default_rng([s, 1])``).
PROBE_SEED_OFFSET = 1_000_003
#: bayes-multitask's FFN width is n^3 + 2 n^2 (n = total hidden states): it is probed only up to this n; grid
#: settings with more states get no bayes-multitask run (the Bayes predictive itself is always computed exactly).
BAYES_MULTITASK_MAX_STATES = 24
_TOP_KEYS = {"name", "seeds", "base", "axes", "probe", "constructions", "seed_order"}
#: TrainConfig fields that describe the data (a construction run depends only on these and the seed).
DATA_FIELDS = ("num_tasks", "num_states", "vocab_size", "concentration", "mixture_seed", "n_demos", "demo_len",
               "test_len", "eval_contexts")


@dataclass(frozen=True)
class ProbeSettings:
    """Probe settings of every run: ``contexts`` probe contexts (70 % fit, 30 % score), ``perms`` permutation draws
    of the demonstrations for the position-independence score, ``lags`` for the previous-token probes."""

    contexts: int = 400
    perms: int = 4
    lags: tuple = (1, 2, 3, 4)

    def __post_init__(self) -> None:
        for name in ("contexts", "perms"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise HmmtxError(f"probe: {name} must be a positive integer, got {v!r}")
        if self.contexts < 10:
            raise HmmtxError(f"probe: contexts must be >= 10, got {self.contexts}")
        lags = self.lags
        if not isinstance(lags, (list, tuple)) or not lags or any(
                not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in lags) or len(set(lags)) != len(lags):
            raise HmmtxError(f"probe: lags must be a non-empty list of distinct integers >= 1, got {lags!r}")
        object.__setattr__(self, "lags", tuple(lags))


@dataclass(frozen=True)
class RunSpec:
    """One run: ``kind`` is ``"trained"`` or ``"constructed:NAME"``; ``config`` carries the seed."""

    kind: str
    config: TrainConfig
    probe: ProbeSettings

    def to_dict(self) -> dict[str, Any]:
        return {"format": RESULT_FORMAT, "kind": self.kind, "config": self.config.to_dict(),
                "probe": {**asdict(self.probe), "lags": list(self.probe.lags)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        p = dict(d["probe"])
        return cls(d["kind"], TrainConfig.from_dict(d["config"]), ProbeSettings(**{**p, "lags": tuple(p["lags"])}))

    @property
    def key(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def label(self) -> str:
        c = self.config
        if self.kind != "trained":
            return f"{self.kind} K={c.num_tasks} seed={c.seed}"
        return f"L={c.n_layers} K={c.num_tasks} {c.pos} seed={c.seed}"


@dataclass(frozen=True)
class GridSpec:
    """A validated grid: ``runs`` in a fixed order (construction runs first; then the trained runs with the axes in
    file order, the last axis fastest, and the seeds innermost or, with ``seed_order = "outer"``, outermost), with
    duplicates removed. The order decides only which runs finish first; keys and results do not depend on it."""

    name: str
    seeds: tuple
    base: dict
    axes: dict
    probe: ProbeSettings
    constructions: tuple
    runs: tuple = field(default=())


def context_constructions() -> dict:
    """Registered constructions that can be probed on in-context streams (``probe.reads == "contexts"``), by name."""
    from constructions import registry

    return {n: e for n, e in registry.entries().items() if e.probe is not None and e.probe.reads == "contexts"}


def construction_feasible(kind: str, config: TrainConfig) -> bool:
    """Whether a construction run is built at all (see :data:`BAYES_MULTITASK_MAX_STATES`)."""
    if kind == "constructed:bayes-multitask":
        return config.num_tasks * config.num_states <= BAYES_MULTITASK_MAX_STATES
    return True


def _fail(path: Path, msg: str) -> HmmtxError:
    return HmmtxError(f"{path}: {msg}")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise _fail(path, "grid file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot read ({exc})") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _fail(path, f"not valid TOML ({exc})") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        raise _fail(path, "grid files must end in .toml or .json")
    if not isinstance(data, dict):
        raise _fail(path, "the grid must be a table/object at the top level")
    return data


def _check_seeds(path: Path, seeds: Any) -> tuple:
    if not isinstance(seeds, list) or not seeds:
        raise _fail(path, f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise _fail(path, f"seeds must be integers >= 0, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(path, f"seeds must be distinct, got {seeds}")
    return tuple(seeds)


def _check_fields(path: Path, where: str, table: Any, *, lists: bool) -> dict:
    if not isinstance(table, dict):
        raise _fail(path, f"[{where}] must be a table of TrainConfig fields")
    known = {f.name for f in fields(TrainConfig)} - {"seed"}
    for k, v in table.items():
        if k == "seed":
            raise _fail(path, f"[{where}] may not set 'seed': list the seeds in 'seeds'")
        if k not in known:
            raise _fail(path, f"[{where}] unknown TrainConfig field {k!r} (known: {', '.join(sorted(known))})")
        if lists and (not isinstance(v, list) or not v):
            raise _fail(path, f"[{where}] {k} must be a non-empty list of values, got {v!r}")
    return dict(table)


def parse_grid(data: dict, path: str | Path = "<grid>") -> GridSpec:
    """Validate a grid already read into a dict (see the module docstring) and expand its runs."""
    path = Path(path)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(path, f"unknown key(s) {sorted(unknown)} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise _fail(path, f"name must be a non-empty string, got {name!r}")
    if "seeds" not in data:
        raise _fail(path, "missing 'seeds' (a list of training seeds)")
    seeds = _check_seeds(path, data["seeds"])
    base = _check_fields(path, "base", data.get("base", {}), lists=False)
    axes = _check_fields(path, "axes", data.get("axes", {}), lists=True)
    probe_raw = data.get("probe", {})
    if not isinstance(probe_raw, dict):
        raise _fail(path, "[probe] must be a table")
    bad = set(probe_raw) - {f.name for f in fields(ProbeSettings)}
    if bad:
        raise _fail(path, f"[probe] unknown key(s) {sorted(bad)} (allowed: contexts, perms, lags)")
    try:
        probe = ProbeSettings(**probe_raw)
    except HmmtxError as exc:
        raise _fail(path, str(exc)) from None
    cons = data.get("constructions", [])
    known = sorted(context_constructions())
    if not isinstance(cons, list) or any(c not in known for c in cons) or len(set(cons)) != len(cons):
        raise _fail(path, f"constructions must be a list of distinct names from {known}, got {cons!r}")
    order = data.get("seed_order", "inner")
    if order not in ("inner", "outer"):
        raise _fail(path, f"seed_order must be 'inner' or 'outer', got {order!r}")
    runs = _expand(path, seeds, base, axes, probe, tuple(cons), order == "outer")
    return GridSpec(name, seeds, base, axes, probe, tuple(cons), runs)


def _expand(path: Path, seeds: tuple, base: dict, axes: dict, probe: ProbeSettings, cons: tuple,
            seeds_outer: bool) -> tuple:
    names = list(axes)
    trained: dict[str, RunSpec] = {}
    runs: dict[str, RunSpec] = {}
    data_settings: list[TrainConfig] = []
    combos = list(itertools.product(*(axes[n] for n in names)))
    pairs = [(v, s) for s in seeds for v in combos] if seeds_outer else [(v, s) for v in combos for s in seeds]
    for values, seed in pairs:
        try:
            config = TrainConfig(**{**base, **dict(zip(names, values)), "seed": seed})
        except (HmmtxError, TypeError) as exc:
            raise _fail(path, f"run {dict(zip(names, values))}, seed {seed}: {exc}") from None
        run = RunSpec("trained", config, probe)
        trained.setdefault(run.key, run)
        data_settings.append(config)
    for name in cons:
        for config in data_settings:
            # a construction depends on the data and the seed only: the model/optimiser fields take their defaults
            data_only = replace(TrainConfig(), **{f: getattr(config, f) for f in DATA_FIELDS}, seed=config.seed)
            run = RunSpec(f"constructed:{name}", data_only, probe)
            if construction_feasible(run.kind, data_only):
                runs.setdefault(run.key, run)
    for key, run in trained.items():
        runs.setdefault(key, run)
    return tuple(runs.values())


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file (TOML or JSON); every problem is one HmmtxError naming the file."""
    path = Path(path)
    return parse_grid(_read(path), path)


__all__ = ["RESULT_FORMAT", "PROBE_SEED_OFFSET", "context_constructions", "DATA_FIELDS", "BAYES_MULTITASK_MAX_STATES", "construction_feasible", "ProbeSettings", "RunSpec",
           "GridSpec", "parse_grid", "load_grid"]
