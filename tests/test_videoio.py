"""Video/image IO: real round trips through the encoders, conversions, atomic writes and error reporting."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from kinema import videoio
from kinema.videoio import (
    MediaError,
    VideoClip,
    frames_to_tensor,
    read_image,
    read_video,
    resize_and_center_crop,
    resize_frames,
    save_sidecar_json,
    sidecar_path,
    tensor_to_frames,
    write_image,
    write_video,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def moving_gradient(f: int = 16, h: int = 64, w: int = 96) -> np.ndarray:
    """Smooth colour gradients that drift a few pixels per frame, plus a moving bright bar."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for t in range(f):
        r = 255 * (x + 3 * t) / (w + 3 * f)
        g = 255 * (y + 2 * t) / (h + 2 * f)
        b = 128 + 100 * np.sin((x + y + 4 * t) / 17)
        frame = np.stack([r, g, b], -1)
        frame[:, (4 * t) % w : (4 * t) % w + 6] = 240  # an edge that moves
        frames.append(frame)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def flat_levels(levels: list[int], h: int = 32, w: int = 48) -> np.ndarray:
    """Frame i is a flat grey of value levels[i]: survives lossy codecs, so frame identity is checkable."""
    return np.stack([np.full((h, w, 3), v, np.uint8) for v in levels])


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return moving_gradient()


@pytest.fixture(scope="module")
def indexed_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("indexed") / "levels.mp4"
    write_video(path, flat_levels([20 + 16 * i for i in range(12)]), fps=12)
    return path


# ------------------------------------------------------------------------------------------- round trips


def test_mp4_round_trip_preserves_frames_size_and_fps(tmp_path: Path, clip: np.ndarray) -> None:
    out = write_video(tmp_path / "clip.mp4", clip, fps=8)
    assert out == tmp_path / "clip.mp4"
    assert listing(tmp_path) == ["clip.mp4"]  # no temp file left behind

    got = read_video(out)
    assert isinstance(got, VideoClip)
    assert got.frames.dtype == np.uint8 and got.frames.shape == clip.shape
    assert (got.num_frames, got.height, got.width) == (16, 64, 96)
    assert got.fps == 8.0
    assert psnr(got.frames, clip) > 35
    frames, fps = got  # unpacks like a (frames, fps) tuple
    assert frames is got.frames and fps == 8.0

    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        frame = next(container.decode(stream))
        assert frame.colorspace == 1  # tagged BT.709, the matrix it was converted with


def test_webm_round_trip(tmp_path: Path, clip: np.ndarray) -> None:
    got = read_video(write_video(tmp_path / "clip.webm", clip[:6], fps=12))
    assert got.frames.shape == (6, 64, 96, 3) and got.fps == 12.0
    assert psnr(got.frames, clip[:6]) > 33


def test_ntsc_frame_rate_is_kept(tmp_path: Path, clip: np.ndarray) -> None:
    got = read_video(write_video(tmp_path / "ntsc.mp4", clip[:3], fps=Fraction(30000, 1001)))
    assert got.fps == pytest.approx(30000 / 1001)


def test_video_clip_passes_its_fps_through(tmp_path: Path, clip: np.ndarray) -> None:
    got = read_video(write_video(tmp_path / "a.mp4", VideoClip(clip[:4], 12.0)))
    assert got.fps == 12.0 and got.num_frames == 4


