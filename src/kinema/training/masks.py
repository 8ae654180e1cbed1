"""Inpaint masks and the conditioning latents of the InP / Control / Camera models.

Mask convention (as EasyAnimate and the inference pipelines): ``1 = generate``, ``0 = keep``. The
masked video is the video where kept and ``-1`` (black) where generated. The InP model's extra input is

    inpaint_latents = cat[ resize_mask(1 - mask) * scaling_factor,         1 channel
                           VAE(masked video).mode() * scaling_factor ]     16 channels

where ``resize_mask`` resizes frame 0 alone to latent frame 0 and the other frames to the remaining
latent frames (trilinear, ``align_corners=False``), exactly like the pipelines do at inference. A fully
masked sample (nothing kept) is T2V: its inpaint latents are all zeros, as the pipeline passes for T2V.

Control models take ``cat[control latents (16), reference latents (16)]``: the control video's VAE
latents, and the reference image's latents in latent frame 0 of an otherwise zero tensor (zeros when
there is no reference). Camera models take ``cat[Plücker latents x6 (6), reference latents (16)]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TEMPORAL_KINDS = ("first_frame", "first_last", "first_span", "span")


def choose_mask_kind(probabilities: dict[str, float], rng: np.random.Generator) -> str:
    kinds = [k for k, p in probabilities.items() if p > 0]
    p = np.array([probabilities[k] for k in kinds], dtype=np.float64)
    return kinds[int(rng.choice(len(kinds), p=p / p.sum()))]


def _box(rng: np.random.Generator, height: int, width: int, centred: bool) -> tuple[slice, slice]:
    bh = int(rng.integers(max(1, height // 4), max(2, height * 3 // 4) + 1))
    bw = int(rng.integers(max(1, width // 4), max(2, width * 3 // 4) + 1))
    if centred:
        top, left = (height - bh) // 2, (width - bw) // 2
    else:
        top, left = int(rng.integers(0, height - bh + 1)), int(rng.integers(0, width - bw + 1))
    return slice(top, top + bh), slice(left, left + bw)


def random_inpaint_mask(
    kind: str, frames: int, height: int, width: int, rng: np.random.Generator
) -> torch.Tensor:
    """A (1, F, H, W) float mask of the given kind; 1 = generate, 0 = keep.

    Kinds: ``full`` (generate everything: T2V), ``first_frame`` (I2V), ``first_last`` (start and end
    frames kept), ``first_span`` (the first few frames kept: video continuation), ``span`` (a random span
    of frames generated, the rest kept), ``box`` (a centred box generated in every frame), ``random_box``
    (a random box over a random frame span) and ``random`` (random pixels). For a single frame the
    temporal kinds fall back to ``box``.
    """
    mask = torch.zeros(1, frames, height, width)
    if frames == 1 and kind in TEMPORAL_KINDS:
        kind = "box"
    if kind == "full":
        mask[:] = 1
    elif kind == "first_frame":
        mask[:, 1:] = 1
    elif kind == "first_last":
        mask[:, 1:-1] = 1
    elif kind == "first_span":
        keep = int(rng.integers(1, max(2, frames // 3) + 1))
        mask[:, keep:] = 1
    elif kind == "span":
        start = int(rng.integers(0, frames))
        end = int(rng.integers(start + 1, frames + 1))
        mask[:, start:end] = 1
    elif kind == "box":
        ys, xs = _box(rng, height, width, centred=True)
        mask[:, :, ys, xs] = 1
    elif kind == "random_box":
        ys, xs = _box(rng, height, width, centred=False)
        start = int(rng.integers(0, frames))
        mask[:, start:, ys, xs] = 1
    elif kind == "random":
        mask = torch.from_numpy((rng.random((1, frames, height, width)) < 0.5).astype(np.float32))
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    return mask


def resize_mask(mask: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """Resize a (B, C, F, H, W) mask to the latent grid (frames, h, w) of ``latent_shape`` (B, C', f, h, w).

    Frame 0 alone goes to latent frame 0, the other frames to the remaining latent frames (trilinear,
    ``align_corners=False``): the reference's ``resize_mask(..., process_first_frame_only=True)``.
    """
    f, h, w = latent_shape[-3:]
    first = F.interpolate(mask[:, :, :1], size=(1, h, w), mode="trilinear", align_corners=False)
    if f == 1:
        return first
    rest = F.interpolate(mask[:, :, 1:], size=(f - 1, h, w), mode="trilinear", align_corners=False)
    return torch.cat([first, rest], dim=2)


def masked_video(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Video (B, 3, F, H, W) where kept (mask < 0.5), -1 where generated, like the inference pipeline."""
    generate = (mask > 0.5).expand_as(video)
    return torch.where(generate, torch.full_like(video, -1.0), video)


def add_reference_noise(video: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Noise augmentation of the kept pixels: ``video + sigma * noise`` except where the video is -1."""
    noise = noise * sigmas.view(-1, 1, 1, 1, 1).to(video.dtype)
    return video + torch.where(video == -1, torch.zeros_like(noise), noise)


def inpaint_latents(mask: torch.Tensor, masked_latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """cat[resize(1 - mask) * scaling, masked_latents] with zeros for fully masked (T2V) samples.

    ``mask`` is (B, 1, F, H, W) in pixels, ``masked_latents`` the scaled VAE mode of the masked video.
    """
    mask_latents = resize_mask(1 - mask, masked_latents.shape).to(masked_latents.dtype) * scaling_factor
    out = torch.cat([mask_latents, masked_latents], dim=1)
    t2v = (mask > 0.5).flatten(1).all(dim=1)
    return torch.where(t2v.view(-1, 1, 1, 1, 1), torch.zeros_like(out), out)


def reference_latents(first_frame_latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """Reference image latents (B, C, 1, h, w) in latent frame 0 of a zero (B, C, latent_frames, h, w)."""
    b, c, _, h, w = first_frame_latents.shape
    out = first_frame_latents.new_zeros(b, c, latent_frames, h, w)
    out[:, :, :1] = first_frame_latents
    return out
