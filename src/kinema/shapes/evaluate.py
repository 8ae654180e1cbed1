"""ShapesWorld evaluator: scores a video against its scene spec and conditioning signals.

Per clip: object colour / shape / motion direction / path accuracy, trajectory error against
given tracks, camera-motion accuracy, first/last-frame PSNR (I2V), temporal flicker and
centroid jerk. ``evaluate_clips`` aggregates; ``format_table`` / ``write_results_json`` report.
Run ``python -m kinema.shapes.evaluate --selftest 200`` to measure the evaluator itself on
ground-truth and corrupted clips.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .camera import CameraPoses, camera_label_from_motion, camera_label_from_poses, plane_image_motion
from .color import delta_e
from .detect import Blob, Segmentation, classify_shape, dilate, estimate_camera_motion, palette_lab, segment
from .spec import DIRECTIONS, STATIC, SceneSpec

MIN_TRAVEL_FRACTION = 0.10  # net displacement below this fraction of min(H, W) counts as static
MONOTONIC_FRACTION = 0.70  # share of frame steps that must advance along the net displacement
STRAIGHT_MAX_BEND = 0.06  # perpendicular deviation / chord below this is "straight"
MIN_PRESENCE = 0.30  # a colour must be seen in this share of frames to count as an object
TRACK_MISS_PENALTY = 0.25  # a frame without detection costs this fraction of min(H, W) in px
PSNR_CAP = 100.0


@dataclass
class Conditions:
    """What the generator was conditioned on (all optional).

    first_frame / last_frame: uint8 (H, W, 3) given frames (I2V / start-end control).
    tracks: (n_objects, F, 2) pixel-index (x, y) per object in spec order (trajectory control).
    camera: expected camera label; poses: CameraCtrl poses (label derived from them if camera unset).
    """

    first_frame: np.ndarray | None = None
    last_frame: np.ndarray | None = None
    tracks: np.ndarray | None = None
    camera: str | None = None
    poses: CameraPoses | None = None

    @staticmethod
    def coerce(c: Conditions | Mapping[str, Any] | None) -> Conditions:
        if c is None:
            return Conditions()
        if isinstance(c, Conditions):
            return c
        return Conditions(**dict(c))


@dataclass
class ObjectResult:
    color: str
    shape: str
    direction: str | None
    path: str
    detected: bool = False
    pred_color: str = "none"
    pred_shape: str = "none"
    pred_direction: str = "none"
    pred_path: str = "none"
    presence: float = 0.0  # share of frames in which the object was found
    traj_err_px: float | None = None
    jerk_px: float | None = None

    @property
    def color_ok(self) -> bool:
        return self.pred_color == self.color

    @property
    def shape_ok(self) -> bool:
        return self.pred_shape == self.shape

    @property
    def direction_ok(self) -> bool | None:
        return None if self.direction is None else self.pred_direction == self.direction

    @property
    def path_ok(self) -> bool | None:
        return None if self.direction not in DIRECTIONS else self.pred_path == self.path


@dataclass
class ClipResult:
    objects: list[ObjectResult]
    camera: str | None = None
    pred_camera: str = "static"
    camera_motion: tuple[float, float, float] = (1.0, 0.0, 0.0)  # estimated end-to-end (s, tx, ty)
    camera_err_px: float | None = None
    first_frame_psnr: float | None = None
    last_frame_psnr: float | None = None
    flicker: float = 0.0
    background_std: float = 0.0  # L* texture contrast of the background (a flat one shows no camera motion)
    extra_objects: int = 0

    @property
    def camera_ok(self) -> bool | None:
        return None if self.camera is None else self.pred_camera == self.camera

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["camera_ok"] = self.camera_ok
        for o, od in zip(self.objects, d["objects"]):
            od.update(
                color_ok=o.color_ok, shape_ok=o.shape_ok, direction_ok=o.direction_ok, path_ok=o.path_ok
            )
        return d


# ------------------------------------------------------------------------------------------------
# Basic measures
# ------------------------------------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 arrays of equal shape (capped at 100 dB for identical input)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = float(((a - b) ** 2).mean())
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def reconstruction_psnr(video: np.ndarray, recon: np.ndarray) -> dict[str, Any]:
    """VAE reconstruction quality: overall PSNR (from the pooled MSE) and per-frame PSNR."""
    video, recon = np.asarray(video), np.asarray(recon)
    if recon.dtype != np.uint8:
        recon = np.clip(np.rint(recon), 0, 255).astype(np.uint8)
    per_frame = [psnr(a, b) for a, b in zip(video, recon)]
    return {"psnr": psnr(video, recon), "per_frame": per_frame, "min": min(per_frame)}


def flicker_score(video: np.ndarray, fg: np.ndarray) -> float:
    """Mean |Y[t+1] - 2 Y[t] + Y[t-1]| (grey levels) on background pixels.

    Second temporal differences vanish for static content and nearly so for smooth constant-velocity
    camera motion, but not for brightness flicker or per-frame noise.
    """
    if len(video) < 3:
        return 0.0
    y = np.asarray(video, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    bg = ~dilate(fg, 2)
    ok = bg[2:] & bg[1:-1] & bg[:-2]
    d2 = np.abs(y[2:] - 2 * y[1:-1] + y[:-2])
    return float(d2[ok].mean()) if ok.any() else 0.0


def background_texture(lab: np.ndarray, fg: np.ndarray) -> float:
    """Mean over frames of the L* standard deviation of background pixels (objects dilated by 4 px
    excluded): ~0 for a plain background, 1.5-3 for ShapesWorld's default textures. Camera motion can
    only be seen (and measured) on a textured background."""
    bg = ~dilate(fg, 4)
    lum = np.asarray(lab)[..., 0]
    per_frame = [float(lum[t][bg[t]].std()) for t in range(len(lum)) if bg[t].sum() > 1]
    return float(np.mean(per_frame)) if per_frame else 0.0


def _resample_track(track: np.ndarray, n: int) -> np.ndarray:
    """Linearly resample a (F, 2) track to n frames (same normalised time span)."""
    track = np.asarray(track, dtype=np.float64)
    if len(track) == n:
        return track
    src = np.linspace(0, 1, len(track))
    dst = np.linspace(0, 1, n)
    return np.stack([np.interp(dst, src, track[:, k]) for k in range(2)], -1)


# ------------------------------------------------------------------------------------------------
# Motion analysis
# ------------------------------------------------------------------------------------------------
def classify_direction(
    frames: np.ndarray, pos: np.ndarray, height: int, width: int
) -> tuple[str, np.ndarray]:
    """8-way direction of a (camera-compensated) centroid sequence, "static" or "erratic".

    Uses the net start-to-end displacement (mean of the first two vs last two detections) and
    requires most frame steps to advance along it, so shuffled frames do not pass.
    """
    if len(pos) < 3:
        return "unknown", np.zeros(2)
    disp = pos[-2:].mean(0) - pos[:2].mean(0)
    dist = float(np.hypot(*disp))
    if dist < MIN_TRAVEL_FRACTION * min(height, width):
        return STATIC, disp
    steps = np.diff(pos, axis=0) / np.maximum(np.diff(frames), 1)[:, None]
    along = steps @ (disp / dist)
    if (along > 0).mean() < MONOTONIC_FRACTION:
        return "erratic", disp
    ang = math.degrees(math.atan2(-disp[1], disp[0]))  # image y points down
    names = ["right", "up_right", "up", "up_left", "left", "down_left", "down", "down_right"]
    return names[int(round(ang / 45.0)) % 8], disp


def classify_path(frames: np.ndarray, pos: np.ndarray) -> str:
    """ "straight", "arc" (one bulge) or "wave" (S-curve) from perpendicular deviation to the chord."""
    chord = pos[-1] - pos[0]
    length = float(np.hypot(*chord))
    if len(pos) < 5 or length < 1e-6:
        return "unknown"
    unit = chord / length
    normal = np.array([-unit[1], unit[0]])
    rel = pos - pos[0]
    u = np.clip(rel @ unit / length, 0.0, 1.0)
    e = rel @ normal / length
    basis = np.stack([np.sin(np.pi * u), np.sin(2 * np.pi * u)], -1)
    (b1, b2), *_ = np.linalg.lstsq(basis, e, rcond=None)
    if max(abs(b1), abs(b2)) < STRAIGHT_MAX_BEND:
        return "straight"
    return "arc" if abs(b1) >= abs(b2) else "wave"


def _to_frame0(
    pos: np.ndarray, frames: np.ndarray, motion: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Undo the camera: map frame-t pixel positions to frame-0 (world plane) pixels."""
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    m = motion[frames]
    return (pos - c - m[:, 1:]) / m[:, :1] + c


