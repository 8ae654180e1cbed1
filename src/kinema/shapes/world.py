"""ShapesWorld: deterministic scene sampling and rendering.

The world is a textured plane at depth Z = 1 with 1-2 flat-coloured shapes sliding on it; a
pinhole camera (see ``camera.py``) translates over it. Each frame is rendered by mapping every
output pixel to the plane (an exact per-frame crop/scale of the infinite world canvas), so
background and objects move consistently with the CameraCtrl poses that are returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .camera import CameraPoses, focal_px, poses_from_centers, project_track
from .color import PALETTE, lab_to_srgb
from .geometry import shape_alpha, shape_radius
from .spec import (
    BACKGROUNDS,
    CAMERA_BACKGROUNDS,
    CAMERAS,
    COLORS,
    DIRECTION_VECTORS,
    HELD_OUT_COMBOS,
    PATHS,
    SHAPES,
    STATIC,
    TRAINING_COMBOS,
    ObjectSpec,
    SceneSpec,
    is_held_out,
)

# Sampling ranges, in units of min(H, W) so the world scales with resolution.
SIZE_RANGE = (13 / 64, 18 / 64)  # nominal object size
TRAVEL_RANGE = (0.25, 0.45)  # straight-line displacement over the clip
ARC_BEND = (0.15, 0.25)  # arc bulge, fraction of the travel distance
WAVE_BEND = (0.12, 0.18)  # wave amplitude, fraction of the travel distance
PAN_RANGE = (0.20, 0.30)  # camera translation, fraction of the frame width (world units)
ZOOM_IN_RANGE = (0.25, 0.33)  # final camera z (content scale 1.33-1.49)
ZOOM_OUT_RANGE = (0.30, 0.50)  # final camera -z (content scale 0.77-0.67)
COLOR_JITTER = 8.0  # +- per RGB channel, keeps delta-E to the palette < 10


@dataclass
class ObjectInstance:
    """A sampled object: spec plus continuous parameters (world units on the Z=1 plane)."""

    spec: ObjectSpec
    rgb: tuple[float, float, float]
    size: float  # nominal size in world units (x focal length = frame-0 pixels)
    start: tuple[float, float]
    end: tuple[float, float]
    bend: float = 0.0  # signed perpendicular amplitude, fraction of the chord length

    def positions(self, frames: int) -> np.ndarray:
        """World (X, Y) centroid per frame (F, 2)."""
        u = np.linspace(0.0, 1.0, frames)[:, None]
        a, b = np.array(self.start), np.array(self.end)
        p = a + u * (b - a)
        chord = b - a
        length = float(np.hypot(*chord))
        if self.spec.path != "straight" and length > 0:
            normal = np.array([-chord[1], chord[0]]) / length
            g = np.sin(np.pi * u) if self.spec.path == "arc" else np.sin(2 * np.pi * u)
            p = p + normal * self.bend * length * g
        return p


@dataclass
class BackgroundInstance:
    """A muted background: base colour, optionally textured towards an accent colour."""

    kind: str
    base_rgb: tuple[float, float, float]
    accent_rgb: tuple[float, float, float]
    period: float = 0.1  # world units (stripe period / checker cell / noise lattice step)
    angle: float = 0.0  # stripe orientation in radians
    noise: np.ndarray | None = None  # value-noise lattice (two octaves stacked)
    noise_origin: tuple[float, float] = (0.0, 0.0)

    def texture(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Blend weight in [0, 1] towards the accent colour at world points."""
        if self.kind == "plain":
            return np.zeros(np.broadcast(x, y).shape)
        if self.kind == "stripes":
            s = np.sin(2 * np.pi * (x * np.cos(self.angle) + y * np.sin(self.angle)) / self.period)
            return 0.5 + 0.5 * np.tanh(3 * s) / np.tanh(3)
        if self.kind == "checker":
            s = np.sin(np.pi * x / self.period) * np.sin(np.pi * y / self.period)
            return 0.5 + 0.5 * np.tanh(4 * s) / np.tanh(4)
        if self.kind == "noise":
            assert self.noise is not None
            coarse = _value_noise(self.noise[0], x, y, self.noise_origin, self.period)
            fine = _value_noise(self.noise[1], x, y, self.noise_origin, self.period / 2)
            # Interpolated uniform noise clusters around 0.5; stretch it so the texture has enough
            # gradient energy for camera motion to be measurable (still low contrast overall).
            return np.clip(0.5 + 1.8 * (0.65 * coarse + 0.35 * fine - 0.5), 0.0, 1.0)
        raise ValueError(f"unknown background {self.kind!r}")

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = self.texture(x, y)[..., None]
        return np.array(self.base_rgb) * (1 - t) + np.array(self.accent_rgb) * t


