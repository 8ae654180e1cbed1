import json
import math

import numpy as np
import pytest
import torch

from kinema.control import (
    CONTROL_TYPES,
    CameraPose,
    PoseFileError,
    Track,
    TrackError,
    blob_params,
    camera_latents,
    camera_preset,
    canny,
    canny_video,
    fit_intrinsics,
    format_pose_text,
    interpolate_track,
    load_tracks,
    opencv_available,
    parse_pose_text,
    plucker_embedding,
    read_pose_file,
    relative_c2w,
    render_trajectory_video,
    save_tracks,
    validate_control_type,
    validate_control_video,
    write_pose_file,
)

# ------------------------------------------------------------------------------------------------
# Trajectory


def test_blob_peak_sits_on_the_track_point():
    video = render_trajectory_video([Track([(3, 37, 21)])], num_frames=6, height=64, width=96)
    assert video.shape == (6, 64, 96, 3) and video.dtype == np.uint8
    assert (video[..., 0] == video[..., 1]).all() and (video[..., 0] == video[..., 2]).all()
    frame = video[3, :, :, 0]
    assert np.unravel_index(frame.argmax(), frame.shape) == (21, 37)
    assert frame[21, 37] == 255
    # The track exists only at its key frame: other frames are black.
    assert video[[0, 1, 2, 4, 5]].max() == 0


def test_blob_size_scales_with_resolution_like_the_reference():
    assert blob_params(720, 1280) == (50, 20.0)
    assert blob_params(1440, 2560) == (100, 40.0)
    assert blob_params(360, 640) == (25, 10.0)
    assert blob_params(16, 16) == (2, 0.8)  # floor that keeps tiny videos visible
    video = render_trajectory_video([Track([(0, 300, 180)])], 1, 360, 640)[0, :, :, 0]
    row = video[180].astype(float)
    # Value one sigma away is 255 * exp(-1/2); the circle mask cuts at the radius.
    assert row[310] == pytest.approx(255 * math.exp(-0.5), abs=1)
    assert row[290] == row[310]
    assert row[325] > 0 and row[326] == 0 and row[274] == 0
    # Same point in normalised coordinates at double resolution: blob twice as wide.
    big = render_trajectory_video([Track([(0, 600.5 / 1280, 360.5 / 720)], normalized=True)], 1, 720, 1280)
    assert big[0, 360, 600, 0] == 255
    assert big[0, 360, 600 + 20, 0] == pytest.approx(255 * math.exp(-0.5), abs=1)
    assert (big[0, 360, :, 0] > 0).sum() == 2 * 50 + 1


def test_objects_combine_by_maximum_and_outside_points_are_skipped():
    a = Track([(0, 20, 20), (4, 20, 20)])
    b = Track([(0, 26, 20), (4, 26, 20)])
    both = render_trajectory_video([a, b], 5, 40, 60, sigma=4.0)
    only_a = render_trajectory_video([a], 5, 40, 60, sigma=4.0)
    only_b = render_trajectory_video([b], 5, 40, 60, sigma=4.0)
    assert (both == np.maximum(only_a, only_b)).all()
    # A track leaving the frame to the right: frames with the point outside are black.
    leaving = Track([(0, 50, 20), (4, 90, 20)], name="leaving")
    video = render_trajectory_video([leaving], 5, 40, 60, sigma=3.0)
    xs = interpolate_track(leaving.points, 5)[:, 0]
    for f, x in enumerate(xs):
        assert (video[f].max() > 0) == (x <= 59.5)
    assert video[0].max() == 255 and video[4].max() == 0


def test_spline_passes_through_key_points():
    keys = [(0, 10.0, 5.0), (7, 40.0, 30.0), (12, 20.0, 50.0), (30, 90.0, 10.0)]
    xy = interpolate_track(keys, 36)
    for f, x, y in keys:
        assert xy[f] == pytest.approx([x, y], abs=1e-9)
    assert np.isnan(xy[31:]).all()  # after the last key the object is absent
    assert np.isfinite(xy[:31]).all()
    # Smooth: no jump between consecutive frames larger than the biggest key-to-key speed allows.
    assert np.abs(np.diff(xy[:31], axis=0)).max() < 8
    # Two keys give a straight line, and the linear method agrees.
    two = interpolate_track([(2, 0, 0), (6, 8, 4)], 8)
    assert two[4] == pytest.approx([4, 2])
    assert np.allclose(two[2:7], interpolate_track([(2, 0, 0), (6, 8, 4)], 8, method="linear")[2:7])
    with pytest.raises(ValueError, match="share frame"):
        interpolate_track([(1, 0, 0), (1, 2, 2)], 4)


