"""``kinema serve``: the REST API against a real uvicorn server on loopback, on tiny random models.

Jobs are 32x32, 5 frames, 2 steps, no CFG (well under a second each). Covered: the request schema is
GenerationConfig's; JSON, multipart and data:/job: inputs; validation errors naming the field; 413;
429; cancellation (queued and running); FIFO order; path traversal on the files route; restart
persistence (SIGKILL and SIGTERM of a real ``kinema serve`` process); a 50-request load test.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from kinema import videoio  # noqa: E402
from kinema.config import GenerationConfig  # noqa: E402
from kinema.pipelines import build_random_model  # noqa: E402
from kinema.serve import jobs as serve_jobs  # noqa: E402
from kinema.serve.app import create_app  # noqa: E402
from kinema.serve.jobs import JobManager, JobStore, ServeSettings, expected_steps, resolve_under  # noqa: E402
from kinema.serve.schema import SERVER_FIELDS, field_of, request_model  # noqa: E402

TINY = {"prompt": "a red circle", "height": 32, "width": 32, "frames": 5, "steps": 2, "guidance": 1.0}
SLOW = {**TINY, "steps": 100000}  # runs until cancelled
ROOT = Path(__file__).resolve().parents[1]


# ---- helpers -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a thread (bounded start/stop)."""

    def __init__(self, settings: ServeSettings):
        import uvicorn

        self.settings = settings
        self.app = create_app(settings)
        self.manager: JobManager = self.app.state.manager
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "server did not stop"


