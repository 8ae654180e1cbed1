"""ShapesWorld: world rendering, camera poses, prompts, held-out split, evaluator and dataset writer."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from kinema.shapes import corrupt
from kinema.shapes.camera import (
    CameraPoses,
    camera_label_from_poses,
    plane_image_motion,
    poses_from_centers,
    project_track,
    read_pose_file,
    write_pose_file,
)
from kinema.shapes.color import PALETTE_LAB
from kinema.shapes.dataset import evaluate_dataset, load_metadata, read_video, write_dataset, write_video
from kinema.shapes.detect import classify_shape, label_components, segment
from kinema.shapes.evaluate import (
    Conditions,
    evaluate_clip,
    evaluate_clips,
    format_table,
    psnr,
    reconstruction_psnr,
    write_results_json,
)
from kinema.shapes.prompts import _LANGS, LANGUAGES, make_prompt, make_prompts, parse_prompt
from kinema.shapes.spec import (
    CAMERAS,
    COLORS,
    DIRECTIONS,
    HELD_OUT_COMBOS,
    SHAPES,
    STATIC,
    ObjectSpec,
    SceneSpec,
    held_out_specs,
    is_held_out,
    spec_is_held_out,
    training_specs,
)
from kinema.shapes.world import random_clip, render_from_spec, render_scene, sample_scene


def _moving_clips(n: int, start: int, camera_prob: float = 0.5) -> list:
    """Ground-truth clips whose objects all move (so motion corruptions must be caught)."""
    clips, seed = [], start
    while len(clips) < n:
        c = random_clip(seed, split="all", camera_prob=camera_prob)
        seed += 1
        if all(o.moving for o in c.spec.objects):
            clips.append(c)
    return clips


def _cond(c) -> Conditions:
    return Conditions(first_frame=c.frames[0], last_frame=c.frames[-1], tracks=c.tracks, poses=c.poses)


@pytest.fixture(scope="module")
def gt_clips():
    # 36 clips: plain/textured backgrounds, every camera motion, 1-2 objects, all path types.
    return [random_clip(7000 + i, split="all", camera_prob=0.6) for i in range(36)]


# ------------------------------------------------------------------------------------------------
# World
# ------------------------------------------------------------------------------------------------
def test_render_is_deterministic_and_seed_dependent():
    a, b, c = random_clip(3), random_clip(3), random_clip(4)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (17, 64, 64, 3)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.tracks, b.tracks)
    assert a.spec == b.spec
    assert not np.array_equal(a.frames, c.frames)


def test_scene_sampling_invariants():
    for seed in range(150):
        sc = sample_scene(np.random.default_rng(seed), None, split="all", camera_prob=0.5)
        clip = render_scene(sc)
        colors = [o.color for o in sc.spec.objects]
        assert 1 <= len(colors) <= 2 and len(set(colors)) == len(colors)
        if sc.spec.camera != "static":
            assert sc.spec.background in ("checker", "noise")  # camera motion must be observable
        for ob, track, sizes in zip(sc.objects, clip.tracks, clip.sizes):
            assert (track >= 0).all() and (track[:, 0] <= 63).all() and (track[:, 1] <= 63).all()
            assert 13 <= sizes[0] <= 18
            if ob.spec.moving:
                travel = np.hypot(ob.end[0] - ob.start[0], ob.end[1] - ob.start[1])  # frame widths
                assert 0.25 <= travel <= 0.45
            else:
                assert ob.start == ob.end


def test_track_is_the_rendered_centroid():
    """The track equals the coverage-weighted centroid of the object's pixels (measured vs background)."""
    for seed in range(6):
        clip = random_clip(seed, camera_prob=0.5)
        bare = render_scene(replace(clip.scene, objects=[]))
        for k, ob in enumerate(clip.scene.objects):
            others = [o for j, o in enumerate(clip.scene.objects) if j != k]
            without = render_scene(replace(clip.scene, objects=others)).frames.astype(float)
            diff = clip.frames.astype(float) - without
            full = np.array(ob.rgb) - bare.frames.astype(float)
            alpha = np.clip((diff * full).sum(-1) / np.maximum((full * full).sum(-1), 1e-6), 0, 1)
            ys, xs = np.mgrid[0:64, 0:64]
            cx = (alpha * xs).sum((1, 2)) / alpha.sum((1, 2))
            cy = (alpha * ys).sum((1, 2)) / alpha.sum((1, 2))
            err = np.hypot(cx - clip.tracks[k, :, 0], cy - clip.tracks[k, :, 1])
            assert err.max() < 0.3, (seed, k, err.max())