def _value_noise(lattice: np.ndarray, x: np.ndarray, y: np.ndarray, origin, step: float) -> np.ndarray:
    """Smoothstep-interpolated lattice noise (smooth, so it needs no anti-aliasing)."""
    gx = (x - origin[0]) / step
    gy = (y - origin[1]) / step
    n = lattice.shape[0] - 2
    gx = np.clip(gx, 0, n)
    gy = np.clip(gy, 0, n)
    ix, iy = np.floor(gx).astype(int), np.floor(gy).astype(int)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00, v10 = lattice[iy, ix], lattice[iy, ix + 1]
    v01, v11 = lattice[iy + 1, ix], lattice[iy + 1, ix + 1]
    return (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy


@dataclass
class CameraInstance:
    """Constant-velocity camera translation from ``start`` to ``end`` (world units)."""

    label: str
    start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    end: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def centers(self, frames: int) -> np.ndarray:
        u = np.linspace(0.0, 1.0, frames)[:, None]
        return np.array(self.start) + u * (np.array(self.end) - np.array(self.start))


@dataclass
class Scene:
    """A fully sampled scene; ``render_scene`` turns it into a clip."""

    spec: SceneSpec
    objects: list[ObjectInstance]
    background: BackgroundInstance
    camera: CameraInstance
    height: int = 64
    width: int = 64
    frames: int = 17

    def poses(self) -> CameraPoses:
        return poses_from_centers(self.camera.centers(self.frames), self.height, self.width)


@dataclass
class Clip:
    """A rendered clip and its ground truth.

    frames: uint8 (F, H, W, 3). tracks: (n_objects, F, 2) pixel-index centroids (x, y).
    sizes: (n_objects, F) on-screen nominal size in px. poses: CameraCtrl poses per frame.
    """

    frames: np.ndarray
    spec: SceneSpec
    tracks: np.ndarray
    sizes: np.ndarray
    poses: CameraPoses
    scene: Scene = field(repr=False)

    @property
    def camera(self) -> str:
        return self.spec.camera or "static"


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _object_screen(scene: Scene, poses: CameraPoses) -> tuple[np.ndarray, np.ndarray]:
    """Projected centroids (n, F, 2) and on-screen sizes (n, F) of all objects."""
    f = focal_px(scene.width)
    z = 1.0 - scene.camera.centers(scene.frames)[:, 2]
    tracks, sizes = [], []
    for ob in scene.objects:
        pos = ob.positions(scene.frames)
        pts = np.concatenate([pos, np.ones((len(pos), 1))], 1)
        tracks.append(project_track(pts, poses, scene.height, scene.width))
        sizes.append(ob.size * f / z)
    return np.array(tracks).reshape(len(scene.objects), scene.frames, 2), np.array(sizes).reshape(
        len(scene.objects), scene.frames
    )


def render_scene(scene: Scene) -> Clip:
    """Render every frame of a scene (background per pixel, objects with SDF anti-aliasing)."""
    h, w, nf = scene.height, scene.width, scene.frames
    poses = scene.poses()
    centers = scene.camera.centers(nf)
    f = focal_px(w)
    tracks, sizes = _object_screen(scene, poses)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((nf, h, w, 3), dtype=np.uint8)
    for t in range(nf):
        z = 1.0 - centers[t, 2]
        wx = (xs + 0.5 - w / 2) / f * z + centers[t, 0]
        wy = (ys + 0.5 - h / 2) / f * z + centers[t, 1]
        img = scene.background.color(wx, wy)
        for i, ob in enumerate(scene.objects):
            cx, cy = tracks[i, t]
            r = shape_radius(ob.spec.shape, sizes[i, t]) + 2
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, w)
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, h)
            if x0 >= x1 or y0 >= y1:
                continue
            a = shape_alpha(ob.spec.shape, xs[y0:y1, x0:x1], ys[y0:y1, x0:x1], cx, cy, sizes[i, t])[..., None]
            img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + np.array(ob.rgb) * a
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Clip(out, scene.spec, tracks, sizes, poses, scene)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
# "Bold" textures (``sample_scene(bold_textures=True)``, the Camera model's extra clips): cells / stripes /
# noise steps 2.5x larger and 1.6x the contrast (accent 8-13 L* from the base, still below the evaluator's
# 20 delta-E foreground threshold). The default textures (periods 5-12 px, 5-8 L*) barely change the
# latents of an 8x-downsampling VAE, so background motion is a small share of the flow loss.
BOLD_PERIOD_SCALE = 2.5
BOLD_CONTRAST_SCALE = 1.6
# The "floor" (``sample_scene(floor=True)``, the Camera model's clips since session 14): a checkerboard of
# fixed square size, anchored at the world origin, its light squares always lighter. Where a random texture
# is drawn, its phase is decided late in sampling by each frame's own noise, so a small model lines it up in
# place whatever the camera says (docs/shapesworld-model.md, sessions 12-13); on the floor every frame's
# pattern follows from the camera alone, so it is decided early, where only the camera can place it.
FLOOR_SQUARE_PX = 16.0  # at 64 px; 2 latent cells of the 8x VAE
# L* from dark to light squares: at 10-14 the VAE's reconstructions had 0.75-0.81 false objects per clip.
FLOOR_CONTRAST = (8.0, 11.0)
FLOOR_CHROMA = 4.0  # greyish (the accent differs only in lightness); evaluator threshold: 20 delta-E


