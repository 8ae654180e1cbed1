"""Scalar logs: always a JSONL file, plus TensorBoard when the ``tensorboard`` package is installed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class MetricsLogger:
    """Writes ``{"step": ..., "time": ..., name: value, ...}`` lines to ``logs/metrics.jsonl``.

    ``tensorboard``: "auto" (use it if installed), "on" (required) or "off". Only the main process logs.
    """

    def __init__(self, output_dir: str | Path, tensorboard: str = "auto", enabled: bool = True):
        self.enabled = enabled
        self.writer = None
        self.path = Path(output_dir) / "logs" / "metrics.jsonl"
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard == "on" and not tensorboard_available():
            raise ValueError(
                "logging.tensorboard = 'on' needs the tensorboard package (pip install tensorboard)"
            )
        if tensorboard in ("on", "auto") and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))
        elif tensorboard == "auto":
            logger.info("tensorboard not installed: scalars go to %s only", self.path)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in values.items()}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _plain(v):
    try:
        return float(v) if not isinstance(v, int | str | bool) else v
    except (TypeError, ValueError):
        return str(v)
