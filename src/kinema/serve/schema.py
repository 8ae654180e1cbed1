"""The request schema of ``POST /v1/generations``, derived from :class:`kinema.config.GenerationConfig`.

One source of truth: every ``GenerationConfig`` field is a request field (same name, type, default and
help text) except those the server decides (``out``, ``free_text_encoder``); ``format`` picks the
output container instead of ``out``. File fields (``image``, ``video``, ``lora``, ...) are multipart file
parts, or in JSON a ``data:`` URL or ``job:<id>`` (the result of a finished job). Server paths are never
accepted, so a client can make the server read only what it uploaded.

Errors are :class:`RequestError` (HTTP status + the field they concern); their JSON shape is FastAPI's
``{"detail": [{"loc": ["body", field], "msg": ..., "type": ...}]}`` so a client parses one format.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import mimetypes
import re
import typing
from typing import Any

from kinema.config import GenerationConfig

# Decided by the server, not the client: where the result goes; freeing the text encoder of a
# pipeline that is cached for the next job would break that job.
SERVER_FIELDS = ("out", "free_text_encoder")
# Fields that name an input file (multipart file part, data: URL or job:<id>).
MEDIA_FIELDS = ("image", "end_image", "video", "mask", "control_video", "reference_image")
# Fields that may also be a file: trajectory (or inline JSON), camera (or a preset spec), lora (or a name).
FILE_FIELDS = (*MEDIA_FIELDS, "trajectory", "camera", "lora")
OUTPUT_FORMATS = ("mp4", "gif", "webm", "png")

_VIDEO = (".mp4", ".mov", ".mkv", ".webm", ".gif", ".avi")
_IMAGE = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ALLOWED_SUFFIXES: dict[str, tuple[str, ...]] = {
    **{name: _IMAGE + _VIDEO for name in MEDIA_FIELDS},
    "trajectory": (".json",),
    "camera": (".txt",),
    "lora": (".safetensors",),
}
_MIME_SUFFIX = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
    "application/json": ".json",
    "text/plain": ".txt",
    "application/octet-stream": ".safetensors",
}
# Names the pipeline uses in its messages -> request field names.
_ALIASES = {
    "mask_video": "mask",
    "ref_image": "reference_image",
    "num_frames": "frames",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "output_type": "format",
    "pose": "camera",
    "track": "trajectory",
    "tracks": "trajectory",
}


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and the ``field`` it concerns (None: the whole body)."""

    def __init__(self, message: str, field: str | None = None, status: int = 422, kind: str = "value_error"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.kind = kind

    def detail(self) -> list[dict[str, Any]]:
        loc = ["body", self.field] if self.field else ["body"]
        return [{"loc": loc, "msg": self.message, "type": self.kind}]


class QueueFull(RequestError):
    def __init__(self, waiting: int, limit: int):
        super().__init__(
            f"queue full: {waiting} jobs are waiting (the server's --max-queue is {limit}); retry later",
            status=429,
            kind="queue_full",
        )


def field_names() -> tuple[str, ...]:
    return tuple(request_model().model_fields)


@functools.cache
def request_model() -> type:
    """The pydantic model ``GenerationRequest`` built from GenerationConfig's fields (cached)."""
    from pydantic import ConfigDict, Field, create_model

    hints = typing.get_type_hints(GenerationConfig)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(GenerationConfig):
        if f.name in SERVER_FIELDS:
            continue
        hint = hints[f.name]
        help_text = f.metadata.get("help", "")
        extra: dict[str, Any] = {}
        if "choices" in f.metadata:
            extra["json_schema_extra"] = {"enum": list(f.metadata["choices"])}
        if f.name == "model":
            help_text = "model name from GET /v1/models (default: the server's default model)"
        elif f.name == "trajectory":
            hint = str | list | dict | None
            help_text += (
                "; JSON: the tracks themselves, a data: URL or job:<id>; multipart: a .json file part"
            )
        elif f.name == "camera":
            help_text += "; a pose file: multipart .txt file part or a data: URL"
        elif f.name == "lora":
            help_text = "LoRA: a name from GET /v1/models, or a .safetensors file part / data: URL"
        elif f.name in MEDIA_FIELDS:
            help_text += "; multipart: a file part; JSON: a data: URL or job:<id> (a finished job's result)"
        fields[f.name] = (hint, Field(default=f.default, description=help_text, **extra))
    fields["format"] = (
        str,
        Field("mp4", description="output container", json_schema_extra={"enum": list(OUTPUT_FORMATS)}),
    )
    return create_model(
        "GenerationRequest",
        __config__=ConfigDict(extra="forbid", title="GenerationRequest"),
        __doc__="A generation request: the fields of kinema.config.GenerationConfig (docs/serve.md).",
        **fields,
    )


def validate_request(params: dict[str, Any]) -> Any:
    """``GenerationRequest`` from a dict; pydantic errors become a RequestError naming the field."""
    from pydantic import ValidationError

    if not isinstance(params, dict):
        raise RequestError("the request body must be a JSON object of GenerationRequest fields")
    try:
        return request_model().model_validate(params)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err.get("loc", ())]
        name = loc[0] if loc else None
        msg = err.get("msg", str(e))
        if err.get("type") == "extra_forbidden":
            msg = f"unknown field {name!r}; fields: {', '.join(field_names())}"
        else:
            msg = f"{name}: {msg}" if name else msg
        raise RequestError(msg, field=name, kind=err.get("type", "value_error")) from None


def field_of(message: str) -> str | None:
    """The request field a ValueError message is about (GenerationConfig and pipeline messages)."""
    names = set(field_names())
    m = re.match(r"\s*--([a-z][a-z0-9-]*)", message)
    if m:
        name = m.group(1).replace("-", "_")
        name = _ALIASES.get(name, name)
        if name in names:
            return name
    for token in re.findall(r"[a-z][a-z0-9_]*", message.lower()):
        token = _ALIASES.get(token, token)
        if token in names:
            return token
    return None


def parse_data_url(value: str, field: str) -> tuple[bytes, str]:
    """``data:[mime][;base64],payload`` -> (bytes, suffix guessed from the mime type)."""
    head, sep, payload = value.partition(",")
    if not sep or not head.startswith("data:"):
        raise RequestError(f"{field}: not a data: URL", field=field)
    meta = head[5:].split(";")
    mime = meta[0].strip().lower() or "text/plain"
    try:
        if "base64" in (m.strip().lower() for m in meta[1:]):
            data = base64.b64decode(payload, validate=True)
        else:
            from urllib.parse import unquote_to_bytes

            data = unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field}: the data: URL payload is not valid base64", field=field) from None
    suffix = _MIME_SUFFIX.get(mime) or mimetypes.guess_extension(mime) or ""
    if field == "lora" and mime in ("application/octet-stream", ""):
        suffix = ".safetensors"
    return data, suffix


def check_suffix(field: str, suffix: str, filename: str | None = None) -> str:
    suffix = suffix.lower()
    allowed = ALLOWED_SUFFIXES[field]
    if suffix not in allowed:
        what = f"file {filename!r}" if filename else f"type {suffix or '(none)'!r}"
        raise RequestError(f"{field}: unsupported {what}; send one of {', '.join(allowed)}", field=field)
    return suffix