def _sample_background(
    rng: np.random.Generator,
    kind: str,
    h: int,
    w: int,
    extent: float,
    bold: bool = False,
    floor: bool = False,
) -> BackgroundInstance:
    f = focal_px(w)
    if floor:
        lum = rng.uniform(22, 42)
        chroma, hue = rng.uniform(0, FLOOR_CHROMA), rng.uniform(0, 2 * np.pi)
        base = np.array([lum, chroma * np.cos(hue), chroma * np.sin(hue)])
        accent = base + np.array([rng.uniform(*FLOOR_CONTRAST), 0.0, 0.0])
        rgb = [tuple(float(v) for v in lab_to_srgb(c)) for c in (base, accent)]
        return BackgroundInstance("checker", rgb[0], rgb[1], period=FLOOR_SQUARE_PX * min(h, w) / 64 / f)
    m = min(h, w) * (BOLD_PERIOD_SCALE if bold else 1.0)  # periods below scale with m
    lum = rng.uniform(22, 55)
    chroma, hue = rng.uniform(0, 10), rng.uniform(0, 2 * np.pi)
    base = np.array([lum, chroma * np.cos(hue), chroma * np.sin(hue)])
    # Accent differs mostly in lightness so texture is visible but stays far from object colours.
    dl = rng.uniform(5, 8) * (1 if (lum < 30 or (lum < 50 and rng.random() < 0.5)) else -1)
    dl *= BOLD_CONTRAST_SCALE if bold else 1.0
    accent = base + np.array([dl, rng.uniform(-3, 3), rng.uniform(-3, 3)])
    base_rgb = tuple(float(v) for v in lab_to_srgb(base))
    accent_rgb = tuple(float(v) for v in lab_to_srgb(accent))
    if kind == "plain":
        return BackgroundInstance("plain", base_rgb, base_rgb)
    if kind == "stripes":
        period = rng.uniform(6, 12) * m / 64 / f
        angle = float(rng.choice([0.0, 45.0, 90.0, 135.0])) * np.pi / 180
        return BackgroundInstance("stripes", base_rgb, accent_rgb, period=period, angle=angle)
    if kind == "checker":
        return BackgroundInstance("checker", base_rgb, accent_rgb, period=rng.uniform(5, 9) * m / 64 / f)
    if kind == "noise":
        step = rng.uniform(5, 8) * m / 64 / f
        # Lattice size from the default step, so bold scenes draw exactly the default scene's random numbers.
        n = int(np.ceil(2 * extent / (step / (BOLD_PERIOD_SCALE if bold else 1.0) / 2))) + 3
        lattice = rng.random((2, n, n))
        return BackgroundInstance(
            "noise", base_rgb, accent_rgb, period=step, noise=lattice, noise_origin=(-extent, -extent)
        )
    raise ValueError(f"unknown background {kind!r}")