def wait_job(client, job_id: str, until=("succeeded", "failed", "cancelled"), timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/generations/{job_id}").json()
        if job["status"] in until:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
        time.sleep(0.05)


def wait_running(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/generations/{job_id}").json()
        if job["status"] == "running" and job["progress"]["step"] >= 1:
            return job
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"job {job_id} did not start within {timeout} s"
        time.sleep(0.05)


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (httpx would normalise dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random models: the server's default (t2v) and a --models-dir with an InP and a Control model."""
    root = tmp_path_factory.mktemp("serve-models")
    t2v = build_random_model(root / "default-t2v", "t2v", seed=1)
    extra = root / "extra"
    build_random_model(extra / "inp", "inp", seed=2, text_encoder_from=t2v)
    build_random_model(extra / "control", "control", seed=3, text_encoder_from=t2v)
    return {"t2v": t2v, "dir": extra}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-media")
    rng = np.random.default_rng(0)
    videoio.write_image(root / "start.png", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    videoio.write_video(root / "clip.mp4", rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), fps=8)
    (root / "junk.png").write_bytes(b"definitely not a png")
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-out")
    settings = ServeSettings(
        output_dir=out,
        model=str(models["t2v"]),
        models_dir=models["dir"],
        max_queue=20,
        max_upload_mb=1,
        ui=False,
    )
    with ServerThread(settings) as s:
        yield s


# ---- unit: schema, paths, helpers --------------------------------------------------------------------------


def test_request_schema_is_generation_config():
    fields = request_model().model_fields
    config_fields = {f.name: f for f in dataclasses.fields(GenerationConfig)}
    assert set(fields) == (set(config_fields) - set(SERVER_FIELDS)) | {"format"}
    for name, f in fields.items():
        if name != "format":
            assert f.default == config_fields[name].default, name
            assert f.description.startswith(config_fields[name].metadata["help"][:20]) or name in (
                "model",
                "lora",
            )


def test_field_of_maps_messages_to_fields():
    assert field_of("--height 30: must be a positive multiple of 16") == "height"
    assert field_of("--frames 6: must be 4k+1") == "frames"
    assert field_of("--end-image needs --image (the start frame)") == "end_image"
    assert field_of("mask_video needs video (the video to inpaint)") == "mask"
    assert field_of("image-to-video needs an InP model") == "image"
    assert field_of("something unrelated") is None


def test_resolve_under_refuses_everything_outside(tmp_path):
    root = tmp_path / "root"
    (root / "jobs" / "a").mkdir(parents=True)
    (root / "jobs" / "a" / "ok.mp4").write_bytes(b"ok")
    (root / "jobs" / "a" / ".hidden").write_bytes(b"h")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "jobs" / "a" / "link.mp4").symlink_to(tmp_path / "secret.txt")
    (root / "jobs" / "inner").symlink_to(root / "jobs" / "a")
    assert resolve_under(root, "jobs/a/ok.mp4").read_bytes() == b"ok"
    assert resolve_under(root, "jobs/inner/ok.mp4").read_bytes() == b"ok"  # a symlink that stays inside
    for bad in (
        "../secret.txt",
        "jobs/../../secret.txt",
        str(tmp_path / "secret.txt"),
        "/etc/passwd",
        "jobs/a/link.mp4",
        "jobs/a/.hidden",
        "jobs\\..\\..\\secret.txt",
        "C:/secret.txt",
        "jobs/a/ok.mp4\x00",
        "jobs/a",
        "",
        ".",
    ):
        with pytest.raises(FileNotFoundError):
            resolve_under(root, bad)


def test_expected_steps():
    assert expected_steps(GenerationConfig(steps=10)) == 10
    assert expected_steps(GenerationConfig(steps=10, video="v.mp4", strength=0.55)) == 5
    # 49 frames in chunks of 25 with overlap 4: 25 + 21 (=46) + 4+3 -> 3 chunks
    assert expected_steps(GenerationConfig(steps=4, frames=49, chunk_frames=25, overlap_frames=4)) == 12


def test_default_model_follows_the_cli(monkeypatch, tmp_path, models):
    """No --model: the embedded model when installed, else the CLI's random model of the request's type."""
    from kinema.pipelines import cli as generate_cli

    asked = []

    def fake_random(kind):
        asked.append(kind)
        return models["t2v"]

    monkeypatch.setattr(generate_cli, "embedded_model", lambda: None)
    monkeypatch.setattr(generate_cli, "random_model", fake_random)
    manager = JobManager(ServeSettings(output_dir=tmp_path / "out"))
    try:
        assert manager.models()[0]["name"] == "default" and manager.models()[0]["random"]
        resolved = manager._resolve_model(None, GenerationConfig(camera="pan_left"))
        assert asked == ["camera"] and resolved["path"] == str(models["t2v"]) and resolved["random"]
        monkeypatch.setattr(generate_cli, "embedded_model", lambda: models["t2v"])
        assert manager.models()[0]["source"] == "embedded ShapesWorld"
    finally:
        manager.close()


def test_embedded_family_swaps_the_transformer(monkeypatch, tmp_path, models):
    """A model family (as the embedded ShapesWorld model: InP root + transformer_control/) serves a
    trajectory request with its Control transformer, as kinema generate does."""
    import shutil

    from kinema.pipelines import cli as generate_cli

    if not hasattr(generate_cli, "family_transformer"):
        pytest.skip("kinema.pipelines.cli has no model-family support yet")
    family = tmp_path / "family"
    shutil.copytree(models["dir"] / "inp", family)
    shutil.copytree(models["dir"] / "control" / "transformer", family / "transformer_control")
    monkeypatch.setattr(generate_cli, "embedded_model", lambda: family)
    with ServerThread(ServeSettings(output_dir=tmp_path / "out", ui=False)) as s:
        listed = s.client.get("/v1/models").json()["models"][0]
        assert listed["source"] == "embedded ShapesWorld" and listed["types"] == ["inp", "control"]
        r = s.client.post("/v1/generations", json={**TINY, "trajectory": [[0, 4, 4], [4, 28, 28]]})
        assert r.status_code == 202, r.text
        job = wait_job(s.client, r.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        assert job["model"]["type"] == "control" and job["model"]["transformer"].endswith(
            "transformer_control"
        )


def test_one_server_per_output_folder(tmp_path):
    first = JobManager(ServeSettings(output_dir=tmp_path))
    try:
        with pytest.raises(ValueError, match="another kinema serve"):
            JobManager(ServeSettings(output_dir=tmp_path))
    finally:
        first.close()


def test_cli_defaults_to_loopback():
    from kinema.cli import build_parser
    from kinema.serve import cli as serve_cli

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.output_dir == "outputs/serve"
    assert args.func is serve_cli.run


def test_ui_request_builds_the_same_request():
    from kinema.serve.ui import tracks_payload, ui_request

    base = dict.fromkeys(
        "mode prompt negative_prompt model sampler steps guidance seed height width frames fps format lora "
        "lora_file lora_weight i2v_image i2v_end v2v_video v2v_mask v2v_strength control_video control_type "
        "control_ref traj_file tracks traj_size traj_ref cam_presets cam_spec cam_file cam_ref long_image "
        "chunk_frames overlap_frames".split()
    )
    base.update(
        prompt="p", sampler="flow", steps=3.0, guidance=6, seed=7.0, fps=8, format="mp4", lora_weight=1
    )
    params, uploads = ui_request({**base, "mode": "camera", "cam_presets": ["zoom_in", "pan_left"]})
    assert params["camera"] == "zoom_in+pan_left" and params["steps"] == 3 and not uploads
    params, uploads = ui_request({**base, "mode": "i2v", "i2v_image": "/x/start.png"})
    assert uploads["image"] == ("start.png", Path("/x/start.png"))
    params, _ = ui_request({**base, "mode": "trajectory", "tracks": [[[1, 2], [3, 4], [5, 6]]], "frames": 9})
    assert params["trajectory"]["tracks"] == [[[0, 1.0, 2.0], [4, 3.0, 4.0], [8, 5.0, 6.0]]]
    with pytest.raises(serve_jobs.RequestError, match="start image"):
        ui_request({**base, "mode": "i2v"})
    assert tracks_payload([[]], (10, 10), 5) is None


# ---- the API ---------------------------------------------------------------------------------------------


def test_t2v_job_end_to_end(server):
    c = server.client
    r = c.post("/v1/generations", json=TINY)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/generations/{job['id']}"
    assert job["status"] in ("queued", "running") and job["progress"]["total"] == 2
    done = wait_job(c, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"step": 2, "total": 2, "fraction": 1.0}
    assert done["parameters"]["prompt"] == "a red circle" and done["parameters"]["steps"] == 2
    assert done["model"]["path"] == str(server.settings.model) and done["model"]["type"] == "t2v"
    assert done["resolved"]["frames"] == 5 and done["resolved"]["seed"] == 42

    res = c.get(done["result_url"])
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    local = server.manager.root / "jobs" / job["id"] / "result.mp4"
    assert res.content == local.read_bytes()
    assert videoio.read_video(local).frames.shape == (5, 32, 32, 3)
    sidecar = c.get(done["files"]["sidecar"]).json()
    assert sidecar["job"] == job["id"] and sidecar["parameters"]["steps"] == 2

    listed = c.get("/v1/generations", params={"status": "succeeded"}).json()
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    assert c.get("/v1/generations", params={"status": "bogus"}).status_code == 422
    assert c.get("/v1/generations/0123456789abcdef0123456789abcdef").status_code == 404
    assert c.get("/v1/health").json()["worker_alive"]

    spec = c.get("/openapi.json").json()
    assert "/v1/generations" in spec["paths"] and "/v1/generations/{job_id}/result" in spec["paths"]
    schema = spec["components"]["schemas"]["GenerationRequest"]
    assert {"prompt", "frames", "camera", "format"} <= set(schema["properties"])
    body = spec["paths"]["/v1/generations"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert c.get("/docs").status_code == 200


def test_one_frame_is_a_png(server):
    job = server.client.post("/v1/generations", json={**TINY, "frames": 1}).json()
    done = wait_job(server.client, job["id"])
    assert done["status"] == "succeeded" and done["files"]["result"].endswith("/result.png")
    assert server.client.get(done["result_url"]).headers["content-type"] == "image/png"


def test_multipart_data_url_and_job_inputs(server, media):
    c = server.client
    # I2V on the InP model of --models-dir: multipart fields + a file part.
    with open(media / "start.png", "rb") as f:
        r = c.post(
            "/v1/generations",
            data={**{k: str(v) for k, v in TINY.items()}, "model": "inp"},
            files={"image": ("start.png", f, "image/png")},
        )
    assert r.status_code == 202, r.text
    i2v = r.json()
    assert i2v["mode"] == "i2v" and i2v["parameters"]["image"].endswith("/inputs/image.png")
    assert c.get(i2v["parameters"]["image"]).content == (media / "start.png").read_bytes()
    # The same as JSON with a data: URL, and params given as one JSON part.
    r = c.post(
        "/v1/generations", json={**TINY, "model": "inp", "image": data_url(media / "start.png", "image/png")}
    )
    assert r.status_code == 202, r.text
    r2 = c.post(
        "/v1/generations",
        data={"params": json.dumps({**TINY, "model": "inp"})},
        files={"image": ("start.png", (media / "start.png").read_bytes(), "image/png")},
    )
    assert r2.status_code == 202, r2.text
    for job in (i2v, r.json(), r2.json()):
        assert wait_job(c, job["id"])["status"] == "succeeded"
    # V2V on a finished job's result (job:<id>), and trajectory control with inline tracks.
    v2v = c.post("/v1/generations", json={**TINY, "video": f"job:{i2v['id']}", "strength": 0.5}).json()
    traj = c.post(
        "/v1/generations", json={**TINY, "model": "control", "trajectory": [[0, 4, 4], [4, 28, 28]]}
    ).json()
    assert v2v["mode"] == "v2v" and traj["mode"] == "trajectory"
    assert v2v["progress"]["total"] == 1  # the strength cut
    assert wait_job(c, v2v["id"])["status"] == "succeeded"
    assert wait_job(c, traj["id"])["status"] == "succeeded"
    models = c.get("/v1/models").json()
    assert [m["name"] for m in models["models"]] == ["default", "control", "inp"]
    assert models["models"][1]["type"] == "control" and "pan_left" in models["camera_presets"]


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"height": 30}, "height", "multiple of 16"),
        ({"frames": 6}, "frames", "4k+1"),
        ({"steps": "many"}, "steps", "integer"),
        ({"steps": 0}, "steps", ">= 1"),
        ({"sampler": "bogus"}, "sampler", "choose one of"),
        ({"strength": 0.5}, "strength", "needs --video"),
        ({"end_image": "data:image/png;base64,AAAA"}, "end_image", "needs --image"),
        ({"typo_field": 1}, "typo_field", "unknown field"),
        ({"image": "/etc/passwd"}, "image", "server paths are not accepted"),
        ({"video": "../../jobs.sqlite3"}, "video", "server paths are not accepted"),
        ({"camera": "../../../etc/passwd"}, "camera", "not a preset"),
        ({"camera": "spin_around"}, "camera", "unknown camera preset"),
        ({"model": "nope"}, "model", "unknown model"),
        ({"model": "control", "image": "data:image/png;base64,AAAA"}, "image", "InP model"),
        ({"model": "inp", "image": "data:image/png;base64,ZGVmaW5pdGVseSBub3Q="}, "image", "image"),
        ({"image": "data:image/png;base64,***"}, "image", "base64"),
        ({"video": "data:text/html;base64,AAAA"}, "video", "unsupported"),
        ({"video": "job:0123456789abcdef0123456789abcdef"}, "video", "not a finished job"),
        ({"format": "avi"}, "format", "choose one of"),
        ({"trajectory": "[[0, 1]"}, "trajectory", "trajectory"),
        ({"dtype": "float16"}, "dtype", "CPU"),
        ({"lora": "style"}, "lora", "unknown LoRA"),
        ({"guidance": "nan"}, "guidance", "finite"),
    ],
)
def test_bad_requests_name_the_field(server, body, field, words):
    before = set(os.listdir(server.manager.jobs_dir))
    r = server.client.post("/v1/generations", json={**TINY, **body})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", field], detail
    assert words.lower() in detail["msg"].lower(), detail["msg"]
    assert str(server.manager.root) not in detail["msg"]  # no server paths in messages
    assert set(os.listdir(server.manager.jobs_dir)) == before  # nothing kept


