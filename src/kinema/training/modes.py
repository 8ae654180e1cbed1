"""Mode specs: what differs between T2V, I2V (InP), Control, Camera and VAE training.

The trainer is one loop; a mode only says what it trains, what the data loader must load, how many
extra input channels the transformer has and how to build the conditioning latents for a batch. Adding
a mode is a small class here, not a new training script.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from kinema.data import LoadOptions

from .config import RunConfig
from .masks import add_reference_noise, choose_mask_kind, inpaint_latents, masked_video, random_inpaint_mask
from .masks import reference_latents as place_reference
from .rng import SampleRandom


@dataclass
class StepContext:
    """What a mode may use to build its conditioning for one micro-batch (all latents already scaled)."""

    batch: dict[str, Any]
    rand: SampleRandom
    latents: torch.Tensor  # sampled clean latents (B, 16, f, h, w), x scaling_factor
    latent_mean: torch.Tensor  # posterior mean (= VAE mode), x scaling_factor
    encode_mode: Callable[[torch.Tensor], torch.Tensor]  # pixels -> VAE mode latents x scaling_factor
    control_latents: Callable[[], torch.Tensor]  # control video -> VAE mode latents x scaling_factor
    scaling_factor: float
    config: RunConfig
    stats: dict[str, float] = field(default_factory=dict)  # per-batch counters for the log
    camera_rope_depth: float | None = None  # the transformer's camera-aware RoPE depth (None: off)
    camera_noise_warp_depth: float | None = None  # camera-warped training noise at this depth (None: off)


class ModeSpec:
    name = "t2v"
    trains = "transformer"  # or "vae"
    extra_channels = 0  # transformer in_channels = 16 + extra_channels
    description = "text-to-video"
    needs_data = True  # False: the mode builds its own batches (reward mode: prompts)
    any_input_channels = False  # True: any V5.1 transformer type (16 / 33 / 48 / 38 input channels)

    def load_options(self, config: RunConfig) -> LoadOptions:
        return LoadOptions()

    def conditioning(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        return {}

    def noise(self, ctx: StepContext) -> torch.Tensor:
        """The flow-matching noise of the batch, shaped like ``ctx.latents`` (independent per element)."""
        return ctx.rand.randn("noise", tuple(ctx.latents.shape[1:]))


class T2VMode(ModeSpec):
    pass


class I2VMode(ModeSpec):
    name = "i2v"
    extra_channels = 17  # mask (1) + masked video latents (16)
    description = "image/video-to-video inpainting (InP): random masks, noise-augmented kept pixels"

    def load_options(self, config: RunConfig) -> LoadOptions:
        return LoadOptions(pixels_always=True)

    def conditioning(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = ctx.config.inpaint
        pixels = ctx.batch["pixels"]
        b, _, frames, height, width = pixels.shape
        masks = []
        for rng in ctx.rand.numpy("mask"):
            kind = choose_mask_kind(cfg.mask_probabilities, rng)
            ctx.stats[f"mask_{kind}"] = ctx.stats.get(f"mask_{kind}", 0) + 1
            masks.append(random_inpaint_mask(kind, frames, height, width, rng))
        mask = torch.stack(masks).to(pixels.device)
        video = masked_video(pixels, mask)
        if cfg.noise_aug_fixed is not None:
            sigmas = torch.full((b,), cfg.noise_aug_fixed)
        else:
            sigmas = torch.exp(
                cfg.noise_aug_log_mean + cfg.noise_aug_log_std * ctx.rand.randn("noise_aug_sigma", ())
            )
        noise = ctx.rand.randn("noise_aug", tuple(pixels.shape[1:]), device=pixels.device, dtype=pixels.dtype)
        video = add_reference_noise(video, sigmas.to(pixels.device), noise)
        # Fully masked (T2V) samples get all-zero inpaint latents (inpaint_latents), so their masked video
        # is never encoded: the VAE pass is most of an InP step, and `full` is a large share of the masks.
        keeps = (mask < 0.5).flatten(1).any(dim=1)
        masked = torch.zeros_like(ctx.latent_mean)
        if keeps.any():
            masked[keeps] = ctx.encode_mode(video[keeps]).to(masked.dtype)
        return {"inpaint_latents": inpaint_latents(mask, masked, ctx.scaling_factor).to(ctx.latents.dtype)}


def _dropout(ctx: StepContext, stream: str, p: float, device) -> torch.Tensor:
    """(B, 1, 1, 1, 1) keep factors: 0 with probability p per sample."""
    keep = (ctx.rand.rand(stream, ()) >= p).float()
    return keep.view(-1, 1, 1, 1, 1).to(device)


class ControlMode(ModeSpec):
    name = "control"
    extra_channels = 32  # control video latents (16) + reference latents (16)
    description = "control video (depth/pose/canny/trajectory...) + optional reference image"

    def load_options(self, config: RunConfig) -> LoadOptions:
        return LoadOptions(control=True)

    def conditioning(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = ctx.config.control
        device = ctx.latents.device
        control = ctx.control_latents() * _dropout(ctx, "control_drop", cfg.control_dropout, device)
        ref = place_reference(ctx.latent_mean[:, :, :1], ctx.latents.shape[2])
        ref = ref * _dropout(ctx, "reference_drop", cfg.reference_dropout, device)
        return {"control_latents": torch.cat([control, ref], dim=1).to(ctx.latents.dtype)}


class CameraMode(ModeSpec):
    name = "camera"
    extra_channels = 22  # Plücker x6 (6) + reference latents (16)
    description = "camera control from CameraCtrl pose files (Plücker embedding at the latent grid)"

    def load_options(self, config: RunConfig) -> LoadOptions:
        return LoadOptions(camera=True, pose_size=(config.control.pose_height, config.control.pose_width))

    def conditioning(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = ctx.config.control
        device = ctx.latents.device
        b, _, f, h, w = ctx.latents.shape
        camera = ctx.batch["camera"]
        camera = torch.zeros(b, 6, f, h, w) if camera is None else camera
        keep = _dropout(ctx, "control_drop", cfg.control_dropout, device)
        camera = camera.to(device) * keep
        ref = place_reference(ctx.latent_mean[:, :, :1], f)
        ref = ref * _dropout(ctx, "reference_drop", cfg.reference_dropout, device)
        out = {"control_latents": torch.cat([camera.to(ref.dtype), ref], dim=1).to(ctx.latents.dtype)}
        if ctx.camera_rope_depth is not None:
            out["camera_motion"] = self._motion(ctx, ctx.camera_rope_depth, keep.view(-1) > 0, f, h, w)
        return out

    def noise(self, ctx: StepContext) -> torch.Tensor:
        """Noise warped along each clip's camera (control.noise_warp) when the model trains that way; the
        true camera even where its input is dropped, since sampling warps the unconditional branch's noise
        too. Clips without poses get independent noise."""
        depth = ctx.camera_noise_warp_depth
        if depth is None:
            return super().noise(ctx)
        from kinema.control.noise_warp import warped_noise

        shape = tuple(ctx.latents.shape[1:])
        has_poses = torch.tensor([p is not None for p in self._poses(ctx)])
        motion = self._motion(ctx, depth, has_poses, shape[1], shape[2], shape[3])
        rows = [
            warped_noise(m, shape, g) if ok else torch.randn(shape, generator=g)
            for m, ok, g in zip(motion, has_poses, ctx.rand.generators("noise"), strict=True)
        ]
        return torch.stack(rows)

    @staticmethod
    def _poses(ctx: StepContext) -> list:
        return ctx.batch.get("camera_poses") or [None] * ctx.latents.shape[0]

    @classmethod
    def _motion(
        cls, ctx: StepContext, depth: float, use: torch.Tensor, f: int, h: int, w: int
    ) -> torch.Tensor:
        """(B, f, 3) background screen motion at ``depth`` (latent_plane_motion); identity where ``use`` is
        False or the clip has no poses."""
        from kinema.control.camera import latent_plane_motion

        plan, g = ctx.batch["plan"], ctx.config
        pose_size = (g.control.pose_height, g.control.pose_width)
        rows = []
        for i, poses in enumerate(cls._poses(ctx)):
            if poses is None or not use[i]:
                rows.append(torch.tensor([[1.0, 0.0, 0.0]]).expand(f, 3))
            else:
                rows.append(
                    latent_plane_motion(
                        poses,
                        plan.height,
                        plan.width,
                        depth,
                        f,
                        pose_size=pose_size,
                        spatial=plan.height // h,
                    )
                )
        return torch.stack(rows).to(ctx.latents.device)


class VAEMode(ModeSpec):
    name = "vae"
    trains = "vae"
    description = "VAE reconstruction training: L1 + L2 + KL (+ perceptual, + PatchGAN after disc_start)"

    def load_options(self, config: RunConfig) -> LoadOptions:
        return LoadOptions(pixels_always=True)


class RewardMode(ModeSpec):
    """Reward backpropagation (DRaFT-K / DRTune, ``training/reward.py``): prompts in, no video data.

    Any transformer type is accepted; InP / Control / Camera models sample their text-to-video path with zero
    conditioning latents, as the generation pipeline does.
    """

    name = "reward"
    description = "reward backpropagation through sampled trajectories (DRaFT-K, DRTune)"
    needs_data = False
    any_input_channels = True


MODES: dict[str, type[ModeSpec]] = {
    m.name: m for m in (T2VMode, I2VMode, ControlMode, CameraMode, VAEMode, RewardMode)
}


def get_mode(name: str) -> ModeSpec:
    try:
        return MODES[name]()
    except KeyError:
        raise ValueError(f"unknown training mode {name!r}; choose one of {', '.join(MODES)}") from None
