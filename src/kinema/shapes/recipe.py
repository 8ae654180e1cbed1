"""Helpers of the embedded-model training recipe (``scripts/train_shapes.sh``); the training is ``kinema train``.

    python -m kinema.shapes.recipe data DIR [--clips N] [--seed S]     training set + control videos
    python -m kinema.shapes.recipe inflate-vae SRC DST                  image VAE -> video-stage init
    python -m kinema.shapes.recipe finalize-vae SRC DST --data DIR      deterministic posterior, scaling
    python -m kinema.shapes.recipe camera-data DIR [--clips N]           moving-camera clips, preset poses
    python -m kinema.shapes.recipe text-encoder DIR --data D [--steps N] [--more-steps M]  the small text encoder
    python -m kinema.shapes.recipe export RUNS OUT                      assemble the embedded model family

``data`` writes the ShapesWorld training split (held-out colour x shape x direction combinations are never
drawn) with ``kinema.shapes.write_dataset`` and adds what the trainer's control and camera modes read:
a trajectory control video per clip (white Gaussian blobs on the object tracks, rendered by
``kinema.control.render_trajectory_video``, the same renderer ``kinema generate --trajectory`` uses) and
five metadata files: ``metadata.jsonl`` (all samples), ``metadata_t2v.jsonl`` (those plus as many
single-object static-camera clips, ``simple/``: the T2V base's data), ``metadata_control.jsonl`` (videos
with ``control_file_path``), ``metadata_camera.jsonl`` (videos with ``camera_file_path``) and
``metadata_vae_floor.jsonl`` (all samples plus the camera clips: the VAE decoder's floor stage).

``finalize-vae`` turns the deterministically trained autoencoder into the VAE the transformers use: the
log-variance half of ``quant_conv`` is set to a constant -30 (std 3e-7), so the trainer's posterior
*sample* equals the mode it was trained with (a never-trained log-variance sits at ~0, std 1, which
would drown latents of std ~1), and ``scaling_factor`` becomes 1 / (latent std on training clips), so
the diffusion latents have unit variance.

``text-encoder`` pre-trains the small Qwen2-VL text encoder on ShapesWorld prompts (``text_pretrain``: the
stand-in for V5.1's pretrained LLM), stores it in bf16 with the real tokenizer; it is frozen from then on.
Every transformer run reads it (``model.text_encoder_path``). ``camera-data`` writes the Camera model's
metadata: moving cameras over the floor (85 %; bold textures before session 14), each as a
preset-convention pose file.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

from .dataset import DEFAULT_FPS, load_metadata, write_dataset, write_video

# init_std ~ 1/sqrt(32): a frozen random encoder at Qwen2's 0.02 barely mixes context (a colour word changes
# the padding features by 0.06 %, and the T2V model ignored the prompt after 3000 steps); at 0.18 by ~7 %.
# Prompts pad to 96 tokens, not EasyAnimate's 256 (stored in text_encoder/config.json, so every loader uses
# it): ShapesWorld prompts take 27-102 tokens with the chat template (99.9 % <= 89), and 256 - len padding
# tokens dilute the DiT's attention to the prompt (the text tokens are 3/4 of the sequence at 256).
TEXT_MAX_LENGTH = 96
TEXT_ENCODER = dict(hidden_size=32, num_layers=4, num_attention_heads=2, num_key_value_heads=1, init_std=0.18)
# Steps of the text encoder's second pre-training cycle (text_pretrain.build_text_encoder, "Session 10").
TEXT_MORE_STEPS = 3000


def prepare_data(
    root: str | Path,
    clips: int,
    seed: int = 0,
    image_fraction: float = 0.1,
    camera_clips: int | None = None,
    simple_clips: int | None = None,
) -> Path:
    """Write the training set and its control videos / metadata variants; returns ``root``.

    ``simple_clips`` (default ``clips``) single-object static-camera clips join the T2V base's data;
    ``camera_clips`` (default ``clips // 2``) moving-camera clips make the Camera model's."""
    root = Path(root)
    write_dataset(root, clips, seed=seed, split="train", image_fraction=image_fraction)
    records = load_metadata(root)
    control_rows = _add_control_videos(root, records)
    _write_jsonl(root / "metadata_control.jsonl", control_rows)
    prepare_t2v_data(root, clips if simple_clips is None else simple_clips, seed + SIMPLE_SEED_OFFSET)
    prepare_camera_data(root, clips // 2 if camera_clips is None else camera_clips, seed + 1)  # last: marker
    return root


# The T2V base learns colour, shape and direction from single objects on a still background much faster
# than from the full mix (only ~23 % of which is one straight-moving object under a static camera):
# docs/shapesworld-model.md, "Session 9". The seed offset keeps the simple clips distinct from the others.
SIMPLE_SEED_OFFSET = 7


def prepare_t2v_data(root: str | Path, clips: int, seed: int) -> Path:
    """``metadata_t2v.jsonl``: the training set plus ``clips`` single-object, static-camera clips (in
    ``simple/``; paths, backgrounds and the held-out split as usual), the T2V base's data."""
    root = Path(root)
    rows = load_metadata(root)
    if clips > 0:
        write_dataset(root / "simple", clips, seed=seed, split="train", two_object_prob=0.0, camera_prob=0.0)
        for r in load_metadata(root / "simple"):
            r = {**r, "file_path": "simple/" + r["file_path"]}
            if r.get("pose_file"):
                r["pose_file"] = "simple/" + r["pose_file"]
            rows.append(r)
    return _write_jsonl(root / "metadata_t2v.jsonl", rows)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Temporary file + rename: a metadata file that exists is complete (`recipe data` relies on it)."""
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _add_control_videos(root: Path, records: list[dict]) -> list[dict]:
    """A trajectory control video per clip (white blobs on its object tracks); the rows that name them."""
    from kinema.control.trajectory import Track, render_trajectory_video

    (root / "control").mkdir(exist_ok=True)
    rows = []
    for rec in records:
        if rec["type"] != "video":
            continue
        tracks = np.asarray(rec["tracks"], dtype=np.float64)
        nf = int(rec["num_frames"])
        points = [Track([(f, float(x), float(y)) for f, (x, y) in enumerate(t)]) for t in tracks]
        control = render_trajectory_video(points, nf, rec["height"], rec["width"], method="linear")
        name = f"control/{Path(rec['file_path']).stem}.mp4"
        write_video(root / name, control, DEFAULT_FPS, crf=10)
        rows.append({**rec, "control_file_path": name})
    return rows


# Share of static cameras in the camera model's data: enough to keep "no motion" in its vocabulary. With
# ShapesWorld's own mix (~85 % static) the camera branch learned to ignore the poses (docs/shapesworld-model.md).
CAMERA_STATIC_SHARE = 0.15


def prepare_camera_data(root: str | Path, clips: int, seed: int, textures: str = "floor") -> Path:
    """``metadata_camera.jsonl``: ``clips`` extra moving-camera clips filmed over the floor (in
    ``camera_floor/``; without extra clips, the training set's moving-camera clips) plus 15 % static ones
    from the training set, each with its camera as a preset-convention pose file
    (``kinema.shapes.camera.preset_poses``: what ``kinema generate --camera pan_left`` passes).

    The floor (``world.FLOOR_SQUARE_PX``): on random textures a small model draws the background in place
    whatever the camera says; the floor's pattern follows from the camera alone (docs/shapesworld-model.md,
    session 14). ``textures="bold"`` (``world.BOLD_PERIOD_SCALE``, before session 14) writes
    ``camera_extra/`` with coarser, stronger random textures instead."""
    if textures not in ("bold", "floor"):
        raise ValueError(f"textures must be 'bold' or 'floor', got {textures!r}")
    from .camera import preset_poses, read_pose_file, write_pose_file

    root = Path(root)
    extra = root / ("camera_extra" if textures == "bold" else "camera_floor")
    if clips > 0 and not (extra / "metadata.jsonl").is_file():
        floor = textures == "floor"
        write_dataset(
            extra, clips, seed=seed, split="train", camera_prob=1.0, bold_textures=not floor, floor=floor
        )
    rows = [r for r in load_metadata(root) if r["type"] == "video"]
    static = [r for r in rows if r["camera"] == "static"]
    if clips > 0:
        rows = [{**r, "file_path": f"{extra.name}/{r['file_path']}", "pose_file": f"{extra.name}/{r['pose_file']}"}
                for r in load_metadata(extra) if r["type"] == "video"]  # fmt: skip
    moving = [r for r in rows if r["camera"] != "static"]
    n_static = min(len(static), int(round(len(moving) * CAMERA_STATIC_SHARE / (1 - CAMERA_STATIC_SHARE))))
    (root / "poses_preset").mkdir(exist_ok=True)
    out = []
    for rec in moving + static[:n_static]:
        name = "poses_preset/" + rec["file_path"].replace("/", "_").replace(".mp4", ".txt")
        write_pose_file(root / name, preset_poses(rec["camera"], read_pose_file(root / rec["pose_file"])))
        out.append({**rec, "camera_file_path": name})
    write_vae_floor_metadata(root, out)
    return _write_jsonl(root / "metadata_camera.jsonl", out)  # last: its presence means the set is complete


def write_vae_floor_metadata(root: str | Path, camera_rows: list[dict] | None = None) -> Path:
    """``metadata_vae_floor.jsonl``: every training sample plus the camera clips (floor ones among them),
    the data of the VAE decoder's floor stage (configs/shapes/vae_decoder_floor.toml, "Session 17")."""
    root = Path(root)
    if camera_rows is None:
        lines = (root / "metadata_camera.jsonl").read_text(encoding="utf-8").splitlines()
        camera_rows = [json.loads(line) for line in lines if line.strip()]
    return _write_jsonl(root / "metadata_vae_floor.jsonl", list(load_metadata(root)) + list(camera_rows))


FIXED_LOGVAR = -30.0


def inflate_vae(src: str | Path, dst: str | Path) -> int:
    """Move every causal conv's temporal taps into its newest tap (t); returns the number of convs changed.

    On images (the first frame is replicated into the causal padding) only the *sum* of a conv's three
    temporal taps matters, and the three taps get identical gradients, so an image-trained VAE keeps its
    random initial split: in video it then mixes each frame with the previous two everywhere, and the
    decoder ends up copying frame 0 forward (measured: replacing latent frames 1..4 by frame 0 changed
    its output by 0.002). Putting the sum into the newest tap is exact on images and makes every frame
    start from its own latent (the usual "inflation" of image weights for causal video convs).
    """
    import torch

    from kinema.models import VideoVAE
    from kinema.models.vae import CausalConv3d

    vae = VideoVAE.from_pretrained(src)
    changed = 0
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, CausalConv3d) and module.weight.shape[2] > 1:
                total = module.weight.sum(dim=2)
                module.weight.zero_()
                module.weight[:, :, -1] = total
                changed += 1
    vae.save_pretrained(dst)
    return changed


def finalize_vae(
    src: str | Path, dst: str | Path, data_root: str | Path, clips: int = 64
) -> dict[str, float]:
    """Write ``dst``: ``src`` with a fixed log-variance and a measured scaling factor; returns the stats."""
    import torch

    from kinema.models import VideoVAE

    from .dataset import read_video

    vae = VideoVAE.from_pretrained(src).eval()
    latent = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[latent:] = 0.0
        vae.quant_conv.bias[latent:] = FIXED_LOGVAR
        means = []
        videos = [r for r in load_metadata(data_root) if r["type"] == "video"][:clips]
        for rec in videos:
            frames = read_video(Path(data_root) / rec["file_path"])
            x = torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None]
            means.append(vae.encode(x).mode().flatten())
    std = float(torch.cat(means).std())
    vae.config.scaling_factor = round(1.0 / std, 4)
    vae.save_pretrained(dst)
    return {"latent_std": std, "scaling_factor": round(1.0 / std, 4)}


