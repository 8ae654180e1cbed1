"""Pieces of the embedded-model recipe: the foreground VAE loss, the VAE gate and the data step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.shapes import random_clip
from kinema.shapes.vae_loss import ForegroundL1, foreground_mask


def _video(clip) -> torch.Tensor:
    return torch.from_numpy(clip.frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]


def test_foreground_mask_covers_the_objects_and_little_else():
    clip = random_clip(3, frames=5)
    mask = foreground_mask(_video(clip))[0, 0].numpy().astype(bool)  # (F, H, W)
    for f in range(5):
        for x, y in clip.tracks[:, f]:
            assert mask[f, int(round(y)), int(round(x))]  # every object centre is foreground
    assert mask.mean() < 0.25


def test_foreground_l1_is_zero_for_a_perfect_reconstruction_and_weighs_objects():
    video = _video(random_clip(4, frames=1))
    loss = ForegroundL1()
    assert loss(video, video).item() == 0.0
    wrong_bg = video.clone()
    wrong_bg[foreground_mask(video).expand_as(video) == 0] += 0.5  # only background pixels wrong
    assert loss(video, wrong_bg).item() == 0.0
    assert loss(video, torch.zeros_like(video)).item() > 0.1


def test_vae_check_gate(tmp_path, capsys):
    from kinema.models import VideoVAE
    from kinema.shapes.vae_check import main

    VideoVAE.from_config(
        dict(block_out_channels=(8, 8, 16, 16), norm_num_groups=4, layers_per_block=1)
    ).save_pretrained(tmp_path / "vae")
    assert main([str(tmp_path / "vae"), "--clips", "1", "--frames", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 1 and 0 < report["psnr"] < 28
    assert main([str(tmp_path / "vae"), "--clips", "1", "--frames", "5", "--min-psnr", "28"]) == 1
    assert main([str(tmp_path / "missing")]) == 2


def test_recipe_data_step(tmp_path):
    from kinema.control.camera import DEFAULT_INTRINSICS, read_pose_file
    from kinema.data.metadata import load_metadata
    from kinema.shapes.recipe import prepare_data

    root = prepare_data(
        tmp_path / "data", clips=4, seed=0, image_fraction=0.0, camera_clips=3, simple_clips=3
    )
    # The T2V base's data: the 4 clips, then 3 single-object static-camera ones from simple/.
    t2v = [json.loads(line) for line in (root / "metadata_t2v.jsonl").read_text().splitlines()]
    main_rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    assert [row["file_path"] for row in t2v[:4]] == [row["file_path"] for row in main_rows]
    simple = t2v[4:]
    assert len(simple) == 3 and all(row["file_path"].startswith("simple/") for row in simple)
    assert all(len(row["spec"]["objects"]) == 1 and row["camera"] == "static" for row in simple)
    assert not any(row["held_out"] for row in t2v)
    assert all((root / row["file_path"]).is_file() and (root / row["pose_file"]).is_file() for row in simple)
    control = [json.loads(line) for line in (root / "metadata_control.jsonl").read_text().splitlines()]
    camera = [json.loads(line) for line in (root / "metadata_camera.jsonl").read_text().splitlines()]
    assert len(control) == 4
    assert all((root / row["control_file_path"]).is_file() for row in control)
    assert not any(row["held_out"] for row in control)
    samples = load_metadata(root / "metadata_control.jsonl", root)
    assert all(s.control_path is not None and s.control_path.is_file() for s in samples)
    # Camera data: the moving rows are the 3 extra clips (over the floor); static cameras are at most ~15 %.
    moving = [row for row in camera if row["camera"] != "static"]
    assert len(moving) == 3 and all(row["file_path"].startswith("camera_floor/") for row in moving)
    assert len(camera) - len(moving) <= max(1, round(0.15 * len(camera)))
    for row in camera:
        assert (root / row["file_path"]).is_file()
        poses = read_pose_file(root / row["camera_file_path"])
        assert (poses[0].fx, poses[0].fy, poses[0].cx, poses[0].cy) == pytest.approx(DEFAULT_INTRINSICS)
    assert load_metadata(root / "metadata_camera.jsonl", root)
    # A set written before metadata_t2v.jsonl existed: `recipe data` adds only that file.
    from kinema.shapes.recipe import main

    (root / "metadata_t2v.jsonl").unlink()
    before = (root / "metadata_camera.jsonl").stat().st_mtime_ns
    assert main(["data", str(root), "--clips", "4", "--simple-clips", "2"]) == 0
    assert len((root / "metadata_t2v.jsonl").read_text().splitlines()) == 6
    assert (root / "metadata_camera.jsonl").stat().st_mtime_ns == before
    assert main(["data", str(root), "--simple-clips", "-1"]) == 2
    # The VAE decoder's floor stage reads every sample plus the camera clips; an older set gets only that file.
    floor = [json.loads(line) for line in (root / "metadata_vae_floor.jsonl").read_text().splitlines()]
    assert [r["file_path"] for r in floor] == [r["file_path"] for r in main_rows + camera]
    (root / "metadata_vae_floor.jsonl").unlink()
    assert main(["data", str(root)]) == 0
    assert (root / "metadata_vae_floor.jsonl").read_text().splitlines() == [
        json.dumps(r, ensure_ascii=False) for r in floor
    ]
    assert (root / "metadata_camera.jsonl").stat().st_mtime_ns == before


def test_bold_textures_keep_the_scene_and_enlarge_the_texture():
    """Same seed, same scene (objects, camera, background kind); the texture's period is 2.5x and its contrast
    1.6x, still below the evaluator's foreground threshold, so segmentation and camera estimation hold."""
    from kinema.shapes import evaluate_clip
    from kinema.shapes.color import srgb_to_lab
    from kinema.shapes.detect import FG_THRESHOLD
    from kinema.shapes.world import render_scene, sample_scene

    for seed in range(6):
        plain = sample_scene(np.random.default_rng(seed), camera_prob=1.0)
        bold = sample_scene(np.random.default_rng(seed), camera_prob=1.0, bold_textures=True)
        assert bold.spec == plain.spec and bold.background.kind in ("checker", "noise")
        assert bold.background.period == pytest.approx(2.5 * plain.background.period)
        base, accent = (srgb_to_lab(np.array(c)[None])[0] for c in
                        (bold.background.base_rgb, bold.background.accent_rgb))  # fmt: skip
        assert 7 < np.linalg.norm(accent - base) < FG_THRESHOLD
        clip = render_scene(bold)
        result = evaluate_clip(clip.frames, clip.spec, {"poses": clip.poses})
        assert result.camera_ok and all(o.color_ok for o in result.objects) and result.extra_objects == 0


