"""What the page does when something happens: each handler returns ``{component: value}``.

Handlers are grouped by the part of the page they serve; each group is handed the objects it
needs (the queue, the output folder, the model's status, the generation settings) and the
``Page`` dataclass that names the components it updates. Gradio leaves a declared output that
a handler's dict omits unchanged; a dict is never empty (Gradio would take ``{}`` as a value).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import gradio as gr

from ..config import PARAMETER_NAMES, GenerationSettings
from ..errors import AppError
from ..estimates import estimate
from ..i18n import localized, normalise_language, t
from ..job_queue import JobQueue
from ..job_store import CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, Job
from ..model_status import ModelStatus
from ..outputs import OutputFolder
from ..progress import Progress
from . import views
from .components import Outputs, Page

log = logging.getLogger(__name__)

RANDOM_SEED = -1
#: Rows of the "Your jobs" table.
JOBS_SHOWN = 50
#: How long one wait for a job's change lasts before the live preview is looked at again.
PREVIEW_EVERY_S = 0.5


class ModelInfo(Protocol):
    """What the page reads of the model (the engine has these)."""

    @property
    def status(self) -> ModelStatus: ...
    @property
    def gpu_memory_gb(self) -> float | None: ...
    @property
    def gpu_name(self) -> str | None: ...


def _error(error: AppError, lang: str) -> gr.Error:
    return gr.Error(localized(error, lang), print_exception=False)


def _owner(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def finished_job(job: Job, out: Outputs, lang: str) -> dict:
    """A done job as the page shows it: the video, its description, the files to download."""
    try:
        record = json.loads(Path(job.metadata_path).read_text(encoding="utf-8"))
        info = views.result_text({**record, "record_path": job.metadata_path}, lang)
    except (OSError, TypeError, ValueError, KeyError):
        info = t("err_record_missing", lang)
    return {out.video: job.video_path, out.info: info, out.files: [job.video_path, job.metadata_path]}


def read_manual(docs_dir: Path, lang: str) -> str:
    """The user manual in ``lang`` (empty if it is missing)."""
    try:
        return (docs_dir / views.manual_name(lang)).read_text(encoding="utf-8")
    except OSError:
        return ""


class Tables:
    """The two tables' current values."""

    def __init__(self, queue: JobQueue, outputs: OutputFolder):
        self.queue = queue
        self.outputs = outputs

    def jobs(self, owner: str, lang: str) -> dict:
        listed = self.queue.list(owner=owner, limit=JOBS_SHOWN) if owner else []
        return views.job_table(listed, self.queue.position, lang)

    def history(self, lang: str) -> dict:
        return views.history_table(self.outputs.history(), lang)


class Live:
    """What changes by itself: the model's status and this browser's jobs (on load and every tick),
    and the page's language."""

    def __init__(self, page: Page, tables: Tables, outputs: OutputFolder, model: ModelInfo, *,
                 logo_svg: str, docs_dir: Path):
        self.page, self.tables, self.outputs, self.model = page, tables, outputs, model
        self.logo_svg, self.docs_dir = logo_svg, docs_dir

    def tick(self, owner, lang) -> dict:
        return {self.page.status: views.status_text(self.model.status, lang),
                self.page.jobs.table: self.tables.jobs(owner, lang)}

    def relabel(self, lang, video=None) -> dict:
        """Every translatable property of the page in ``lang``; the shown video's description too."""
        lang = normalise_language(lang)
        page = self.page
        # The player holds a copy of the video under the video's own name: find its record by that.
        record = self.outputs.find(Path(video).name) if video else None
        return {**page.translations.updates(lang),
                page.subtitle: views.title_html(self.logo_svg, lang),
                page.manual: read_manual(self.docs_dir, lang),
                page.status: views.status_text(self.model.status, lang),
                page.outputs.info: views.result_text(record, lang) if record else t("video_placeholder", lang)}

    def both_tables(self, owner, lang) -> dict:
        return {self.page.jobs.table: self.tables.jobs(owner, lang),
                self.page.history.table: self.tables.history(lang)}



