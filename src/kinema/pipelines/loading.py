"""Loading diffusers-format EasyAnimate V5.1 folders, recognising the model type, and merging LoRAs.

A model folder is what users download (EasyAnimateV5.1-7b/12b-zh, -InP, -Control, -Control-Camera)::

    model_index.json  transformer/  vae/  text_encoder/  tokenizer/  scheduler/

The model type follows from the transformer's ``in_channels`` and the VAE's latent channels L (16):
T2V = L, InP = L + 1 (mask) + L (masked video), Control = L + L (control video) + L (reference),
Camera = L + 6 (Plücker) + L (reference).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kinema.sizes import model_default_frames

MODEL_TYPES = ("t2v", "inp", "control", "camera")
MODEL_TYPE_NAMES = {
    "t2v": "text-to-video (T2V)",
    "inp": "image/video inpainting (InP)",
    "control": "control video (Control)",
    "camera": "camera control (Control-Camera)",
}
PLUCKER_CHANNELS = 6
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


def model_type_from_channels(in_channels: int, latent_channels: int = 16) -> str:
    """'t2v' | 'inp' | 'control' | 'camera' from the transformer's input width; ValueError otherwise."""
    table = {
        latent_channels: "t2v",
        2 * latent_channels + 1: "inp",
        3 * latent_channels: "control",
        2 * latent_channels + PLUCKER_CHANNELS: "camera",
    }
    if in_channels not in table:
        known = ", ".join(f"{c} ({t})" for c, t in table.items())
        raise ValueError(
            f"transformer in_channels={in_channels} matches no EasyAnimate V5.1 model type for "
            f"{latent_channels}-channel latents; known: {known}"
        )
    return table[in_channels]


