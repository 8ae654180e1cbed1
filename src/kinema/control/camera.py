"""Camera control: CameraCtrl pose files, named camera-motion presets and Plücker embeddings.

Conventions (OpenCV camera, as CameraCtrl / RealEstate10K): x right, y down, the camera looks along
+z. A pose stores the **world-to-camera** matrix ``w2c = [R | t]`` (so the camera centre is
``-R^T t``) and normalised intrinsics ``fx/W, fy/H, cx/W, cy/H`` of the video it was recorded for.

* pan right  = camera centre moves +x (content slides left in frame); pan up = centre moves -y;
* zoom in    = camera moves +z (dolly towards the scene, no focal change);
* rotate_cw / rotate_acw = roll about the optical axis. ``rotate_acw`` follows the reference "ACW"
  preset: ``w2c`` rotation ``Rz(+angle)``, i.e. scene content turns clockwise on screen while the camera
  rolls anticlockwise; ``rotate_cw`` is the opposite.

Pipeline (what EasyAnimate V5.1 Control does with a camera): poses are made relative to the first
camera (its c2w becomes identity), intrinsics are aspect-fixed for the target size, each pixel gets a
ray (origin o, unit direction d) and the 6-channel Plücker vector ``[o x d, d]``; the ``(F, 6, H, W)``
result is resized to the latent grid (frame 0 alone, frames 1.. to the remaining latent frames, trilinear)
and multiplied by 6 before being used as control latents (:func:`camera_latents`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Intrinsics of EasyAnimate's example pose files (asset/Pan_*.txt): 1280x720 video, ~681 px focal.
DEFAULT_INTRINSICS = (0.532139961, 0.946026558, 0.5, 0.5)
# (height, width) of the video pose files are assumed to come from, as in the reference default.
DEFAULT_POSE_SIZE = (720, 1280)
# Preset magnitudes from the CameraCtrl-style presets used by the reference ComfyUI nodes: at speed 1
# a unit motion spans pi/3 rad of roll or 1.5 units of translation over the clip.
BASE_ANGLE = math.pi / 3
BASE_TRANSLATION = 1.5
CAMERA_LATENT_SCALE = 6.0


class PoseFileError(ValueError):
    """A camera pose file is malformed; the message names the file, the line and the problem."""


@dataclass(eq=False)
class CameraPose:
    """One frame's camera: normalised intrinsics and the 3x4 world-to-camera matrix."""

    fx: float
    fy: float
    cx: float
    cy: float
    w2c: np.ndarray = field(default_factory=lambda: np.eye(3, 4))
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        self.w2c = np.asarray(self.w2c, dtype=np.float64).reshape(3, 4)

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ would compare arrays element-wise and fail on truthiness.
        if not isinstance(other, CameraPose):
            return NotImplemented
        same = (self.fx, self.fy, self.cx, self.cy, self.timestamp) == (
            other.fx,
            other.fy,
            other.cx,
            other.cy,
            other.timestamp,
        )
        return same and np.array_equal(self.w2c, other.w2c)

    @property
    def w2c_4x4(self) -> np.ndarray:
        m = np.eye(4)
        m[:3] = self.w2c
        return m

    @property
    def c2w(self) -> np.ndarray:
        """4x4 camera-to-world matrix (general inverse, like the reference, so scaled poses work too)."""
        return np.linalg.inv(self.w2c_4x4)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return self.c2w[:3, 3]

    def to_numbers(self) -> list[float]:
        """The 19 numbers of a CameraCtrl line: ``timestamp fx fy cx cy 0 0`` + row-major 3x4 w2c."""
        return [self.timestamp, self.fx, self.fy, self.cx, self.cy, 0.0, 0.0, *self.w2c.reshape(-1).tolist()]

    @classmethod
    def from_numbers(cls, values: Sequence[float]) -> CameraPose:
        """From 19 numbers (CameraCtrl/RealEstate10K) or 16 numbers (``fx fy cx cy`` + 12 w2c)."""
        values = [float(v) for v in values]
        if len(values) == 19:
            return cls(*values[1:5], w2c=np.array(values[7:]), timestamp=values[0])
        if len(values) == 16:
            return cls(*values[:4], w2c=np.array(values[4:]))
        raise ValueError(f"expected 19 or 16 numbers, got {len(values)}")


