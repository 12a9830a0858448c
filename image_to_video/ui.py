"""The Gradio page: upload, prompt, settings, Generate/Cancel, progress, result, your jobs, history.

Generate submits a job to the job queue and follows it; the job belongs to this
browser (an id kept in its local storage), so a reload or a closed tab loses
nothing: "Your jobs" shows it again, with its queue position and progress.

The page speaks English and Simplified Chinese: it follows the browser's language
(remembered once switched), and every label, help text, status and message
follows the switch. Texts live in ``i18n.py``.

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
from .errors import AppError
from .estimates import estimate, nearest_fitting
from .examples import ensure_examples
from .i18n import LANGUAGES, localized, normalise_language, preset_label, t
from .jobs import CANCELLED, DONE, QUEUED, RUNNING, Job, JobQueue

log = logging.getLogger(__name__)

STATIC_DIR = PROJECT_DIR / "static"
RANDOM_SEED = -1

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
        #: (component, {property: text key}) for everything that changes with the language.
        self._texts: list[tuple[Any, dict[str, Any]]] = []

    def _say(self, component, **keys):
        """Register ``component``'s translatable properties (a text key, a list of them, or a function
        of the language); returns the component."""
        self._texts.append((component, keys))
        return component

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
            self._help()
            self._wire(demo, inputs, outputs, tables)
        return demo

    def _header(self) -> None:
        with gr.Row(equal_height=True):
            with gr.Column(scale=5):
                self.subtitle = gr.HTML(self._title_html("en"))
            with gr.Column(scale=1, min_width=180):
                self.lang = gr.Radio([(name, code) for code, name in LANGUAGES.items()], value="en",
                                     show_label=False, elem_id="language", container=False)
        if self.config.model.demo:
            self._say(gr.Markdown(t("demo_banner"), elem_classes=["demo-banner"]), value="demo_banner")
        # Filled in the page's language as soon as the page has loaded (see _wire), then every tick.
        self.status = gr.Markdown(self._status_text("en"), elem_classes=["model-status"], elem_id="model-status")
        self.timer = gr.Timer(2.0)

    def _title_html(self, lang: str) -> str:
        logo = (STATIC_DIR / "logo.svg").read_text()
        return (f'<div class="app-header">{logo}<div><h1>Image-to-Video</h1>'
                f"<p>{t('subtitle', lang)}</p></div></div>")

    def _inputs(self) -> dict[str, gr.components.Component]:
        s, d = self.settings, self.settings.defaults
        say = self._say
        c: dict[str, Any] = {}
        c["image"] = say(UploadedImage(label=t("image"), type="filepath", sources=["upload", "clipboard"],
                                       height=320), label="image")
        say(gr.Markdown(t("image_help")), value="image_help")
        c["prompt"] = say(gr.Textbox(label=t("prompt"), info=t("prompt_help"), lines=2, elem_id="prompt",
                                     max_length=s.max_prompt_chars, placeholder="the waves roll in slowly"),
                          label="prompt", info="prompt_help")
        c["negative_prompt"] = say(gr.Textbox(label=t("negative"), info=t("negative_help"),
                                              value=d.negative_prompt, max_length=s.max_prompt_chars),
                                   label="negative", info="negative_help")
        c["preset"] = say(gr.Radio(self._preset_choices("en"), label=t("preset"), value=self._matching_preset(),
                                   info=t("preset_help"), elem_id="preset"),
                          label="preset", info="preset_help", choices=self._preset_choices)
        with gr.Row():
            c["generate"] = say(gr.Button(t("generate"), variant="primary", elem_id="generate-button", scale=3),
                                value="generate")
            c["cancel"] = say(gr.Button(t("cancel"), variant="stop", scale=1, elem_id="cancel-button"),
                              value="cancel")
        with say(gr.Accordion(t("settings"), open=True), label="settings"):
            c["resolution"] = say(gr.Radio(list(s.resolutions), value=d.resolution, label=t("resolution"),
                                           info=t("resolution_help")), label="resolution", info="resolution_help")
            c["num_frames"] = self._slider("frames", s.num_frames, d.num_frames, 1)
            c["fps"] = self._slider("fps", s.fps, d.fps, 1)
            c["num_inference_steps"] = self._slider("steps", s.num_inference_steps, d.num_inference_steps, 1)
            c["guidance_scale"] = self._slider("guidance", s.guidance_scale, d.guidance_scale, 0.5)
            c["estimate"] = gr.Markdown(self._estimate_text("en", d.resolution, d.num_frames, d.num_inference_steps),
                                        elem_id="estimate")
            with gr.Row():
                c["random_seed"] = say(gr.Checkbox(value=d.seed == RANDOM_SEED, label=t("random_seed")),
                                       label="random_seed")
                c["seed"] = say(SeedNumber(value=max(d.seed, 0), precision=0, minimum=0, maximum=2**32 - 1,
                                           label=t("seed"), info=t("seed_help"), interactive=d.seed != RANDOM_SEED),
                                label="seed", info="seed_help")
        examples = ensure_examples(STATIC_DIR / "examples")
        shown = gr.Examples([[str(path), prompt] for path, prompt in examples], [c["image"], c["prompt"]],
                            label=t("examples"))
        say(shown.dataset, label="examples", headers=["image", "prompt"])
        return c

    def _slider(self, key: str, limits, value, step) -> Slider:
        integer = step == 1
        low, high = (int(limits.min), int(limits.max)) if integer else (limits.min, limits.max)
        return self._say(Slider(low, high, step=step, value=value, label=t(key), info=t(f"{key}_help")),
                         label=key, info=f"{key}_help")

    def _outputs(self) -> dict[str, gr.components.Component]:
        say = self._say
        c: dict[str, Any] = {}
        c["video"] = say(gr.Video(label=t("video"), autoplay=True, loop=True, height=420, interactive=False,
                                  elem_id="result-video", buttons=["download"]), label="video")
        c["preview"] = say(gr.Image(label=t("preview"), visible=False, interactive=False, height=160,
                                    elem_id="live-preview", buttons=[]), label="preview")
        c["info"] = gr.Markdown(t("video_placeholder"), elem_classes=["result-info"], elem_id="result-info")
        c["files"] = say(gr.File(label=t("downloads"), file_count="multiple", interactive=False), label="downloads")
        c["reuse_seed"] = say(gr.Button(t("reuse_seed"), visible=False, size="sm"), value="reuse_seed")
        c["last_seed"] = gr.State(None)
        return c

    def _tables(self) -> dict[str, Any]:
        say = self._say
        # This browser's id, kept in its local storage (set by _OWNER_JS on load).
        c: dict[str, Any] = {"owner": gr.Textbox(visible=False), "selected": gr.State(None)}
        with say(gr.Tab(t("your_jobs")), label="your_jobs"):
            c["jobs"] = say(gr.Dataframe(headers=_headers(_JOB_COLUMNS, "en"), interactive=False, wrap=True,
                                         max_height=360, elem_id="your-jobs", label=t("your_jobs_help")),
                            label="your_jobs_help")
            with gr.Row():
                c["job_message"] = gr.Markdown("")
                c["retry"] = say(gr.Button(t("retry"), visible=False, size="sm"), value="retry")
        with say(gr.Tab(t("all_videos")), label="all_videos"):
            c["history"] = say(gr.Dataframe(value=lambda: self._history_table("en"), interactive=False, wrap=True,
                                            max_height=360, elem_id="all-videos", label=t("all_videos_help")),
                               label="all_videos_help")
            c["picked"] = gr.State(None)
            with gr.Row(visible=False) as c["actions"]:
                c["reuse"] = say(gr.Button(t("reuse_settings"), size="sm", elem_id="reuse-settings"),
                                 value="reuse_settings")
                c["same_seed"] = say(gr.Button(t("same_seed"), size="sm", elem_id="same-seed"), value="same_seed")
                c["delete"] = say(gr.Button(t("delete"), size="sm", variant="stop", elem_id="delete-video"),
                                  value="delete")
            c["history_message"] = gr.Markdown("")
        return c

    def _help(self) -> None:
        with self._say(gr.Accordion(t("help"), open=False, elem_id="help"), label="help"):
            self.manual = gr.Markdown(_manual("en"), elem_id="manual")

    # -- events ----------------------------------------------------------------

    def _wire(self, demo, i: dict, o: dict, c: dict) -> None:
        params = [i[k] for k in ("resolution", "num_frames", "fps", "num_inference_steps", "guidance_scale")]
        lang = self.lang
        # Page helpers: instant, outside the GPU queue, and left out of the API docs.
        quick = dict(queue=False, show_progress="hidden", api_visibility="undocumented")
        translated = [component for component, _keys in self._texts]
        demo.load(None, None, [c["owner"], lang], js=_BROWSER_JS, **quick).then(
            self._tick, [c["owner"], lang], [self.status, c["jobs"]], **quick)
        lang.change(self._relabel, [lang, o["video"]], [*translated, self.subtitle, self.manual, self.status, o["info"]],
                    js=_REMEMBER_LANGUAGE_JS, **quick).then(
            self._tables_for, [c["owner"], lang], [c["jobs"], c["history"]], **quick)
        self.timer.tick(self._tick, [c["owner"], lang], [self.status, c["jobs"]], **quick)
        i["preset"].input(self._apply_preset, i["preset"], params, **quick)
        for component in params:
            component.input(self._preset_for, params, i["preset"], **quick)
        i["random_seed"].change(lambda r: gr.Number(interactive=not r), i["random_seed"], i["seed"], **quick)
        sizing = [lang, i["resolution"], i["num_frames"], i["num_inference_steps"]]
        for trigger in (i["resolution"].change, i["num_frames"].change, i["num_inference_steps"].change,
                        lang.change):
            trigger(self._estimate_text, sizing, i["estimate"], **quick)
        # On a GPU too small for the default preset, start from the largest preset that fits.
        demo.load(self._fitting_defaults, None, [*params, i["preset"]], **quick)
        i["generate"].click(
            self.generate,
            [i["image"], i["prompt"], i["negative_prompt"], *params, i["seed"], i["random_seed"], c["owner"], lang],
            [o["video"], o["info"], o["files"], o["last_seed"], o["reuse_seed"], c["jobs"], c["history"],
             o["preview"]],
            api_name="generate", concurrency_limit=self.config.jobs.max_queued + 2, trigger_mode="once",
            show_progress_on=[o["video"]],
        )
        i["cancel"].click(self.cancel, [c["owner"], lang], o["info"], queue=False, api_name="cancel")
        o["reuse_seed"].click(lambda seed: (False, seed), o["last_seed"], [i["random_seed"], i["seed"]], **quick)
        c["jobs"].select(self._open_job, [c["owner"], lang], [o["video"], o["info"], o["files"], c["selected"],
                                                              c["job_message"], c["retry"]], **quick)
        c["retry"].click(self._retry, [c["selected"], c["owner"], lang], [c["job_message"], c["retry"], c["jobs"]],
                         **quick)
        c["history"].select(self._open_past, lang, [o["video"], o["info"], o["files"], c["picked"], c["actions"]],
                            **quick)
        form = [i["image"], i["prompt"], i["negative_prompt"], *params, i["random_seed"], i["seed"], i["preset"],
                c["history_message"]]
        c["reuse"].click(lambda name, lang: self._reuse(name, lang, keep_prompt=True), [c["picked"], lang], form,
                         **quick)
        c["same_seed"].click(lambda name, lang: self._reuse(name, lang, keep_prompt=False), [c["picked"], lang], form,
                             **quick)
        c["delete"].click(self._delete, [c["picked"], lang],
                          [c["history"], c["history_message"], c["actions"], o["video"], o["files"]], **quick)

    def generate(self, image, prompt, negative_prompt, resolution, num_frames, fps, steps, guidance,
                 seed, random_seed, owner, lang, request: gr.Request, progress=gr.Progress()):
        """Queue a job for this browser and follow it; every failure becomes a message."""
        owner = owner or _owner(request)
        try:
            job = self.queue.submit(
                image, prompt, owner=owner, source="ui", negative_prompt=negative_prompt, resolution=resolution,
                num_frames=num_frames, fps=fps, num_inference_steps=steps, guidance_scale=guidance,
                seed=RANDOM_SEED if random_seed else seed)
        except AppError as error:
            log.info("Job refused: %s", error)
            raise gr.Error(localized(error, lang), print_exception=False) from None
        except Exception:
            log.exception("Submitting a job failed")
            raise gr.Error(t("err_something_wrong", lang), print_exception=False) from None

        shown_state = [None]

        def follow(current: Job) -> None:
            # wait() below returns every half second for the preview; show each change once.
            snapshot = (current.state, current.stage, current.done, self.queue.position(current.id))
            if snapshot == shown_state[0]:
                return
            shown_state[0] = snapshot
            if current.state == QUEUED:
                progress(0, desc=t("waiting", lang, position=self.queue.position(current.id) or 1))
            elif current.state == RUNNING and current.total:
                report = Progress(current.stage or "", current.done, current.total, 0.0, current.eta)
                progress((current.done, current.total), desc=_describe_progress(report, lang))

        shown = None
        while True:  # follow the job, showing each new live preview
            job = self.queue.wait(job.id, on_update=follow, timeout=0.5)
            preview = self.queue.preview(job.id)
            if preview is not None and preview is not shown:
                shown = preview
                yield (*[gr.skip()] * 7, gr.Image(value=preview, visible=True))
            if job.finished_state:
                break
        rows = self._job_table(owner, lang)
        hidden = gr.Image(value=None, visible=False)
        if job.state == DONE:
            yield (*_result_view(job, lang), job.params["seed"], gr.Button(visible=True),
                   rows, self._history_table(lang), hidden)
            return
        if job.state == CANCELLED:
            yield None, t("cancelled_info", lang), None, None, gr.Button(visible=False), rows, gr.skip(), hidden
            return
        raise gr.Error(job.localized_message(lang) or t("err_something_wrong", lang), print_exception=False)

    def cancel(self, owner, lang, request: gr.Request) -> str:
        """Cancel this browser's unfinished jobs: queued ones at once, the running one at its next step."""
        owner = owner or _owner(request)
        for job in self.queue.list(owner=owner, limit=self.config.jobs.max_queued + 5):
            if not job.finished_state:
                self.queue.cancel(job.id)
        return t("cancelled_info", lang)

    def _open_job(self, owner, lang, event: gr.SelectData):
        job_id = (event.row_value or [""])[-1]
        try:
            job = self.queue.get(job_id, owner=owner)
        except AppError as error:
            raise gr.Error(localized(error, lang), print_exception=False) from None
        retry = gr.Button(visible=job.state in ("failed", "cancelled", "interrupted"))
        if job.state == DONE and job.video_path and Path(job.video_path).is_file():
            return (*_result_view(job, lang), job.id, "", retry)
        message = job.localized_message(lang)
        text = f"**{_state_label(job.state, lang)}**" + (f": {message}" if message else "")
        return gr.skip(), gr.skip(), gr.skip(), job.id, text, retry

    def _retry(self, job_id, owner, lang):
        if not job_id:
            return t("select_job", lang), gr.Button(visible=False), gr.skip()
        try:
            job = self.queue.retry(job_id, owner=owner)
        except AppError as error:
            return localized(error, lang), gr.Button(visible=False), gr.skip()
        return t("queued_again", lang, job=job.id), gr.Button(visible=False), self._job_table(owner, lang)

    def _tick(self, owner, lang):
        return self._status_text(lang), self._job_table(owner, lang)

    def _relabel(self, lang: str, video: str | None = None) -> list:
        """Every translatable property of the page, in ``lang``; the shown video's description too."""
        lang = normalise_language(lang)
        updates = []
        for _component, keys in self._texts:
            updates.append(gr.update(**{prop: _in_language(key, lang) for prop, key in keys.items()}))
        # The player holds a copy of the video under its own name: find its record by that name.
        record = self.service.find_video(Path(video).name) if video else None
        info = _describe_result(record, lang) if record else t("video_placeholder", lang)
        return [*updates, self._title_html(lang), _manual(lang), self._status_text(lang), info]

    def _tables_for(self, owner, lang):
        return self._job_table(owner, lang), self._history_table(lang)

    # -- helpers ---------------------------------------------------------------

    def _status_text(self, lang: str = "en") -> str:
        status = self.service.engine.status
        icon = {ModelState.READY: "🟢", ModelState.ERROR: "🔴", ModelState.DOWNLOADING: "⬇️",
                ModelState.LOADING: "⏳", ModelState.NOT_LOADED: "⏳"}[status.state]
        state = t(f"model_state_{status.state.value}", lang)
        text = f"{icon} **{state}**" if status.state is ModelState.READY else f"{icon} **{state}**: {status.text(lang)}"
        if status.device:
            text += "  \n" + t("device_line", lang, device=status.device_text(lang))
        if status.is_demo and status.state is ModelState.READY:
            text += "  \n" + t("demo_serving", lang)
        return text

    def _estimate_text(self, lang, resolution, frames, steps) -> str:
        side = self.settings.resolutions.get(resolution)
        if side is None:
            return ""
        engine = self.service.engine
        gpu = engine.gpu_memory_gb
        demo = engine.status.is_demo
        guess = estimate(side, int(frames), int(steps), gpu_gb=gpu, demo=demo, gpu_name=engine.gpu_name)
        if guess.time_measured_on:
            where = t("estimate_where_measured", lang, gpu=guess.time_measured_on)
        else:
            where = t("estimate_where_demo" if demo else "estimate_where_gpu", lang)
        text = t("estimate", lang, peak=f"{guess.peak_gb:.1f}", time=format_seconds(guess.seconds, lang),
                 gpu=t("estimate_gpu", lang, gpu=f"{gpu:.0f}") if gpu else "", where=where)
        if guess.peak_measured_on:
            text += " " + t("estimate_note_measured", lang, gpu=guess.peak_measured_on)
        else:
            text += " " + t("estimate_note", lang)
        if not guess.fits:
            limits = (int(self.settings.num_frames.min), int(self.settings.num_frames.max))
            nearest = nearest_fitting(self.settings.resolutions, limits, resolution, int(frames), gpu)
            text += "  \n" + (t("estimate_too_big", lang, resolution=nearest[0], frames=nearest[1]) if nearest
                              else t("estimate_nothing_fits", lang))
        return text

    def _fitting_defaults(self):
        """The default settings, or on a small GPU the largest preset that fits in it."""
        d = self.settings.defaults
        current = (d.resolution, d.num_frames, d.fps, d.num_inference_steps, d.guidance_scale)
        gpu = self.service.engine.gpu_memory_gb
        if gpu is None or estimate(self.settings.resolutions[d.resolution], d.num_frames, d.num_inference_steps,
                                   gpu_gb=gpu, demo=False).fits:
            return (*current, self._preset_for(*current))
        fitting = [(self.settings.resolutions[p.resolution] ** 2 * p.num_frames, name)
                   for name, p in self.settings.presets.items()
                   if estimate(self.settings.resolutions[p.resolution], p.num_frames, p.num_inference_steps,
                               gpu_gb=gpu, demo=False).fits]
        if not fitting:
            return (*current, self._preset_for(*current))
        name = max(fitting)[1]
        return (*self._apply_preset(name), name)

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

    def _preset_choices(self, lang: str) -> list[tuple[str, str]]:
        return [(preset_label(name, lang), name) for name in self.settings.presets]

    def _matching_preset(self) -> str | None:
        d = self.settings.defaults
        return self._preset_for(d.resolution, d.num_frames, d.fps, d.num_inference_steps, d.guidance_scale)

    def _job_table(self, owner: str, lang: str) -> dict:
        rows = []
        for job in self.queue.list(owner=owner, limit=50) if owner else []:
            state = _state_label(job.state, lang)
            if job.state == QUEUED:
                state = t("state_queued", lang, position=self.queue.position(job.id) or 1)
            elif job.state == RUNNING and job.total:
                state = t("state_running", lang, stage=t(f"stage_{job.stage}", lang), done=job.done,
                          total=job.total)
            created = datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M:%S")
            rows.append([created, job.params.get("prompt", ""), job.params.get("resolution"),
                         job.params.get("num_frames"), job.params.get("seed"), state, job.id])
        return {"headers": _headers(_JOB_COLUMNS, lang), "data": rows}

    def _history_table(self, lang: str) -> dict:
        rows = []
        for record in self.service.history():
            p = record.get("parameters", {})
            rows.append([record.get("created", "")[:19].replace("T", " "), p.get("prompt", ""),
                         p.get("resolution"), p.get("num_frames"), p.get("fps"), p.get("num_inference_steps"),
                         p.get("guidance_scale"), p.get("seed"), record.get("video", "")])
        return {"headers": _headers(_HISTORY_COLUMNS, lang), "data": rows}

    def _open_past(self, lang, event: gr.SelectData):
        name = (event.row_value or [""])[-1]
        record = self.service.find_video(name)
        if record is None:
            raise gr.Error(t("err_video_gone", lang), print_exception=False)
        path = record["video_path"]
        return (path, _describe_result(record, lang), [path, str(Path(path).with_suffix(".json"))], name,
                gr.Row(visible=True))

    def _reuse(self, name, lang, *, keep_prompt: bool):
        """Fill the form with a past video's picture, settings and seed (and prompt, if kept)."""
        record = self.service.find_video(name or "")
        if record is None:
            raise gr.Error(t("err_video_gone", lang), print_exception=False)
        p = record["parameters"]
        values = (p["resolution"], p["num_frames"], p["fps"], p["num_inference_steps"], p["guidance_scale"])
        message = t("settings_loaded", lang, video=record["video"]) if keep_prompt else t("new_prompt_hint", lang)
        return (record["image_path"] or gr.skip(), p["prompt"] if keep_prompt else "", p["negative_prompt"],
                *values, False, p["seed"], self._preset_for(*values), message)

    def _delete(self, name, lang):
        if name:
            self.service.delete_video(name)
        return (self._history_table(lang), t("deleted", lang, video=name), gr.Row(visible=False), None, None)


