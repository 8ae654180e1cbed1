"""The ``kinema`` command: ``generate``, ``train``, ``eval``, ``serve``.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``; the subcommand
modules import torch and models lazily so ``kinema --help`` stays fast. Bad input (ValueError,
FileNotFoundError) prints one clear line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "generate": "kinema.pipelines.cli",
    "train": "kinema.training.cli",
    "eval": "kinema.shapes.cli",
    "serve": "kinema.serve.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinema", description="Text/image/video-to-video generation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if not (e.name and module_name.startswith(e.name)):  # a real missing dependency
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"kinema {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kinema {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