# ---------------------------------------------------------------------------------------------------
# Pose files


def parse_pose_text(text: str, source: str = "<poses>") -> list[CameraPose]:
    """Parse CameraCtrl pose text.

    Rules: blank lines and lines starting with ``#`` are ignored. The first remaining line is a header
    (a URL or clip ID in RealEstate10K) unless it is a valid pose line; the reference loader always drops
    line 1, so files written for it must have a header (possibly empty), which is also fine here. Every
    other line must hold exactly 19 numbers (``timestamp fx fy cx cy 0 0`` + 12 w2c, row-major) or exactly
    16 numbers (``fx fy cx cy`` + 12 w2c, timestamp 0). Fields 6-7 of the 19-number form are ignored.
    """
    poses: list[CameraPose] = []
    first = True
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if line_no == 1 and not line:
                first = False  # an empty first line is the (empty) header, as in EasyAnimate's assets
            continue
        fields = line.replace(",", " ").split()
        try:
            numbers = [float(v) for v in fields]
        except ValueError:
            numbers = None
        if numbers is None or len(numbers) not in (16, 19):
            if first:
                first = False
                continue  # header line
            if numbers is None:
                raise PoseFileError(f"{source}: line {line_no}: not a list of numbers: {line[:80]!r}")
            raise PoseFileError(
                f"{source}: line {line_no}: expected 19 numbers (timestamp fx fy cx cy 0 0 + 12 w2c) or "
                f"16 numbers (fx fy cx cy + 12 w2c), got {len(numbers)}"
            )
        first = False
        if not all(math.isfinite(v) for v in numbers):
            raise PoseFileError(f"{source}: line {line_no}: contains NaN or infinity")
        pose = CameraPose.from_numbers(numbers)
        if min(pose.fx, pose.fy) <= 0:
            raise PoseFileError(
                f"{source}: line {line_no}: fx and fy must be positive, got {pose.fx}, {pose.fy}"
            )
        if abs(np.linalg.det(pose.w2c[:, :3])) < 1e-8:
            raise PoseFileError(f"{source}: line {line_no}: the 3x3 rotation part of w2c is singular")
        poses.append(pose)
    if not poses:
        raise PoseFileError(f"{source}: no pose lines found")
    return poses


