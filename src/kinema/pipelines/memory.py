"""Memory modes: offloading, fp8 weight storage, and the estimate behind ``memory_mode="auto"``.

Modes (``VideoPipeline.memory_mode``):

* ``none``: every component lives on the execution device.
* ``model_offload``: components live on the CPU and move to the device only while they run (text
  encoder, then transformer, then VAE). On a CPU-only machine this is a no-op.
* ``sequential_offload``: like ``model_offload``, but the transformer and the text encoder move one
  block (decoder layer) at a time, through forward hooks; their small stem/head layers stay resident.
* ``fp8``: the transformer's Linear weights are stored as float8_e4m3fn with one fp32 scale per output
  row (``FP8Linear``) and upcast per call to the compute dtype (bf16/fp32): ~1 byte per weight instead
  of 2 (bf16) or 4 (fp32). The text projection stays in the compute dtype.
* ``fp8_offload``: ``fp8`` plus ``model_offload``.

VAE tiling (``VideoVAE.enable_tiling``) is independent; ``auto`` turns it on when the estimate says the
untiled decode would not fit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MEMORY_MODES = ("auto", "none", "model_offload", "sequential_offload", "fp8", "fp8_offload")
FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn
DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}

# Calibration of the activation terms (bytes per token per model width, and per VAE output pixel per
# channel of the widest decoder stage); measured on CPU, see docs/pipelines.md "Memory estimate".
TRANSFORMER_ACT_BYTES_PER_TOKEN_DIM = {4: 48.0, 2: 32.0}
VAE_LIVE_TENSORS = 6.0  # full-resolution activations alive at once in the last decoder stage
VAE_FRAMES_PER_CHUNK = 8  # decode runs 2 latent frames -> up to 8 video frames at a time
RUNTIME_OVERHEAD = 0.6e9  # python + torch + libraries, resident before any model is loaded
SAFETY = 0.85  # use at most this fraction of the available memory


# ---- fp8 weight storage ---------------------------------------------------------------------------


class FP8Linear(nn.Module):
    """A Linear whose weight is stored in float8_e4m3fn (per-row fp32 scale) and upcast per call."""

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / FP8_MAX
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_fp8", (weight / scale).to(FP8_DTYPE))
        self.register_buffer("weight_scale", scale)
        self.bias = (
            nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
            if linear.bias is not None
            else None
        )
        self.compute_dtype = compute_dtype

    def dequantized_weight(self) -> torch.Tensor:
        return (self.weight_fp8.to(torch.float32) * self.weight_scale).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.compute_dtype), self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, storage=float8_e4m3fn, compute={self.compute_dtype}"


# The text projection's Linear is read as ``.weight.dtype`` by the transformer: keep it unquantised.
FP8_SKIP_PREFIXES = ("text_proj",)


def convert_linears_to_fp8(model: nn.Module, compute_dtype: torch.dtype) -> int:
    """Replace every nn.Linear (except FP8_SKIP_PREFIXES) in place; returns how many were converted."""
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.startswith(FP8_SKIP_PREFIXES)
    ]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FP8Linear(getattr(parent, child), compute_dtype))
    return len(targets)


# ---- offloading --------------------------------------------------------------------------------------


@contextlib.contextmanager
def on_device(module: nn.Module | None, device: torch.device, offload: bool) -> Iterator[None]:
    """Run a block with ``module`` on ``device``; with ``offload`` move it back to the CPU afterwards."""
    if module is None or not offload or device.type == "cpu":
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()


def attach_sequential_offload(blocks: list[nn.Module], device: torch.device) -> list:
    """Forward hooks that move each block to ``device`` just before it runs and back to the CPU after.

    On a CPU device the moves are no-ops, but the hooks still run (so the code path is exercised).
    Returns the hook handles (call ``.remove()`` on each to detach).
    """
    handles = []
    for block in blocks:

        def load(module, args, kwargs=None):
            module.to(device)

        def unload(module, args, output):
            module.to("cpu")
            return output

        handles.append(block.register_forward_pre_hook(load))
        handles.append(block.register_forward_hook(unload))
    return handles


# ---- the estimate -----------------------------------------------------------------------------------


def safetensors_numel(folder: Path, skip_prefixes: tuple[str, ...] = ()) -> int:
    """Number of weights in a folder's safetensors files, read from their headers (no tensor is loaded)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        for key, info in header.items():
            if key == "__metadata__" or key.startswith(skip_prefixes):
                continue
            total += math.prod(info["shape"])
    return total


