"""The Gradio UI of ``kinema serve`` (mounted at /ui). It submits through the same JobManager as the API.

Tabs pick the mode (T2V, I2V, V2V, control, trajectory, camera, long video); the shared panel holds the
model, LoRA, sampler, steps, guidance, seed, size/frames (with the token-budget helper) and output
format. A job's progress is polled from the queue and shown as a per-step progress bar; the result
appears with its parameters, and the history lists past jobs (click a row to show it).
"""

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kinema.config import SAMPLERS, GenerationConfig

from .jobs import FINISHED, JobManager
from .schema import OUTPUT_FORMATS, RequestError

MODES = ("t2v", "i2v", "v2v", "control", "trajectory", "camera", "long")
ASPECTS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
NO_LORA = "(none)"
TRACK_COLORS = ((230, 60, 60), (60, 160, 230), (80, 200, 80), (240, 200, 40), (200, 80, 220), (40, 220, 200))
POLL_SECONDS = 0.25
HISTORY_COLUMNS = ["id", "status", "mode", "prompt", "steps", "size", "created", "seconds"]


def ui_theme():
    import gradio as gr

    # System fonts only: the default theme would fetch web fonts, which an offline machine cannot.
    return gr.themes.Default(
        font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "monospace"],
    )


# ---- helpers (plain Python, tested without a browser) ------------------------------------------------


def tracks_payload(tracks: list[list[list[float]]], size: tuple[int, int], frames: int | None) -> dict | None:
    """Clicked points -> the key-point track format of kinema.control (``[[frame, x, y], ...]`` per track),
    the points of a track spread evenly over the frames; ``size`` is the canvas (width, height)."""
    tracks = [t for t in tracks if t]
    if not tracks:
        return None
    last = max((frames or 49) - 1, 0)
    out = []
    for track in tracks:
        n = len(track)
        out.append(
            [
                [round(i * last / (n - 1)) if n > 1 else 0, float(x), float(y)]
                for i, (x, y) in enumerate(track)
            ]
        )
    return {"tracks": out, "width": int(size[0]), "height": int(size[1]), "normalized": False}