def read_pose_file(path: str | os.PathLike) -> list[CameraPose]:
    """Read a CameraCtrl pose file (see :func:`parse_pose_text` for the format rules)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PoseFileError(f"{path}: cannot read pose file ({exc.strerror or exc})") from exc
    return parse_pose_text(text, str(path))


def format_pose_text(poses: Sequence[CameraPose], header: str = "kinema camera poses") -> str:
    """Pose text in the 19-number CameraCtrl format with a header line (numbers round-trip exactly)."""
    if "\n" in header:
        raise ValueError("header must be a single line")
    lines = [header]
    lines += [" ".join(repr(float(v)) for v in pose.to_numbers()) for pose in poses]
    return "\n".join(lines) + "\n"


def write_pose_file(
    path: str | os.PathLike, poses: Sequence[CameraPose], header: str = "kinema camera poses"
) -> None:
    """Write poses as a CameraCtrl file readable by both kinema and the reference loader."""
    Path(path).write_text(format_pose_text(poses, header), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# Plücker embedding


def relative_c2w(poses: Sequence[CameraPose]) -> np.ndarray:
    """``(F, 4, 4)`` camera-to-world matrices relative to the first camera (frame 0 is identity)."""
    if not poses:
        raise ValueError("need at least one pose")
    w2c0 = poses[0].w2c_4x4
    rel = np.stack([w2c0 @ p.c2w for p in poses])
    rel[0] = np.eye(4)  # exact, rather than w2c0 @ inv(w2c0) with rounding noise
    return rel


def fit_intrinsics(
    poses: Sequence[CameraPose], height: int, width: int, pose_size: tuple[int, int] = DEFAULT_POSE_SIZE
) -> np.ndarray:
    """Pixel intrinsics ``(F, 4)`` = ``fx, fy, cx, cy`` for a ``height x width`` target.

    When the pose video's aspect (``pose_size`` = (H, W)) differs from the target, the pose video is taken
    to be resized to cover the target and centre-cropped, as CameraCtrl does: the focal length along the
    cropped axis is rescaled so pixels stay square.
    """
    pose_ratio = pose_size[1] / pose_size[0]
    target_ratio = width / height
    k = np.array([[p.fx, p.fy, p.cx, p.cy] for p in poses], dtype=np.float64)
    if pose_ratio > target_ratio:  # pose video is wider: width is cropped
        k[:, 0] *= height * pose_ratio / width
    else:  # pose video is taller (or equal, a no-op): height is cropped
        k[:, 1] *= width / pose_ratio / height
    return k * np.array([width, height, width, height], dtype=np.float64)


def plucker_embedding(
    poses: Sequence[CameraPose],
    height: int,
    width: int,
    pose_size: tuple[int, int] = DEFAULT_POSE_SIZE,
    relative: bool = True,
) -> torch.Tensor:
    """Per-pixel Plücker embedding ``(F, 6, H, W)`` float32: channels ``[o x d (3), d (3)]``.

    Rays go through pixel centres (``u = i + 0.5``), ``d = R_c2w K^-1 [u, v, 1]`` normalised, ``o`` is the
    camera centre; poses are relative to frame 0 unless ``relative=False``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    c2w = relative_c2w(poses) if relative else np.stack([p.c2w for p in poses])
    intr = fit_intrinsics(poses, height, width, pose_size)
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    out = torch.empty(len(poses), 6, height, width, dtype=torch.float32)
    for i in range(len(poses)):  # per frame: keeps the float64 temporaries at one frame's size
        fx, fy, cx, cy = intr[i]
        cam_dirs = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], dim=0)  # (3, H, W)
        cam_dirs = cam_dirs / cam_dirs.norm(dim=0, keepdim=True)
        rot = torch.from_numpy(c2w[i, :3, :3])
        origin = torch.from_numpy(c2w[i, :3, 3])
        dirs = torch.einsum("ab,bhw->ahw", rot, cam_dirs)
        moment = torch.linalg.cross(origin[:, None, None].expand_as(dirs), dirs, dim=0)
        out[i, :3] = moment.float()
        out[i, 3:] = dirs.float()
    return out


def plane_motion(
    poses: Sequence[CameraPose],
    height: int,
    width: int,
    depth: float,
    pose_size: tuple[int, int] = DEFAULT_POSE_SIZE,
) -> np.ndarray:
    """``(F, 3)`` screen motion ``(scale, tx, ty)`` of a fronto-parallel plane at ``depth`` (in frame 0's
    camera), mapping frame-0 pixels to frame-t pixels about the image centre: ``x_t - c = s (x_0 - c) + t``.

    A least-squares similarity fit over a grid of the plane's points; exact for pans along the image axes
    and for moves along the optical axis. It says where the *background* goes, which is what camera-aware
    RoPE (``VideoTransformerConfig.camera_rope_depth``) needs; rotations and off-axis moves are approximated.
    """
    if not depth > 0:
        raise ValueError(f"depth must be > 0, got {depth}")
    c2w = relative_c2w(poses)
    intr = fit_intrinsics(poses, height, width, pose_size)
    fx, fy, cx, cy = intr[0]
    v, u = np.meshgrid(np.linspace(0, height, 5), np.linspace(0, width, 5), indexing="ij")
    pix0 = np.stack([u.ravel(), v.ravel()], 1)
    # Plane points in frame 0's camera (= relative world) coordinates.
    world = np.stack(
        [(pix0[:, 0] - cx) / fx * depth, (pix0[:, 1] - cy) / fy * depth, np.full(len(pix0), depth)], 1
    )
    centre = np.array([width / 2, height / 2])
    out = np.zeros((len(poses), 3))
    for i in range(len(poses)):
        w2c = np.linalg.inv(c2w[i])
        cam = world @ w2c[:3, :3].T + w2c[:3, 3]
        z = np.maximum(cam[:, 2], 1e-6 * depth)  # points behind the camera: clamp rather than divide by <= 0
        fxi, fyi, cxi, cyi = intr[i]
        pix = np.stack([cam[:, 0] / z * fxi + cxi, cam[:, 1] / z * fyi + cyi], 1)
        a, b = pix0 - centre, pix - centre
        a0, b0 = a - a.mean(0), b - b.mean(0)
        scale = float((a0 * b0).sum() / (a0 * a0).sum())
        out[i] = (scale, *(b.mean(0) - scale * a.mean(0)))
    return out


