"""``kinema train CONFIG``: train from a TOML/JSON config (see docs/training.md and configs/).

Single process: ``kinema train configs/tiny_t2v.toml``. Several GPUs / nodes:
``accelerate launch --config_file configs/accelerate/ddp.yaml -m kinema train CONFIG`` (or the
DeepSpeed / FSDP configs next to it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DESCRIPTION = """Train a kinema model (T2V / I2V / Control / Camera transformer, or the VAE) from a config
file, or post-train one by reward backpropagation (mode = "reward", DRaFT-K / DRTune; docs/reward.md). Checkpoints go to OUTPUT_DIR/checkpoints/step-N (resume with --resume latest), scalar logs to
OUTPUT_DIR/logs/metrics.jsonl (and TensorBoard if installed), final weights to OUTPUT_DIR/final.
Launch with `accelerate launch -m kinema train CONFIG` for several processes."""


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected KEY=VALUE, e.g. train.seed=3")
    key, _, raw = text.partition("=")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string
    return key.strip(), value


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="training config (.toml or .json), e.g. configs/tiny_t2v.toml")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder (overrides checkpoint.resume)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (overrides max_steps)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help="override any config field (dotted name, JSON value), repeatable: --set optimizer.lr=3e-5",
    )
    parser.add_argument("--check", action="store_true", help="validate the config and data paths, then exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .config import check_paths, load_config

    overrides = dict(args.overrides)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.resume:
        overrides["checkpoint.resume"] = args.resume
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.no_progress:
        overrides["logging.progress_bar"] = False
    config = load_config(args.config, overrides)  # ConfigError (a ValueError) -> exit 2 with the field name
    check_paths(config, args.config)
    if args.check:
        print(f"{args.config}: OK ({config.mode}, {len(config.stages)} stage(s), {config.total_steps} steps)")
        return 0
    # Under accelerate launch every process runs this; only the main one (RANK 0) logs at INFO.
    main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    from .trainer import Trainer, TrainingAborted

    try:
        result = Trainer(config).train()
    except TrainingAborted as e:
        print(f"kinema train: aborted: {e}", file=sys.stderr)
        return 1
    if not main_process:
        return 0
    print(
        f"trained {result.steps} steps; final loss {result.losses[-1] if result.losses else float('nan'):.4f}; "
        f"{result.nonfinite_steps} non-finite steps skipped; {result.skipped_samples + result.data_errors} "
        f"bad sample(s) skipped; weights in {result.output_dir}/final"
    )
    return 0
