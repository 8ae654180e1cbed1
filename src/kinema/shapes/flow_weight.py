"""Object-region emphasis for the flow-matching loss on ShapesWorld (the trainer's ``flow.loss_weight``).

An object covers ~4 % of a ShapesWorld frame, one or two cells of the 8x8 latent grid, so with a plain MSE
the transformer spends its first thousands of steps on backgrounds and camera motion (the T2V run learned
the camera direction to 87-100 % while colour stayed near 50 % and motion at 0 %). The clip's object
tracks (ground truth in the metadata) mark the latent cells the objects pass through; their error
counts ``weight`` times::

    [flow]
    loss_weight = "kinema.shapes.flow_weight:ObjectRegionWeight"
"""

from __future__ import annotations

from typing import Any

import torch


class ObjectRegionWeight:
    """``(batch, latent_shape) -> (B, 1, F, h, w)``: ``weight`` near an object's track, 1 elsewhere."""

    def __init__(self, weight: float = 8.0, radius_px: float = 10.0, temporal: int = 4):
        self.weight, self.radius_px, self.temporal = weight, radius_px, temporal

    def __call__(self, batch: dict[str, Any], latent_shape: tuple[int, ...]) -> torch.Tensor:
        b, _, f, h, w = latent_shape
        plan = batch["plan"]
        out = torch.ones(b, 1, f, h, w)
        cell_y = (torch.arange(h, dtype=torch.float32) + 0.5) * plan.height / h  # cell centres, px
        cell_x = (torch.arange(w, dtype=torch.float32) + 0.5) * plan.width / w
        for i, extra in enumerate(batch["extras"]):
            tracks = extra.get("tracks")
            if not tracks:
                continue
            sx = plan.width / float(extra.get("width") or plan.width)
            sy = plan.height / float(extra.get("height") or plan.height)
            for k in range(f):
                # latent frame 0 codes video frame 0, latent frame k >= 1 frames 4k-3 .. 4k
                frames = (
                    [0] if k == 0 else range(self.temporal * k - self.temporal + 1, self.temporal * k + 1)
                )
                near = torch.zeros(h, w, dtype=torch.bool)
                for track in tracks:
                    for t in frames:
                        if t >= len(track):
                            continue
                        x, y = float(track[t][0]) * sx, float(track[t][1]) * sy
                        d2 = (cell_y[:, None] - y) ** 2 + (cell_x[None, :] - x) ** 2
                        near |= d2 <= self.radius_px**2
                out[i, 0, k][near] = self.weight
        return out