def latent_plane_motion(
    poses: Sequence[CameraPose],
    height: int,
    width: int,
    depth: float,
    latent_frames: int,
    temporal: int = 4,
    spatial: int = 8,
    pose_size: tuple[int, int] = DEFAULT_POSE_SIZE,
) -> torch.Tensor:
    """:func:`plane_motion` per latent frame, ``(latent_frames, 3)`` float32, translation in latent cells.

    Latent frame 0 is frame 0; latent frame k >= 1 averages the frames it encodes in a causal VAE
    (``temporal * (k - 1) + 1 .. temporal * k``, clamped to the poses given)."""
    frame = plane_motion(poses, height, width, depth, pose_size)
    rows = [frame[0]]
    for k in range(1, latent_frames):
        idx = np.clip(np.arange(temporal * (k - 1) + 1, temporal * k + 1), 0, len(frame) - 1)
        rows.append(frame[idx].mean(0))
    motion = np.array(rows)
    motion[:, 1:] /= spatial
    return torch.tensor(motion, dtype=torch.float32)


def camera_latents(
    plucker: torch.Tensor,
    latent_frames: int,
    latent_h: int,
    latent_w: int,
    scale: float = CAMERA_LATENT_SCALE,
) -> torch.Tensor:
    """Resize a ``(F, 6, H, W)`` Plücker video to the latent grid: ``(6, latent_frames, h, w)``.

    As the reference control pipeline: frame 0 is resized on its own to latent frame 0, frames ``1..F-1``
    are trilinearly resized (``align_corners=False``) to the remaining ``latent_frames - 1`` frames, and
    the result is multiplied by ``scale`` (6). Add a batch dimension before concatenating to latents.
    """
    if plucker.ndim != 4 or plucker.shape[1] != 6:
        raise ValueError(f"plucker must have shape (F, 6, H, W), got {tuple(plucker.shape)}")
    if latent_frames < 1:
        raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
    if latent_frames > 1 and plucker.shape[0] < 2:
        raise ValueError(f"{latent_frames} latent frames need at least 2 pose frames, got {plucker.shape[0]}")
    video = plucker.permute(1, 0, 2, 3).unsqueeze(0).float()  # (1, 6, F, H, W)
    parts = [
        F.interpolate(video[:, :, :1], size=(1, latent_h, latent_w), mode="trilinear", align_corners=False)
    ]
    if latent_frames > 1:
        parts.append(
            F.interpolate(
                video[:, :, 1:],
                size=(latent_frames - 1, latent_h, latent_w),
                mode="trilinear",
                align_corners=False,
            )
        )
    return torch.cat(parts, dim=2)[0] * scale


# ---------------------------------------------------------------------------------------------------
# Presets

