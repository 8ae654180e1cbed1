"""Differentiable ShapesWorld rewards: does the video show the prompt's colours moving the prompt's way?

Each prompt is read with :func:`kinema.shapes.parse_prompt` (en / zh / ja / ko) into a scene spec; the
video is scored against it with soft, differentiable versions of what the evaluator measures:

* **Soft foreground.** Per frame the background colour is the median of the 2-px border ring (constant
  for autograd, like the evaluator's reference); a pixel's foreground weight is
  ``sigmoid((|rgb - background| - threshold) / softness)`` with RGB in [0, 1].
* **Object weights.** With several objects in the prompt, each foreground pixel is shared among them by
  a softmax over its squared distance to each object's palette colour (temperature ``assign_temperature``);
  with one object every foreground pixel belongs to it.
* **Colour agreement** (:class:`ShapesColorReward`): per object and frame the weighted mean colour
  ``mu``; score ``1 - |mu - palette colour| / sqrt(3)`` in [0, 1], averaged over frames and objects.
* **Motion agreement** (:class:`ShapesMotionReward`): per object the soft centroid per frame (in units
  of min(H, W)); displacement ``d`` = mean of the last quarter of the frames minus mean of the first
  quarter. A moving object scores ``tanh((d.u - perpendicular_weight |d x u|) / travel_scale)`` for the
  prompt's unit direction ``u`` (image axes, y down) in (-1, 1); an object said to be static scores
  ``1 - 2 tanh(|d| / static_scale)``; objects without a stated motion are not scored. Camera motion is
  not compensated: the prompt's object directions are read as on-screen directions.
* **Shape agreement** (:class:`ShapesShapeReward`): per object and frame the soft IoU of its weights with
  the prompt's shape template (the evaluator's: equal area, at the soft centroid, blurred by
  ``template_blur`` px; centroid and area are constants for autograd) minus the best IoU of any other
  shape's template, as ``tanh(margin / margin_scale)`` in (-1, 1) (margins are small: a circle of 160 px
  matches its own template with IoU 0.78 and a square's with 0.73), averaged over the frames where the
  object has at least ``min_area`` px.  It pays only for a silhouette that the evaluator would classify as the prompt's shape.
* :class:`ShapesReward`: ``color_weight * colour + motion_weight * motion + shape_weight * shape``.

A prompt that ``parse_prompt`` cannot read scores 0 (no gradient) and is logged once.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import torch
from torch import nn

from .base import check_frames

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _parse(prompt: str):
    from kinema.shapes import parse_prompt

    try:
        return parse_prompt(prompt)
    except ValueError as e:
        logger.warning("ShapesWorld reward: cannot read prompt %r (%s); it scores 0", prompt, e)
        return None


def palette_rgb(name: str) -> tuple[float, float, float]:
    """A ShapesWorld colour in RGB [0, 1]."""
    from kinema.shapes.color import PALETTE

    r, g, b = PALETTE[name]
    return r / 255.0, g / 255.0, b / 255.0


def border_background(video: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Per-frame median colour of the ``width``-px border ring: (3, F, H, W) -> (3, F, 1, 1), no gradient."""
    _, _, h, w = video.shape
    ring = torch.zeros(h, w, dtype=torch.bool, device=video.device)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    return video.detach()[:, :, ring].median(dim=-1).values[..., None, None]


