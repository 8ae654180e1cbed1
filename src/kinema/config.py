"""One dataclass describes a generation request; it drives both the CLI and the Python API.

Every field becomes a ``kinema generate`` flag (``frames`` → ``--frames``) with the help text in its
metadata, and ``GenerationConfig(**kwargs)`` is what ``VideoPipeline.generate`` takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

# Sampler names; how each maps onto a diffusers scheduler: kinema/pipelines/schedulers.py.
SAMPLERS = ("flow", "euler", "euler_a", "dpm++", "unipc", "ddim", "pndm")
MEMORY_MODES = ("auto", "none", "model_offload", "sequential_offload", "fp8", "fp8_offload")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class GenerationConfig:
    prompt: str = _f("", "what to generate (any language the text encoder knows)")
    negative_prompt: str | None = _f(None, "what to avoid; none and empty are the same")
    model: str | None = _f(None, "model folder in diffusers format; default: the embedded ShapesWorld model")
    height: int | None = _f(None, "output height in px, a multiple of 16 (default: the model's)")
    width: int | None = _f(None, "output width in px, a multiple of 16 (default: the model's)")
    frames: int | None = _f(None, "number of frames, 4k+1 (1 = an image; default: the model's)")
    fps: int = _f(8, "frames per second of the written video")
    steps: int = _f(25, "sampling steps")
    guidance: float = _f(6.0, "classifier-free guidance scale (1 disables CFG)")
    guidance_rescale: float = _f(0.0, "guidance rescale (0 = off)")
    seed: int = _f(42, "random seed: the same seed gives the same video")
    sampler: str = _f("flow", "sampler", choices=SAMPLERS)
    image: str | None = _f(None, "start image (I2V; InP models)")
    end_image: str | None = _f(None, "end image (I2V; InP models)")
    video: str | None = _f(None, "input video (V2V)")
    mask: str | None = _f(None, "mask video or image for V2V inpainting (white = regenerate)")
    strength: float = _f(1.0, "V2V denoise strength in (0, 1]")
    control_video: str | None = _f(None, "control video (Control models)")
    control_type: str = _f(
        "raw", "what --control-video is: raw (ready control video) or canny (edges computed)"
    )
    reference_image: str | None = _f(None, "reference image for Control models")
    trajectory: str | None = _f(None, "JSON point tracks for trajectory control")
    camera: str | None = _f(
        None, "camera preset (e.g. pan_left, zoom_in, pan_up+pan_left) or CameraCtrl pose file"
    )
    camera_guidance: float | None = _f(
        None,
        "Camera models: push the video along the asked camera, away from a still one (0 = off; "
        "default: the model's, 0 for EasyAnimate weights)",
    )
    chunk_frames: int | None = _f(
        None, "long video: generate in I2V chunks of this many frames (4k+1; InP models), chained"
    )
    overlap_frames: int = _f(4, "long video: frames shared by consecutive chunks, cross-faded")
    keep_known_frames: bool | None = _f(
        None,
        "InP models: replace the latents of the start image (and of kept chunk heads) after every step, "
        "so the video starts exactly with it (default: the model's; off for EasyAnimate weights)",
    )
    memory_mode: str = _f("auto", "memory mode (auto picks from a memory estimate)", choices=MEMORY_MODES)
    vae_tiling: bool | None = _f(None, "decode/encode in 256 px tiles (default: when memory needs it)")
    free_text_encoder: bool = _f(False, "free the text encoder after encoding the prompt (saves RAM)")
    dtype: str = _f("auto", "compute dtype (auto: bf16 on GPUs that have it, fp32 on CPU)", choices=DTYPES)
    lora: str | None = _f(None, "LoRA safetensors file")
    lora_weight: float = _f(1.0, "LoRA strength")
    out: str = _f(
        "outputs/video.mp4", "output file (.mp4/.gif; .png for 1 frame); a .json sidecar is written beside it"
    )

    def validate(self) -> None:
        """Cheap checks that need no model; raise ValueError naming the field and a fix."""
        if self.height is not None and (self.height <= 0 or self.height % 16):
            raise ValueError(
                f"--height {self.height}: must be a positive multiple of 16 (nearest: {_near16(self.height)})"
            )
        if self.width is not None and (self.width <= 0 or self.width % 16):
            raise ValueError(
                f"--width {self.width}: must be a positive multiple of 16 (nearest: {_near16(self.width)})"
            )
        if self.frames is not None and (self.frames < 1 or (self.frames - 1) % 4):
            lo = max(1, (self.frames - 1) // 4 * 4 + 1)
            raise ValueError(
                f"--frames {self.frames}: must be 4k+1 (1, 5, 9, ..., 49); nearest: {lo} or {lo + 4}"
            )
        if self.steps < 1:
            raise ValueError(f"--steps {self.steps}: must be >= 1")
        if not (0.0 < self.strength <= 1.0):
            raise ValueError(f"--strength {self.strength}: must be in (0, 1]")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(f"--guidance {self.guidance}: must be a finite number >= 0")
        for name, choices in (("sampler", SAMPLERS), ("memory_mode", MEMORY_MODES), ("dtype", DTYPES)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose one of {', '.join(choices)}"
                )
        if self.end_image and not self.image:
            raise ValueError("--end-image needs --image (the start frame)")
        if self.mask and not self.video:
            raise ValueError("--mask needs --video (the video to inpaint)")
        if self.image and self.video:
            raise ValueError("--image (I2V) and --video (V2V) cannot be combined")
        if self.strength < 1.0 and not self.video:
            raise ValueError(f"--strength {self.strength}: a strength below 1 needs --video (V2V)")
        if not (0.0 <= self.guidance_rescale <= 1.0):
            raise ValueError(f"--guidance-rescale {self.guidance_rescale}: must be in [0, 1]")
        if self.camera_guidance is not None:
            if not math.isfinite(self.camera_guidance) or self.camera_guidance < 0:
                raise ValueError(f"--camera-guidance {self.camera_guidance}: must be a finite number >= 0")
            if self.camera_guidance > 0 and not self.camera:
                raise ValueError(
                    f"--camera-guidance {self.camera_guidance}: needs --camera (a preset or pose file)"
                )
        if self.fps < 1:
            raise ValueError(f"--fps {self.fps}: must be >= 1")
        if self.chunk_frames is not None:
            if self.chunk_frames < 5 or (self.chunk_frames - 1) % 4:
                raise ValueError(f"--chunk-frames {self.chunk_frames}: must be 4k+1 and >= 5")
            if not (0 < self.overlap_frames < self.chunk_frames):
                raise ValueError(f"--overlap-frames {self.overlap_frames}: must be in [1, --chunk-frames)")
        given = [n for n in ("control_video", "trajectory", "camera") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(
                f"--{given[0].replace('_', '-')} and --{given[1].replace('_', '-')} cannot be combined"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)


def _near16(v: int) -> str:
    lo = max(16, v // 16 * 16)
    return f"{lo} or {lo + 16}"


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per dataclass field, typed from its default/annotation."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"help": f.metadata.get("help", ""), "default": f.default, "dest": f.name}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        t = str(f.type)
        if t.startswith("bool"):
            # --flag / --no-flag; a None default means "decide automatically".
            kw.pop("type", None)
            kw["action"] = argparse.BooleanOptionalAction
            parser.add_argument(flag, **kw)
            continue
        if t.startswith("int"):
            kw["type"] = int
        elif t.startswith("float"):
            kw["type"] = float
        else:
            kw["type"] = str
        if kw["default"] is not None:
            kw["help"] += f" (default: {kw['default']})"
        parser.add_argument(flag, **kw)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
