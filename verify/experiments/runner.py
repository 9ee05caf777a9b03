"""Run a grid resumably on local worker processes (default) or on a Dask distributed cluster.

Result store (``OUT/``):

* ``OUT/runs/KEY.json``: the result of a finished run (:func:`verify.experiments.work.execute`), written atomically
  by the driver (``hmm.io.atomic_write_json``) once the run has returned. A run whose valid result file exists is
  never recomputed: rerunning an interrupted grid computes only the missing runs.
* ``OUT/failed/KEY.json``: the error of a run that raised; it never touches ``runs/`` (a failed rerun of a
  finished run cannot happen, and a failure never overwrites a result). It is removed when the run later succeeds.

Engines. ``local`` (the default): ``workers`` spawned processes (``concurrent.futures.ProcessPoolExecutor``,
spawn start method), nothing to start beforehand; ``workers = 0`` runs inside the driver process. ``dask``: a running Dask distributed scheduler at ``cluster``
(``tcp://host:port``); the cluster's workers need hmmtx importable (same version) and no shared file system: each
run's result travels back to the driver, which writes it. Both engines run :func:`execute` with the run's own
seed and thread count, so their results are identical bit for bit on the same machine (tests check this).

Progress: one rich bar for the grid (runs done / total) and one per running run (training steps, then probing),
fed by a queue from the workers (a multiprocessing queue locally, a ``distributed.Queue`` on a cluster).
"""

from __future__ import annotations

import json
import queue as queue_mod
import re
import signal
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from hmm.errors import HmmtxError
from hmm.io import atomic_write_json
from verify.experiments.spec import RESULT_FORMAT, GridSpec, RunSpec

CONNECT_TIMEOUT_S = 5.0
_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://[^\s/:]+:\d{1,5}$")


# ---------------------------------------------------------------------------------------------- store
class ResultStore:
    """Finished results under ``out/runs``, failures under ``out/failed`` (module docstring)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.runs_dir = self.out / "runs"
        self.failed_dir = self.out / "failed"

    def prepare(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.failed_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HmmtxError(f"--out {self.out}: cannot create result folders ({exc.strerror or exc})") from None

    def path(self, key: str) -> Path:
        return self.runs_dir / f"{key}.json"

    def load(self, key: str) -> dict | None:
        """The finished result of ``key``, or None when absent or not a valid result of this format."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        ok = isinstance(data, dict) and data.get("key") == key and data.get("run", {}).get("format") == RESULT_FORMAT
        return data if ok else None

    def save(self, key: str, result: dict) -> None:
        atomic_write_json(self.path(key), result)
        (self.failed_dir / f"{key}.json").unlink(missing_ok=True)

    def fail(self, run: RunSpec, message: str) -> None:
        atomic_write_json(self.failed_dir / f"{run.key}.json", {"key": run.key, "run": run.to_dict(), "error": message})

    def results(self) -> list[dict]:
        """Every valid finished result in the store (sorted by key)."""
        if not self.runs_dir.is_dir():
            raise HmmtxError(f"{self.out}: no experiment results here (missing {self.runs_dir})")
        out = []
        for p in sorted(self.runs_dir.glob("*.json")):
            r = self.load(p.stem)
            if r is not None:
                out.append(r)
        return out


class GridOutcome(NamedTuple):
    """``computed``: keys run now; ``skipped``: keys already finished; ``failed``: key -> one-line error;
    ``seconds``: wall time of :func:`run_grid`."""

    computed: list
    skipped: list
    failed: dict
    seconds: float


# ---------------------------------------------------------------------------------------------- worker side
_QUEUE: Any = None


def _init_local(q: Any) -> None:
    global _QUEUE
    _QUEUE = q
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides; it terminates the workers on interrupt


def _put(q: Any, msg: tuple) -> None:
    try:
        q.put(msg)
    except Exception:  # progress is best effort: never fail a run because a bar could not be fed
        pass


def _execute_local(run_dict: dict, device: str) -> dict:
    from verify.experiments.work import execute

    run = RunSpec.from_dict(run_dict)
    q = _QUEUE
    return execute(run, None if q is None else (lambda ph, d, t: _put(q, (run.key, ph, d, t))), device)


def _execute_dask(run_dict: dict, queue_name: str | None, device: str) -> dict:
    from verify.experiments.work import execute

    run = RunSpec.from_dict(run_dict)
    report = None
    if queue_name is not None:
        from distributed import Queue

        q = Queue(queue_name)
        report = lambda ph, d, t: _put(q, (run.key, ph, d, t))  # noqa: E731
    return execute(run, report, device)


