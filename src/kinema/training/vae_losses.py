"""VAE training: reconstruction + KL losses, a pluggable perceptual term and a 3D PatchGAN discriminator.

    loss_G = l1 * |x - x^| + l2 * (x - x^)^2 + kl * KL(q(z|x) || N(0, I)) + perceptual * P(x, x^)
             + disc * (-D(x^))                                   (adversarial part only after disc_start)
    loss_D = mean(relu(1 - D(x))) + mean(relu(1 + D(x^)))        (hinge)

KL is summed over latent elements and averaged over the batch (the LDM/EasyAnimate convention, hence
the tiny default weight 1e-6). torchvision (and so LPIPS/VGG) is not a dependency: ``perceptual`` is
``none``, ``random_conv`` (a frozen random multi-scale conv net; a weak but dependency-free feature
distance) or ``"package.module:callable"`` returning ``callable(x, x_hat) -> scalar`` for a real one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAELossConfig


class VAETrainWrapper(nn.Module):
    """``forward(video, noise) -> (reconstruction, mean, logvar)`` so DDP/FSDP see one forward call."""

    def __init__(self, vae: nn.Module, sample_posterior: bool = True):
        super().__init__()
        self.vae = vae
        self.sample_posterior = sample_posterior

    def forward(self, video: torch.Tensor, noise: torch.Tensor):
        posterior = self.vae.encode(video)
        z = posterior.mean + posterior.std * noise if self.sample_posterior else posterior.mean
        return self.vae.decode(z), posterior.mean, posterior.logvar


class PatchDiscriminator3D(nn.Module):
    """A small 3D PatchGAN: strided (3, 4, 4) convs halving H and W, one logit per space-time patch.

    Works on images (one frame) as well as videos: time is padded, never strided.
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for i in range(num_layers):
            out = channels * 2 ** min(i, 3)
            layers.append(nn.Conv3d(width, out, kernel_size=(3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)))
            if i > 0:
                layers.append(nn.GroupNorm(min(32, out // 4), out))
            layers.append(nn.LeakyReLU(0.2))
            width = out
        layers.append(nn.Conv3d(width, 1, kernel_size=3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


class RandomConvFeatures(nn.Module):
    """Frozen random conv features at three scales, compared with L1 (per frame, video flattened)."""

    def __init__(self, channels: int = 16, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        convs = []
        width = 3
        for _ in range(3):
            conv = nn.Conv2d(width, channels, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (width * 9) ** 0.5)
                conv.bias.zero_()
            convs.append(conv)
            width = channels
        self.convs = nn.ModuleList(convs)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        a = x.transpose(1, 2).flatten(0, 1)  # (B*F, 3, H, W)
        b = x_hat.transpose(1, 2).flatten(0, 1)
        loss = x.new_zeros(())
        for conv in self.convs:
            a, b = F.leaky_relu(conv(a), 0.2), F.leaky_relu(conv(b), 0.2)
            loss = loss + (a - b).abs().mean()
        return loss


def build_perceptual(spec: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    if spec == "none":
        return None
    if spec == "random_conv":
        return RandomConvFeatures()
    return import_callable(spec, "vae_loss.perceptual")


def import_callable(spec: str, field: str) -> Callable:
    """``"package.module:name"`` -> the object (a class is instantiated); ValueError naming ``field``."""
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{field}: cannot import {spec!r}: {e}") from e
    return obj() if isinstance(obj, type) else obj


def reconstruction_losses(
    video: torch.Tensor,
    recon: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    frame_mask: torch.Tensor,
    weights: torch.Tensor,
    config: VAELossConfig,
    perceptual: Callable | None,
) -> dict[str, torch.Tensor]:
    """The non-adversarial generator losses, each a scalar; ``total`` is their weighted sum.

    ``frame_mask`` (B, F) excludes zero-padded frames; ``weights`` (B,) excludes failed samples.
    """
    mask = frame_mask.to(video.device)[:, None, :, None, None] * weights.to(video.device).view(-1, 1, 1, 1, 1)
    count = (mask.expand_as(video)).sum().clamp(min=1)
    diff = recon.float() - video.float()
    l1 = (diff.abs() * mask).sum() / count
    l2 = (diff.pow(2) * mask).sum() / count
    kl_per_sample = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).flatten(1).sum(
        1
    )
    kl = (kl_per_sample * weights.to(kl_per_sample.device)).mean()
    out = {"l1": l1, "l2": l2, "kl": kl}
    total = config.l1_weight * l1 + config.l2_weight * l2 + config.kl_weight * kl
    if perceptual is not None:
        out["perceptual"] = perceptual(video.float() * mask, recon.float() * mask)
        total = total + config.perceptual_weight * out["perceptual"]
    out["total"] = total
    return out
