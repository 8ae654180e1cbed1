"""`kinema eval` on a tiny random model folder: it runs, writes JSON, and exits 2 on bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from kinema.cli import main
from kinema.pipelines.random_model import build_random_model
from kinema.shapes import embedded_model_path, family_transformer
from kinema.shapes.benchmark import BenchmarkOptions, available_modes, benchmark_cases


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A tiny InP model with a Camera transformer beside it (the embedded family's layout)."""
    root = tmp_path_factory.mktemp("family")
    build_random_model(root / "model", "inp", seed=0)
    build_random_model(root / "camera", "camera", seed=1, with_text_encoder=False)
    shutil.copytree(root / "camera" / "transformer", root / "model" / "transformer_camera")
    return root / "model"


def test_family_layout(family):
    assert family_transformer(family, "camera") == family / "transformer_camera"
    assert family_transformer(family, "control") is None
    assert family_transformer(family, "inp") is None
    modes = available_modes(family)
    assert set(modes) == {"t2v", "i2v", "camera"} and modes["camera"] == family / "transformer_camera"
    path = embedded_model_path()
    assert path is None or (path / "model_index.json").is_file()


def test_cases_cycle_languages_and_are_held_out():
    cases = benchmark_cases("t2v", BenchmarkOptions(prompts=8))
    assert [c.lang for c in cases] == ["en", "zh", "ja", "ko"] * 2
    from kinema.shapes import spec_is_held_out

    assert all(spec_is_held_out(c.spec) for c in cases)
    camera = benchmark_cases("camera", BenchmarkOptions(prompts=3))
    assert all(c.spec.camera not in (None, "static") for c in camera)


def test_eval_runs_and_writes_json(family, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    args = ["eval", "--model", str(family), "--prompts", "2", "--steps", "1", "--vae-clips", "1"]
    rc = main(args + ["--modes", "t2v,camera,vae", "--threads", "1", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"t2v", "camera", "vae"}
    assert report["results"]["t2v"]["n_clips"] == 2
    assert set(report["results"]["t2v"]["by_language"]) == {"en", "zh"}
    assert report["results"]["vae"]["psnr"] > 0
    assert {t["metric"] for t in report["targets"]} >= {"color_acc", "traj_err_px", "psnr"}
    text = capsys.readouterr().out
    assert "color accuracy" in text and "VAE reconstruction PSNR" in text and "targets:" in text
    assert not list(out.parent.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_eval_scores_generated_videos(family, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    rc = main(["generate", "--model", str(family), "--prompt", "a red circle moving right", "--steps", "1",
               "--frames", "5", "--out", str(videos / "a.mp4")])  # fmt: skip
    assert rc == 0
    out = tmp_path / "videos.json"
    assert main(["eval", "--videos", str(videos), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["results"]["t2v"]["n_clips"] == 1


@pytest.mark.parametrize(
    "extra",
    [
        ["--prompts", "0"],
        ["--modes", "t2v,bogus"],
        ["--languages", "fr"],
        ["--modes", "trajectory"],  # the family has no Control transformer: asked for explicitly -> error
        ["--model", "/nonexistent/model"],
    ],
)
def test_eval_bad_input_exits_2(family, tmp_path, extra, capsys):
    args = ["eval", "--model", str(family), "--json", str(tmp_path / "x.json")]
    if extra[0] == "--model":
        args = ["eval", "--json", str(tmp_path / "x.json")]
    assert main(args + extra) == 2
    assert "kinema eval: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_eval_videos_without_sidecars_exits_2(tmp_path):
    assert main(["eval", "--videos", str(tmp_path), "--json", str(tmp_path / "x.json")]) == 2
    assert main(["eval", "--videos", str(tmp_path / "missing")]) == 2