def test_gif_round_trip_keeps_colours_and_frame_count(tmp_path: Path) -> None:
    f, h, w = 8, 32, 48
    frames = np.zeros((f, h, w, 3), np.uint8)
    frames[:, :, : w // 2] = (200, 30, 40)
    frames[:, :, w // 2 :] = (20, 180, 90)
    for t in range(4, f):  # frames 0-3 identical (GIF writers merge those), then a moving square
        frames[t, 8:16, 4 * t : 4 * t + 8] = (250, 250, 0)
    got = read_video(write_video(tmp_path / "a.gif", frames, fps=10))
    assert got.frames.shape == frames.shape
    assert got.fps == pytest.approx(10.0)
    assert np.abs(got.frames.astype(int) - frames).max() <= 8  # palette error only
    assert np.allclose(got.frames[:, 24, 5], (200, 30, 40), atol=8)
    assert np.allclose(got.frames[:, 24, 40], (20, 180, 90), atol=8)
    assert np.allclose(got.frames[5, 12, 22], (250, 250, 0), atol=8)
    # GIF delays are in 1/100 s: 8 fps is stored as 120 ms frames.
    assert read_video(write_video(tmp_path / "b.gif", frames, fps=8)).fps == pytest.approx(100 / 12)


def test_gif_of_identical_frames_keeps_its_length(tmp_path: Path) -> None:
    got = read_video(write_video(tmp_path / "still.gif", flat_levels([90] * 5), fps=10))
    assert got.num_frames == 5 and got.fps == pytest.approx(10.0)


def test_foreign_gif_delays_become_a_constant_rate(tmp_path: Path) -> None:
    frames = [Image.fromarray(f) for f in flat_levels([10, 100, 200])]
    path = tmp_path / "foreign.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 200, 100], loop=0)
    got = read_video(path)
    assert got.fps == pytest.approx(10.0)
    assert [int(f[0, 0, 0]) for f in got.frames] == [10, 100, 100, 200]
    # 0 ms delays play at 100 ms in browsers
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=0, loop=0)
    assert read_video(path).fps == pytest.approx(10.0)


def test_png_single_frame_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)  # odd sizes are fine for images
    write_video(tmp_path / "a.png", frame[None])
    assert np.array_equal(read_image(tmp_path / "a.png"), frame)
    clip = read_video(tmp_path / "a.png")
    assert clip.frames.shape == (1, 13, 17, 3) and clip.fps == videoio.DEFAULT_FPS
    write_image(tmp_path / "b.png", frame)
    assert np.array_equal(read_image(tmp_path / "b.png"), frame)
    smooth = moving_gradient(1, 16, 24)[0]
    write_image(tmp_path / "c.jpg", smooth)
    assert psnr(read_image(tmp_path / "c.jpg"), smooth) > 35
    with pytest.raises(ValueError, match="holds one image"):
        write_video(tmp_path / "d.png", np.stack([frame, frame]))
    with pytest.raises(ValueError, match="unsupported extension"):
        write_video(tmp_path / "d.avi", frame[None])


def test_write_image_takes_a_chw_tensor(tmp_path: Path) -> None:
    img = torch.zeros(3, 4, 6)
    img[0] = 1.0  # red
    write_image(tmp_path / "t.png", img)
    # 0.0 is (0 + 1) * 127.5 = 127.5, rounded half to even
    assert np.array_equal(read_image(tmp_path / "t.png"), np.broadcast_to([255, 128, 128], (4, 6, 3)))


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # transparent black -> white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays
    rgba[1, 0] = (0, 0, 0, 128)  # half transparent black -> mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [255, 255, 255]
    assert img[0, 1].tolist() == [255, 0, 0]
    assert abs(int(img[1, 0, 0]) - 127) <= 1


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    assert np.array_equal(read_image(tmp_path / "phone.png"), np.rot90(stored, -1))


