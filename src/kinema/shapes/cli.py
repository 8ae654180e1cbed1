"""``kinema eval``: the ShapesWorld benchmark of a model folder (default: the embedded model).

    kinema eval                                   # the embedded model, every mode it has, 16 prompts each
    kinema eval --model runs/shapes/export --prompts 32 --json results.json
    kinema eval --videos outputs/                 # score videos written by `kinema generate` (sidecars)

Prints a table (one column per mode) and the issue-6 targets, and writes the full results, per language
and per clip aggregate, as JSON (atomically). Bad input exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_JSON = "outputs/eval.json"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="ShapesWorld benchmark: generate from held-out prompts (all modes, four languages) and score",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--model", default=None, help="model folder (default: the embedded ShapesWorld model)"
    )
    parser.add_argument(
        "--videos", default=None, help="score the generated videos (with .json sidecars) in DIR"
    )
    parser.add_argument("--prompts", type=int, default=16, help="held-out prompts per mode (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    parser.add_argument("--guidance", type=float, default=6.0, help="CFG scale (default 6.0)")
    parser.add_argument(
        "--modes",
        default=None,
        help="comma-separated subset of t2v,i2v,trajectory,camera,vae (default: every mode the model has; "
        "a mode named here that the model lacks is an error)",
    )
    parser.add_argument("--languages", default="en,zh,ja,ko", help="prompt languages, cycled (default: all)")
    parser.add_argument("--vae-clips", type=int, default=16, help="held-out clips for the VAE PSNR")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    parser.set_defaults(func=run)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def write_json_atomic(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``results`` as JSON via a temporary file in the same folder and a rename."""
    from .evaluate import write_results_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_results_json(results, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def format_report(report: dict[str, Any]) -> str:
    """The table of every mode, the VAE PSNR and the targets."""
    from .evaluate import format_table

    results = report["results"]
    columns = {mode: res for mode, res in results.items() if mode != "vae"}
    lines = [format_table(columns)] if columns else []
    if "vae" in results:
        vae = results["vae"]
        lines.append(
            f"VAE reconstruction PSNR: {vae['psnr']:.2f} dB (worst clip {vae['min_clip_psnr']:.2f} dB, "
            f"foreground {vae['foreground_psnr']:.2f} dB, {vae['clips']} held-out clips)"
        )
    for mode, reason in report.get("skipped", {}).items():
        lines.append(f"skipped {mode}: {reason}")
    lines.append("targets:")
    for t in report["targets"]:
        state = {None: "not measured", True: "PASS", False: "FAIL"}[t["pass"]]
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(f"  {t['mode']:<10} {t['metric']:<18} {t['target']:<8} {value:>8}  {state}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .benchmark import MODES, BenchmarkOptions, run_benchmark, score_videos

    if args.model and args.videos:
        raise ValueError("give --model or --videos, not both")
    options = BenchmarkOptions(
        prompts=args.prompts,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        modes=_split(args.modes) if args.modes is not None else MODES,
        languages=_split(args.languages),
        vae_clips=args.vae_clips,
    )
    options.validate()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.videos:
        report = score_videos(args.videos)
    else:
        model = args.model
        if model is None:
            from .embedded import embedded_model_path

            model = embedded_model_path()
            if model is None:
                raise FileNotFoundError(
                    "no embedded model is installed yet; train it (bash scripts/train_shapes.sh) or pass --model"
                )
        report = run_benchmark(
            model, options, strict=args.modes is not None, log=lambda m: print(m, file=sys.stderr)
        )
    report["seconds"] = round(time.perf_counter() - started, 2)
    print(format_report(report))
    path = write_json_atomic(report, args.json)
    print(f"wrote {path} ({report['seconds']:.1f} s)")
    return 0
