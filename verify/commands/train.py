"""``hmmtx train``: train a small GPT-style Transformer on in-context mixtures of HMMs and save a checkpoint."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a small Transformer on in-context HMM mixtures (deterministic) and save a checkpoint",
        description=(
            "Train a pre-LN GPT-style Transformer on BOS demo SEP ... SEP test contexts drawn from a mixture of "
            "random HMMs, with next-token loss; deterministic from --seed. Prints the next-token total-variation "
            "error against the Bayes predictive and the unigram baseline, and writes a checkpoint (config, "
            "mixture, weights) that `hmmtx probe --model checkpoint:PATH` reads."
        ),
    )
    p.add_argument("--config", default="default", help="preset: default (minutes on 2 cores) or tiny (seconds)")
    p.add_argument("--seed", type=int, default=None, help="training seed (weights init and data); preset's if omitted")
    p.add_argument("--out", default="hmmtx-model.pt", help="checkpoint path (written atomically)")
    p.add_argument("--steps", type=int, default=None, help="override the number of optimiser steps")
    p.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    p.add_argument("--layers", type=int, default=None, dest="n_layers", help="override the number of layers")
    p.add_argument("--pos", choices=["learned", "rpe"], default=None, help="positions: learned absolute or RPE bias")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: the preset's, 1)")
    p.add_argument("--mixture-seed", type=int, default=None, help="seed of the random task mixture")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="train on cpu (default), cuda, cuda:N or auto (CUDA when available); the model is saved from the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the config and metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from hmm.errors import HmmtxError
    from hmm.io import atomic_write_json
    from verify.training import preset, save_checkpoint, train

    out = Path(args.out)
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise HmmtxError(f"--out {out}: folder {out.parent} does not exist")
    if args.json and not (Path(args.json).parent if str(Path(args.json).parent) else Path(".")).is_dir():
        raise HmmtxError(f"--json {args.json}: folder {Path(args.json).parent} does not exist")
    config = preset(
        args.config, seed=args.seed, steps=args.steps, lr=args.lr, n_layers=args.n_layers, pos=args.pos,
        threads=args.threads, mixture_seed=args.mixture_seed,
    )
    from verify.cli_args import require_fits

    require_fits(f"training a {config.n_layers}-layer d={config.d_model} model", config.estimated_bytes(),
                 "reduce --layers or use a smaller --config")
    from verify.training import resolve_device

    device = resolve_device(args.device)  # an absent CUDA: one error line before anything is printed
    console = Console(stderr=True)
    console.print(
        f"training on {device}: {config.n_layers}-layer d={config.d_model} model ({config.pos} positions) for {config.steps} steps, "
        f"seed {config.seed}, {config.threads} thread(s); mixture of {config.num_tasks} tasks "
        f"(S={config.num_states}, V={config.vocab_size}), {config.n_demos} demos x {config.demo_len} + test {config.test_len}"
    )
    result = train(config, device=device, progress=not args.no_progress)
    save_checkpoint(result, out)
    m = result.metrics
    table = Table(title=f"held-out next-token quality ({m.n_positions} positions, {config.eval_contexts} contexts)")
    table.add_column("predictor")
    table.add_column("TV vs Bayes", justify="right")
    table.add_column("cross-entropy (nats)", justify="right")
    table.add_row("trained model", f"{m.tv_model:.4f}", f"{m.ce_model:.4f}")
    table.add_row("unigram baseline", f"{m.tv_unigram:.4f}", f"{m.ce_unigram:.4f}")
    table.add_row("Bayes predictive", "0", f"{m.ce_bayes:.4f}")
    Console().print(table)
    Console(markup=False).print(
        f"test-segment TV vs Bayes: {m.tv_model_test:.4f}; trained in {result.seconds:.1f} s; checkpoint: {out}"
    )
    if args.json:
        atomic_write_json(args.json, {"config": config.to_dict(), "metrics": dict(m._asdict()),
                                      "seconds": result.seconds, "device": device, "checkpoint": str(out)})
    return 0
