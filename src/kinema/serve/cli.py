"""``kinema serve``: the web UI and REST API in one process (uvicorn), on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import ipaddress
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="web UI + REST API for generation (http://127.0.0.1:7860)",
        description=(
            "Serve a Gradio web UI (/ui) and a JSON REST API (/v1, OpenAPI at /docs) over one job queue. "
            "Jobs, their inputs and results are kept in --output-dir (SQLite: jobs.sqlite3) and survive "
            "restarts. There is no authentication: keep the default loopback host unless you put it "
            "behind a proxy that authenticates."
        ),
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--output-dir", default="outputs/serve", help="jobs, uploads and results (default: outputs/serve)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="default model folder (default: the embedded ShapesWorld model, else a small random model)",
    )
    parser.add_argument("--models-dir", default=None, help="a folder of model folders to choose from")
    parser.add_argument(
        "--loras-dir", default=None, help="a folder of LoRA .safetensors files to choose from"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=32,
        help="jobs that may wait; more are refused with 429 (default: 32)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=256.0,
        help="request body limit in MB; more -> 413 (default: 256)",
    )
    parser.add_argument("--no-ui", dest="ui", action="store_false", help="REST API only (no Gradio)")
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as e:
        raise ValueError(
            f"kinema serve needs the serve extra ({e.name} is missing): pip install 'kinema[serve]'"
        ) from None
    if not (0 < args.port < 65536):
        raise ValueError(f"--port {args.port}: must be in 1..65535")
    from .app import create_app
    from .jobs import ServeSettings

    settings = ServeSettings(
        output_dir=args.output_dir,
        model=args.model,
        models_dir=args.models_dir,
        loras_dir=args.loras_dir,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        ui=args.ui,
    )
    if not _is_loopback(args.host):
        print(
            f"kinema serve: WARNING: binding {args.host}: anyone who can reach it can run jobs and read "
            "results (there is no authentication)",
            file=sys.stderr,
        )
    app = create_app(settings)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    where = f"http://{shown}:{args.port}"
    print(
        f"kinema serve: {where}/ui (web UI), {where}/docs (REST API); jobs in {settings.output_dir}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=30)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