def test_other_resolutions_and_frame_counts():
    clip = random_clip(11, height=48, width=80, frames=9, camera_prob=1.0)
    assert clip.frames.shape == (9, 48, 80, 3)
    assert len(clip.poses) == 9 and clip.tracks.shape[1:] == (9, 2)
    res = evaluate_clip(clip.frames, clip.spec, _cond(clip))
    assert all(o.color_ok and o.shape_ok and o.direction_ok for o in res.objects)
    assert res.camera_ok


# ------------------------------------------------------------------------------------------------
# Camera poses
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", CAMERAS)
def test_pose_conventions_and_renderer_agree(label):
    spec = SceneSpec((ObjectSpec("red", "circle", STATIC),), background="noise", camera=label)
    clip = render_from_spec(spec, seed=5)
    poses = clip.poses
    assert camera_label_from_poses(poses, 64, 64) == label
    centre = -poses.w2c[:, :, 3]  # identity rotation: camera centre = -t
    np.testing.assert_allclose(poses.w2c[:, :, :3], np.broadcast_to(np.eye(3), (17, 3, 3)))
    np.testing.assert_allclose(poses.intrinsics, np.tile([1.0, 1.0, 0.5, 0.5], (17, 1)))
    drift = clip.tracks[0, -1] - clip.tracks[0, 0]  # a static object shows the content motion
    if label == "pan_right":
        assert centre[-1, 0] > 0.15 and drift[0] < -8
    elif label == "pan_left":
        assert centre[-1, 0] < -0.15 and drift[0] > 8
    elif label == "pan_up":
        assert centre[-1, 1] < -0.15 and drift[1] > 8  # y down: camera up -> content down
    elif label == "pan_down":
        assert centre[-1, 1] > 0.15 and drift[1] < -8
    elif label == "zoom_in":
        assert centre[-1, 2] > 0.2 and clip.sizes[0, -1] > 1.3 * clip.sizes[0, 0]
    elif label == "zoom_out":
        assert centre[-1, 2] < -0.25 and clip.sizes[0, -1] < 0.8 * clip.sizes[0, 0]
    else:
        assert np.abs(centre).max() == 0
    # The background of the last frame is the first frame moved by the pose-induced similarity.
    bare = render_scene(replace(clip.scene, objects=[])).frames.astype(float)
    s, tx, ty = plane_image_motion(poses, 64, 64)[-1]
    ys, xs = np.mgrid[16:48, 16:48].astype(float)
    u, v = s * (xs - 31.5) + 31.5 + tx, s * (ys - 31.5) + 31.5 + ty
    ok = (u >= 0) & (u <= 62) & (v >= 0) & (v <= 62)
    u0, v0 = np.floor(u[ok]).astype(int), np.floor(v[ok]).astype(int)
    fu, fv = (u[ok] - u0)[:, None], (v[ok] - v0)[:, None]
    last = bare[-1]
    warped = (
        last[v0, u0] * (1 - fu) * (1 - fv)
        + last[v0, u0 + 1] * fu * (1 - fv)
        + last[v0 + 1, u0] * (1 - fu) * fv
        + last[v0 + 1, u0 + 1] * fu * fv
    )
    first = bare[0][16:48, 16:48][ok]
    assert np.abs(warped - first).mean() < 1.0
    if label != "static":
        assert np.abs(bare[-1][16:48, 16:48][ok] - first).mean() > 2 * np.abs(warped - first).mean()


def test_projection_of_world_positions_gives_tracks():
    clip = random_clip(21, camera_prob=1.0)
    for ob, track in zip(clip.scene.objects, clip.tracks):
        pos = ob.positions(17)
        pts = np.concatenate([pos, np.ones((17, 1))], 1)
        np.testing.assert_allclose(project_track(pts, clip.poses, 64, 64), track, atol=1e-9)