def test_load_tracks_layouts_and_normalisation_rule(tmp_path):
    # Reference layout: one {"x", "y"} per frame.
    ref = load_tracks(json.dumps([{"x": 5, "y": 6}, {"x": 7, "y": 8}]))
    assert len(ref) == 1 and ref[0].points == [(0, 5, 6), (1, 7, 8)] and not ref[0].normalized
    # Several objects of key points; fractional 0..1 values are normalised automatically.
    two = load_tracks([[[0, 0.25, 0.5], [10, 0.75, 0.5]], [[0, 0, 0], [10, 1, 1]]])
    assert two[0].normalized and not two[1].normalized  # integers 0/1 stay pixels
    # Object layout with explicit flags and a canvas that is rescaled to the output size.
    data = {
        "width": 1280,
        "height": 720,
        "tracks": [{"name": "car", "points": [{"frame": 0, "x": 639.5, "y": 359.5}]}, [[0, 0.5, 0.5]]],
    }
    path = tmp_path / "tracks.json"
    path.write_text(json.dumps(data))
    car, centre = load_tracks(path)
    assert car.name == "car" and car.canvas_size == (720, 1280)
    # Pixel centres scale: the canvas centre stays the centre of the output video.
    assert car.pixel_positions(1, 72, 128)[0] == pytest.approx([63.5, 35.5])
    assert centre.normalized and centre.pixel_positions(1, 72, 128)[0] == pytest.approx([63.5, 35.5])
    forced = load_tracks({"normalized": False, "tracks": [[[0, 0.5, 0.5]]]})
    assert not forced[0].normalized