def _sample_camera(rng: np.random.Generator, label: str) -> CameraInstance:
    if label == "static":
        return CameraInstance("static")
    if label.startswith("pan_"):
        d = rng.uniform(*PAN_RANGE)
        vec = {"pan_left": (-d, 0, 0), "pan_right": (d, 0, 0), "pan_up": (0, -d, 0), "pan_down": (0, d, 0)}
        return CameraInstance(label, end=vec[label])
    if label == "zoom_in":
        return CameraInstance(label, end=(0.0, 0.0, rng.uniform(*ZOOM_IN_RANGE)))
    if label == "zoom_out":
        return CameraInstance(label, end=(0.0, 0.0, -rng.uniform(*ZOOM_OUT_RANGE)))
    raise ValueError(f"unknown camera {label!r}")


def _sample_object_spec(
    rng: np.random.Generator, split: str, used_colors: set[str], allow_static: bool
) -> ObjectSpec:
    path = str(rng.choice(PATHS, p=[0.6, 0.2, 0.2]))
    if allow_static and rng.random() < 0.3:
        color = str(rng.choice([c for c in COLORS if c not in used_colors]))
        return ObjectSpec(color, str(rng.choice(SHAPES)), STATIC)
    pool = {"train": TRAINING_COMBOS, "held_out": HELD_OUT_COMBOS}.get(split)
    if pool is None:
        pool = TRAINING_COMBOS + HELD_OUT_COMBOS
    pool = [c for c in pool if c[0] not in used_colors]
    c, s, d = pool[int(rng.integers(len(pool)))]
    return ObjectSpec(c, s, d, path)


def _place_object(
    rng: np.random.Generator,
    ospec: ObjectSpec,
    poses: CameraPoses,
    zs: np.ndarray,
    h: int,
    w: int,
    others: list[tuple[np.ndarray, np.ndarray]],
    tries: int = 100,
    travel_scale: float = 1.0,
    margin: float = 1.0,
) -> tuple[ObjectInstance, np.ndarray, np.ndarray] | None:
    """Sample size, travel, bend and position so the object stays in frame and clear of others.

    The on-screen track is affine in the path midpoint (slope 1/z per frame), so the midpoints that
    keep the whole track in frame form a box that is computed exactly and sampled uniformly; only
    the gap to other objects needs rejection.
    """
    f = focal_px(w)
    m = min(h, w)
    jitter = rng.uniform(-COLOR_JITTER, COLOR_JITTER, 3)
    rgb = tuple(float(v) for v in np.clip(np.array(PALETTE[ospec.color]) + jitter, 0, 255))
    nf = len(zs)
    to_world = lambda p: ((p[0] + 0.5 - w / 2) / f, (p[1] + 0.5 - h / 2) / f)  # noqa: E731
    gap = 4.0 * m / 64  # clear gap so anti-aliased, codec-smeared edges of two objects never touch
    limit = np.array([w - 1, h - 1], dtype=np.float64)

    def track_for(mid: np.ndarray, chord: np.ndarray, size: float, bend: float):
        ob = ObjectInstance(ospec, rgb, size / f, to_world(mid - chord / 2), to_world(mid + chord / 2), bend)
        pos = ob.positions(nf)
        return ob, project_track(np.concatenate([pos, np.ones((nf, 1))], 1), poses, h, w)

    for _ in range(tries):
        size = rng.uniform(*SIZE_RANGE) * m
        radius = shape_radius(ospec.shape, size) / zs
        chord, bend = np.zeros(2), 0.0
        if ospec.moving:
            chord = (
                np.array(DIRECTION_VECTORS[ospec.direction]) * rng.uniform(*TRAVEL_RANGE) * m * travel_scale
            )
            if ospec.path != "straight":
                lo, hi = ARC_BEND if ospec.path == "arc" else WAVE_BEND
                bend = float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))
        _, base = track_for(np.zeros(2), chord, size, bend)
        _, unit = track_for(np.ones(2), chord, size, bend)
        slope = unit - base  # (F, 2), = 1/z > 0
        r = radius[:, None] + margin
        lo = ((r - base) / slope).max(0)
        hi = ((limit - r - base) / slope).min(0)
        if (lo > hi).any():
            continue
        # Candidate midpoints (tracks are affine in them); keep the first clear of other objects.
        mids = rng.uniform(lo, hi, size=(16, 2))
        tracks = base[None] + slope[None] * mids[:, None]
        ok = np.ones(len(mids), dtype=bool)
        for t2, r2 in others:
            ok &= (np.linalg.norm(tracks - t2[None], axis=-1) >= radius + r2 + gap).all(1)
        if not ok.any():
            continue
        k = int(np.argmax(ok))
        ob, track = track_for(mids[k], chord, size, bend)
        return ob, track, radius
    return None