class Settings:
    """The generation settings: presets, the estimate, the seed box."""

    def __init__(self, page: Page, settings: GenerationSettings, model: ModelInfo):
        self.inputs, self.settings, self.model = page.inputs, settings, model

    def _form(self, values: tuple) -> dict:
        """The five settings (``config.PARAMETERS`` order) and the preset they match."""
        return {**dict(zip(self.inputs.parameters, values)), self.inputs.preset: self.settings.preset_for(values)}

    def apply_preset(self, name) -> dict:
        return dict(zip(self.inputs.parameters, self.settings.presets[name].values()))

    def match_preset(self, *values) -> dict:
        return {self.inputs.preset: self.settings.preset_for(values)}

    def estimate(self, lang, resolution, frames, steps) -> dict:
        model = self.model
        return {self.inputs.estimate: views.estimate_text(
            self.settings, lang, resolution, frames, steps, gpu_gb=model.gpu_memory_gb,
            gpu_name=model.gpu_name, demo=model.status.is_demo)}

    def fitting_defaults(self) -> dict:
        """The default settings, or on a GPU too small for them the largest preset that fits in it."""
        defaults, gpu = self.settings.defaults, self.model.gpu_memory_gb
        if gpu is None or self._fits(defaults, gpu):
            return self._form(defaults.values())
        fitting = [(self.settings.resolutions[p.resolution] ** 2 * p.num_frames, name)
                   for name, p in self.settings.presets.items() if self._fits(p, gpu)]
        if not fitting:
            return self._form(defaults.values())
        return self._form(self.settings.presets[max(fitting)[1]].values())

    def _fits(self, values, gpu: float) -> bool:
        side = self.settings.resolutions[values.resolution]
        return estimate(side, values.num_frames, values.num_inference_steps, gpu_gb=gpu, demo=False).fits

    def seed_box(self, random_seed) -> dict:
        return {self.inputs.seed: gr.Number(interactive=not random_seed)}

    def reuse_seed(self, seed) -> dict:
        return {self.inputs.random_seed: False, self.inputs.seed: seed}