def test_video_rotation_metadata_is_applied(tmp_path: Path, clip: np.ndarray) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    src = write_video(tmp_path / "src.mp4", clip[:2])
    rotated = tmp_path / "rotated.mp4"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90"]
    result = subprocess.run([*cmd, "-i", str(src), "-c", "copy", str(rotated)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"this ffmpeg cannot set display rotation: {result.stderr[-200:]!r}")
    got = read_video(rotated)
    assert got.frames.shape == (2, 96, 64, 3)  # shown upright: 90 degrees counter-clockwise
    assert psnr(got.frames, np.rot90(clip[:2], 1, axes=(1, 2))) > 35


def test_content_is_read_whatever_the_extension(tmp_path: Path, clip: np.ndarray) -> None:
    write_video(tmp_path / "a.gif", flat_levels([50, 150]), fps=10)
    shutil.copy(tmp_path / "a.gif", tmp_path / "really_a_gif.mp4")
    assert read_video(tmp_path / "really_a_gif.mp4").num_frames == 2
    write_video(tmp_path / "b.mp4", clip[:3])
    shutil.copy(tmp_path / "b.mp4", tmp_path / "really_an_mp4.png")
    assert read_video(tmp_path / "really_an_mp4.png").num_frames == 3


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    grey16 = np.array([[0, 257 * 100, 65535]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png")[0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]


def test_write_arguments_are_validated(
    tmp_path: Path, clip: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    two = clip[:2]
    assert read_video(write_video(tmp_path / "np.mp4", two, fps=np.float32(12), crf=np.int64(20))).fps == 12.0
    for fps in (0, -1, float("nan"), float("inf"), "fast", True):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            write_video(tmp_path / "x.mp4", two, fps=fps)
    with pytest.raises(ValueError, match=r"crf for \.mp4 must be an int in \[0, 51\]"):
        write_video(tmp_path / "x.mp4", two, crf=60)
    with pytest.raises(ValueError, match="quality"):
        write_image(tmp_path / "x.jpg", two[0], quality=0)
    monkeypatch.setitem(videoio._AV_WRITE, ".mp4", ("mp4", "libnotreal", 18))
    monkeypatch.setitem(videoio._CRF_RANGE, "libnotreal", (0, 51))
    with pytest.raises(MediaError, match=r"x\.mp4': this PyAV build has no libnotreal encoder"):
        write_video(tmp_path / "x.mp4", two)
    assert listing(tmp_path) == ["np.mp4"]


# ---------------------------------------------------------------------------------------- frame selection


def test_start_stride_max_frames(indexed_mp4: Path) -> None:
    def levels(c: VideoClip) -> list[int]:
        return [round((float(f.mean()) - 20) / 16) for f in c.frames]

    assert levels(read_video(indexed_mp4)) == list(range(12))
    got = read_video(indexed_mp4, start=2, stride=3, max_frames=3)
    assert levels(got) == [2, 5, 8]
    assert got.fps == pytest.approx(12 / 3)  # keeps real-time speed
    assert levels(read_video(indexed_mp4, start=7, stride=2)) == [7, 9, 11]
    assert levels(read_video(indexed_mp4, max_frames=2)) == [0, 1]
    assert levels(read_video(indexed_mp4, start=11, max_frames=5)) == [11]
    with pytest.raises(MediaError, match=r"levels\.mp4.*start=12 but it has only 12 frames"):
        read_video(indexed_mp4, start=12)
    assert levels(read_video(indexed_mp4, start=np.int64(10))) == [10, 11]
    for bad in ({"start": -1}, {"stride": 0}, {"max_frames": 0}, {"stride": 1.5}, {"start": True}):
        with pytest.raises(ValueError):
            read_video(indexed_mp4, **bad)


def test_start_stride_on_an_animation(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.gif", flat_levels([0, 30, 60, 90, 120, 150]), fps=10)
    got = read_video(path, start=1, stride=2, max_frames=2)
    assert [int(f[0, 0, 0]) for f in got.frames] == [30, 90]
    assert got.fps == pytest.approx(5.0)
    assert np.array_equal(read_image(path), np.zeros((32, 48, 3), np.uint8))  # first frame


# -------------------------------------------------------------------------------------------- conversions


def test_tensor_frames_conversions_are_exact_for_uint8() -> None:
    values = np.arange(256, dtype=np.uint8)
    frames = np.stack([np.broadcast_to(values.reshape(16, 16, 1), (16, 16, 3))] * 2)  # (2, 16, 16, 3)
    frames = np.ascontiguousarray(frames)
    frames[1] = frames[1, ::-1]
    x = frames_to_tensor(frames)
    assert x.shape == (1, 3, 2, 16, 16) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.allclose(x[0, :, 0, 0, 1], torch.full((3,), 1 / 127.5 - 1))
    back = tensor_to_frames(x)
    assert back.shape == (1, 2, 16, 16, 3) and back.dtype == np.uint8
    assert np.array_equal(back[0], frames)
    assert np.array_equal(tensor_to_frames(x[0]), frames)  # (C, F, H, W) -> (F, H, W, 3)
    # lower precision survives: every uint8 level is representable apart enough in bfloat16
    assert np.array_equal(tensor_to_frames(frames_to_tensor(frames, dtype=torch.bfloat16))[0], frames)
    # list forms: frames of one video, or a batch of clips
    assert torch.equal(frames_to_tensor(list(frames)), x)
    assert frames_to_tensor([frames, frames]).shape == (2, 3, 2, 16, 16)
    assert torch.equal(frames_to_tensor(VideoClip(frames, 8.0)), x)


def test_tensor_to_frames_rounds_and_clamps() -> None:
    x = (
        torch.tensor([-5.0, -1.0, -0.999, 0.0, 0.0039, 0.004, 1.0, 7.0])
        .reshape(1, 1, 1, 8)
        .expand(3, 1, 1, 8)
    )
    got = tensor_to_frames(x)[0, 0, :, 0].tolist()
    # (x + 1) * 127.5 rounded: 0.1275 -> 0, 127.5 -> 128 (half to even), 128.0 -> 128, 128.01 -> 128
    assert got == [0, 0, 0, 128, 128, 128, 255, 255]
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_frames(torch.full((3, 1, 2, 2), float("nan")))


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(4, 2, 8, 8),  # C != 3
        torch.zeros(3, 8, 8),  # no frame axis
        torch.zeros(1, 3, 2, 8, 8, dtype=torch.int64),  # not float
        np.zeros((1, 3, 2, 8, 8), np.float32),  # numpy float: not a tensor
    ],
)
def test_tensor_to_frames_rejects_bad_layouts(bad: object) -> None:
    with pytest.raises(ValueError, match=r"\(C, F, H, W\)|float tensor"):
        tensor_to_frames(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 8, 8, 4), np.uint8), r"\(F, H, W, 3\)"),
        (np.zeros((8, 8, 3), np.uint8), r"\(F, H, W, 3\)"),
        (np.zeros((2, 8, 8, 3), np.float32), r"torch tensor in \[-1, 1\]"),
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
        ([], "zero frames"),
        (torch.zeros(2, 3, 2, 8, 8), "batch of 2"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], r"frame 1: expected uint8 \(H, W, 3\)"),
    ],
)
def test_write_video_rejects_bad_frames_and_writes_nothing(tmp_path: Path, bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "x.mp4", bad)
    assert listing(tmp_path) == []