def test_pose_file_roundtrip_with_and_without_header(tmp_path):
    centres = np.stack([np.linspace(0, 0.3, 17), np.zeros(17), np.linspace(0, -0.2, 17)], 1)
    poses = poses_from_centers(centres, 64, 96)
    path = tmp_path / "pan.txt"
    write_pose_file(path, poses)
    lines = path.read_text().splitlines()
    assert len(lines) == 18 and not lines[0][0].isdigit()
    # EasyAnimate / CameraCtrl style: skip line 1, split on single spaces, 19 numbers per line.
    rows = [[float(x) for x in line.strip().split(" ")] for line in lines[1:]]
    assert all(len(r) == 19 for r in rows)
    np.testing.assert_allclose(np.array(rows)[:, 1:5], poses.intrinsics)
    np.testing.assert_allclose(np.array(rows)[:, 7:].reshape(-1, 3, 4), poses.w2c)
    back = read_pose_file(path)
    np.testing.assert_allclose(back.w2c, poses.w2c)
    np.testing.assert_allclose(back.intrinsics, poses.intrinsics)
    headerless = tmp_path / "noheader.txt"
    headerless.write_text("\n".join(lines[1:]) + "\n")
    np.testing.assert_allclose(read_pose_file(headerless).w2c, poses.w2c)
    short = tmp_path / "short.txt"  # fx fy cx cy + 12 (no timestamp / distortion)
    short.write_text("\n".join(" ".join(map(str, r)) for r in poses.lines()) + "\n")
    np.testing.assert_allclose(read_pose_file(short).w2c, poses.w2c)
    bad = tmp_path / "bad.txt"
    bad.write_text("header\n1 2 3\n")
    with pytest.raises(ValueError):
        read_pose_file(bad)


def test_rotating_camera_poses_get_pan_labels():
    """A CameraCtrl-style yaw (rotation only) reads as a pan; sign follows the image motion."""
    n = 17
    yaw = np.linspace(0, np.deg2rad(15), n)
    w2c = np.zeros((n, 3, 4))
    for i, a in enumerate(yaw):
        # Camera turning right (towards +x): world-to-camera rotation is R_y(-a).
        w2c[i, :, :3] = [[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]]
    poses = CameraPoses(np.tile([1.0, 1.0, 0.5, 0.5], (n, 1)), w2c)
    assert camera_label_from_poses(poses, 64, 64) == "pan_right"
    w2c[:, 0, 2] *= -1
    w2c[:, 2, 0] *= -1
    assert camera_label_from_poses(CameraPoses(poses.intrinsics, w2c), 64, 64) == "pan_left"


# ------------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("a red circle moves from left to right", ("red", "circle", "right")),
        ("一个红色的圆从左向右移动", ("red", "circle", "right")),
        ("赤い円が左から右へ動く", ("red", "circle", "right")),
        ("빨간 원이 왼쪽에서 오른쪽으로 움직인다", ("red", "circle", "right")),
        ("A blue star slides diagonally up and to the left.", ("blue", "star", "up_left")),
        ("黄色的三角形沿着弧线向下移动。", ("yellow", "triangle", "down")),
        ("紫色のひし形が右下へ移動する。", ("purple", "diamond", "down_right")),
        ("하얀 정사각형이 위로 이동한다.", ("white", "square", "up")),
    ],
)
def test_parse_examples(text, expected):
    spec = parse_prompt(text)
    assert len(spec.objects) == 1
    ob = spec.objects[0]
    assert (ob.color, ob.shape, ob.direction) == expected


def test_parse_two_objects_background_and_camera():
    spec = parse_prompt(
        "On a checkered background, a green square moves up and an orange star stays still, as the camera zooms out"
    )
    assert [(o.color, o.shape, o.direction) for o in spec.objects] == [
        ("green", "square", "up"),
        ("orange", "star", STATIC),
    ]
    assert spec.background == "checker" and spec.camera == "zoom_out"
    spec = parse_prompt(
        "在条纹背景上，一个红色的圆沿着波浪线从右向左移动，同时蓝色方块向上移动，镜头向左平移。"
    )
    assert [(o.color, o.shape, o.direction, o.path) for o in spec.objects] == [
        ("red", "circle", "left", "wave"),
        ("blue", "square", "up", "straight"),
    ]
    assert spec.background == "stripes" and spec.camera == "pan_left"


