"""One pipeline for every generation mode of EasyAnimate V5.1-class models.

``VideoPipeline.__call__`` runs, depending on the inputs and the model type (see ``loading.py``):

* T2V (1 frame = an image) on any model; InP/Control/Camera models get zero conditioning latents;
* I2V from a start image (and optional end image) on InP models;
* V2V with a denoise ``strength``, optionally inpainting under a ``mask_video`` (InP models: mask and
  masked-video latents as channels; other models: the kept region is re-imposed after every step);
* control videos (ready-made, canny computed here, or rendered from point ``trajectory`` tracks) and a
  reference image on Control models; ``camera`` presets / pose files on Camera models;
* long videos: I2V chunks chained on their last frames, the overlap cross-faded (InP models).

The numerics follow diffusers' EasyAnimate pipelines (and the official EasyAnimate code they port):
initial noise ``randn(latent shape, generator)``, ``set_timesteps(n, mu=1)``, CFG with the negative
prompt first in the batch, guidance rescale, strength cut as ``get_timesteps``. Latents are kept in
fp32 whatever the transformer's dtype. Where diffusers 0.42.1 is broken kinema follows the official
code instead; docs/pipelines.md lists each difference.
"""

from __future__ import annotations

import inspect
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kinema.sizes import model_default_flag, model_default_frames, model_default_scale, validate_size

from .loading import MODEL_TYPE_NAMES, PLUCKER_CHANNELS, default_device, model_type_from_channels
from .memory import (
    DTYPE_BYTES,
    MEMORY_MODES,
    attach_sequential_offload,
    available_memory,
    choose_memory_mode,
    convert_linears_to_fp8,
    estimate_memory,
    on_device,
)
from .schedulers import make_scheduler

# Noise added to the kept pixels of the masked video before encoding, as EasyAnimate's inpaint pipeline
# does at inference (not on the -1 "generate here" pixels).
NOISE_AUG_STRENGTH = 0.0563
OUTPUT_TYPES = ("np", "pt", "pil", "latent")
# Camera latents: Plücker rays (6 channels) resized to the latent grid and multiplied by 6 (reference).
MediaInput = Any  # path, uint8 array, PIL image or float tensor in [-1, 1]


class GenerationInterrupted(RuntimeError):
    """Raised by ``VideoPipeline`` only when ``raise_on_interrupt=True`` and the run was interrupted."""


@dataclass
class VideoPipelineOutput:
    """What a generation returns.

    ``frames``: ``output_type="np"``: uint8 (B, F, H, W, 3); ``"pt"``: float (B, 3, F, H, W) in [-1, 1];
    ``"pil"``: a list (per video) of lists of PIL images; ``"latent"``: the final latents (B, 16, f, h, w).
    """

    frames: Any
    latents: torch.Tensor | None = None
    seed: int | None = None
    steps_done: int = 0
    interrupted: bool = False
    memory_mode: str = "none"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Conditioning:
    """Resolved request: everything that depends on the inputs, prepared before any heavy work."""

    height: int
    width: int
    frames: int
    video: torch.Tensor | None = None  # (1, 3, F, H, W) in [-1, 1]
    keep_mask: torch.Tensor | None = None  # (1, 1, F, H, W): 1 = generate, 0 = keep
    control: torch.Tensor | None = None  # (1, 3, F, H, W) control video in [-1, 1]
    camera: torch.Tensor | None = None  # (1, 6, f, h, w) camera latents
    camera_motion: torch.Tensor | None = None  # (1, f, 3) for camera-aware RoPE models (camera_rope_depth)
    noise_motion: torch.Tensor | None = None  # (f, 3) for models trained on camera-warped noise
    reference: torch.Tensor | None = None  # (1, 3, 1, H, W)
    mode: str = "t2v"


def _is_path(x: Any) -> bool:
    return isinstance(x, str | os.PathLike)