# ------------------------------------------------------------------------------------------------
# Object tracks
# ------------------------------------------------------------------------------------------------
@dataclass
class _Track:
    color: str
    lab: np.ndarray
    blobs: list[Blob] = field(default_factory=list)


def _tracks_by_color(seg: Segmentation) -> list[_Track]:
    """Group blobs by colour class; per frame keep the largest blob of each class."""
    n_frames = len(seg.blobs)
    by_color: dict[str, dict[int, Blob]] = defaultdict(dict)
    for frame_blobs in seg.blobs:
        for b in frame_blobs:  # largest first
            by_color[b.color].setdefault(b.frame, b)
    tracks = []
    for color, per_frame in by_color.items():
        if len(per_frame) < MIN_PRESENCE * n_frames:
            continue
        blobs = [per_frame[t] for t in sorted(per_frame)]
        lab = np.median(np.stack([b.lab for b in blobs]), axis=0)
        tracks.append(_Track(color, lab, blobs))
    tracks.sort(key=lambda tr: (-len(tr.blobs), -sum(b.area for b in tr.blobs)))
    return tracks


def _match(spec: SceneSpec, tracks: list[_Track]) -> list[_Track | None]:
    """Greedy colour matching of spec objects to detected tracks (exact colour first, then delta-E)."""
    pairs = []
    for i, ob in enumerate(spec.objects):
        for j, tr in enumerate(tracks):
            cost = 0.0 if tr.color == ob.color else float(delta_e(tr.lab, palette_lab(ob.color))) + 1.0
            pairs.append((cost, i, j))
    out: list[_Track | None] = [None] * len(spec.objects)
    used: set[int] = set()
    for _, i, j in sorted(pairs):
        if out[i] is None and j not in used:
            out[i] = tracks[j]
            used.add(j)
    return out


