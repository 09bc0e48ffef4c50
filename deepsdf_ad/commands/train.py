"""``deepsdf-ad train``: a config and a data folder -> a run folder (resumes; several seeds; DDP)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from deepsdf_ad.commands.common import (
    add_device,
    add_force,
    add_quiet,
    not_inputs,
    positive_float,
    positive_int,
    seed,
)


def add_parsers(sub) -> None:
    tr = sub.add_parser("train", help="train a model (resumes if RUN exists)",
                        description="Train on DATA's train split into RUN; running it again resumes, with "
                                    "the run's own config (only --epochs may change). One train at a time "
                                    "per RUN.")
    tr.add_argument("--config", required=True,
                    help="a preset's name (e.g. shapes_small) or a YAML file "
                         "(e.g. configs/shapes_small.yaml)")
    tr.add_argument("--data", required=True, metavar="DATA", help="data folder (ours or DeepSDF's)")
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder")
    tr.add_argument("--epochs", type=positive_int, help="override the config's epoch count")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.shapes_per_batch=16 (repeatable)")
    tr.add_argument("--split", help="split JSON to train on (default DATA/splits/train.json)")
    tr.add_argument("--decoder-from", metavar="RUN_AD",
                    help="amortise a trained autodecoder: take its decoder, frozen, and train only this "
                         "config's encoder to give its codes (train.decoder_from; configs/"
                         "shapes_cpu_amortised.yaml); DATA must be the data it trained on")
    tr.add_argument("--max-minutes", type=positive_float, metavar="M",
                    help="stop with a checkpoint after the first epoch that ends past M minutes of this "
                         "call; the same command again goes on from there")
    tr.add_argument("--seeds", type=seed, nargs="+", metavar="K",
                    help="train once per seed into RUN/seed_K (train.seed = K); compare pools them")
    tr.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                    help="train with N processes on this machine (DDP: gloo on CPU, NCCL with one GPU per "
                         "process); the same as 'torchrun --nproc_per_node N -m deepsdf_ad train ...'")
    tr.add_argument("--tensorboard", action="store_true",
                    help="also write TensorBoard event files to RUN/tensorboard (the same as --set "
                         "train.tensorboard=true; needs pip install 'deepsdf-ad[tensorboard]')")
    add_force(tr, "run")
    tr.add_argument("--restart", action="store_true",
                    help="start over in a run folder whose metrics record epochs but whose checkpoints are "
                         "gone (its metrics.jsonl is overwritten)")
    add_quiet(tr)
    add_device(tr)
    tr.set_defaults(func=run_train)


def run_train(args) -> int:
    from deepsdf_ad.config import load_config
    from deepsdf_ad.train import train, train_seeds

    not_inputs(args.out, files=[args.config, args.split], data=[args.data], runs=[args.decoder_from])
    overrides = [*args.set, *(["train.tensorboard=true"] if args.tensorboard else []),
                 *([f"train.decoder_from={json.dumps(str(Path(args.decoder_from).resolve()))}"]
                   if args.decoder_from else [])]  # quoted as a YAML string: a path may hold ': ' or ' #'
    cfg = load_config(args.config, overrides)  # a bad config fails here, once, before any rank starts
    if cfg.train.tensorboard:
        from deepsdf_ad.board import summary_writer

        summary_writer()  # not installed: one line now, not after the data are loaded
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from deepsdf_ad.commands.launch import launch

        return launch(args.argv, args.nproc)
    from deepsdf_ad.distributed import shutdown

    max_seconds = None if args.max_minutes is None else 60.0 * args.max_minutes
    try:
        if args.seeds:
            runs = train_seeds(cfg, args.data, args.out, args.seeds, epochs=args.epochs, device=args.device,
                               split_file=args.split, progress=not args.quiet, max_seconds=max_seconds,
                               restart=args.restart, force=args.force)
        else:
            runs = [train(cfg, args.data, args.out, epochs=args.epochs, device=args.device,
                          split_file=args.split, progress=not args.quiet, max_seconds=max_seconds,
                          restart=args.restart, force=args.force)]
    finally:
        shutdown()
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports
    for run in runs:
        rows = run.metrics()
        last = rows[-1] if rows else {}
        total = run.config().train.epochs
        left = f" (stopped by --max-minutes at {len(rows)} of {total}; run the same command to go on)" \
            if len(rows) < total else ""
        print(f"train: {len(rows)} epochs, final loss {last.get('loss', float('nan')):.6f} -> "
              f"{run.path}{left}")
    return 0