# name -> (roll/pitch/yaw angle direction (x, y, z), w2c translation direction), in reference units.
# Translations are of w2c (t = -R c): +x in t means the camera centre moves -x (left).
CAMERA_PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "static": ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "pan_up": ((0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "pan_down": ((0.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "pan_left": ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
    "pan_right": ((0.0, 0.0, 0.0), (-1.0, 0.0, 0.0)),
    "zoom_in": ((0.0, 0.0, 0.0), (0.0, 0.0, -2.0)),
    "zoom_out": ((0.0, 0.0, 0.0), (0.0, 0.0, 2.0)),
    "rotate_acw": ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
    "rotate_cw": ((0.0, 0.0, -1.0), (0.0, 0.0, 0.0)),
}
_ALIASES = {
    "acw": "rotate_acw",
    "ccw": "rotate_acw",
    "rotate_ccw": "rotate_acw",
    "anticlockwise": "rotate_acw",
    "cw": "rotate_cw",
    "clockwise": "rotate_cw",
    "none": "static",
}


def _preset_name(token: str, spec: str) -> str:
    name = token.strip().lower().replace("-", "_").replace(" ", "_")
    name = _ALIASES.get(name, name)
    if name not in CAMERA_PRESETS:
        raise ValueError(
            f"unknown camera preset {token.strip()!r} in {spec!r}; known: {', '.join(CAMERA_PRESETS)} "
            "(combine with '+', chain segments with ',')"
        )
    return name


def _rotation_zyx(angles: np.ndarray) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for angles (x, y, z) in radians (the reference's composition order)."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_preset(
    spec: str,
    num_frames: int,
    speed: float = 1.0,
    intrinsics: tuple[float, float, float, float] = DEFAULT_INTRINSICS,
) -> list[CameraPose]:
    """Camera poses for a named motion, e.g. ``"pan_left"``, ``"pan_up+pan_left"``, ``"zoom_in,pan_left"``.

    ``+`` sums motions (applied together); ``,`` chains segments: the frames are split into equal
    consecutive blocks, one per segment, each continuing from the previous segment's last camera (its
    motion expressed in that camera's frame). Motion speed is constant: each frame advances
    ``speed / num_frames`` of a unit preset motion (pi/3 rad roll, 1.5 units pan, 3 units zoom), so a
    single segment matches the reference ``get_camera_motion`` (frame i at ``i / n``). Names accept
    ``-``/space for ``_`` and aliases ``cw``, ``acw``/``ccw``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not math.isfinite(speed):
        raise ValueError(f"speed must be finite, got {speed}")
    segments = []
    for part in spec.split(","):
        if not part.strip():
            raise ValueError(f"empty segment in camera spec {spec!r}")
        angle = np.zeros(3)
        trans = np.zeros(3)
        for token in part.split("+"):
            a, t = CAMERA_PRESETS[_preset_name(token, spec)]
            angle += a
            trans += t
        segments.append((angle, trans))
    if len(segments) > 1 and len(segments) > num_frames - 1:
        raise ValueError(f"{len(segments)} chained segments need at least {len(segments) + 1} frames")

    # Segment k owns a consecutive block of frames; block 0 starts at frame 0 from the identity pose.
    blocks = (
        np.array_split(np.arange(num_frames), len(segments)) if len(segments) > 1 else [np.arange(num_frames)]
    )
    poses: list[np.ndarray] = []
    anchor = np.eye(4)
    for k, (angle, trans) in enumerate(segments):
        block = blocks[k]
        start = block[0]
        for f in block:
            steps = f - start if k == 0 else f - start + 1  # later segments move on from the anchor frame
            s = steps / num_frames * speed
            local = np.eye(4)
            local[:3, :3] = _rotation_zyx(BASE_ANGLE * angle * s)
            local[:3, 3] = BASE_TRANSLATION * trans * s
            poses.append(local @ anchor)
        anchor = poses[-1]
    fx, fy, cx, cy = intrinsics
    return [CameraPose(fx, fy, cx, cy, w2c=m[:3]) for m in poses]


def plucker_for_preset(
    spec: str,
    num_frames: int,
    height: int,
    width: int,
    speed: float = 1.0,
) -> torch.Tensor:
    """Shortcut: :func:`plucker_embedding` of :func:`camera_preset` at the default intrinsics."""
    return plucker_embedding(camera_preset(spec, num_frames, speed=speed), height, width)