def test_floor_is_one_checkerboard_fixed_in_the_world(tmp_path):
    """Floor scenes: whatever the seed, frame 0 shows the same light/dark squares (the pattern follows from the
    camera alone), light squares lighter by FLOOR_CONTRAST, below the foreground threshold, so the evaluator
    reads the camera and the objects' colours; later frames show the squares moved with the camera."""
    from kinema.shapes import evaluate_clip
    from kinema.shapes.color import srgb_to_lab
    from kinema.shapes.detect import FG_THRESHOLD
    from kinema.shapes.recipe import prepare_camera_data
    from kinema.shapes.world import FLOOR_CONTRAST, FLOOR_SQUARE_PX, focal_px, render_scene, sample_scene

    ys, xs = np.mgrid[0:64, 0:64]
    wx, wy = (xs + 0.5 - 32) / focal_px(64), (ys + 0.5 - 32) / focal_px(64)  # frame 0: camera at the origin
    patterns = []
    for seed in range(6):
        scene = sample_scene(np.random.default_rng(seed), camera_prob=1.0, floor=True)
        bg = scene.background
        assert scene.spec.background == bg.kind == "checker"
        assert bg.period * focal_px(64) == pytest.approx(FLOOR_SQUARE_PX)
        base, accent = (srgb_to_lab(np.array(c)[None])[0] for c in (bg.base_rgb, bg.accent_rgb))
        assert FLOOR_CONTRAST[0] - 0.5 < accent[0] - base[0] < FLOOR_CONTRAST[1] + 0.5
        assert np.linalg.norm(accent - base) < FG_THRESHOLD
        patterns.append(bg.texture(wx, wy) > 0.5)
        clip = render_scene(scene)
        result = evaluate_clip(clip.frames, clip.spec, {"poses": clip.poses})
        assert result.camera_ok and all(o.color_ok for o in result.objects) and result.extra_objects == 0
        assert np.abs(clip.frames[-1].astype(float) - clip.frames[0]).mean() > 5  # the floor moved
    assert all((p == patterns[0]).all() for p in patterns) and 0.4 < patterns[0].mean() < 0.6
    root = tmp_path / "data"
    root.mkdir()
    (root / "metadata.jsonl").write_text("")
    rows = [json.loads(r) for r in prepare_camera_data(root, 2, seed=1).read_text().splitlines()]
    assert len(rows) == 2 and all(r["file_path"].startswith("camera_floor/") and r["spec"]["background"] == "checker"
                                  for r in rows)  # fmt: skip
    with pytest.raises(ValueError, match="textures must be"):
        prepare_camera_data(root, 2, seed=1, textures="tiles")