def test_bad_bodies(server):
    c = server.client
    r = c.post("/v1/generations", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.text
    r = c.post("/v1/generations", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = c.post("/v1/generations", json=[1, 2])
    assert r.status_code == 422
    r = c.post("/v1/generations", data=TINY, files={"nonsense": ("a.png", b"x", "image/png")})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "nonsense"]
    r = c.post("/v1/generations", data=TINY, files={"image": ("a.exe", b"x", "application/octet-stream")})
    assert r.status_code == 422 and "unsupported" in r.json()["detail"][0]["msg"]


def test_upload_limit_413(server):
    c = server.client
    big = b"x" * ((1 << 20) + 1)
    r = c.post(
        "/v1/generations", content=b'{"prompt": "' + big + b'"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]
    r = c.post("/v1/generations", data=TINY, files={"video": ("big.mp4", big, "video/mp4")})
    assert r.status_code == 413

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"x" * 65536

    r = c.post("/v1/generations", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.get("/v1/health").status_code == 200  # the server is fine


def test_queue_full_429_cancel_and_fifo(server):
    c = server.client
    blocker = c.post("/v1/generations", json=SLOW).json()
    wait_running(c, blocker["id"])
    queued = []
    for i in range(server.settings.max_queue):
        r = c.post("/v1/generations", json={**TINY, "seed": i})
        assert r.status_code == 202, r.text
        assert r.json()["queue_position"] == i + 1
        queued.append(r.json()["id"])
    r = c.post("/v1/generations", json=TINY)
    assert r.status_code == 429 and r.headers["retry-after"]
    assert "queue full" in r.json()["detail"][0]["msg"]
    # Cancel a queued job: at once; a second cancel conflicts.
    r = c.delete(f"/v1/generations/{queued[0]}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert c.delete(f"/v1/generations/{queued[0]}").status_code == 409
    assert c.delete("/v1/generations/0123456789abcdef0123456789abcdef").status_code == 404
    assert c.get(f"/v1/generations/{queued[0]}/result").status_code == 409
    # Cancel the running job: pipe.interrupt() stops it after the current step.
    t0 = time.monotonic()
    r = c.delete(f"/v1/generations/{blocker['id']}")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    stopped = wait_job(c, blocker["id"], timeout=20)
    assert stopped["status"] == "cancelled" and time.monotonic() - t0 < 20
    assert 1 <= stopped["progress"]["step"] < SLOW["steps"] and stopped["result_url"] is None
    # The rest ran one at a time, in submission order.
    done = [wait_job(c, j) for j in queued[1:]]
    assert all(j["status"] == "succeeded" for j in done)
    started = [j["started"] for j in done]
    finished = [j["finished"] for j in done]
    assert started == sorted(started)
    assert all(f <= s for f, s in zip(finished, started[1:]))


def test_files_route_serves_nothing_outside(server, tmp_path):
    c = server.client
    job = wait_job(c, c.post("/v1/generations", json=TINY).json()["id"])
    good = job["files"]["result"]
    assert raw_get(server.port, good)[0] == 200
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    job_dir = server.manager.jobs_dir / job["id"]
    (job_dir / "escape.mp4").symlink_to(secret)
    (job_dir / "db.mp4").symlink_to(server.manager.root / "jobs.sqlite3")
    jid = job["id"]
    for path in (
        "/v1/files/jobs/../jobs.sqlite3",
        "/v1/files/jobs/%2e%2e/jobs.sqlite3",
        "/v1/files/jobs/..%2fjobs.sqlite3",
        "/v1/files/jobs/%2E%2E%2Fjobs.sqlite3",
        "/v1/files/jobs/%252e%252e/jobs.sqlite3",
        "/v1/files/jobs.sqlite3",
        "/v1/files//etc/passwd",
        "/v1/files/%2Fetc%2Fpasswd",
        "/v1/files/jobs//etc/passwd",
        "/v1/files/jobs/%2Fetc%2Fpasswd",
        f"/v1/files/jobs/{jid}/../../jobs.sqlite3",
        f"/v1/files/jobs/{jid}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"/v1/files/jobs/{jid}/escape.mp4",
        f"/v1/files/jobs/{jid}/db.mp4",
        f"/v1/files/jobs/{jid}/..%5c..%5cjobs.sqlite3",
        f"/v1/files/jobs/{jid}/.result.mp4.tmp",
        f"/v1/files/jobs/{jid}/result.mp4%00.json",
        "/v1/files/" + str(secret),
        "/v1/files/.serve.lock",
        "/v1/generations/..%2F..%2Fjobs.sqlite3/result",
        "/v1/generations/%2e%2e/result",
    ):
        status, body = raw_get(server.port, path)
        assert status in (400, 404), (path, status)
        assert b"TOP-SECRET" not in body and b"SQLite" not in body and b"root:" not in body, path


def test_load_50_requests(server):
    """50 requests from 10 threads: each is queued (and then succeeds) or refused with 429."""
    started = time.monotonic()

    def submit(i: int):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post("/v1/generations", json={**TINY, "seed": 1000 + i})
            return r.status_code, r.json()

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(submit, range(50)))
    codes = [code for code, _ in results]
    assert set(codes) <= {202, 429}, codes
    for code, body in results:
        if code == 429:
            assert body["detail"][0]["type"] == "queue_full"
    accepted = [body["id"] for code, body in results if code == 202]
    assert len(accepted) >= server.settings.max_queue
    for job_id in accepted:
        assert (
            wait_job(server.client, job_id, timeout=max(5.0, 90 - (time.monotonic() - started)))["status"]
            == "succeeded"
        )
    assert time.monotonic() - started < 90
    assert server.client.get("/v1/health").json()["queued"] == 0


# ---- restart ---------------------------------------------------------------------------------------------


def start_process(out: Path, model: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "kinema", "serve", "--port", str(port), "--output-dir", str(out)]
    cmd += ["--model", str(model), "--no-ui", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "kinema serve did not start within 60 s"
        time.sleep(0.1)


def test_restart_keeps_jobs(models, tmp_path):
    """SIGKILL mid-job: finished jobs and results survive, the running job is failed with a reason, the
    queued one runs after the restart. SIGTERM: the running job is failed as 'shut down'."""
    out, port = tmp_path / "out", free_port()
    proc = start_process(out, models["t2v"], port)
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        done = wait_job(c, c.post("/v1/generations", json=TINY).json()["id"])
        assert done["status"] == "succeeded"
        result = c.get(done["result_url"]).content
        running = c.post("/v1/generations", json=SLOW).json()["id"]
        wait_running(c, running)
        queued = c.post("/v1/generations", json={**TINY, "seed": 5}).json()["id"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

        proc = start_process(out, models["t2v"], port)
        listed = {j["id"]: j for j in c.get("/v1/generations").json()["jobs"]}
        assert set(listed) == {done["id"], running, queued}
        assert listed[done["id"]]["status"] == "succeeded"
        assert c.get(done["result_url"]).content == result
        failed = listed[running]
        assert failed["status"] == "failed" and "server stopped while this job was running" in failed["error"]
        assert wait_job(c, queued)["status"] == "succeeded"

        # Graceful stop (SIGTERM): the running job stops after its step and is failed as shut down.
        slow = c.post("/v1/generations", json=SLOW).json()["id"]
        wait_running(c, slow)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutting down
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store = JobStore(out / "jobs.sqlite3")
    try:
        job = store.get(slow)
        assert job["status"] == "failed" and "shut down" in job["error"]
    finally:
        store.close()
