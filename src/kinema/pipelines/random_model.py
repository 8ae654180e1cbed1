"""Small random models in the official diffusers folder layout (for tests, benchmarks and the CLI fallback).

``build_random_model(folder, "inp")`` writes model_index.json, transformer/, vae/, text_encoder/,
tokenizer/ and scheduler/ exactly as an EasyAnimateV5.1 download is laid out, so both kinema and
diffusers' EasyAnimate pipelines load it. The weights are random: the output looks like noise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .loading import PLUCKER_CHANNELS

PIPELINE_CLASS = {
    "t2v": "EasyAnimatePipeline",
    "inp": "EasyAnimateInpaintPipeline",
    "control": "EasyAnimateControlPipeline",
    "camera": "EasyAnimateControlPipeline",
}
# The scheduler of the V5.1 checkpoints: flow matching with the dynamic (mu) shift the pipelines use.
OFFICIAL_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.32.0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
}
TINY_TRANSFORMER: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    mmdit_layers=1,
    time_embed_dim=32,
    text_embed_dim=32,
    add_norm_text_encoder=True,
    sample_height=8,  # default output 64 x 64 px
    sample_width=8,
)
TINY_VAE: dict[str, Any] = dict(block_out_channels=(8, 8, 16, 16), norm_num_groups=4, layers_per_block=1)
TINY_TEXT: dict[str, Any] = dict(hidden_size=32, num_layers=2, num_attention_heads=2, num_key_value_heads=1)


def in_channels_for(model_type: str, latent_channels: int = 16) -> int:
    return {
        "t2v": latent_channels,
        "inp": 2 * latent_channels + 1,
        "control": 3 * latent_channels,
        "camera": 2 * latent_channels + PLUCKER_CHANNELS,
    }[model_type]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def build_random_model(
    folder: str | os.PathLike,
    model_type: str = "t2v",
    *,
    seed: int = 0,
    transformer: dict[str, Any] | None = None,
    vae: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    with_text_encoder: bool = True,
    text_encoder_from: str | os.PathLike | None = None,
) -> Path:
    """Write a random diffusers-format EasyAnimate V5.1-style model of ``model_type`` to ``folder``.

    ``transformer``/``vae``/``text`` override the tiny defaults (``TINY_*``); ``text`` goes to
    ``PromptEncoder.small`` and its ``hidden_size`` becomes the transformer's ``text_embed_dim``.
    ``with_text_encoder=False`` leaves text_encoder/ and tokenizer/ out (use ``prompt_embeds``);
    ``text_encoder_from`` copies them from another model folder instead of building a new encoder.
    """
    from kinema.models import VideoTransformer, VideoVAE

    folder = Path(folder)
    text_cfg = {**TINY_TEXT, **(text or {})}
    vae_cfg = {**TINY_VAE, **(vae or {})}
    latent = vae_cfg.get("latent_channels", 16)
    components: dict[str, Any] = {
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": [None, None],
        "tokenizer": [None, None],
        "transformer": ["diffusers", "EasyAnimateTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLMagvit"],
    }
    tcfg = {**TINY_TRANSFORMER, "in_channels": in_channels_for(model_type, latent), "out_channels": latent}
    if with_text_encoder:
        if text_encoder_from is not None:
            import shutil

            for name in ("text_encoder", "tokenizer"):
                shutil.copytree(Path(text_encoder_from) / name, folder / name, dirs_exist_ok=True)
            text_config = json.loads((folder / "text_encoder" / "config.json").read_text())["text_config"]
            tcfg["text_embed_dim"] = text_config["hidden_size"]
        else:
            from kinema.text import PromptEncoder

            PromptEncoder.small(seed=seed, **text_cfg).save_pretrained(folder)
            tcfg["text_embed_dim"] = text_cfg["hidden_size"]
        components["text_encoder"] = ["transformers", "Qwen2VLForConditionalGeneration"]
        components["tokenizer"] = ["transformers", "Qwen2Tokenizer"]
    tcfg.update(transformer or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        VideoTransformer.from_config(tcfg).save_pretrained(folder / "transformer")
        VideoVAE.from_config(vae_cfg).save_pretrained(folder / "vae")
    _write_json(
        folder / "scheduler" / "scheduler_config.json", {**OFFICIAL_SCHEDULER_CONFIG, **(scheduler or {})}
    )
    _write_json(
        folder / "model_index.json",
        {"_class_name": PIPELINE_CLASS[model_type], "_diffusers_version": "0.32.0", **components},
    )
    return folder
