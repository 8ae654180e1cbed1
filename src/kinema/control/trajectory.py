"""Trajectory control: point tracks -> RGB control video of white Gaussian blobs on black.

EasyAnimate V5.1's Control model takes trajectory control as an ordinary control video that it
VAE-encodes like a Canny or depth video. Each frame stamps, for every tracked object, an isotropic
Gaussian blob centred on the object's point (reference: a 200x200 kernel with sigma 40 cut by a circle,
resized to a box of half-width ``int(50 * sqrt(H * W / (1280 * 720)))`` px), objects are merged with a
per-pixel maximum, and the grey value is copied to R, G and B.

Coordinates: ``x`` is the column and ``y`` the row, in pixels of the output video, with pixel ``(i, j)``
centred at ``x = i, y = j`` (so the image spans ``-0.5 .. W - 0.5``). Normalised coordinates map
``0 .. 1`` onto that full span: ``x_px = x_n * W - 0.5``. Points outside the image are skipped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Reference geometry: a 200 px kernel with sigma 40 px is resized to the blob box, so sigma = 0.4 * radius.
REFERENCE_SIGMA_PER_RADIUS = 40.0 / 100.0
REFERENCE_RADIUS_AT_720P = 50.0
MIN_RADIUS = 2  # below this the reference draws nothing (its box must exceed 3 px); we keep a tiny blob


class TrackError(ValueError):
    """A track file or track data is malformed; the message names the source and the problem."""


@dataclass
class Track:
    """One tracked object: key points ``(frame, x, y)``.

    ``normalized``: x/y are fractions of width/height (0..1) instead of pixels.
    ``canvas_size``: ``(height, width)`` of the canvas the pixel coordinates were drawn on; when set,
    pixel coordinates are rescaled to the rendered video's size. ``None`` means they already are in
    pixels of the output video.
    """

    points: list[tuple[float, float, float]]
    normalized: bool = False
    name: str | None = None
    canvas_size: tuple[int, int] | None = None

    def pixel_positions(
        self, num_frames: int, height: int, width: int, method: str = "catmull_rom"
    ) -> np.ndarray:
        """Per-frame ``(x, y)`` in pixels of a ``height x width`` video, shape ``(num_frames, 2)``.

        Frames before the first or after the last key frame are ``NaN`` (object absent).
        """
        xy = interpolate_track(self.points, num_frames, method=method)
        if self.normalized:
            xy[:, 0] = xy[:, 0] * width - 0.5
            xy[:, 1] = xy[:, 1] * height - 0.5
        elif self.canvas_size is not None:
            canvas_h, canvas_w = self.canvas_size
            # Scale pixel centres, not edges, so the centre of the canvas stays the centre of the video.
            xy[:, 0] = (xy[:, 0] + 0.5) * (width / canvas_w) - 0.5
            xy[:, 1] = (xy[:, 1] + 0.5) * (height / canvas_h) - 0.5
        return xy


def interpolate_track(
    points: Sequence[Sequence[float]], num_frames: int, method: str = "catmull_rom"
) -> np.ndarray:
    """Interpolate key points ``(frame, x, y)`` to every integer frame in ``0 .. num_frames - 1``.

    ``method="catmull_rom"``: cubic Hermite spline with Catmull-Rom tangents computed over the frame
    spacing (non-uniform keys allowed); it passes exactly through every key point and reduces to a
    straight line for two keys. ``method="linear"``: piecewise linear. Frames outside the key range are
    ``NaN``. Returns float64 ``(num_frames, 2)``.
    """
    if method not in ("catmull_rom", "linear"):
        raise ValueError(f"method must be 'catmull_rom' or 'linear', got {method!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    keys = np.asarray(points, dtype=np.float64)
    if keys.ndim != 2 or keys.shape[1] != 3 or len(keys) == 0:
        raise ValueError(f"points must be a non-empty sequence of (frame, x, y), got shape {keys.shape}")
    if not np.isfinite(keys).all():
        raise ValueError("points contain NaN or infinite values")
    keys = keys[np.argsort(keys[:, 0], kind="stable")]
    t, p = keys[:, 0], keys[:, 1:]
    if np.any(np.diff(t) == 0):
        dup = t[1:][np.diff(t) == 0][0]
        raise ValueError(f"two key points share frame {dup:g}")

    out = np.full((num_frames, 2), np.nan)
    frames = np.arange(num_frames, dtype=np.float64)
    inside = (frames >= t[0]) & (frames <= t[-1])
    if len(t) == 1:
        out[inside] = p[0]
        return out
    f = frames[inside]
    seg = np.clip(np.searchsorted(t, f, side="right") - 1, 0, len(t) - 2)
    t0, t1 = t[seg], t[seg + 1]
    p0, p1 = p[seg], p[seg + 1]
    h = (t1 - t0)[:, None]
    u = ((f - t0) / (t1 - t0))[:, None]
    if method == "linear":
        out[inside] = p0 + (p1 - p0) * u
        return out
    # Catmull-Rom tangents (dp/dt): central differences inside, one-sided at the ends.
    tangents = np.empty_like(p)
    tangents[1:-1] = (p[2:] - p[:-2]) / (t[2:] - t[:-2])[:, None]
    tangents[0] = (p[1] - p[0]) / (t[1] - t[0])
    tangents[-1] = (p[-1] - p[-2]) / (t[-1] - t[-2])
    m0, m1 = tangents[seg] * h, tangents[seg + 1] * h
    u2, u3 = u * u, u * u * u
    out[inside] = (
        (2 * u3 - 3 * u2 + 1) * p0 + (u3 - 2 * u2 + u) * m0 + (-2 * u3 + 3 * u2) * p1 + (u3 - u2) * m1
    )
    return out


def blob_params(height: int, width: int) -> tuple[int, float]:
    """Reference blob ``(radius_px, sigma_px)`` for a ``height x width`` video.

    radius = ``int(50 * sqrt(H * W / (1280 * 720)))`` (at least 2), sigma = 0.4 * radius.
    """
    radius = max(MIN_RADIUS, int(REFERENCE_RADIUS_AT_720P * math.sqrt(height * width / (1280 * 720))))
    return radius, REFERENCE_SIGMA_PER_RADIUS * radius


def render_trajectory_video(
    tracks: Sequence[Track],
    num_frames: int,
    height: int,
    width: int,
    sigma: float | None = None,
    radius: float | None = None,
    method: str = "catmull_rom",
) -> np.ndarray:
    """Render tracks as a uint8 ``(num_frames, height, width, 3)`` video: black, white Gaussian blobs.

    Each visible point adds ``255 * exp(-d^2 / (2 sigma^2))`` for pixels within ``radius`` of it (the
    circle mask), objects combine with a maximum. Defaults follow the reference (:func:`blob_params`);
    giving only ``sigma`` sets ``radius = 2.5 * sigma``, giving only ``radius`` sets ``sigma = 0.4 * radius``.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"num_frames, height and width must be >= 1, got {num_frames}, {height}, {width}")
    if sigma is None and radius is None:
        radius, sigma = blob_params(height, width)
    elif sigma is None:
        sigma = REFERENCE_SIGMA_PER_RADIUS * float(radius)
    elif radius is None:
        radius = float(sigma) / REFERENCE_SIGMA_PER_RADIUS
    if not (sigma > 0 and radius > 0):
        raise ValueError(f"sigma and radius must be positive, got sigma={sigma}, radius={radius}")

    video = np.zeros((num_frames, height, width), dtype=np.float32)
    reach = int(math.ceil(radius))
    for track in tracks:
        xy = track.pixel_positions(num_frames, height, width, method=method)
        for frame in range(num_frames):
            x, y = xy[frame]
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                continue  # outside the frame: skipped, as documented
            x0, x1 = max(0, int(math.floor(x)) - reach), min(width, int(math.ceil(x)) + reach + 1)
            y0, y1 = max(0, int(math.floor(y)) - reach), min(height, int(math.ceil(y)) + reach + 1)
            dx = np.arange(x0, x1, dtype=np.float32) - np.float32(x)
            dy = np.arange(y0, y1, dtype=np.float32) - np.float32(y)
            d2 = dy[:, None] ** 2 + dx[None, :] ** 2
            blob = np.exp(-d2 / np.float32(2 * sigma * sigma)) * (d2 <= np.float32(radius * radius))
            window = video[frame, y0:y1, x0:x1]
            np.maximum(window, blob, out=window)
    grey = np.rint(video * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------------
# JSON loading


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_point(item: Any, index: int, where: str) -> tuple[float, float, float]:
    """One point: ``[frame, x, y]``, ``{"frame", "x", "y"}`` or ``{"x", "y"}`` (frame = list index)."""
    if isinstance(item, dict):
        missing = [k for k in ("x", "y") if k not in item]
        if missing:
            raise TrackError(f"{where}, point {index}: missing key(s) {missing} in {item!r}")
        frame = item.get("frame", item.get("f", index))
        values = (frame, item["x"], item["y"])
    elif isinstance(item, (list, tuple)):
        if len(item) != 3:
            raise TrackError(
                f"{where}, point {index}: expected [frame, x, y], got {len(item)} values {item!r}"
            )
        values = tuple(item)
    else:
        raise TrackError(f"{where}, point {index}: expected [frame, x, y] or {{'x':..,'y':..}}, got {item!r}")
    if not all(_is_number(v) for v in values):
        raise TrackError(f"{where}, point {index}: frame, x and y must be finite numbers, got {item!r}")
    frame, x, y = (float(v) for v in values)
    if frame < 0:
        raise TrackError(f"{where}, point {index}: frame must be >= 0, got {frame:g}")
    return frame, x, y


def _auto_normalized(points: list[tuple[float, float, float]]) -> bool:
    # Normalised iff every x and y lies in [0, 1] and at least one is fractional: integer pixel
    # tracks hugging the top-left corner (all 0/1) therefore stay pixels.
    coords = [c for _, x, y in points for c in (x, y)]
    return all(0.0 <= c <= 1.0 for c in coords) and any(c != int(c) for c in coords)


def _parse_track(
    data: Any, index: int, source: str, defaults: dict[str, Any], canvas: tuple[int, int] | None
) -> Track:
    where = f"{source}: track {index}"
    name = None
    normalized = defaults.get("normalized")
    if isinstance(data, dict):
        if "points" not in data:
            raise TrackError(f"{where}: object has no 'points' list (keys: {sorted(data)})")
        name = data.get("name")
        if "normalized" in data:
            normalized = data["normalized"]
        if "canvas_size" in data:
            size = data["canvas_size"]
            if not (
                isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
            ):
                raise TrackError(
                    f"{where}: 'canvas_size' must be [height, width] positive integers, got {size!r}"
                )
            canvas = (size[0], size[1])
        raw = data["points"]
    else:
        raw = data
    if not isinstance(raw, list) or not raw:
        raise TrackError(f"{where}: points must be a non-empty list, got {type(raw).__name__}")
    if normalized is not None and not isinstance(normalized, bool):
        raise TrackError(f"{where}: 'normalized' must be true or false, got {normalized!r}")
    points = [_parse_point(item, i, where) for i, item in enumerate(raw)]
    frames = [p[0] for p in points]
    if len(set(frames)) != len(frames):
        dup = next(f for f in frames if frames.count(f) > 1)
        raise TrackError(f"{where}: two points share frame {dup:g}")
    if normalized is None:
        normalized = _auto_normalized(points)
    return Track(points=points, normalized=normalized, name=name, canvas_size=None if normalized else canvas)


def _looks_like_point(item: Any) -> bool:
    if isinstance(item, dict):
        return "x" in item
    return isinstance(item, (list, tuple)) and len(item) == 3 and all(_is_number(v) for v in item)


def parse_tracks(data: Any, source: str = "<tracks>") -> list[Track]:
    """Tracks from already-decoded JSON data (see :func:`load_tracks` for the accepted layouts)."""
    defaults: dict[str, Any] = {}
    canvas = None
    if isinstance(data, dict):
        if "tracks" not in data:
            raise TrackError(f"{source}: top-level object needs a 'tracks' list (keys: {sorted(data)})")
        if "normalized" in data:
            defaults["normalized"] = data["normalized"]
        if ("width" in data) != ("height" in data):
            raise TrackError(f"{source}: give both 'width' and 'height' of the canvas, or neither")
        if "width" in data:
            w, h = data["width"], data["height"]
            if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
                raise TrackError(
                    f"{source}: canvas 'width'/'height' must be positive integers, got {w!r}x{h!r}"
                )
            canvas = (h, w)
        items = data["tracks"]
    else:
        items = data
    if not isinstance(items, list) or not items:
        raise TrackError(
            f"{source}: expected a non-empty list of tracks or points, got {type(items).__name__}"
        )
    # A flat list of points is a single track; otherwise each item is one track.
    if _looks_like_point(items[0]):
        items = [items]
    return [_parse_track(item, i, source, defaults, canvas) for i, item in enumerate(items)]


def load_tracks(path_or_json: str | os.PathLike | list | dict) -> list[Track]:
    """Load point tracks from a JSON file, a JSON string or decoded JSON data.

    Accepted layouts:

    * reference (EasyAnimate / KJNodes spline editor): ``[{"x": 10, "y": 20}, ...]``, one point per
      frame (frame = list index); a list of such lists is several objects;
    * key points: ``[[frame, x, y], ...]`` (or a list of those for several objects), interpolated to
      every frame by :func:`interpolate_track`;
    * an object ``{"tracks": [...], "width": W, "height": H, "normalized": bool}`` whose tracks are lists
      as above or ``{"name": ..., "normalized": bool, "points": [...]}``. ``width``/``height`` name the
      canvas pixel coordinates refer to (rescaled to the output size when rendering).

    Normalisation rule: an explicit ``"normalized"`` (track, else top level) wins; otherwise a track is
    normalised iff all its x and y are within ``[0, 1]`` and at least one is not an integer.
    """
    if isinstance(path_or_json, (list, dict)):
        return parse_tracks(path_or_json)
    if isinstance(path_or_json, os.PathLike) or not str(path_or_json).lstrip().startswith(("[", "{")):
        path = Path(path_or_json)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TrackError(f"{source}: cannot read track file ({exc.strerror or exc})") from exc
    else:
        source, text = "<json string>", str(path_or_json)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrackError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return parse_tracks(data, source)


def save_tracks(path: str | os.PathLike, tracks: Sequence[Track]) -> None:
    """Write tracks in the object layout accepted by :func:`load_tracks` (round-trips exactly)."""
    payload = {
        "tracks": [
            {
                "name": t.name,
                "normalized": t.normalized,
                "points": [list(p) for p in t.points],
                **({"canvas_size": list(t.canvas_size)} if t.canvas_size else {}),
            }
            for t in tracks
        ]
    }
    Path(path).write_text(json.dumps(payload, indent=1), encoding="utf-8")
