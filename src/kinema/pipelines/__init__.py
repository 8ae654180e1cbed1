"""Generation pipelines: one :class:`VideoPipeline` runs every mode of every EasyAnimate V5.1 model type.

``load_pipeline(folder)`` loads an official diffusers-format folder (T2V, InP, Control, Control-Camera);
``pipe(prompt=..., ...)`` or ``pipe.generate(GenerationConfig(...))`` generates. See docs/pipelines.md.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "VideoPipeline": ".pipeline",
    "VideoPipelineOutput": ".pipeline",
    "GenerationInterrupted": ".pipeline",
    "load_pipeline": ".loading",
    "model_type_from_channels": ".loading",
    "read_lora": ".loading",
    "merge_lora": ".loading",
    "build_random_model": ".random_model",
    "make_scheduler": ".schedulers",
    "SAMPLERS": ".schedulers",
    "estimate_memory": ".memory",
    "MEMORY_MODES": ".memory",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
