"""What the page does when something happens: each handler returns ``{component: value}``.

Handlers are grouped by the part of the page they serve; each group is handed the objects it
needs (the queue, the output folder, the model's status, the generation settings) and the
``Page`` dataclass that names the components it updates. Gradio leaves a declared output that
a handler's dict omits unchanged; a dict is never empty (Gradio would take ``{}`` as a value).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Protocol

import gradio as gr
from PIL import Image

from .. import families, loras
from ..config import PARAMETER_NAMES, PARAMETERS, AppConfig, GenerationSettings
from ..errors import AppError
from ..estimates import LEARNED_FILE, LearnedTimes, estimate, machine_key, plan_of
from ..finishing import last_frame
from ..i18n import localized, normalise_language, preset_label, t
from ..job_queue import JobQueue
from ..job_store import CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, Job
from ..model_status import ModelStatus
from ..outputs import DERIVED, OutputFolder, VideoFiles, everything_zip
from ..progress import Progress
from ..request import QUALITIES, clean_prompt
from . import views
from .components import Inputs, Outputs, Page, uploaded_file

log = logging.getLogger(__name__)

RANDOM_SEED = -1
#: Rows of the "Your jobs" table.
JOBS_SHOWN = 50
#: Videos in the gallery (newest first).
GALLERY_SHOWN = 24
#: A job Generate follows itself: for this long after it ends, the tick leaves showing it to Generate.
OWN_RESULT_GRACE_S = 5.0
#: How long one wait for a job's change lasts before the live preview is looked at again.
PREVIEW_EVERY_S = 0.5
#: A second Generate with the same picture and settings within this time follows the first job.
DUPLICATE_WITHIN_S = 5.0


class ModelInfo(Protocol):
    """What the page reads of the model (the engine has these)."""

    @property
    def status(self) -> ModelStatus: ...
    @property
    def gpu_memory_gb(self) -> float | None: ...
    @property
    def gpu_name(self) -> str | None: ...


def untraced(card: families.Card) -> str:
    """The model's name when ``estimates`` does not trace its memory (its family's own table may), else ""."""
    return "" if card.family == "i2vgen-xl" else card.title


def table_needs(card: families.Card, resolution, frames) -> dict[str, float] | None:
    """GB per memory mode for this video from the family's own traced table (Wan's), fastest mode first;
    None for I2VGen-XL (``estimates`` has it) or for values it cannot read."""
    try:
        return families.memory_needs(card, str(resolution), int(frames)) or None
    except (KeyError, TypeError, ValueError, OSError):
        return None


def _error(error: AppError, lang: str) -> gr.Error:
    return gr.Error(localized(error, lang), print_exception=False)


class PageOwners:
    """Who a page is: an id the server issues and signs, so a browser can keep one (in its local
    storage, across reloads and restarts) but never make one up or take another's.

    A token is ``<32 hex>.<HMAC-SHA256 of it>`` under a key kept in ``key_file`` (made on first
    use, readable by this user only). The owner it stands for is ``page:<32 hex>``: a namespace
    of its own, never equal to the HTTP API's ``api`` or the command line's ``cli``.
    """

    def __init__(self, key_file: Path):
        self.key_file = Path(key_file)
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def issue(self) -> str:
        """A fresh token for a new page."""
        ident = secrets.token_hex(16)
        return f"{ident}.{self._sign(ident)}"

    def owner(self, token) -> str | None:
        """The owner ``token`` stands for, or None for a missing, malformed or forged one."""
        ident, dot, signature = token.partition(".") if isinstance(token, str) else ("", "", "")
        if not dot or len(ident) != 32 or not hmac.compare_digest(signature, self._sign(ident)):
            return None
        return f"page:{ident}"

    def kept_or_new(self, token) -> str:
        """``token`` if it is valid, else a fresh one."""
        return token if self.owner(token) else self.issue()

    def _sign(self, ident: str) -> str:
        return hmac.new(self._secret(), ident.encode(), hashlib.sha256).hexdigest()

    def _secret(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = _read_or_make_key(self.key_file)
            return self._key


def _read_or_make_key(path: Path) -> bytes:
    """The key in ``path``; made (32 random bytes, mode 0600) if there is none yet."""
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def finished_job(job: Job, out: Outputs, lang: str) -> dict:
    """A done job as the page shows it: the video, its description, the files to download, and
    "Continue this video"."""
    try:
        record = json.loads(Path(job.metadata_path).read_text(encoding="utf-8"))
        info = views.result_text({**record, "record_path": job.metadata_path}, lang)
    except (OSError, TypeError, ValueError, KeyError):
        info = t("err_record_missing", lang)
    return {out.video: job.video_path, out.info: info,
            out.files: shown_files(downloads(job.video_path, job.metadata_path)),
            out.continue_video: gr.Button(visible=True), out.shown: Path(job.video_path).name}


def shown_files(paths: list[str]) -> list[str]:
    """The downloads under the video, as a plain list (what /generate's API callers get)."""
    return paths


def no_files() -> None:
    """No downloads."""
    return None


def following_text(job: Job, position: int | None, lang: str) -> str:
    """A job the video area follows while it waits or runs: its state (place in the queue, stage and
    steps) and its id."""
    return "⏳ " + t("following_job", lang, state=f"**{views.job_state_text(job, position, lang)}**", job=job.id)


def cleared(out: Outputs, info: str) -> dict:
    """The video area with no result: the old video, its files and its buttons gone, ``info`` said."""
    return {out.video: None, out.info: info, out.files: no_files(), out.continue_video: gr.Button(visible=False),
            out.reuse_seed: gr.Button(visible=False), out.shown: None,
            out.preview: gr.Image(value=None, visible=False)}


def downloads(video_path: str, record_path: str | None) -> list[str]:
    """A video's files to download: the video, what was derived beside it, its record, and all of them in
    one zip (``outputs.everything_zip``)."""
    video = Path(video_path)
    files = VideoFiles(video.parent, video.stem)
    derived = [str(path) for kind in DERIVED if (path := files.companion(kind)).is_file()]
    everything = everything_zip(files)
    return [video_path, *derived, *([record_path] if record_path else []), *([str(everything)] if everything else [])]


def read_manual(docs_dir: Path, lang: str) -> str:
    """The user manual in ``lang`` (empty if it is missing)."""
    try:
        return (docs_dir / views.manual_name(lang)).read_text(encoding="utf-8")
    except OSError:
        return ""


class Tables:
    """The two tables' current values."""

    def __init__(self, queue: JobQueue, outputs: OutputFolder, workers=None):
        self.queue = queue
        self.outputs = outputs
        self.list_workers = workers

    def jobs(self, owner: str | None, lang: str) -> dict:
        """``owner``'s jobs (a verified owner: ``PageOwners.owner``); none for None."""
        listed = self.queue.list(owner=owner, limit=JOBS_SHOWN) if owner else []
        return views.job_table(listed, self.queue.position, lang)

    def gallery(self, lang: str) -> tuple[list[tuple[str, str]], list[str]]:
        """The gallery's items (the video itself: its first frame is the thumbnail, and pointed at it plays in
        place, ``conventions``; its caption) newest first, and the videos' names in that order. The browser
        gets each video as it gets the player's: a copy in Gradio's cache, served by Gradio's file route."""
        records = self.outputs.history(limit=GALLERY_SHOWN)
        items = [(record["video_path"], views.gallery_caption(record, lang)) for record in records]
        return items, [record["video"] for record in records]

    def workers(self, lang: str) -> str:
        return views.workers_markdown(self.list_workers() if self.list_workers else [], lang)


class Live:
    """What changes by itself: the model's status and this browser's jobs (on load and every tick),
    this page's id, and the page's language."""

    def __init__(self, page: Page, tables: Tables, outputs: OutputFolder, model: ModelInfo, owners: PageOwners,
                 *, logo_svg: str, docs_dir: Path, model_title: str | Callable[[str | None], str] = "I2VGen-XL"):
        self.page, self.tables, self.outputs, self.model = page, tables, outputs, model
        self.owners, self.logo_svg, self.docs_dir, self.model_title = owners, logo_svg, docs_dir, model_title

    def page_owner(self, token) -> dict:
        """On load: the token the browser kept if the server signed it, else a fresh one."""
        return {self.page.owner: self.owners.kept_or_new(token)}

    def tick(self, owner, lang, following=None, names=None, shown=None) -> dict:
        """Every two seconds (and on load): the model's status, this browser's jobs and how many can be
        cancelled, the video area following its latest job (``follow``), the gallery when it changed, and
        the player emptied when the video it shows (``shown``) was deleted meanwhile (another tab, the API)."""
        lang = normalise_language(lang)
        verified = self.owners.owner(owner)
        listed = self.tables.queue.list(owner=verified, limit=JOBS_SHOWN) if verified else []
        unfinished = sum(not job.finished_state for job in listed)
        updates = {self.page.status: views.status_text(self.model.status, lang),
                   self.page.jobs.table: views.job_table(listed, self.tables.queue.position, lang)}
        if self.page.inputs.cancel_all is not None:
            updates[self.page.inputs.cancel_all] = gr.Button(value=t("cancel_all", lang, count=unfinished),
                                                             interactive=unfinished > 0)
        updates.update(self.follow(listed, following, lang))
        if self.page.outputs.shown not in updates and isinstance(shown, str) and shown and \
                not self._still_there(shown):
            updates.update(cleared(self.page.outputs, t("err_video_gone", lang)))
        history = self.page.history
        if history.names is not None:
            items, shown_names = self.tables.gallery(lang)
            if shown_names != names:
                updates.update({history.gallery: items, history.names: shown_names})
        return updates

    def _still_there(self, name: str) -> bool:
        try:
            return self.outputs.files(name).video.is_file()
        except AppError:
            return False

    def follow(self, jobs: list[Job], following, lang: str) -> dict:
        """The video area follows this browser's latest job, whatever started it (Generate, Retry, Many
        pictures, another tab, a page loaded while it runs): the job it follows while that one is
        unfinished (its state and progress), else the one running or next in the queue, else the one that
        ended last; a job not shown yet is shown at once (the old result cleared), and its video when done.
        ``following`` is the page's own state (``Outputs.following``), never the browser's word."""
        out = self.page.outputs
        if out.following is None:
            return {}
        following = following if isinstance(following, dict) else {}
        current = next((job for job in jobs if job.id == following.get("job")), None)
        if current is not None and not current.finished_state:
            if following.get("own"):
                return {}  # Generate says how its own job stands, in order with its result
            return {out.info: following_text(current, self.tables.queue.position(current.id), lang)}
        if current is not None and following.get("own") and not following.get("final") and \
                time.time() - (current.finished or 0) < OWN_RESULT_GRACE_S:
            return {}  # Generate shows its own job's end
        unfinished = [job for job in jobs if not job.finished_state]
        if unfinished:
            running = [job for job in unfinished if job.state == RUNNING]
            pick = min(running or unfinished, key=lambda job: job.created)
        elif jobs:
            pick = max(jobs, key=lambda job: job.finished or job.created)
        else:
            return {}
        final = bool(pick.finished_state)
        if following.get("job") == pick.id and bool(following.get("final")) == final:
            return {}
        return {**self.show(pick, lang), out.following: {"job": pick.id, "final": final}}

    def show(self, job: Job, lang: str) -> dict:
        """``job`` in the video area: its video when it is done, else its state (the old result cleared)."""
        out = self.page.outputs
        if job.state == DONE and job.video_path and Path(job.video_path).is_file():
            return {**finished_job(job, out, lang), out.preview: gr.Image(value=None, visible=False),
                    out.last_seed: job.params.get("seed"), out.reuse_seed: gr.Button(visible=True)}
        if job.finished_state:
            info = views.job_message(job, None, lang)
        else:
            info = following_text(job, self.tables.queue.position(job.id), lang)
        return cleared(out, info)

    def workers(self, lang) -> dict:
        return {self.page.workers: self.tables.workers(normalise_language(lang))}

    def relabel(self, lang, video=None, model=None) -> dict:
        """Every translatable property of the page in ``lang``; the shown video's description too."""
        lang = normalise_language(lang)
        page = self.page
        # The player holds a copy of the video under the video's own name: find its record by that.
        record = self.outputs.find(Path(video).name) if video else None
        return {**page.translations.updates(lang),
                page.subtitle: views.title_html(self.logo_svg, lang, self.model_title(model) if callable(
                    self.model_title) else self.model_title),
                page.manual: read_manual(self.docs_dir, lang),
                page.status: views.status_text(self.model.status, lang),
                page.outputs.info: views.result_text(record, lang) if record else t("video_placeholder", lang)}

    def both_tables(self, owner, lang) -> dict:
        """Your jobs and the gallery in ``lang`` (its captions)."""
        items, names = self.tables.gallery(lang)
        history = self.page.history
        return {self.page.jobs.table: self.tables.jobs(self.owners.owner(owner), lang), history.gallery: items,
                history.names: names}



class Settings:
    """The generation settings: the model picker, presets, the estimate, the seed box. Each handler takes
    the picked model last (None, or one the server does not offer: the server's own)."""

    def __init__(self, page: Page, settings: GenerationSettings, model: ModelInfo, queue: JobQueue | None = None,
                 *, card: families.Card | None = None, offered: Mapping[str, AppConfig] | None = None,
                 models: Callable[[], list[dict]] | None = None, logo_svg: str = "",
                 learned: LearnedTimes | None = None, default_crf: int | None = None):
        """``offered``: every model's config (``AppConfig.offered``); ``models``: how each stands now
        (``catalogue.model_list``); ``logo_svg``: the title's logo; ``default_crf``: the MP4 quality a job
        gets when it names none (the options summary names any other)."""
        self.inputs, self.settings, self.model, self.queue = page.inputs, settings, model, queue
        self.default_crf = default_crf
        self.card = card or families.CARDS[families.DEFAULT]
        self.page, self.logo_svg = page, logo_svg
        self.models = models or (lambda: [])
        #: The times of the jobs made on this machine (``service`` writes them), for the estimate.
        self.learned = learned or (LearnedTimes(queue.config.paths.state_dir / LEARNED_FILE)
                                   if queue is not None and getattr(queue, "config", None) is not None else None)
        #: name -> (card, generation settings) of every model the picker offers, the server's own first.
        self.choices = {self.card.name: (self.card, settings)}
        for name, config in (offered or {}).items():
            if name != self.card.name:
                self.choices[name] = (families.served_card(config), config.generation)

    def _of(self, model) -> tuple[families.Card, GenerationSettings]:
        """The picked model's card and settings (the server's own for anything it does not offer)."""
        return self.choices.get(model) if isinstance(model, str) and model in self.choices else \
            (self.card, self.settings)

    of = _of

    def pick_model(self, model, lang) -> dict:
        """Every control that depends on the model, set for ``model`` with its defaults: the resolutions,
        each setting's range, step and value, the presets, the aspects, the end frame (only a model
        that can), the negative prompt, the prompt's help, the title, the estimate and the model's note."""
        card, settings = self._of(model)
        d, form = settings.defaults, self.inputs
        updates = {form.negative_prompt: d.negative_prompt, form.last_image: gr.update(visible=card.end_frame),
                   form.aspect: families.AUTO, **self.model_texts(lang, model),
                   self.page.subtitle: views.title_html(self.logo_svg, lang, card.title)}
        for parameter, control, value in zip(PARAMETERS, form.parameters, d.values()):
            if parameter.limits is None:
                updates[control] = gr.update(choices=[(name, name) for name in settings.resolutions], value=value)
                continue
            limits = settings.limits(parameter.name)
            step = card.frame_step if parameter.name == "num_frames" else parameter.step
            updates[control] = gr.update(minimum=limits.min, maximum=limits.max, step=step, value=value)
        updates[form.preset] = gr.update(**updates[form.preset], value=settings.preset_for(d.values()))  # its choices
        updates.update(self.estimate(lang, d.resolution, d.num_frames, d.num_inference_steps, model))
        return updates

    def model_texts(self, lang, model) -> dict:
        """What of the page follows both the language and the picked model: the aspects' and presets'
        names, the prompt's help (which languages the model reads), the title and the model's note."""
        card, settings = self._of(model)
        form = self.inputs
        prompt_help = "prompt_help_multilingual" if "zh" in card.prompt_languages else "prompt_help"
        return {form.aspect: gr.update(choices=[(t("aspect_auto", lang), families.AUTO),
                                                *[(aspect, aspect) for aspect in card.aspects]]),
                form.prompt: gr.update(info=t(prompt_help, lang)),
                form.preset: gr.update(choices=[(preset_label(name, lang), name) for name in settings.presets]),
                **self.model_note(lang, model)}

    def title(self, model) -> str:
        """The picked model's name, as the page's title shows it."""
        return self._of(model)[0].title

    def model_note(self, lang, model) -> dict:
        """How the picked model stands here (ready, loading, on disk, to download; the memory it needs)."""
        card, _settings = self._of(model)
        entry = next((entry for entry in self.models() if entry["name"] == card.name), None)
        return {self.inputs.model_note: views.model_note(entry, lang, gpu_gb=self.model.gpu_memory_gb)}

    def prompt_note(self, prompt, lang, model=None) -> dict:
        """Under the prompt, before the job starts: whether a prompt that is not English will be
        translated, and if not, why and what to do."""
        try:  # the server's own length limit, before any other work (the browser's is not the server's)
            clean_prompt(prompt, self.settings.max_prompt_chars, required=False)
        except AppError as error:
            return {self.inputs.prompt_note: "⚠️ " + localized(error, lang)}
        status = self.queue.translation_status() if self.queue else None
        card, _settings = self._of(model)
        reads_it = card.title if "zh" in card.prompt_languages else ""
        return {self.inputs.prompt_note: views.prompt_note(prompt, status, lang, reads_it=reads_it)}

    def crop_note(self, image, aspect, resolution, lang, model=None) -> dict:
        """Under the picture: the video's size for this picture, aspect and resolution, and what the
        crop cuts off. Reads only the picture's header; says nothing for a value it cannot use (the
        job itself says why when it is submitted). No picture (none yet, or removed) says nothing; only a
        picture this page uploaded is read (``uploaded_file``: never another file of the server, never a
        FIFO or device that would keep the event waiting)."""
        note, path = "", uploaded_file(image)
        if path is None:
            return {self.inputs.crop_note: note}
        try:
            with Image.open(path) as picture:
                size = picture.size
            card, _settings = self._of(model)
            chosen = card.nearest_aspect(*size) if aspect in (None, "", families.AUTO) else aspect
            note = views.crop_text(size, card.size(str(resolution), chosen), chosen, lang)
        except (OSError, TypeError, ValueError, KeyError, ZeroDivisionError, Image.DecompressionBombError):
            pass
        return {self.inputs.crop_note: note}

    def _form(self, values: tuple) -> dict:
        """The five settings (``config.PARAMETERS`` order) and the preset they match."""
        return {**dict(zip(self.inputs.parameters, values)), self.inputs.preset: self.settings.preset_for(values)}

    def apply_preset(self, name, model=None) -> dict:
        presets = self._of(model)[1].presets
        if name not in presets:  # a preset of another model, or none: the form stays
            return {self.inputs.preset: gr.update()}
        return dict(zip(self.inputs.parameters, presets[name].values()))

    def match_preset(self, *values) -> dict:
        """The preset the five settings match (``values``: them, then the picked model)."""
        settings = self._of(values[len(PARAMETERS)] if len(values) > len(PARAMETERS) else None)[1]
        return {self.inputs.preset: settings.preset_for(values[:len(PARAMETERS)])}

    def estimate(self, lang, resolution, frames, steps, model=None, fps=None, continue_from=None, segments=1,
                 loop="none", interpolate_fps=0, formats=None, upscale=1, guidance=None, loras=None) -> dict:
        """The estimate for these settings: the whole job's time (segments and finishing steps too, at the
        output's frames and size; one pass a step at guidance 1), learned from the jobs made on this machine
        once one ran, and the memory with the LoRAs' weights."""
        info, (card, settings) = self.model, self._of(model)
        plan = key = None
        side = settings.resolutions.get(resolution)
        try:
            if side is not None:
                plan = plan_of(side, side, int(frames), int(steps), segments=segments, loop=loop,
                               interpolate_fps=interpolate_fps, fps=fps or settings.defaults.fps,
                               formats=formats or "mp4", upscale=upscale, continued_frames=0, guidance=guidance)
                if continue_from:
                    plan = replace(plan, finishing=tuple(dict.fromkeys((*plan.finishing, "joining"))))
                key = machine_key(card.name, demo=bool(info.status.is_demo), gpu_name=info.gpu_name)
        except (TypeError, ValueError):
            plan = None
        needs = table_needs(card, resolution, frames)
        lora_gb = self._lora_gb(loras, card) if card.loras else 0.0
        if needs and lora_gb:
            needs = {mode: gb + lora_gb for mode, gb in needs.items()}
        return {self.inputs.estimate: views.estimate_text(
            settings, lang, resolution, frames, steps, gpu_gb=info.gpu_memory_gb,
            gpu_name=info.gpu_name, demo=info.status.is_demo, untraced=untraced(card),
            needs=needs, plan=plan, learned=self.learned, key=key, lora_gb=lora_gb)}

    def _lora_gb(self, text, card) -> float:
        """GB the LoRAs ``text`` names take beside the model, in its weights' dtype on this device (a
        name not on disk counts nothing: the job's own check says what is wrong with it)."""
        config = getattr(self.queue, "config", None)
        if not text or config is None:
            return 0.0
        on_gpu = bool(self.model.gpu_memory_gb)
        return loras.weights_gb(text, config.paths.models_dir, bytes_per_value=2 if on_gpu else 4)

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
        needs = table_needs(self.card, values.resolution, values.num_frames)
        if needs is not None or untraced(self.card):  # its own table, else no figure: assume it fits
            return needs is None or min(needs.values()) <= gpu * 0.92
        side = self.settings.resolutions[values.resolution]
        return estimate(side, values.num_frames, values.num_inference_steps, gpu_gb=gpu, demo=False).fits

    def seed_box(self, random_seed) -> dict:
        return {self.inputs.seed: gr.Number(interactive=not random_seed)}

    def reuse_seed(self, seed) -> dict:
        return {self.inputs.random_seed: False, self.inputs.seed: seed}

    def summary(self, lang, seed, random_seed, fps, aspect, continue_from, segments, loop, interpolate_fps,
                formats, upscale, model=None, interpolate_method=None, crf=None, loras=None) -> dict:
        """Beside Generate: every option the next video gets, and "Plain video" when any is more than plain
        (the MP4's quality, ``crf``, is named when it is not the server's default; the LoRAs when the picked
        model takes them and the box names some)."""
        lang = normalise_language(lang)
        options = dict(seed=seed, random_seed=random_seed, continue_from=continue_from, segments=segments, loop=loop,
                       interpolate_fps=interpolate_fps, formats=formats if isinstance(formats, (list, str)) else [],
                       upscale=upscale)
        title = self.title(model) if len(self.choices) > 1 else ""
        text = views.options_summary(lang, fps=fps, aspect=aspect, model=title,
                                     interpolate_method=interpolate_method, **options)
        if crf not in (None, "", self.default_crf):
            word = next((word for word, value in QUALITIES.items() if value == crf), None)
            text += f" · {t('crf', lang)}: " + (t(f"quality_{word}", lang, crf=crf) if word else f"CRF {crf}")
        if loras and isinstance(loras, str) and loras.strip() and self._of(model)[0].loras:
            text += " · " + t("summary_loras", lang, loras=loras.strip()[:200])
        return {self.inputs.summary: text, self.inputs.plain: gr.Button(visible=not views.is_plain(**options))}

    def after_continuing(self, continue_from, lang) -> dict:
        """With Generate: once a continuation is asked for, the form goes back to a random seed and no
        continuation, so that the next video is a plain one unless the summary says otherwise (Generate
        has read the form already)."""
        form = self.inputs
        if not continue_from:
            return {form.random_seed: gr.update()}
        return {form.finishing[0]: "", form.continuing: "", form.random_seed: True,
                form.stop_continuing: gr.Button(visible=False)}

    def plain_video(self, lang) -> dict:
        """"Plain video": a random seed, no continuation, none of the steps after the model."""
        form = self.inputs
        return {form.random_seed: True, form.finishing[0]: "", **plain_finishing(form), form.continuing: "",
                form.stop_continuing: gr.Button(visible=False)}


def plain_finishing(form: Inputs) -> dict:
    """The steps after the model (``form.finishing`` but the continuation) as a plain video has them: one
    segment, no loop, no interpolation, no other format, no upscale."""
    _continue_from, segments, loop, interpolate, formats, upscale = form.finishing
    return {segments: 1, loop: "none", interpolate: 0, formats: [], upscale: 1}


class Generation:
    """Generate and Cancel: submit a job for this browser and follow it until it has finished.

    A second Generate of the same page with the same picture and settings while its first job
    still waits or runs (within ``DUPLICATE_WITHIN_S``: a double click) follows that job
    instead of starting another.
    """

    def __init__(self, page: Page, queue: JobQueue, tables: Tables, owners: PageOwners, *, max_listed: int):
        self.page, self.queue, self.tables, self.max_listed = page, queue, tables, max_listed
        self.owners = owners
        self._submitting = threading.Lock()
        #: (owner, what was asked) -> (job id, when), for the last few seconds.
        self._recent: dict[tuple, tuple[str, float]] = {}

    # The parameter names are the /generate API's (gradio_client callers may pass them by name).
    # Every parameter after the prompt has a default, so a client may leave it out (the model's default;
    # a random seed; no page id: one of its own; English).
    def generate(self, image, prompt, negative_prompt=None, resolution=None, num_frames=None, fps=None, steps=None,
                 guidance=None, seed=None, random_seed=True, owner=None, lang="en", continue_from=None, segments=None, loop=None, interpolate_fps=None,
                 formats=None, upscale=None, aspect=None, last_image=None, model=None, interpolate_method=None,
                 crf=None, loras=None, progress=gr.Progress()):  # noqa: B008
        """Queue a job for this browser and follow it; every failure becomes a message. A call without a
        page id (``gradio_client``'s ``predict(image, prompt, api_name="/generate")``, as Gradio teaches)
        gets a fresh one of its own: its job is private to that call. A page id that is not the server's
        is refused (a page whose id broke reloads)."""
        verified = self.owners.owner(self.owners.issue() if owner in (None, "") else owner)
        if verified is None:
            raise gr.Error(t("err_page_id", lang), print_exception=False)
        settings = dict(zip(PARAMETER_NAMES, (resolution, num_frames, fps, steps, guidance)))
        finishing = dict(continue_from=continue_from, segments=segments, loop=loop, interpolate_fps=interpolate_fps,
                         formats=formats, upscale=upscale, interpolate_method=interpolate_method, crf=crf)
        asked = dict(prompt=prompt, negative_prompt=negative_prompt, seed=RANDOM_SEED if random_seed else seed,
                     aspect=aspect, **settings, **finishing, **({"last_image": last_image} if last_image else {}),
                     **({"model": model} if model else {}), **({"loras": loras} if loras else {}))
        try:
            job = self._submit_once(image, verified, asked)
        except AppError as error:
            log.info("Job refused: %s", error)
            raise _error(error, lang) from None
        except Exception:
            log.exception("Submitting a job failed")
            raise gr.Error(t("err_something_wrong", lang), print_exception=False) from None
        yield from self._follow(job, verified, lang, progress)

    def _submit_once(self, image, owner: str, asked: dict) -> Job:
        """Submit, unless the same owner asked for exactly this a moment ago and that job is unfinished."""
        key = (owner, _picture_digest(image), json.dumps(asked, sort_keys=True, default=str))
        with self._submitting:
            now = time.monotonic()
            self._recent = {k: v for k, v in self._recent.items() if now - v[1] < DUPLICATE_WITHIN_S}
            if key in self._recent:
                earlier = self.queue.get(self._recent[key][0], owner=owner)
                if not earlier.finished_state:
                    log.info("Generate pressed twice: following job %s", earlier.id)
                    return earlier
            prompt = asked.pop("prompt")
            job = self.queue.submit(image, prompt, owner=owner, source="ui", **asked)
            self._recent[key] = (job.id, now)
            return job

    def _started(self, job: Job, owner: str, lang: str) -> dict:
        """At once when the job is queued: the old result cleared, the video area following this job."""
        out = self.page.outputs
        started = {**cleared(out, following_text(job, self.queue.position(job.id), lang)),
                   self.page.jobs.table: self.tables.jobs(owner, lang)}
        if out.following is not None:
            started[out.following] = {"job": job.id, "final": False, "own": True}
        return started

    def _follow(self, job: Job, owner: str, lang: str, progress):
        out = self.page.outputs
        yield self._started(job, owner, lang)
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

        shown_preview, shown_state = None, None
        while True:
            job = self.queue.wait(job.id, on_update=report, timeout=PREVIEW_EVERY_S)
            preview = self.queue.preview(job.id)
            if preview is not None and preview is not shown_preview:
                shown_preview = preview
                yield {out.preview: gr.Image(value=preview, visible=True)}
            if job.finished_state:
                break
            # Its state under the video too (only from here, in order: the tick leaves this job to Generate).
            state = following_text(job, self.queue.position(job.id), lang)
            if state != shown_state:
                shown_state = state
                yield {out.info: state}
        finished = {self.page.jobs.table: self.tables.jobs(owner, lang),
                    out.preview: gr.Image(value=None, visible=False)}
        if out.following is not None:
            finished[out.following] = {"job": job.id, "final": True}
        if job.state == DONE:
            yield {**finished, **finished_job(job, out, lang), out.last_seed: job.params["seed"],
                   out.reuse_seed: gr.Button(visible=True)}
        elif job.state == CANCELLED:
            yield {**finished, out.video: None, out.info: t("cancelled_info", lang), out.files: no_files(),
                   out.last_seed: None, out.reuse_seed: gr.Button(visible=False),
                   out.continue_video: gr.Button(visible=False), out.shown: None}
        else:
            raise gr.Error(job.localized_message(lang) or t("err_something_wrong", lang), print_exception=False)

    def cancel(self, owner, lang) -> dict:
        """"Cancel all (N)": this browser's unfinished jobs, queued ones at once, the running one at its next
        step; says how many."""
        owner = self.owners.owner(owner)
        cancelled = 0
        for job in self.queue.list(owner=owner, limit=self.max_listed) if owner else []:
            if not job.finished_state:
                self.queue.cancel(job.id, owner=owner)
                cancelled += 1
        return {self.page.outputs.info: t("cancelled_all", lang, count=cancelled) if cancelled
                else t("nothing_to_cancel", lang)}

    def cancel_shown(self, following, owner, lang) -> dict:
        """"Cancel": only the job the video area follows (the page's own state); the others stay queued."""
        job_id = following.get("job") if isinstance(following, dict) else None
        return {self.page.outputs.info: cancel_one(self.queue, self.owners, job_id, owner, lang)}


def cancel_one(queue: JobQueue, owners: PageOwners, job_id, owner, lang) -> str:
    """Cancel one of this browser's jobs if it is unfinished; what happened, with how many others are left."""
    owner = owners.owner(owner)
    if owner is None:
        return t("err_page_id", lang)
    if not isinstance(job_id, str) or not job_id:
        return t("nothing_to_cancel", lang)
    try:
        job = queue.get(job_id, owner=owner)
        if job.finished_state:
            return t("nothing_to_cancel", lang)
        queue.cancel(job.id, owner=owner)
    except AppError as error:
        return localized(error, lang)
    left = sum(not other.finished_state for other in queue.list(owner=owner, limit=JOBS_SHOWN) if other.id != job.id)
    return t("cancelled_one", lang, job=job.id, left=left)


def _picture_digest(image) -> str:
    """What identifies the picture of a request: its bytes' digest for a file, else its repr."""
    if isinstance(image, (str, Path)):
        try:
            with open(image, "rb") as file:
                return hashlib.file_digest(file, "sha256").hexdigest()
        except OSError:
            return f"unreadable:{image}"
    return repr(image)


class QueueMany:
    """"Many pictures at once": one job per picture for this page, with the form's settings."""

    def __init__(self, page: Page, tables: Tables, owners: PageOwners, many):
        self.page, self.tables, self.owners, self.many = page, tables, owners, many

    def queue_all(self, files, prompts, negative_prompt, resolution, num_frames, fps, steps, guidance, seed,
                  random_seed, owner, lang, segments=None, loop=None, interpolate_fps=None, formats=None,
                  upscale=None, model=None, interpolate_method=None, crf=None, loras=None) -> dict:
        settings = dict(zip(PARAMETER_NAMES, (resolution, num_frames, fps, steps, guidance)))
        try:
            result = self.many.queue_all(files, prompts, owner, lang, negative_prompt=negative_prompt,
                                         seed=RANDOM_SEED if random_seed else seed, segments=segments, loop=loop,
                                         interpolate_fps=interpolate_fps, formats=formats, upscale=upscale,
                                         interpolate_method=interpolate_method, crf=crf,
                                         **({"model": model} if model else {}), **({"loras": loras} if loras else {}),
                                         **settings)
        except AppError as error:
            raise _error(error, lang) from None
        return {self.page.many.summary: result.text(lang),
                self.page.jobs.table: self.tables.jobs(self.owners.owner(owner), lang)}


class JobActions:
    """"Your jobs": open a job, retry a failed one."""

    def __init__(self, page: Page, queue: JobQueue, tables: Tables, owners: PageOwners):
        self.page, self.queue, self.tables, self.owners = page, queue, tables, owners

    def open(self, owner, lang, event: gr.SelectData) -> dict:
        job_id = (event.row_value or [""])[-1]
        owner = self.owners.owner(owner)
        if owner is None:
            raise gr.Error(t("err_page_id", lang), print_exception=False)
        try:
            job = self.queue.get(job_id, owner=owner)
        except AppError as error:
            raise _error(error, lang) from None
        tab = self.page.jobs
        shown = {tab.selected: job.id,
                 tab.retry: gr.Button(visible=job.state in (FAILED, CANCELLED, INTERRUPTED))}
        if tab.cancel is not None:
            shown[tab.cancel] = gr.Button(visible=not job.finished_state)
        if job.state == DONE and job.video_path and Path(job.video_path).is_file():
            return {**shown, **finished_job(job, self.page.outputs, lang), tab.message: ""}
        return {**shown, tab.message: views.job_message(job, self.queue.position(job.id), lang)}

    def retry(self, job_id, owner, lang) -> dict:
        tab = self.page.jobs
        hidden = gr.Button(visible=False)
        if not job_id:
            return {tab.message: t("select_job", lang), tab.retry: hidden}
        owner = self.owners.owner(owner)
        if owner is None:
            return {tab.message: t("err_page_id", lang), tab.retry: hidden}
        try:
            job = self.queue.retry(job_id, owner=owner)
        except AppError as error:
            return {tab.message: localized(error, lang), tab.retry: hidden}
        return {tab.message: t("queued_again", lang, job=job.id), tab.retry: hidden,
                tab.table: self.tables.jobs(owner, lang)}

    def cancel(self, job_id, owner, lang) -> dict:
        """"Cancel this job": the selected job only; the others stay queued."""
        tab = self.page.jobs
        message = cancel_one(self.queue, self.owners, job_id, owner, lang)
        verified = self.owners.owner(owner)
        return {tab.message: message, tab.cancel: gr.Button(visible=False),
                tab.table: self.tables.jobs(verified, lang)}


class Bringing:
    """A video of the creator's own to continue: dropped (or picked) on the page, checked and kept by the
    server for this page only (``JobQueue.bring``), then continued as a video of this server is."""

    def __init__(self, page: Page, queue: JobQueue, owners: PageOwners):
        self.page, self.queue, self.owners = page, queue, owners

    def bring(self, path, owner, lang, model=None, resolution=None, aspect=None) -> dict:
        """Fill the form to continue the dropped video: its last frame as the picture, its frame rate and
        resolution, the finishing steps plain, and its kept name as the video the next Generate continues.
        A file that is no acceptable video gets a message saying what to do, and the box is emptied for
        another; nothing else changes."""
        lang = normalise_language(lang)
        form = self.page.inputs
        path = uploaded_file(path)  # only a file this page uploaded, never a path the browser names
        verified = self.owners.owner(owner)
        try:
            if path is None or verified is None:
                raise AppError(key="err_brought_upload_again" if path is None else "err_page_id")
            record = self.queue.bring(path, owner=verified, model=model, resolution=resolution, aspect=aspect,
                                      original_name=Path(path).name)
            picture = last_frame(Path(record["video_path"]))
        except AppError as error:
            gr.Warning(localized(error, lang))
            return {form.bring: None}
        p = record["parameters"]
        by_name = dict(zip(PARAMETER_NAMES, form.parameters))
        text = t("continuing_brought", lang, name=record["brought"], frames=record["model_frames"]["frames"],
                 fps=p["fps"], width=p["width"], height=p["height"])
        filled = {form.image: picture, by_name["fps"]: p["fps"], by_name["resolution"]: p["resolution"],
                  form.finishing[0]: record["video"], form.continuing: text,
                  form.stop_continuing: gr.Button(visible=True), form.bring: None}
        filled.update(plain_finishing(form))  # it starts plain, as Continue does
        if form.aspect is not None:
            filled[form.aspect] = p["aspect"]
        return filled


class HistoryActions:
    """"All videos": open a past video, fill the form with its settings, delete it."""

    def __init__(self, page: Page, outputs: OutputFolder, settings: GenerationSettings, tables: Tables, *,
                 models: Settings | None = None):
        """``models``: the page's ``Settings``, which set the controls for a video's model when its
        settings are reused (None: one model)."""
        self.page, self.outputs, self.settings, self.tables = page, outputs, settings, tables
        self.models = models

    def _record(self, name, lang) -> dict:
        record = self.outputs.find(name or "")
        if record is None:
            raise gr.Error(t("err_video_gone", lang), print_exception=False)
        return record

    def open(self, names, lang, event: gr.SelectData) -> dict:
        """A click on the gallery: that video in the player (``names``: the page's own list of what the
        gallery shows, in its order; the click gives only the index)."""
        index = event.index if isinstance(event.index, int) and not isinstance(event.index, bool) else -1
        name = names[index] if isinstance(names, list) and 0 <= index < len(names) else ""
        record = self._record(name, lang)
        out, tab = self.page.outputs, self.page.history
        opened = {out.video: record["video_path"], out.info: views.result_text(record, lang),
                  out.files: shown_files(downloads(record["video_path"], record["record_path"])), tab.picked: name,
                  tab.actions: gr.Row(visible=True), tab.message: "",
                  out.continue_video: gr.Button(visible=not record.get("record_missing")), out.shown: name}
        if tab.confirm is not None:
            opened[tab.confirm] = gr.Row(visible=False)
        return opened

    def reuse_settings(self, name, lang) -> dict:
        return self._reuse(name, lang, keep_prompt=True)

    def same_seed(self, name, lang) -> dict:
        return self._reuse(name, lang, keep_prompt=False)

    def _reuse(self, name, lang, *, keep_prompt: bool) -> dict:
        """Fill the form with a past video's picture, settings and seed (and prompt, if kept)."""
        record = self._record(name, lang)
        if record.get("record_missing"):
            raise gr.Error(t("err_record_missing", lang), print_exception=False)
        p, form = record["parameters"], self.page.inputs
        if not all(key in p for key in (*PARAMETER_NAMES, "prompt", "negative_prompt", "seed")):
            raise gr.Error(t("err_record_missing", lang), print_exception=False)  # an older or edited record
        values = tuple(p[key] for key in PARAMETER_NAMES)
        message = t("settings_loaded", lang, video=record["video"]) if keep_prompt else t("new_prompt_hint", lang)
        model, settings = p.get("model"), self.settings
        filled = {}
        if self.models is not None and model in self.models.choices:  # its model picked, its controls set
            filled = {**self.models.pick_model(model, lang), form.model: model}
            settings = self.models.choices[model][1]
            filled.pop(form.estimate, None)  # estimated for the video's own settings when they change
            if p.get("aspect"):
                filled[form.aspect] = p["aspect"]
        filled.update({form.prompt: p["prompt"] if keep_prompt else "", form.negative_prompt: p["negative_prompt"],
                       **dict(zip(form.parameters, values)), form.random_seed: False, form.seed: p["seed"],
                       form.preset: gr.update(**{**filled.get(form.preset, {}), "value": settings.preset_for(values)}),
                       self.page.history.message: message})
        if form.finishing:  # the steps after the model too, as the record has them (the video's own last)
            _continue_from, segments, loop, interpolate, formats, upscale = form.finishing
            filled.update({segments: p.get("segments", 1), loop: p.get("loop", "none"),
                           interpolate: p.get("interpolate_fps", 0), formats: views._format_list(p.get("formats")),
                           upscale: p.get("upscale", 1)})
            if form.interpolate_method is not None and p.get("interpolate_method"):
                filled[form.interpolate_method] = p["interpolate_method"]
            if getattr(form, "crf", None) is not None and p.get("crf"):
                filled[form.crf] = p["crf"]
            if form.aspect is not None:
                filled[form.aspect] = p.get("aspect") or families.AUTO
        if getattr(form, "loras", None) is not None:  # its LoRAs as the job named them (one since gone is said
            try:  # when the job is submitted); an edited record's that do not read: none
                filled[form.loras.text] = loras.text(p.get("loras") or [])
            except (AttributeError, KeyError, TypeError, ValueError):
                filled[form.loras.text] = ""
        if record["image_path"]:
            filled[form.image] = record["image_path"]
        return filled

    def continue_video(self, name, lang) -> dict:
        """Fill the form to continue ``name``: its prompt, settings and seed, its last frame as the
        picture, and the video named as the one the next Generate continues."""
        filled = self._reuse(name, lang, keep_prompt=True)
        record = self._record(name, lang)
        form = self.page.inputs
        source = self.outputs.model_frames_file(record["video"])
        try:
            filled[form.image] = last_frame(source)
        except (AppError, TypeError):
            raise gr.Error(t("err_continue_missing", lang, value=record["video"]), print_exception=False) from None
        if form.finishing:  # a continuation starts plain: whatever finishing it gets, the summary names
            filled.update(plain_finishing(form))
        filled.update({form.finishing[0]: record["video"], form.continuing: t("continuing", lang, video=record["video"]),
                       form.stop_continuing: gr.Button(visible=True), form.finishing_box: gr.Accordion(open=True),
                       self.page.history.message: t("continuing", lang, video=record["video"])})
        return filled

    def stop_continuing(self, lang) -> dict:
        form = self.page.inputs
        return {form.finishing[0]: "", form.continuing: "", form.stop_continuing: gr.Button(visible=False)}

    def ask_delete(self, name, lang) -> dict:
        """Delete asks first: which video, for good."""
        record = self._record(name, lang)
        tab = self.page.history
        return {tab.confirm: gr.Row(visible=True), tab.message: t("delete_confirm", lang, video=record["video"])}

    def keep(self, lang) -> dict:
        tab = self.page.history
        return {tab.confirm: gr.Row(visible=False), tab.message: ""}

    def delete(self, name, lang, shown=None) -> dict:
        """Delete the picked video; the player stops and empties when it shows that video (``shown``)."""
        if name:
            try:
                self.outputs.delete(name)
            except AppError as error:
                raise _error(error, lang) from None
        tab, out = self.page.history, self.page.outputs
        items, names = self.tables.gallery(lang)
        deleted = {tab.gallery: items, tab.message: t("deleted", lang, video=name), tab.actions: gr.Row(visible=False),
                   tab.picked: None}
        if tab.names is not None:
            deleted[tab.names] = names
        if tab.confirm is not None:
            deleted[tab.confirm] = gr.Row(visible=False)
        if shown in (None, "") or shown == name:
            deleted.update({out.video: None, out.files: no_files(), out.continue_video: gr.Button(visible=False),
                            out.shown: None, out.info: t("deleted", lang, video=name)})
        return deleted