# ---------------------------------------------------------------------------------------------- engines
class _LocalEngine:
    """``workers`` spawned worker processes; progress over a multiprocessing queue."""

    def __init__(self, workers: int, progress: bool):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue() if progress else None
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_local,
                                        initargs=(self.queue,))

    def submit(self, run: RunSpec, device: str) -> Any:
        return self.pool.submit(_execute_local, run.to_dict(), device)

    def wait(self, handles: Sequence[Any], timeout: float) -> set:
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)[0]

    def messages(self) -> list:
        out = []
        while self.queue is not None:
            try:
                out.append(self.queue.get_nowait())
            except (queue_mod.Empty, OSError, ValueError):
                break
        return out

    def close(self, abort: bool) -> None:
        """Stop the pool; on ``abort`` terminate the workers, then wait for the pool's manager thread to finish.

        ``shutdown(wait=False)`` drops the executor's references to its call/result queues, but its manager thread
        still holds them; when that thread ends (after it notices the terminated workers) the queues are collected
        *in that thread*, and their semaphores' finalizers (``sem_unlink`` + unregister with multiprocessing's
        resource tracker) run there. If the process leaves with ``os._exit`` meanwhile (``verify.cli.entry`` after
        an interrupt), the tracker is left with registered semaphores and prints "leaked semaphore objects"
        warnings at shutdown. Joining the thread and dropping its last reference here runs those finalizers in
        this thread, before ``close`` returns."""
        if abort:
            procs = list((getattr(self.pool, "_processes", None) or {}).values())  # no public API on Python 3.11
            manager = getattr(self.pool, "_executor_manager_thread", None)
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
            if manager is not None:
                manager.join(timeout=30)  # prompt: every worker is gone, so the pool is broken and it exits
            del manager  # the last reference: its queues' semaphores are released here, in this thread
        else:
            self.pool.shutdown(wait=True)
        if self.queue is not None:
            self.queue.close()
            self.queue.cancel_join_thread()


class _InlineEngine:
    """``workers = 0``: runs execute one at a time inside the driver process (debugging, small grids, tests)."""

    def __init__(self, progress: bool):
        from concurrent.futures import Future

        self._future = Future
        self.pending: list = []
        self.inbox: list = []
        self.progress = progress

    def submit(self, run: RunSpec, device: str) -> Any:
        f = self._future()
        self.pending.append((f, run, device))
        return f

    def wait(self, handles: Sequence[Any], timeout: float) -> set:
        from verify.experiments.work import execute

        f, run, device = self.pending.pop(0)
        report = (lambda ph, d, t: self.inbox.append((run.key, ph, d, t))) if self.progress else None
        try:
            f.set_result(execute(run, report, device))
        except Exception as exc:
            f.set_exception(exc)
        return {f}

    def messages(self) -> list:
        out, self.inbox = self.inbox, []
        return out

    def close(self, abort: bool) -> None:
        self.pending.clear()