class Generation:
    """Generate and Cancel: submit a job for this browser and follow it until it has finished."""

    def __init__(self, page: Page, queue: JobQueue, tables: Tables, *, max_listed: int):
        self.page, self.queue, self.tables, self.max_listed = page, queue, tables, max_listed

    # The parameter names are the /generate API's (gradio_client callers may pass them by name).
    def generate(self, image, prompt, negative_prompt, resolution, num_frames, fps, steps, guidance,
                 seed, random_seed, owner, lang, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """Queue a job for this browser and follow it; every failure becomes a message."""
        owner = owner or _owner(request)
        settings = dict(zip(PARAMETER_NAMES, (resolution, num_frames, fps, steps, guidance)))
        try:
            job = self.queue.submit(image, prompt, owner=owner, source="ui", negative_prompt=negative_prompt,
                                    seed=RANDOM_SEED if random_seed else seed, **settings)
        except AppError as error:
            log.info("Job refused: %s", error)
            raise _error(error, lang) from None
        except Exception:
            log.exception("Submitting a job failed")
            raise gr.Error(t("err_something_wrong", lang), print_exception=False) from None
        yield from self._follow(job, owner, lang, progress)

    def _follow(self, job: Job, owner: str, lang: str, progress):
        out = self.page.outputs
        shown_progress = [None]

        def report(current: Job) -> None:
            position = self.queue.position(current.id)
            snapshot = (current.state, current.stage, current.done, position)
            if snapshot == shown_progress[0]:  # wait() below returns every half second: show each change once
                return
            shown_progress[0] = snapshot
            if current.state == QUEUED:
                progress(0, desc=views.waiting_text(position, lang))
            elif current.state == RUNNING and current.total:
                step = Progress(current.stage or "", current.done, current.total, 0.0, current.eta)
                progress((current.done, current.total), desc=views.progress_text(step, lang))

        shown_preview = None
        while True:
            job = self.queue.wait(job.id, on_update=report, timeout=PREVIEW_EVERY_S)
            preview = self.queue.preview(job.id)
            if preview is not None and preview is not shown_preview:
                shown_preview = preview
                yield {out.preview: gr.Image(value=preview, visible=True)}
            if job.finished_state:
                break
        finished = {self.page.jobs.table: self.tables.jobs(owner, lang),
                    out.preview: gr.Image(value=None, visible=False)}
        if job.state == DONE:
            yield {**finished, **finished_job(job, out, lang), out.last_seed: job.params["seed"],
                   out.reuse_seed: gr.Button(visible=True), self.page.history.table: self.tables.history(lang)}
        elif job.state == CANCELLED:
            yield {**finished, out.video: None, out.info: t("cancelled_info", lang), out.files: None,
                   out.last_seed: None, out.reuse_seed: gr.Button(visible=False)}
        else:
            raise gr.Error(job.localized_message(lang) or t("err_something_wrong", lang), print_exception=False)

    def cancel(self, owner, lang, request: gr.Request) -> dict:
        """Cancel this browser's unfinished jobs: queued ones at once, the running one at its next step."""
        owner = owner or _owner(request)
        for job in self.queue.list(owner=owner, limit=self.max_listed):
            if not job.finished_state:
                self.queue.cancel(job.id, owner=owner)
        return {self.page.outputs.info: t("cancelled_info", lang)}


class JobActions:
    """"Your jobs": open a job, retry a failed one."""

    def __init__(self, page: Page, queue: JobQueue, tables: Tables):
        self.page, self.queue, self.tables = page, queue, tables

    def open(self, owner, lang, event: gr.SelectData) -> dict:
        job_id = (event.row_value or [""])[-1]
        try:
            job = self.queue.get(job_id, owner=owner)
        except AppError as error:
            raise _error(error, lang) from None
        tab = self.page.jobs
        shown = {tab.selected: job.id,
                 tab.retry: gr.Button(visible=job.state in (FAILED, CANCELLED, INTERRUPTED))}
        if job.state == DONE and job.video_path and Path(job.video_path).is_file():
            return {**shown, **finished_job(job, self.page.outputs, lang), tab.message: ""}
        return {**shown, tab.message: views.job_message(job, self.queue.position(job.id), lang)}

    def retry(self, job_id, owner, lang) -> dict:
        tab = self.page.jobs
        hidden = gr.Button(visible=False)
        if not job_id:
            return {tab.message: t("select_job", lang), tab.retry: hidden}
        try:
            job = self.queue.retry(job_id, owner=owner)
        except AppError as error:
            return {tab.message: localized(error, lang), tab.retry: hidden}
        return {tab.message: t("queued_again", lang, job=job.id), tab.retry: hidden,
                tab.table: self.tables.jobs(owner, lang)}


class HistoryActions:
    """"All videos": open a past video, fill the form with its settings, delete it."""

    def __init__(self, page: Page, outputs: OutputFolder, settings: GenerationSettings, tables: Tables):
        self.page, self.outputs, self.settings, self.tables = page, outputs, settings, tables

    def _record(self, name, lang) -> dict:
        record = self.outputs.find(name or "")
        if record is None:
            raise gr.Error(t("err_video_gone", lang), print_exception=False)
        return record

    def open(self, lang, event: gr.SelectData) -> dict:
        name = (event.row_value or [""])[-1]
        record = self._record(name, lang)
        out = self.page.outputs
        return {out.video: record["video_path"], out.info: views.result_text(record, lang),
                out.files: [record["video_path"], record["record_path"]], self.page.history.picked: name,
                self.page.history.actions: gr.Row(visible=True)}

    def reuse_settings(self, name, lang) -> dict:
        return self._reuse(name, lang, keep_prompt=True)

    def same_seed(self, name, lang) -> dict:
        return self._reuse(name, lang, keep_prompt=False)

    def _reuse(self, name, lang, *, keep_prompt: bool) -> dict:
        """Fill the form with a past video's picture, settings and seed (and prompt, if kept)."""
        record = self._record(name, lang)
        p, form = record["parameters"], self.page.inputs
        values = tuple(p[key] for key in PARAMETER_NAMES)
        message = t("settings_loaded", lang, video=record["video"]) if keep_prompt else t("new_prompt_hint", lang)
        filled = {form.prompt: p["prompt"] if keep_prompt else "", form.negative_prompt: p["negative_prompt"],
                  **dict(zip(form.parameters, values)), form.random_seed: False, form.seed: p["seed"],
                  form.preset: self.settings.preset_for(values), self.page.history.message: message}
        if record["image_path"]:
            filled[form.image] = record["image_path"]
        return filled

    def delete(self, name, lang) -> dict:
        if name:
            try:
                self.outputs.delete(name)
            except AppError as error:
                raise _error(error, lang) from None
        tab, out = self.page.history, self.page.outputs
        return {tab.table: self.tables.history(lang), tab.message: t("deleted", lang, video=name),
                tab.actions: gr.Row(visible=False), out.video: None, out.files: None}
