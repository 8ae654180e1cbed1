"""Checkpoint folders: atomic saving through accelerate, finding the latest one, keeping the last N.

A checkpoint is ``output_dir/checkpoints/step-000600/`` written by ``accelerator.save_state`` (so
DeepSpeed ZeRO and FSDP shard their own state) into a hidden temp folder that is renamed into place only
when every process has finished: a crash mid-save leaves the previous checkpoints untouched and no
half-written folder that ``resume = "latest"`` could pick up. With plain DDP / one process the trained
weights inside are kinema's own files (``transformer/`` in diffusers format, or ``lora.safetensors``,
or ``vae/``), usable for generation as they are.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{6,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(accelerator, output_dir: str | Path, step: int, keep_last: int) -> Path:
    """Save all training state for ``step`` atomically; prune to the newest ``keep_last``. Collective."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    final = folder / checkpoint_name(step)
    tmp = folder / f".{checkpoint_name(step)}.tmp"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # re-saving the same step (e.g. abort right after a periodic save)
            old = folder / f".{checkpoint_name(step)}.old"
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        for stale in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
