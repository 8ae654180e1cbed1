"""Preview videos during training.

:func:`preview_video` uses kinema's generation pipeline (``kinema.pipelines.VideoPipeline``, the code
behind ``kinema generate``) when it is importable, so previews look exactly like later generations;
otherwise :func:`sample_preview`, a minimal flow-matching Euler sampler with classifier-free guidance.
Both are prompt-only: InP models take their T2V path, Control/Camera models run without control.
Sigmas of the fallback follow FlowMatchEulerDiscreteScheduler with dynamic shifting at ``mu = 1`` as the
V5.1 pipelines use it: ``sigma' = e / (e + 1/sigma - 1)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kinema.videoio import tensor_to_frames


def flow_sigmas(steps: int, mu: float = 1.0) -> torch.Tensor:
    """``steps + 1`` decreasing sigmas from 1 to 0 (the last step lands on the data)."""
    base = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)
    shifted = math.exp(mu) / (math.exp(mu) + (1 / base - 1))
    return torch.cat([shifted, torch.zeros(1, dtype=torch.float64)]).float()


@torch.no_grad()
def sample_preview(
    transformer,
    vae,
    text_encoder,
    prompt: str,
    *,
    height: int,
    width: int,
    frames: int,
    steps: int = 20,
    guidance: float = 6.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
):
    """uint8 frames (F, H, W, 3) for ``prompt``; models are used as they are (eval mode is set)."""
    was_training = transformer.training
    transformer.eval()
    try:
        embeds, _ = text_encoder.encode([prompt, ""], device=device)
        cond, uncond = embeds[:1].float(), embeds[1:].float()
        s = vae.config.spatial_compression
        t = vae.config.temporal_compression
        shape = (1, vae.config.latent_channels, (frames - 1) // t + 1, height // s, width // s)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=gen).to(device)
        extra = transformer.config.in_channels - shape[1]
        zeros = torch.zeros(1, extra, *shape[2:], device=device) if extra else None
        sigmas = flow_sigmas(steps)
        use_cfg = guidance > 1.0
        for i in range(steps):
            t_model = torch.full((2 if use_cfg else 1,), float(sigmas[i]) * 1000, device=device)
            latents = torch.cat([x, x]) if use_cfg else x
            text = torch.cat([cond, uncond]) if use_cfg else cond
            kwargs = {}
            if zeros is not None:
                cond_in = torch.cat([zeros, zeros]) if use_cfg else zeros
                # InP models take it as inpaint latents, Control/Camera as control latents: same place.
                kwargs["inpaint_latents"] = cond_in
            v = transformer(latents, t_model, text.to(device), **kwargs).float()
            if use_cfg:
                v_cond, v_uncond = v.chunk(2)
                v = v_uncond + guidance * (v_cond - v_uncond)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        video = vae.decode((x / vae.config.scaling_factor).to(vae.dtype), chunk_latent_frames=None)
        return tensor_to_frames(video.float())[0]
    finally:
        transformer.train(was_training)


def preview_video(transformer, vae, text_encoder, prompt: str, *, height: int, width: int, frames: int,
                  steps: int, guidance: float, seed: int, device) -> np.ndarray:  # fmt: skip
    """uint8 (F, H, W, 3): through ``VideoPipeline`` if available, else :func:`sample_preview`."""
    try:
        from kinema.pipelines import VideoPipeline
    except ImportError:
        VideoPipeline = None  # noqa: N806
    if VideoPipeline is None:
        return sample_preview(
            transformer, vae, text_encoder, prompt, height=height, width=width, frames=frames, steps=steps,
            guidance=guidance, seed=seed, device=device,
        )  # fmt: skip
    was_training = transformer.training
    try:
        pipe = VideoPipeline(transformer, vae, text_encoder, device=device, memory_mode="none")
        pipe.set_progress_bar_config(disable=True)
        out = pipe(
            prompt, num_frames=frames, height=height, width=width, num_inference_steps=steps,
            guidance_scale=guidance, seed=seed, output_type="np",
        )  # fmt: skip
        return out.frames[0]
    finally:
        transformer.train(was_training)