# The exported InP model is WiSE-FT-blended half-way with the T2V base it branched from (kinema.training.
# wise_ft). With the 6900-step base: T2V shape / direction on 64 held-out prompts 84.4 / 79.7 % against
# 82.8 / 73.4 % unblended; alpha 0.5 was set beforehand, not tuned (docs/shapesworld-model.md, "Session 13").
INP_BASE_ALPHA = 0.5
# Camera guidance the exported family asks for by default (pipeline camera_guidance_scale, stored as
# _kinema_defaults.camera_guidance_scale). Chosen on training-combination camera clips, never held-out ones:
# the Camera member moves the floor the asked way but too little (docs/shapesworld-model.md, "Session 15").
CAMERA_GUIDANCE = 1.0


def check_inp_alpha(alpha: float) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(f"--inp-alpha must be in [0, 1] (1: the InP branch alone), got {alpha}")


def check_camera_guidance(w: float) -> None:
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"--camera-guidance must be a finite number >= 0 (0: off), got {w}")


def _final(runs: Path, run: str, part: str) -> Path:
    """The run's finished weights: its EMA copy when it kept one."""
    for name in (f"{part}_ema", part):
        folder = runs / run / "final" / name
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"{runs / run / 'final'}: no {part}/ (did the run finish?)")


