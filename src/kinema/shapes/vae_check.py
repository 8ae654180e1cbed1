"""VAE reconstruction PSNR on held-out ShapesWorld clips (the gate of the training recipe).

``python -m kinema.shapes.vae_check VAE_FOLDER [--clips N] [--min-psnr 28]`` renders N held-out clips (deterministic,
never seen in training), encodes them with the posterior mode, decodes and prints the pooled PSNR, the
worst clip and a foreground PSNR (discs of 0.75 x the object size around each track point), which tells an autoencoder
that draws only the background (~20 dB) from one that draws the shapes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .evaluate import psnr
from .world import render_scene, sample_scene


def held_out_clips(n: int, seed: int = 0, height: int = 64, width: int = 64, frames: int = 17) -> list:
    """n held-out clips: random held-out scenes (1-2 objects, textures, camera motion) rendered in memory."""
    clips = []
    for i in range(n):
        rng = np.random.default_rng([seed, 7919, i])
        clips.append(render_scene(sample_scene(rng, None, height, width, frames, split="held_out")))
    return clips


@torch.no_grad()
def reconstruct(vae, frames: np.ndarray) -> np.ndarray:
    """uint8 (F, H, W, 3) -> reconstructed uint8 (F, H, W, 3) through the posterior mode."""
    x = torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None]
    x = x.to(dtype=vae.dtype)
    z = vae.encode(x).mode()
    y = vae.decode(z)
    y = y.sample if hasattr(y, "sample") else y
    y = y[0].float().clamp(-1, 1).add(1).mul(127.5).permute(1, 2, 3, 0)
    return y.round().to(torch.uint8).numpy()


def vae_report(vae, clips: list) -> dict[str, Any]:
    """Pooled and per-clip PSNR of ``vae`` on ``clips`` (list of ``Clip``)."""
    sq_err, fg_err, fg_n, per_clip = 0.0, 0.0, 0, []
    for clip in clips:
        recon = reconstruct(vae, clip.frames)
        diff = clip.frames.astype(np.float64) - recon.astype(np.float64)
        sq_err += float((diff**2).mean())
        per_clip.append(psnr(clip.frames, recon))
        tracks = np.asarray(clip.tracks)
        if tracks.size:
            mask = _track_mask(tracks, np.asarray(clip.sizes), clip.frames.shape[1:3])
            fg_err += float((diff[mask] ** 2).sum())
            fg_n += int(mask.sum()) * 3
    mse = sq_err / max(len(clips), 1)
    fg_mse = fg_err / max(fg_n, 1)
    return {
        "psnr": _psnr_from_mse(mse),
        "min_clip_psnr": min(per_clip) if per_clip else None,
        "foreground_psnr": _psnr_from_mse(fg_mse) if fg_n else None,
        "clips": len(clips),
    }


def _track_mask(tracks: np.ndarray, sizes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(F, H, W) bool: discs of radius 0.75*size around each object's track point."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    frames = tracks.shape[1]
    mask = np.zeros((frames, h, w), dtype=bool)
    for obj in range(tracks.shape[0]):
        for f in range(frames):
            x, y = tracks[obj, f]
            r = 0.75 * sizes[obj, f]
            mask[f] |= (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    return mask


def _psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else float(10 * np.log10(255.0**2 / mse))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinema.shapes.vae_check", description=__doc__)
    parser.add_argument("vae", help="a VideoVAE folder (config.json + weights)")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=17, help="frames per clip (1 = images)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--min-psnr", type=float, default=None, help="exit with status 1 below this PSNR (the gate)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from kinema.models import VideoVAE

    folder = Path(args.vae)
    if not (folder / "config.json").is_file():
        print(f"error: {folder} is not a VAE folder (no config.json)", file=sys.stderr)
        return 2
    vae = VideoVAE.from_pretrained(folder).eval()
    report = vae_report(vae, held_out_clips(args.clips, args.seed, frames=args.frames))
    print(json.dumps(report))
    if args.min_psnr is not None and report["psnr"] < args.min_psnr:
        print(f"VAE gate failed: {report['psnr']:.2f} dB < {args.min_psnr:g} dB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