_HISTORY_COLUMNS = ("created", "prompt", "resolution", "frames", "fps", "steps", "guidance", "seed", "file")
_JOB_COLUMNS = ("created", "prompt", "resolution", "frames", "seed", "state", "job")
# On load: this browser's id (random, kept in local storage across reloads and server
# restarts; getRandomValues also works on plain http, where crypto.randomUUID does not)
# and its language (the one chosen before, else the browser's).
_BROWSER_JS = """() => {
  let id = localStorage.getItem("image-to-video-owner");
  if (!id) {
    id = "browser-" + Array.from(crypto.getRandomValues(new Uint8Array(16)),
                                 (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("image-to-video-owner", id);
  }
  const chosen = localStorage.getItem("image-to-video-language");
  const lang = chosen || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en");
  return [id, lang];
}"""
_REMEMBER_LANGUAGE_JS = """(lang, video) => {
  localStorage.setItem("image-to-video-language", lang);
  return [lang, video];
}"""


def _headers(columns: tuple[str, ...], lang: str) -> list[str]:
    return [t(f"col_{column}", lang) for column in columns]


def _state_label(state: str, lang: str) -> str:
    """done, failed, cancelled, interrupted (and running) in ``lang``."""
    return t("state_running_plain" if state == RUNNING else f"state_{state}", lang)