def _as_video(x: MediaInput, what: str) -> torch.Tensor:
    """Any media input -> float32 (1, 3, F, H, W) in [-1, 1]. Files are read with kinema.videoio.

    Accepts a path (video or image; unreadable files raise MediaError naming the file), a uint8 array
    (H, W, 3) / (F, H, W, 3), a PIL image, or a float tensor in [-1, 1] laid out (3, H, W), (3, F, H, W)
    or (1, 3, F, H, W).
    """
    from kinema import videoio

    if _is_path(x):
        path = Path(x)
        if not path.exists():
            raise FileNotFoundError(f"{what} file '{path}' does not exist")
        return videoio.frames_to_tensor(videoio.read_video(path).frames)
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL image
        return videoio.frames_to_tensor(np.asarray(x.convert("RGB"))[None])
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        t = x.detach().float().cpu()
        if t.ndim == 3:
            t = t.unsqueeze(1)
        if t.ndim == 4:
            t = t.unsqueeze(0)
        if t.ndim != 5 or t.shape[:2] != (1, 3):
            raise ValueError(
                f"{what}: a float tensor must be (3, H, W), (3, F, H, W) or (1, 3, F, H, W); got {tuple(x.shape)}"
            )
        if not torch.isfinite(t).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        return t
    if isinstance(x, torch.Tensor):
        x = x.cpu().numpy()
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise ValueError(f"{what}: numpy input must be uint8 (H, W, 3) or (F, H, W, 3), got {x.dtype}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"{what}: expected (H, W, 3) or (F, H, W, 3), got shape {x.shape}")
        return videoio.frames_to_tensor(x)
    raise ValueError(f"{what}: unsupported input type {type(x).__name__} (path, uint8 array, PIL or tensor)")


def _as_mask(x: MediaInput) -> torch.Tensor:
    """Mask input -> float32 (1, 1, F, H, W) in [0, 1]: white (1) = regenerate, black (0) = keep.

    Float tensors are taken as [0, 1] masks (any layout ending in H, W); uint8 (H, W) / (F, H, W) arrays
    as 0..255; colour media (files, RGB arrays, PIL) are converted to grey like PIL's "L" mode.
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        m = x.detach().float().cpu()
        m = m.reshape(-1, *m.shape[-2:]) if m.ndim > 2 else m[None]
        return m[None, None]
    if (
        isinstance(x, np.ndarray)
        and x.dtype == np.uint8
        and (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] != 3))
    ):
        m = torch.from_numpy(x.reshape(-1, *x.shape[-2:]).astype(np.float32) / 255.0)
        return m[None, None]
    video = (_as_video(x, "mask") + 1) / 2  # (1, 3, F, H, W) in [0, 1]
    weights = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1, 1)
    return (video * weights).sum(1, keepdim=True)


def _fit_frames(video: torch.Tensor, count: int, what: str, repeat_single: bool = False) -> torch.Tensor:
    """The first ``count`` frames of (1, C, F, H, W); a single frame is repeated if ``repeat_single``."""
    have = video.shape[2]
    if have == 1 and count > 1 and repeat_single:
        return video.expand(-1, -1, count, -1, -1).contiguous()
    if have < count:
        raise ValueError(f"{what} has {have} frame(s); {count} are needed (pass a frame count <= {have})")
    return video[:, :, :count]


def _resize(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop to the aspect of height x width and resize (antialiased bilinear); (1, C, F, H, W)."""
    from kinema.videoio import resize_and_center_crop

    if tuple(video.shape[-2:]) == (height, width):
        return video
    if video.shape[1] == 3:
        return resize_and_center_crop(video, height, width)
    return resize_and_center_crop(video.expand(-1, 3, -1, -1, -1), height, width)[:, :1]


def _floor_4k1(n: int) -> int:
    return max(1, (n - 1) // 4 * 4 + 1)


def _resize_to_latent_grid(x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize of (B, C, F, H, W) to a latent grid, frame 0 on its own (causal VAE layout)."""
    first = F.interpolate(x[:, :, :1], size=(1, *size[1:]), mode="trilinear", align_corners=False)
    if size[0] == 1:
        return first
    rest = F.interpolate(x[:, :, 1:], size=(size[0] - 1, *size[1:]), mode="trilinear", align_corners=False)
    return torch.cat([first, rest], dim=2)


def _rescale_guidance(guided: torch.Tensor, text: torch.Tensor, rescale: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, sec. 3.4): match the std of the text prediction, then mix."""
    dims = list(range(1, text.ndim))
    rescaled = guided * (text.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * guided


def check_mode(
    model_type: str,
    *,
    image=None,
    end_image=None,
    video=None,
    mask_video=None,
    control_video=None,
    ref_image=None,
    trajectory=None,
    camera=None,
    chunk_frames: int | None = None,
) -> str:
    """Which mode the inputs ask for; ValueError if a ``model_type`` model cannot do it (no I/O)."""
    kind = model_type
    name = MODEL_TYPE_NAMES[kind]
    if end_image is not None and image is None:
        raise ValueError("end_image needs image (the start frame)")
    if image is not None and video is not None:
        raise ValueError("pass either image (I2V) or video (V2V), not both")
    if image is not None and kind != "inp":
        raise ValueError(
            f"image-to-video needs an InP model (transformer in_channels 33); this model is {name}"
            + (
                ": use ref_image / --reference-image for a Control model's reference"
                if kind == "control"
                else ""
            )
        )
    if mask_video is not None and video is None:
        raise ValueError("mask_video needs video (the video to inpaint)")
    if sum(x is not None for x in (control_video, trajectory, camera)) > 1:
        raise ValueError("pass only one of control_video, trajectory and camera")
    if (control_video is not None or trajectory is not None) and kind != "control":
        what = "a control video" if control_video is not None else "trajectory control"
        raise ValueError(f"{what} needs a Control model (in_channels 48); this model is {name}")
    if camera is not None and kind != "camera":
        raise ValueError(
            f"camera control needs a Control-Camera model (in_channels 38); this model is {name}"
        )
    if ref_image is not None and kind not in ("control", "camera"):
        raise ValueError(f"a reference image needs a Control or Camera model; this model is {name}")
    if chunk_frames is not None:
        if kind != "inp":
            raise ValueError(f"long video (chained I2V chunks) needs an InP model; this model is {name}")
        if video is not None:
            raise ValueError("long video generation does not take a video input")
    if image is not None:
        return "i2v"
    if video is not None:
        return "inpaint" if mask_video is not None else "v2v"
    if camera is not None:
        return "camera"
    if trajectory is not None:
        return "trajectory"
    if control_video is not None:
        return "control"
    return "t2v"


class VideoPipeline:
    """EasyAnimate V5.1-class generation: T2V, I2V, V2V/inpainting, control, trajectory, camera, long video.

    Build it with :func:`kinema.pipelines.load_pipeline`. Components: ``transformer`` (VideoTransformer),
    ``vae`` (VideoVAE), ``text_encoder`` (PromptEncoder or None), ``scheduler_config`` (the model's
    scheduler_config.json as a dict; samplers are built from it per call).
    """

    def __init__(
        self,
        transformer,
        vae,
        text_encoder=None,
        scheduler_config: dict[str, Any] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        memory_mode: str = "none",
        model_path: str | None = None,
        model_index: dict[str, Any] | None = None,
    ):
        from .random_model import OFFICIAL_SCHEDULER_CONFIG

        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode {memory_mode!r}: choose one of {', '.join(MEMORY_MODES)}")
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.scheduler_config = dict(scheduler_config or OFFICIAL_SCHEDULER_CONFIG)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or transformer.proj.weight.dtype
        self.latent_channels = vae.config.latent_channels
        self.model_type = model_type_from_channels(transformer.config.in_channels, self.latent_channels)
        self.memory_mode = memory_mode
        self.model_path = model_path
        self.model_index = model_index or {}
        # A model trained at another length names it (e.g. the embedded ShapesWorld model: 17 frames).
        self.default_num_frames = model_default_frames(self.model_index)
        self.default_keep_known_frames = model_default_flag(self.model_index, "keep_known_frames")
        self.default_camera_guidance_scale = model_default_scale(self.model_index, "camera_guidance_scale")
        self.lora: dict[str, Any] | None = None
        self.progress_bar_config: dict[str, Any] = {}
        self._interrupt = False
        self._fp8 = False
        self._sequential_hooks: list = []
        self.active_memory_mode = "unplaced"
        if memory_mode != "auto":
            self._apply_memory_mode(memory_mode, vae_tiling=None)

    # ---- small public helpers ----------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return self.vae.config.spatial_compression

    @property
    def vae_temporal_factor(self) -> int:
        return self.vae.config.temporal_compression

    @property
    def default_size(self) -> tuple[int, int]:
        c = self.transformer.config
        s = self.vae_scale_factor
        return c.sample_height * s, c.sample_width * s

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """tqdm options for the per-step bar, e.g. ``disable=True`` (as diffusers)."""
        self.progress_bar_config = kwargs

    def interrupt(self) -> None:
        """Stop the running generation after the current step (callable from a callback or thread)."""
        self._interrupt = True

    def enable_vae_tiling(self, tile_size: int = 256, overlap: int = 64) -> None:
        self.vae.enable_tiling(tile_size, overlap)

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    # ---- memory ------------------------------------------------------------------------------------
    def _offloading(self) -> bool:
        """Do components live on the CPU between uses (in the memory mode now in effect)?"""
        return self.active_memory_mode in ("model_offload", "sequential_offload", "fp8_offload")

    def _apply_memory_mode(self, mode: str, vae_tiling: bool | None) -> None:
        """Put the components where ``mode`` wants them (fp8 conversion is one-way and done once)."""
        if mode.startswith("fp8") and not self._fp8:
            convert_linears_to_fp8(self.transformer, self.dtype)
            self._fp8 = True
        for handle in self._sequential_hooks:
            handle.remove()
        self._sequential_hooks = []
        text_model = None
        if self.text_encoder is not None and self.text_encoder.model is not None:
            text_model = self.text_encoder.text_model
        offload = mode in ("model_offload", "sequential_offload", "fp8_offload")
        target = torch.device("cpu") if offload else self.device
        self.transformer.to(target)
        self.vae.to(target)
        if text_model is not None:
            text_model.to(target)
        if mode == "sequential_offload":
            # Blocks come in one at a time through hooks; the small stem and head stay on the device.
            blocks = list(self.transformer.transformer_blocks)
            for name, child in self.transformer.named_children():
                if name != "transformer_blocks":
                    child.to(self.device)
            if text_model is not None:
                blocks += list(text_model.layers)
                for name, child in text_model.named_children():
                    if name != "layers":
                        child.to(self.device)
            self._sequential_hooks = attach_sequential_offload(blocks, self.device)
        if vae_tiling is not None:
            self.vae.enable_tiling() if vae_tiling else self.vae.disable_tiling()
        self.active_memory_mode = mode

    def _resolve_memory(
        self, height: int, width: int, frames: int, guidance_scale: float, vae_tiling, extra_rows: int = 0
    ) -> str:
        """The memory mode for this request: ``auto`` decides from the estimate, others are kept."""
        if self.memory_mode != "auto":
            if vae_tiling is not None:
                self.vae.enable_tiling() if vae_tiling else self.vae.disable_tiling()
            return self.active_memory_mode
        estimate = self.estimate_memory(height, width, frames, guidance_scale, extra_rows)
        chosen, tiling = choose_memory_mode(estimate, available_memory(self.device), self.device.type)
        tiling = tiling if vae_tiling is None else vae_tiling
        if chosen != self.active_memory_mode:
            self._apply_memory_mode(chosen, tiling)
        else:
            self.vae.enable_tiling() if tiling else self.vae.disable_tiling()
        return chosen

    def estimate_memory(
        self, height: int, width: int, frames: int, guidance_scale: float = 6.0, extra_rows: int = 0
    ):
        """Estimated peak memory of a request with this pipeline's models (see memory.estimate_memory)."""
        text_params = 0
        if self.text_encoder is not None and self.text_encoder.model is not None:
            text_params = sum(p.numel() for p in self.text_encoder.parameters())
        c = self.transformer.config
        return estimate_memory(
            transformer_params=sum(p.numel() for p in self.transformer.parameters())
            + sum(b.numel() for b in self.transformer.buffers()),
            transformer_width=c.num_attention_heads * c.attention_head_dim,
            text_encoder_params=text_params,
            vae_params=sum(p.numel() for p in self.vae.parameters()),
            vae_first_width=self.vae.config.block_out_channels[0],
            height=height,
            width=width,
            frames=frames,
            cfg=guidance_scale > 1.0,
            dtype_bytes=DTYPE_BYTES.get(self.dtype, 4),
            extra_rows=extra_rows,
        )

    # ---- request resolution (cheap, before heavy work) --------------------------------------------
    def check_inputs(self, **inputs: Any) -> str:
        """Which mode the inputs ask for; ValueError if this model cannot do it (see ``check_mode``)."""
        return check_mode(self.model_type, **inputs)

    def _default_size(self, media: torch.Tensor | None) -> tuple[int, int]:
        h, w = self.default_size
        if media is None:
            return h, w
        mh, mw = media.shape[-2:]
        scale = (h * w / (mh * mw)) ** 0.5  # the model's default area, the input's aspect
        return max(16, round(mh * scale / 16) * 16), max(16, round(mw * scale / 16) * 16)

    def _resolve(
        self,
        *,
        mode: str,
        height,
        width,
        num_frames,
        image,
        end_image,
        video,
        mask_video,
        control_video,
        control_type,
        ref_image,
        trajectory,
        camera,
        chunk_frames,
    ) -> _Conditioning:
        from kinema.control import (
            camera_latents,
            camera_preset,
            canny_video,
            latent_plane_motion,
            load_tracks,
            plucker_embedding,
            read_pose_file,
            render_trajectory_video,
            validate_control_type,
        )

        control_type = validate_control_type(control_type or "raw")
        # Read every input first: unreadable files fail here, before any model runs.
        image_v = _as_video(image, "image")[:, :, :1] if image is not None else None
        end_v = _as_video(end_image, "end image")[:, :, :1] if end_image is not None else None
        video_v = _as_video(video, "video") if video is not None else None
        mask_v = _as_mask(mask_video) if mask_video is not None else None
        control_v = _as_video(control_video, "control video") if control_video is not None else None
        ref_v = _as_video(ref_image, "reference image")[:, :, :1] if ref_image is not None else None
        tracks = load_tracks(trajectory) if trajectory is not None else None
        poses = None
        if camera is not None:
            camera = os.fspath(camera)
            if os.path.exists(camera) or camera.endswith(".txt") or os.sep in camera:
                if not Path(camera).is_file():
                    raise FileNotFoundError(f"camera pose file '{camera}' does not exist")
                poses = read_pose_file(camera)

        media = next((m for m in (image_v, video_v, control_v, ref_v) if m is not None), None)
        dh, dw = self._default_size(media)
        height, width = height or dh, width or dw
        if num_frames is None:
            sources = [m.shape[2] for m in (video_v, control_v) if m is not None]
            limit = self.default_num_frames
            num_frames = _floor_4k1(min(min(sources), limit)) if sources else limit
        validate_size(height, width, num_frames)
        if chunk_frames is not None:
            validate_size(height, width, chunk_frames)
        if camera is not None and poses is None:
            poses = camera_preset(camera, num_frames)  # ValueError names the unknown preset
        cond = _Conditioning(height=height, width=width, frames=num_frames, mode=mode)
        # Long videos build their I2V clips per chunk; the start image is laid out for the first chunk.
        clip_frames = min(chunk_frames, num_frames) if chunk_frames is not None else num_frames

        if image_v is not None:
            clip = _resize(image_v, height, width).expand(-1, -1, clip_frames, -1, -1).clone()
            keep = torch.ones((1, 1, clip_frames, height, width))
            keep[:, :, 0] = 0.0  # 0 = keep this frame, 1 = generate
            if end_v is not None:
                clip[:, :, -1:] = _resize(end_v, height, width)
                keep[:, :, -1] = 0.0
            cond.video, cond.keep_mask = clip, keep
        if video_v is not None:
            cond.video = _resize(_fit_frames(video_v, num_frames, "video"), height, width)
        if mask_v is not None:
            mask = _resize(_fit_frames(mask_v, num_frames, "mask", repeat_single=True), height, width)
            cond.keep_mask = (mask >= 0.5).float()  # binarised like diffusers' mask processor
        if control_v is not None:
            control = _resize(_fit_frames(control_v, num_frames, "control video"), height, width)
            if control_type == "canny":
                from kinema.videoio import frames_to_tensor, tensor_to_frames

                control = frames_to_tensor(canny_video(tensor_to_frames(control[0])))
            cond.control = control
        if tracks is not None:
            from kinema.videoio import frames_to_tensor

            cond.control = frames_to_tensor(render_trajectory_video(tracks, num_frames, height, width))
        if poses is not None:
            if num_frames > 1 and len(poses) < 2:
                raise ValueError(
                    f"camera: {len(poses)} pose(s) given; a {num_frames}-frame video needs at least 2"
                )
            plucker = plucker_embedding(poses, height, width)
            lat_f = (num_frames - 1) // self.vae_temporal_factor + 1
            s = self.vae_scale_factor
            cond.camera = camera_latents(plucker, lat_f, height // s, width // s)[None]
            depth = getattr(self.transformer.config, "camera_rope_depth", None)
            if depth is not None:
                cond.camera_motion = latent_plane_motion(
                    poses, height, width, depth, lat_f, self.vae_temporal_factor, s
                )[None]
            depth = getattr(self.transformer.config, "camera_noise_warp_depth", None)
            if depth is not None:
                cond.noise_motion = latent_plane_motion(
                    poses, height, width, depth, lat_f, self.vae_temporal_factor, s
                )
        if ref_v is not None:
            cond.reference = _resize(ref_v, height, width)
        return cond

    # ---- the call ----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 6.0,
        guidance_rescale: float = 0.0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        sampler: str = "flow",
        image: MediaInput = None,
        end_image: MediaInput = None,
        video: MediaInput = None,
        mask_video: MediaInput = None,
        strength: float = 1.0,
        noise_aug_strength: float = NOISE_AUG_STRENGTH,
        control_video: MediaInput = None,
        control_type: str = "raw",
        ref_image: MediaInput = None,
        trajectory: Any = None,
        camera: Any = None,
        camera_guidance_scale: float | None = None,
        chunk_frames: int | None = None,
        overlap_frames: int = 4,
        keep_known_frames: bool | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        callback: Callable[[int, Any, torch.Tensor], Any] | None = None,
        free_text_encoder: bool = False,
        vae_tiling: bool | None = None,
        raise_on_interrupt: bool = False,
    ) -> VideoPipelineOutput:
        """Generate. Mirrors diffusers' argument names; see docs/pipelines.md for every mode.

        ``callback(step, timestep, latents)`` runs after every step; returning ``False`` (or calling
        ``interrupt()``) stops after that step: the result so far is decoded and ``interrupted`` is set
        (or ``GenerationInterrupted`` raised with ``raise_on_interrupt``).

        ``keep_known_frames`` (InP models): after every step, the latent frames that encode only kept
        frames (I2V's start image; the kept head of a long-video chunk) are replaced by those frames'
        latents, noised to the step's level, so the output starts exactly with them. ``None`` = the
        model folder's default (``_kinema_defaults.keep_known_frames``), else off, as EasyAnimate.

        ``camera_guidance_scale`` w (Camera models): each step also predicts with the camera held still
        at its first pose (text kept) and adds ``w * (prediction - still prediction)``, on top of
        classifier-free guidance: a small Camera model moves the scene the right way but too little, and
        this pushes it along the asked camera. One more transformer pass per step (batch 3 with CFG).
        ``None`` = the model folder's default (``_kinema_defaults.camera_guidance_scale``), else 0 (off).
        """
        started = time.perf_counter()
        self._interrupt = False
        # -- validate everything cheap first (no model runs before this block has passed)
        mode = self.check_inputs(
            image=image,
            end_image=end_image,
            video=video,
            mask_video=mask_video,
            control_video=control_video,
            ref_image=ref_image,
            trajectory=trajectory,
            camera=camera,
            chunk_frames=chunk_frames,
        )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type {output_type!r}: choose one of {', '.join(OUTPUT_TYPES)}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if not (0.0 < strength <= 1.0):
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if strength < 1.0 and video is None:
            raise ValueError("strength < 1 needs a video to start from (V2V)")
        if not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale}")
        if not (0.0 <= guidance_rescale <= 1.0):
            raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")
        if camera_guidance_scale is not None:
            if not np.isfinite(camera_guidance_scale) or camera_guidance_scale < 0:
                raise ValueError(
                    f"camera_guidance_scale must be a finite number >= 0, got {camera_guidance_scale}"
                )
            if camera_guidance_scale > 0 and camera is None:
                raise ValueError("camera_guidance_scale needs a camera (camera=preset or pose file)")
        if prompt is None and prompt_embeds is None:
            raise ValueError("pass prompt (a string, '' for unconditional) or prompt_embeds")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either prompt or prompt_embeds, not both")
        if prompt_embeds is None and self.text_encoder is None:
            raise ValueError("this pipeline was loaded without a text encoder: pass prompt_embeds")
        if latents is not None and not torch.isfinite(latents).all():
            raise ValueError("the given latents contain NaN or infinite values")
        if chunk_frames is not None and not (0 < overlap_frames < chunk_frames):
            raise ValueError(f"overlap_frames must be in [1, chunk_frames), got {overlap_frames}")
        if chunk_frames is not None:
            if output_type == "latent":
                raise ValueError(
                    "long video (chunk_frames) is assembled in pixel space: no output_type 'latent'"
                )
            if end_image is not None:
                raise ValueError("end_image is not supported with long video (chunk_frames)")
            if num_videos_per_prompt != 1 or not (isinstance(prompt, str) or prompt_embeds is not None):
                raise ValueError("long video generates one video at a time: pass one prompt")
        make_scheduler(sampler, self.scheduler_config)  # refuses impossible sampler/model pairs early
        cond = self._resolve(
            mode=mode,
            height=height,
            width=width,
            num_frames=num_frames,
            image=image,
            end_image=end_image,
            video=video,
            mask_video=mask_video,
            control_video=control_video,
            control_type=control_type,
            ref_image=ref_image,
            trajectory=trajectory,
            camera=camera,
            chunk_frames=chunk_frames,
        )
        if latents is not None:
            expected = (self.latent_channels, (cond.frames - 1) // self.vae_temporal_factor + 1)
            if latents.ndim != 5 or tuple(latents.shape[1:3]) != expected:
                raise ValueError(
                    f"latents must be (B, {expected[0]}, {expected[1]}, h, w); got {tuple(latents.shape)}"
                )
        if generator is None:
            seed = secrets.randbits(63) if seed is None else int(seed)  # recorded in the output
            generator = torch.Generator("cpu").manual_seed(seed)
        if camera_guidance_scale is None:
            camera_guidance_scale = self.default_camera_guidance_scale
        guide_camera = camera_guidance_scale > 0 and cond.camera is not None
        memory_mode = self._resolve_memory(
            cond.height, cond.width, cond.frames, guidance_scale, vae_tiling, extra_rows=int(guide_camera)
        )

        # -- text
        do_cfg = guidance_scale > 1.0
        embeds = self._encode_text(
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            num_videos_per_prompt,
            do_cfg,
            free_text_encoder,
        )

        common = dict(
            embeds=embeds,
            do_cfg=do_cfg,
            steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            generator=generator,
            sampler=sampler,
            strength=strength,
            noise_aug_strength=noise_aug_strength,
            keep_known_frames=self.default_keep_known_frames
            if keep_known_frames is None
            else keep_known_frames,
            camera_guidance_scale=camera_guidance_scale,
            callback=callback,
        )
        long_video = chunk_frames is not None and chunk_frames < cond.frames
        if long_video:
            video_out, steps_done, planned = self._long_video(cond, chunk_frames, overlap_frames, common)
            final_latents = None
        else:
            final_latents, steps_done, planned = self._denoise(cond, latents=latents, **common)
            video_out = None if output_type == "latent" else self._decode(final_latents)
        interrupted = steps_done < planned
        if interrupted and raise_on_interrupt:
            raise GenerationInterrupted(f"interrupted after {steps_done} of {planned} steps")
        frames = final_latents if output_type == "latent" else self._postprocess(video_out, output_type)
        return VideoPipelineOutput(
            frames=frames,
            latents=final_latents,
            seed=generator.initial_seed(),
            steps_done=steps_done,
            interrupted=interrupted,
            memory_mode=memory_mode,
            info={
                "mode": mode + ("+long" if long_video else ""),
                "height": cond.height,
                "width": cond.width,
                "frames": cond.frames,
                **(
                    {"camera_guidance_scale": common["camera_guidance_scale"]}
                    if cond.camera is not None
                    else {}
                ),
                "seconds": time.perf_counter() - started,
            },
        )

    def generate(self, config, **overrides: Any) -> VideoPipelineOutput:
        """Run a :class:`kinema.config.GenerationConfig` (the CLI's request) through this pipeline."""
        config.validate()
        kwargs = dict(
            prompt=config.prompt,
            negative_prompt=config.negative_prompt,
            num_frames=config.frames,
            height=config.height,
            width=config.width,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            guidance_rescale=config.guidance_rescale,
            seed=config.seed,
            sampler=config.sampler,
            image=config.image,
            end_image=config.end_image,
            video=config.video,
            mask_video=config.mask,
            strength=config.strength,
            control_video=config.control_video,
            control_type=config.control_type,
            ref_image=config.reference_image,
            trajectory=config.trajectory,
            camera=config.camera,
            camera_guidance_scale=config.camera_guidance,
            chunk_frames=config.chunk_frames,
            overlap_frames=config.overlap_frames,
            keep_known_frames=config.keep_known_frames,
            free_text_encoder=config.free_text_encoder,
            vae_tiling=config.vae_tiling,
        )
        kwargs.update(overrides)
        return self(**kwargs)

    # ---- stages ------------------------------------------------------------------------------------
    def _encode_text(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, n, do_cfg, free):
        """Embeddings for the transformer: (2B, L, D) [negative; positive] under CFG, else (B, L, D)."""
        if prompt_embeds is not None:
            pos = prompt_embeds.repeat_interleave(n, dim=0)
            if not do_cfg:
                return pos.float()
            if negative_prompt_embeds is None:
                if self.text_encoder is None:
                    raise ValueError("guidance_scale > 1 with prompt_embeds needs negative_prompt_embeds")
                neg, _ = self.text_encoder.encode([negative_prompt or ""] * prompt_embeds.shape[0])
                neg = neg.repeat_interleave(n, dim=0)
            else:
                neg = negative_prompt_embeds.repeat_interleave(n, dim=0)
            return torch.cat([neg.float(), pos.float()])
        encoder = self.text_encoder
        whole = self.active_memory_mode in ("model_offload", "fp8_offload")  # sequential: hooks move layers
        with on_device(encoder, self.device, whole):
            if do_cfg:
                out = encoder.encode_with_negative(
                    prompt, negative_prompt, num_videos_per_prompt=n, device=self.device, free_after=free
                )
                embeds = torch.cat([out.negative_prompt_embeds, out.prompt_embeds])
            else:
                embeds, _ = encoder.encode(
                    prompt, num_videos_per_prompt=n, device=self.device, free_after=free
                )
        return embeds.float()

    def _encode_video(self, video: torch.Tensor) -> Any:
        with on_device(self.vae, self.device, self._offloading()):
            return self.vae.encode(video.to(self.device, self.vae.dtype))

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        with on_device(self.vae, self.device, self._offloading()):
            video = self.vae.decode(latents.to(self.device) / self.vae.config.scaling_factor)
        return video.float().clamp(-1, 1)

    def _timesteps(self, sampler: str, steps: int, strength: float):
        scheduler, kwargs = make_scheduler(sampler, self.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device, **kwargs)
        # Strength cut as diffusers' get_timesteps: skip the first (1 - strength) of the schedule.
        kept = min(int(steps * strength), steps)
        start = max(steps - kept, 0)
        timesteps = scheduler.timesteps[start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * scheduler.order)
        return scheduler, timesteps

    def _add_noise(
        self, scheduler, clean: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        t = t.reshape(1).expand(clean.shape[0])
        if hasattr(scheduler, "scale_noise"):
            return scheduler.scale_noise(clean, t, noise)
        return scheduler.add_noise(clean, noise, t)

    def _condition_latents(
        self, cond: _Conditioning, batch: int, latent_shape, generator, noise_aug_strength
    ):
        """Inpaint latents (InP) or control latents (Control/Camera) for the transformer, or (None, None)."""
        sf = self.vae.config.scaling_factor
        zeros = torch.zeros((batch, *latent_shape), device=self.device)
        if self.model_type == "inp":
            keep = cond.keep_mask
            if cond.video is None or keep is None or bool((keep >= 0.5).all()):
                # Nothing to keep: T2V (or V2V without mask) on an InP model gets zero inpaint latents.
                return torch.cat([zeros[:, :1], zeros], dim=1), None
            video = cond.video.to(self.device)
            keep = keep.to(self.device)
            masked = torch.where(keep.expand_as(video) < 0.5, video, torch.full_like(video, -1.0))
            if self.transformer.config.add_noise_in_inpaint_model and noise_aug_strength > 0:
                aug = torch.randn(masked.shape, generator=generator, dtype=masked.dtype).to(self.device)
                masked = masked + torch.where(masked == -1, torch.zeros_like(aug), aug * noise_aug_strength)
            masked_latents = self._encode_video(masked).mode().float() * sf
            mask_latents = _resize_to_latent_grid(1 - keep, tuple(latent_shape[1:])) * sf
            inpaint = torch.cat([mask_latents, masked_latents], dim=1)
            return inpaint.expand(batch, -1, -1, -1, -1), None
        if self.model_type in ("control", "camera"):
            if cond.camera is not None:
                control = cond.camera.to(self.device)
            elif cond.control is not None:
                control = self._encode_video(cond.control).mode().float() * sf
            else:
                channels = 6 if self.model_type == "camera" else self.latent_channels
                control = torch.zeros((1, channels, *latent_shape[1:]), device=self.device)
            reference = torch.zeros((1, *latent_shape), device=self.device)
            # As the reference: the reference image fills latent frame 0, and only for videos.
            if cond.reference is not None and latent_shape[1] != 1:
                reference[:, :, :1] = self._encode_video(cond.reference).mode().float() * sf
            control_latents = torch.cat([control.to(self.device), reference], dim=1)
            return None, control_latents.expand(batch, -1, -1, -1, -1)
        return None, None

    def _known_head_latents(self, cond: _Conditioning) -> tuple[torch.Tensor, int] | None:
        """Latents of the leading latent frames that encode kept frames only, and their count.

        The VAE is causal: latent frame 0 encodes video frame 0, latent frame j frames 4j-3 .. 4j, each
        depending on nothing later. So when video frames 0 .. 4(n-1) are kept whole, the first n latent
        frames of the kept video's encoding are exactly what the output's must be."""
        if cond.video is None or cond.keep_mask is None:
            return None
        whole = (cond.keep_mask < 0.5).flatten(3).all(dim=3)[0, 0]  # (F,): frame kept entirely
        head = int(whole.long().cumprod(0).sum())  # kept frames before the first generated one
        if head == 0:
            return None
        n = (head - 1) // self.vae_temporal_factor + 1
        frames = (n - 1) * self.vae_temporal_factor + 1
        encoded = self._encode_video(cond.video[:, :, :frames].to(self.device)).mode().float()
        return encoded * self.vae.config.scaling_factor, n

    def _denoise(
        self,
        cond: _Conditioning,
        *,
        embeds,
        do_cfg,
        steps,
        guidance_scale,
        guidance_rescale,
        generator,
        sampler,
        strength,
        noise_aug_strength,
        callback,
        keep_known_frames=False,
        camera_guidance_scale=0.0,
        latents=None,
    ) -> tuple[torch.Tensor, int, int]:
        """Sample latents; returns (latents, steps done, steps planned)."""
        batch = embeds.shape[0] // (2 if do_cfg else 1)
        s, t = self.vae_scale_factor, self.vae_temporal_factor
        latent_shape = (self.latent_channels, (cond.frames - 1) // t + 1, cond.height // s, cond.width // s)
        scheduler, timesteps = self._timesteps(sampler, steps, strength)

        # Random draws, in this order from the generator: initial noise, masked-video augmentation, then
        # the V2V posterior sample (diffusers draws the latter from the global RNG, first).
        if latents is not None:
            noise = latents
        elif cond.noise_motion is not None:  # a model trained on camera-warped noise (control.noise_warp)
            from kinema.control import warped_noise

            noise = torch.stack(
                [warped_noise(cond.noise_motion, latent_shape, generator) for _ in range(batch)]
            )
        else:
            noise = torch.randn((batch, *latent_shape), generator=generator)
        noise = noise.to(self.device, torch.float32)
        inpaint_latents, control_latents = self._condition_latents(
            cond, batch, latent_shape, generator, noise_aug_strength
        )
        video_latents = None
        if cond.video is not None and (
            strength < 1.0 or (cond.keep_mask is not None and self.model_type != "inp")
        ):
            if cond.mode != "i2v":
                posterior = self._encode_video(cond.video)
                # A posterior sample (as the reference), its noise from the CPU generator for any device.
                eps = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean.device)
                sample = (posterior.mean + posterior.std * eps).float() * self.vae.config.scaling_factor
                video_latents = sample.to(self.device).expand(batch, -1, -1, -1, -1)
        if video_latents is not None and strength < 1.0:
            latents = self._add_noise(scheduler, video_latents, timesteps[0], noise)
        else:
            latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)
        # Inpainting on a model without inpaint channels: re-impose the kept region after every step.
        blend_mask = None
        if self.model_type != "inp" and cond.keep_mask is not None and video_latents is not None:
            blend_mask = F.interpolate(
                cond.keep_mask.to(self.device), size=latent_shape[1:], mode="trilinear", align_corners=True
            )
        known_head = None  # (latents of the kept head, its latent frame count) for keep_known_frames
        if keep_known_frames and self.model_type == "inp":
            known_head = self._known_head_latents(cond)
            if known_head is not None:
                head, n = known_head
                latents[:, :, :n] = self._add_noise(scheduler, head, timesteps[0], noise[:, :, :n])
        if do_cfg:
            inpaint_latents = None if inpaint_latents is None else torch.cat([inpaint_latents] * 2)
            control_latents = None if control_latents is None else torch.cat([control_latents] * 2)
        camera_motion = None if cond.camera_motion is None else cond.camera_motion.to(self.device)
        guide_camera = camera_guidance_scale > 0 and cond.camera is not None
        if guide_camera:
            # A camera held at its first pose: Plücker rays are relative to frame 0, so every latent frame
            # equals latent frame 0; on camera-aware RoPE models, frame 0's (identity) motion throughout.
            still = control_latents[-batch:].clone()
            still[:, :PLUCKER_CHANNELS] = still[:, :PLUCKER_CHANNELS, :1].expand_as(
                still[:, :PLUCKER_CHANNELS]
            )
            control_latents = torch.cat([control_latents, still])
            embeds = torch.cat([embeds, embeds[-batch:]])
            if camera_motion is not None:
                n = control_latents.shape[0] - batch
                camera_motion = torch.cat(
                    [
                        camera_motion.expand(n, -1, -1),
                        camera_motion[:, :1].expand(batch, camera_motion.shape[1], -1),
                    ]
                )

        step_kwargs = {}
        step_params = set(inspect.signature(scheduler.step).parameters)
        if "generator" in step_params:
            step_kwargs["generator"] = generator
        progress = {"total": len(timesteps), "desc": "sampling", "leave": False, **self.progress_bar_config}
        from tqdm.auto import tqdm

        camera_kwargs = {} if camera_motion is None else {"camera_motion": camera_motion}
        done = 0
        whole = self.active_memory_mode in ("model_offload", "fp8_offload")
        with on_device(self.transformer, self.device, whole):
            with tqdm(**progress) as bar:
                for i, timestep in enumerate(timesteps):
                    if self._interrupt:
                        break
                    model_input = torch.cat([latents] * ((2 if do_cfg else 1) + guide_camera))
                    if hasattr(scheduler, "scale_model_input"):
                        model_input = scheduler.scale_model_input(model_input, timestep)
                    t_batch = timestep.reshape(1).expand(model_input.shape[0]).to(model_input.dtype)
                    pred = self.transformer(
                        model_input,
                        t_batch,
                        embeds,
                        inpaint_latents=inpaint_latents,
                        control_latents=control_latents,
                        **camera_kwargs,
                    ).float()
                    if pred.shape[1] != self.latent_channels:  # learned-variance models: keep the mean
                        pred = pred[:, : self.latent_channels]
                    if guide_camera:
                        pred, still_pred = pred[:-batch], pred[-batch:]
                    text = pred[-batch:]
                    if do_cfg:
                        uncond = pred[:batch]
                        pred = uncond + guidance_scale * (text - uncond)
                    if guide_camera:
                        pred = pred + camera_guidance_scale * (text - still_pred)
                    if do_cfg and guidance_rescale > 0:
                        pred = _rescale_guidance(pred, text, guidance_rescale)
                    latents = scheduler.step(pred, timestep, latents, return_dict=False, **step_kwargs)[
                        0
                    ].float()
                    if blend_mask is not None:
                        known = video_latents
                        if i < len(timesteps) - 1:
                            known = self._add_noise(scheduler, video_latents, timesteps[i + 1], noise)
                        latents = (1 - blend_mask) * known + blend_mask * latents
                    if known_head is not None:
                        head, n = known_head
                        if i < len(timesteps) - 1:
                            head = self._add_noise(scheduler, head, timesteps[i + 1], noise[:, :, :n])
                        latents[:, :, :n] = head
                    if not torch.isfinite(latents).all():
                        raise ValueError(
                            f"sampling diverged: NaN/inf latents after step {i + 1} (try float32, another "
                            "sampler or a lower guidance scale)"
                        )
                    done += 1
                    bar.update()
                    if callback is not None and callback(i, timestep, latents) is False:
                        self._interrupt = True
        return latents, done, len(timesteps)

    def _long_video(self, cond: _Conditioning, chunk: int, overlap: int, common: dict):
        """Chained I2V chunks: chunk k+1 keeps the last ``overlap`` frames of chunk k, and the overlap is
        cross-faded linearly (weight i / overlap for the new chunk's i-th frame), as EasyAnimate's long
        video recipe. The last chunk is the shortest 4k+1 clip that reaches the requested length."""
        total = cond.frames
        video: torch.Tensor | None = None
        done = planned = 0
        while video is None or video.shape[2] < total:
            missing = total if video is None else total - video.shape[2] + overlap
            length = chunk if missing >= chunk else _floor_4k1(missing + 3)  # smallest 4k+1 >= missing
            sub = _Conditioning(height=cond.height, width=cond.width, frames=length, mode="i2v")
            if video is None:
                if cond.video is not None:  # I2V start
                    sub.video, sub.keep_mask = cond.video[:, :, :length], cond.keep_mask[:, :, :length]
                else:
                    sub.mode = "t2v"
            else:
                tail = video[:, :, -overlap:]
                sub.video = torch.cat([tail, tail[:, :, -1:].expand(-1, -1, length - overlap, -1, -1)], dim=2)
                sub.keep_mask = torch.ones((1, 1, length, cond.height, cond.width))
                sub.keep_mask[:, :, :overlap] = 0.0
            latents, steps, steps_planned = self._denoise(sub, **common)
            done, planned = done + steps, planned + steps_planned
            out = self._decode(latents).cpu()
            if video is None:
                video = out
            else:
                ratio = (torch.arange(overlap, dtype=torch.float32) / overlap).reshape(1, 1, -1, 1, 1)
                video[:, :, -overlap:] = video[:, :, -overlap:] * (1 - ratio) + out[:, :, :overlap] * ratio
                video = torch.cat([video, out[:, :, overlap:]], dim=2)
            if self._interrupt:
                break
        return video[:, :, :total], done, planned

    def _postprocess(self, video: torch.Tensor, output_type: str):
        from kinema.videoio import tensor_to_frames

        if output_type == "pt":
            return video.cpu()
        frames = tensor_to_frames(video.cpu())  # (B, F, H, W, 3) uint8
        if output_type == "np":
            return frames
        from PIL import Image

        return [[Image.fromarray(f) for f in clip] for clip in frames]


def check_config_mode(model_type: str, config) -> str:
    """``check_mode`` for a :class:`~kinema.config.GenerationConfig` (the CLI and the server share it)."""
    return check_mode(
        model_type,
        image=config.image,
        end_image=config.end_image,
        video=config.video,
        mask_video=config.mask,
        control_video=config.control_video,
        ref_image=config.reference_image,
        trajectory=config.trajectory,
        camera=config.camera,
        chunk_frames=config.chunk_frames,
    )