@dataclass
class MemoryEstimate:
    """Peak-memory parts in bytes for one generation (see ``estimate_memory``)."""

    transformer_weights: float
    text_encoder_weights: float
    vae_weights: float
    transformer_activations: float
    vae_activations: float
    vae_activations_tiled: float
    text_activations: float
    overhead: float
    transformer_weights_fp8: float = 0.0

    def peak(self, mode: str, vae_tiling: bool, device_type: str = "cpu") -> float:
        """Estimated peak on the device for a memory mode (CPU: the process's peak RSS)."""
        weights = {
            "t": self.transformer_weights_fp8 if mode.startswith("fp8") else self.transformer_weights,
            "te": self.text_encoder_weights,
            "v": self.vae_weights,
        }
        vae_act = self.vae_activations_tiled if vae_tiling else self.vae_activations
        overhead = self.overhead if device_type == "cpu" else 0.0
        stages = {
            "te": self.text_activations,
            "t": self.transformer_activations,
            "v": vae_act,
        }
        if device_type == "cpu" or mode in ("none", "fp8"):
            # Everything resident at once; stages run one after the other.
            return overhead + sum(weights.values()) + max(stages.values())
        if mode == "sequential_offload":
            block = 0.1 * weights["t"]  # stem/head + one block resident (a generous bound)
            return max(block + stages["t"], 0.1 * weights["te"] + stages["te"], weights["v"] + stages["v"])
        # model offload: one component at a time
        return max(weights[name] + stages[name] for name in weights)


def estimate_memory(
    *,
    transformer_params: int,
    transformer_width: int,
    text_encoder_params: int,
    vae_params: int,
    vae_first_width: int,
    height: int,
    width: int,
    frames: int,
    text_tokens: int = 256,
    cfg: bool = True,
    dtype_bytes: int = 4,
    vae_tile: int = 256,
    extra_rows: int = 0,
) -> MemoryEstimate:
    """Peak memory of one generation, by parts (bytes). The formula (documented in docs/pipelines.md):

    * weights: params x bytes per param (fp8: 1 byte + a 4-byte scale per row, ~1.0 x params);
    * transformer: ``B * (S_video + S_text) * width * k`` with B = 2 under CFG, plus ``extra_rows``
      (camera guidance's still-camera row), ``S_video`` = latent frames x (H/16) x (W/16) and k = 48
      bytes (fp32) / 32 (bf16): fp32 residual streams, q/k/v, the 4x-wide feed-forward hidden state
      and its activation;
    * VAE decode: ``6 * 8 * H * W * C0 * bytes`` (6 live full-resolution tensors, 8 frames per
      2-latent-frame chunk, C0 = block_out_channels[0]) plus the output video ``F * 3 * H * W * 4``;
      tiled, H and W are replaced by the tile size;
    * text encoder: small next to its weights (256 tokens);
    * overhead: ~0.6 GB of Python/torch on CPU.
    """
    lat_frames = (frames - 1) // 4 + 1
    video_tokens = lat_frames * (height // 16) * (width // 16)
    batch = (2 if cfg else 1) + extra_rows
    act_k = TRANSFORMER_ACT_BYTES_PER_TOKEN_DIM.get(dtype_bytes, 48.0)
    transformer_act = batch * (video_tokens + text_tokens) * transformer_width * act_k
    out_video = frames * 3 * height * width * 4
    per_pixel = VAE_LIVE_TENSORS * VAE_FRAMES_PER_CHUNK * vae_first_width * dtype_bytes
    vae_act = per_pixel * height * width + out_video
    tile = min(vae_tile, height) * min(vae_tile, width)
    vae_act_tiled = per_pixel * tile + out_video * 2  # tiled decode also holds the blending weights
    return MemoryEstimate(
        transformer_weights=transformer_params * dtype_bytes,
        transformer_weights_fp8=transformer_params * 1.0,
        text_encoder_weights=text_encoder_params * dtype_bytes,
        vae_weights=vae_params * dtype_bytes,
        transformer_activations=transformer_act,
        vae_activations=vae_act,
        vae_activations_tiled=vae_act_tiled,
        text_activations=batch * text_tokens * 4096 * 4 * 8,
        overhead=RUNTIME_OVERHEAD,
    )


def available_memory(device: torch.device) -> float:
    """Free bytes on the device (CUDA: free memory; CPU: MemAvailable, else physical pages)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def choose_memory_mode(estimate: MemoryEstimate, available: float, device_type: str) -> tuple[str, bool]:
    """Cheapest (fastest) ``(mode, vae_tiling)`` whose estimated peak fits in SAFETY x ``available``.

    Order tried: none; none + VAE tiling; then on GPUs model_offload, fp8_offload, sequential_offload
    (each with tiling); on CPU fp8 (+ tiling). Raises ValueError when nothing fits.
    """
    budget = SAFETY * available
    candidates = [("none", False), ("none", True)]
    if device_type == "cpu":
        candidates += [("fp8", True)]
    else:
        candidates += [("model_offload", True), ("fp8_offload", True), ("sequential_offload", True)]
    for mode, tiling in candidates:
        if estimate.peak(mode, tiling, device_type) <= budget:
            return mode, tiling
    mode, tiling = candidates[-1]
    need = estimate.peak(mode, tiling, device_type)
    raise ValueError(
        f"this request needs about {need / 1e9:.1f} GB even with memory mode {mode} and VAE tiling, but only "
        f"{available / 1e9:.1f} GB is available on {device_type}: use fewer frames or a smaller size"
    )