# ------------------------------------------------------------------------------------------------
# Clip evaluation
# ------------------------------------------------------------------------------------------------
def expected_camera(spec: SceneSpec, cond: Conditions, height: int, width: int) -> str | None:
    """Camera label the clip should show: explicit condition, else poses, else the spec."""
    if cond.camera is not None:
        return cond.camera
    if cond.poses is not None:
        return camera_label_from_poses(cond.poses, height, width)
    return spec.camera


def evaluate_clip(
    video: np.ndarray, spec: SceneSpec, conditions: Conditions | Mapping[str, Any] | None = None
) -> ClipResult:
    """Score one uint8 video (F, H, W, 3) against its spec and conditions."""
    cond = Conditions.coerce(conditions)
    video = np.asarray(video)
    if video.dtype != np.uint8:
        raise ValueError(f"expected a uint8 video, got {video.dtype}")
    nf, h, w, _ = video.shape
    seg = segment(video)
    motion = estimate_camera_motion(video, seg.objects, seg.lab)
    tracks = _tracks_by_color(seg)
    matched = _match(spec, tracks)

    objects = []
    for k, (ob, tr) in enumerate(zip(spec.objects, matched)):
        res = ObjectResult(ob.color, ob.shape, ob.direction, ob.path)
        given = None
        if cond.tracks is not None and k < len(cond.tracks):
            given = _resample_track(cond.tracks[k], nf)
        if tr is None:
            if given is not None:
                res.traj_err_px = TRACK_MISS_PENALTY * min(h, w)
            objects.append(res)
            continue
        res.detected = True
        res.pred_color = tr.color
        res.presence = len(tr.blobs) / nf
        res.pred_shape, _ = classify_shape(tr.blobs)
        frames = np.array([b.frame for b in tr.blobs])
        pos = np.array([b.centroid for b in tr.blobs], dtype=np.float64)
        world = _to_frame0(pos, frames, motion, h, w)
        res.pred_direction, _ = classify_direction(frames, world, h, w)
        if res.pred_direction in DIRECTIONS:
            res.pred_path = classify_path(frames, world)
        if len(pos) >= 3:
            res.jerk_px = float(np.linalg.norm(pos[2:] - 2 * pos[1:-1] + pos[:-2], axis=1).mean())
        if given is not None:
            err = np.full(nf, TRACK_MISS_PENALTY * min(h, w))
            err[frames] = np.linalg.norm(pos - given[frames], axis=1)
            res.traj_err_px = float(err.mean())
        objects.append(res)

    result = ClipResult(objects, extra_objects=max(0, len(tracks) - len(spec.objects)))
    result.camera = expected_camera(spec, cond, h, w)
    s, tx, ty = motion[-1]
    result.camera_motion = (float(s), float(tx), float(ty))
    result.pred_camera = camera_label_from_motion(s, tx, ty, h, w)
    if cond.poses is not None and len(cond.poses) == nf:
        ref = plane_image_motion(cond.poses, h, w)
        result.camera_err_px = _motion_error(motion, ref, h, w)
    if cond.first_frame is not None:
        result.first_frame_psnr = psnr(video[0], cond.first_frame)
    if cond.last_frame is not None:
        result.last_frame_psnr = psnr(video[-1], cond.last_frame)
    result.flicker = flicker_score(video, seg.objects)
    result.background_std = background_texture(seg.lab, seg.objects)
    return result