def sample_scene(
    rng: np.random.Generator,
    spec: SceneSpec | None = None,
    height: int = 64,
    width: int = 64,
    frames: int = 17,
    split: str = "train",
    two_object_prob: float = 0.35,
    camera_prob: float = 0.3,
    bold_textures: bool = False,
    floor: bool = False,
) -> Scene:
    """Sample a scene. Fields that ``spec`` leaves unspecified (or no spec) are drawn from ``rng``.

    bold_textures: coarser, stronger background textures (``BOLD_PERIOD_SCALE``, ``BOLD_CONTRAST_SCALE``);
    the same random draws, so a seed gives the same scene with a bolder background.
    floor: film the scene over the floor (``FLOOR_SQUARE_PX``) whatever background was drawn or given;
    it takes precedence over bold_textures.

    split: "train" (never uses held-out combos), "held_out" (only held-out combos) or "all";
    only applies to objects that are sampled, not to ones given in ``spec``.
    """
    if split not in ("train", "held_out", "all"):
        raise ValueError(f"split must be 'train', 'held_out' or 'all', got {split!r}")
    if spec is not None and spec.camera is not None:
        cam_label = spec.camera
    else:
        cam_label = str(rng.choice(CAMERAS[1:])) if rng.random() < camera_prob else "static"
    if spec is not None and spec.background is not None:
        bg_kind = spec.background
    elif cam_label != "static":
        bg_kind = str(rng.choice(CAMERA_BACKGROUNDS))
    else:
        bg_kind = str(rng.choice(BACKGROUNDS, p=[0.34, 0.22, 0.22, 0.22]))
    camera = _sample_camera(rng, cam_label)
    centers = camera.centers(frames)
    poses = poses_from_centers(centers, height, width)
    zs = 1.0 - centers[:, 2]
    # World extent visible over the clip (for the noise lattice).
    extent = float(np.abs(centers[:, :2]).max() + zs.max() * max(height, width) / focal_px(width)) + 0.2
    background = _sample_background(rng, bg_kind, height, width, extent, bold_textures, floor)
    bg_kind = background.kind

    if spec is not None:
        given = [
            o if o.direction is not None else replace(o, direction=STATIC, path="straight")
            for o in spec.objects
        ]
    # The object count and object specs are drawn once and kept while only the geometry is
    # retried: redrawing them after a failed placement would bias scenes towards what fits easily
    # (one object, compact shapes).
    n = 2 if rng.random() < two_object_prob else 1
    ospecs: list[ObjectSpec] = []
    for attempt in range(100):
        if spec is not None:
            ospecs = given
        elif attempt % 25 == 0 or not ospecs:
            ospecs, used = [], set()
            for _ in range(n):
                o = _sample_object_spec(rng, split, used, allow_static=cam_label != "static")
                ospecs.append(o)
                used.add(o.color)
            if split == "held_out" and not any(is_held_out(o.color, o.shape, o.direction) for o in ospecs):
                ospecs = []
                continue
        # After many failures (hard combinations such as two objects + zoom-in) shorter travel fits.
        travel_scale = 1.0 if attempt < 40 else 0.75
        placed, objects = [], []
        for o in ospecs:
            res = _place_object(rng, o, poses, zs, height, width, placed, travel_scale=travel_scale)
            if res is None:
                break
            objects.append(res[0])
            placed.append((res[1], res[2]))
        if len(objects) == len(ospecs):
            full = SceneSpec(tuple(ospecs), background=bg_kind, camera=cam_label)
            return Scene(full, objects, background, camera, height, width, frames)
    raise RuntimeError("could not place the objects in frame; try a larger resolution or fewer objects")


def render_from_spec(spec: SceneSpec, seed: int, height: int = 64, width: int = 64, frames: int = 17) -> Clip:
    """Render a ground-truth clip for a (possibly parsed, partially specified) scene spec."""
    return render_scene(sample_scene(np.random.default_rng(seed), spec, height, width, frames))


def random_clip(
    seed: int, height: int = 64, width: int = 64, frames: int = 17, split: str = "train", **kwargs
) -> Clip:
    """Sample and render a random scene."""
    return render_scene(
        sample_scene(np.random.default_rng(seed), None, height, width, frames, split, **kwargs)
    )
