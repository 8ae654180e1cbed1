"""The job queue of ``kinema serve``: SQLite store, submission checks, one worker thread.

Layout of the output folder (``--output-dir``)::

    jobs.sqlite3                 every job: status, parameters, progress, result, error (WAL, fsync'd)
    jobs/<id>/inputs/<field>.*   the files a request uploaded (image.png, video.mp4, lora.safetensors, ...)
    jobs/<id>/result.mp4         the result (written atomically by kinema.videoio) and result.json (sidecar)

Life of a job: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``. Jobs run one at a
time in submission order on a single worker thread that keeps the last loaded pipeline (model + LoRA +
dtype + memory mode) for the next job. A restart keeps everything: finished jobs stay listed with their
results, jobs still ``queued`` are queued again in their order, and a job that was ``running`` when the
server stopped is marked ``failed`` with the reason (it is not re-run automatically: it may be what
brought the server down).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from kinema.config import GenerationConfig

from .schema import (
    FILE_FIELDS,
    OUTPUT_FORMATS,
    QueueFull,
    RequestError,
    check_suffix,
    field_of,
    parse_data_url,
    validate_request,
)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
DB_NAME = "jobs.sqlite3"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
SCHEMA_VERSION = 1
PROGRESS_WRITE_INTERVAL = 0.5  # s between progress writes to SQLite (the live value is kept in memory)


@dataclass
class ServeSettings:
    """What ``kinema serve`` is started with (its flags)."""

    output_dir: Path = Path("outputs/serve")
    model: str | None = None  # default model folder; None: the embedded model, else the random fallback
    models_dir: Path | None = None  # more model folders to choose from (each with a model_index.json)
    loras_dir: Path | None = None  # LoRA .safetensors files to choose from
    max_queue: int = 32  # jobs waiting (not counting the running one); more -> 429
    max_upload_mb: float = 256.0  # request body limit -> 413
    ui: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.max_queue < 1:
            raise ValueError(f"--max-queue {self.max_queue}: must be >= 1")
        if not self.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb {self.max_upload_mb}: must be > 0")
        for name in ("models_dir", "loras_dir"):
            value = getattr(self, name)
            if value is not None:
                value = Path(value)
                if not value.is_dir():
                    raise FileNotFoundError(f"--{name.replace('_', '-')} {value}: folder does not exist")
                setattr(self, name, value)
        if self.model is not None and not (Path(self.model) / "model_index.json").is_file():
            raise FileNotFoundError(f"--model {self.model}: not a model folder (no model_index.json)")


# ---- store ----------------------------------------------------------------------------------------------


class JobStore:
    """Jobs in SQLite (one connection shared by the server's threads behind a lock; WAL, synchronous=FULL)."""

    COLUMNS = (
        "id",
        "status",
        "source",
        "mode",
        "created",
        "started",
        "finished",
        "request",
        "config",
        "inputs",
        "model",
        "step",
        "total",
        "result",
        "error",
        "cancel_requested",
        "info",
    )
    JSON_COLUMNS = ("request", "config", "inputs", "model", "info")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(f"{self.path}: written by a newer kinema (schema {version} > {SCHEMA_VERSION})")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT UNIQUE NOT NULL,
                status TEXT NOT NULL,
                source TEXT NOT NULL DEFAULT 'api',
                mode TEXT,
                created REAL NOT NULL,
                started REAL,
                finished REAL,
                request TEXT NOT NULL,
                config TEXT NOT NULL,
                inputs TEXT NOT NULL DEFAULT '{}',
                model TEXT NOT NULL DEFAULT '{}',
                step INTEGER NOT NULL DEFAULT 0,
                total INTEGER,
                result TEXT,
                error TEXT,
                cancel_requested INTEGER NOT NULL DEFAULT 0,
                info TEXT NOT NULL DEFAULT '{}'
            )"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq)")
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _row(self, row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        job = dict(row)
        for name in self.JSON_COLUMNS:
            job[name] = json.loads(job[name]) if job[name] else {}
        job["cancel_requested"] = bool(job["cancel_requested"])
        return job

    def insert(self, job: dict[str, Any]) -> None:
        values = {k: (json.dumps(v) if k in self.JSON_COLUMNS else v) for k, v in job.items()}
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", tuple(values.values()))

    def update(self, job_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(self.COLUMNS)
        if unknown:
            raise KeyError(f"unknown job columns: {sorted(unknown)}")
        values = [json.dumps(v) if k in self.JSON_COLUMNS else v for k, v in fields.items()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first; and the total count for ``status`` (all statuses when None)."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?", (*args, limit, offset)
            ).fetchall()
        return [self._row(r) for r in rows], total

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs with one of ``statuses``, oldest first."""
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses
            ).fetchall()
        return [self._row(r) for r in rows]

    def count(self, status: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    def queue_position(self, job_id: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT seq, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] != "queued":
                return None
            ahead = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?", (row["seq"],)
            ).fetchone()[0]
        return ahead + 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---- paths ----------------------------------------------------------------------------------------------


def resolve_under(root: Path, relative: str) -> Path:
    """The existing regular file ``root/relative``, or FileNotFoundError.

    Refused: absolute paths, drive letters, backslashes, ``..`` / ``.`` / hidden components, NUL, and
    anything whose real path (symlinks resolved) is not inside ``root``'s real path.
    """
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        raise FileNotFoundError(relative)
    if re.match(r"^[A-Za-z]:", relative):
        raise FileNotFoundError(relative)
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise FileNotFoundError(relative)
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root.joinpath(*parts)))
    if real_root not in target.parents or not target.is_file():
        raise FileNotFoundError(relative)
    return target


def _now() -> float:
    return time.time()


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


# ---- manager --------------------------------------------------------------------------------------------

Upload = tuple[str, "BinaryIO | Path"]  # (client file name, readable file object or a local path)


class JobManager:
    """Submission checks, the queue and the worker thread. Shared by the REST API and the UI."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.root = Path(os.path.realpath(settings.output_dir))
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(exist_ok=True)
        self._lock_file = self._acquire_folder_lock()
        self.store = JobStore(self.root / DB_NAME)
        self._lock = threading.RLock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._live: dict[str, tuple[int, int]] = {}
        self._cancel: set[str] = set()
        self._current: tuple[str, Any] | None = None
        self._pipe_key: tuple | None = None
        self._pipe: Any = None
        self._model_info: dict[str, dict[str, Any]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = False

    # -- lifecycle

    def _acquire_folder_lock(self):
        """One server per output folder: a second one would recover/run the same jobs."""
        import fcntl

        f = open(self.root / ".serve.lock", "a+")  # noqa: SIM115 (held for the server's lifetime)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise ValueError(
                f"--output-dir {self.root}: another kinema serve is using this folder (.serve.lock)"
            ) from None
        return f

    def start(self) -> None:
        """Recover the jobs of a previous run, then start the worker thread."""
        if self.started:
            return
        self.recover()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._work, name="kinema-serve-worker", daemon=True)
        self._thread.start()
        threading.Thread(target=_warm_up, name="kinema-serve-warm-up", daemon=True).start()
        self.started = True

    def recover(self) -> dict[str, int]:
        """``running`` -> ``failed`` (with the reason); ``queued`` -> queued again, in order."""
        failed = 0
        for job in self.store.with_status("running"):
            step, total = job["step"], job["total"]
            self.store.update(
                job["id"],
                status="failed",
                finished=_now(),
                error=(
                    f"interrupted: the server stopped while this job was running (step {step} of {total}); "
                    "it was not restarted automatically - submit it again"
                ),
            )
            failed += 1
        requeued = 0
        for job in self.store.with_status("queued"):
            self._queue.put(job["id"])
            requeued += 1
        return {"failed": failed, "requeued": requeued}

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step: the running job becomes ``failed`` (server shut down); queued
        jobs stay queued in the database and run after the next start."""
        self._stopping.set()
        with self._lock:
            if self._current is not None:
                self._current[1].interrupt()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.started = False

    def close(self) -> None:
        self.stop()
        self.store.close()
        self._lock_file.close()

    # -- models

    def models(self) -> list[dict[str, Any]]:
        """Models to choose from: ``default`` first, then the folders of --models-dir. ``types`` lists
        what a model family serves (its root type plus swapped-in Control/Camera transformers)."""
        entries: list[dict[str, Any]] = []
        if self.settings.model:
            entries.append(
                {"name": "default", "path": str(Path(self.settings.model).resolve()), "source": "--model"}
            )
        else:
            embedded = _embedded_model()
            if embedded is not None:
                entries.append({"name": "default", "path": str(embedded), "source": "embedded ShapesWorld"})
            else:
                entries.append(
                    {
                        "name": "default",
                        "path": None,
                        "source": "random fallback: no trained model installed, noise-like output; "
                        "its type follows the request",
                    }
                )
        if self.settings.models_dir is not None:
            for d in sorted(self.settings.models_dir.iterdir()):
                if d.name != "default" and (d / "model_index.json").is_file():
                    entries.append({"name": d.name, "path": str(d.resolve()), "source": "--models-dir"})
        for e in entries:
            e["random"] = e["path"] is None
            e["type"] = None
            e["types"] = []
            if e["path"] is not None:
                try:
                    e["type"] = self._info(e["path"])["model_type"]
                    e["types"] = [e["type"]] + [
                        t
                        for t in ("control", "camera")
                        if t != e["type"] and _family_transformer(e["path"], t)
                    ]
                except (ValueError, FileNotFoundError) as err:
                    e["error"] = str(err)
        return entries

    def loras(self) -> list[dict[str, str]]:
        if self.settings.loras_dir is None:
            return []
        return [
            {"name": p.name, "path": str(p.resolve())}
            for p in sorted(self.settings.loras_dir.glob("*.safetensors"))
            if p.is_file()
        ]

    def _info(self, path: str, transformer: str | None = None) -> dict[str, Any]:
        key = f"{path}\n{transformer}"
        if key not in self._model_info:
            from kinema.pipelines.loading import check_model_folder

            self._model_info[key] = check_model_folder(path, transformer=transformer)
        return self._model_info[key]

    def _resolve_model(self, name: str | None, config: GenerationConfig) -> dict[str, Any]:
        """The model a request runs on: {name, path, transformer, type, random}. As ``kinema generate``:
        the default is the embedded model when installed, else the cached random model of the type the
        request needs; a model family swaps in the transformer the request needs."""
        from kinema.pipelines.cli import random_model, requested_model_type

        name = name or "default"
        entry = next((e for e in self.models() if e["name"] == name), None)
        if entry is None:
            names = ", ".join(e["name"] for e in self.models())
            raise RequestError(f"model {name!r}: unknown model; choose one of {names}", field="model")
        if "error" in entry:
            raise RequestError(f"model {name!r}: {entry['error']}", field="model")
        needed = requested_model_type(config)
        path = entry["path"] or str(random_model(needed))
        transformer = _family_transformer(path, needed)
        try:
            info = self._info(path, transformer)
        except (ValueError, FileNotFoundError) as e:
            raise RequestError(f"model {name!r}: {e}", field="model") from None
        return {
            "name": name,
            "path": path,
            "transformer": transformer,
            "type": info["model_type"],
            "random": entry["random"],
        }

    # -- submission

    def _check_capacity(self) -> None:
        waiting = self.store.count("queued")
        if waiting >= self.settings.max_queue:
            raise QueueFull(waiting, self.settings.max_queue)

    def check_capacity(self) -> None:
        """Raise QueueFull (429) before a request body is read, when nothing more can be queued."""
        if self._stopping.is_set():
            raise RequestError("the server is shutting down", status=503, kind="shutting_down")
        self._check_capacity()

    def submit(
        self, params: dict[str, Any], uploads: dict[str, Upload] | None = None, source: str = "api"
    ) -> dict[str, Any]:
        """Check a request completely (fields, files, model vs mode, sampler, every input read once) and
        queue it. RequestError (4xx naming the field) or QueueFull (429); nothing is kept on refusal."""
        self.check_capacity()
        if not isinstance(params, dict):
            raise RequestError("the request body must be a JSON object of GenerationRequest fields")
        uploads = dict(uploads or {})
        for name in uploads:
            if name not in FILE_FIELDS:
                raise RequestError(
                    f"unexpected file part {name!r}; file fields: {', '.join(FILE_FIELDS)}", field=name
                )
            if params.get(name) not in (None, ""):
                raise RequestError(f"{name}: given both as a file and as a value", field=name)
        request = validate_request({k: v for k, v in params.items() if k not in uploads})
        job_id = uuid.uuid4().hex
        job_dir = self.jobs_dir / job_id
        inputs_dir = job_dir / "inputs"
        try:
            inputs_dir.mkdir(parents=True)
            return self._submit(job_id, job_dir, request, uploads, source)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise

    def _submit(
        self, job_id: str, job_dir: Path, request: Any, uploads: dict[str, Upload], source: str
    ) -> dict[str, Any]:
        from kinema.pipelines.cli import output_path, preflight_inputs
        from kinema.pipelines.loading import default_device, resolve_dtype
        from kinema.pipelines.pipeline import check_config_mode
        from kinema.pipelines.schedulers import make_scheduler

        values = request.model_dump()
        fmt = values.pop("format")
        if fmt not in OUTPUT_FORMATS:
            raise RequestError(f"format {fmt!r}: choose one of {', '.join(OUTPUT_FORMATS)}", field="format")
        # Files: uploaded parts, data: URLs, job:<id> results, inline trajectories; never server paths.
        inputs: dict[str, str] = {}  # field -> path relative to the output folder
        shown: dict[str, str] = {}  # field -> the client's file name (for messages)
        for name in FILE_FIELDS:
            if name in uploads:
                filename, src = uploads[name]
                path = self._store_file(job_dir, name, src, filename)
                shown[name] = filename or name
            else:
                value = values.get(name)
                if value in (None, ""):
                    values[name] = None
                    continue
                path, values[name] = self._materialize(job_dir, name, value)
                if path is None:  # a camera preset, or a LoRA chosen by name (its --loras-dir path)
                    continue
                shown[name] = name
            inputs[name] = path.relative_to(self.root).as_posix()
            values[name] = str(path)
        fields = {f.name for f in dataclasses.fields(GenerationConfig)}
        config = GenerationConfig(
            **{k: v for k, v in values.items() if k in fields},
            out=str(job_dir / f"result.{fmt}"),
            free_text_encoder=False,
        )

        def fail(e: Exception, default_field: str | None = None) -> RequestError:
            msg = str(e)
            for name, rel in inputs.items():  # name the client's file, not the server's path
                msg = msg.replace(str(self.root / rel), f"{name} ({shown.get(name, name)})")
            msg = msg.replace(str(job_dir), "<job>")
            name = next((n for n in inputs if f"{n} (" in msg), None) or field_of(msg) or default_field
            return RequestError(msg, field=name)

        try:
            config.validate()
            out = output_path(config)
        except ValueError as e:
            raise fail(e, "format") from None
        model = self._resolve_model(config.model, config)
        try:
            mode = check_config_mode(model["type"], config)
        except ValueError as e:
            raise fail(e, "model") from None
        try:
            make_scheduler(
                config.sampler, self._info(model["path"], model["transformer"])["scheduler_config"]
            )
        except ValueError as e:
            raise fail(e, "sampler") from None
        try:
            resolve_dtype(config.dtype, default_device())
        except ValueError as e:
            raise fail(e, "dtype") from None
        try:
            preflight_inputs(config)
        except (ValueError, FileNotFoundError) as e:
            raise fail(e) from None
        if config.chunk_frames:
            mode += "+long"

        stored = dataclasses.asdict(config)
        for name in inputs:
            stored[name] = None  # rebuilt from `inputs` (relative to the output folder) when run
        stored["out"] = out.relative_to(self.root).as_posix()
        public = request.model_dump()
        for name, rel in inputs.items():
            public[name] = rel
        job = {
            "id": job_id,
            "status": "queued",
            "source": source,
            "mode": mode,
            "created": _now(),
            "request": public,
            "config": stored,
            "inputs": inputs,
            "model": model,
            "step": 0,
            "total": expected_steps(config),
        }
        with self._lock:
            self.check_capacity()
            self.store.insert(job)
            self._queue.put(job_id)
        return self.get(job_id)

    def _store_file(self, job_dir: Path, name: str, src: BinaryIO | Path, filename: str | None) -> Path:
        suffix = check_suffix(name, Path(filename or "").suffix, filename)
        dest = job_dir / "inputs" / f"{name}{suffix}"
        if isinstance(src, (str, os.PathLike)):
            shutil.copyfile(src, dest)
        else:
            with open(dest, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
        return dest

    def _materialize(self, job_dir: Path, name: str, value: Any) -> tuple[Path | None, Any]:
        """A request value of a file field -> (stored file, None), or (None, the value to use)."""
        inputs = job_dir / "inputs"
        if name == "trajectory" and not isinstance(value, str):
            dest = inputs / "trajectory.json"
            dest.write_text(json.dumps(value), encoding="utf-8")
            return dest, None
        value = str(value)
        if value.startswith("data:"):
            data, suffix = parse_data_url(value, name)
            dest = inputs / f"{name}{check_suffix(name, suffix)}"
            dest.write_bytes(data)
            return dest, None
        if value.startswith("job:"):
            job = self.store.get(value[4:]) if JOB_ID.match(value[4:]) else None
            if job is None or job["status"] != "succeeded" or not job["result"]:
                raise RequestError(f"{name}: {value!r} is not a finished job with a result", field=name)
            src = resolve_under(self.root, job["result"])
            dest = inputs / f"{name}{check_suffix(name, src.suffix)}"
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
            return dest, None
        if name == "trajectory" and value.lstrip().startswith(("[", "{")):
            dest = inputs / "trajectory.json"
            dest.write_text(value, encoding="utf-8")
            return dest, None
        if name == "camera":
            # A preset spec (pan_left, zoom_in+pan_up, zoom_in,pan_left); a pose file must be uploaded.
            if not re.fullmatch(r"[A-Za-z0-9_+, -]+", value):
                raise RequestError(
                    f"camera {value!r}: not a preset spec; upload a pose file (.txt) as a file part or "
                    "a data: URL (server paths are not accepted)",
                    field="camera",
                )
            from kinema.control import camera_preset

            try:
                camera_preset(value, 5)
            except ValueError as e:
                raise RequestError(f"camera: {e}", field="camera") from None
            return None, value
        if name == "lora":
            lora = next((x for x in self.loras() if value in (x["name"], Path(x["name"]).stem)), None)
            if lora is None:
                known = ", ".join(x["name"] for x in self.loras()) or "none (start with --loras-dir)"
                raise RequestError(
                    f"lora {value!r}: unknown LoRA; known: {known}; or upload a .safetensors file",
                    field="lora",
                )
            return None, lora["path"]
        raise RequestError(
            f"{name}: send the file as a multipart file part, a data: URL or job:<id> "
            "(server paths are not accepted)",
            field=name,
        )

    # -- queries

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self.store.get(job_id) if JOB_ID.match(job_id or "") else None
        if job is None:
            return None
        live = self._live.get(job_id)
        if live is not None and job["status"] == "running":
            job["step"], job["total"] = live
        job["queue_position"] = self.store.queue_position(job_id) if job["status"] == "queued" else None
        return job

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0):
        jobs, total = self.store.list(status, limit, offset)
        for job in jobs:
            live = self._live.get(job["id"])
            if live is not None and job["status"] == "running":
                job["step"], job["total"] = live
            job["queue_position"] = (
                self.store.queue_position(job["id"]) if job["status"] == "queued" else None
            )
        return jobs, total

    def result_path(self, job: dict[str, Any]) -> Path | None:
        if job["status"] != "succeeded" or not job["result"]:
            return None
        try:
            return resolve_under(self.root, job["result"])
        except FileNotFoundError:
            return None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            running = self._current[0] if self._current else None
        return {
            "queued": self.store.count("queued"),
            "running": running,
            "max_queue": self.settings.max_queue,
            "worker_alive": bool(self._thread and self._thread.is_alive()),
        }

    # -- cancellation

    def cancel(self, job_id: str) -> tuple[dict[str, Any], bool]:
        """Cancel a job: queued -> cancelled at once (returns (job, True)); running -> interrupted after
        the current step (returns (job, False); it turns ``cancelled`` shortly). KeyError when unknown,
        RequestError 409 when it has already finished."""
        with self._lock:
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job["status"] == "queued":
                self.store.update(job_id, status="cancelled", finished=_now(), cancel_requested=1)
                return self.get(job_id), True
            if job["status"] == "running":
                self._cancel.add(job_id)
                self.store.update(job_id, cancel_requested=1)
                if self._current is not None and self._current[0] == job_id:
                    self._current[1].interrupt()
                return self.get(job_id), False
        raise RequestError(
            f"job {job_id} has already finished ({job['status']})", status=409, kind="conflict"
        )

    # -- worker

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return
            with self._lock:
                job = self.store.get(job_id)
                if job is None or job["status"] != "queued":
                    continue  # cancelled while waiting
                self.store.update(job_id, status="running", started=_now(), step=0)
                self._live[job_id] = (0, job["total"] or 0)
            try:
                self._run(job)
            except BaseException as e:  # never let the worker die: the job fails, the next one runs
                self._finish(job_id, "failed", error=f"{type(e).__name__}: {e}")
            finally:
                with self._lock:
                    self._current = None
                    self._live.pop(job_id, None)
                    self._cancel.discard(job_id)

    def _finish(self, job_id: str, status: str, **fields: Any) -> None:
        live = self._live.get(job_id)
        if live is not None and "step" not in fields:
            fields["step"], fields["total"] = live
        self.store.update(job_id, status=status, finished=_now(), **fields)

    def _config(self, job: dict[str, Any]) -> GenerationConfig:
        stored = dict(job["config"])
        for name, rel in job["inputs"].items():
            stored[name] = str(self.root / rel)
        stored["out"] = str(self.root / stored["out"])
        return GenerationConfig(**stored)

    def _pipeline(self, model: dict[str, Any], config: GenerationConfig) -> Any:
        model_path, transformer = model["path"], model.get("transformer")
        key = (model_path, transformer, config.lora, config.lora_weight, config.dtype, config.memory_mode)
        if self._pipe_key != key:
            import gc

            from kinema.pipelines import load_pipeline

            self._pipe = self._pipe_key = None
            gc.collect()
            pipe = load_pipeline(
                model_path,
                transformer=transformer,
                lora=config.lora,
                lora_weight=config.lora_weight,
                torch_dtype=config.dtype,
                memory_mode=config.memory_mode,
            )
            pipe.set_progress_bar_config(disable=True)
            self._pipe, self._pipe_key = pipe, key
        return self._pipe

    def _run(self, job: dict[str, Any]) -> None:
        import kinema
        from kinema import videoio
        from kinema.pipelines.cli import IMAGE_SUFFIXES

        job_id = job["id"]
        started = time.perf_counter()
        config = self._config(job)
        pipe = self._pipeline(job["model"], config)
        loaded = time.perf_counter()
        with self._lock:
            self._current = (job_id, pipe)
        if job_id in self._cancel or self._stopping.is_set():
            return self._stopped(job_id)
        total = job["total"] or config.steps
        state = {"done": 0, "written": 0.0}

        def callback(step: int, timestep: Any, latents: Any) -> bool:
            state["done"] += 1
            done = state["done"]
            self._live[job_id] = (done, max(total, done))
            now = time.monotonic()
            if now - state["written"] >= PROGRESS_WRITE_INTERVAL:
                state["written"] = now
                self.store.update(job_id, step=done, total=max(total, done))
            return not (job_id in self._cancel or self._stopping.is_set())

        result = pipe.generate(config, callback=callback)
        if result.interrupted or job_id in self._cancel or self._stopping.is_set():
            return self._stopped(job_id)
        out = self.root / job["config"]["out"]
        frames = result.frames[0]
        if frames.shape[0] == 1 and out.suffix.lower() in IMAGE_SUFFIXES:
            videoio.write_image(out, frames[0])
        else:
            videoio.write_video(out, frames, fps=config.fps)
        seconds = time.perf_counter() - started
        resolved = {
            **{k: v for k, v in result.info.items() if k != "seconds"},
            "seed": result.seed,
            "steps_done": result.steps_done,
            "memory_mode": result.memory_mode,
            "dtype": str(pipe.dtype).replace("torch.", ""),
            "device": str(pipe.device),
            "seconds": round(seconds, 3),
            "load_seconds": round(loaded - started, 3),
        }
        videoio.save_sidecar_json(
            videoio.sidecar_path(out),
            {
                "job": job_id,
                "parameters": job["request"],
                "output": out.name,
                "model": {**job["model"], "pipeline_class": pipe.model_index.get("_class_name")},
                "resolved": resolved,
                "kinema_version": kinema.__version__,
            },
        )
        self._finish(
            job_id,
            "succeeded",
            result=out.relative_to(self.root).as_posix(),
            step=result.steps_done,
            total=result.steps_done,
            info=resolved,
        )
        return None

    def _stopped(self, job_id: str) -> None:
        if job_id in self._cancel:
            self._finish(job_id, "cancelled", error="cancelled while running")
        else:
            self._finish(
                job_id, "failed", error="interrupted: the server shut down while this job was running"
            )


def _warm_up() -> None:
    """Import the model code in the background so the first request is not slowed by it (seconds)."""
    try:
        import kinema.control  # noqa: F401
        import kinema.pipelines.cli  # noqa: F401
        import kinema.pipelines.loading  # noqa: F401
        import kinema.pipelines.pipeline  # noqa: F401
    except Exception:  # only an optimisation: a real problem shows in the first request
        pass


def _embedded_model() -> Path | None:
    """kinema generate's default model (kinema.pipelines.cli.embedded_model), None when not installed."""
    from kinema.pipelines.cli import embedded_model

    try:
        return embedded_model()
    except TypeError:  # embedded_model_path() returned None: not installed
        return None


def _family_transformer(path: str, model_type: str) -> str | None:
    """kinema generate's transformer swap for a model family (the embedded ShapesWorld family keeps its
    Control/Camera transformers beside the root model's); None for an ordinary model folder."""
    from kinema.pipelines import cli as generate_cli

    find = getattr(generate_cli, "family_transformer", None)
    found = find(path, model_type) if find is not None else None
    return str(found) if found else None


def expected_steps(config: GenerationConfig) -> int:
    """Denoising steps a config will run (V2V strength cut; long video: per chunk x chunks)."""
    per_chunk = min(int(config.steps * config.strength), config.steps) if config.video else config.steps
    chunks = 1
    total, chunk, overlap = config.frames, config.chunk_frames, config.overlap_frames
    if chunk and total and chunk < total:
        done, chunks = 0, 0
        while chunks == 0 or done < total:
            missing = total if chunks == 0 else total - done + overlap
            length = chunk if missing >= chunk else max(1, (missing + 2) // 4 * 4 + 1)
            done = length if chunks == 0 else done + length - overlap
            chunks += 1
    return max(per_chunk, 0) * chunks


def log(message: str) -> None:
    print(f"kinema serve: {message}", file=sys.stderr, flush=True)