@pytest.mark.parametrize("label", ["pan_left", "pan_up", "zoom_in", "zoom_out"])
def test_preset_poses_follow_the_label_and_the_clip_speed(label):
    from kinema.control.camera import CameraPose, plane_motion
    from kinema.shapes.camera import PRESET_PLANE_DEPTH, plane_image_motion, poses_from_centers, preset_poses
    from kinema.shapes.world import CameraInstance

    unit = {"pan_left": (-1, 0, 0), "pan_up": (0, -1, 0), "zoom_in": (0, 0, 1), "zoom_out": (0, 0, -1)}[label]
    speeds = []
    for travel in (0.25, 0.3):
        centers = CameraInstance(label, end=tuple(travel * u for u in unit)).centers(17)
        clip = poses_from_centers(centers, 64, 64)
        poses = preset_poses(label, clip)
        # A plane at the calibration depth moves under the preset as the clip's background does.
        preset = [CameraPose(*k, w2c=w) for k, w in zip(poses.intrinsics, poses.w2c, strict=True)]
        got, want = plane_motion(preset, 64, 64, PRESET_PLANE_DEPTH), plane_image_motion(clip, 64, 64)
        np.testing.assert_allclose(got[-1], want[-1], atol=0.02 if label.startswith("zoom") else 0.3)
        speeds.append(np.linalg.norm(np.linalg.inv(np.vstack([poses.w2c[-1], [0, 0, 0, 1]]))[:3, 3]))
    assert speeds[1] > speeds[0]  # a longer move gets a faster preset
    # Same direction as ShapesWorld's own camera: centre displacement along the label's axis.
    c2w_last = np.linalg.inv(np.vstack([poses.w2c[-1], [0, 0, 0, 1]]))
    assert np.dot(c2w_last[:3, 3], unit) > 0
    assert np.allclose(preset_poses("static", poses_from_centers(np.zeros((5, 3)), 64, 64)).w2c[:, :, 3], 0)


def test_inflate_vae_is_exact_on_images_and_keeps_frames_apart(tmp_path):
    from kinema.models import VideoVAE
    from kinema.shapes.recipe import inflate_vae

    torch.manual_seed(0)
    cfg = dict(block_out_channels=(8, 8, 16, 16), norm_num_groups=1, layers_per_block=1)
    VideoVAE.from_config(cfg).save_pretrained(tmp_path / "a")
    assert inflate_vae(tmp_path / "a", tmp_path / "b") > 0
    a, b = (VideoVAE.from_pretrained(tmp_path / n).eval() for n in ("a", "b"))
    image = _video(random_clip(5, frames=1))
    with torch.no_grad():
        za, zb = a.encode(image).mode(), b.encode(image).mode()
        torch.testing.assert_close(za, zb, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.decode(za), b.decode(zb), rtol=1e-4, atol=1e-5)
        # Inflated: a latent frame decodes from itself only, so later latents matter from the start.
        z = b.encode(_video(random_clip(6, frames=9))).mode()
        same = z.clone()
        same[:, :, 1:] = z[:, :, :1]
        assert (b.decode(z) - b.decode(same)).abs().mean() > 1e-3


