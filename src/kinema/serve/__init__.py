"""``kinema serve``: a web UI (Gradio) and a JSON REST API (FastAPI) over one persistent job queue.

``create_app(ServeSettings(...))`` builds the ASGI app; ``kinema serve`` runs it with uvicorn on
127.0.0.1. Requests are :class:`kinema.config.GenerationConfig` fields; jobs run one at a time on one
worker thread and are kept in SQLite in the output folder (``jobs.sqlite3``). See docs/serve.md.

Needs the ``serve`` extra (fastapi, uvicorn, gradio, python-multipart); imported lazily.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "create_app": ".app",
    "ServeSettings": ".jobs",
    "JobManager": ".jobs",
    "JobStore": ".jobs",
    "RequestError": ".schema",
    "QueueFull": ".schema",
    "build_ui": ".ui",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