def test_tracks_round_trip(tmp_path):
    tracks = [
        Track([(0, 1.5, 2.0), (4, 3.0, 9.25)], name="a"),
        Track([(2, 0.1, 0.9)], normalized=True),
        Track([(0, 100, 50)], canvas_size=(720, 1280)),
    ]
    path = tmp_path / "t.json"
    save_tracks(path, tracks)
    assert load_tracks(str(path)) == tracks


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[[0, 1, 2], [1, 2]", "invalid JSON at line 1"),
        ("[[0, 1, 2], [1, 2]]", "track 0, point 1: expected [frame, x, y], got 2 values"),
        ('[[[0, 1, 2]], [[0, "a", 2]]]', "track 1, point 0: frame, x and y must be finite numbers"),
        ('{"trax": []}', "needs a 'tracks' list"),
        ('[{"x": 1}]', "point 0: missing key(s) ['y']"),
        ("[[0, 1, 2], [0, 3, 4]]", "two points share frame 0"),
        ('{"tracks": [[[0, 1, 2]]], "width": 10}', "both 'width' and 'height'"),
        ("[[-1, 1, 2]]", "frame must be >= 0"),
    ],
)
def test_malformed_track_files_name_file_and_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TrackError) as err:
        load_tracks(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_missing_track_file():
    with pytest.raises(TrackError, match="nope.json: cannot read"):
        load_tracks("nope.json")


# ------------------------------------------------------------------------------------------------
# Camera


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_pan_right_moment_channels_have_the_right_sign():
    h, w = 32, 48
    right = plucker_embedding(camera_preset("pan_right", 9), h, w)
    left = plucker_embedding(camera_preset("pan_left", 9), h, w)
    up = plucker_embedding(camera_preset("pan_up", 9), h, w)
    assert right.shape == (9, 6, h, w) and right.dtype == torch.float32
    # Frame 0 is the reference camera: origin 0, so no moment.
    assert right[0, :3].abs().max() == 0
    # Camera moves +x, rays look +z: moment o x d = (a,0,0) x (~0,~0,1) has a negative y component.
    my = right[1:, 1]
    assert (my < 0).all()
    assert (my.mean(dim=(1, 2)).diff() < 0).all()  # grows in magnitude as the camera travels
    assert torch.allclose(left[:, 1], -right[:, 1], atol=1e-6)
    assert (up[1:, 0] < 0).all()  # camera moves -y (up): moment x = o_y * d_z < 0
    # Pure translation never changes ray directions.
    assert torch.allclose(right[:, 3:], right[:1, 3:].expand_as(right[:, 3:]), atol=1e-6)
    zoom = plucker_embedding(camera_preset("zoom_in", 5), h, w)
    # Camera moves +z: moment = (-a d_y, a d_x, 0): positive y-moment on the right half of the image.
    assert (zoom[4, 1, :, w // 2 :] > 0).all() and (zoom[4, 1, :, : w // 2] < 0).all()


def test_relative_to_first_cancels_any_absolute_offset():
    rng = np.random.default_rng(0)
    poses = []
    for i in range(5):
        w2c = np.eye(4)
        w2c[:3, :3] = _rot("y", 0.1 * i) @ _rot("x", 0.05 * i)
        w2c[:3, 3] = [0.2 * i, -0.1 * i, 0.3]
        poses.append(CameraPose(0.6, 0.9, 0.5, 0.52, w2c=w2c[:3]))
    # Move the whole world by an arbitrary rigid transform: w2c' = w2c @ inv(world).
    world = np.eye(4)
    world[:3, :3] = _rot("z", 1.1) @ _rot("x", -0.7)
    world[:3, 3] = rng.normal(size=3) * 10
    moved = [CameraPose(p.fx, p.fy, p.cx, p.cy, w2c=(p.w2c_4x4 @ np.linalg.inv(world))[:3]) for p in poses]
    a = plucker_embedding(poses, 24, 40)
    b = plucker_embedding(moved, 24, 40)
    assert torch.equal(a[0], b[0])
    assert torch.allclose(a, b, atol=1e-5)
    assert np.allclose(relative_c2w(moved)[0], np.eye(4))
    # Frame 0 rays are the camera-frame rays: zero moment, direction z > 0 everywhere.
    assert a[0, :3].abs().max() == 0 and (a[0, 5] > 0).all()


def _direct_plucker(poses, height, width, pose_h, pose_w):
    """Independent batched rewrite of the CameraCtrl formula, for cross-checking."""
    k = np.array([[p.fx, p.fy, p.cx, p.cy] for p in poses])
    if pose_w / pose_h > width / height:
        k[:, 0] = k[:, 0] * (height * pose_w / pose_h) / width
    else:
        k[:, 1] = k[:, 1] * (width * pose_h / pose_w) / height
    k = k * [width, height, width, height]
    c2w_abs = np.linalg.inv(np.stack([p.w2c_4x4 for p in poses]))
    c2w = np.einsum("ij,fjk->fik", poses[0].w2c_4x4, c2w_abs)
    jj, ii = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    x = (ii[None] - k[:, 2, None, None]) / k[:, 0, None, None]
    y = (jj[None] - k[:, 3, None, None]) / k[:, 1, None, None]
    d = np.stack([x, y, np.ones_like(x)], -1)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    d = np.einsum("fij,fhwj->fhwi", c2w[:, :3, :3], d)
    o = np.broadcast_to(c2w[:, None, None, :3, 3], d.shape)
    return np.concatenate([np.cross(o, d), d], -1).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("height, width", [(24, 56), (48, 32), (36, 64)])
def test_plucker_matches_direct_formula_with_aspect_fix(height, width):
    poses = camera_preset("zoom_in+pan_up,rotate_cw", 6, speed=1.3)
    expected = _direct_plucker(poses, height, width, 720, 1280)
    got = plucker_embedding(poses, height, width, pose_size=(720, 1280))
    assert np.allclose(got.numpy(), expected, atol=1e-5)


def test_fit_intrinsics_keeps_pixels_square():
    pose = CameraPose(0.532139961, 0.946026558, 0.5, 0.5)
    for h, w in [(720, 1280), (512, 512), (384, 672), (1024, 576)]:
        fx, fy, cx, cy = fit_intrinsics([pose], h, w)[0]
        assert fx == pytest.approx(fy, rel=1e-6)
        assert (cx, cy) == (w / 2, h / 2)


def test_camera_latents_resize_like_the_reference():
    f, h, w = 13, 32, 48
    plucker = torch.randn(f, 6, h, w)
    lat = camera_latents(plucker, 4, 4, 6)
    assert lat.shape == (6, 4, 4, 6)
    # Latent frame 0 comes from pose frame 0 alone.
    changed = plucker.clone()
    changed[1:] += 5
    assert torch.equal(camera_latents(changed, 4, 4, 6)[:, 0], lat[:, 0])
    # Constant video -> constant latents times the scale.
    const = torch.full((f, 6, h, w), 0.25)
    assert torch.allclose(camera_latents(const, 4, 4, 6), torch.full((6, 4, 4, 6), 1.5))
    assert torch.allclose(camera_latents(const, 4, 4, 6, scale=1.0), torch.full((6, 4, 4, 6), 0.25))
    assert camera_latents(plucker[:1], 1, 4, 6).shape == (6, 1, 4, 6)
    with pytest.raises(ValueError, match="\\(F, 6, H, W\\)"):
        camera_latents(torch.zeros(3, 4, 8, 8), 1, 1, 1)


def test_pose_file_round_trip(tmp_path):
    poses = camera_preset("pan_left+rotate_acw", 7, speed=0.7)
    poses[3].timestamp = 123456.0
    path = tmp_path / "cam.txt"
    write_pose_file(path, poses, header="https://example.invalid/clip")
    back = read_pose_file(path)
    assert back == poses  # exact: numbers are written with repr
    assert back[3].timestamp == 123456.0 and back[3] != back[4]
    # The reference loader drops line 1 and splits on single spaces: our file survives that too.
    lines = path.read_text().splitlines()
    ref = [[float(x) for x in line.strip().split(" ")] for line in lines[1:]]
    assert [CameraPose.from_numbers(v).w2c.tolist() for v in ref] == [p.w2c.tolist() for p in poses]


def test_pose_text_formats_and_rules():
    w2c = "1 0 0 0.1 0 1 0 0 0 0 1 0"
    nineteen = f"0 0.5 0.9 0.5 0.5 0 0 {w2c}"
    # EasyAnimate-style file: empty first line (header), then 19-number lines.
    poses = parse_pose_text(f"\n{nineteen}\n{nineteen}\n")
    assert len(poses) == 2 and poses[0].w2c[0, 3] == pytest.approx(0.1)
    assert poses[0].center == pytest.approx([-0.1, 0, 0])
    # RealEstate10K-style header, and the 16-number form (no timestamp, no zeros).
    assert len(parse_pose_text(f"https://www.youtube.com/watch?v=x\n0.5 0.9 0.5 0.5 {w2c}\n")) == 1
    # No header at all: the first line is a valid pose line and is kept.
    assert len(parse_pose_text(f"{nineteen}\n{nineteen}")) == 2
    assert format_pose_text(poses).startswith("kinema camera poses\n")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("header\n0 1 2\n", "line 2: expected 19 numbers (timestamp fx fy cx cy 0 0 + 12 w2c) or 16"),
        ("header\n0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\nfoo bar\n", "line 3: not a list of numbers"),
        ("header\n", "no pose lines"),
        (
            "h\n0 0.5 0.9 0.5 0.5 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
            "line 2: the 3x3 rotation part of w2c is singular",
        ),
        ("h\n0 0 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n", "line 2: fx and fy must be positive"),
        ("h\n0 nan 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n", "line 2: contains NaN"),
    ],
)
def test_malformed_pose_files_name_file_and_line(tmp_path, text, fragment):
    path = tmp_path / "poses.txt"
    path.write_text(text)
    with pytest.raises(PoseFileError) as err:
        read_pose_file(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_presets_match_reference_and_compose():
    # Reference pan-left file: w2c t_x grows by 1.5 / n per frame (n = 49).
    pan_left = camera_preset("Pan Left", 49)
    assert [p.w2c[0, 3] for p in pan_left[:3]] == pytest.approx([0, 1.5 / 49, 3 / 49])
    assert pan_left[0].fx == 0.532139961
    # Chaining the same motion twice equals the single motion (constant speed, no repeated frame).
    twice = camera_preset("pan_left,pan_left", 49)
    assert all(np.allclose(a.w2c, b.w2c) for a, b in zip(pan_left, twice))
    # '+' sums motions; speed scales them.
    combo = camera_preset("pan_up+pan_left", 9, speed=2.0)
    assert combo[8].center == pytest.approx([-2 * 1.5 * 8 / 9, -2 * 1.5 * 8 / 9, 0])
    # 'zoom_in,pan_left': first half moves forward, second half moves left at constant depth.
    chain = [p.center for p in camera_preset("zoom_in,pan_left", 10)]
    assert chain[4][2] > chain[1][2] > 0 and chain[4][0] == pytest.approx(0)
    assert chain[9][2] == pytest.approx(chain[4][2]) and chain[9][0] < chain[5][0] < 0
    # Roll: "acw" turns scene content clockwise on screen (a point right of centre moves down).
    acw = camera_preset("acw", 9)[8]
    point_cam = acw.w2c @ np.array([1.0, 0.0, 5.0, 1.0])
    assert point_cam[1] > 0 and point_cam[0] > 0
    static = camera_preset("static", 3)
    assert all(np.array_equal(p.w2c, np.eye(3, 4)) for p in static)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown camera preset 'spin'.*known: static"):
        camera_preset("pan_left+spin", 9)
    with pytest.raises(ValueError, match="empty segment"):
        camera_preset("pan_left,", 9)
    with pytest.raises(ValueError, match="need at least 4 frames"):
        camera_preset("pan_left,pan_up,zoom_in", 3)


# ------------------------------------------------------------------------------------------------
# Edges / control videos


def test_control_types():
    assert CONTROL_TYPES == ("canny", "depth", "pose", "mlsd", "trajectory", "raw")
    assert validate_control_type(" Canny ") == "canny"
    with pytest.raises(ValueError, match="unknown control type 'seg'.*canny, depth"):
        validate_control_type("seg")


def test_validate_control_video():
    video = np.zeros((5, 16, 32, 3), np.uint8)
    assert validate_control_video(video, 5, 16, 32) is video
    with pytest.raises(ValueError, match="frames=5 \\(expected 9\\), width=32 \\(expected 48\\)"):
        validate_control_video(video, num_frames=9, width=48)
    with pytest.raises(ValueError, match="uint8"):
        validate_control_video(video.astype(np.float32))
    with pytest.raises(ValueError, match="\\(F, H, W, 3\\)"):
        validate_control_video(video[..., 0])


def _steps_image() -> np.ndarray:
    """Grey image with a strong step, a weak step joined to it, and an isolated weak step."""
    g = np.zeros((40, 80), np.uint8)
    g[:20, 20:35] = 60  # strong vertical edge at column 19/20 (Sobel L1 = 240 > 200)
    g[20:, 20:35] = 30  # the same edge continues weak below (120: between 100 and 200)
    g[:, 55:] = 30  # an isolated weak vertical edge at column 54/55
    return g


@pytest.mark.parametrize("backend", ["numpy", "opencv"])
def test_canny_hysteresis(backend):
    if backend == "opencv" and not opencv_available():
        pytest.skip("opencv not installed")
    edges = canny(_steps_image(), 100, 200, backend=backend)
    assert set(np.unique(edges)) <= {0, 255}
    col = edges[:, 19]
    assert (col[:17] == 255).all()  # the strong part
    assert (col[21:] == 255).all()  # the weak part, kept because it connects to the strong part
    assert edges[:, 40:].max() == 0  # the isolated weak edge is dropped
    # Lower the high threshold and the isolated edge becomes strong enough.
    assert (canny(_steps_image(), 50, 110, backend=backend)[:, 54] == 255).all()


def _textured_video(frames: int = 2, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for f in range(frames):
        a = 60 + 0.9 * xx + 0.4 * yy
        a[((yy - 24) ** 2 + (xx - 20 - 4 * f) ** 2) < 120] = 230
        a[8:30, 40:56] = 20
        a = a + rng.normal(0, 10, a.shape)
        out.append(np.stack([a, 0.6 * a + 40, 255 - a], -1))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def test_canny_video_shape_and_numpy_backend():
    video = _textured_video()
    edges = canny_video(video, backend="numpy")
    assert edges.shape == video.shape and edges.dtype == np.uint8
    assert (edges[..., 0] == edges[..., 2]).all()
    assert 0 < (edges[0, ..., 0] > 0).mean() < 0.3
    with pytest.raises(ValueError, match="uint8"):
        canny(video[0].astype(np.float32))


@pytest.mark.skipif(not opencv_available(), reason="opencv not installed")
@pytest.mark.parametrize("low, high", [(100, 200), (30, 90), (200, 60)])
def test_numpy_canny_matches_opencv_exactly(low, high):
    import cv2

    video = _textured_video(3)
    ours = canny_video(video, low, high, backend="numpy")
    ref = np.stack([cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), low, high) for f in video])
    assert np.array_equal(ours[..., 0], ref)
    assert np.array_equal(canny_video(video, low, high, backend="opencv")[..., 0], ref)


def test_plane_motion_of_presets_pans_and_zooms_a_plane_at_the_given_depth():
    from kinema.control.camera import camera_preset, fit_intrinsics, latent_plane_motion, plane_motion

    depth, n = 8.0, 17
    fx = fit_intrinsics(camera_preset("pan_left", 2), 64, 64)[0, 0]
    travel = 1.5 * (n - 1) / n  # frame i of a preset sits at i / n of its unit motion
    left = plane_motion(camera_preset("pan_left", n), 64, 64, depth)
    np.testing.assert_allclose(left[-1], [1.0, fx * travel / depth, 0.0], atol=1e-6)  # content moves right
    up = plane_motion(camera_preset("pan_up", n), 64, 64, depth)
    assert up[-1, 2] > 5 and abs(up[-1, 1]) < 1e-6
    zoom = 3.0 * (n - 1) / n
    np.testing.assert_allclose(
        plane_motion(camera_preset("zoom_in", n), 64, 64, depth)[-1],
        [depth / (depth - zoom), 0, 0],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        plane_motion(camera_preset("zoom_out", n), 64, 64, depth)[-1],
        [depth / (depth + zoom), 0, 0],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        plane_motion(camera_preset("static", n), 64, 64, depth), np.tile([1.0, 0, 0], (n, 1)), atol=1e-9
    )
    # Per latent frame: frame 0, then the mean over the 4 frames each causal latent frame encodes, in cells.
    lat = latent_plane_motion(camera_preset("pan_left", n), 64, 64, depth, 5)
    assert lat.shape == (5, 3) and lat.dtype == torch.float32
    np.testing.assert_allclose(lat[2].numpy(), [1.0, left[5:9, 1].mean() / 8, 0.0], atol=1e-5)
    with pytest.raises(ValueError, match="depth must be > 0"):
        plane_motion(camera_preset("pan_left", n), 64, 64, 0.0)


def test_warped_noise_is_standard_normal_and_moves_with_the_camera():
    from kinema.control import warped_noise

    shape = (4, 5, 8, 8)
    still = torch.tensor([[1.0, 0.0, 0.0]]).expand(5, 3)
    n = warped_noise(still, shape, torch.Generator().manual_seed(0))
    assert n.shape == shape and all(torch.equal(n[:, k], n[:, 0]) for k in range(5))  # static: one field
    pan = torch.tensor([[1.0, 0, 0], [1.0, 1, 0], [1.0, 2, -1], [1.0, 0.5, 0], [1.0, 0.25, 0.75]])
    n = warped_noise(pan, shape, torch.Generator().manual_seed(1))
    torch.testing.assert_close(n[:, 1, :, 1:], n[:, 0, :, :-1], rtol=0, atol=0)  # content moved 1 cell right
    torch.testing.assert_close(n[:, 2, :-1, 2:], n[:, 0, 1:, :-2], rtol=0, atol=0)  # 2 right, 1 up
    # Half a cell: each cell shares half its sub-points with its left neighbour in frame 0.
    corr = (n[:, 3, :, 1:] * n[:, 0, :, :-1]).mean() / n[:, 0].var()
    assert 0.3 < corr < 0.7, corr
    # Every entry N(0, 1), also under zooms (several sub-points on one canvas value) and sub-cell pans.
    motions = torch.tensor([[1.0, 0, 0], [1.4, 0.3, 0], [2.0, -0.6, 0.2], [0.7, 0.4, -0.4], [0.5, 1.3, 0.0]])
    draws = torch.stack(
        [warped_noise(motions, (2, 5, 8, 8), torch.Generator().manual_seed(s)) for s in range(800)]
    )
    var = draws.var(0).mean((0, 2, 3))
    torch.testing.assert_close(var, torch.ones(5), atol=0.05, rtol=0)
    assert draws.mean().abs() < 0.02
    mixed = warped_noise(still, shape, torch.Generator().manual_seed(0), correlation=0.6)
    corr = (mixed[:, 1] * mixed[:, 0]).mean() / mixed[:, 0].var()
    assert 0.35 < corr < 0.85 and torch.equal(
        mixed[:, 0], warped_noise(still, shape, torch.Generator().manual_seed(0))[:, 0]
    )
    for bad, rule in (
        (torch.zeros(5, 3), "scales must be > 0"),
        (torch.ones(4, 3), r"motion must be \(5, 3\)"),
    ):
        with pytest.raises(ValueError, match=rule):
            warped_noise(bad, shape)
    with pytest.raises(ValueError, match="correlation"):
        warped_noise(still, shape, correlation=1.5)