def _describe_progress(report: Progress, lang: str) -> str:
    text = f"{t('stage_' + report.stage, lang)} {report.done}/{report.total}"
    if report.eta is not None:
        text += " · " + t("time_left", lang, time=format_seconds(report.eta, lang))
    return text


def _manual(lang: str) -> str:
    name = "MANUAL.zh-CN.md" if normalise_language(lang) == "zh-CN" else "MANUAL.md"
    try:
        return (PROJECT_DIR / "docs" / name).read_text(encoding="utf-8")
    except OSError:
        return ""


def _result_view(job: Job, lang: str) -> tuple[str, str, list[str]]:
    """A finished job as the page shows it: the video, its description, the files to download."""
    try:
        info = _describe_result(json.loads(Path(job.metadata_path).read_text(encoding="utf-8")), lang)
    except (OSError, TypeError, ValueError):
        info = t("err_record_missing", lang)
    return job.video_path, info, [job.video_path, job.metadata_path]


def _in_language(key, lang: str):
    """One registered property's value in ``lang`` (see ``_Page._say``)."""
    if callable(key):
        return key(lang)
    return [t(k, lang) for k in key] if isinstance(key, list) else t(key, lang)


def _owner(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _describe_result(record: dict, lang: str = "en") -> str:
    p, timing, v = record["parameters"], record["timings_s"], record["video_info"]
    text = t("done", lang, time=format_seconds(timing["total"], lang), width=v["width"], height=v["height"],
             frames=v["frames"], fps=f"{v['fps']:g}", duration=f"{v['duration_s']:.1f}", seed=p["seed"],
             video=record["video"], record=Path(record["video"]).with_suffix(".json").name)
    if record["model"]["demo"]:
        text += "  \n" + t("done_demo", lang)
    return text


DEMO_BANNER = t("demo_banner")
