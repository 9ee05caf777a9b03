"""The ``hmmtx`` command line.

Sub-commands live in :mod:`verify.commands`, one module each, and are discovered automatically: a module defines
``register(subparsers)`` which adds its parser and sets ``func`` (called with the parsed namespace, returning an
exit status). Heavy imports belong inside ``func`` so that ``hmmtx --help`` stays fast.

``hmmtx --plugin FILE.py COMMAND ...`` imports a file that registers constructions before the command runs (the
other route is the ``hmmtx.constructions`` entry-point group; ``docs/extending.md``).

Every :class:`~hmm.errors.HmmtxError` (bad HMM, bad tokens, unreadable file, a construction's own failure, ...)
becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
import warnings
from typing import Any, Sequence

from hmm.errors import HmmtxError


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through the CLI tests
        self.exit(2, f"hmmtx: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import verify.commands as commands
    from verify.cli_args import float_arg, harden_parser

    parser = _Parser(prog="hmmtx", description="Hand-built Transformers checked against exact references.",
                     epilog="Exit status: 0 ok, 1 a check failed, 2 bad input or a refused resource limit, "
                     "130 interrupted (SIGINT), 143 terminated (SIGTERM). Limits: docs/robustness.md.")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="load a Python file that registers constructions (repeatable; see docs/extending.md)")
    parser.add_argument("--max-memory-gb", type=float_arg(0, None, lo_open=True), default=None, metavar="GB",
                        help="memory limit for what one command may build (default 8 GiB; env HMMTX_MAX_MEMORY_GB)")
    parser.add_argument("--max-input-mb", type=float_arg(0, None, lo_open=True), default=None, metavar="MB",
                        help="size limit of input files (default 64 MiB; env HMMTX_MAX_INPUT_MB)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"verify.commands.{info.name}")
        module.register(sub)
    return harden_parser(parser)


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that ``finally`` blocks (temporary files, worker pools) run."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit status: 0 ok, 1 a check failed, 2 bad input (one line on stderr naming the culprit),
    130 on SIGINT and 143 on SIGTERM (one line; outputs are atomic, so nothing partial is left)."""
    old_term = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            if not os.environ.get("HMMTX_WARNINGS"):
                # a warning is not an error: it must not add lines to the one-line contract (HMMTX_WARNINGS=1 shows them)
                warnings.simplefilter("ignore")
            return _run(argv)
    except KeyboardInterrupt:
        _say("hmmtx: interrupted (SIGINT); no partial output was written")
        return 130
    except Terminated:
        _say("hmmtx: terminated (SIGTERM); no partial output was written")
        return 143
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, its one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    for flag, env in (("max_memory_gb", "HMMTX_MAX_MEMORY_GB"), ("max_input_mb", "HMMTX_MAX_INPUT_MB")):
        if getattr(args, flag, None) is not None:
            os.environ[env] = repr(getattr(args, flag))  # inherited by worker processes
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from verify.cli_args import check_paths

        check_paths(args)
        if args.plugin:
            from constructions.registry import load_plugin

            for path in args.plugin:
                load_plugin(path)
        return int(args.func(args) or 0)
    except HmmtxError as exc:
        _say(f"hmmtx: error: {_one_line(str(exc))}")
        return 2
    except RecursionError:
        _say("hmmtx: error: input nested too deeply to process")
        return 2
    except MemoryError:
        _say("hmmtx: error: out of memory; use a smaller input, or lower the limits (hmmtx --max-memory-gb)")
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, still one line (HMMTX_TRACEBACK=1 shows it)
        if os.environ.get("HMMTX_TRACEBACK"):
            raise
        _say(f"hmmtx: internal error: {type(exc).__name__}: {_one_line(str(exc))[:300]} "
             "(a bug; rerun with HMMTX_TRACEBACK=1 for the traceback)")
        return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _quiet_stdout() -> None:
    """After a closed pipe (``hmmtx zoo | head``): point stdout at /dev/null so the exit flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def entry() -> None:
    """The ``hmmtx`` console script and ``python -m verify.cli``: ``sys.exit(main())``, except after an interrupt
    (130 / 143), which leaves with ``os._exit`` once the streams are flushed. CPython 3.11 can mark a
    KeyboardInterrupt as unhandled when it arrives inside C code that evaluates Python (``PyRun_*``), even though
    :func:`main` caught it, and then kills the process with SIGINT at shutdown (exit status -2 instead of 130,
    about one run in six during training). Temporary files and worker pools were cleaned up by the exception's
    unwinding inside :func:`main`; the atexit handlers (multiprocessing's finalizers) run before leaving."""
    code = main()
    if code in (130, 143):
        import atexit

        atexit._run_exitfuncs()  # what a normal exit would run (multiprocessing's finalizers among them)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