def _expected(spec: SceneSpec, mention_bg: bool, mention_cam: bool) -> SceneSpec:
    image = all(o.direction is None for o in spec.objects)
    objs = tuple(replace(o, path=o.path if o.direction in DIRECTIONS else "straight") for o in spec.objects)
    return SceneSpec(
        objs,
        background=spec.background if mention_bg else None,
        camera=spec.camera if mention_cam and not image else None,
    )


def test_every_generated_prompt_parses_back():
    rng = np.random.default_rng(0)
    n = 0
    for seed in range(400):
        spec = sample_scene(np.random.default_rng(seed), None, split="all", camera_prob=0.5).spec
        if seed % 5 == 0:  # image captions
            spec = SceneSpec(tuple(ObjectSpec(o.color, o.shape) for o in spec.objects), spec.background)
        for lang in LANGUAGES:
            mb, mc = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            text = make_prompt(spec, lang, rng, mb, mc)
            assert parse_prompt(text) == _expected(spec, mb, mc), (lang, text)
            n += 1
    assert n == 1600


_RED_CIRCLE = {"en": "a red circle", "zh": "一个红色的圆", "ja": "赤い円", "ko": "빨간 원"}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_vocabulary_entry_is_generated_and_parsed(lang):
    """Each colour/shape/direction/camera/background variant appears in generated prompts and parses back."""
    L = _LANGS[lang]
    rng = np.random.default_rng(1)
    seen: set[str] = set()
    tables = (L.colors, L.shapes, L.directions, L.cameras, L.backgrounds)

    def check(spec: SceneSpec, mb: bool = False, mc: bool = False) -> None:
        for _ in range(40):
            text = make_prompt(spec, lang, rng, mb, mc)
            assert parse_prompt(text) == spec, text
            seen.update(w for table in tables for ws in table.values() for w in ws if w in text.lower())

    for i, c in enumerate(COLORS):
        check(SceneSpec((ObjectSpec(c, SHAPES[i % len(SHAPES)], DIRECTIONS[i]),)))
    for i, s in enumerate(SHAPES):
        check(SceneSpec((ObjectSpec(COLORS[i], s, DIRECTIONS[i]),)))
    for d in DIRECTIONS:
        check(SceneSpec((ObjectSpec("green", "star", d),)))
    for cam in CAMERAS:
        check(SceneSpec((ObjectSpec("blue", "square", "down"),), camera=cam), mc=True)
    for bg in L.backgrounds:
        check(SceneSpec((ObjectSpec("cyan", "triangle", "left"),), background=bg), mb=True)
    missing = [w for table in tables for ws in table.values() for w in ws if w.lower() not in seen]
    assert not missing, (lang, missing)
    # Variants the parser accepts but the generator never writes.
    ga = "이" if lang == "ko" else ""
    for d, phrases in L.parse_directions.items():
        for phrase in phrases:
            text = L.styles[0][0].format(np=_RED_CIRCLE[lang], ga=ga, dir=phrase, path="")
            assert parse_prompt(text).objects[0].direction == d, text


def test_make_prompts_gives_several_phrasings_per_language():
    spec = SceneSpec((ObjectSpec("orange", "diamond", "down_left", "arc"),), "noise", "pan_up")
    texts = make_prompts(spec, 3, n_per_lang=3, mention_background=True, mention_camera=True)
    assert set(texts) == set(LANGUAGES)
    for lang, ts in texts.items():
        assert len(set(ts)) == 3, (lang, ts)
        assert all(parse_prompt(t) == spec for t in ts)


@pytest.mark.parametrize(
    "text", ["", "a dog runs in the park", "一只猫在睡觉", "the camera pans left", "red circle"]
)
def test_unparseable_prompts_raise(text):
    if text == "red circle":  # bare noun phrase is a valid image caption
        assert parse_prompt(text).objects[0].direction is None
        return
    with pytest.raises(ValueError, match="cannot parse"):
        parse_prompt(text)


