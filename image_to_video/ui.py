"""The Gradio page: upload, prompt, settings, Generate/Cancel, progress, result, your jobs, history.

Generate submits a job to the job queue and follows it; the job belongs to this
browser (an id kept in its local storage), so a reload or a closed tab loses
nothing: "Your jobs" shows it again, with its queue position and progress.

``build_ui`` returns a ``gr.Blocks`` without starting anything; ``server.create_app``
mounts it with the queue and server settings the app needs. All limits, defaults
and presets come from the config; none is written here.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from .config import PROJECT_DIR, AppConfig
from .engine import ModelState, Progress, format_seconds
from .errors import AppError, InvalidInput
from .examples import ensure_examples
from .jobs import CANCELLED, DONE, QUEUED, RUNNING, Job, JobQueue

log = logging.getLogger(__name__)

STATIC_DIR = PROJECT_DIR / "static"
RANDOM_SEED = -1

_HELP = {
    "image": "The first frame of your video. Any photo works; it is centre-cropped to a square.",
    "prompt": "Describe the motion in English, e.g. 'the waves roll in slowly'. Name what moves "
              "and how; the picture already shows what things look like.",
    "negative": "What to avoid, e.g. 'blurry, distorted, flickering'. Leave empty if unsure.",
    "resolution": "Output size. Higher is sharper but slower and needs more GPU memory: "
                  "768p takes about twice the time and memory of 512p, 1024p about four times.",
    "frames": "Number of frames. More frames make a longer video; time and memory grow in proportion.",
    "fps": "Playback speed, and how fast the model makes things move. 8 is smooth and calm; "
           "higher is shorter and faster. Costs nothing extra.",
    "steps": "Denoising steps. More steps give finer detail; time grows in proportion "
             "(30 is a quick draft, 50 the standard, 80+ for the final cut).",
    "guidance": "How closely to follow the prompt. 7-12 works best; too high looks harsh, "
                "too low ignores the prompt. Costs nothing extra.",
    "seed": "The same seed with the same inputs gives the same video. Tick 'Random seed' for a new "
            "variation each time; the seed used is shown with the result.",
}


class UploadedImage(gr.Image):
    """``gr.Image`` that hands over the uploaded file untouched.

    The stock component opens the file with Pillow first and fails with a bare
    error on anything unreadable; the app's own normaliser gives a clear message.
    """

    is_template = True  # rendered by the frontend's ordinary Image component

    def preprocess(self, payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)


class Slider(gr.Slider):
    """``gr.Slider`` whose value is checked by the app, so an API caller's out-of-range
    value gets the same message naming the parameter as everyone else."""

    is_template = True

    def preprocess(self, payload):
        return payload


class SeedNumber(gr.Number):
    """``gr.Number`` checked by the app, like ``Slider``."""

    is_template = True

    def preprocess(self, payload):
        return payload


def build_ui(config: AppConfig, queue: JobQueue) -> gr.Blocks:
    """Build the page. Nothing is started or loaded here."""
    return _Page(config, queue).build()


class _Page:
    def __init__(self, config: AppConfig, queue: JobQueue):
        self.config = config
        self.queue = queue
        self.service = queue.service
        self.settings = config.generation

    # -- layout ----------------------------------------------------------------

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Image-to-Video") as demo:
            self._header()
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    inputs = self._inputs()
                with gr.Column(scale=6):
                    outputs = self._outputs()
            tables = self._tables()
            self._wire(demo, inputs, outputs, tables)
        return demo

    def _tables(self) -> dict[str, Any]:
        # This browser's id, kept in its local storage (set by _OWNER_JS on load).
        c: dict[str, Any] = {"owner": gr.Textbox(visible=False), "selected": gr.State(None)}
        with gr.Tab("Your jobs"):
            c["jobs"] = gr.Dataframe(headers=list(_JOB_COLUMNS), interactive=False, wrap=True, max_height=360,
                                     label="This browser's jobs, newest first: click one to open it")
            with gr.Row():
                c["job_message"] = gr.Markdown("")
                c["retry"] = gr.Button("Retry this job", visible=False, size="sm")
        with gr.Tab("All videos"):
            c["history"] = gr.Dataframe(headers=list(_HISTORY_COLUMNS), value=self._history_rows,
                                        interactive=False, wrap=True, max_height=360,
                                        label="Every video in the output folder, newest first: click one to open it")
        return c

    def _header(self) -> None:
        logo = (STATIC_DIR / "logo.svg").read_text()
        gr.HTML(f'<div class="app-header">{logo}<div><h1>Image-to-Video</h1>'
                "<p>Turn one picture and a sentence into a short video (I2VGen-XL).</p></div></div>")
        if self.config.model.demo:
            gr.Markdown(DEMO_BANNER, elem_classes=["demo-banner"])
        self.status = gr.Markdown(self._status_text, elem_classes=["model-status"])
        self.timer = gr.Timer(2.0)

    def _inputs(self) -> dict[str, gr.components.Component]:
        s, d = self.settings, self.settings.defaults
        c: dict[str, Any] = {}
        c["image"] = UploadedImage(label="Image", type="filepath", sources=["upload", "clipboard"],
                                   height=320)
        gr.Markdown(_HELP["image"])
        c["prompt"] = gr.Textbox(label="Prompt", info=_HELP["prompt"], lines=2,
                                 max_length=s.max_prompt_chars, placeholder="the waves roll in slowly")
        c["negative_prompt"] = gr.Textbox(label="Negative prompt", info=_HELP["negative"],
                                          value=d.negative_prompt, max_length=s.max_prompt_chars)
        c["preset"] = gr.Radio(list(s.presets), label="Preset", value=self._matching_preset(),
                               info="One click sets resolution, frames, FPS, steps and guidance.")
        with gr.Row():
            c["generate"] = gr.Button("Generate", variant="primary", elem_id="generate-button", scale=3)
            c["cancel"] = gr.Button("Cancel", variant="stop", scale=1)
        with gr.Accordion("Settings", open=True):
            c["resolution"] = gr.Radio(list(s.resolutions), value=d.resolution, label="Resolution",
                                       info=_HELP["resolution"])
            c["num_frames"] = Slider(int(s.num_frames.min), int(s.num_frames.max), step=1,
                                        value=d.num_frames, label="Frames", info=_HELP["frames"])
            c["fps"] = Slider(int(s.fps.min), int(s.fps.max), step=1, value=d.fps, label="FPS",
                                 info=_HELP["fps"])
            c["num_inference_steps"] = Slider(int(s.num_inference_steps.min),
                                                 int(s.num_inference_steps.max), step=1,
                                                 value=d.num_inference_steps, label="Steps",
                                                 info=_HELP["steps"])
            c["guidance_scale"] = Slider(s.guidance_scale.min, s.guidance_scale.max, step=0.5,
                                            value=d.guidance_scale, label="Guidance scale",
                                            info=_HELP["guidance"])
            with gr.Row():
                c["random_seed"] = gr.Checkbox(value=d.seed == RANDOM_SEED, label="Random seed")
                c["seed"] = SeedNumber(value=max(d.seed, 0), precision=0, minimum=0, maximum=2**32 - 1,
                                      label="Seed", info=_HELP["seed"], interactive=d.seed != RANDOM_SEED)
        examples = ensure_examples(STATIC_DIR / "examples")
        gr.Examples([[str(path), prompt] for path, prompt in examples], [c["image"], c["prompt"]],
                    label="Examples: click one to try it")
        return c

    def _outputs(self) -> dict[str, gr.components.Component]:
        c: dict[str, Any] = {}
        c["video"] = gr.Video(label="Video", autoplay=True, loop=True, height=420, interactive=False,
                              buttons=["download"])
        c["info"] = gr.Markdown("Your video will appear here.", elem_classes=["result-info"])
        c["files"] = gr.File(label="Download the video and its settings (.json)", file_count="multiple",
                             interactive=False)
        c["reuse_seed"] = gr.Button("Reuse this seed", visible=False, size="sm")
        c["last_seed"] = gr.State(None)
        return c

    # -- events ----------------------------------------------------------------

    def _wire(self, demo, i: dict, o: dict, t: dict) -> None:
        params = [i[k] for k in ("resolution", "num_frames", "fps", "num_inference_steps", "guidance_scale")]
        # Page helpers: instant, outside the GPU queue, and left out of the API docs.
        quick = dict(queue=False, show_progress="hidden", api_visibility="undocumented")
        demo.load(None, None, t["owner"], js=_OWNER_JS, **quick).then(self._job_rows, t["owner"], t["jobs"], **quick)
        self.timer.tick(self._tick, t["owner"], [self.status, t["jobs"]], **quick)
        i["preset"].input(self._apply_preset, i["preset"], params, **quick)
        for component in params:
            component.input(self._preset_for, params, i["preset"], **quick)
        i["random_seed"].change(lambda r: gr.Number(interactive=not r), i["random_seed"], i["seed"], **quick)
        i["generate"].click(
            self.generate,
            [i["image"], i["prompt"], i["negative_prompt"], *params, i["seed"], i["random_seed"], t["owner"]],
            [o["video"], o["info"], o["files"], o["last_seed"], o["reuse_seed"], t["jobs"], t["history"]],
            api_name="generate", concurrency_limit=self.config.jobs.max_queued + 2, trigger_mode="once",
            show_progress_on=[o["video"]],
        )
        i["cancel"].click(self.cancel, t["owner"], o["info"], queue=False, api_name="cancel")
        o["reuse_seed"].click(lambda seed: (False, seed), o["last_seed"], [i["random_seed"], i["seed"]], **quick)
        t["jobs"].select(self._open_job, t["owner"], [o["video"], o["info"], o["files"], t["selected"],
                                                      t["job_message"], t["retry"]], **quick)
        t["retry"].click(self._retry, [t["selected"], t["owner"]], [t["job_message"], t["retry"], t["jobs"]], **quick)
        t["history"].select(self._open_past, None, [o["video"], o["info"], o["files"]], **quick)
        demo.load(self._history_rows, None, t["history"], **quick)

    def generate(self, image, prompt, negative_prompt, resolution, num_frames, fps, steps, guidance,
                 seed, random_seed, owner, request: gr.Request, progress=gr.Progress()):
        """Queue a job for this browser and follow it; every failure becomes a message."""
        owner = owner or _owner(request)
        try:
            job = self.queue.submit(
                image, prompt, owner=owner, source="ui", negative_prompt=negative_prompt, resolution=resolution,
                num_frames=num_frames, fps=fps, num_inference_steps=steps, guidance_scale=guidance,
                seed=RANDOM_SEED if random_seed else seed)
        except AppError as error:
            log.info("Job refused: %s", error)
            raise gr.Error(str(error), print_exception=False) from None
        except Exception:
            log.exception("Submitting a job failed")
            raise gr.Error(_SOMETHING_WRONG, print_exception=False) from None

        def follow(current: Job) -> None:
            if current.state == QUEUED:
                position = self.queue.position(current.id) or 1
                progress(0, desc=f"Waiting in the queue: number {position}")
            elif current.state == RUNNING and current.total:
                report = Progress(current.stage or "", current.done, current.total, 0.0, current.eta)
                progress((current.done, current.total), desc=report.describe())

        job = self.queue.wait(job.id, on_update=follow)
        rows = self._job_rows(owner)
        if job.state == DONE:
            try:
                info = _describe_result(_read_record(job.metadata_path))
            except AppError as error:
                info = str(error)
            files = [job.video_path, job.metadata_path]
            return (job.video_path, info, files, job.params["seed"], gr.Button(visible=True),
                    rows, self._history_rows())
        if job.state == CANCELLED:
            return None, _CANCELLED, None, None, gr.Button(visible=False), rows, gr.skip()
        raise gr.Error(job.message or _SOMETHING_WRONG, print_exception=False)

    def cancel(self, owner, request: gr.Request) -> str:
        """Cancel this browser's unfinished jobs: queued ones at once, the running one at its next step."""
        owner = owner or _owner(request)
        for job in self.queue.list(owner=owner, limit=self.config.jobs.max_queued + 5):
            if not job.finished_state:
                self.queue.cancel(job.id)
        return _CANCELLED

    def _open_job(self, owner, event: gr.SelectData):
        job_id = (event.row_value or [""])[-1]
        try:
            job = self.queue.get(job_id, owner=owner)
        except AppError as error:
            raise gr.Error(str(error), print_exception=False) from None
        retry = gr.Button(visible=job.state in ("failed", "cancelled", "interrupted"))
        if job.state == DONE and job.video_path and Path(job.video_path).is_file():
            record = _read_record(job.metadata_path)
            return (job.video_path, _describe_result(record), [job.video_path, job.metadata_path], job.id,
                    "", retry)
        text = f"**{job.state.capitalize()}**" + (f": {job.message}" if job.message else "")
        return gr.skip(), gr.skip(), gr.skip(), job.id, text, retry

    def _retry(self, job_id, owner):
        if not job_id:
            return "Select a job first.", gr.Button(visible=False), gr.skip()
        try:
            job = self.queue.retry(job_id, owner=owner)
        except AppError as error:
            return str(error), gr.Button(visible=False), gr.skip()
        return (f"Queued again as job `{job.id}`; it appears above and runs when its turn comes.",
                gr.Button(visible=False), self._job_rows(owner))

    def _tick(self, owner):
        return self._status_text(), self._job_rows(owner)

    # -- helpers ---------------------------------------------------------------

    def _status_text(self) -> str:
        status = self.service.engine.status
        icon = {ModelState.READY: "🟢", ModelState.ERROR: "🔴", ModelState.DOWNLOADING: "⬇️",
                ModelState.LOADING: "⏳", ModelState.NOT_LOADED: "⏳"}[status.state]
        text = f"{icon} **Model {status.state.value}**: {status.message}"
        if status.device:
            text += f"  \nDevice: {status.device}"
        if status.is_demo and status.state is ModelState.READY:
            text += "  \nServing the **demo model**: its videos are random noise."
        return text

    def _apply_preset(self, name: str):
        preset = self.settings.presets[name]
        return (preset.resolution, preset.num_frames, preset.fps, preset.num_inference_steps,
                preset.guidance_scale)

    def _preset_for(self, resolution, num_frames, fps, steps, guidance) -> str | None:
        current = (resolution, num_frames, fps, steps, guidance)
        for name in self.settings.presets:
            if self._apply_preset(name) == current:
                return name
        return None

    def _matching_preset(self) -> str | None:
        d = self.settings.defaults
        return self._preset_for(d.resolution, d.num_frames, d.fps, d.num_inference_steps, d.guidance_scale)

    def _job_rows(self, owner: str) -> list[list]:
        if not owner:
            return []
        rows = []
        for job in self.queue.list(owner=owner, limit=50):
            state = job.state
            if job.state == QUEUED:
                state = f"queued (number {self.queue.position(job.id) or 1})"
            elif job.state == RUNNING and job.total:
                state = f"{job.stage} {job.done}/{job.total}"
            created = datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M:%S")
            rows.append([created, job.params.get("prompt", ""), job.params.get("resolution"),
                         job.params.get("num_frames"), job.params.get("seed"), state, job.id])
        return rows

    def _history_rows(self) -> list[list]:
        rows = []
        for record in self.service.history():
            p = record.get("parameters", {})
            rows.append([record.get("created", "")[:19].replace("T", " "), p.get("prompt", ""),
                         p.get("resolution"), p.get("num_frames"), p.get("fps"), p.get("num_inference_steps"),
                         p.get("guidance_scale"), p.get("seed"), record.get("video", "")])
        return rows

    def _open_past(self, event: gr.SelectData):
        name = (event.row_value or [""])[-1]
        for record in self.service.history(limit=1000):
            if record.get("video") == name:
                path = record["video_path"]
                return path, _describe_result(record), [path, str(Path(path).with_suffix(".json"))]
        raise gr.Error("That video is no longer in the output folder.", print_exception=False)


