"""The ShapesWorld benchmark: generate from held-out prompts in every mode a model supports and score it.

``run_benchmark(model_folder, options)`` is what ``kinema eval`` runs:

* **t2v** - a held-out prompt (colour x shape x direction never trained) -> colour, shape, direction;
* **i2v** - the same prompt plus the first frame of a ground-truth clip -> first-frame PSNR (and the rest);
* **trajectory** - prompt + the clip's object track as trajectory control -> trajectory error (px);
* **camera** - prompt + the clip's CameraCtrl poses (a pan or zoom) -> camera-direction accuracy;
* **vae** - reconstruction PSNR of held-out clips.

Prompts cycle through the languages (en, zh, ja, ko), so every language gets the same share; results are
also reported per language. ``score_videos(folder)`` scores videos written by ``kinema generate`` from
their JSON sidecars instead of generating.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import ClipResult, Conditions, aggregate, evaluate_clip
from .prompts import LANGUAGES, make_prompt, parse_prompt
from .spec import CAMERAS, SceneSpec, held_out_specs

GENERATION_MODES = ("t2v", "i2v", "trajectory", "camera")
MODES = (*GENERATION_MODES, "vae")
# The model type each mode needs (kinema.pipelines.loading.model_type_from_channels); t2v also runs on InP.
MODE_MODEL_TYPES = {"t2v": ("t2v", "inp"), "i2v": ("inp",), "trajectory": ("control",), "camera": ("camera",)}
# Issue 6's targets on held-out prompts: (mode, metric, comparison, threshold).
TARGETS = (
    ("t2v", "color_acc", ">=", 0.90),
    ("t2v", "shape_acc", ">=", 0.80),
    ("t2v", "direction_acc", ">=", 0.85),
    ("trajectory", "traj_err_px", "<=", 4.0),
    ("camera", "camera_acc_moving", ">=", 0.85),
    ("i2v", "first_frame_psnr", ">=", 25.0),
    ("vae", "psnr", ">=", 28.0),
)


@dataclass
class BenchmarkOptions:
    prompts: int = 16  # per generation mode
    seed: int = 0
    steps: int = 25
    guidance: float = 6.0
    modes: tuple[str, ...] = MODES
    languages: tuple[str, ...] = LANGUAGES
    vae_clips: int = 16
    frames: int | None = None  # None: the model's default (17 for the embedded model)
    height: int | None = None
    width: int | None = None

    def validate(self) -> None:
        if self.prompts < 1:
            raise ValueError(f"--prompts must be >= 1, got {self.prompts}")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.vae_clips < 1:
            raise ValueError(f"--vae-clips must be >= 1, got {self.vae_clips}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"--modes: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(MODES)}")
        bad = [lang for lang in self.languages if lang not in LANGUAGES]
        if bad or not self.languages:
            raise ValueError(
                f"--languages: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(LANGUAGES)}"
            )


@dataclass
class Case:
    """One benchmark prompt: the requested spec, its prompt text and the ground-truth clip it stands for."""

    spec: SceneSpec
    lang: str
    prompt: str
    clip: Any = field(repr=False)  # world.Clip rendered from spec


def benchmark_cases(mode: str, options: BenchmarkOptions) -> list[Case]:
    """Deterministic held-out cases for ``mode``; languages cycle so each gets the same share."""
    from .world import render_from_spec

    specs = held_out_specs(("straight",))
    rng = np.random.default_rng([options.seed, MODES.index(mode)])
    order = rng.permutation(len(specs))
    cases = []
    for i in range(options.prompts):
        spec = specs[int(order[i % len(specs)])]
        if mode == "camera":
            spec = dataclasses.replace(spec, camera=CAMERAS[1 + i % (len(CAMERAS) - 1)])
        lang = options.languages[i % len(options.languages)]
        clip = render_from_spec(
            spec, options.seed * 100_003 + i, options.height or 64, options.width or 64, options.frames or 17
        )
        prompt = make_prompt(spec, lang, rng, mention_camera=mode == "camera")
        cases.append(Case(spec, lang, prompt, clip))
    return cases


def _track_json(tracks: np.ndarray) -> dict[str, Any]:
    """ShapesWorld tracks (n, F, 2) pixel indices -> the kinema trajectory JSON layout (key points)."""
    return {
        "tracks": [
            {"normalized": False, "points": [[f, float(x), float(y)] for f, (x, y) in enumerate(track)]}
            for track in np.asarray(tracks)
        ]
    }


def _generate(pipe, case: Case, mode: str, options: BenchmarkOptions, workdir: Path, index: int):
    """Run one case through ``pipe``; returns (uint8 video (F, H, W, 3), Conditions, seconds)."""
    from .camera import preset_poses, write_pose_file

    clip = case.clip
    nf, h, w = clip.frames.shape[:3]
    kwargs: dict[str, Any] = dict(
        prompt=case.prompt,
        num_frames=nf,
        height=h,
        width=w,
        num_inference_steps=options.steps,
        guidance_scale=options.guidance,
        seed=options.seed * 1000 + index,
    )
    cond = Conditions()
    if mode == "i2v":
        kwargs["image"] = clip.frames[0]
        cond = Conditions(first_frame=clip.frames[0])
    elif mode == "trajectory":
        kwargs["trajectory"] = _track_json(clip.tracks)
        cond = Conditions(tracks=clip.tracks)
    elif mode == "camera":
        # The camera as a user states it (preset convention, kinema generate --camera), scored against the
        # clip's true ShapesWorld poses.
        pose_file = workdir / f"camera-{index}.txt"
        write_pose_file(pose_file, preset_poses(clip.camera, clip.poses))
        kwargs["camera"] = str(pose_file)
        cond = Conditions(poses=clip.poses)
    started = time.perf_counter()
    video = pipe(**kwargs).frames[0]
    return video, cond, time.perf_counter() - started


def _summarise(results: list[ClipResult], langs: list[str], seconds: list[float]) -> dict[str, Any]:
    out = aggregate(results)
    out["seconds_per_clip"] = float(np.mean(seconds)) if seconds else None
    out["by_language"] = {
        lang: aggregate([r for r, lg in zip(results, langs) if lg == lang]) for lang in dict.fromkeys(langs)
    }
    return out


def available_modes(model_folder: str | os.PathLike) -> dict[str, Path | None]:
    """Generation modes the folder (or its family) can run -> transformer override (None = the root's)."""
    from kinema.pipelines.loading import check_model_folder

    from .embedded import family_transformer

    root_type = check_model_folder(model_folder)["model_type"]
    modes: dict[str, Path | None] = {}
    for mode, types in MODE_MODEL_TYPES.items():
        if root_type in types:
            modes[mode] = None
            continue
        for model_type in types:
            found = family_transformer(model_folder, model_type)
            if found is not None:
                modes[mode] = found
                break
    return modes


def run_benchmark(
    model_folder: str | os.PathLike, options: BenchmarkOptions, strict: bool = False, log=print
) -> dict[str, Any]:
    """Generate and score every requested mode the model supports.

    Modes the model cannot run are listed under ``skipped`` (or raise ValueError with ``strict``).
    """
    from kinema.pipelines.loading import load_pipeline

    options.validate()
    available = available_modes(model_folder)
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    pipes: dict[Path | None, Any] = {}

    def pipeline(transformer: Path | None):
        if transformer not in pipes:
            pipes.clear()  # keep one pipeline in memory at a time
            pipes[transformer] = load_pipeline(model_folder, transformer=transformer)
            pipes[transformer].set_progress_bar_config(disable=True)
        return pipes[transformer]

    for mode in options.modes:
        if mode != "vae" and mode not in available:
            reason = f"the model has no {' or '.join(MODE_MODEL_TYPES[mode])} transformer"
            if strict:  # checked before anything is generated
                raise ValueError(f"--modes {mode}: {reason}")
            skipped[mode] = reason
    with tempfile.TemporaryDirectory(prefix="kinema-eval-") as tmp:
        for mode in options.modes:
            if mode == "vae" or mode in skipped:
                continue
            pipe = pipeline(available[mode])
            clip_results, langs, seconds = [], [], []
            for i, case in enumerate(benchmark_cases(mode, options)):
                video, cond, secs = _generate(pipe, case, mode, options, Path(tmp), i)
                spec = case.clip.spec if mode != "t2v" else case.spec
                clip_results.append(evaluate_clip(video, spec, cond))
                langs.append(case.lang)
                seconds.append(secs)
            results[mode] = _summarise(clip_results, langs, seconds)
            log(f"{mode}: {len(clip_results)} clips, {np.mean(seconds):.2f} s/clip")
    if "vae" in options.modes:
        from kinema.models import VideoVAE

        from .vae_check import held_out_clips, vae_report

        vae = pipes[next(iter(pipes))].vae if pipes else VideoVAE.from_pretrained(Path(model_folder) / "vae")
        clips = held_out_clips(options.vae_clips, options.seed, options.height or 64, options.width or 64,
                               options.frames or 17)  # fmt: skip
        results["vae"] = vae_report(vae, clips)
    return {
        "model": str(Path(model_folder).resolve()),
        "options": dataclasses.asdict(options),
        "results": results,
        "skipped": skipped,
        "targets": check_targets(results),
    }


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and pass/fail (None where the mode was not measured)."""
    rows = []
    for mode, metric, op, threshold in TARGETS:
        value = results.get(mode, {}).get(metric)
        ok = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        rows.append(
            {"mode": mode, "metric": metric, "target": f"{op} {threshold:g}", "value": value, "pass": ok}
        )
    return rows


# ---- scoring videos written by `kinema generate` ---------------------------------------------------------


def _sidecar_conditions(params: dict[str, Any], video: np.ndarray, base: Path) -> tuple[str, Conditions]:
    """(mode, Conditions) for a generated video from its sidecar parameters."""
    from kinema import videoio

    nf, h, w = video.shape[:3]

    def resolve(p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() or path.exists() else base / path

    if params.get("trajectory"):
        from kinema.control import load_tracks

        tracks = load_tracks(resolve(params["trajectory"]))
        return "trajectory", Conditions(tracks=np.stack([t.pixel_positions(nf, h, w) for t in tracks]))
    if params.get("camera"):
        camera = str(params["camera"])
        if camera in CAMERAS:
            return "camera", Conditions(camera=camera)
        from .camera import read_pose_file

        return "camera", Conditions(poses=read_pose_file(resolve(camera)))
    if params.get("image"):
        first = videoio.read_image(resolve(params["image"]))
        if first.shape[:2] != (h, w):
            first = videoio.resize_and_center_crop(first[None], h, w)[0]
        return "i2v", Conditions(first_frame=first)
    return "t2v", Conditions()


def score_videos(folder: str | os.PathLike) -> dict[str, Any]:
    """Score every video in ``folder`` that has a ``kinema generate`` JSON sidecar, grouped by mode.

    The expected scene comes from parsing the prompt (``parse_prompt``), the conditions from the sidecar.
    """
    from kinema import videoio

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--videos {folder}: not a directory")
    grouped: dict[str, tuple[list[ClipResult], list[str]]] = {}
    unscored: dict[str, str] = {}
    for path in _video_files(folder):
        sidecar = videoio.sidecar_path(path)
        if not sidecar.is_file():
            continue
        try:
            params = json.loads(sidecar.read_text(encoding="utf-8"))["parameters"]
            spec = parse_prompt(params["prompt"])
            video = videoio.read_video(path).frames
            mode, cond = _sidecar_conditions(params, video, folder)
        except (ValueError, KeyError, OSError) as e:
            unscored[path.name] = str(e)
            continue
        from .prompts import detect_language

        results, langs = grouped.setdefault(mode, ([], []))
        results.append(evaluate_clip(video, spec, cond))
        langs.append(detect_language(params["prompt"]))
    if not grouped:
        raise ValueError(f"--videos {folder}: no video with a readable kinema sidecar (.json) to score")
    results = {mode: _summarise(res, langs, []) for mode, (res, langs) in grouped.items()}
    return {"videos": str(folder.resolve()), "results": results, "unscored": unscored,
            "targets": check_targets(results)}  # fmt: skip


def _video_files(folder: Path) -> Iterable[Path]:
    suffixes = {".mp4", ".gif", ".webm", ".mov", ".mkv"}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())