def test_write_video_accepts_tensors_lists_and_pil(tmp_path: Path, clip: np.ndarray) -> None:
    small = clip[:2, :16, :16]
    x = frames_to_tensor(small)
    for name, frames in [
        ("a.png", x[:, :, :1]),  # (1, C, F, H, W)
        ("b.png", x[0, :, :1]),  # (C, F, H, W)
        ("c.png", [small[0]]),
        ("d.png", [Image.fromarray(small[0])]),
        ("e.png", torch.from_numpy(small[:1])),  # uint8 tensor (F, H, W, 3)
    ]:
        write_video(tmp_path / name, frames)
        assert np.array_equal(read_image(tmp_path / name), small[0]), name


# ------------------------------------------------------------------------------------------------ H.264 sizes


def test_odd_sizes_for_h264(tmp_path: Path, clip: np.ndarray) -> None:
    odd = clip[:2, :63, :95]
    with pytest.warns(UserWarning, match="95x63 to 94x62"):
        write_video(tmp_path / "odd.mp4", odd)
    got = read_video(tmp_path / "odd.mp4")
    assert got.frames.shape == (2, 62, 94, 3)
    assert psnr(got.frames, odd[:, :62, :94]) > 35  # cropped, not resampled
    with pytest.raises(ValueError, match="even width and height"):
        write_video(tmp_path / "strict.mp4", odd, odd_size="error")
    assert not (tmp_path / "strict.mp4").exists()
    assert read_video(write_video(tmp_path / "odd.webm", odd)).frames.shape == odd.shape  # VP9 is fine