_HISTORY_COLUMNS = ("Created", "Prompt", "Resolution", "Frames", "FPS", "Steps", "Guidance", "Seed", "File")
_JOB_COLUMNS = ("Created", "Prompt", "Resolution", "Frames", "Seed", "State", "Job")
# A random id per browser, kept across reloads and server restarts; getRandomValues also
# works on plain http from another machine, where crypto.randomUUID does not.
_OWNER_JS = """() => {
  let id = localStorage.getItem("image-to-video-owner");
  if (!id) {
    id = "browser-" + Array.from(crypto.getRandomValues(new Uint8Array(16)),
                                 (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("image-to-video-owner", id);
  }
  return id;
}"""
_CANCELLED = "**Cancelled.** Nothing was saved. Change the settings if you like and press Generate again."
_SOMETHING_WRONG = ("Something went wrong while making the video. Please try again; if it keeps happening, "
                    "the log file in logs/ has the details.")


def _read_record(path: str | None) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, TypeError, ValueError):
        raise InvalidInput("The record of this video is missing from the output folder.") from None


def _owner(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _describe_result(record: dict) -> str:
    p, t, v = record["parameters"], record["timings_s"], record["video_info"]
    text = (f"**Done** in {format_seconds(t['total'])}: {v['width']}x{v['height']}, {v['frames']} frames "
            f"at {v['fps']:g} fps ({v['duration_s']:.1f} s), seed **{p['seed']}**.  \n"
            f"Saved as `{record['video']}` in the output folder, with its settings in "
            f"`{Path(record['video']).with_suffix('.json').name}`.")
    if record["model"]["demo"]:
        text += "  \nMade with the demo model: the video is noise by design."
    return text


DEMO_BANNER = """\
**Demo mode: this is not the real model.** It serves a tiny built-in model with random weights, so
the whole app works on any machine, but every video it makes is coloured noise.
To make real videos, run the app on a machine with an NVIDIA GPU (12 GB or more):
`bash start_app.sh` there loads I2VGen-XL (about 5 GB, downloaded once into `models/`).
See the README for details."""
