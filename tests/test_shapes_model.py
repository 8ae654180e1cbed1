"""Pieces of the embedded-model recipe: the foreground VAE loss, the VAE gate and the data step."""

from __future__ import annotations

import json

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
    from kinema.data.metadata import load_metadata
    from kinema.shapes.recipe import prepare_data

    root = prepare_data(tmp_path / "data", clips=4, seed=0, image_fraction=0.0)
    control = [json.loads(line) for line in (root / "metadata_control.jsonl").read_text().splitlines()]
    camera = [json.loads(line) for line in (root / "metadata_camera.jsonl").read_text().splitlines()]
    assert len(control) == len(camera) == 4
    assert all((root / row["control_file_path"]).is_file() for row in control)
    assert all((root / row["camera_file_path"]).is_file() for row in camera)
    assert not any(row["held_out"] for row in control)
    samples = load_metadata(root / "metadata_control.jsonl", root)
    assert all(s.control_path is not None and s.control_path.is_file() for s in samples)


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
    from kinema.shapes.recipe import export_family

    runs = tmp_path / "runs"
    for run, kind in (("inp", "inp"), ("control", "control"), ("camera", "camera")):
        model = build_random_model(tmp_path / kind, kind, seed=1)
        shutil.copytree(model / "transformer", runs / run / "final" / "transformer_ema")
    shutil.copytree(tmp_path / "inp" / "vae", runs / "vae_decoder" / "final" / "vae_ema")
    shutil.copytree(tmp_path / "inp" / "text_encoder", tmp_path / "text" / "text_encoder")
    out = export_family(runs, tmp_path / "export", text_encoder=tmp_path / "text")
    assert not (out / "tokenizer" / "tokenizer.json").exists()  # named, rebuilt from qwen.tiktoken
    for name in ("transformer", "transformer_control", "transformer_camera"):
        with safe_open(str(out / name / "diffusion_pytorch_model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert family_transformer(out, "camera") == out / "transformer_camera"
    pipe = load_pipeline(out)
    assert pipe.default_num_frames == 17 and pipe.model_type == "inp"
    assert pipe.transformer.proj.weight.dtype == torch.float32  # bf16 storage, fp32 compute on CPU


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
