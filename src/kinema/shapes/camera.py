"""Camera model, CameraCtrl pose files and the image motion that poses induce.

Conventions (OpenCV): camera x right, y down, looks along +z. Pixel coordinates used for tracks
are pixel *indices* (x = column, y = row; pixel centres on integers, image centre at
((W-1)/2, (H-1)/2)). CameraCtrl's continuous coordinates are index + 0.5.

ShapesWorld camera: square pixels with focal length f = W pixels (normalised fx = 1, fy = W/H),
principal point at the image centre, no rotation. The world is the plane Z = 1 (camera 0 sits at
the origin). Camera t sits at C_t = (cx, cy, cz) so its world-to-camera matrix is [I | -C_t].
Pan right = C_x grows (content moves left); pan up = C_y decreases (content moves down);
zoom in = C_z grows towards the plane (content grows by 1 / (1 - C_z)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinema.control import camera as control_camera
from kinema.control.camera import CameraPose

POSE_HEADER = "https://kinema.invalid/shapesworld"


@dataclass
class CameraPoses:
    """Per-frame CameraCtrl camera: normalised intrinsics (F, 4) = fx/W, fy/H, cx/W, cy/H and
    world-to-camera extrinsics (F, 3, 4)."""

    intrinsics: np.ndarray
    w2c: np.ndarray

    def __post_init__(self) -> None:
        self.intrinsics = np.asarray(self.intrinsics, dtype=np.float64).reshape(-1, 4)
        self.w2c = np.asarray(self.w2c, dtype=np.float64).reshape(-1, 3, 4)
        if len(self.intrinsics) != len(self.w2c):
            raise ValueError("intrinsics and w2c must have the same number of frames")

    def __len__(self) -> int:
        return len(self.w2c)

    def lines(self) -> np.ndarray:
        """(F, 16) rows: fx fy cx cy followed by the row-major 3x4 world-to-camera matrix."""
        return np.concatenate([self.intrinsics, self.w2c.reshape(-1, 12)], 1)


def focal_px(width: int) -> float:
    """ShapesWorld focal length in pixels (horizontal field of view 2*atan(0.5) = 53 deg)."""
    return float(width)


def poses_from_centers(centers: np.ndarray, height: int, width: int) -> CameraPoses:
    """ShapesWorld poses for camera centres (F, 3) with identity rotation."""
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    f = focal_px(width)
    intr = np.tile([f / width, f / height, 0.5, 0.5], (len(centers), 1))
    w2c = np.zeros((len(centers), 3, 4))
    w2c[:, :, :3] = np.eye(3)
    w2c[:, :, 3] = -centers
    return CameraPoses(intr, w2c)


def project(points_w: np.ndarray, poses: CameraPoses, height: int, width: int) -> np.ndarray:
    """Project world points (N, 3) into every frame: pixel-index coordinates (F, N, 2)."""
    pts = np.asarray(points_w, dtype=np.float64).reshape(-1, 3)
    cam = np.einsum("fij,nj->fni", poses.w2c[:, :, :3], pts) + poses.w2c[:, None, :, 3]
    z = cam[..., 2]
    fx = poses.intrinsics[:, None, 0] * width
    fy = poses.intrinsics[:, None, 1] * height
    cx = poses.intrinsics[:, None, 2] * width
    cy = poses.intrinsics[:, None, 3] * height
    u = fx * cam[..., 0] / z + cx - 0.5
    v = fy * cam[..., 1] / z + cy - 0.5
    return np.stack([u, v], -1)


def unproject_to_plane(pix: np.ndarray, poses: CameraPoses, height: int, width: int) -> np.ndarray:
    """World points (N, 3) on the plane at depth 1 in front of camera 0 seen at frame-0 pixels (N, 2)."""
    pix = np.asarray(pix, dtype=np.float64).reshape(-1, 2)
    fx, fy, cx, cy = poses.intrinsics[0] * [width, height, width, height]
    pc = np.stack([(pix[:, 0] + 0.5 - cx) / fx, (pix[:, 1] + 0.5 - cy) / fy, np.ones(len(pix))], -1)
    r, t = poses.w2c[0, :, :3], poses.w2c[0, :, 3]
    return (pc - t) @ r  # R^T (p - t), row-vector form


def fit_similarity(
    src: np.ndarray, dst: np.ndarray, center: tuple[float, float]
) -> tuple[float, float, float]:
    """Least-squares (s, tx, ty) with dst - c = s * (src - c) + t (no rotation)."""
    c = np.asarray(center, dtype=np.float64)
    a = np.asarray(src, dtype=np.float64) - c
    b = np.asarray(dst, dtype=np.float64) - c
    am, bm = a.mean(0), b.mean(0)
    denom = float(((a - am) ** 2).sum())
    s = float(((a - am) * (b - bm)).sum() / denom) if denom > 0 else 1.0
    t = bm - s * am
    return s, float(t[0]), float(t[1])


def plane_image_motion(poses: CameraPoses, height: int, width: int) -> np.ndarray:
    """Per frame (F, 3): similarity (scale, tx, ty) taking frame-0 pixels of the depth-1 plane to
    frame-t pixels, about the image centre. Exact for ShapesWorld poses; a fit for rotated ones."""
    c = ((width - 1) / 2, (height - 1) / 2)
    q = min(height, width) / 4
    grid = np.array([[0, 0], [-q, -q], [q, -q], [-q, q], [q, q]], dtype=np.float64) + c
    world = unproject_to_plane(grid, poses, height, width)
    img = project(world, poses, height, width)
    return np.array([fit_similarity(grid, img[t], c) for t in range(len(poses))])


# Thresholds for turning an end-to-end image motion into a label (see docs/shapesworld.md).
ZOOM_LOG_THRESHOLD = 0.10  # |log scale| over the clip
PAN_FRACTION_THRESHOLD = 0.08  # |translation| over the clip, fraction of min(H, W)


def camera_label_from_motion(scale: float, tx: float, ty: float, height: int, width: int) -> str:
    """Camera label from the content's similarity motion between the first and last frame."""
    half = min(height, width) / 2
    shift = math.hypot(tx, ty)
    if scale > 0 and abs(math.log(scale)) >= ZOOM_LOG_THRESHOLD and abs(scale - 1) * half >= shift:
        return "zoom_in" if scale > 1 else "zoom_out"
    if shift >= PAN_FRACTION_THRESHOLD * min(height, width):
        if abs(tx) >= abs(ty):
            return "pan_right" if tx < 0 else "pan_left"
        return "pan_up" if ty > 0 else "pan_down"
    return "static"


