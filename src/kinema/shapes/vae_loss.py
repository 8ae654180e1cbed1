"""A foreground-aware reconstruction term for training the ShapesWorld VAE through the trainer's hook.

ShapesWorld frames are mostly a muted background; the objects cover ~4 % of the pixels. With a plain
pixel loss an autoencoder first learns to paint the background (~20 dB) and sees the shapes only as a
small residual. ``ForegroundL1`` adds an L1 averaged over *foreground* pixels only - pixels whose colour
is far from the frame's median colour (the background) - so the shapes weigh as much as the background
from the first step. Use it as the trainer's perceptual term::

    [vae_loss]
    perceptual = "kinema.shapes.vae_loss:ForegroundL1"
    perceptual_weight = 1.0

The trainer calls it as ``loss(video, reconstruction)`` with videos (B, 3, F, H, W) in [-1, 1] (padded
frames already zeroed, so they contribute nothing).
"""

from __future__ import annotations

import torch
from torch import nn


class ForegroundL1(nn.Module):
    """Mean |x - x^| over pixels whose max channel distance to the frame median exceeds ``threshold``."""

    def __init__(self, threshold: float = 0.12, dilate: int = 1):
        super().__init__()
        self.threshold = threshold
        self.dilate = dilate

    def forward(self, video: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        mask = foreground_mask(video, self.threshold, self.dilate)  # (B, 1, F, H, W)
        count = mask.sum() * video.shape[1]
        if count == 0:
            return video.new_zeros(())
        return ((recon.float() - video.float()).abs() * mask).sum() / count


@torch.no_grad()
def foreground_mask(video: torch.Tensor, threshold: float = 0.12, dilate: int = 1) -> torch.Tensor:
    """(B, 1, F, H, W) float mask of pixels that differ from their frame's median colour, dilated."""
    x = video.float()
    median = x.flatten(3).median(dim=-1).values[..., None, None]  # (B, C, F, 1, 1)
    mask = ((x - median).abs().amax(dim=1, keepdim=True) > threshold).float()
    if dilate > 0:
        b, _, f, h, w = mask.shape
        k = 2 * dilate + 1
        flat = mask.transpose(1, 2).reshape(b * f, 1, h, w)
        flat = torch.nn.functional.max_pool2d(flat, k, stride=1, padding=dilate)
        mask = flat.reshape(b, f, 1, h, w).transpose(1, 2)
    return mask
