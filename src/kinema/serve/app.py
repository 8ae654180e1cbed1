"""The FastAPI app of ``kinema serve``: the REST API (``/v1``), the Gradio UI (``/ui``), OpenAPI (``/docs``).

Endpoints (docs/serve.md has examples):

* ``POST /v1/generations`` - JSON (GenerationRequest) or multipart (fields + file parts) -> 202 + job
* ``GET /v1/generations`` - jobs, newest first (``?status=``, ``?limit=``, ``?offset=``)
* ``GET /v1/generations/{id}`` - status, progress, parameters, result URL
* ``GET /v1/generations/{id}/result`` - the result file
* ``DELETE /v1/generations/{id}`` - cancel (queued: at once; running: after the current step)
* ``GET /v1/files/jobs/{id}/...`` - a job's files (inputs, result, sidecar); nothing outside the jobs folder
* ``GET /v1/models`` - models, LoRAs, samplers, camera presets; ``GET /v1/health`` - queue state
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import HTTPException
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.datastructures import UploadFile

import kinema

from .jobs import STATUSES, JobManager, ServeSettings, iso, resolve_under
from .schema import FILE_FIELDS, OUTPUT_FORMATS, RequestError, request_model

API_PREFIX = "/v1"
UI_PATH = "/ui"
_MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".gif": "image/gif",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
}


class BodyLimitMiddleware:
    """413 for request bodies over ``limit`` bytes: at once from Content-Length, else while streaming."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    def _message(self) -> str:
        return f"request body too large: the limit is {self.limit / 2**20:g} MB (--max-upload-mb)"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                too_large = int(length) > self.limit
            except ValueError:
                too_large = False
            if too_large:
                response = JSONResponse({"detail": self._message()}, status_code=413)
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)


def file_url(relative: str) -> str:
    return f"{API_PREFIX}/files/{relative}"


def public_job(job: dict[str, Any]) -> dict[str, Any]:
    """The API view of a job."""
    params = dict(job["request"])
    for name, rel in job["inputs"].items():
        params[name] = file_url(rel)
    files = {name: file_url(rel) for name, rel in job["inputs"].items()}
    result_url = None
    if job["status"] == "succeeded" and job["result"]:
        result_url = f"{API_PREFIX}/generations/{job['id']}/result"
        files["result"] = file_url(job["result"])
        files["sidecar"] = file_url(job["result"].rsplit(".", 1)[0] + ".json")
    total = job["total"] or 0
    seconds = None
    if job["started"] and job["finished"]:
        seconds = round(job["finished"] - job["started"], 3)
    return {
        "id": job["id"],
        "status": job["status"],
        "mode": job["mode"],
        "source": job["source"],
        "created": iso(job["created"]),
        "started": iso(job["started"]),
        "finished": iso(job["finished"]),
        "seconds": seconds,
        "queue_position": job.get("queue_position"),
        "progress": {
            "step": job["step"],
            "total": total,
            "fraction": round(min(job["step"] / total, 1.0), 4)
            if total
            else (1.0 if job["status"] == "succeeded" else 0.0),
        },
        "cancel_requested": job["cancel_requested"],
        "parameters": params,
        "model": job["model"],
        "resolved": job["info"] or None,
        "result_url": result_url,
        "files": files,
        "error": job["error"],
        "url": f"{API_PREFIX}/generations/{job['id']}",
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _multipart_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        "params": {"type": "string", "description": "optional: GenerationRequest fields as a JSON object"}
    }
    schema = request_model().model_json_schema()
    for name, prop in schema["properties"].items():
        if name in FILE_FIELDS:
            props[name] = {"type": "string", "format": "binary", "description": prop.get("description", "")}
        else:
            props[name] = {"type": "string", "description": prop.get("description", "")}
    return {"type": "object", "properties": props}