def draw_tracks(base: str | None, tracks: list[list[list[float]]]):
    """The canvas image with the tracks drawn on it (PIL image)."""
    from PIL import Image, ImageDraw

    im = Image.open(base).convert("RGB") if base else blank_canvas()
    draw = ImageDraw.Draw(im)
    r = max(3, min(im.size) // 80)
    for k, track in enumerate(tracks):
        color = TRACK_COLORS[k % len(TRACK_COLORS)]
        points = [(float(x), float(y)) for x, y in track]
        if len(points) > 1:
            draw.line(points, fill=color, width=max(2, r // 2))
        for i, (x, y) in enumerate(points):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color if i else (255, 255, 255), outline=color)
    return im


def blank_canvas(size: tuple[int, int] = (512, 288)):
    from PIL import Image

    return Image.new("RGB", size, (96, 96, 96))


def ui_request(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[str, Path]]]:
    """The UI's inputs -> (request fields, file uploads) for JobManager.submit. RequestError if the
    active tab misses its required input."""
    mode = data["mode"] or "t2v"
    params: dict[str, Any] = {
        "prompt": data["prompt"] or "",
        "negative_prompt": data["negative_prompt"] or None,
        "model": data["model"] or "default",
        "sampler": data["sampler"],
        "steps": _int(data["steps"]),
        "guidance": float(data["guidance"]),
        "seed": _int(data["seed"]),
        "height": _int(data["height"]) or None,  # 0 / empty: the model's default
        "width": _int(data["width"]) or None,
        "frames": _int(data["frames"]) or None,
        "fps": _int(data["fps"]) or 8,
        "format": data["format"],
        "lora_weight": float(data["lora_weight"]),
    }
    uploads: dict[str, tuple[str, Path]] = {}

    def file(field: str, value: Any, required: str | None = None) -> None:
        if value:
            path = Path(
                value if isinstance(value, str) else value["path"] if isinstance(value, dict) else value
            )
            uploads[field] = (path.name, path)
        elif required:
            raise RequestError(f"{field}: {required}", field=field)

    if data["lora_file"]:
        file("lora", data["lora_file"])
    elif data["lora"] and data["lora"] != NO_LORA:
        params["lora"] = data["lora"]
    if mode == "i2v":
        file("image", data["i2v_image"], "upload a start image")
        file("end_image", data["i2v_end"])
    elif mode == "v2v":
        file("video", data["v2v_video"], "upload the input video")
        file("mask", data["v2v_mask"])
        params["strength"] = float(data["v2v_strength"])
    elif mode == "control":
        file("control_video", data["control_video"], "upload a control video")
        params["control_type"] = data["control_type"]
        file("reference_image", data["control_ref"])
    elif mode == "trajectory":
        if data["traj_file"]:
            file("trajectory", data["traj_file"])
        else:
            size = data["traj_size"] or blank_canvas().size
            payload = tracks_payload(data["tracks"] or [], size, params["frames"])
            if payload is None:
                raise RequestError(
                    "trajectory: upload a tracks JSON file or click points on the first frame",
                    field="trajectory",
                )
            params["trajectory"] = payload
        file("reference_image", data["traj_ref"])
    elif mode == "camera":
        if data["cam_file"]:
            file("camera", data["cam_file"])
        elif (data["cam_spec"] or "").strip():
            params["camera"] = data["cam_spec"].strip()
        elif data["cam_presets"]:
            params["camera"] = "+".join(data["cam_presets"])
        else:
            raise RequestError("camera: pick presets, type a spec or upload a pose file", field="camera")
        file("reference_image", data["cam_ref"])
    elif mode == "long":
        file("image", data["long_image"])
        params["chunk_frames"] = _int(data["chunk_frames"])
        params["overlap_frames"] = _int(data["overlap_frames"])
    return params, uploads


def ui_error(e: RequestError) -> str:
    """A refusal as the UI shows it: 'Invalid <field>: <message>'."""
    return f"Invalid {e.field}: {e.message}" if e.field else e.message


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(round(float(value)))


def token_info(height: Any, width: Any, frames: Any) -> str:
    from kinema import sizes

    h, w, f = _int(height) or None, _int(width) or None, _int(frames) or None
    if not (h and w):
        return "Size: the model's default (in the aspect of the first input)."
    try:
        sizes.validate_size(h, w, f or sizes.DEFAULT_FRAMES)
        tokens = sizes.token_count(h, w, f or sizes.DEFAULT_FRAMES)
    except ValueError as e:
        return f"⚠ {e}"
    return f"{w}×{h}, {f or sizes.DEFAULT_FRAMES} frames → **{tokens} tokens** (V5.1 trains at 13312)."


def fit_budget(budget: Any, aspect: str, frames: Any):
    """Token-budget helper: the largest size of ``aspect`` (w:h) within ``budget`` tokens."""
    from kinema import sizes

    try:
        h, w, f = sizes.size_for_budget(_int(budget) or 13312, aspect, _int(frames) or None)
    except ValueError as e:
        import gradio as gr

        raise gr.Error(str(e)) from None
    return h, w, f


def history_rows(manager: JobManager, limit: int = 100) -> list[list[Any]]:
    jobs, _ = manager.list(limit=limit)
    rows = []
    for j in jobs:
        info = j["info"] or {}
        size = f"{info['width']}×{info['height']}×{info['frames']}" if "width" in info else ""
        seconds = round(j["finished"] - j["started"], 1) if j["finished"] and j["started"] else ""
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["created"]))
        prompt = (j["request"].get("prompt") or "")[:60]
        rows.append(
            [j["id"], j["status"], j["mode"], prompt, j["request"].get("steps"), size, created, seconds]
        )
    return rows


def job_view(manager: JobManager, job_id: str | None):
    """(status markdown, video path, image path, parameters) of a job for the result panel."""
    job = manager.get(job_id) if job_id else None
    if job is None:
        return "", None, None, None
    path = manager.result_path(job)
    video = image = None
    if path is not None:
        if path.suffix.lower() in (".png", ".gif", ".jpg", ".webp"):
            image = str(path)
        else:
            video = str(path)
    status = f"**{job['status']}** · job `{job['id']}` · {job['mode']}"
    if job["status"] == "succeeded" and job["info"]:
        status += f" · {job['info'].get('seconds', '?')} s"
    if job["error"]:
        status += f"\n\n{job['error']}"
    params = {
        "job": job["id"],
        "status": job["status"],
        "model": job["model"],
        "parameters": job["request"],
        "resolved": job["info"] or None,
        "error": job["error"],
    }
    return status, video, image, params


