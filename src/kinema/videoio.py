"""Reading and writing videos and images, and converting them to and from model tensors.

Conventions used throughout kinema:

* **Frames** are ``uint8`` numpy arrays laid out ``(F, H, W, 3)``, RGB.
* **Video tensors** are floating point torch tensors in ``[-1, 1]`` laid out ``(B, C, F, H, W)`` (or
  ``(C, F, H, W)`` for one video), ``C == 3``. ``uint8`` value ``u`` maps to ``u / 127.5 - 1``.

Formats are chosen from the file extension:

* ``.mp4``, ``.mov``, ``.mkv``: H.264 (libx264), ``yuv420p``, BT.709 limited range, tagged as such.
  H.264 in ``yuv420p`` needs an even width and height; by default an odd last row/column is dropped
  (one pixel, never resampled) with a warning, ``odd_size="error"`` raises instead.
* ``.webm``: VP9 (libvpx), ``yuv420p``.
* ``.gif``: Pillow, one median-cut 256-colour palette per frame, no dithering. GIF stores frame delays in
  1/100 s, so the frame rate written is ``100 / round(100 / fps)`` (8 fps is stored as 120 ms frames).
* ``.png``, ``.jpg``/``.jpeg``, ``.webp``, ``.bmp``: a single image (Pillow; JPEG/WebP quality 95, JPEG
  without chroma subsampling).

Reading goes through PyAV for videos and Pillow for images (including animated GIF/WebP/PNG); a file
whose content does not match its extension is tried with the other reader. Videos with a rotation in
their display matrix (phone videos) are returned upright; images are returned upright per their EXIF
orientation. Alpha is composited onto **white**. Untagged YUV video is converted with BT.601 (ffmpeg's
default, and what imageio/OpenCV-written files use). HDR video is not tone mapped.

Every write goes to a hidden temporary file in the destination folder which is renamed over the
destination only when complete: a failed write leaves no partial file and any previous file intact.
Problems with a file (missing, empty, corrupt, no video stream, no frames) raise :class:`MediaError`
naming the file; bad arguments (array shapes, dtypes, values) raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import operator
import os
import re
import secrets
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from functools import reduce
from pathlib import Path
from typing import Any, Literal, NamedTuple

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_FPS",
    "MediaError",
    "VideoClip",
    "frames_to_tensor",
    "read_image",
    "read_video",
    "resize_and_center_crop",
    "resize_frames",
    "save_sidecar_json",
    "sidecar_path",
    "tensor_to_frames",
    "write_image",
    "write_video",
]

DEFAULT_FPS = 8.0
"""Frame rate used when writing without one, and reported for still images."""

PathLike = str | os.PathLike

# extension -> (container format, encoder, default crf)
_AV_WRITE = {
    ".mp4": ("mp4", "libx264", 18),
    ".mov": ("mov", "libx264", 18),
    ".mkv": ("matroska", "libx264", 18),
    ".webm": ("webm", "libvpx-vp9", 24),
}
_CRF_RANGE = {"libx264": (0, 51), "libvpx-vp9": (0, 63)}
_STILL_WRITE = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
_PILLOW_READ = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".apng"}
_WRITE_EXTS = sorted([*_AV_WRITE, ".gif", *_STILL_WRITE])

# EXIF orientation tag value -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_EXIF_ORIENTATION = 0x0112
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Our GIFs record their frame delay here: Pillow merges identical consecutive frames into one longer
# frame, and this lets read_video split them back exactly.
_GIF_COMMENT = re.compile(rb"kinema frame_delay_ms=(\d+)")
_GIF_PALETTE_SAMPLE = 16384  # pixels per frame the GIF palette is built from
_RESIZE_CHUNK = 16  # frames resized at once: bounds the float32 working copy for long clips


class MediaError(ValueError):
    """A media file is missing, empty, corrupt, or does not hold what was asked for."""


class VideoClip(NamedTuple):
    """Decoded frames plus their frame rate; unpacks as ``frames, fps = read_video(...)``."""

    frames: np.ndarray
    """uint8 ``(F, H, W, 3)`` RGB."""
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


class _NotThisFormat(Exception):
    """The reader does not recognise the file; another reader may."""


# ----------------------------------------------------------------------------------------------- reading


def read_video(
    path: PathLike, *, max_frames: int | None = None, start: int = 0, stride: int = 1
) -> VideoClip:
    """Decode frames ``start, start + stride, ...`` (at most ``max_frames``) of a video or image file.

    The returned ``fps`` is the source frame rate divided by ``stride``, so the clip keeps its real-time
    speed. Still images give one frame at :data:`DEFAULT_FPS`. Frames before ``start`` are decoded and
    dropped (no seeking), so a large ``start`` costs decoding time. Variable-frame-rate videos are
    returned frame by frame at their average rate; GIF/WebP/APNG delays are mapped to a constant rate by
    repeating frames.
    """
    start = _int_arg("start", start, 0)
    stride = _int_arg("stride", stride, 1)
    max_frames = None if max_frames is None else _int_arg("max_frames", max_frames, 1)
    p = _check_readable(path, "video")
    return _read_any(p, "video", start, stride, max_frames)


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as uint8 ``(H, W, 3)`` RGB (alpha composited onto white, EXIF-upright).

    For animations and videos the first frame is returned.
    """
    p = _check_readable(path, "image")
    return _read_any(p, "image", 0, 1, 1).frames[0]


