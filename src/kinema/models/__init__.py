"""kinema's models: the causal video VAE and the video transformers."""

from importlib import import_module
from typing import Any

from .modeling_utils import CheckpointError, ModelMixin

_LAZY = {
    "VideoVAE": ".vae",
    "VideoVAEConfig": ".vae",
    "VideoTransformer": ".transformer",
    "VideoTransformerConfig": ".transformer",
}

__all__ = ["CheckpointError", "ModelMixin", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
