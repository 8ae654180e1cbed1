"""Dataset metadata: JSON / JSONL / CSV lists of samples, and probing media files for their size.

Each sample is ``{"file_path": ..., "text": ..., "type": "video" | "image"}`` plus optional ``width``,
``height``, ``num_frames``, ``control_file_path`` (a control video, e.g. depth/canny) and
``camera_file_path`` (a CameraCtrl pose file, one line per source frame). Paths are relative to the
data root unless absolute. This is EasyAnimate's metadata layout (``file_path``/``text``/``type``), so
its JSON files load as they are. Unknown fields are kept in ``Sample.extra``.

Bad *metadata* (unreadable file, a row without ``file_path`` or ``text``) raises :class:`MetadataError`
with the file and row; bad *media* (missing, corrupt) never raises here: :func:`probe_samples` marks it
and the run skips it with a count in the log.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
KNOWN_FIELDS = {
    "file_path",
    "text",
    "type",
    "width",
    "height",
    "num_frames",
    "control_file_path",
    "camera_file_path",
}


class MetadataError(ValueError):
    """The metadata file itself is malformed (not the media it points to)."""


@dataclass
class Sample:
    file_path: str  # as written in the metadata
    text: str
    type: str  # "video" | "image"
    path: Path  # resolved against the data root
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    control_path: Path | None = None
    camera_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.type == "image"


def _resolve(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else root / p


def _optional_int(row: dict[str, Any], key: str, where: str) -> int | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise MetadataError(f"{where}: '{key}' must be an integer, got {value!r}") from None
    if number < 1:
        raise MetadataError(f"{where}: '{key}' must be >= 1, got {value!r}")
    return number


def _sample_from_row(row: Any, root: Path, where: str) -> Sample:
    if not isinstance(row, dict):
        raise MetadataError(f"{where}: each entry must be an object with file_path and text, got {row!r}")
    file_path = row.get("file_path")
    if not isinstance(file_path, str) or not file_path:
        raise MetadataError(f"{where}: missing 'file_path'")
    text = row.get("text", None)
    if text is None:
        raise MetadataError(f"{where}: missing 'text' (use \"\" for an unconditional sample)")
    if not isinstance(text, str):
        raise MetadataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    kind = row.get("type") or ("image" if Path(file_path).suffix.lower() in IMAGE_EXTENSIONS else "video")
    if kind not in ("video", "image"):
        raise MetadataError(f"{where}: 'type' must be 'video' or 'image', got {kind!r}")
    control = row.get("control_file_path") or None
    camera = row.get("camera_file_path") or None
    return Sample(
        file_path=file_path,
        text=text,
        type=kind,
        path=_resolve(root, file_path),
        width=_optional_int(row, "width", where),
        height=_optional_int(row, "height", where),
        num_frames=_optional_int(row, "num_frames", where),
        control_path=_resolve(root, control) if control else None,
        camera_path=_resolve(root, camera) if camera else None,
        extra={k: v for k, v in row.items() if k not in KNOWN_FIELDS},
    )


def load_metadata(path: str | Path, root: str | Path | None = None) -> list[Sample]:
    """Read a ``.json`` (list of objects), ``.jsonl`` (one object per line) or ``.csv`` (header row) file.

    ``root`` defaults to the metadata file's folder.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if not path.is_file():
        raise FileNotFoundError(f"metadata file '{path}' does not exist")
    suffix = path.suffix.lower()
    samples: list[Sample] = []
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MetadataError(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
                samples.append(_sample_from_row(row, root, f"{path}:{line_no}"))
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MetadataError(
                f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg})"
            ) from None
        if not isinstance(rows, list):
            raise MetadataError(f"{path}: expected a JSON list of samples, got {type(rows).__name__}")
        samples = [_sample_from_row(row, root, f"{path}[{i}]") for i, row in enumerate(rows)]
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "file_path" not in reader.fieldnames:
                raise MetadataError(f"{path}: the CSV header must include file_path and text")
            for line_no, row in enumerate(reader, 2):
                samples.append(_sample_from_row(dict(row), root, f"{path}:{line_no}"))
    else:
        raise MetadataError(f"{path}: unknown metadata format '{suffix}'; use .json, .jsonl or .csv")
    if not samples:
        raise MetadataError(f"{path}: no samples")
    return samples


# ---- probing ---------------------------------------------------------------------------------------------


@dataclass
class MediaInfo:
    height: int
    width: int
    num_frames: int


def probe_media(path: Path, is_image: bool) -> MediaInfo:
    """Height, width and frame count from the file header (no full decode for usual videos).

    Raises (``MediaError``/``OSError``/``ValueError``) for missing or unreadable files.
    """
    from kinema.videoio import MediaError

    if not path.is_file():
        raise MediaError(f"'{path}' does not exist")
    if path.stat().st_size == 0:
        raise MediaError(f"'{path}' is empty")
    if is_image:
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
        return MediaInfo(height=height, width=width, num_frames=1)
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"'{path}' has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0)
            if frames <= 0:  # some containers do not store it: count packets (no decoding)
                frames = sum(1 for p in container.demux(stream) if p.size)
    except av.error.FFmpegError as e:
        raise MediaError(f"'{path}' cannot be read: {e}") from e
    if width <= 0 or height <= 0 or frames <= 0:
        raise MediaError(f"'{path}' reports no frames or no size")
    return MediaInfo(height=height, width=width, num_frames=frames)


def probe_samples(samples: list[Sample]) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Fill in missing width/height/num_frames from the files; return (usable samples, skipped).

    ``skipped`` is a list of ``(file_path, reason)`` for missing or unreadable files; they are logged.
    Samples whose metadata already gives width, height (and num_frames for videos) are not opened, but
    a missing file is still detected.
    """
    usable: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for s in samples:
        try:
            complete = s.width and s.height and (s.is_image or s.num_frames)
            if complete:
                if not s.path.is_file():
                    raise FileNotFoundError(f"'{s.path}' does not exist")
            else:
                info = probe_media(s.path, s.is_image)
                s.width, s.height = s.width or info.width, s.height or info.height
                s.num_frames = 1 if s.is_image else (s.num_frames or info.num_frames)
            if s.is_image:
                s.num_frames = 1
            if s.control_path is not None and not s.control_path.is_file():
                raise FileNotFoundError(f"control file '{s.control_path}' does not exist")
            if s.camera_path is not None and not s.camera_path.is_file():
                raise FileNotFoundError(f"camera pose file '{s.camera_path}' does not exist")
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            skipped.append((s.file_path, str(e)))
            continue
        usable.append(s)
    if skipped:
        logger.warning(
            "skipped %d of %d samples with missing or unreadable files (first: %s: %s)",
            len(skipped),
            len(samples),
            *skipped[0],
        )
    return usable, skipped