def blend_inp(runs: str | Path, out: str | Path, inp_alpha: float = INP_BASE_ALPHA) -> Path:
    """Write the InP branch blended with its T2V base (``alpha * inp + (1 - alpha) * base``, fp32): the
    start of the InP continuation stage (configs/shapes/inp_more.toml, "Session 16")."""
    from kinema.models import VideoTransformer
    from kinema.training import interpolate_weights

    check_inp_alpha(inp_alpha)
    runs, out = Path(runs), Path(out)
    model = VideoTransformer.from_pretrained(_final(runs, "inp", "transformer"))
    base = VideoTransformer.from_pretrained(_final(runs, "t2v_p1", "transformer"))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    interpolate_weights(model, base, inp_alpha).save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def export_family(
    runs: str | Path,
    out: str | Path,
    text_encoder: str | Path,
    inp_alpha: float = INP_BASE_ALPHA,
    camera_guidance: float = CAMERA_GUIDANCE,
) -> Path:
    """Assemble the embedded model family from the recipe's run folders (see kinema.shapes.embedded).

    The InP member is the continuation stage's (``runs/inp_more``, trained from :func:`blend_inp`'s
    output) when that run exists; else, for run folders from before session 16, ``inp_alpha`` < 1 blends the
    InP branch with its T2V base here. ``camera_guidance`` is the family's default camera guidance
    (model_index.json)."""
    import torch

    from kinema.models import VideoTransformer
    from kinema.pipelines.random_model import OFFICIAL_SCHEDULER_CONFIG, PIPELINE_CLASS
    from kinema.text import write_tokenizer_reference
    from kinema.training import interpolate_weights

    check_inp_alpha(inp_alpha)  # before anything is written
    check_camera_guidance(camera_guidance)
    runs, out = Path(runs), Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    inp_run = "inp_more" if (runs / "inp_more" / "final").is_dir() else "inp"
    # The decoder-refined VAE (same encoder as finalize_vae's output, which the transformers saw).
    # (Since session 17 refined once more on a mix with the floor clips, when that run exists.)
    vae_run = "vae_decoder_floor" if (runs / "vae_decoder_floor" / "final").is_dir() else "vae_decoder"
    shutil.copytree(_final(runs, vae_run, "vae"), tmp / "vae")
    # Transformers stored in bf16 (half the bytes; loaded back to fp32 on CPU): the three of them
    # would take 44 MB of the 40 MB budget in fp32.
    for run, name in (
        (inp_run, "transformer"),
        ("control", "transformer_control"),
        ("camera", "transformer_camera"),
    ):
        model = VideoTransformer.from_pretrained(_final(runs, run, "transformer"))
        if run == "inp" and inp_alpha < 1:
            model = interpolate_weights(
                model, VideoTransformer.from_pretrained(_final(runs, "t2v_p1", "transformer")), inp_alpha
            )
        model.to(torch.bfloat16).save_pretrained(tmp / name)
    shutil.copytree(Path(text_encoder) / "text_encoder", tmp / "text_encoder")
    # The tokenizer is named, not stored (18.7 MB): rebuilt from qwen.tiktoken when loaded.
    write_tokenizer_reference(tmp / "tokenizer")
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(OFFICIAL_SCHEDULER_CONFIG, indent=2) + "\n"
    )
    index = {
        "_class_name": PIPELINE_CLASS["inp"],
        "_diffusers_version": "0.32.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "EasyAnimateTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLMagvit"],
        # Trained on 17-frame clips. keep_known_frames: I2V pins the start image's latent frame (the
        # InP model alone reaches 20 dB first-frame PSNR, pinned 31 dB; docs/shapesworld-model.md).
        # camera_guidance_scale: the Camera member's push along the asked camera (CAMERA_GUIDANCE).
        "_kinema_defaults": {
            "num_frames": 17,
            "keep_known_frames": True,
            "camera_guidance_scale": camera_guidance,
        },
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kinema.shapes.recipe", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="write the training set, control videos and metadata variants")
    p.add_argument("root")
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-fraction", type=float, default=0.1)
    p.add_argument("--simple-clips", type=int, help="single-object static-camera clips (default: --clips)")
    p = sub.add_parser("camera-data", help="(re)write metadata_camera.jsonl: moving cameras, preset poses")
    p.add_argument("root")
    p.add_argument("--clips", type=int, default=1500, help="extra moving-camera clips")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--textures", choices=("bold", "floor"), default="floor", help="backgrounds of the extra clips"
    )
    p = sub.add_parser("inflate-vae", help="image VAE -> video init: temporal taps into the newest tap")
    p.add_argument("src")
    p.add_argument("dst")
    p = sub.add_parser("finalize-vae", help="fixed log-variance + measured scaling factor")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--data", required=True, help="training data root (latent statistics)")
    p = sub.add_parser("text-encoder", help="pre-train the small text encoder on ShapesWorld prompts (bf16)")
    p.add_argument("out")
    p.add_argument("--data", required=True, help="the training set (its scenes give the prompts)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument(
        "--more-steps", type=int, default=TEXT_MORE_STEPS, help="second cycle at a lower lr (0: none)"
    )
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("blend-inp", help="the InP branch blended with its T2V base: the continuation's start")
    p.add_argument("runs")
    p.add_argument("out")
    p.add_argument("--inp-alpha", type=float, default=INP_BASE_ALPHA, help="InP weight against its T2V base")
    p = sub.add_parser("export", help="assemble the embedded model family from the run folders")
    p.add_argument("runs")
    p.add_argument("out")
    p.add_argument("--text-encoder", required=True)
    p.add_argument(
        "--inp-alpha",
        type=float,
        default=INP_BASE_ALPHA,
        help="InP weight against its T2V base (1: InP alone; unused when runs/inp_more exists)",
    )
    p.add_argument(
        "--camera-guidance",
        type=float,
        default=CAMERA_GUIDANCE,
        help="the family's default camera guidance scale (0: off)",
    )
    args = parser.parse_args(argv)
    if args.command == "data":
        if args.simple_clips is not None and args.simple_clips < 0:
            print(f"error: --simple-clips must be >= 0, got {args.simple_clips}", file=sys.stderr)
            return 2
        if (Path(args.root) / "metadata_camera.jsonl").is_file():
            done = True
            if not (Path(args.root) / "metadata_t2v.jsonl").is_file():  # a set written before session 9
                clips = args.clips if args.simple_clips is None else args.simple_clips
                print(prepare_t2v_data(args.root, clips, args.seed + SIMPLE_SEED_OFFSET))
                done = False
            if not (Path(args.root) / "metadata_vae_floor.jsonl").is_file():  # a set from before session 17
                print(write_vae_floor_metadata(args.root))
                done = False
            if done:
                print(f"{args.root}: already written")
            return 0
        prepare_data(args.root, args.clips, args.seed, args.image_fraction, simple_clips=args.simple_clips)
    elif args.command == "camera-data":
        print(prepare_camera_data(args.root, args.clips, args.seed, args.textures))
    elif args.command == "inflate-vae":
        print(f"{inflate_vae(args.src, args.dst)} causal convs inflated")
    elif args.command == "finalize-vae":
        print(json.dumps(finalize_vae(args.src, args.dst, args.data)))
    elif args.command == "text-encoder":
        from .text_pretrain import build_text_encoder

        if args.steps < 1 or args.more_steps < 0:
            print(
                f"error: --steps must be >= 1 and --more-steps >= 0, got {args.steps} and {args.more_steps}",
                file=sys.stderr,
            )
            return 2
        if not (Path(args.data) / "metadata.jsonl").is_file():
            print(
                f"error: --data {args.data}: no metadata.jsonl; write it first (recipe data)", file=sys.stderr
            )
            return 2

        build_text_encoder(args.out, args.data, args.steps, args.seed, args.more_steps)
    elif args.command == "blend-inp":
        try:
            check_inp_alpha(args.inp_alpha)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(blend_inp(args.runs, args.out, args.inp_alpha))
    else:
        try:
            check_inp_alpha(args.inp_alpha)
            check_camera_guidance(args.camera_guidance)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(export_family(args.runs, args.out, args.text_encoder, args.inp_alpha, args.camera_guidance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