# ---- the Blocks ------------------------------------------------------------------------------------------


def build_ui(manager: JobManager):
    import gradio as gr

    from kinema.control import CAMERA_PRESETS

    defaults = GenerationConfig()
    canvas_dir = Path(tempfile.mkdtemp(prefix="kinema-ui-"))
    blank_path = canvas_dir / "blank.png"
    blank_canvas().save(blank_path)

    def model_choices() -> list[tuple[str, str]]:
        out = []
        for m in manager.models():
            label = m["name"] + (f" ({'+'.join(m['types'])})" if m["types"] else "") + f" - {m['source']}"
            out.append((label, m["name"]))
        return out

    def lora_choices() -> list[str]:
        return [NO_LORA] + [x["name"] for x in manager.loras()]

    with gr.Blocks(title="kinema", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        mode = gr.State("t2v")
        current_job = gr.State(None)
        tracks = gr.State([])
        traj_base = gr.State(str(blank_path))
        traj_size = gr.State(list(blank_canvas().size))

        gr.Markdown(
            "# kinema\nText / image / video → video. Jobs share one queue with the REST API (`/docs`)."
        )
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="negative-prompt")
                with gr.Tabs(elem_id="modes"):
                    with gr.Tab("Text → video", id="t2v") as tab_t2v:
                        gr.Markdown("Generate from the prompt alone.")
                    with gr.Tab("Image → video", id="i2v") as tab_i2v:
                        i2v_image = gr.Image(label="Start image", type="filepath", elem_id="i2v-image")
                        i2v_end = gr.Image(label="End image (optional)", type="filepath")
                        gr.Markdown("Needs an InP model.")
                    with gr.Tab("Video → video", id="v2v") as tab_v2v:
                        v2v_video = gr.Video(label="Input video", sources=["upload"])
                        v2v_mask = gr.File(
                            label="Mask image or video (white = regenerate; optional)",
                            file_types=["image", "video"],
                            type="filepath",
                            height=110,
                        )
                        v2v_strength = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="Strength")
                    with gr.Tab("Control", id="control") as tab_control:
                        control_video = gr.Video(label="Control video", sources=["upload"])
                        control_type = gr.Radio(
                            ["raw", "canny"],
                            value="raw",
                            label="Control type (raw: ready-made depth/pose/...)",
                        )
                        control_ref = gr.Image(label="Reference image (optional)", type="filepath")
                        gr.Markdown("Needs a Control model.")
                    with gr.Tab("Trajectory", id="trajectory") as tab_traj:
                        traj_file = gr.File(
                            label="Tracks JSON (docs/control.md)",
                            file_types=[".json"],
                            type="filepath",
                            height=110,
                        )
                        gr.Markdown(
                            "…or draw: upload the first frame (or use the grey canvas) and **click points** "
                            "along a track; *New track* starts another object. The points of a track are "
                            "spread evenly over the frames."
                        )
                        traj_canvas = gr.Image(
                            value=str(blank_path),
                            label="First frame (click to add points)",
                            type="filepath",
                            sources=["upload"],
                            elem_id="trajectory-canvas",
                        )
                        with gr.Row():
                            new_track = gr.Button("New track", size="sm")
                            clear_tracks = gr.Button("Clear tracks", size="sm")
                        traj_json = gr.Code(label="Drawn tracks", language="json", interactive=False)
                        traj_ref = gr.Image(label="Reference image (optional)", type="filepath")
                        gr.Markdown("Needs a Control model.")
                    with gr.Tab("Camera", id="camera") as tab_camera:
                        cam_presets = gr.CheckboxGroup(
                            list(CAMERA_PRESETS), label="Presets (combined with +)"
                        )
                        cam_spec = gr.Textbox(
                            label="…or a spec",
                            placeholder="zoom_in+pan_left   (chained segments: zoom_in,pan_left)",
                        )
                        cam_file = gr.File(
                            label="…or a CameraCtrl pose file (.txt)",
                            file_types=[".txt"],
                            type="filepath",
                            height=110,
                        )
                        cam_ref = gr.Image(label="Reference image (optional)", type="filepath")
                        gr.Markdown("Needs a Control-Camera model.")
                    with gr.Tab("Long video", id="long") as tab_long:
                        long_image = gr.Image(label="Start image (optional)", type="filepath")
                        chunk_frames = gr.Slider(5, 49, value=25, step=4, label="Chunk frames (4k+1)")
                        overlap_frames = gr.Slider(1, 16, value=4, step=1, label="Overlap frames")
                        gr.Markdown("Chained I2V chunks up to *Frames* below; needs an InP model.")
                with gr.Accordion("Model and sampling", open=True):
                    with gr.Row():
                        model = gr.Dropdown(
                            model_choices(), value="default", label="Model", elem_id="model", scale=4
                        )
                        refresh_models = gr.Button("↻", size="sm", scale=0, min_width=40)
                    with gr.Row():
                        lora = gr.Dropdown(lora_choices(), value=NO_LORA, label="LoRA")
                        lora_file = gr.File(
                            label="…or upload a LoRA",
                            file_types=[".safetensors"],
                            type="filepath",
                            height=110,
                        )
                        lora_weight = gr.Slider(
                            0.0, 2.0, value=defaults.lora_weight, step=0.05, label="LoRA weight"
                        )
                    with gr.Row():
                        sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler, label="Sampler")
                        steps = gr.Slider(
                            1, 100, value=defaults.steps, step=1, label="Steps", elem_id="steps"
                        )
                        guidance = gr.Slider(0.0, 20.0, value=defaults.guidance, step=0.5, label="Guidance")
                        seed = gr.Number(value=defaults.seed, precision=0, label="Seed", elem_id="seed")
                with gr.Accordion("Size and frames", open=True):
                    with gr.Row():
                        height = gr.Number(
                            0,
                            precision=0,
                            minimum=0,
                            label="Height (px, ×16; 0 = model default)",
                            elem_id="height",
                        )
                        width = gr.Number(
                            0,
                            precision=0,
                            minimum=0,
                            label="Width (px, ×16; 0 = model default)",
                            elem_id="width",
                        )
                        frames = gr.Number(
                            0, precision=0, minimum=0, label="Frames (4k+1; 0 = default)", elem_id="frames"
                        )
                        fps = gr.Number(defaults.fps, precision=0, label="fps")
                        fmt = gr.Dropdown(list(OUTPUT_FORMATS), value="mp4", label="Format")
                    with gr.Row():
                        aspect = gr.Dropdown(list(ASPECTS), value="16:9", label="Aspect (w:h)")
                        budget = gr.Number(13312, precision=0, label="Token budget")
                        fit = gr.Button("Fit size to budget")
                    tokens_md = gr.Markdown(token_info(None, None, None))
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                video = gr.Video(
                    label="Result", interactive=False, elem_id="result", autoplay=True, loop=True
                )
                image = gr.Image(
                    label="Result (image / GIF)", interactive=False, visible=False, elem_id="result-image"
                )
                params_json = gr.JSON(label="Parameters", elem_id="parameters")
        with gr.Accordion("History", open=True):
            refresh_history = gr.Button("Refresh history", size="sm")
            history = gr.Dataframe(
                value=history_rows(manager),
                headers=HISTORY_COLUMNS,
                interactive=False,
                wrap=True,
                elem_id="history",
            )

        # -- mode follows the selected tab
        for tab, name in (
            (tab_t2v, "t2v"),
            (tab_i2v, "i2v"),
            (tab_v2v, "v2v"),
            (tab_control, "control"),
            (tab_traj, "trajectory"),
            (tab_camera, "camera"),
            (tab_long, "long"),
        ):
            tab.select(lambda n=name: n, None, mode, queue=False)

        # -- size helper
        for comp in (height, width, frames):
            comp.change(token_info, [height, width, frames], tokens_md, queue=False)
        fit.click(fit_budget, [budget, aspect, frames], [height, width, frames], queue=False)

        refresh_models.click(
            lambda: (gr.update(choices=model_choices()), gr.update(choices=lora_choices())),
            None,
            [model, lora],
            queue=False,
        )

        # -- trajectory drawing
        def canvas_uploaded(path):
            from PIL import Image

            if not path:
                return str(blank_path), list(blank_canvas().size), [], ""
            with Image.open(path) as im:
                size = list(im.size)
            return path, size, [], ""

        def add_point(base, current, evt: gr.SelectData):
            current = [list(t) for t in (current or [])] or [[]]
            x, y = evt.index[0], evt.index[1]
            current[-1].append([x, y])
            drawn = [t for t in current if t]
            return draw_tracks(base, drawn), current, json.dumps(drawn)

        def start_track(current):
            current = [list(t) for t in (current or [])]
            if not current or current[-1]:
                current.append([])
            return current

        traj_canvas.upload(canvas_uploaded, traj_canvas, [traj_base, traj_size, tracks, traj_json])
        traj_canvas.select(add_point, [traj_base, tracks], [traj_canvas, tracks, traj_json])
        new_track.click(start_track, tracks, tracks, queue=False)
        clear_tracks.click(
            lambda base: (base, [], ""), traj_base, [traj_canvas, tracks, traj_json], queue=False
        )

        # -- generate / cancel / history
        named = {
            "mode": mode,
            "prompt": prompt,
            "negative_prompt": negative,
            "model": model,
            "sampler": sampler,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
            "height": height,
            "width": width,
            "frames": frames,
            "fps": fps,
            "format": fmt,
            "lora": lora,
            "lora_file": lora_file,
            "lora_weight": lora_weight,
            "i2v_image": i2v_image,
            "i2v_end": i2v_end,
            "v2v_video": v2v_video,
            "v2v_mask": v2v_mask,
            "v2v_strength": v2v_strength,
            "control_video": control_video,
            "control_type": control_type,
            "control_ref": control_ref,
            "traj_file": traj_file,
            "tracks": tracks,
            "traj_size": traj_size,
            "traj_ref": traj_ref,
            "cam_presets": cam_presets,
            "cam_spec": cam_spec,
            "cam_file": cam_file,
            "cam_ref": cam_ref,
            "long_image": long_image,
            "chunk_frames": chunk_frames,
            "overlap_frames": overlap_frames,
        }
        outputs = [current_job, status, video, image, params_json, history]

        def show(job_id: str | None):
            text, vid, img, params = job_view(manager, job_id)
            return (
                text,
                gr.update(value=vid, visible=img is None),
                gr.update(value=img, visible=img is not None),
                params,
            )

        def run(*values, progress=gr.Progress()):  # noqa: B008 (gradio injects it)
            data = dict(zip(named, values))
            try:
                params, uploads = ui_request(data)
                job = manager.submit(params, uploads, source="ui")
            except RequestError as e:
                raise gr.Error(ui_error(e), title="Refused") from None
            job_id = job["id"]
            yield job_id, f"**queued** · job `{job_id}`", gr.update(), gr.update(), gr.update(), gr.update()
            while True:
                job = manager.get(job_id)
                if job is None or job["status"] in FINISHED:
                    break
                if job["status"] == "queued":
                    progress(0.0, desc=f"queued (position {job['queue_position']})")
                else:
                    total = max(job["total"] or 1, job["step"], 1)
                    progress((job["step"], total), desc="sampling", unit="steps")
                time.sleep(POLL_SECONDS)
            yield (job_id, *show(job_id), history_rows(manager))

        def cancel_job(job_id: str | None):
            if not job_id:
                return "Nothing to cancel."
            try:
                job, done = manager.cancel(job_id)
            except KeyError:
                return f"No job {job_id}."
            except RequestError as e:
                return e.message
            return f"**{'cancelled' if done else 'cancelling'}** · job `{job_id}`"

        def select_history(evt: gr.SelectData):
            row = evt.row_value or []
            job_id = row[0] if row else None
            return (job_id, *show(job_id))

        generate.click(run, list(named.values()), outputs, concurrency_limit=8, show_progress="full")
        cancel.click(cancel_job, current_job, status, queue=False)
        refresh_history.click(lambda: history_rows(manager), None, history, queue=False)
        history.select(select_history, None, [current_job, status, video, image, params_json], queue=False)
        demo.load(lambda: history_rows(manager), None, history, queue=False)
    return demo