class _ShapesBase(nn.Module):
    def __init__(self, threshold: float = 0.2, softness: float = 0.05, assign_temperature: float = 0.02):
        super().__init__()
        if threshold <= 0 or softness <= 0 or assign_temperature <= 0:
            raise ValueError("threshold, softness and assign_temperature must be > 0")
        self.threshold, self.softness, self.assign_temperature = threshold, softness, assign_temperature

    def object_weights(self, video: torch.Tensor, colors: list[str]) -> torch.Tensor:
        """Soft per-object pixel weights (n_objects, F, H, W) for one video (3, F, H, W) in [0, 1]."""
        bg = border_background(video)
        fg = torch.sigmoid(((video - bg).norm(dim=0) - self.threshold) / self.softness)  # (F, H, W)
        if len(colors) == 1:
            return fg[None]
        targets = torch.tensor([palette_rgb(c) for c in colors], device=video.device, dtype=video.dtype)
        d2 = ((video[None] - targets[:, :, None, None, None]) ** 2).sum(dim=1)  # (n, F, H, W)
        share = torch.softmax(-d2 / self.assign_temperature, dim=0)
        return fg[None] * share

    def score_video(self, video: torch.Tensor, spec) -> torch.Tensor | None:
        raise NotImplementedError

    def forward(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_frames(frames, prompts, type(self).__name__)
        video01 = (frames.float().clamp(-1, 1) + 1) / 2
        scores = []
        for video, prompt in zip(video01, prompts, strict=True):
            spec = _parse(prompt)
            score = None if spec is None else self.score_video(video, spec)
            scores.append(score if score is not None else video.new_zeros(()))
        return torch.stack(scores)


class ShapesColorReward(_ShapesBase):
    """Colour agreement in [0, 1]: 1 when the foreground's mean colour is the prompt's palette colour."""

    def score_video(self, video: torch.Tensor, spec) -> torch.Tensor:
        colors = [o.color for o in spec.objects]
        weights = self.object_weights(video, colors)  # (n, F, H, W)
        mass = weights.sum(dim=(-2, -1))  # (n, F)
        mean = torch.einsum("nfhw,cfhw->nfc", weights, video) / (mass[..., None] + 1.0)
        targets = torch.tensor([palette_rgb(c) for c in colors], device=video.device, dtype=video.dtype)
        similarity = 1 - (mean - targets[:, None]).norm(dim=-1) / math.sqrt(3)
        return similarity.mean()


class ShapesMotionReward(_ShapesBase):
    """Motion agreement in (-1, 1) from the soft centroid displacement along the prompt's direction."""

    def __init__(self, travel_scale: float = 0.2, static_scale: float = 0.1, perpendicular_weight: float = 0.5,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.travel_scale, self.static_scale = travel_scale, static_scale
        self.perpendicular_weight = perpendicular_weight

    def centroids(self, weights: torch.Tensor) -> torch.Tensor:
        """(n, F, H, W) weights -> (n, F, 2) soft centroids (x, y) in units of min(H, W)."""
        h, w = weights.shape[-2:]
        scale = float(min(h, w))
        ys = torch.arange(h, device=weights.device, dtype=weights.dtype) / scale
        xs = torch.arange(w, device=weights.device, dtype=weights.dtype) / scale
        mass = weights.sum(dim=(-2, -1)) + 1e-6
        cx = (weights.sum(dim=-2) * xs).sum(dim=-1) / mass
        cy = (weights.sum(dim=-1) * ys).sum(dim=-1) / mass
        return torch.stack([cx, cy], dim=-1)

    def score_video(self, video: torch.Tensor, spec) -> torch.Tensor | None:
        from kinema.shapes.spec import DIRECTION_VECTORS, STATIC

        scored = [i for i, o in enumerate(spec.objects) if o.direction is not None]
        frames = video.shape[1]
        if not scored or frames < 2:
            return None
        weights = self.object_weights(video, [o.color for o in spec.objects])
        path = self.centroids(weights)  # (n, F, 2)
        q = max(1, frames // 4)
        displacement = path[:, -q:].mean(dim=1) - path[:, :q].mean(dim=1)  # (n, 2)
        scores = []
        for i in scored:
            d = displacement[i]
            direction = spec.objects[i].direction
            if direction == STATIC:
                moved = torch.sqrt((d**2).sum() + 1e-8)
                scores.append(1 - 2 * torch.tanh(moved / self.static_scale))
                continue
            ux, uy = DIRECTION_VECTORS[direction]
            along = d[0] * ux + d[1] * uy
            across = torch.sqrt((d[0] * uy - d[1] * ux) ** 2 + 1e-8)
            scores.append(torch.tanh((along - self.perpendicular_weight * across) / self.travel_scale))
        return torch.stack(scores).mean()


class ShapesShapeReward(_ShapesBase):
    """Shape agreement in (-1, 1): soft IoU with the prompt's shape template minus the best other shape's."""

    # A sharper foreground than colour / motion use: at threshold 0.2, softness 0.05 a textured background
    # (RGB distance ~0.1 from its border median) leaves ~0.1 weight on each of thousands of pixels, which
    # outweighs the object's silhouette and drags the template's centroid.
    def __init__(self, template_blur: float = 1.0, min_area: float = 6.0, margin_scale: float = 0.05,
                 threshold: float = 0.25, softness: float = 0.03, **kwargs):  # fmt: skip
        super().__init__(threshold=threshold, softness=softness, **kwargs)
        if template_blur < 0 or min_area <= 0 or margin_scale <= 0:
            raise ValueError("template_blur must be >= 0, min_area and margin_scale > 0")
        self.template_blur, self.min_area, self.margin_scale = template_blur, min_area, margin_scale

    def templates(self, weights: torch.Tensor, shapes: tuple[str, ...]) -> torch.Tensor:
        """(F, H, W) weights of one object -> (len(shapes), F, H, W) templates of equal area at its centroid."""
        from kinema.shapes.detect import _gauss_blur  # the evaluator's template blur
        from kinema.shapes.geometry import shape_alpha, shape_area

        f, h, w = weights.shape
        m = weights.detach().double().cpu().numpy()
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
        out = np.zeros((len(shapes), f, h, w))
        for t in range(f):
            area = m[t].sum()
            if area < self.min_area:
                continue
            cx, cy = (m[t] * gx).sum() / area, (m[t] * gy).sum() / area
            for i, shape in enumerate(shapes):
                sharp = shape_alpha(shape, gx, gy, cx, cy, math.sqrt(area / shape_area(shape, 1.0)))
                out[i, t] = _gauss_blur(sharp, self.template_blur) if self.template_blur > 0 else sharp
        return torch.from_numpy(out).to(weights)

    def score_video(self, video: torch.Tensor, spec) -> torch.Tensor | None:
        from kinema.shapes.spec import SHAPES

        weights = self.object_weights(video, [o.color for o in spec.objects])  # (n, F, H, W)
        scores = []
        for obj, m in zip(spec.objects, weights, strict=True):
            shapes = (obj.shape, *(s for s in SHAPES if s != obj.shape))
            tpl = self.templates(m, shapes)  # (S, F, H, W), the prompt's shape first
            inter = (tpl * m).sum(dim=(-2, -1))
            iou = inter / (m.sum(dim=(-2, -1)) + tpl.sum(dim=(-2, -1)) - inter + 1e-6)  # (S, F)
            present = m.detach().sum(dim=(-2, -1)) >= self.min_area
            if present.any():
                margin = iou[0] - iou[1:].max(dim=0).values
                scores.append(torch.tanh(margin[present] / self.margin_scale).mean())
        return torch.stack(scores).mean() if scores else None


class ShapesReward(nn.Module):
    """``color_weight * colour + motion_weight * motion + shape_weight * shape`` (shared options)."""

    def __init__(
        self, color_weight: float = 1.0, motion_weight: float = 1.0, shape_weight: float = 1.0, **kwargs
    ):
        super().__init__()
        motion_only = {k: kwargs.pop(k) for k in ("travel_scale", "static_scale", "perpendicular_weight")
                       if k in kwargs}  # fmt: skip
        shape_only = {k: kwargs.pop(k) for k in ("template_blur", "min_area", "margin_scale") if k in kwargs}
        self.color = ShapesColorReward(**kwargs)
        self.motion = ShapesMotionReward(**kwargs, **motion_only)
        self.shape = ShapesShapeReward(**kwargs, **shape_only)
        self.color_weight, self.motion_weight = float(color_weight), float(motion_weight)
        self.shape_weight = float(shape_weight)

    def forward(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        total = self.color_weight * self.color(frames, prompts) + self.motion_weight * self.motion(
            frames, prompts
        )
        if self.shape_weight:
            total = total + self.shape_weight * self.shape(frames, prompts)
        return total