def resolve_dtype(torch_dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``None``/"auto" -> bf16 on GPUs that support it, fp32 otherwise; fp16 is refused on CPU."""
    if isinstance(torch_dtype, str):
        names = {"auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16}
        names.update({"bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16})
        if torch_dtype not in names:
            raise ValueError(f"dtype {torch_dtype!r}: choose auto, float32, bfloat16 or float16")
        torch_dtype = names[torch_dtype]
    if torch_dtype is None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if torch_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype {torch_dtype}: choose float32, bfloat16 or float16")
    if torch_dtype == torch.float16 and device.type == "cpu":
        raise ValueError(
            "float16 on CPU runs matmuls at ~0.4 GFLOP/s (hours per step): use bfloat16 or float32 on CPU"
        )
    return torch_dtype


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---- folder checks (no weights are read) --------------------------------------------------------------


def check_model_folder(
    path: str | os.PathLike,
    *,
    transformer: str | os.PathLike | None = None,
    vae: str | os.PathLike | None = None,
    text_encoder: str | os.PathLike | bool | None = None,
) -> dict[str, Any]:
    """Check a pipeline folder and component overrides; return the component folders and configs.

    Raises FileNotFoundError naming the first missing folder/file and ValueError for a folder of the
    wrong kind. Nothing heavy is read: only JSON configs.
    """
    from kinema.models import VideoTransformer, VideoVAE

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder '{root}' does not exist (kinema never downloads weights)")
    index_file = root / "model_index.json"
    if not index_file.is_file():
        hint = ""
        if (root / "config.json").is_file():
            hint = " It looks like a single component folder: pass the pipeline folder above it."
        raise FileNotFoundError(
            f"'{root}' is not a diffusers pipeline folder: model_index.json is missing.{hint}"
        )
    try:
        model_index = json.loads(index_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"'{index_file}' is not valid JSON: {e}") from e
    model_default_frames(model_index, str(index_file))  # checked before any weights are read

    folders: dict[str, Path | None] = {
        "transformer": Path(transformer) if transformer else root / "transformer",
        "vae": Path(vae) if vae else root / "vae",
        "scheduler": root / "scheduler",
    }
    if text_encoder is False:
        folders["text_encoder"] = folders["tokenizer"] = None
    elif text_encoder not in (None, True):
        te = Path(text_encoder)
        # An override may be a pipeline folder (text_encoder/ + tokenizer/) or a Qwen2-VL folder.
        folders["text_encoder"] = te / "text_encoder" if (te / "text_encoder").is_dir() else te
        folders["tokenizer"] = te / "tokenizer" if (te / "tokenizer").is_dir() else te
    else:
        folders["text_encoder"], folders["tokenizer"] = root / "text_encoder", root / "tokenizer"
    for name, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise FileNotFoundError(
                f"missing component: the {name} folder '{folder}' does not exist; an EasyAnimate V5.1 "
                f"folder has {', '.join(c + '/' for c in COMPONENTS)} and model_index.json"
            )
    scheduler_file = folders["scheduler"] / "scheduler_config.json"
    if not scheduler_file.is_file():
        raise FileNotFoundError(f"missing component: '{scheduler_file}' does not exist")
    try:
        scheduler_config = json.loads(scheduler_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"'{scheduler_file}' is not valid JSON: {e}") from e

    transformer_config = VideoTransformer.load_config(folders["transformer"])
    vae_config = VideoVAE.load_config(folders["vae"])
    model_type = model_type_from_channels(transformer_config.in_channels, vae_config.latent_channels)
    if transformer_config.out_channels not in (vae_config.latent_channels, 2 * vae_config.latent_channels):
        raise ValueError(
            f"transformer out_channels={transformer_config.out_channels} does not fit the VAE's "
            f"{vae_config.latent_channels} latent channels: are '{folders['transformer']}' and "
            f"'{folders['vae']}' from the same model?"
        )
    if model_type == "inp" and not transformer_config.resize_inpaint_mask_directly:
        raise ValueError(
            "resize_inpaint_mask_directly=false (a VAE-encoded 16-channel mask) is not supported: every "
            "V5.1 InP checkpoint resizes the mask directly"
        )
    return {
        "root": root,
        "model_index": model_index,
        "folders": folders,
        "scheduler_config": scheduler_config,
        "transformer_config": transformer_config,
        "vae_config": vae_config,
        "model_type": model_type,
    }


# ---- LoRA ---------------------------------------------------------------------------------------------

_LORA_KEY = re.compile(r"^(?:transformer\.)?(?P<module>.+?)\.(?P<kind>lora_A|lora_B)(?:\.default)?\.weight$")
_ALPHA_KEY = re.compile(r"^(?:transformer\.)?(?P<module>.+?)\.alpha$")


def read_lora(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """Read a diffusers/peft-style LoRA safetensors file: ``{module: {"A", "B"[, "alpha"]}}``.

    Keys are ``transformer.<module>.lora_A.weight`` (rank x in), ``transformer.<module>.lora_B.weight``
    (out x rank) and optionally ``transformer.<module>.alpha``. The ``transformer.`` prefix may be absent.
    alpha comes from that key, else from the file's ``lora_adapter_metadata`` (the peft LoraConfig that
    diffusers' ``save_lora_weights`` and kinema's trainer write, key ``transformer.lora_alpha``), else it
    equals the rank (scale 1, diffusers' default); the merge scale is alpha / rank.
    """
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"LoRA file '{file}' does not exist")
    if file.suffix != ".safetensors":
        raise ValueError(f"LoRA file '{file}': only .safetensors LoRAs are loaded (pickle can run code)")
    modules: dict[str, dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            file_alpha = _metadata_alpha(f.metadata() or {}, file)
            for key in f.keys():
                if key.startswith(("text_encoder.", "text_encoder_2.")):
                    raise ValueError(
                        f"LoRA '{file}': key '{key}' targets the text encoder; only transformer LoRAs are supported"
                    )
                if m := _LORA_KEY.match(key):
                    modules.setdefault(m["module"], {})[m["kind"][-1]] = f.get_tensor(key)
                elif m := _ALPHA_KEY.match(key):
                    modules.setdefault(m["module"], {})["alpha"] = f.get_tensor(key)
                else:
                    raise ValueError(
                        f"LoRA '{file}': key '{key}' is not of the form transformer.<module>.lora_A.weight / "
                        "lora_B.weight / alpha (diffusers' load_lora_weights format)"
                    )
    except SafetensorError as e:
        raise ValueError(f"LoRA file '{file}' is not a readable safetensors file: {e}") from e
    for module, parts in modules.items():
        if "A" not in parts or "B" not in parts:
            raise ValueError(f"LoRA '{file}': module '{module}' has only one of lora_A / lora_B")
        if "alpha" not in parts and file_alpha is not None:
            parts["alpha"] = torch.tensor(file_alpha)
    if not modules:
        raise ValueError(f"LoRA file '{file}' holds no LoRA weights")
    return modules


def _metadata_alpha(metadata: dict[str, str], file: Path) -> float | None:
    """lora_alpha from diffusers' ``lora_adapter_metadata`` (a JSON peft LoraConfig), if present."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"LoRA '{file}': lora_adapter_metadata is not valid JSON ({e})") from e
    alpha = config.get("transformer.lora_alpha", config.get("lora_alpha"))
    return None if alpha is None else float(alpha)


def merge_lora(model: nn.Module, lora: dict[str, dict[str, torch.Tensor]], weight: float = 1.0) -> list[str]:
    """Add ``weight * scale * B @ A`` to each targeted Linear's weight in place; returns the modules."""
    merged = []
    for name, parts in sorted(lora.items()):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"LoRA targets '{name}', which is not a module of the transformer") from None
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"LoRA targets '{name}', a {type(module).__name__}; only Linear layers are supported"
            )
        a, b = parts["A"].float(), parts["B"].float()
        rank = a.shape[0]
        if a.shape != (rank, module.in_features) or b.shape != (module.out_features, rank):
            raise ValueError(
                f"LoRA for '{name}': lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit a Linear "
                f"{module.in_features} -> {module.out_features}"
            )
        scale = float(parts["alpha"]) / rank if "alpha" in parts else 1.0
        with torch.no_grad():
            delta = (b @ a) * (scale * weight)
            module.weight.copy_(
                (module.weight.float() + delta.to(module.weight.device)).to(module.weight.dtype)
            )
        merged.append(name)
    return merged