# ------------------------------------------------------------------------------------------------
# Held-out split
# ------------------------------------------------------------------------------------------------
def test_held_out_split_is_fixed_balanced_and_respected():
    total = len(COLORS) * len(SHAPES) * len(DIRECTIONS)
    assert 0.12 <= len(HELD_OUT_COMBOS) / total <= 0.22
    assert len(held_out_specs()) == len(HELD_OUT_COMBOS)
    assert len(training_specs()) + len(held_out_specs()) == total
    assert not any(spec_is_held_out(s) for s in training_specs())
    assert all(spec_is_held_out(s) for s in held_out_specs())
    train = [(s.objects[0].color, s.objects[0].shape, s.objects[0].direction) for s in training_specs()]
    # Every pair of factors still appears in training, so held-out combos are novel compositions.
    assert {(c, s) for c, s, _ in train} == {(c, s) for c in COLORS for s in SHAPES}
    assert {(c, d) for c, _, d in train} == {(c, d) for c in COLORS for d in DIRECTIONS}
    assert {(s, d) for _, s, d in train} == {(s, d) for s in SHAPES for d in DIRECTIONS}
    assert not is_held_out("red", "circle", STATIC) and not is_held_out("red", "circle", None)
    for seed in range(150):
        assert not spec_is_held_out(
            sample_scene(np.random.default_rng(seed), split="train", camera_prob=0.5).spec
        )
        assert spec_is_held_out(sample_scene(np.random.default_rng(seed), split="held_out").spec)


# ------------------------------------------------------------------------------------------------
# Evaluator
# ------------------------------------------------------------------------------------------------
def test_label_components_8_connected():
    m = np.zeros((2, 6, 6), dtype=bool)
    m[0, 0, 0] = m[0, 1, 1] = True  # diagonal neighbours: one component
    m[0, 4:, 4:] = True
    m[1, 2:4, 0:6] = True
    labels, n = label_components(m)
    assert n == 3
    assert labels[0, 0, 0] == labels[0, 1, 1] != labels[0, 5, 5]
    assert len(np.unique(labels[1][m[1]])) == 1


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_classifier_on_every_shape(shape):
    for seed in range(4):
        spec = SceneSpec((ObjectSpec(COLORS[seed], shape, DIRECTIONS[seed * 2]),))
        clip = render_from_spec(spec, seed)
        seg = segment(clip.frames)
        blobs = [f[0] for f in seg.blobs]
        assert classify_shape(blobs)[0] == shape


def test_evaluator_on_ground_truth(gt_clips):
    res = evaluate_clips([(c.frames, c.spec, _cond(c)) for c in gt_clips])
    cams = Counter(c.spec.camera for c in gt_clips)
    assert len(cams) >= 5 and sum(c.spec.background != "plain" for c in gt_clips) >= 20
    for key in ("detect_rate", "color_acc", "shape_acc", "direction_acc", "path_acc", "camera_acc"):
        assert res[key] == 1.0, (key, res[key])
    assert res["traj_err_px"] < 0.2 and res["traj_within_2px"] == 1.0
    assert res["camera_err_px"] < 0.5
    assert res["first_frame_psnr"] == res["last_frame_psnr"] == 100.0
    assert res["extra_objects"] == 0


def test_background_texture_separates_plain_from_textured():
    """The camera's precondition: a flat background scores ~0, ShapesWorld's textures clearly more."""
    obj = (ObjectSpec("red", "circle", "right"),)
    plain = evaluate_clip(render_from_spec(SceneSpec(obj, "plain"), seed=3).frames, SceneSpec(obj, "plain"))
    assert plain.background_std < 0.3
    for kind in ("stripes", "checker", "noise"):
        clip = render_from_spec(SceneSpec(obj, kind), seed=3)
        textured = evaluate_clip(clip.frames, clip.spec)
        assert textured.background_std > 1.0, (kind, textured.background_std)
    res = evaluate_clips([(clip.frames, clip.spec, None)])
    assert res["background_std"] == pytest.approx(textured.background_std)
    assert "background texture (L* std)" in format_table(res)


def test_evaluator_from_parsed_prompts():
    """Prompt -> parse -> render ground truth -> evaluate: the full text-to-video scoring loop."""
    rng = np.random.default_rng(2)
    for i, lang in enumerate(LANGUAGES * 2):
        spec = sample_scene(np.random.default_rng(100 + i), camera_prob=0.5).spec
        text = make_prompt(spec, lang, rng, mention_background=True, mention_camera=True)
        parsed = parse_prompt(text)
        clip = render_from_spec(parsed, seed=i)
        r = evaluate_clip(clip.frames, parsed)
        assert all(o.color_ok and o.shape_ok and o.direction_ok for o in r.objects), text
        assert r.camera_ok, text


@pytest.fixture(scope="module")
def corrupt_clips():
    return _moving_clips(10, 9000)