def camera_label_from_poses(poses: CameraPoses, height: int, width: int) -> str:
    """Camera label (see CAMERAS) implied by a pose sequence."""
    s, tx, ty = plane_image_motion(poses, height, width)[-1]
    return camera_label_from_motion(s, tx, ty, height, width)


def write_pose_file(
    path: str | Path, poses: CameraPoses, fps: float = 8.0, header: str = POSE_HEADER
) -> None:
    """Write a CameraCtrl / RealEstate10K pose file (the format of :mod:`kinema.control.camera`)."""
    frames = [
        CameraPose(*k, w2c=m, timestamp=float(round(i * 1e6 / fps)))
        for i, (k, m) in enumerate(zip(poses.intrinsics, poses.w2c))
    ]
    control_camera.write_pose_file(path, frames, header=header)


def read_pose_file(path: str | Path) -> CameraPoses:
    """Read a CameraCtrl pose file, with or without the header line (rules of kinema.control.camera)."""
    frames = control_camera.read_pose_file(path)
    return CameraPoses(
        np.array([[p.fx, p.fy, p.cx, p.cy] for p in frames]), np.stack([p.w2c for p in frames])
    )


def project_track(points_w: np.ndarray, poses: CameraPoses, height: int, width: int) -> np.ndarray:
    """Project one world point per frame (F, 3) with that frame's camera: pixel indices (F, 2)."""
    pts = np.asarray(points_w, dtype=np.float64).reshape(-1, 3)
    cam = np.einsum("fij,fj->fi", poses.w2c[:, :, :3], pts) + poses.w2c[:, :, 3]
    k = poses.intrinsics * [width, height, width, height]
    u = k[:, 0] * cam[:, 0] / cam[:, 2] + k[:, 2] - 0.5
    v = k[:, 1] * cam[:, 1] / cam[:, 2] + k[:, 3] - 0.5
    return np.stack([u, v], -1)


# Depth (preset pose units) of the plane the preset poses are calibrated on: under ``preset_poses``, a plane at
# this depth moves on screen exactly as the clip's background does. The Camera model's camera-aware RoPE
# (transformer ``camera_rope_depth``) uses the same depth, so its positions follow the pictures. At 8, speed 1
# gives a 10.7 px pan, a 1.54x zoom-in and a 0.74x zoom-out at 64x64, inside or near ShapesWorld's ranges.
PRESET_PLANE_DEPTH = 8.0


def _preset_magnitude(label: str, frames: int, speed: float) -> float:
    preset = control_camera.camera_preset(label, frames, speed=speed)
    s, tx, ty = control_camera.plane_motion([preset[0], preset[-1]], 64, 64, PRESET_PLANE_DEPTH)[-1]
    return float(np.hypot(tx, ty)) if label.startswith("pan_") else abs(float(np.log(s)))


def preset_poses(label: str, poses: CameraPoses) -> CameraPoses:
    """A clip's camera ``poses`` as ``kinema generate --camera LABEL`` describes it (``control.camera_preset``).

    ShapesWorld poses are in its own units (a pan travels 0.20-0.30, focal = frame width, the plane at
    depth 1), while the preset poses a user passes follow the reference CameraCtrl presets (1.5 units per
    pan, 3 per zoom at speed 1, the default intrinsics). A camera model is trained on these so that
    ``--camera pan_left`` is what it has seen. The speed is chosen so that a plane at ``PRESET_PLANE_DEPTH``
    moves on screen as this clip's background does (end-to-end shift for pans, log scale for zooms).
    """
    centers = -np.einsum("fji,fj->fi", poses.w2c[:, :, :3], poses.w2c[:, :, 3])  # C = -R^T t
    speed = 0.0
    if label != "static":
        scale, tx, ty = plane_image_motion(poses, 64, 64)[-1]
        target = float(np.hypot(tx, ty)) if label.startswith("pan_") else abs(float(np.log(scale)))
        lo, hi = 0.0, 1.0
        while _preset_magnitude(label, len(centers), hi) < target and hi < 64:
            hi *= 2
        for _ in range(40):  # magnitude grows monotonically with speed: bisection
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _preset_magnitude(label, len(centers), mid) < target else (lo, mid)
        speed = (lo + hi) / 2
    frames = control_camera.camera_preset(label, len(centers), speed=speed)
    return CameraPoses(
        np.array([[p.fx, p.fy, p.cx, p.cy] for p in frames]), np.stack([p.w2c for p in frames])
    )
