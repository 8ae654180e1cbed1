"""Write ShapesWorld training sets: H.264 mp4 clips (or PNG images), CameraCtrl poses, metadata.jsonl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from .camera import read_pose_file, write_pose_file
from .prompts import LANGUAGES, make_prompts
from .spec import ObjectSpec, SceneSpec, spec_is_held_out
from .world import render_scene, sample_scene

DEFAULT_FPS = 8


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = DEFAULT_FPS,
    crf: int = 10,
    pix_fmt: str = "yuv444p",
    preset: str = "slow",
) -> None:
    """Encode uint8 (F, H, W, 3) RGB frames as H.264 mp4 with PyAV (H and W must be even for 4:2:0).

    crf=0 with pix_fmt="yuv444p" is lossless up to the RGB->YUV conversion. Note: libx264 output
    is not bit-exact across runs even single-threaded (about 1 encode in 100 differed in a few
    P/B-frames by a few grey levels in our tests), so compare decoded clips with a tolerance.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        # Single-threaded: deterministic output and no oversubscription on small CPUs.
        stream.options = {"crf": str(crf), "preset": preset, "threads": "1"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            # Explicit timestamps: frame i is shown at i / fps.
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: str | Path) -> np.ndarray:
    """Decode every frame of a video file to uint8 (F, H, W, 3) RGB."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _round_tracks(tracks: np.ndarray) -> list:
    return np.round(np.asarray(tracks, dtype=np.float64), 2).tolist()


def write_dataset(
    out_dir: str | Path,
    n_clips: int,
    seed: int = 0,
    height: int = 64,
    width: int = 64,
    frames: int = 17,
    split: str = "train",
    image_fraction: float = 0.0,
    fps: int = DEFAULT_FPS,
    crf: int = 10,
    pix_fmt: str = "yuv444p",
    langs: tuple[str, ...] = LANGUAGES,
    phrasings: int = 3,
    two_object_prob: float = 0.35,
    camera_prob: float = 0.3,
    mention_background_prob: float = 0.3,
    mention_camera_prob: float = 0.7,
    bold_textures: bool = False,
    floor: bool = False,
) -> Path:
    """Render ``n_clips`` samples into ``out_dir`` and return the path of ``metadata.jsonl``.

    Layout: videos/NNNNNN.mp4, poses/NNNNNN.txt, images/NNNNNN.png, metadata.jsonl. Sample i is
    drawn from numpy's Generator seeded with (seed, i), so rendered frames, poses, PNGs and
    metadata are deterministic and any prefix of a larger set equals a smaller set (the mp4
    bitstream itself can differ slightly, see ``write_video``). split="train" never uses a
    held-out combination.
    """
    out = Path(out_dir)
    for sub in ("videos", "poses", "images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    meta_path = out / "metadata.jsonl"
    with meta_path.open("w", encoding="utf-8") as meta:
        for i in range(n_clips):
            rng = np.random.default_rng([seed, i])
            is_image = rng.random() < image_fraction
            scene = sample_scene(
                rng,
                None,
                height,
                width,
                frames,
                split,
                two_object_prob=two_object_prob,
                camera_prob=0.0 if is_image else camera_prob,
                bold_textures=bold_textures,
                floor=floor,
            )
            clip = render_scene(scene)
            spec = clip.spec
            rec: dict[str, Any] = {"width": width, "height": height}
            if is_image:
                t = int(rng.integers(frames))
                name = f"images/{i:06d}.png"
                Image.fromarray(clip.frames[t]).save(out / name)
                spec = SceneSpec(
                    tuple(ObjectSpec(o.color, o.shape) for o in spec.objects), spec.background, None
                )
                mention_bg = bool(rng.random() < mention_background_prob)
                texts = make_prompts(spec, rng, phrasings, langs, mention_bg, False)
                rec.update(
                    type="image",
                    file_path=name,
                    num_frames=1,
                    tracks=_round_tracks(clip.tracks[:, t : t + 1]),
                )
                rec.update(camera="static", pose_file=None)
            else:
                name = f"videos/{i:06d}.mp4"
                pose_name = f"poses/{i:06d}.txt"
                write_video(out / name, clip.frames, fps, crf, pix_fmt)
                write_pose_file(out / pose_name, clip.poses, fps)
                mention_bg = bool(rng.random() < mention_background_prob)
                cam_p = mention_camera_prob if spec.camera != "static" else 0.1
                mention_cam = bool(rng.random() < cam_p)
                texts = make_prompts(spec, rng, phrasings, langs, mention_bg, mention_cam)
                rec.update(
                    type="video",
                    file_path=name,
                    num_frames=frames,
                    fps=fps,
                    tracks=_round_tracks(clip.tracks),
                )
                rec.update(camera=clip.camera, pose_file=pose_name)
            pool = [t for lang in langs for t in texts[lang]]
            rec["text"] = pool[int(rng.integers(len(pool)))]
            rec["texts"] = texts
            rec["spec"] = spec.to_dict()
            rec["held_out"] = spec_is_held_out(spec)
            meta.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return meta_path


def load_metadata(root: str | Path) -> list[dict[str, Any]]:
    """Records of ``root/metadata.jsonl``."""
    lines = (Path(root) / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def iter_dataset(root: str | Path, limit: int | None = None) -> Iterator[tuple[np.ndarray, SceneSpec, dict]]:
    """(decoded video, spec, conditions dict with tracks and poses) for each video record."""
    root = Path(root)
    n = 0
    for rec in load_metadata(root):
        if rec["type"] != "video":
            continue
        if limit is not None and n >= limit:
            break
        n += 1
        video = read_video(root / rec["file_path"])
        cond = {"tracks": np.array(rec["tracks"]), "poses": read_pose_file(root / rec["pose_file"])}
        yield video, SceneSpec.from_dict(rec["spec"]), cond


def evaluate_dataset(root: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Run the evaluator on a written dataset (measures the evaluator on encoded ground truth)."""
    from .evaluate import evaluate_clips

    return evaluate_clips(iter_dataset(root, limit))