def _motion_error(est: np.ndarray, ref: np.ndarray, h: int, w: int) -> float:
    """Mean px distance between where two similarity sequences send the quarter points."""
    q = min(h, w) / 4
    pts = np.array([[-q, -q], [q, -q], [-q, q], [q, q]])  # relative to the centre, as the similarities are
    a = est[:, None, :1] * pts[None] + est[:, None, 1:]
    b = ref[:, None, :1] * pts[None] + ref[:, None, 1:]
    return float(np.linalg.norm(a - b, axis=-1).mean())


# ------------------------------------------------------------------------------------------------
# Aggregation and reporting
# ------------------------------------------------------------------------------------------------
def _mean(xs: list) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def aggregate(results: list[ClipResult]) -> dict[str, Any]:
    """Rates and means over clip results (None where a metric had nothing to score)."""
    objs = [o for r in results for o in r.objects]
    return {
        "n_clips": len(results),
        "n_objects": len(objs),
        "detect_rate": _mean([o.detected for o in objs]),
        "color_acc": _mean([o.color_ok for o in objs]),
        "shape_acc": _mean([o.shape_ok for o in objs]),
        "direction_acc": _mean([o.direction_ok for o in objs if o.direction_ok is not None]),
        "direction_acc_moving": _mean([o.direction_ok for o in objs if o.direction in DIRECTIONS]),
        "path_acc": _mean([o.path_ok for o in objs if o.path_ok is not None]),
        "traj_err_px": _mean([o.traj_err_px for o in objs]),
        "traj_within_2px": _mean([o.traj_err_px < 2.0 for o in objs if o.traj_err_px is not None]),
        "jerk_px": _mean([o.jerk_px for o in objs]),
        "camera_acc": _mean([r.camera_ok for r in results if r.camera_ok is not None]),
        "camera_acc_moving": _mean([r.camera_ok for r in results if r.camera not in (None, "static")]),
        "camera_err_px": _mean([r.camera_err_px for r in results]),
        "first_frame_psnr": _mean([r.first_frame_psnr for r in results]),
        "last_frame_psnr": _mean([r.last_frame_psnr for r in results]),
        "flicker": _mean([r.flicker for r in results]),
        "background_std": _mean([r.background_std for r in results]),
        "extra_objects": _mean([r.extra_objects for r in results]),
    }


def evaluate_clips(
    items: Iterable[tuple[np.ndarray, SceneSpec, Conditions | Mapping[str, Any] | None]],
    keep_clips: bool = False,
) -> dict[str, Any]:
    """Evaluate (video, spec, conditions) triples and aggregate (``clips`` holds per-clip dicts)."""
    results = [evaluate_clip(v, s, c) for v, s, c in items]
    out = aggregate(results)
    if keep_clips:
        out["clips"] = [r.to_dict() for r in results]
    return out


