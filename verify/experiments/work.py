"""One run of a grid, executed inside a worker (a local process or a Dask worker): train (or build) the subject,
then measure the analogues of Hao et al. 2025's Figures 1-3 (in the spirit of the paper; its full text was not
available) with :mod:`verify.probes`. Returns a plain JSON-able dict; the driver writes it (workers never touch the
result store, so a cluster needs no shared file system).

Result fields (all numbers are Python floats/ints; per-layer arrays are lists):

* ``run``: the :class:`RunSpec` as a dict (kind, config with seed, probe settings, format); ``key``;
* ``train`` (trained runs): held-out :class:`verify.training.EvalMetrics`, final loss, ``weights_sha256`` (SHA-256
  of every parameter's bytes in state-dict order: equal hashes = bit-identical weights);
* ``fig1``: top-1 next-token accuracy (argmax of the predictive = the sampled token) by segment ``s`` (``s``
  demonstrations seen before it; ``s = n_demos`` is the test segment) and offset ``j`` inside the segment (``j``
  tokens of the segment seen), for the subject (``model``, trained runs) and for the Bayes predictive (``bayes``,
  what H3 outputs within its bound), on the probe contexts; shape ``(n_demos + 1, max segment length)``, NaN-free
  (segments are padded with None);
* ``probes``: per residual index: token-k accuracy for each lag, state accuracy, belief R^2, task accuracy, task-law
  R^2 (the task's token-pair law regressed; measurable at 1024 tasks); with majority rates and Bayes ceilings;
* ``independence``: per attention layer, mean and std over permutation draws (None for layers without attention);
* ``timing``: wall seconds of training (or building) and of probing, and the CPU seconds of the whole run in its
  worker process (``cpu_s``: on a shared machine, the better estimate of the wall time on an idle core), and the
  ``device`` the model was trained on (``cpu`` or ``cuda[:N]``; results made before the field existed: ``cpu``);
  the only fields that differ between repeated runs. The run's key does not include the device: a run finished
  on one device is not recomputed on another.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Callable

import numpy as np

from hmm.errors import HmmtxError
from verify.experiments.spec import BAYES_MULTITASK_MAX_STATES, PROBE_SEED_OFFSET, RunSpec, construction_feasible

#: report(phase, done, total): progress callback; phases "train", "probe".
Report = Callable[[str, int, int], None]
def _clean(x: Any) -> Any:
    """JSON-able copy: numpy -> Python, NaN/inf -> None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def weights_sha256(model: Any) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fig1_accuracy(probs: np.ndarray, batch: Any) -> np.ndarray:
    """(n_demos + 1, max_seg_len) top-1 accuracy: ``argmax probs`` at the position before each observation equals
    that observation; rows = segment (demos seen before it), columns = offset inside the segment; NaN pads."""
    lay = batch.layout
    idx = lay.positions()
    lens = lay.segment_lengths
    out = np.full((len(lens), max(lens)), np.nan)
    pred = np.argmax(probs, axis=-1)  # (N, T)
    for s in range(len(lens)):
        pos = np.flatnonzero(idx.is_obs & (idx.segment == s))
        hit = pred[:, pos - 1] == batch.tokens[:, pos]
        out[s, : len(pos)] = hit.mean(axis=0)
    return out


def _subject(run: RunSpec, report: Report | None, device: str) -> tuple[Any, Any, dict]:
    """(subject, mixture, train-info) for a run."""
    from verify.probes import ConstructedSubject, TrainedSubject
    from verify.training import make_mixture, train

    c = run.config
    if run.kind == "trained":
        cb = None
        if report is not None:
            every = max(1, c.steps // 50)
            cb = lambda step, loss: report("train", step + 1, c.steps) if (step + 1) % every == 0 or step + 1 == c.steps else None  # noqa: E731
        res = train(c, device=device, on_step=cb)
        info = {"metrics": dict(res.metrics._asdict()), "final_loss": res.losses[-1],
                "weights_sha256": weights_sha256(res.model), "seconds": res.seconds}
        return TrainedSubject(res.model, name="trained"), res.mixture, info
    from verify.experiments.spec import context_constructions

    name = run.kind.partition(":")[2]
    mixture = make_mixture(c)
    if not construction_feasible(run.kind, c):
        raise HmmtxError(f"{run.kind}: {c.num_tasks * c.num_states} total states exceed {BAYES_MULTITASK_MAX_STATES}")
    entry = context_constructions().get(name)
    if entry is None:
        raise HmmtxError(f"construction {name!r} has no probe hooks for in-context streams")
    model = entry.probe.build(mixture, c.layout.length, None)  # the construction's defaults (icl: r = 2)
    return ConstructedSubject(model, name=run.kind, tokens=entry.probe.tokens), mixture, {}


def execute(run: RunSpec, report: Report | None = None, device: str = "cpu") -> dict:
    """Run ``run`` to completion and return its result dict (module docstring). Deterministic apart from
    ``timing``: same run, same machine, same device -> identical result. ``device`` (cpu, cuda, cuda:N, auto:
    :func:`verify.training.resolve_device`, resolved on the worker's machine) trains the model; probing and
    constructions run on the CPU."""
    from verify.probes import make_probe_data, position_independence, run_probes
    from verify.training import deterministic_torch, resolve_device

    t0, c0 = time.perf_counter(), time.process_time()
    dev = resolve_device(device) if run.kind == "trained" else "cpu"
    subject, mixture, info = _subject(run, report, dev)
    t1 = time.perf_counter()
    c, p = run.config, run.probe
    if report is not None:
        report("probe", 0, 1)
    with deterministic_torch(c.threads):
        data = make_probe_data(mixture, c.layout, p.contexts, c.seed + PROBE_SEED_OFFSET)
        tr = subject.trace(data.batch)
        rep = run_probes(subject, data, lags=p.lags, trace=tr)
        pi = None
        if c.layout.n_demos >= 2:
            pi = position_independence(subject, data.batch, n_perms=p.perms, seed=c.seed + PROBE_SEED_OFFSET,
                                       base_trace=tr)
    fig1 = {"bayes": fig1_accuracy(data.refs.next_token_probs, data.batch)}
    if tr.next_token_probs is not None:
        fig1["model"] = fig1_accuracy(np.asarray(tr.next_token_probs), data.batch)
    cls = lambda r: None if r is None else {"accuracy": r.accuracy, "majority": r.majority, "ceiling": r.ceiling}  # noqa: E731
    out = {
        "key": run.key,
        "run": run.to_dict(),
        "fig1": fig1,
        "probes": {"layers": list(rep.layers), "token": {str(k): cls(v) for k, v in rep.token.items()},
                   "state": cls(rep.state), "belief_r2": rep.belief.r2, "task": cls(rep.task),
                   "task_law": None if rep.task_law is None else {"r2": rep.task_law.r2, "ceiling": rep.task_law.ceiling}},
        "independence": None if pi is None else {"layers": list(pi.layers), "mean": pi.mean, "std": pi.std},
        "timing": {"subject_s": t1 - t0, "probe_s": time.perf_counter() - t1, "cpu_s": time.process_time() - c0,
                   "device": dev},
    }
    if info:
        out["train"] = {k: v for k, v in info.items() if k != "seconds"}
        out["timing"]["train_s"] = info["seconds"]
    if report is not None:
        report("probe", 1, 1)
    return _clean(out)


__all__ = ["execute", "fig1_accuracy", "weights_sha256"]
