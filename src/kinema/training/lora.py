"""LoRA for the video transformer: peft adapters while training, diffusers-format safetensors files.

Saved files hold ``transformer.<module path>.lora_A.weight`` / ``.lora_B.weight`` (peft's
``get_peft_model_state_dict`` names with diffusers' ``transformer.`` prefix) and, in the safetensors
metadata under ``lora_adapter_metadata``, the peft ``LoraConfig`` (rank, alpha, target modules) with
the same prefix, which is what diffusers' ``load_lora_weights`` / ``load_lora_adapter(prefix="transformer")``
read. Module paths are those of diffusers' ``EasyAnimateTransformer3DModel`` (kinema's transformer uses
the same names), so the files load in both.

Generation does not need peft: :func:`merge_lora` adds ``scale * alpha / rank * B @ A`` to the base
weights (what peft computes, folded in).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from kinema.models.modeling_utils import _write_atomic

from .config import LoRAConfig

PREFIX = "transformer."
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY


def add_lora(model: nn.Module, config: LoRAConfig, adapter_name: str = "default") -> nn.Module:
    """Inject LoRA layers into ``model`` in place; only the LoRA weights stay trainable."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover - peft is a training dependency
        raise ImportError("LoRA training needs the 'peft' package (pip install peft)") from e
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        init_lora_weights=True,  # B = 0: the adapted model starts identical to the base model
    )
    model.requires_grad_(False)
    inject_adapter_in_model(lora_config, model, adapter_name=adapter_name)
    matched = [n for n, _ in model.named_parameters() if ".lora_" in n]
    if not matched:
        raise ValueError(f"lora.target_modules {config.target_modules} matched no module of the transformer")
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    return model


def lora_state_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The LoRA weights under diffusers keys (``transformer.<path>.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def lora_metadata(config: LoRAConfig) -> dict[str, str]:
    """safetensors metadata: the peft LoraConfig kwargs, prefixed like diffusers' save_lora_weights."""
    adapter = {
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": list(config.target_modules),
        "init_lora_weights": True,
        "use_dora": False,
        "use_rslora": False,
        "bias": "none",
    }
    packed = {PREFIX + k: v for k, v in adapter.items()}
    return {"format": "pt", METADATA_KEY: json.dumps(packed, indent=2, sort_keys=True)}


def save_lora(
    path: str | Path, state: dict[str, torch.Tensor], config: LoRAConfig, fold_alpha: bool = False
) -> Path:
    """Write a LoRA file. ``fold_alpha`` scales ``lora_B`` by ``alpha / rank`` and records ``alpha = rank``:
    the same model for every loader, including those that ignore the metadata (they assume alpha = rank).
    Checkpoints keep the raw weights (exact resume); exported files fold.
    """
    path = Path(path)
    tensors = {k: v.contiguous() for k, v in state.items()}
    if fold_alpha and config.alpha != config.rank:
        factor = config.alpha / config.rank
        tensors = {k: (v * factor if ".lora_B." in k else v).contiguous() for k, v in tensors.items()}
        config = LoRAConfig(**{**config.__dict__, "alpha": float(config.rank)})
    _write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=lora_metadata(config)))
    return path


def load_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a LoRA safetensors file: ``(state dict with diffusers keys, adapter metadata or {})``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file '{path}' does not exist")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        raw = (f.metadata() or {}).get(METADATA_KEY)
    meta = {}
    if raw:
        meta = {k.removeprefix(PREFIX): v for k, v in json.loads(raw).items() if k.startswith(PREFIX)}
    return state, meta


@torch.no_grad()
def merge_lora(model: nn.Module, lora: str | Path | dict[str, torch.Tensor], scale: float = 1.0,
               alpha: float | None = None) -> int:  # fmt: skip
    """Fold a LoRA into ``model``'s Linear weights in place: ``W += scale * alpha / r * B @ A``.

    ``lora`` is a file or a state dict with diffusers (``transformer.``-prefixed) or bare keys. ``alpha``
    defaults to the file's metadata, else the rank (diffusers' default). Returns the number of merged
    layers; raises ``ValueError`` if a key names no Linear of the model or shapes disagree.
    """
    meta: dict = {}
    if isinstance(lora, str | Path):
        state, meta = load_lora(lora)
    else:
        state = lora
    alpha = alpha if alpha is not None else meta.get("lora_alpha")
    modules = dict(model.named_modules())
    merged = 0
    for key, a in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key.removeprefix(PREFIX)[: -len(".lora_A.weight")]
        b_key = key[: -len(".lora_A.weight")] + ".lora_B.weight"
        if b_key not in state:
            raise ValueError(f"LoRA: '{key}' has no matching '{b_key}'")
        layer = modules.get(path)
        if layer is None and hasattr(modules.get(path + ".base_layer"), "weight"):
            layer = modules[path + ".base_layer"]
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"LoRA key '{key}': the model has no Linear layer '{path}'")
        b = state[b_key]
        rank = a.shape[0]
        delta = b.float() @ a.float()
        if delta.shape != layer.weight.shape:
            raise ValueError(
                f"LoRA '{path}': delta {tuple(delta.shape)} != weight {tuple(layer.weight.shape)}"
            )
        factor = scale * (float(alpha) / rank if alpha is not None else 1.0)
        layer.weight.add_((delta * factor).to(layer.weight.dtype))
        merged += 1
    if merged == 0:
        raise ValueError("LoRA: no lora_A/lora_B weight pairs found")
    return merged
