"""Loading planned samples into tensors, and collating them into shape-uniform batches.

The dataset is indexed by :class:`~kinema.data.buckets.SampleRequest` (sample + plan), so a DataLoader
with ``batch_sampler=`` a stream of request lists loads exactly what the bucket sampler planned. A file
that fails to decode never raises: the sample comes back with ``weight 0`` (its loss is excluded) and the
reason, and the batch keeps its shape. Clips that decode fewer frames than planned are zero-padded and
carry ``valid_frames`` so the loss can ignore the padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from kinema.videoio import frames_to_tensor, read_image, read_video, resize_and_center_crop

from .buckets import V51_GEOMETRY, Geometry, Plan, SampleRequest
from .cache import LatentCache
from .metadata import Sample


@dataclass(frozen=True)
class LoadOptions:
    control: bool = False  # load the control video (control_file_path) with the same plan
    camera: bool = False  # build camera latents from camera_file_path
    pixels_always: bool = False  # load pixels even when latents are cached (I2V, VAE training)
    latent_channels: int = 16
    # (height, width) of the video the pose files describe, for the intrinsics' aspect fix; None = the
    # sample's own size. Camera training passes control.pose_height/pose_width (default 720x1280, the size
    # the generation pipeline assumes), so a model sees the same Plücker latents in training and use.
    pose_size: tuple[int, int] | None = None


def load_pixels(path, plan: Plan, is_image: bool) -> tuple[torch.Tensor, int]:
    """(3, F, H, W) float32 in [-1, 1] for the plan (zero-padded) and how many frames are real."""
    if is_image:
        frames = read_image(path)[None]
    else:
        frames = read_video(path, start=plan.start, stride=plan.stride, max_frames=plan.frames).frames
    frames = resize_and_center_crop(frames, plan.height, plan.width)
    video = frames_to_tensor(frames)[0]
    valid = video.shape[1]
    if valid < plan.frames:
        pad = video.new_zeros(3, plan.frames - valid, plan.height, plan.width)
        video = torch.cat([video, pad], dim=1)
    return video, min(valid, plan.frames)


def camera_latents_for(
    sample: Sample,
    plan: Plan,
    geometry: Geometry,
    pose_size: tuple[int, int] | None = None,
    return_poses: bool = False,
):
    """Plücker camera latents (6, latent_frames, h, w), x6, for the plan's frames of the pose file.

    The pose file has one line per source frame; the aspect fix uses ``pose_size`` (default: the source
    video's size), the size of the video the poses describe (the trainer centre-crops it as CameraCtrl assumes).
    """
    from kinema.control.camera import camera_latents, plucker_embedding, read_pose_file

    poses = read_pose_file(sample.camera_path)
    wanted = [plan.start + k * plan.stride for k in range(plan.frames)]
    if wanted[-1] >= len(poses):
        raise ValueError(
            f"pose file '{sample.camera_path}' has {len(poses)} poses, the clip needs frame {wanted[-1]}"
        )
    selected = [poses[i] for i in wanted]
    plucker = plucker_embedding(
        selected, plan.height, plan.width, pose_size=pose_size or (sample.height, sample.width)
    )
    s = geometry.vae_spatial
    latents = camera_latents(plucker, geometry.latent_frames(plan.frames), plan.height // s, plan.width // s)
    return (latents, selected) if return_poses else latents


class VideoDataset(Dataset):
    def __init__(
        self,
        samples: list[Sample],
        geometry: Geometry = V51_GEOMETRY,
        options: LoadOptions | None = None,
        cache: LatentCache | None = None,
    ):
        self.samples = samples
        self.geometry = geometry
        self.options = options or LoadOptions()
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, request: SampleRequest) -> dict[str, Any]:
        sample = self.samples[request.index]
        plan = request.plan
        item: dict[str, Any] = {
            "request": request,
            "text": sample.text,
            "file_path": sample.file_path,
            "extra": sample.extra,
            "is_image": sample.is_image,
            "ok": True,
            "error": None,
            "pixels": None,
            "valid_frames": plan.frames,
            "latent_key": None,
            "cached_latents": None,
            "control_pixels": None,
            "control_key": None,
            "cached_control": None,
            "camera": None,
            "camera_poses": None,
        }
        try:
            if self.cache is not None:
                item["latent_key"] = key = self.cache.video_key(sample.path, plan)
                cached = self.cache.get(key)
                if cached is not None:
                    item["cached_latents"] = cached["moments"]
                    item["valid_frames"] = int(cached["valid_frames"])
            if item["cached_latents"] is None or self.options.pixels_always:
                item["pixels"], item["valid_frames"] = load_pixels(sample.path, plan, sample.is_image)
            if self.options.control:
                if sample.control_path is None:
                    raise ValueError(
                        f"'{sample.file_path}' has no control_file_path (needed in control mode)"
                    )
                if self.cache is not None:
                    item["control_key"] = key = self.cache.video_key(
                        sample.control_path, plan, kind="control"
                    )
                    cached = self.cache.get(key)
                    item["cached_control"] = None if cached is None else cached["moments"]
                if item["cached_control"] is None:
                    item["control_pixels"], _ = load_pixels(sample.control_path, plan, sample.is_image)
            if self.options.camera:
                if sample.camera_path is None:
                    raise ValueError(f"'{sample.file_path}' has no camera_file_path (needed in camera mode)")
                item["camera"], item["camera_poses"] = camera_latents_for(
                    sample, plan, self.geometry, self.options.pose_size, return_poses=True
                )
        except Exception as e:  # noqa: BLE001 - a bad file must never stop a run; it is counted instead
            item.update(ok=False, error=f"{type(e).__name__}: {e}", pixels=None, cached_latents=None)
            item.update(
                control_pixels=None, cached_control=None, camera=None, camera_poses=None, latent_key=None
            )
        return item


def collate_samples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of loaded items. Tensors that only some items have are kept as per-item lists."""
    plan = items[0]["request"].plan
    batch: dict[str, Any] = {
        "requests": [it["request"] for it in items],
        "plan": plan,
        "texts": [it["text"] if it["ok"] else "" for it in items],
        "file_paths": [it["file_path"] for it in items],
        "extras": [it["extra"] for it in items],  # the metadata's other fields (e.g. object tracks)
        "is_image": plan.frames == 1,
        "weights": torch.tensor([1.0 if it["ok"] else 0.0 for it in items]),
        "valid_frames": torch.tensor([it["valid_frames"] for it in items]),
        "errors": [(it["file_path"], it["error"]) for it in items if not it["ok"]],
    }
    shape = (3, plan.frames, plan.height, plan.width)
    # Pixel tensors: stacked, with zeros where an item has none (cached or failed); `has_pixels` says which.
    for name in ("pixels", "control_pixels"):
        present = [it[name] is not None for it in items]
        batch[f"has_{name}"] = present
        if any(present):
            batch[name] = torch.stack(
                [it[name] if it[name] is not None else torch.zeros(shape) for it in items]
            )
        else:
            batch[name] = None
    for name in ("cached_latents", "cached_control", "latent_key", "control_key"):
        batch[name] = [it[name] for it in items]
    cameras = [it["camera"] for it in items]
    if any(c is not None for c in cameras):
        ref = next(c for c in cameras if c is not None)
        batch["camera"] = torch.stack([c if c is not None else torch.zeros_like(ref) for c in cameras])
    else:
        batch["camera"] = None
    # Per-item pose lists (camera-aware RoPE computes each sample's motion from them).
    batch["camera_poses"] = [it.get("camera_poses") for it in items]
    return batch