# ---------------------------------------------------------------------------------------------- atomicity


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, clip: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.mp4"
    write_video(target, clip[:2])
    before = target.read_bytes()

    real, calls = videoio._video_frame, []

    def failing(rgb: np.ndarray) -> av.VideoFrame:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(rgb)

    monkeypatch.setattr(videoio, "_video_frame", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(target, clip)
    assert len(calls) == 3  # the failure came mid-stream, after a partial file existed
    assert listing(tmp_path) == ["out.mp4"] and target.read_bytes() == before

    monkeypatch.setattr(videoio, "_quantize", lambda rgb: (_ for _ in ()).throw(RuntimeError("palette")))
    with pytest.raises(RuntimeError, match="palette"):
        write_video(tmp_path / "new" / "out.gif", clip)
    assert listing(tmp_path / "new") == []


def test_output_folder_is_created_and_permissions_follow_umask(tmp_path: Path, clip: np.ndarray) -> None:
    out = write_video(tmp_path / "a" / "b" / "c.gif", clip[:2])
    assert out.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# ------------------------------------------------------------------------------------------------- errors


def test_unreadable_files_raise_media_error_naming_the_file(tmp_path: Path, clip: np.ndarray) -> None:
    rnd = tmp_path / "random.mp4"
    rnd.write_bytes(np.random.default_rng(0).bytes(4000))
    empty = tmp_path / "empty.mp4"
    empty.touch()
    good = write_video(tmp_path / "good.mp4", clip)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk_png = tmp_path / "junk.png"
    junk_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    audio = tmp_path / "audio_only.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)

    cases = [
        (rnd, "not a recognised video or image file"),
        (empty, "file is empty"),
        (tmp_path / "missing.mp4", "does not exist"),
        (tmp_path, "is a directory"),
        (truncated, "corrupt or truncated"),
        (junk_png, "junk.png"),
        (audio, "no video stream"),
    ]
    for path, reason in cases:
        with pytest.raises(MediaError, match=reason) as info:
            read_video(path)
        assert f"'{path}'" in str(info.value), str(info.value)
        err = info.value
        assert err.__cause__ is None and (
            err.__context__ is None or err.__suppress_context__
        )  # no PyAV trace
    with pytest.raises(MediaError, match=r"cannot read image '.*missing\.png': file does not exist"):
        read_image(tmp_path / "missing.png")
    assert issubclass(MediaError, ValueError)


# ---------------------------------------------------------------------------------------------- resizing


def test_resize_frames_shapes_and_values(clip: np.ndarray) -> None:
    flat = flat_levels([77, 200])
    out = resize_frames(flat, 20, 30)
    assert out.shape == (2, 20, 30, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], np.full((20, 30, 3), 77)) and np.array_equal(
        out[1], np.full((20, 30, 3), 200)
    )
    assert resize_frames(clip[0], 32, 48).shape == (32, 48, 3)  # single (H, W, 3) image
    # antialiased bilinear, as Pillow's BILINEAR resize (a triangle filter widened when shrinking)
    for size in ((32, 48), (27, 40), (100, 130)):
        ours = resize_frames(clip[:2], *size)
        pil = np.stack(
            [np.asarray(Image.fromarray(f).resize(size[::-1], Image.Resampling.BILINEAR)) for f in clip[:2]]
        )
        assert np.abs(ours.astype(int) - pil).max() <= 1, size
    x = frames_to_tensor(clip).to(torch.bfloat16)
    y = resize_frames(x, 32, 48)
    assert y.shape == (1, 3, 16, 32, 48) and y.dtype == torch.bfloat16
    assert resize_frames(x[0], 8, 8).shape == (3, 16, 8, 8)
    with pytest.raises(ValueError, match="height"):
        resize_frames(clip, 0, 8)


def test_resize_and_center_crop_keeps_a_centred_square_centred() -> None:
    wide = np.zeros((1, 60, 100, 3), np.uint8)
    wide[0, 20:40, 40:60] = 255  # 20 px square in the middle of a 100 x 60 frame
    out = resize_and_center_crop(wide, 32, 32)
    assert out.shape == (1, 32, 32, 3)
    mask = out[0, :, :, 0] > 127
    ys, xs = np.nonzero(mask)
    assert abs(ys.mean() - 15.5) < 0.6 and abs(xs.mean() - 15.5) < 0.6
    assert abs(mask.sum() - (20 * 32 / 60) ** 2) < 16  # the crop was 60 x 60, scaled by 32 / 60
    assert not out[0, :6].any() and not out[0, :, :6].any()  # borders stay black: nothing stretched

    tall = np.transpose(wide, (0, 2, 1, 3))  # 60 wide, 100 tall
    out_tall = resize_and_center_crop(tall, 16, 48)
    assert out_tall.shape == (1, 16, 48, 3)
    for shape in ((64, 32), (32, 64), (60, 100)):
        assert resize_and_center_crop(wide, *shape).shape == (1, *shape, 3)

    x = frames_to_tensor(wide)
    y = resize_and_center_crop(x, 32, 32)
    assert y.shape == (1, 3, 1, 32, 32)
    assert np.abs(tensor_to_frames(y)[0].astype(int) - out).max() <= 1


# ------------------------------------------------------------------------------------------------- sidecar


def test_save_sidecar_json(tmp_path: Path) -> None:
    media = tmp_path / "runs" / "clip.mp4"
    path = save_sidecar_json(
        sidecar_path(media),
        {
            "prompt": "un chat qui saute ✨",
            "seed": np.int64(7),
            "guidance": np.float32(6.0),
            "size": (48, 64),
            "dtype": torch.bfloat16,
            "out": media,
            "fps": Fraction(30000, 1001),
        },
    )
    assert path == tmp_path / "runs" / "clip.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {
        "prompt": "un chat qui saute ✨",
        "seed": 7,
        "guidance": 6.0,
        "size": [48, 64],
        "dtype": "torch.bfloat16",
        "out": str(media),
        "fps": 30000 / 1001,
    }
    with pytest.raises(TypeError, match="object"):
        save_sidecar_json(tmp_path / "bad.json", {"x": object()})
    with pytest.raises(ValueError):
        save_sidecar_json(tmp_path / "nan.json", {"x": float("nan")})
    assert listing(tmp_path) == ["runs"]
    assert listing(tmp_path / "runs") == ["clip.json"]