_ROWS = [
    ("n_clips", "clips", "{:.0f}"),
    ("n_objects", "objects", "{:.0f}"),
    ("detect_rate", "object detected", "{:.1%}"),
    ("color_acc", "color accuracy", "{:.1%}"),
    ("shape_acc", "shape accuracy", "{:.1%}"),
    ("direction_acc", "direction accuracy", "{:.1%}"),
    ("direction_acc_moving", "  moving objects only", "{:.1%}"),
    ("path_acc", "path accuracy", "{:.1%}"),
    ("traj_err_px", "trajectory error (px)", "{:.2f}"),
    ("traj_within_2px", "trajectory < 2 px", "{:.1%}"),
    ("jerk_px", "centroid jerk (px)", "{:.2f}"),
    ("camera_acc", "camera accuracy", "{:.1%}"),
    ("camera_acc_moving", "  moving cameras only", "{:.1%}"),
    ("camera_err_px", "camera motion error (px)", "{:.2f}"),
    ("first_frame_psnr", "first-frame PSNR (dB)", "{:.2f}"),
    ("last_frame_psnr", "last-frame PSNR (dB)", "{:.2f}"),
    ("flicker", "flicker (grey levels)", "{:.2f}"),
    ("background_std", "background texture (L* std)", "{:.2f}"),
    ("extra_objects", "extra objects / clip", "{:.2f}"),
]


def format_table(results: Mapping[str, Any] | Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text table. Accepts one aggregate dict or {column name: aggregate dict}."""
    cols = dict(results) if all(isinstance(v, Mapping) for v in results.values()) else {"value": results}
    names = list(cols)
    width = max(len(label) for _, label, _ in _ROWS)
    colw = [max(len(n), 9) for n in names]
    lines = ["metric".ljust(width) + "  " + "  ".join(n.rjust(cw) for n, cw in zip(names, colw))]
    lines.append("-" * len(lines[0]))
    for key, label, fmt in _ROWS:
        vals = [cols[n].get(key) for n in names]
        if all(v is None for v in vals):
            continue
        cells = ["-" if v is None else fmt.format(v) for v in vals]
        lines.append(label.ljust(width) + "  " + "  ".join(c.rjust(cw) for c, cw in zip(cells, colw)))
    return "\n".join(lines)


def write_results_json(results: Mapping[str, Any], path: str | Path) -> None:
    """Write results as JSON (numpy scalars converted)."""

    def conv(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o)}")

    Path(path).write_text(json.dumps(results, indent=2, ensure_ascii=False, default=conv) + "\n")


# ------------------------------------------------------------------------------------------------
# Self-test: the evaluator on ground truth and on corrupted clips
# ------------------------------------------------------------------------------------------------
def selftest(
    n: int, seed: int = 0, height: int = 64, width: int = 64, frames: int = 17, corruptions: bool = True
) -> dict[str, dict[str, Any]]:
    """Evaluate ``n`` ground-truth clips (all conditions given) and, optionally, corrupted copies."""
    from .corrupt import CORRUPTIONS  # local import: only the self-test needs it
    from .world import random_clip

    clips = [
        random_clip(seed * 100_003 + i, height, width, frames, split="all", camera_prob=0.5) for i in range(n)
    ]
    out: dict[str, dict[str, Any]] = {}

    def items(transform):
        for i, c in enumerate(clips):
            video = transform(c, np.random.default_rng(seed + i)) if transform else c.frames
            cond = Conditions(c.frames[0], c.frames[-1], c.tracks, None, c.poses)
            yield video, c.spec, cond

    out["ground truth"] = evaluate_clips(items(None))
    if corruptions:
        for name, fn in CORRUPTIONS.items():
            out[name] = evaluate_clips(items(fn))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--selftest", type=int, metavar="N", help="evaluate N rendered ground-truth clips")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="square frame size")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--no-corruptions", action="store_true")
    ap.add_argument(
        "--dataset", type=Path, help="evaluate the videos of a dataset directory (metadata.jsonl)"
    )
    ap.add_argument("--limit", type=int, default=None, help="with --dataset: at most this many clips")
    ap.add_argument("--json", type=Path, help="also write results here")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.selftest:
        res = selftest(args.selftest, args.seed, args.size, args.size, args.frames, not args.no_corruptions)
    elif args.dataset:
        from .dataset import evaluate_dataset

        res = {"dataset": evaluate_dataset(args.dataset, limit=args.limit)}
    else:
        ap.error("give --selftest N or --dataset DIR")
    print(format_table(res))
    print(f"({time.time() - t0:.1f} s)")
    if args.json:
        write_results_json(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
