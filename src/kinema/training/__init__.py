"""Training: one flow-matching trainer for T2V / I2V / Control / Camera, LoRA, VAE training, accelerate.

Heavy modules (torch, accelerate, peft) load lazily so ``kinema --help`` stays fast.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "RunConfig": ".config",
    "ConfigError": ".config",
    "load_config": ".config",
    "config_from_dict": ".config",
    "Trainer": ".trainer",
    "TrainingAborted": ".trainer",
    "TrainResult": ".trainer",
    "merge_lora": ".lora",
    "load_lora": ".lora",
    "save_lora": ".lora",
    "get_mode": ".modes",
    "interpolate_weights": ".wise_ft",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
