"""Rectified-flow (flow matching) training objective of EasyAnimate V5.1 / SD3.

    x_t    = (1 - sigma) * x + sigma * noise          (sigma = 0: data, 1: pure noise)
    target = noise - x                                (the velocity the Euler sampler integrates)
    model timestep = sigma * 1000                     (what FlowMatchEulerDiscreteScheduler feeds the DiT)

sigma is drawn per sample from one of SD3's densities: ``uniform``, ``logit_normal`` (sigmoid of a
normal with ``logit_mean``/``logit_std``: more weight on the middle of the path) or ``mode`` (the "mode
sampling with heavy tails" of SD3, ``mode_scale``). An optional ``shift`` (> 1 favours noisier sigmas)
applies ``shift * s / (1 + (shift - 1) * s)``, the same map as the scheduler's static shift.
"""

from __future__ import annotations

import math

import torch

from .config import FlowConfig
from .rng import SampleRandom

NUM_TRAIN_TIMESTEPS = 1000


def density_to_sigma(u: torch.Tensor, config: FlowConfig) -> torch.Tensor:
    """Map per-sample uniform draws ``u`` (or normals for logit_normal) to sigmas in (0, 1)."""
    if config.timestep_density == "uniform":
        sigma = u
    elif config.timestep_density == "logit_normal":
        sigma = torch.sigmoid(config.logit_mean + config.logit_std * u)
    elif config.timestep_density == "mode":
        sigma = 1 - u - config.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    else:
        raise ValueError(f"unknown timestep density {config.timestep_density!r}")
    if config.shift != 1.0:
        sigma = config.shift * sigma / (1 + (config.shift - 1) * sigma)
    return sigma.clamp(0.0, 1.0)


def sample_sigmas(rand: SampleRandom, config: FlowConfig) -> torch.Tensor:
    """One sigma per sample of the micro-batch, from each sample's own "timestep" stream."""
    if config.timestep_density == "logit_normal":
        u = rand.randn("timestep", ())
    else:
        u = rand.rand("timestep", ())
    return density_to_sigma(u, config)


def noisy_latents(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor):
    """``(x_t, target)`` for clean ``latents`` (B, C, F, h, w), ``noise`` like it, ``sigmas`` (B,)."""
    s = sigmas.to(latents.dtype).view(-1, *([1] * (latents.ndim - 1)))
    return (1 - s) * latents + s * noise, noise - latents


def latent_frame_mask(valid_frames: torch.Tensor, latent_frames: int, temporal: int = 4) -> torch.Tensor:
    """(B, F_lat) 1/0: latent frames made only of real (not zero-padded) video frames.

    Latent frame 0 codes video frame 0; latent frame k >= 1 codes frames 4k-3 .. 4k.
    """
    valid_latent = (valid_frames.clamp(min=1) - 1) // temporal + 1
    return (torch.arange(latent_frames)[None, :] < valid_latent[:, None]).float()


def masked_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    frame_mask: torch.Tensor,
    weights: torch.Tensor,
    element_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error per sample over its valid latent frames, then ``weights``-scaled batch mean.

    Returns ``(loss, per_sample)``. The batch mean divides by the batch size (not the weight sum), so a
    failed sample (weight 0) counts as zero and data-parallel gradient averaging equals one big batch.
    """
    err = (pred.float() - target.float()).pow(2)  # (B, C, F, h, w)
    if element_weight is not None:  # emphasis, not a mean: the denominator stays the element count
        err = err * element_weight.to(err.device, err.dtype)
    mask = frame_mask.to(err.device)[:, None, :, None, None]
    per_element = err * mask
    denom = (mask.expand_as(err)).flatten(1).sum(1).clamp(min=1)
    per_sample = per_element.flatten(1).sum(1) / denom
    return (per_sample * weights.to(err.device)).mean(), per_sample.detach()