@pytest.mark.parametrize(
    "name",
    ["wrong color", "wrong shape", "reversed", "shuffled", "static", "noise"],
)
def test_evaluator_rejects_corrupted_clips(corrupt_clips, name):
    fn = corrupt.CORRUPTIONS[name]
    items = [(fn(c, np.random.default_rng(i)), c.spec, _cond(c)) for i, c in enumerate(corrupt_clips)]
    res = evaluate_clips(items, keep_clips=True)
    moving_cam = [r for r, c in zip(res["clips"], corrupt_clips) if c.spec.camera != "static"]
    if name == "wrong color":
        assert res["color_acc"] == 0.0
    elif name == "wrong shape":
        assert res["shape_acc"] == 0.0 and res["color_acc"] == 1.0
    elif name == "reversed":
        assert res["direction_acc"] == 0.0 and res["traj_err_px"] > 4
        assert moving_cam and all(not r["camera_ok"] for r in moving_cam)
    elif name == "shuffled":
        assert res["direction_acc"] <= 0.2 and res["traj_err_px"] > 3 and res["jerk_px"] > 3
        assert res["path_acc"] <= 0.2
    elif name == "static":
        assert res["direction_acc"] == 0.0 and res["last_frame_psnr"] < 30
        assert moving_cam and all(not r["camera_ok"] for r in moving_cam)
    elif name == "noise":
        assert res["color_acc"] <= 0.2 and res["shape_acc"] == 0.0 and res["direction_acc"] <= 0.2
        assert res["first_frame_psnr"] < 15


def test_evaluator_is_robust_to_mild_degradation():
    """Blur and i.i.d. noise (typical of generated video) do not flip the verdicts on ground truth."""
    clips = _moving_clips(8, 9500, camera_prob=0.7)
    rng = np.random.default_rng(0)
    items = []
    for c in clips:
        f = c.frames.astype(float)
        blurred = (f + np.roll(f, 1, 1) + np.roll(f, 1, 2) + np.roll(f, (1, 1), (1, 2))) / 4  # box blur
        noisy = np.clip(blurred + rng.normal(0, 4, f.shape), 0, 255).astype(np.uint8)
        tracks = c.tracks + 0.5  # the 2x2 box blur shifts content by half a pixel
        items.append((noisy, c.spec, Conditions(tracks=tracks, poses=c.poses)))
    res = evaluate_clips(items)
    assert res["color_acc"] == res["shape_acc"] == res["direction_acc"] == res["camera_acc"] == 1.0
    assert res["traj_err_px"] < 0.5


def test_touching_objects_are_separated_by_color():
    """Two objects whose edges touch form one foreground component; the evaluator splits it by colour."""
    spec = SceneSpec(
        (ObjectSpec("red", "square", "right"), ObjectSpec("blue", "circle", "right")), "plain", "static"
    )
    clip = render_from_spec(spec, 1)
    a, b = clip.scene.objects
    offset = (a.size * 0.44 + b.size * 0.5) * 0.98  # half-side + radius: the shapes just touch
    b2 = replace(b, start=(a.start[0] + offset, a.start[1]), end=(a.end[0] + offset, a.end[1]))
    touching = render_scene(replace(clip.scene, objects=[a, b2]))
    assert segment(touching.frames).blobs[0][0].area > 0  # sanity: something was found
    r = evaluate_clip(touching.frames, spec, Conditions(tracks=touching.tracks))
    assert [(o.pred_color, o.pred_shape, o.pred_direction) for o in r.objects] == [
        ("red", "square", "right"),
        ("blue", "circle", "right"),
    ]
    assert all(o.traj_err_px < 1.0 for o in r.objects)


def test_missing_object_and_wrong_frame_count():
    clip = random_clip(31)
    bare = render_scene(replace(clip.scene, objects=[])).frames
    r = evaluate_clip(bare, clip.spec, Conditions(tracks=clip.tracks))
    assert all(not o.detected and not o.color_ok for o in r.objects)
    assert all(o.traj_err_px == 16.0 for o in r.objects)  # miss penalty: a quarter of 64 px
    # A 9-frame video is compared with the 17-frame track resampled in time.
    short = render_scene(replace(clip.scene, frames=9))
    r = evaluate_clip(short.frames, clip.spec, Conditions(tracks=clip.tracks))
    assert all(o.traj_err_px < 0.2 for o in r.objects)


