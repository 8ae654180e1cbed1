"""A tiny procedural dataset (moving squares) in kinema's metadata format, for demos and tests.

``write_moving_squares(out_dir, n_clips, seed)`` writes ``clip_XXXX.mp4`` videos of a coloured square
moving over a plain background with a camera pan, optionally still images, control videos (the
square's silhouette) and CameraCtrl pose files matching the pan, plus ``metadata.jsonl``. It is a
fallback for :mod:`kinema.shapes` (the ShapesWorld writer), which produces richer clips in the same
format. Command line: ``python -m kinema.data.synthetic OUT_DIR [--clips 8] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (230, 210, 40)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def render_clip(
    height: int, width: int, frames: int, color: tuple[int, int, int], direction: tuple[int, int],
    pan_px: float, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(video, silhouette video, camera x offsets per frame) as uint8 (F, H, W, 3) and float (F,)."""
    side = max(4, min(height, width) // 4)
    y0 = rng.uniform(side, height - 2 * side)
    x0 = rng.uniform(side, width - 2 * side)
    speed = min(height, width) / 2 / max(frames - 1, 1)
    background = np.array(rng.integers(60, 180, size=3), dtype=np.uint8)
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    silhouette = np.zeros((frames, height, width, 3), dtype=np.uint8)
    cam = np.linspace(0.0, pan_px, frames)
    yy, xx = np.mgrid[0:height, 0:width]
    for t in range(frames):
        # The camera pans right by cam[t] px: the scene (and its stripes) slides left on screen.
        stripes = ((xx + cam[t]) // 8 % 2).astype(np.uint8) * 20
        video[t] = background + stripes[..., None]
        top = int(round(y0 + direction[1] * speed * t))
        left = int(round(x0 + direction[0] * speed * t - cam[t]))
        ys, xs = slice(max(top, 0), max(top + side, 0)), slice(max(left, 0), max(left + side, 0))
        video[t, ys, xs] = color
        silhouette[t, ys, xs] = 255
    return video, silhouette, cam


def _pan_poses(cam_px: np.ndarray, width: int):
    from kinema.control.camera import DEFAULT_INTRINSICS, CameraPose

    fx = DEFAULT_INTRINSICS[0]
    poses = []
    for offset in cam_px:
        # A camera at depth-1 distance from the scene plane: x offset (px) / focal (px) in world units.
        centre_x = offset / (fx * width)
        w2c = np.eye(3, 4)
        w2c[0, 3] = -centre_x
        poses.append(CameraPose(*DEFAULT_INTRINSICS, w2c=w2c))
    return poses


def write_moving_squares(
    out_dir: str | Path,
    n_clips: int = 8,
    seed: int = 0,
    *,
    frames: int = 17,
    sizes: tuple[tuple[int, int], ...] = ((64, 64), (64, 96)),
    n_images: int = 0,
    control: bool = False,
    camera: bool = False,
    fps: int = 8,
) -> Path:
    """Write clips (+ optional images, control videos and pose files) and ``metadata.jsonl``; return it."""
    from kinema.control.camera import write_pose_file
    from kinema.videoio import write_image, write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_clips + n_images):
        is_image = i >= n_clips
        color_name = list(COLORS)[int(rng.integers(len(COLORS)))]
        dir_name = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
        height, width = sizes[i % len(sizes)]
        pan = float(rng.uniform(-8, 8)) if camera else 0.0
        video, silhouette, cam = render_clip(
            height, width, 1 if is_image else frames, COLORS[color_name], DIRECTIONS[dir_name], pan, rng
        )
        if is_image:
            name = f"image_{i:04d}.png"
            write_image(out / name, video[0])
            rows.append({"file_path": name, "text": f"a {color_name} square", "type": "image"})
            continue
        name = f"clip_{i:04d}.mp4"
        write_video(out / name, video, fps=fps)
        row = {
            "file_path": name,
            "text": f"a {color_name} square moving {dir_name}",
            "type": "video",
            "width": width,
            "height": height,
        }
        if control:
            write_video(out / f"control_{i:04d}.mp4", silhouette, fps=fps)
            row["control_file_path"] = f"control_{i:04d}.mp4"
        if camera:
            write_pose_file(out / f"poses_{i:04d}.txt", _pan_poses(cam, width))
            row["camera_file_path"] = f"poses_{i:04d}.txt"
        rows.append(row)
    meta = out / "metadata.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a tiny moving-squares dataset (mp4 + metadata.jsonl)."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--control", action="store_true", help="also write silhouette control videos")
    parser.add_argument("--camera", action="store_true", help="pan the camera and write pose files")
    args = parser.parse_args(argv)
    meta = write_moving_squares(
        args.out_dir, args.clips, args.seed, frames=args.frames, n_images=args.images,
        control=args.control, camera=args.camera,
    )  # fmt: skip
    print(f"wrote {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
