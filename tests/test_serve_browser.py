"""The web UI of ``kinema serve`` in a real browser: Debian's chromium driven by playwright.

The session fixture installs what it needs (``scripts/install_browser.sh``: ``apt-get install chromium``
when /usr/bin/chromium is missing, and the playwright pip package; never ``playwright install``). The
tests are skipped, with the reason, only when chromium cannot be installed.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from kinema.serve.app import create_app  # noqa: E402
from kinema.serve.jobs import ServeSettings  # noqa: E402
from kinema.shapes import embedded_model_path, parse_prompt  # noqa: E402
from kinema.shapes.evaluate import evaluate_clip  # noqa: E402
from kinema.videoio import read_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium and the playwright package, installed by scripts/install_browser.sh if missing."""
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        try:
            r = subprocess.run(
                ["bash", str(ROOT / "scripts" / "install_browser.sh")],
                env={**os.environ, "PYTHON": sys.executable},
                capture_output=True,
                text=True,
                timeout=900,
            )
            reason = (r.stderr or r.stdout)[-800:]
        except (OSError, subprocess.TimeoutExpired) as e:
            reason = str(e)
        importlib.invalidate_caches()
        if not CHROMIUM.exists():
            pytest.skip(f"chromium could not be installed (scripts/install_browser.sh): {reason}")
    pytest.importorskip("playwright.sync_api", reason="the playwright package could not be installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    root = tmp_path_factory.mktemp("serve-ui")
    assert embedded_model_path() is not None, "the embedded ShapesWorld model is not installed"
    # model=None: the server's default, the embedded ShapesWorld family (InP + Control + Camera).
    app = create_app(ServeSettings(output_dir=root / "out", model=None, max_queue=8, ui=True))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def page(chromium, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server + "/")  # redirects to /ui/
            page.wait_for_selector("#prompt textarea")
            yield page
        finally:
            browser.close()


def fill_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def test_ui_generates_a_video_with_progress(page, server, tmp_path):
    assert "/ui" in page.url
    prompt = "a red circle moves from left to right"
    page.locator("#prompt textarea").fill(prompt)
    fill_number(page, "steps", 25)
    page.locator("#generate").click()

    # The per-step progress bar ("12/25 steps") shows while the job runs; then the video appears.
    seen_progress = False
    deadline = time.monotonic() + 90
    while not page.query_selector("#result video[src]"):
        assert time.monotonic() < deadline, "no result video within 90 s"
        text = page.locator("#result").inner_text()
        seen_progress = seen_progress or bool(re.search(r"\d+/25 steps", text))
        time.sleep(0.05)
    assert seen_progress, "the per-step progress bar was never shown"
    src = page.locator("#result video").get_attribute("src")
    assert src and src.endswith("result.mp4")
    page.wait_for_function("document.querySelector('#result video').readyState >= 1")  # it decodes
    assert "succeeded" in page.locator("#status").inner_text()
    assert prompt in page.locator("#parameters").inner_text()

    # The job went through the API's queue, with the embedded model's defaults (17 frames of 64x64).
    jobs = httpx.get(server + "/v1/generations", timeout=10).json()["jobs"]
    ui_jobs = [j for j in jobs if j["source"] == "ui"]
    assert ui_jobs and ui_jobs[0]["status"] == "succeeded" and ui_jobs[0]["parameters"]["steps"] == 25
    video = httpx.get(server + src if src.startswith("/") else src, timeout=30)
    assert video.status_code == 200
    file = tmp_path / "result.mp4"
    file.write_bytes(video.content)
    frames = read_video(file)[0]
    assert frames.shape == (17, 64, 64, 3)
    # What the embedded model drew, seen by ShapesWorld's evaluator: one object, present in most frames (a
    # random model's output has none). Its colour/shape/motion accuracy is the benchmark's job (kinema eval).
    result = evaluate_clip(frames, parse_prompt(prompt, "en"))
    assert result.objects[0].detected and result.objects[0].presence > 0.5, result.objects[0]
    page.get_by_role("button", name="Refresh history").click()
    page.wait_for_function(
        f"document.querySelector('#history').innerText.includes('{ui_jobs[0]['id']}')", timeout=10_000
    )


def test_ui_trajectory_drawing_generates_with_the_control_model(page, server):
    page.get_by_role("tab", name="Trajectory").click()
    canvas = page.locator("#trajectory-canvas img").first
    canvas.wait_for()
    canvas.click(position={"x": 40, "y": 40})
    page.wait_for_function("document.body.innerText.includes('[[[')", timeout=10_000)
    canvas.click(position={"x": 120, "y": 80})
    page.get_by_role("button", name="New track").click()
    canvas.click(position={"x": 200, "y": 60})
    page.wait_for_function(
        "(() => { const t = document.body.innerText; return /\\]\\],\\s*\\[\\[/.test(t); })()", timeout=10_000
    )
    # The embedded family has a Control transformer: the drawn tracks become a trajectory video. The job is
    # followed through the API (the page's status line may still show an earlier job's result).
    page.locator("#generate").click()
    deadline = time.monotonic() + 90
    while True:
        jobs = httpx.get(server + "/v1/generations", timeout=10).json()["jobs"]
        job = next((j for j in jobs if j["source"] == "ui" and j["parameters"].get("trajectory")), None)
        if job is not None and job["status"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, f"the trajectory job did not finish within 90 s: {job}"
        time.sleep(0.2)
    assert job["status"] == "succeeded" and job["model"]["transformer"].endswith("transformer_control"), job


def test_ui_serves_no_files_outside(server):
    """Gradio's file route (no browser needed) serves nothing outside its cache and the jobs folder."""
    import http.client

    port = int(server.rsplit(":", 1)[1])
    for path in (
        "/ui/gradio_api/file=/etc/passwd",
        "/ui/gradio_api/file=pyproject.toml",
        f"/ui/gradio_api/file={ROOT / 'pyproject.toml'}",
        "/ui/gradio_api/file=../../etc/passwd",
        "/ui/gradio_api/file=%2Fetc%2Fpasswd",
    ):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("GET", path)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status in (403, 404), (path, resp.status)
        assert b"root:" not in body and b"[project]" not in body, path
