"""``kinema generate`` end to end on tiny random models: every mode writes a file and a sidecar; bad
input exits 2 with one clear line and leaves no output file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kinema import __version__, videoio
from kinema.cli import main
from kinema.pipelines import build_random_model
from kinema.pipelines import cli as generate_cli

SMALL = ["--height", "32", "--width", "32", "--steps", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-models")
    out = {"t2v": build_random_model(root / "t2v", "t2v", seed=1)}
    for kind in ("inp", "control", "camera"):
        out[kind] = build_random_model(root / kind, kind, seed=2, text_encoder_from=out["t2v"])
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    videoio.write_image(root / "start.png", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    videoio.write_video(root / "clip.mp4", rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), fps=8)
    mask = np.zeros((32, 32, 3), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    videoio.write_image(root / "mask.png", mask)
    (root / "tracks.json").write_text(json.dumps([[0, 4, 4], [8, 28, 28]]))
    (root / "junk.png").write_bytes(b"definitely not a png")
    (root / "bad_poses.txt").write_text("header\n0.5 0.9 0.5\n")
    return root


def generate(*args: str) -> int:
    return main(["generate", *args])


@pytest.mark.parametrize(
    "kind, args, frames",
    [
        ("t2v", ["--frames", "5"], 5),
        ("inp", ["--image", "{m}/start.png", "--end-image", "{m}/start.png", "--frames", "5"], 5),
        (
            "t2v",
            ["--video", "{m}/clip.mp4", "--mask", "{m}/mask.png", "--strength", "0.7", "--frames", "5"],
            5,
        ),
        (
            "inp",
            ["--video", "{m}/clip.mp4", "--mask", "{m}/mask.png", "--frames", "9", "--sampler", "dpm++"],
            9,
        ),
        (
            "control",
            [
                "--control-video",
                "{m}/clip.mp4",
                "--control-type",
                "canny",
                "--reference-image",
                "{m}/start.png",
            ],
            9,
        ),
        ("control", ["--trajectory", "{m}/tracks.json", "--frames", "5"], 5),
        ("camera", ["--camera", "zoom_in", "--frames", "5", "--memory-mode", "sequential_offload"], 5),
        ("inp", ["--frames", "13", "--chunk-frames", "9", "--overlap-frames", "4"], 13),
    ],
)
def test_every_mode_writes_video_and_sidecar(models, media, tmp_path, kind, args, frames):
    out = tmp_path / "out.mp4"
    args = [a.replace("{m}", str(media)) for a in args]
    assert (
        generate("--model", str(models[kind]), "--prompt", "一个红色的圆", *SMALL, *args, "--out", str(out))
        == 0
    )
    clip = videoio.read_video(out)
    assert clip.frames.shape == (frames, 32, 32, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["parameters"]["prompt"] == "一个红色的圆" and sidecar["parameters"]["steps"] == 2
    assert sidecar["model"]["path"] == str(models[kind].resolve()) and sidecar["model"]["type"] == kind
    assert sidecar["kinema_version"] == __version__ and sidecar["seconds"]["total"] > 0
    assert sidecar["resolved"]["seed"] == 3 and sidecar["resolved"]["frames"] == frames


def test_one_frame_is_a_png_and_seed_reproduces(models, tmp_path):
    first, second = tmp_path / "a.mp4", tmp_path / "b.png"
    for out in (first, second):
        assert (
            generate(
                "--model", str(models["t2v"]), "--prompt", "x", *SMALL, "--frames", "1", "--out", str(out)
            )
            == 0
        )
    png = tmp_path / "a.png"
    assert png.is_file() and not first.exists()
    assert np.array_equal(videoio.read_image(png), videoio.read_image(second))


@pytest.mark.parametrize(
    "kind, args, message",
    [
        ("t2v", ["--height", "40"], "multiple of 16"),
        ("t2v", ["--frames", "6"], "4k\\+1"),
        ("inp", ["--image", "{m}/junk.png"], "junk.png"),
        ("inp", ["--image", "{m}/nothing.png"], "does not exist"),
        ("t2v", ["--image", "{m}/start.png"], "needs an InP model"),
        ("t2v", ["--camera", "pan_left"], "Control-Camera model"),
        ("camera", ["--camera", "{m}/bad_poses.txt"], "bad_poses.txt"),
        ("camera", ["--camera", "spin_around"], "spin_around"),
        ("camera", ["--camera-guidance", "1"], "needs --camera"),
        ("camera", ["--camera", "pan_left", "--camera-guidance", "-1"], "finite number >= 0"),
        ("control", ["--trajectory", "{m}/junk.png"], "junk.png"),
        ("t2v", ["--sampler", "pndm"], "no flow-matching mode"),
        ("t2v", ["--lora", "{m}/tracks.json"], "safetensors"),
        ("missing", [], "does not exist"),
    ],
)
def test_bad_input_exits_2_without_output(models, media, tmp_path, capsys, kind, args, message):
    model = str(models.get(kind, tmp_path / "no-model"))
    out = tmp_path / "never.mp4"
    args = [a.replace("{m}", str(media)) for a in args]
    assert generate("--model", model, "--prompt", "x", "--frames", "5", *args, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("kinema generate: error:") and pytest.importorskip("re").search(message, err)
    assert list(tmp_path.iterdir()) == []


def test_missing_component_is_named(models, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(models["t2v"], broken, ignore=shutil.ignore_patterns("scheduler"))
    assert generate("--model", str(broken), "--prompt", "x", "--out", str(tmp_path / "x.mp4")) == 2
    assert "scheduler" in capsys.readouterr().err


def test_without_model_uses_embedded_or_random_fallback(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(generate_cli, "embedded_model", lambda: None)  # as long as none is installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "demo.mp4"
    assert generate("--prompt", "a red circle moves right", *SMALL, "--frames", "5", "--out", str(out)) == 0
    assert generate_cli.RANDOM_MODEL_NOTE in capsys.readouterr().err
    assert json.loads(out.with_suffix(".json").read_text())["model"]["random"] is True
    assert (tmp_path / "cache" / "kinema" / "random-model-t2v-v1" / "model_index.json").is_file()


@pytest.mark.skipif(generate_cli.embedded_model() is None, reason="the embedded model is not installed")
def test_embedded_family_serves_every_mode_without_model(tmp_path, capsys):
    """No --model: the embedded ShapesWorld family; I2V, trajectory and camera pick their transformer."""
    from kinema.shapes import embedded_model_path

    root = embedded_model_path().resolve()
    t2v = tmp_path / "t2v.mp4"
    assert generate("--prompt", "一个红色的圆从左向右移动", "--steps", "4", "--out", str(t2v)) == 0
    assert generate_cli.RANDOM_MODEL_NOTE not in capsys.readouterr().err
    frames = videoio.read_video(t2v)[0]
    assert frames.shape == (17, 64, 64, 3)  # the model's own defaults: 17 frames of 64 x 64
    first = tmp_path / "first.png"
    videoio.write_image(first, frames[0])
    track = tmp_path / "track.json"
    track.write_text(json.dumps([[0, 8, 32], [16, 56, 32]]))  # key points (frame, x, y): left to right
    cases = {
        "i2v": (["--image", str(first)], None, "inp"),
        "trajectory": (["--trajectory", str(track)], "transformer_control", "control"),
        "camera": (["--camera", "pan_left"], "transformer_camera", "camera"),
    }
    for name, (args, transformer, kind) in cases.items():
        out = tmp_path / f"{name}.mp4"
        assert generate("--prompt", "a blue square", "--steps", "2", *args, "--out", str(out)) == 0, name
        model = json.loads(out.with_suffix(".json").read_text())["model"]
        assert model["path"] == str(root) and model["random"] is False and model["type"] == kind, name
        assert model["transformer"] == (str(root / transformer) if transformer else None), name