def _int_arg(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum] (numpy integers accepted; bools and floats refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        v = None
    if v is None or v < minimum or (maximum is not None and v > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")
    return v


def _check_readable(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"cannot read {what} '{p}': file does not exist")
    if p.is_dir():
        raise MediaError(f"cannot read {what} '{p}': it is a directory")
    if p.stat().st_size == 0:
        raise MediaError(f"cannot read {what} '{p}': file is empty")
    return p


def _read_any(p: Path, what: str, start: int, stride: int, max_frames: int | None) -> VideoClip:
    readers = (_read_pillow, _read_av) if p.suffix.lower() in _PILLOW_READ else (_read_av, _read_pillow)
    try:
        frames, fps = readers[0](p, what, start, stride, max_frames)
    except _NotThisFormat as first:
        try:
            frames, fps = readers[1](p, what, start, stride, max_frames)
        except _NotThisFormat:
            raise MediaError(
                f"cannot read {what} '{p}': not a recognised video or image file ({first})"
            ) from None
    return VideoClip(frames, fps)


def _frame_plan(start: int, stride: int, max_frames: int | None) -> tuple[Callable[[int], bool], int | None]:
    """(is frame index i one of start, start + stride, ...?, index to stop decoding before or None)."""
    stop = None if max_frames is None else start + stride * (max_frames - 1) + 1
    return (lambda i: i >= start and (i - start) % stride == 0 and (stop is None or i < stop)), stop


def _no_frames_error(p: Path, what: str, n_total: int, start: int) -> MediaError:
    if n_total == 0:
        return MediaError(f"cannot read {what} '{p}': it contains no frames")
    return MediaError(f"cannot read {what} '{p}': start={start} but it has only {n_total} frames")


def _av_reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _read_av(p: Path, what: str, start: int, stride: int, max_frames: int | None) -> tuple[np.ndarray, float]:
    try:
        container = av.open(str(p), "r")
    except (av.InvalidDataError, av.DemuxerNotFoundError) as e:
        raise _NotThisFormat(f"ffmpeg: {_av_reason(e)}") from None
    except av.FFmpegError as e:
        raise MediaError(f"cannot read {what} '{p}': {_av_reason(e)}") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise MediaError(f"cannot read {what} '{p}': no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and rate > 0 else DEFAULT_FPS
        wanted, stop = _frame_plan(start, stride, max_frames)
        frames: list[np.ndarray] = []
        size: tuple[int, int] | None = None
        n = 0
        try:
            for frame in container.decode(stream):
                n += 1
                if wanted(n - 1):
                    # A stream may change resolution midway; keep the first frame's so frames stack.
                    size = size or (frame.width, frame.height)
                    frames.append(_av_frame_to_rgb(frame, size))
                if stop is not None and n >= stop:
                    break
        except av.FFmpegError as e:
            raise MediaError(
                f"cannot read {what} '{p}': corrupt or truncated data after {n} frames ({_av_reason(e)})"
            ) from None
    if not frames:
        raise _no_frames_error(p, what, n, start)
    return np.stack(frames), fps / stride


def _av_frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    if (frame.width, frame.height) != size:
        rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
    else:
        rgb = frame.to_ndarray(format="rgb24")
    # rotation is the counter-clockwise angle the display matrix asks for, as ffmpeg's autorotate applies.
    quarter_turns = round(frame.rotation / 90) % 4
    return np.rot90(rgb, quarter_turns) if quarter_turns else rgb


def _read_pillow(
    p: Path, what: str, start: int, stride: int, max_frames: int | None
) -> tuple[np.ndarray, float]:
    try:
        im = Image.open(p)
    except UnidentifiedImageError:
        raise _NotThisFormat("Pillow: unidentified image format") from None
    except (OSError, Image.DecompressionBombError) as e:
        raise MediaError(f"cannot read {what} '{p}': {e}") from None
    with im:
        try:
            return _decode_pillow(im, start, stride, max_frames, p, what)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            if isinstance(e, MediaError):
                raise
            raise MediaError(f"cannot read {what} '{p}': corrupt or truncated image ({e})") from None


def _decode_pillow(
    im: Image.Image, start: int, stride: int, max_frames: int | None, p: Path, what: str
) -> tuple[np.ndarray, float]:
    transpose = _EXIF_TRANSPOSE.get(im.getexif().get(_EXIF_ORIENTATION, 1))
    n_images = getattr(im, "n_frames", 1)
    if n_images == 1 and "duration" not in im.info:
        if start > 0:
            raise _no_frames_error(p, what, 1, start)
        return _pil_to_rgb(im, transpose)[None], DEFAULT_FPS
    images: list[np.ndarray] = []
    delays: list[int] = []
    for k in range(n_images):
        im.seek(k)  # frames may be composited onto earlier ones, so every frame is visited in order
        images.append(_pil_to_rgb(im, transpose))
        delays.append(int(im.info.get("duration") or 0))
    comment = _GIF_COMMENT.search(im.info.get("comment", b"") or b"")
    base_ms, repeats = _constant_rate(delays, int(comment.group(1)) if comment else None)
    timeline = [img for img, r in zip(images, repeats) for _ in range(r)]
    wanted, _ = _frame_plan(start, stride, max_frames)
    picked = [img for i, img in enumerate(timeline) if wanted(i)]
    if not picked:
        raise _no_frames_error(p, what, len(timeline), start)
    return np.stack(picked), 1000.0 / base_ms / stride


def _constant_rate(delays_ms: list[int], base_ms: int | None) -> tuple[int, list[int]]:
    """Map per-frame delays to (frame duration, repeat count per frame) at a constant rate."""
    # Browsers show GIF delays of 0-10 ms as 100 ms; follow them so playback speed matches.
    delays = [d if d > 10 else 100 for d in delays_ms]
    if base_ms is None or base_ms <= 0:
        base_ms = reduce(math.gcd, delays)
        # Delays that are not near-multiples of a common step (70 ms, 80 ms) would need a huge rate to
        # represent exactly; then the shortest delay is the frame duration and others are rounded.
        if 2 * base_ms < min(delays):
            base_ms = min(delays)
    return base_ms, [max(1, round(d / base_ms)) for d in delays]


def _pil_to_rgb(im: Image.Image, transpose: Image.Transpose | None) -> np.ndarray:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: Pillow's convert("RGB") clips at 255 instead of scaling.
        grey = np.asarray(im, dtype=np.float64) / 257.0
        rgb_im = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert("RGB")
    elif im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        rgb_im = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb_im.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb_im = im.convert("RGB")
    if transpose is not None:
        rgb_im = rgb_im.transpose(transpose)
    return np.asarray(rgb_im, dtype=np.uint8).copy()


# ----------------------------------------------------------------------------------------------- writing


def write_video(
    path: PathLike,
    frames: Any,
    fps: float | Fraction | None = None,
    *,
    crf: int | None = None,
    odd_size: Literal["crop", "error"] = "crop",
) -> Path:
    """Write frames to ``path`` atomically, the format chosen by its extension; returns the path.

    ``frames`` may be: uint8 ``(F, H, W, 3)`` numpy array or torch tensor; a list of uint8
    ``(H, W, 3)`` arrays or PIL images; a float torch tensor in ``[-1, 1]`` laid out ``(C, F, H, W)`` or
    ``(1, C, F, H, W)``; or a :class:`VideoClip` (whose fps is used when ``fps`` is None).
    ``crf`` is the constant-rate quality for mp4/mov/mkv (H.264, 0-51, default 18) and webm
    (VP9, 0-63, default 24); lower is better. ``odd_size`` is what to do when H.264 gets an odd
    width/height: ``"crop"`` the last row/column (with a warning) or raise.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in _WRITE_EXTS:
        raise ValueError(
            f"cannot write '{p}': unsupported extension {ext!r}; use one of {', '.join(_WRITE_EXTS)}"
        )
    if fps is None:
        fps = frames.fps if isinstance(frames, VideoClip) else DEFAULT_FPS
    rate = _as_rate(fps)
    arr = _as_frames(frames)
    if ext in _STILL_WRITE:
        if arr.shape[0] != 1:
            raise ValueError(
                f"cannot write {arr.shape[0]} frames to '{p}': {ext} holds one image; "
                "use .mp4/.webm/.gif or write the frames one by one"
            )
        _write_still(p, arr[0], _STILL_WRITE[ext], quality=95)
        return p
    if ext == ".gif":
        with _atomic_path(p) as tmp:
            _write_gif(tmp, arr, rate)
        return p
    fmt, codec, default_crf = _AV_WRITE[ext]
    lo, hi = _CRF_RANGE[codec]
    crf = default_crf if crf is None else _int_arg(f"crf for {ext}", crf, lo, hi)
    if codec == "libx264" and (arr.shape[1] % 2 or arr.shape[2] % 2):
        h, w = arr.shape[1:3]
        if odd_size == "error":
            raise ValueError(
                f"cannot write '{p}': H.264 (yuv420p) needs an even width and height, got {w}x{h}; "
                "resize the frames or pass odd_size='crop'"
            )
        if odd_size != "crop":
            raise ValueError(f"odd_size must be 'crop' or 'error', got {odd_size!r}")
        warnings.warn(
            f"'{p}': H.264 needs even sizes, cropping {w}x{h} to {w - w % 2}x{h - h % 2}", stacklevel=2
        )
        arr = arr[:, : h - h % 2, : w - w % 2]
    with _atomic_path(p) as tmp:
        try:
            _write_av(tmp, arr, rate, fmt, codec, crf)
        except av.codec.codec.UnknownCodecError:
            raise MediaError(
                f"cannot write video '{p}': this PyAV build has no {codec} encoder; write .gif instead"
            ) from None
        except av.FFmpegError as e:
            raise MediaError(f"cannot write video '{p}': {_av_reason(e)}") from None
    return p


def write_image(path: PathLike, image: Any, *, quality: int = 95) -> Path:
    """Write one image atomically (format from the extension); returns the path.

    ``image`` is uint8 ``(H, W, 3)``, a float torch tensor in ``[-1, 1]`` laid out ``(C, H, W)``, or
    anything :func:`write_video` accepts holding exactly one frame. ``quality`` applies to JPEG/WebP.
    """
    if isinstance(image, np.ndarray | torch.Tensor) and image.ndim == 3:
        if image.dtype in (np.uint8, torch.uint8):
            image = image[None]  # (H, W, 3) -> (1, H, W, 3)
        elif isinstance(image, torch.Tensor) and image.is_floating_point():
            image = image.unsqueeze(1)  # (C, H, W) -> (C, 1, H, W)
    quality = _int_arg("quality", quality, 1, 100)
    arr = _as_frames(image)
    if arr.shape[0] != 1:
        raise ValueError(f"write_image expects one image, got {arr.shape[0]} frames")
    p = Path(path)
    ext = p.suffix.lower()
    if ext in _STILL_WRITE:
        _write_still(p, arr[0], _STILL_WRITE[ext], quality=quality)
        return p
    return write_video(p, arr)


def _write_still(p: Path, rgb: np.ndarray, fmt: str, quality: int) -> None:
    kwargs: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "JPEG":
        kwargs["subsampling"] = 0  # full-resolution colour: 4:2:0 smears the sharp coloured edges of renders
    with _atomic_path(p) as tmp:
        Image.fromarray(rgb).save(tmp, format=fmt, **kwargs)


def _as_rate(fps: float | Fraction) -> Fraction:
    try:
        rate = fps if isinstance(fps, Fraction) else Fraction(float(fps))
    except (TypeError, ValueError, OverflowError):
        rate = None
    if rate is None or rate <= 0 or isinstance(fps, bool):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    # 1001 keeps NTSC rates such as 30000/1001 exact.
    return rate.limit_denominator(1001)


def _video_frame(rgb: np.ndarray) -> av.VideoFrame:
    """RGB -> BT.709 limited-range yuv420p frame (the colourspace the stream is tagged with)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")


def _write_av(tmp: Path, frames: np.ndarray, rate: Fraction, fmt: str, codec: str, crf: int) -> None:
    # faststart puts the index first so browsers can start playing before the download ends.
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    with av.open(str(tmp), "w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        cc = stream.codec_context
        cc.color_range = av.video.reformatter.ColorRange.MPEG
        cc.color_primaries = av.video.reformatter.ColorPrimaries.BT709
        cc.color_trc = av.video.reformatter.ColorTrc.BT709
        cc.colorspace = 1  # AVCOL_SPC_BT709
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
        else:
            stream.options = {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
        for i, rgb in enumerate(frames):
            frame = _video_frame(rgb)
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_gif(tmp: Path, frames: np.ndarray, rate: Fraction) -> None:
    delay_cs = max(2, round(100 / rate))  # GIF delays are in 1/100 s; browsers slow down anything below 2
    if 100 / rate < 2:
        warnings.warn(
            f"GIF cannot play faster than 50 fps; writing {float(rate):g} fps as 50 fps", stacklevel=3
        )
    images = [_quantize(rgb) for rgb in frames]
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=delay_cs * 10,
        loop=0,
        comment=f"kinema frame_delay_ms={delay_cs * 10}",
    )


def _quantize(rgb: np.ndarray) -> Image.Image:
    """One adaptive 256-colour palette per frame: median cut, no dithering (dither noise flickers)."""
    # Median cut over every pixel of a large frame is slow (~0.1 s at 512x512); a palette built from a
    # regular ~16k-pixel sample is 4x faster and within a few tenths of a dB.
    step = max(1, math.ceil(math.sqrt(rgb.shape[0] * rgb.shape[1] / _GIF_PALETTE_SAMPLE)))
    sample = Image.fromarray(np.ascontiguousarray(rgb[::step, ::step]))
    palette = sample.quantize(256, method=Image.Quantize.MEDIANCUT)
    return Image.fromarray(rgb).quantize(palette=palette, dither=Image.Dither.NONE)


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a hidden temp path next to ``path``; rename it over ``path`` on success, delete it on error."""
    if path.is_dir():
        raise ValueError(f"cannot write '{path}': it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # Created here rather than by mkstemp so it gets the usual umask permissions, not 0600.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------------- conversion


def _as_frames(frames: Any) -> np.ndarray:
    """Normalise any accepted frames input to a uint8 (F, H, W, 3) numpy array."""
    if isinstance(frames, VideoClip):
        frames = frames.frames
    if isinstance(frames, torch.Tensor):
        if frames.is_floating_point():
            if frames.ndim == 5 and frames.shape[0] != 1:
                raise ValueError(
                    f"got a batch of {frames.shape[0]} videos {tuple(frames.shape)}; write them one at a time"
                )
            out = tensor_to_frames(frames)
            return out[0] if out.ndim == 5 else out
        if frames.dtype != torch.uint8:
            raise ValueError(
                f"expected uint8 frames (F, H, W, 3) or a float tensor in [-1, 1] (C, F, H, W), got {frames.dtype}"
            )
        frames = frames.detach().cpu().numpy()
    elif isinstance(frames, list | tuple):
        if not frames:
            raise ValueError("got zero frames")
        frames = np.stack([_one_frame(f, i) for i, f in enumerate(frames)])
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"expected frames as a uint8 (F, H, W, 3) array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 frames laid out (F, H, W, 3), got dtype {frames.dtype}; float data must be a "
            "torch tensor in [-1, 1] laid out (C, F, H, W) (see tensor_to_frames)"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames laid out (F, H, W, 3), got shape {frames.shape}")
    if 0 in frames.shape:
        raise ValueError(f"got an empty frames array of shape {frames.shape}")
    return np.ascontiguousarray(frames)


def _one_frame(f: Any, i: int) -> np.ndarray:
    if isinstance(f, Image.Image):
        return _pil_to_rgb(f, None)
    a = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"frame {i}: expected uint8 (H, W, 3), got {a.dtype} {a.shape}")
    return a


def frames_to_tensor(
    frames: Any, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 frames -> ``(B, C, F, H, W)`` tensor in ``[-1, 1]`` (``u / 127.5 - 1``).

    ``frames`` is uint8 ``(F, H, W, 3)`` (gives B=1), ``(B, F, H, W, 3)``, a :class:`VideoClip`, a list
    of ``(H, W, 3)`` frames (one video) or a list of ``(F, H, W, 3)`` clips of equal shape (a batch).
    """
    if isinstance(frames, VideoClip):
        frames = frames.frames
    if isinstance(frames, list | tuple):
        if not frames:
            raise ValueError("got zero frames")
        items = [f.frames if isinstance(f, VideoClip) else f for f in frames]
        ndims = {np.ndim(f) for f in items}
        if ndims == {4}:
            shapes = {np.shape(f) for f in items}
            if len(shapes) != 1:
                raise ValueError(f"clips in a batch must share one shape, got {sorted(shapes)}")
            arr = np.stack([_as_frames(f) for f in items])
        else:
            arr = _as_frames(items)[None]
    else:
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().numpy()
        if isinstance(frames, np.ndarray) and frames.ndim == 5:
            arr = np.stack([_as_frames(f) for f in frames])
        else:
            arr = _as_frames(frames)[None]
    x = torch.from_numpy(arr).permute(0, 4, 1, 2, 3).to(device=device, dtype=torch.float32)
    return (x / 127.5 - 1.0).to(dtype).contiguous()


def tensor_to_frames(tensor: torch.Tensor) -> np.ndarray:
    """``(B, C, F, H, W)`` or ``(C, F, H, W)`` tensor in ``[-1, 1]`` -> uint8 ``(B, F, H, W, 3)`` or ``(F, H, W, 3)``.

    Values are clamped to ``[-1, 1]``, mapped by ``(x + 1) * 127.5`` and rounded to nearest (ties to even);
    NaN raises ``ValueError``.
    """
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise ValueError(f"expected a float tensor, got {getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.ndim not in (4, 5) or tensor.shape[-4] != 3:
        raise ValueError(
            f"expected a tensor laid out (B, C, F, H, W) or (C, F, H, W) with C=3, got {tuple(tensor.shape)}"
        )
    if tensor.numel() == 0:
        raise ValueError(f"got an empty tensor of shape {tuple(tensor.shape)}")
    x = tensor.detach().to("cpu", torch.float32)
    if torch.isnan(x).any():
        raise ValueError("tensor contains NaN values (did sampling diverge?)")
    u8 = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    u8 = u8.movedim(-4, -1)  # channels last
    return np.ascontiguousarray(u8.numpy())


# -------------------------------------------------------------------------------------------- resizing


def resize_frames(frames: Any, height: int, width: int) -> Any:
    """Resize to ``height`` x ``width``: bilinear, antialiased when shrinking (a triangle filter widened to
    the scale factor, as torchvision's ``Resize``; within 1 of Pillow's ``BILINEAR``).

    Accepts uint8 frames ``(F, H, W, 3)`` or one image ``(H, W, 3)`` (returns a uint8 numpy array of the
    same layout, rounded), or float tensors laid out ``(C, F, H, W)`` / ``(B, C, F, H, W)`` (returns a
    tensor of the input dtype and device; values are not clamped, bilinear weights cannot overshoot).
    """
    _check_size(height, width)
    return _map_frames(frames, lambda x: _resize(x, height, width))


def resize_and_center_crop(frames: Any, height: int, width: int) -> Any:
    """Crop the largest centred region with the aspect ratio of ``height`` x ``width``, then resize to it.

    The whole target is covered by picture (no padding); what falls outside the aspect ratio is cut off
    equally on both sides. Accepts the same inputs as :func:`resize_frames`.
    """
    _check_size(height, width)

    def crop_resize(x: torch.Tensor) -> torch.Tensor:
        top, left, ch, cw = _center_crop_box(x.shape[-2], x.shape[-1], height, width)
        return _resize(x[..., top : top + ch, left : left + cw], height, width)

    return _map_frames(frames, crop_resize)


def _check_size(height: int, width: int) -> None:
    _int_arg("height", height, 1)
    _int_arg("width", width, 1)


def _center_crop_box(h: int, w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of the largest centred h x w crop with aspect width/height."""
    if w * height > h * width:  # source is wider than the target: cut the sides
        ch, cw = h, min(w, max(1, round(h * width / height)))
    else:
        ch, cw = min(h, max(1, round(w * height / width))), w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, h, w) float32 -> (N, C, height, width)."""
    if tuple(x.shape[-2:]) == (height, width):
        return x.clone()  # never hand back a view of the caller's tensor
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def _map_frames(frames: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to (N, C, H, W) float32 batches of frames and restore the input's layout and dtype."""
    if isinstance(frames, torch.Tensor) and frames.is_floating_point():
        if frames.ndim not in (4, 5) or frames.shape[-4] != 3:
            raise ValueError(
                f"expected a float tensor laid out (C, F, H, W) or (B, C, F, H, W) with C=3, "
                f"got {tuple(frames.shape)}"
            )
        lead = frames.shape[:-4]
        c, f, h, w = frames.shape[-4:]
        x = frames.movedim(-4, -3).reshape(-1, c, h, w)  # (..., F, C, H, W) -> (N, C, H, W)
        y = fn(x.float()).to(frames.dtype)
        return y.reshape(*lead, f, c, *y.shape[-2:]).movedim(-3, -4).contiguous()
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        return _map_frames(frames[None], fn)[0]
    arr = _as_frames(frames)
    chunks = []
    for i in range(0, arr.shape[0], _RESIZE_CHUNK):
        x = torch.from_numpy(arr[i : i + _RESIZE_CHUNK]).permute(0, 3, 1, 2).float()
        y = fn(x).round_().clamp_(0, 255).to(torch.uint8)
        chunks.append(y.permute(0, 2, 3, 1).numpy())
    return np.ascontiguousarray(np.concatenate(chunks))


# ------------------------------------------------------------------------------------------ sidecar JSON


def sidecar_path(media_path: PathLike) -> Path:
    """Where the JSON sidecar of a media file goes: ``out/clip.mp4`` -> ``out/clip.json``."""
    return Path(media_path).with_suffix(".json")


def save_sidecar_json(path: PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented UTF-8 JSON to ``path`` atomically; returns the path.

    Paths, numpy/torch scalars and arrays, dtypes, enums, fractions and dataclasses are converted;
    NaN/inf and other unserialisable values raise before anything is written.
    """
    if not isinstance(data, dict):
        raise ValueError(f"expected a dict, got {type(data).__name__}")
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    p = Path(path)
    with _atomic_path(p) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p


def _json_default(o: Any) -> Any:
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, np.generic | np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.detach().cpu().tolist()
    if isinstance(o, torch.dtype | torch.device):
        return str(o)
    if isinstance(o, enum.Enum):
        return o.value
    if isinstance(o, Fraction):
        return float(o)
    if isinstance(o, set | frozenset):
        return sorted(o, key=repr)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"cannot store a {type(o).__name__} in JSON: {o!r:.80}")
