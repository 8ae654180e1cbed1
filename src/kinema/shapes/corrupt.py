"""Corrupted versions of ground-truth clips, used to check that the evaluator says "wrong"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .color import PALETTE
from .spec import COLORS, SHAPES
from .world import Clip, render_scene


def _rerender(clip: Clip, **changes: Callable[[str], str]) -> np.ndarray:
    scene = clip.scene
    objs = []
    for ob in scene.objects:
        spec = ob.spec
        for attr, fn in changes.items():
            spec = replace(spec, **{attr: fn(getattr(spec, attr))})
        rgb = tuple(float(v) for v in PALETTE[spec.color]) if spec.color != ob.spec.color else ob.rgb
        objs.append(replace(ob, spec=spec, rgb=rgb))
    return render_scene(replace(scene, objects=objs)).frames


def wrong_color(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """Every object rendered in a palette colour no object of the scene has (same geometry, motion)."""
    used = {ob.color for ob in clip.spec.objects}
    free = [c for c in COLORS if c not in used]
    mapping = {c: free[i % len(free)] for i, c in enumerate(sorted(used, key=COLORS.index))}
    return _rerender(clip, color=mapping.__getitem__)


def wrong_shape(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """Every object rendered as the next shape."""
    return _rerender(clip, shape=lambda s: SHAPES[(SHAPES.index(s) + 1) % len(SHAPES)])


def reversed_time(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """Frames played backwards: every motion (object and camera) points the opposite way."""
    return clip.frames[::-1].copy()


def shuffled(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """Frames in random order (a derangement of the middle, ends swapped)."""
    idx = rng.permutation(len(clip.frames))
    if idx[0] == 0 or idx[-1] == len(idx) - 1:
        idx = np.roll(idx, len(idx) // 2)
    return clip.frames[idx]


def static(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """The first frame repeated: nothing moves."""
    return np.repeat(clip.frames[:1], len(clip.frames), axis=0)


def noise(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """Uniform random pixels."""
    return rng.integers(0, 256, clip.frames.shape, dtype=np.uint8)


CORRUPTIONS: dict[str, Callable[[Clip, np.random.Generator], np.ndarray]] = {
    "wrong color": wrong_color,
    "wrong shape": wrong_shape,
    "reversed": reversed_time,
    "shuffled": shuffled,
    "static": static,
    "noise": noise,
}
