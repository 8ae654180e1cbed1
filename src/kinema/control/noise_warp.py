"""Initial noise that moves with the camera (noise warping, as in "Go-with-the-Flow", Burgert et al. 2025).

A flow-matching sampler draws every latent frame's noise independently, and in our ShapesWorld models the
faint background texture is decided late in sampling by that per-frame noise, so backgrounds come out still
whatever the camera input says (docs/shapesworld-model.md, "Session 12"). Warped noise ties the noise to
the world instead: latent frame k's noise is frame 0's noise field seen through the camera's screen motion
(``latent_plane_motion``), so texture drawn from the noise moves as the camera does. A model trained on
such noise (``model.camera_noise_warp_depth`` in the trainer) learns to keep that correspondence.

Every entry stays exactly standard normal: the noise field lives on a canvas ``upsample`` times finer than
the latent grid; a latent cell sums the ``upsample**2`` canvas values under it (after the motion) and is
divided by the square root of the sum of squared multiplicities (a zoom-in maps several sub-points to one
canvas value). Sub-cell motion therefore shifts the noise smoothly instead of in whole cells.
"""

from __future__ import annotations

import math

import torch


def warped_noise(
    motion: torch.Tensor,
    shape: tuple[int, int, int, int],
    generator: torch.Generator | None = None,
    upsample: int = 4,
    correlation: float = 1.0,
) -> torch.Tensor:
    """``(C, F, h, w)`` standard-normal noise whose frames follow ``motion`` (``(F, 3)``: scale, tx, ty in
    latent cells, mapping frame-0 positions to frame-k positions about the grid centre, as returned by
    ``control.camera.latent_plane_motion``).

    ``correlation`` < 1 mixes fresh noise into frames 1.. (``c * warped + sqrt(1 - c^2) * fresh``); at 1 a
    static camera gives the same noise in every frame."""
    channels, frames, height, width = shape
    motion = torch.as_tensor(motion, dtype=torch.float64)
    if motion.shape != (frames, 3):
        raise ValueError(
            f"motion must be ({frames}, 3) for {frames} latent frames, got {tuple(motion.shape)}"
        )
    if not bool((motion[:, 0] > 0).all()):
        raise ValueError("motion scales must be > 0")
    if upsample < 1:
        raise ValueError(f"upsample must be >= 1, got {upsample}")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}")
    u = upsample
    # Sub-point centres of every latent cell, in latent-cell units: (h, w, u*u) each.
    sub = (torch.arange(u, dtype=torch.float64) + 0.5) / u
    ys = (torch.arange(height, dtype=torch.float64)[:, None] + sub[None]).reshape(height, 1, u, 1)
    xs = (torch.arange(width, dtype=torch.float64)[:, None] + sub[None]).reshape(1, width, 1, u)
    ys, xs = torch.broadcast_tensors(ys, xs)
    ys, xs = ys.reshape(height, width, u * u), xs.reshape(height, width, u * u)
    cy, cx = height / 2, width / 2
    # Frame-0 position each sub-point shows in frame k: p - c = s (q - c) + t  =>  q = (p - c - t) / s + c.
    s, tx, ty = (motion[:, i].view(frames, 1, 1, 1) for i in range(3))
    qy = (ys[None] - cy - ty) / s + cy
    qx = (xs[None] - cx - tx) / s + cx
    iy, ix = torch.floor(qy * u).long(), torch.floor(qx * u).long()
    y0, x0 = int(iy.min()), int(ix.min())
    iy, ix = iy - y0, ix - x0
    canvas_w = int(ix.max()) + 1
    canvas = torch.randn(channels, int(iy.max()) + 1, canvas_w, generator=generator, dtype=torch.float32)
    flat = (iy * canvas_w + ix).view(frames * height * width, u * u)
    # sum over sub-points / sqrt(sum of squared multiplicities): exactly N(0, 1) per cell.
    pairs = (flat[:, :, None] == flat[:, None, :]).sum((1, 2)).to(torch.float32)
    values = canvas.flatten(1)[:, flat].sum(-1) / pairs.sqrt()  # (C, F*h*w)
    out = values.view(channels, frames, height, width)
    if correlation < 1.0 and frames > 1:
        fresh = torch.randn(channels, frames - 1, height, width, generator=generator)
        out[:, 1:] = correlation * out[:, 1:] + math.sqrt(1.0 - correlation**2) * fresh
    return out