# ---- the loader -------------------------------------------------------------------------------------

_TOKENIZERS: dict[str, Any] = {}


def _cached_tokenizer(folder: Path):
    """Load a tokenizer folder once per process (keyed by its files' content; ~4 s for Qwen2-VL's)."""
    import hashlib

    from kinema.text import load_tokenizer

    digest = hashlib.sha1()
    for file in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    key = digest.hexdigest()
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(folder)
    return _TOKENIZERS[key]


def load_pipeline(
    path: str | os.PathLike,
    *,
    transformer: str | os.PathLike | None = None,
    vae: str | os.PathLike | None = None,
    text_encoder: str | os.PathLike | bool | None = None,
    lora: str | os.PathLike | None = None,
    lora_weight: float = 1.0,
    torch_dtype: torch.dtype | str | None = None,
    memory_mode: str = "auto",
    device: str | torch.device | None = None,
):
    """Load an EasyAnimate V5.1 diffusers-format folder into one :class:`VideoPipeline`.

    ``transformer``/``vae`` replace a component with another folder; ``text_encoder`` may be another
    folder, or ``False`` to load none (then pass ``prompt_embeds``). ``lora`` merges a LoRA with
    ``lora_weight``. ``torch_dtype`` None -> bf16 on capable GPUs, fp32 on CPU. Every folder and config
    is checked before any weight is read.
    """
    from kinema.models import VideoTransformer, VideoVAE

    from .memory import MEMORY_MODES
    from .pipeline import VideoPipeline

    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory_mode {memory_mode!r}: choose one of {', '.join(MEMORY_MODES)}")
    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_dtype(torch_dtype, device)
    info = check_model_folder(path, transformer=transformer, vae=vae, text_encoder=text_encoder)
    lora_state = read_lora(lora) if lora else None  # read before the big weights: fail early

    folders = info["folders"]
    # Only modes that keep everything on the device load straight onto it; with offloading (or "auto",
    # which decides per request) weights stay on the CPU until the pipeline places them.
    load_device = device if memory_mode in ("none", "fp8") else "cpu"
    model = VideoTransformer.from_pretrained(folders["transformer"], torch_dtype=dtype, device="cpu")
    if lora_state:
        merge_lora(model, lora_state, lora_weight)
    vae_model = VideoVAE.from_pretrained(folders["vae"], torch_dtype=dtype, device=load_device)
    encoder = None
    if folders["text_encoder"] is not None:
        from kinema.text import PromptEncoder

        tokenizer = _cached_tokenizer(folders["tokenizer"])
        encoder = PromptEncoder.from_pretrained(
            folders["text_encoder"], tokenizer=tokenizer, dtype=dtype, device=load_device
        )
    pipe = VideoPipeline(
        transformer=model,
        vae=vae_model,
        text_encoder=encoder,
        scheduler_config=info["scheduler_config"],
        device=device,
        dtype=dtype,
        memory_mode=memory_mode,
        model_path=str(info["root"]),
        model_index=info["model_index"],
    )
    pipe.lora = {"path": str(lora), "weight": lora_weight} if lora else None
    return pipe
