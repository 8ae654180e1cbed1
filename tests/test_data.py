"""kinema.data: metadata formats, token-length buckets, the resumable bucket sampler, loading, latent cache."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from kinema.data import (
    BucketBatchSampler,
    BucketPlanner,
    FrameSampling,
    Geometry,
    LatentCache,
    LoadOptions,
    MetadataError,
    Plan,
    Sample,
    SampleRequest,
    VideoDataset,
    collate_samples,
    load_metadata,
    probe_samples,
)
from kinema.data.synthetic import write_moving_squares
from kinema.sizes import token_count
from kinema.videoio import write_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_moving_squares(root, n_clips=6, seed=1, frames=17, n_images=2, control=True, camera=True)
    return root


def _sample(h, w, frames=49, kind="video", name="x"):
    return Sample(file_path=name, text="t", type=kind, path=None, width=w, height=h, num_frames=frames)


# ---- metadata ----------------------------------------------------------------------------------------------


def test_metadata_json_jsonl_csv_agree_and_resolve_paths(tmp_path):
    rows = [
        {"file_path": "a.mp4", "text": "a cat", "type": "video", "width": 640, "height": 360},
        {"file_path": "sub/b.png", "text": "a dog"},  # type inferred from the extension
        {"file_path": "/abs/c.mp4", "text": "", "control_file_path": "c_depth.mp4", "quality": 5},
    ]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "m.csv").write_text(
        "file_path,text,type,width,height,control_file_path,quality\n"
        "a.mp4,a cat,video,640,360,,\nsub/b.png,a dog,,,,,\n/abs/c.mp4,,,,,c_depth.mp4,5\n"
    )
    parsed = [load_metadata(tmp_path / f"m.{ext}") for ext in ("json", "jsonl", "csv")]
    for samples in parsed:
        assert [s.type for s in samples] == ["video", "image", "video"]
        assert samples[0].path == tmp_path / "a.mp4" and (samples[0].height, samples[0].width) == (360, 640)
        assert samples[1].path == tmp_path / "sub" / "b.png"
        assert str(samples[2].path) == "/abs/c.mp4"
        assert samples[2].control_path == tmp_path / "c_depth.mp4"
        assert str(samples[2].extra["quality"]) == "5"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "no path"}\n', "missing 'file_path'"),
        ('{"file_path": "a.mp4"}\n', "missing 'text'"),
        ('{"file_path": "a.mp4", "text": "x", "type": "audio"}\n', "'type' must be 'video' or 'image'"),
        ('{"file_path": "a.mp4", "text": "x", "width": "wide"}\n', "'width' must be an integer"),
        ('{"file_path": "a.mp4", "text": "x"}\n{oops\n', ":2: invalid JSON"),
    ],
)
def test_metadata_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "meta.jsonl"
    path.write_text(content)
    with pytest.raises(MetadataError, match="meta.jsonl") as err:
        load_metadata(path)
    assert message in str(err.value)


def test_probe_skips_missing_and_corrupt_files_and_counts_them(clips, tmp_path):
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "empty.mp4").write_bytes(b"")
    write_video(tmp_path / "ok.mp4", np.zeros((5, 32, 48, 3), np.uint8))
    rows = [
        {"file_path": "ok.mp4", "text": "fine"},
        {"file_path": "missing.mp4", "text": "gone"},
        {"file_path": "corrupt.mp4", "text": "bad"},
        {"file_path": "empty.mp4", "text": "empty"},
        {"file_path": "ok.mp4", "text": "no control", "control_file_path": "nope.mp4"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    usable, skipped = probe_samples(load_metadata(tmp_path / "m.jsonl"))
    assert [s.text for s in usable] == ["fine"]
    assert (usable[0].height, usable[0].width, usable[0].num_frames) == (32, 48, 5)
    assert [p for p, _ in skipped] == ["missing.mp4", "corrupt.mp4", "empty.mp4", "ok.mp4"]
    assert "nope.mp4" in skipped[-1][1]


# ---- token budgets and buckets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget, resolution, expected",
    [
        (3328, 256, (256, 256, 49)),  # V5.1 stage 1
        (13312, 512, (512, 512, 49)),  # V5.1 stage 2 at its three sizes
        (13312, 768, (768, 768, 21)),
        (13312, 1024, (1024, 1024, 9)),
        (53248, 1024, (1024, 1024, 49)),
    ],
)
def test_budget_gives_the_v51_sizes(budget, resolution, expected):
    planner = BucketPlanner(budget, [resolution], max_frames=49)
    plan = planner.plan(_sample(1080, 1080, frames=200), np.random.default_rng(0))
    assert (plan.height, plan.width, plan.frames) == expected
    # Nearest latent-frame rounding, as the report's table: at most half a latent frame over budget.
    assert token_count(*expected) <= budget + token_count(expected[0], expected[1], 1) // 2


def test_aspect_ratio_picks_the_bucket_and_frames_fill_the_budget():
    planner = BucketPlanner(3328, [256], max_frames=49)
    rng = np.random.default_rng(0)
    wide = planner.plan(_sample(720, 1280, frames=300), rng)
    tall = planner.plan(_sample(1280, 720, frames=300), rng)
    assert wide.width > wide.height and (tall.height, tall.width) == (wide.width, wide.height)
    assert abs(np.log(wide.width / wide.height) - np.log(16 / 9)) < 0.12
    assert wide.height * wide.width <= 256 * 256 and wide.height % 16 == 0 and wide.width % 16 == 0
    assert abs(token_count(wide.height, wide.width, wide.frames) - 3328) <= token_count(
        wide.height, wide.width, 1
    )


def test_short_clips_images_and_oversized_samples():
    planner = BucketPlanner(3328, [256], max_frames=49, sampling=FrameSampling(stride=2))
    rng = np.random.default_rng(0)
    # 30 source frames at stride 2 -> 15 usable -> 13 (4k+1), the start leaves room for the span.
    short = planner.plan(_sample(256, 256, frames=30), rng)
    assert short.frames == 13 and short.stride == 2 and short.start + 12 * 2 < 30
    image = planner.plan(_sample(600, 800, kind="image"), rng)
    assert image.frames == 1 and image.width > image.height
    # A budget smaller than one frame at every resolution: the sample cannot be planned.
    assert BucketPlanner(100, [256]).plan(_sample(256, 256), rng) is None


def test_start_end_fraction_limits_the_clip():
    sampling = FrameSampling(stride=1, start_fraction=0.25, end_fraction=0.75, random_start=True)
    planner = BucketPlanner(3328, [256], max_frames=49, sampling=sampling)
    for seed in range(20):
        plan = planner.plan(_sample(256, 256, frames=100), np.random.default_rng(seed))
        assert plan.frames == 49 and 25 <= plan.start and plan.start + 48 < 75


def _toy_samples(n=40):
    sizes = [(720, 1280), (1280, 720), (512, 512)]
    out = [_sample(*sizes[i % 3], frames=60 + i, name=f"v{i}") for i in range(n)]
    out += [_sample(*sizes[i % 3], kind="image", name=f"i{i}") for i in range(n // 2)]
    return out


def test_sampler_batches_are_shape_uniform_and_mix_images_and_videos():
    planner = BucketPlanner(13312, [512, 768, 1024], max_frames=49)
    sampler = BucketBatchSampler(_toy_samples(), planner, global_batch_size=2, seed=3)
    batches = sampler.epoch_batches(0)
    assert len(batches) >= 10
    kinds = Counter()
    for batch in batches:
        assert len(batch) == 2 and len({r.plan.key for r in batch}) == 1  # one shape per batch
        assert [r.slot for r in batch] == [0, 1]
        kinds["image" if batch[0].plan.frames == 1 else "video"] += 1
    assert kinds["image"] > 0 and kinds["video"] > 0
    frames = {b[0].plan.key for b in batches if b[0].plan.frames > 1}
    assert len({k[2] for k in frames}) > 1  # several resolutions -> several frame counts


def test_sampler_is_deterministic_resumable_and_seed_dependent():
    planner = BucketPlanner(3328, [256, 384], max_frames=49)

    def take(sampler, n, **start):
        it = sampler.iterate(**start)
        return [[(r.index, r.plan) for r in next(it)] for _ in range(n)]

    a = BucketBatchSampler(_toy_samples(), planner, 2, seed=7)
    b = BucketBatchSampler(_toy_samples(), planner, 2, seed=7)
    first = take(a, 40)  # crosses epoch boundaries
    assert first == take(b, 40)
    assert first != take(BucketBatchSampler(_toy_samples(), planner, 2, seed=8), 40)
    # Resume at (epoch, batch) of the 25th batch: the continuation is identical.
    per_epoch = len(a.epoch_batches(0))
    epoch, batch = divmod(25, per_epoch)
    resumed = BucketBatchSampler(_toy_samples(), planner, 2, seed=7)
    assert take(resumed, 15, epoch=epoch, batch=batch) == first[25:40]
    # Every sample of epoch 0 appears at most once.
    seen = [r.index for bb in a.epoch_batches(0) for r in bb]
    assert len(seen) == len(set(seen))


def test_rank_slices_partition_the_global_batch():
    planner = BucketPlanner(3328, [256], max_frames=49)
    batch = BucketBatchSampler(_toy_samples(), planner, 4, seed=0).epoch_batches(0)[0]
    parts = [BucketBatchSampler.for_rank(batch, r, 2) for r in range(2)]
    assert [r.slot for r in parts[0]] == [0, 1] and [r.slot for r in parts[1]] == [2, 3]
    assert parts[0] + parts[1] == batch


def test_sampler_explains_when_no_bucket_fills():
    planner = BucketPlanner(3328, [256], max_frames=49)
    sampler = BucketBatchSampler(_toy_samples(2), planner, global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match="no bucket collects a batch of 8"):
        next(sampler.iterate())


def test_geometry_counts_tokens_like_kinema_sizes():
    g = Geometry()
    for h, w, f in [(256, 256, 49), (512, 768, 21), (64, 96, 1)]:
        assert g.tokens(h, w, f) == token_count(h, w, f)


# ---- loading ---------------------------------------------------------------------------------------------------


def test_dataset_loads_video_control_camera_and_images(clips):
    samples, skipped = probe_samples(load_metadata(clips / "metadata.jsonl"))
    assert not skipped and len(samples) == 8
    ds = VideoDataset(samples, options=LoadOptions(control=True, camera=True))
    video = next(i for i, s in enumerate(samples) if not s.is_image)
    plan = Plan(48, 48, 9, start=2, stride=1)
    item = ds[SampleRequest(video, plan, 0, 0, 0)]
    assert item["ok"], item["error"]
    assert item["pixels"].shape == (3, 9, 48, 48) and item["pixels"].min() >= -1 and item["pixels"].max() <= 1
    assert item["control_pixels"].shape == (3, 9, 48, 48)
    assert item["camera"].shape == (6, 3, 6, 6)
    # The camera pans: Plücker moments differ from frame 0 (identity) to the last latent frame.
    assert item["camera"][:3, 0].abs().max() < 1e-6 < item["camera"][:3, -1].abs().max()
    image = next(i for i, s in enumerate(samples) if s.is_image)
    item = VideoDataset(samples)[SampleRequest(image, Plan(32, 48, 1), 0, 0, 0)]
    assert item["ok"] and item["pixels"].shape == (3, 1, 32, 48)


def test_dataset_stride_selects_source_frames(tmp_path):
    # Frame k has brightness 10k: the loaded frames reveal which source frames were read.
    frames = np.stack([np.full((32, 32, 3), 10 * k, np.uint8) for k in range(20)])
    write_video(tmp_path / "ramp.mp4", frames, crf=0)
    (tmp_path / "m.jsonl").write_text(json.dumps({"file_path": "ramp.mp4", "text": "ramp"}) + "\n")
    samples, _ = probe_samples(load_metadata(tmp_path / "m.jsonl"))
    item = VideoDataset(samples)[SampleRequest(0, Plan(32, 32, 5, start=3, stride=3), 0, 0, 0)]
    levels = ((item["pixels"][0].mean(dim=(1, 2)) + 1) * 127.5).round()
    assert torch.allclose(levels, torch.tensor([30.0, 60, 90, 120, 150]), atol=3)


def test_failed_and_short_samples_keep_the_batch_shape(clips, tmp_path):
    samples, _ = probe_samples(load_metadata(clips / "metadata.jsonl"))
    video = next(s for s in samples if not s.is_image)
    broken = Sample("broken.mp4", "x", "video", tmp_path / "broken.mp4", 64, 64, 17)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    ds = VideoDataset([video, broken])
    plan = Plan(32, 32, 25)  # the clip has 17 frames: 8 frames of zero padding
    batch = collate_samples([ds[SampleRequest(0, plan, 0, 0, 0)], ds[SampleRequest(1, plan, 1, 0, 0)]])
    assert batch["pixels"].shape == (2, 3, 25, 32, 32)
    assert batch["weights"].tolist() == [1.0, 0.0]
    assert batch["valid_frames"][0] == 17 and batch["pixels"][0, :, 17:].abs().max() == 0
    assert batch["errors"][0][0] == "broken.mp4" and batch["texts"][1] == ""


def test_latent_cache_round_trip_and_invalidation(tmp_path, clips):
    cache = LatentCache(tmp_path / "cache", vae_fingerprint="vae1", text_fingerprint="te1")
    path = clips / "clip_0000.mp4"
    key = cache.video_key(path, Plan(32, 32, 9))
    assert cache.get(key) is None and cache.misses == 1
    moments = torch.randn(32, 3, 4, 4)
    cache.put(key, {"moments": moments, "valid_frames": torch.tensor(9)})
    assert torch.equal(cache.get(key)["moments"], moments) and cache.hits == 1
    assert key != cache.video_key(path, Plan(32, 32, 9, start=1))  # another clip window
    assert key != LatentCache(tmp_path / "cache", vae_fingerprint="vae2").video_key(path, Plan(32, 32, 9))
    assert cache.text_key("a") != cache.text_key("b")
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # A dataset with the cache returns cached moments instead of decoding pixels.
    samples, _ = probe_samples(load_metadata(clips / "metadata.jsonl"))
    index = next(i for i, s in enumerate(samples) if s.path == path)
    item = VideoDataset(samples, cache=cache)[SampleRequest(index, Plan(32, 32, 9), 0, 0, 0)]
    assert item["pixels"] is None and torch.equal(item["cached_latents"], moments)


def test_camera_latents_use_the_configured_pose_size_as_the_pipeline_does(clips):
    """Camera training reads ``control.pose_height/pose_width`` (default 720x1280, what the generation
    pipeline assumes) for the intrinsics' aspect fix, so training and generation compute the same Plücker
    latents from one pose file; without it the sample's own size is used (different for a 48x48 clip)."""
    from kinema.control.camera import camera_latents, plucker_embedding, read_pose_file
    from kinema.training.config import RunConfig
    from kinema.training.modes import get_mode

    samples, _ = probe_samples(load_metadata(clips / "metadata.jsonl"))
    video = next(i for i, s in enumerate(samples) if not s.is_image and s.camera_path is not None)
    options = get_mode("camera").load_options(RunConfig())
    assert options.pose_size == (720, 1280)
    plan = Plan(48, 48, 9, start=0, stride=1)
    trained = VideoDataset(samples, options=options)[SampleRequest(video, plan, 0, 0, 0)]["camera"]
    poses = read_pose_file(samples[video].camera_path)[:9]
    as_generated = camera_latents(plucker_embedding(poses, 48, 48), 3, 6, 6)  # the pipeline's call
    torch.testing.assert_close(trained, as_generated)
    own_size = VideoDataset(samples, options=LoadOptions(camera=True))[SampleRequest(video, plan, 0, 0, 0)][
        "camera"
    ]
    assert (own_size - as_generated).abs().max() > 1e-3
