"""``kinema generate``: every generation mode from the command line, driven by GenerationConfig.

Everything that can be checked without weights is checked first (sizes, input files, model folder and
type vs mode, output path); then the model is loaded, the video generated, and the result written
atomically (mp4/gif/webm, png for one frame) with a JSON sidecar of every parameter.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

from kinema.config import GenerationConfig, add_dataclass_arguments, config_from_args

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RANDOM_MODEL_NOTE = (
    "NOTE: no trained embedded model is installed yet; generating with a small RANDOM model "
    "(the output is noise-like)"
)
RANDOM_MODEL_VERSION = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a video or image (T2V, I2V, V2V, inpainting, control, trajectory, camera, long video)",
        description=(
            "Generate a video (or an image with --frames 1). The mode follows from the inputs: --image "
            "(I2V, InP models), --video [--mask] (V2V / inpainting), --control-video / --trajectory "
            "(Control models), --camera (Camera models), --chunk-frames (long video, InP models)."
        ),
    )
    add_dataclass_arguments(parser, GenerationConfig)
    parser.set_defaults(func=run)


# ---- preflight: everything that needs no weights --------------------------------------------------


def requested_model_type(config: GenerationConfig) -> str:
    """The model type a request needs (used to pick the random fallback model)."""
    if config.camera:
        return "camera"
    if config.control_video or config.trajectory or config.reference_image:
        return "control"
    if config.image or config.chunk_frames:
        return "inp"
    return "t2v"


def output_path(config: GenerationConfig) -> Path:
    out = Path(config.out)
    suffix = out.suffix.lower()
    if suffix not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        raise ValueError(
            f"--out {out}: unsupported extension '{out.suffix}'; use one of {', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)}"
        )
    if config.frames == 1 and suffix in VIDEO_SUFFIXES and suffix != ".gif":
        out = out.with_suffix(".png")  # one frame is an image
    if config.frames is not None and config.frames > 1 and suffix in IMAGE_SUFFIXES:
        raise ValueError(f"--out {out}: {config.frames} frames need a video file (.mp4, .gif, .webm)")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name")
    return out


def preflight_inputs(config: GenerationConfig) -> None:
    """Read every input file once (clear MediaError/TrackError/PoseFileError naming the file)."""
    from kinema import videoio
    from kinema.control import load_tracks, read_pose_file, validate_control_type

    validate_control_type(config.control_type)
    for flag in ("image", "end_image", "video", "mask", "control_video", "reference_image"):
        path = getattr(config, flag)
        if path is None:
            continue
        if not Path(path).is_file():
            raise FileNotFoundError(f"--{flag.replace('_', '-')} {path}: file does not exist")
        videoio.read_video(path, max_frames=1)
    if config.trajectory:
        load_tracks(Path(config.trajectory))
    if config.camera:
        camera = config.camera
        if os.path.exists(camera) or camera.endswith(".txt") or os.sep in camera:
            if not Path(camera).is_file():
                raise FileNotFoundError(f"--camera {camera}: pose file does not exist")
            read_pose_file(camera)
        else:
            from kinema.control import camera_preset

            camera_preset(camera, 5)  # ValueError naming the unknown preset
    if config.lora:
        from .loading import read_lora

        read_lora(config.lora)


def embedded_model() -> Path | None:
    """The embedded ShapesWorld model folder, if it is installed."""
    try:
        from kinema.shapes import embedded_model_path
    except ImportError:
        return None
    try:
        found = embedded_model_path()
    except (FileNotFoundError, OSError, ValueError):
        return None
    if found is None:
        return None
    path = Path(found)
    return path if (path / "model_index.json").is_file() else None


def family_transformer(model_path: str, model_type: str) -> Path | None:
    """The family transformer folder for ``model_type`` (``transformer_control/`` ...), else None."""
    from kinema.shapes.embedded import family_transformer as find

    return find(model_path, model_type)


def random_model(model_type: str) -> Path:
    """A cached small random model of ``model_type`` (built once, atomically, under the user's cache)."""
    from .random_model import build_random_model

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kinema"
    folder = cache / f"random-model-{model_type}-v{RANDOM_MODEL_VERSION}"
    if (folder / "model_index.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{folder.name}."))
    try:
        build_random_model(tmp, model_type, seed=0)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "model_index.json").is_file():  # not a concurrent build that won the race
            raise
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---- run ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import kinema

    config: GenerationConfig = config_from_args(GenerationConfig, args)
    config.validate()
    out = output_path(config)
    preflight_inputs(config)

    model_path = config.model
    is_random = False
    if model_path is None:
        embedded = embedded_model()
        if embedded is not None:
            model_path = str(embedded)
        else:
            print(RANDOM_MODEL_NOTE, file=sys.stderr)
            model_path = str(random_model(requested_model_type(config)))
            is_random = True

    from .loading import check_model_folder, load_pipeline
    from .pipeline import check_config_mode

    # A model family (the embedded ShapesWorld model) keeps its Control/Camera transformers beside the
    # root model's transformer/ and shares the VAE and text encoder: swap in the one this request needs.
    transformer = family_transformer(model_path, requested_model_type(config))
    info = check_model_folder(model_path, transformer=transformer)
    check_config_mode(info["model_type"], config)
    from .schedulers import make_scheduler

    make_scheduler(config.sampler, info["scheduler_config"])

    started = time.perf_counter()
    pipe = load_pipeline(
        model_path,
        transformer=transformer,
        lora=config.lora,
        lora_weight=config.lora_weight,
        torch_dtype=config.dtype,
        memory_mode=config.memory_mode,
    )
    loaded = time.perf_counter()
    result = pipe.generate(config)
    seconds = time.perf_counter() - started

    from kinema import videoio

    frames = result.frames[0]  # (F, H, W, 3) uint8
    if frames.shape[0] == 1 and out.suffix.lower() in IMAGE_SUFFIXES:
        videoio.write_image(out, frames[0])
    else:
        videoio.write_video(out, frames, fps=config.fps)
    sidecar = {
        "parameters": dataclasses.asdict(config),
        "output": str(out),
        "model": {
            "path": str(Path(model_path).resolve()),
            "transformer": str(Path(transformer).resolve()) if transformer else None,
            "type": pipe.model_type,
            "random": is_random,
            "pipeline_class": pipe.model_index.get("_class_name"),
        },
        "resolved": {
            **{k: v for k, v in result.info.items() if k != "seconds"},
            "seed": result.seed,
            "steps_done": result.steps_done,
            "memory_mode": result.memory_mode,
            "dtype": str(pipe.dtype).replace("torch.", ""),
            "device": str(pipe.device),
        },
        "seconds": {"total": round(seconds, 3), "load": round(loaded - started, 3)},
        "kinema_version": kinema.__version__,
    }
    videoio.save_sidecar_json(videoio.sidecar_path(out), sidecar)
    kind = "image" if frames.shape[0] == 1 else f"{frames.shape[0]}-frame video"
    print(
        f"wrote {out} ({kind}, {frames.shape[2]}x{frames.shape[1]}, {seconds:.1f} s) and {videoio.sidecar_path(out)}"
    )
    return 0