def test_psnr_helpers_table_and_json(tmp_path, gt_clips):
    a = gt_clips[0].frames
    assert psnr(a, a) == 100.0
    b = a[0].copy()
    b[0, 0, 0] ^= 1  # one grey level off in one of 12288 values
    assert abs(psnr(a[0], b) - 10 * np.log10(255**2 * b.size)) < 1e-9
    rec = reconstruction_psnr(a, a.astype(np.float32) + 1.0)
    assert abs(rec["psnr"] - 10 * np.log10(255**2)) < 1e-6 and len(rec["per_frame"]) == len(a)
    res = {"gt": evaluate_clips([(c.frames, c.spec, _cond(c)) for c in gt_clips[:3]], keep_clips=True)}
    table = format_table(res)
    assert "color accuracy" in table and "100.0%" in table
    write_results_json(res, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["gt"]["n_clips"] == 3


# ------------------------------------------------------------------------------------------------
# Dataset writer
# ------------------------------------------------------------------------------------------------
def test_video_codec_quality(tmp_path):
    clip = random_clip(41)
    write_video(tmp_path / "a.mp4", clip.frames)
    write_video(tmp_path / "b.mp4", clip.frames, pix_fmt="yuv420p")
    hi = read_video(tmp_path / "a.mp4")
    lo = read_video(tmp_path / "b.mp4")
    assert hi.shape == lo.shape == clip.frames.shape
    assert psnr(hi, clip.frames) > 42  # default yuv444p, crf 10
    assert psnr(lo, clip.frames) > 29  # 4:2:0 chroma at 32x32 is the limit here


def test_write_dataset(tmp_path):
    meta = write_dataset(tmp_path / "a", 10, seed=5, image_fraction=0.4, camera_prob=0.5)
    recs = load_metadata(tmp_path / "a")
    assert meta.name == "metadata.jsonl" and len(recs) == 10
    kinds = Counter(r["type"] for r in recs)
    assert kinds["image"] >= 1 and kinds["video"] >= 1
    for r in recs:
        assert (tmp_path / "a" / r["file_path"]).exists()
        assert set(r["texts"]) == set(LANGUAGES) and all(len(v) >= 2 for v in r["texts"].values())
        assert r["text"] in [t for v in r["texts"].values() for t in v]
        assert not r["held_out"]
        spec = SceneSpec.from_dict(r["spec"])
        parsed = parse_prompt(r["text"])
        assert [(o.color, o.shape, o.direction) for o in parsed.objects] == [
            (o.color, o.shape, o.direction) for o in spec.objects
        ]
        assert len(r["tracks"]) == len(spec.objects) and len(r["tracks"][0]) == r["num_frames"]
        if r["type"] == "video":
            assert r["num_frames"] == 17 and r["width"] == r["height"] == 64
            poses = read_pose_file(tmp_path / "a" / r["pose_file"])
            assert len(poses) == 17 and camera_label_from_poses(poses, 64, 64) == r["camera"]
        else:
            assert r["file_path"].endswith(".png") and r["pose_file"] is None
    # Deterministic: same arguments -> same metadata and same decoded frames.
    write_dataset(tmp_path / "b", 10, seed=5, image_fraction=0.4, camera_prob=0.5)
    assert load_metadata(tmp_path / "b") == recs
    for r in recs:
        if r["type"] == "video":
            # libx264 is not always bit-exact between runs, so decoded clips are compared loosely.
            assert (
                psnr(read_video(tmp_path / "a" / r["file_path"]), read_video(tmp_path / "b" / r["file_path"]))
                > 40
            )
            assert (tmp_path / "a" / r["pose_file"]).read_text() == (
                tmp_path / "b" / r["pose_file"]
            ).read_text()
        else:
            assert (tmp_path / "a" / r["file_path"]).read_bytes() == (
                tmp_path / "b" / r["file_path"]
            ).read_bytes()
    # The evaluator scores the encoded ground truth perfectly.
    res = evaluate_dataset(tmp_path / "a")
    assert res["color_acc"] == res["shape_acc"] == res["direction_acc"] == res["camera_acc"] == 1.0
    assert res["traj_err_px"] < 0.3


def test_palette_is_well_separated():
    d = np.linalg.norm(PALETTE_LAB[:, None] - PALETTE_LAB[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() > 40