def connect_dask(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address``; one HmmtxError if it cannot be reached."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise HmmtxError(f"--cluster {address!r}: expected a scheduler address like tcp://host:8786")
    try:
        from distributed import Client
    except ImportError:
        raise HmmtxError("--cluster needs Dask distributed: pip install 'hmmtx[cluster]'") from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise HmmtxError(f"--cluster {address}: no Dask scheduler reachable within {timeout:g} s ({msg})") from None


class _DaskEngine:
    """Runs on a Dask distributed cluster; progress over a named ``distributed.Queue``."""

    def __init__(self, address: str, progress: bool):
        self.client = connect_dask(address)
        self.queue_name = f"hmmtx-progress-{uuid.uuid4().hex}" if progress else None
        self.queue = None
        if progress:
            from distributed import Queue

            self.queue = Queue(self.queue_name, client=self.client)

    def submit(self, run: RunSpec, device: str) -> Any:
        return self.client.submit(_execute_dask, run.to_dict(), self.queue_name, device, key=f"hmmtx-run-{run.key}-{uuid.uuid4().hex[:8]}",
                                  pure=False)

    def wait(self, handles: Sequence[Any], timeout: float) -> set:
        done = {h for h in handles if h.done()}
        if not done:
            time.sleep(timeout)
        return done

    def messages(self) -> list:
        if self.queue is None:
            return []
        try:
            n = self.queue.qsize()
            return list(self.queue.get(batch=n)) if n else []
        except Exception:
            return []

    def close(self, abort: bool) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------------- progress
class _Bars:
    """One bar for the grid and one per running run (rich); a no-op when disabled."""

    def __init__(self, enabled: bool, name: str, total: int, done: int):
        self.p = None
        self.runs: dict[str, Any] = {}
        self.finished: set[str] = set()
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.p.start()
        self.grid = self.p.add_task(f"[bold]grid {name}", total=total, completed=done)
        self.labels: dict[str, str] = {}

    def label(self, key: str, text: str) -> None:
        if self.p is not None:
            self.labels[key] = text

    def update(self, key: str, phase: str, done: int, total: int) -> None:
        if self.p is None or key in self.finished:  # a late message of a run already collected
            return
        if key not in self.runs:
            self.runs[key] = self.p.add_task(f"  {self.labels.get(key, key)}", total=total)
        self.p.update(self.runs[key], description=f"  {self.labels.get(key, key)}: {phase}", completed=done, total=total)

    def finish(self, key: str) -> None:
        self.finished.add(key)
        if self.p is None:
            return
        if key in self.runs:
            self.p.remove_task(self.runs.pop(key))
        self.p.advance(self.grid)

    def log(self, log: Any, line: str) -> None:
        """``log(line)``, above the bars while they are drawn."""
        if self.p is not None:
            self.p.console.print(line, highlight=False, markup=False)
        elif log:
            log(line)

    def stop(self) -> None:
        if self.p is not None:
            self.p.stop()


# ---------------------------------------------------------------------------------------------- driver
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def run_grid(grid: GridSpec, out: str | Path, *, workers: int = 1, cluster: str | None = None,
             progress: bool = False, log: Any = None, device: str = "auto") -> GridOutcome:
    """Compute every run of ``grid`` that has no finished result in ``out`` (see the module docstring).

    ``workers`` local processes (0: inside this process, one run at a time), or the Dask scheduler at ``cluster``. SIGTERM is handled like Ctrl-C: the workers
    are stopped, finished results stay, and KeyboardInterrupt propagates (unless the caller installed its own
    SIGTERM handler, as ``hmmtx`` does: its exception propagates then, exit 143). ``log(text)`` receives one line per
    finished or failed run. ``device`` trains the models (``auto``: CUDA where the worker has it, else the CPU;
    resolved on each worker's machine; recorded as ``timing.device`` in every result).
    """
    if cluster is None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise HmmtxError(f"--workers must be an integer >= 0, got {workers!r}")
    t0 = time.perf_counter()
    store = ResultStore(out)
    store.prepare()
    skipped = [r.key for r in grid.runs if store.load(r.key) is not None]
    todo = [r for r in grid.runs if store.load(r.key) is None]
    computed: list[str] = []
    failed: dict[str, str] = {}
    if not todo:
        return GridOutcome(computed, skipped, failed, time.perf_counter() - t0)
    if cluster is not None:
        engine: Any = _DaskEngine(cluster, progress)
    elif workers == 0:
        engine = _InlineEngine(progress)
    else:
        engine = _LocalEngine(min(workers, len(todo)), progress)
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # a caller's own SIGTERM handler (the CLI's raises verify.cli.Terminated: one line, exit 143) is kept; only the
    # default action (which would kill the driver without stopping the workers) is replaced
    if old_term in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_term)
    bars = _Bars(progress, grid.name, len(grid.runs), len(skipped))
    abort = True
    try:
        pending = {}
        for run in todo:
            bars.label(run.key, run.label)
            pending[engine.submit(run, device)] = run
        while pending:
            done = engine.wait(list(pending), timeout=0.25)
            for key, phase, d, t in engine.messages():
                bars.update(key, phase, d, t)
            for h in done:
                run = pending.pop(h)
                try:
                    result = h.result()
                except Exception as exc:  # a failed run is recorded, never written over a result
                    failed[run.key] = _one_line(exc)
                    store.fail(run, "".join(traceback.format_exception(exc))[-4000:])
                    bars.log(log, f"FAILED {run.label} [{run.key}]: {failed[run.key]}")
                else:
                    store.save(run.key, result)
                    computed.append(run.key)
                    bars.log(log, f"done {run.label} [{run.key}]")
                bars.finish(run.key)
        abort = False
    finally:
        bars.stop()
        engine.close(abort)
        signal.signal(signal.SIGTERM, old_term)
    return GridOutcome(computed, skipped, failed, time.perf_counter() - t0)


__all__ = ["ResultStore", "GridOutcome", "connect_dask", "run_grid", "CONNECT_TIMEOUT_S"]