def create_app(settings: ServeSettings | None = None, manager: JobManager | None = None) -> FastAPI:
    """The app: REST API + (``settings.ui``) the Gradio UI at /ui. The job manager starts with the app's
    lifespan (recovering the previous run's jobs) and stops with it."""
    settings = settings or ServeSettings()
    manager = manager or JobManager(settings)
    limit = int(settings.max_upload_mb * 2**20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        try:
            yield
        finally:
            await run_in_threadpool(manager.close)

    app = FastAPI(
        title="kinema",
        version=kinema.__version__,
        description=(
            "Text/image/video-to-video generation. Submit a GenerationRequest (JSON or multipart with "
            "files) to POST /v1/generations, poll GET /v1/generations/{id}, download its result_url. "
            "Jobs run one at a time in submission order."
        ),
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, limit=limit)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 429 else None
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status, headers=headers)

    def get_job(job_id: str) -> dict[str, Any]:
        job = manager.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.post(
        f"{API_PREFIX}/generations",
        status_code=202,
        summary="Submit a generation job",
        tags=["generations"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/GenerationRequest"}},
                    "multipart/form-data": {"schema": _multipart_schema()},
                },
            }
        },
        responses={
            202: {"description": "queued: the job (poll its url)"},
            413: {"description": "body over --max-upload-mb"},
            415: {"description": "neither JSON nor multipart"},
            422: {"description": "invalid request; detail[0].loc names the field"},
            429: {"description": "queue full (--max-queue); retry later"},
        },
    )
    async def create_generation(request: Request) -> JSONResponse:
        manager.check_capacity()  # before reading a possibly large body
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        uploads: dict[str, Any] = {}
        form = None
        try:
            if ctype in ("application/json", ""):
                body = await request.body()
                try:
                    params = json.loads(body) if body.strip() else {}
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise RequestError(
                        f"the body is not valid JSON: {e}", status=400, kind="json_invalid"
                    ) from None
            elif ctype == "multipart/form-data":
                try:
                    form = await request.form(max_files=len(FILE_FIELDS), max_fields=200, max_part_size=limit)
                except HTTPException:
                    raise
                except Exception as e:  # starlette's MultiPartException and malformed bodies
                    raise RequestError(f"invalid multipart body: {e}", status=400) from None
                params = {}
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        if not value.filename and not value.size:
                            continue  # an empty file input of an HTML form
                        uploads[key] = (value.filename or "", value.file)
                    elif key == "params":
                        try:
                            extra = json.loads(value) if value.strip() else {}
                        except json.JSONDecodeError as e:
                            raise RequestError(f"params: not valid JSON: {e}", field="params") from None
                        if not isinstance(extra, dict):
                            raise RequestError("params: must be a JSON object", field="params")
                        params.update(extra)
                    elif value != "":
                        params[key] = value
            else:
                raise RequestError(
                    f"unsupported content type {ctype!r}: send application/json or multipart/form-data",
                    status=415,
                    kind="unsupported_media_type",
                )
            job = await run_in_threadpool(manager.submit, params, uploads, "api")
        finally:
            if form is not None:
                await form.close()
        return JSONResponse(public_job(job), status_code=202, headers={"Location": public_job(job)["url"]})

    @app.get(f"{API_PREFIX}/generations", summary="List jobs, newest first", tags=["generations"])
    def list_generations(
        status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        jobs, total = manager.list(status, limit, offset)
        return {"jobs": [public_job(j) for j in jobs], "total": total, "limit": limit, "offset": offset}

    @app.get(
        f"{API_PREFIX}/generations/{{job_id}}", summary="A job's status and progress", tags=["generations"]
    )
    def get_generation(job_id: str) -> dict[str, Any]:
        return public_job(get_job(job_id))

    @app.get(
        f"{API_PREFIX}/generations/{{job_id}}/result",
        summary="The result file of a succeeded job",
        tags=["generations"],
        response_class=FileResponse,
        responses={409: {"description": "the job has no result (not succeeded)"}},
    )
    def get_result(job_id: str):
        job = get_job(job_id)
        path = manager.result_path(job)
        if path is None:
            return _error(409, f"job {job_id} has no result: it is {job['status']}")
        return FileResponse(
            path,
            media_type=_MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
            filename=f"{job_id}{path.suffix}",
            content_disposition_type="inline",
        )

    @app.delete(
        f"{API_PREFIX}/generations/{{job_id}}",
        summary="Cancel a job",
        tags=["generations"],
        responses={
            200: {"description": "cancelled (it was queued)"},
            202: {"description": "cancelling: it was running and stops after the current step"},
            409: {"description": "already finished"},
        },
    )
    def cancel_generation(job_id: str) -> JSONResponse:
        try:
            job, done = manager.cancel(job_id)
        except KeyError:
            raise HTTPException(404, f"no job {job_id!r}") from None
        return JSONResponse(public_job(job), status_code=200 if done else 202)

    @app.get(
        f"{API_PREFIX}/files/{{path:path}}",
        summary="A file of a job (inputs, result, sidecar)",
        tags=["files"],
        response_class=FileResponse,
    )
    def get_file(path: str):
        try:
            if not path.startswith("jobs/"):
                raise FileNotFoundError(path)
            target = resolve_under(manager.jobs_dir, path[len("jobs/") :])
        except FileNotFoundError:
            return _error(404, "no such file")
        return FileResponse(
            target, media_type=_MEDIA_TYPES.get(target.suffix.lower(), "application/octet-stream")
        )

    @app.get(f"{API_PREFIX}/models", summary="Models, LoRAs and choices", tags=["server"])
    def get_models() -> dict[str, Any]:
        from kinema.config import SAMPLERS
        from kinema.control import CAMERA_PRESETS, CONTROL_TYPES

        return {
            "models": manager.models(),
            "loras": [x["name"] for x in manager.loras()],
            "samplers": list(SAMPLERS),
            "camera_presets": list(CAMERA_PRESETS),
            "control_types": list(CONTROL_TYPES),
            "formats": list(OUTPUT_FORMATS),
        }

    @app.get(f"{API_PREFIX}/health", summary="Queue state", tags=["server"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": kinema.__version__, "statuses": list(STATUSES), **manager.stats()}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            request_schema = request_model().model_json_schema(ref_template="#/components/schemas/{model}")
            defs = request_schema.pop("$defs", {})
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs)
            components["GenerationRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    if settings.ui:
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        # Gradio's cache (uploads, copies of results it shows) inside the output folder too, unless the
        # user chose one. Set before gradio is imported: some of its modules read it at import time.
        os.environ.setdefault("GRADIO_TEMP_DIR", str(manager.root / "ui-cache"))
        import gradio as gr

        from .ui import build_ui, ui_theme

        app = gr.mount_gradio_app(
            app,
            build_ui(manager),
            path=UI_PATH,
            ssr_mode=False,
            max_file_size=limit,
            allowed_paths=[str(manager.jobs_dir)],
            theme=ui_theme(),
            footer_links=["api"],
        )

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse(f"{UI_PATH}/")

    else:

        @app.get("/", include_in_schema=False)
        def root_docs() -> RedirectResponse:
            return RedirectResponse("/docs")

    return app