def test_export_family_layout_sizes_and_defaults(tmp_path):
    import shutil

    from safetensors import safe_open

    from kinema.pipelines import load_pipeline
    from kinema.pipelines.random_model import build_random_model
    from kinema.shapes.embedded import family_transformer
    from kinema.shapes.recipe import CAMERA_GUIDANCE, export_family

    runs = tmp_path / "runs"
    for run, kind in (("t2v_p1", "t2v"), ("inp", "inp"), ("control", "control"), ("camera", "camera")):
        model = build_random_model(tmp_path / kind, kind, seed=1)
        shutil.copytree(model / "transformer", runs / run / "final" / "transformer_ema")
    shutil.copytree(tmp_path / "inp" / "vae", runs / "vae_decoder" / "final" / "vae_ema")
    shutil.copytree(tmp_path / "inp" / "text_encoder", tmp_path / "text" / "text_encoder")
    out = export_family(runs, tmp_path / "export", text_encoder=tmp_path / "text")
    # The InP member is blended half-way with the T2V base (WiSE-FT); control and camera are as trained.
    from kinema.models import VideoTransformer
    from kinema.training import interpolate_weights

    inp, base = (
        VideoTransformer.from_pretrained(runs / r / "final" / "transformer_ema") for r in ("inp", "t2v_p1")
    )
    blended = interpolate_weights(inp, base, 0.5).to(torch.bfloat16).state_dict()
    exported = VideoTransformer.from_pretrained(out / "transformer").state_dict()
    assert all(torch.equal(exported[k].to(torch.bfloat16), v) for k, v in blended.items())
    assert not torch.equal(
        exported["proj.weight"], inp.state_dict()["proj.weight"].to(torch.bfloat16).float()
    )
    from kinema.shapes.recipe import main

    assert main(["export", str(runs), str(tmp_path / "bad"), "--text-encoder", str(tmp_path / "text"),
                 "--inp-alpha", "1.5"]) == 2  # fmt: skip
    assert main(["export", str(runs), str(tmp_path / "bad"), "--text-encoder", str(tmp_path / "text"),
                 "--camera-guidance", "-1"]) == 2  # fmt: skip
    assert not (tmp_path / "bad").exists()
    assert not (out / "tokenizer" / "tokenizer.json").exists()  # named, rebuilt from qwen.tiktoken
    for name in ("transformer", "transformer_control", "transformer_camera"):
        with safe_open(str(out / name / "diffusion_pytorch_model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert family_transformer(out, "camera") == out / "transformer_camera"
    pipe = load_pipeline(out)
    assert pipe.default_num_frames == 17 and pipe.model_type == "inp"
    assert pipe.default_camera_guidance_scale == CAMERA_GUIDANCE > 0
    assert pipe.transformer.proj.weight.dtype == torch.float32  # bf16 storage, fp32 compute on CPU

    # Since session 16 the recipe continues the blend (recipe blend-inp -> configs/shapes/inp_more.toml) and
    # export installs that run's InP unblended.
    assert main(["blend-inp", str(runs), str(runs / "inp_blend"), "--inp-alpha", "-0.1"]) == 2
    assert not (runs / "inp_blend").exists()
    assert main(["blend-inp", str(runs), str(runs / "inp_blend")]) == 0
    start = VideoTransformer.from_pretrained(runs / "inp_blend").state_dict()
    reference = interpolate_weights(inp, base, 0.5).state_dict()
    assert all(torch.equal(start[k], v) for k, v in reference.items())
    more = build_random_model(tmp_path / "more", "inp", seed=3)
    shutil.copytree(more / "transformer", runs / "inp_more" / "final" / "transformer_ema")
    shutil.copytree(more / "vae", runs / "vae_decoder_floor" / "final" / "vae_ema")  # session 17's VAE stage
    out = export_family(runs, tmp_path / "export", text_encoder=tmp_path / "text")
    exported = VideoTransformer.from_pretrained(out / "transformer").state_dict()
    trained = VideoTransformer.from_pretrained(more / "transformer").to(torch.bfloat16).state_dict()
    assert all(torch.equal(exported[k].to(torch.bfloat16), v) for k, v in trained.items())
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        more / "vae" / "diffusion_pytorch_model.safetensors"
    ).read_bytes()


def test_shipped_training_configs_are_valid():
    """Every config the README and recipe name loads and validates (paths are checked at run time)."""
    from kinema.training.config import load_config

    configs = sorted((Path(__file__).parents[1] / "configs").rglob("*.toml"))
    assert len(configs) >= 10
    for path in configs:
        load_config(path)


def test_object_region_weight_marks_the_cells_on_the_track():
    from types import SimpleNamespace

    from kinema.shapes.flow_weight import ObjectRegionWeight

    track = [[4.0 + 3.5 * t, 36.0] for t in range(17)]  # left to right along y = 36 px
    batch = {"plan": SimpleNamespace(height=64, width=64, frames=17), "extras": [{"tracks": [track]}, {}]}
    w = ObjectRegionWeight(weight=8.0, radius_px=6.0)(batch, (2, 16, 5, 8, 8))
    assert w.shape == (2, 1, 5, 8, 8) and torch.all(w[1] == 1)
    hot = [torch.nonzero(w[0, 0, k] == 8.0).tolist() for k in range(5)]
    assert all(hot) and all(r in (3, 4) for cells in hot for r, _ in cells)  # rows around y = 36
    assert min(c for _, c in hot[0]) == 0 and max(c for _, c in hot[4]) == 7  # follows x over time


def test_text_labels_follow_what_the_prompt_says():
    from kinema.shapes.spec import ObjectSpec, SceneSpec
    from kinema.shapes.text_pretrain import attributes, labels

    spec = SceneSpec(
        (ObjectSpec("red", "circle", "left"), ObjectSpec("blue", "star", "static")), "checker", "pan_up"
    )
    names = [a.name for a in attributes()]
    said = dict(zip(names, labels(spec, background=True, camera=False)))
    classes = {a.name: a.classes for a in attributes()}
    pick = {k: classes[k][v] for k, v in said.items()}
    assert pick["object0.color"] == "red" and pick["object0.direction"] == "left"
    assert (
        pick["object0.path"] == "straight" and pick["object1.path"] == "<none>"
    )  # a still object has no path
    assert pick["object1.shape"] == "star" and pick["background"] == "checker" and pick["camera"] == "<none>"
    assert set(labels(None, False, False)) == {0}  # the empty prompt says nothing


def test_text_pretraining_makes_the_pooled_features_name_the_colour(tmp_path):
    from kinema.shapes.spec import training_specs
    from kinema.shapes.text_pretrain import pretrain
    from kinema.text import PromptEncoder

    torch.set_num_threads(1)
    encoder = PromptEncoder.small(
        hidden_size=16, num_layers=2, num_attention_heads=2, num_key_value_heads=1, max_length=48, seed=0,
        init_std=0.18,
    )  # fmt: skip
    report = pretrain(encoder, training_specs(), steps=250, batch_size=32, lr=1e-2, log=lambda *a: None)
    # Chance: 1/8 colours, 1/5 shapes; the held-out colour x shape x direction prompts were never seen.
    assert report["held-out object0.color"] > 0.35 and report["held-out object0.shape"] > 0.4
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_text_encoder_build_runs_two_cycles_and_records_them(tmp_path):
    import json

    from kinema.shapes import write_dataset
    from kinema.shapes.text_pretrain import build_text_encoder
    from kinema.text import PromptEncoder

    torch.set_num_threads(1)
    write_dataset(tmp_path / "data", 6, seed=0, height=32, width=32, frames=5)
    lines = []
    build_text_encoder(tmp_path / "text", tmp_path / "data", steps=2, more_steps=2, log=lines.append)
    assert sum(line.startswith("cycle ") for line in lines) == 2
    record = json.loads((tmp_path / "text" / "pretrain.json").read_text())
    assert record["steps"] == 2 and record["more_steps"] == 2
    assert "held-out object0.direction" in record["read_out_accuracy"]
    encoder = PromptEncoder.from_pretrained(tmp_path / "text")  # an ordinary Qwen2-VL folder, bf16
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
    assert not (tmp_path / "text.partial").exists()


def test_recipe_text_encoder_refuses_bad_input_before_work(tmp_path, capsys):
    from kinema.shapes.recipe import main

    out = tmp_path / "text"
    assert main(["text-encoder", str(out), "--data", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    assert main(["text-encoder", str(out), "--data", str(tmp_path), "--more-steps", "-1"]) == 2
    assert "--more-steps >= 0" in capsys.readouterr().err
    assert main(["text-encoder", str(out), "--data", str(tmp_path / "missing")]) == 2
    assert "no metadata.jsonl" in capsys.readouterr().err
    assert not out.exists()
