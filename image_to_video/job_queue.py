"""Taking jobs in and telling how they are: validation, the queue's bound, cancel, retry, follow.

Every caller (the page, the HTTP API, the command line) submits through ``JobQueue``;
nothing is stored that has not passed ``build_request``. The GPU work itself is the
``Worker``'s (``worker.py``); the two share the store and the in-memory ``LiveJobs``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from . import families
from .config import PARAMETER_NAMES, AppConfig
from .brought import BroughtVideos, is_brought
from .errors import AppError, GenerationFailed, InvalidInput, JobNotFound, ModelUnavailable, shown
from .job_store import CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, Job, JobStore, end_frame_path
from .finishing import last_frame
from .live import LiveJobs
from .outputs import OutputFolder
from .request import GenerationRequest, build_request
from .translate import needs_translation
from .video import probe_video

log = logging.getLogger(__name__)


class JobQueue:
    """Accepts jobs (validated first), cancels and retries them, and reports on them."""

    def __init__(self, store: JobStore, config: AppConfig, *, live: LiveJobs, inputs_dir: Path,
                 check_disk: Callable[[], None] | None = None, outputs: OutputFolder | None = None,
                 translator=None, brought: BroughtVideos | None = None):
        """``check_disk`` raises (an ``AppError`` saying what to free) when there is too little disk
        for a new video: a job is refused at once rather than accepted to fail later. ``outputs``:
        the videos a job may continue. ``translator`` (``translate.Translator``): turns a prompt that
        is not English into the English the model reads, when it is ready. ``brought``: the videos a page
        brought to continue (each continued only by its owner)."""
        self.store = store
        self.brought = brought
        self.outputs = outputs
        self.translator = translator
        self.config = config
        self.live = live
        self.inputs_dir = Path(inputs_dir)
        self.max_queued = config.jobs.max_queued
        self.check_disk = check_disk or (lambda: None)
        self._closed = False

    # -- submitting ------------------------------------------------------------

    def submit(self, image: Any, prompt: Any, *, owner: str, source: str = "ui", **params: Any) -> Job:
        """Validate everything, keep the normalised image, and queue the job.

        Raises ``InvalidInput`` (nothing is stored), ``QueueFull``, ``GenerationFailed`` when the
        disk is too full, or ``ModelUnavailable`` while stopping.
        """
        return self._submit(image, prompt, owner=owner, source=source, **params)

    def _submit(self, image: Any, prompt: Any, *, owner: str, source: str, retry_of: str | None = None,
                **params: Any) -> Job:
        if self._closed:
            raise ModelUnavailable(key="err_shutting_down")
        self.check_disk()
        continued = 0
        if params.get("continue_from") not in (None, ""):
            image, prompt, params, continued = self._continuation(params, prompt, owner)
        request = self._translated(build_request(self.config, image=image, prompt=prompt,
                                                 continued_frames=continued, **params))
        job_id = uuid.uuid4().hex[:12]
        image_path = self.inputs_dir / f"{job_id}.png"
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        job = Job(id=job_id, owner=owner, state=QUEUED, params=request.parameters(),
                  image_path=str(image_path), created=time.time(), source=source)
        try:  # a failure saving either picture (a full disk) or storing the job leaves neither picture
            request.image.save(image_path)
            if request.last_image is not None:  # beside the picture, found by its name (end_frame_path)
                request.last_image.save(end_frame_path(image_path))
            stored = self.store.add(job, max_queued=self.max_queued, retry_of=retry_of)
        except BaseException:
            image_path.unlink(missing_ok=True)
            end_frame_path(image_path).unlink(missing_ok=True)
            raise
        if stored.id != job_id:  # that job was retried meanwhile: this is the same retry, answered once
            image_path.unlink(missing_ok=True)
            end_frame_path(image_path).unlink(missing_ok=True)
            return self._with_live_progress(stored)
        log.info("Queued job %s from %s (%s)", job_id, source, owner[:8])
        self.live.poke()
        return job

    def _continuation(self, params: dict[str, Any], prompt: Any, owner: str) -> tuple[Any, Any, dict[str, Any], int]:
        """What a job that continues a video starts from: the last frame of the model's frames of
        that video as its picture, the video's prompt and settings (and seed) wherever the caller
        left one empty, and how many frames it has. Its size and frame rate cannot change: the
        segments are joined into one video."""
        name, path, record = self._source(params["continue_from"], owner)
        old = record.get("parameters") or {}
        carried = dict(params, continue_from=name)
        for key in (*PARAMETER_NAMES, "negative_prompt", "seed", "aspect", "model", "loras"):
            if carried.get(key) in (None, "") and key in old:
                carried[key] = old[key]
        if "aspect" in old and str(carried.get("aspect", "")).strip().lower() == "auto":  # auto: the video's own
            carried["aspect"] = old["aspect"]
        for key, name_key in (("resolution", "param_resolution"), ("fps", "param_fps"), ("aspect", "param_aspect"),
                              ("model", "param_model")):
            if key in old and not _same(carried.get(key), old[key]):
                raise InvalidInput(key="err_continue_size", name_key=name_key, value=old[key], video=name)
        try:
            frames = _frames_of(record, path)
            picture = last_frame(path)
        except GenerationFailed:
            raise InvalidInput(key="err_continue_missing", value=shown(name)) from None
        return picture, prompt if prompt not in (None, "") else old.get("prompt"), carried, frames

    def _source(self, value: Any, owner: str) -> tuple[str, Path | None, dict[str, Any]]:
        """The video a job continues (name, file of the model's frames, record): one a page brought, only
        for its owner, else one of this server's."""
        if self.brought is not None and is_brought(value):
            record = self.brought.find(value, owner)
            if record is None:
                raise InvalidInput(key="err_continue_missing", value=shown(value))
            path = Path(record["video_path"])
            return path.name, path, record
        name = self._video_to_continue(value, owner)
        return name, self.outputs.model_frames_file(name), self.outputs.find(name) or {}

    def bring(self, path: Any, *, owner: str, model: Any = None, resolution: Any = None, aspect: Any = None,
              original_name: str = "") -> dict[str, Any]:
        """Keep a video the page brought (``path``: its own upload, checked) for ``owner`` to continue, at
        ``model``'s size and frame rate (``_bring_settings``); its record, or ``InvalidInput`` saying why not."""
        return self.brought.take(path, owner, original_name=original_name,
                                 **_bring_settings(self.config, model, resolution, aspect))

    def _video_to_continue(self, value: Any, owner: str) -> str:
        """The name of the video ``value`` names: one of ``owner``'s done jobs (by id), or a video of
        the output folder (by name)."""
        if self.outputs is None or not isinstance(value, str):
            raise InvalidInput(key="err_continue_from", value=shown(value))
        value = value.strip()
        job = self.store.get(value) if len(value) <= 64 else None
        if job is not None and job.owner == owner:
            if job.state != DONE or not job.video_path:
                raise InvalidInput(key="err_continue_missing", value=shown(value))
            value = Path(job.video_path).name
        try:
            files = self.outputs.files(value)
        except InvalidInput:
            raise InvalidInput(key="err_continue_from", value=shown(value)) from None
        if not files.video.is_file():
            raise InvalidInput(key="err_continue_missing", value=shown(value))
        return files.video.name

    def _translated(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with the English of a prompt that is not English, when the translator is ready
        (else as it is: the page has said so before the job was submitted). A model that reads Chinese
        (its card says so: Wan's umT5) gets the prompt as written."""
        if self.translator is None or "zh" in families.CARDS[request.model].prompt_languages:
            return request
        english = {}
        for name in ("prompt", "negative_prompt"):
            text = getattr(request, name)
            if text and needs_translation(text):
                try:
                    english[f"{name}_en"] = self.translator.translate(text)
                except AppError as error:
                    if error.key == "err_translator_loading":  # ready in a moment: the message says try again
                        raise
                    log.warning("The %s was not translated: %s", name.replace("_", " "), error)
        return replace(request, **english) if english else request

    def translation_status(self):
        """What happens to a prompt that is not English (``translate.TranslatorStatus``), or None when
        this queue has no translator."""
        return None if self.translator is None else self.translator.status

    def retry(self, job_id: str, *, owner: str | None = None) -> Job:
        """Queue a finished (failed, cancelled or interrupted) job again as a new job, once: every
        later retry of it (simultaneous ones too) answers with that same new job."""
        old = self.get(job_id, owner=owner)
        if old.retried_as:
            return self.get(old.retried_as)
        if old.state not in (FAILED, CANCELLED, INTERRUPTED):
            raise InvalidInput(key="err_already_running", state=old.state)
        params = {k: v for k, v in old.params.items()
                  if k not in ("width", "height", "prompt", "end_frame", "family")}
        try:
            with Image.open(old.image_path) as image:
                picture = image.copy()
            if old.params.get("end_frame"):
                with Image.open(end_frame_path(old.image_path)) as image:
                    params["last_image"] = image.copy()
        except OSError:  # pruned (jobs.keep_inputs_days) or removed by hand
            raise InvalidInput(key="err_input_gone") from None
        return self._submit(picture, old.params.get("prompt"), owner=old.owner, source=old.source,
                            retry_of=old.id, **params)

    def prune_inputs(self) -> int:
        """Delete the input pictures no job needs: a done job's (its video keeps a copy), and a failed,
        cancelled or interrupted job's after ``jobs.keep_inputs_days`` (then it cannot be retried)."""
        cutoff = time.time() - self.config.jobs.keep_inputs_days * 86400
        removed = 0
        for name in self.store.inputs_to_prune(cutoff):
            path = Path(name)
            if path.parent == self.inputs_dir and path.is_file():  # never a file outside data/inputs
                path.unlink(missing_ok=True)
                end_frame_path(path).unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("Removed %d input picture(s) no job needs any more from %s", removed, self.inputs_dir)
        return removed

    def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a queued job now, or a running one at its next step."""
        job = self.get(job_id, owner=owner)
        if job.state == QUEUED and self.store.cancel_if_queued(job_id, "Cancelled before it started."):
            self.live.poke()
        else:
            self.live.cancel(job_id)
        return self.get(job_id)

    def close(self) -> None:
        """Take no new jobs (the server is stopping)."""
        self._closed = True

    # -- reading ---------------------------------------------------------------

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job as stored, with its live progress when it runs in this process."""
        job = self.store.get(str(job_id))
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(key="err_no_job", job=shown(str(job_id)))
        return self._with_live_progress(job)

    def list(self, *, owner: str | None = None, limit: int = 50) -> list[Job]:
        return [self._with_live_progress(job) for job in self.store.list(owner=owner, limit=limit)]

    def _with_live_progress(self, job: Job) -> Job:
        """``job`` with the progress its worker in this process reported last (the store has it throttled)."""
        running = self.live.get(job.id)
        progress = running.progress if running else None
        if progress is None or job.finished_state:
            return job
        return replace(job, stage=progress.stage, done=progress.done, total=progress.total, eta=progress.eta_s)

    def position(self, job_id: str) -> int | None:
        return self.store.position(job_id)

    def preview(self, job_id: str):
        """The latest live preview of a running job (an RGB array), or None."""
        running = self.live.get(job_id)
        return running.preview if running else None

    @property
    def busy(self) -> bool:
        return bool(self.live.ids())

    def wait(self, job_id: str, *, on_update: Callable[[Job], None] | None = None,
             timeout: float | None = None, poll_s: float = 1.0) -> Job:
        """Block until the job has finished (or ``timeout`` s passed), calling ``on_update`` whenever it
        changes. Woken by every change in this process; ``poll_s`` bounds the wait for changes made
        by another process (the command line's worker)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        version = self.live.version
        while True:
            job = self.get(job_id)
            snapshot = (job.state, job.stage, job.done)
            if on_update and snapshot != last:
                on_update(job)
                last = snapshot
            if job.finished_state:
                return job
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if left <= 0:
                return job
            version = self.live.wait_for_change(version, left)


def _bring_settings(config: AppConfig, model: Any, resolution: Any, aspect: Any) -> dict[str, Any]:
    """How a brought video is kept for ``model`` (``BroughtVideos.take``): its frames at the model's size for
    ``resolution`` (the model's default when it has no such size) and ``aspect`` ("auto" or empty: the one
    nearest the video's shape), its frame rate the nearest the model takes."""
    config = families.config_for(config, model)
    card, settings = families.served_card(config), config.generation
    if not (isinstance(resolution, str) and resolution in settings.resolutions):
        resolution = settings.defaults.resolution
    wanted = aspect if isinstance(aspect, str) and aspect in card.aspects else None

    def size_for(width: int, height: int) -> tuple[str, tuple[int, int]]:
        chosen = wanted or card.nearest_aspect(width, height)
        return chosen, card.size(resolution, chosen)

    fps = settings.limits("fps")
    return dict(size_for=size_for, fps_range=(int(fps.min), int(fps.max)),
                parameters={"resolution": resolution, "model": card.name})


def _frames_of(record: dict[str, Any], path: Path) -> int:
    """How many frames the model's frames of a video have: from its record, else by decoding it."""
    known = record.get("model_frames") or {}
    if isinstance(known.get("frames"), int) and known.get("file") == path.name:
        return known["frames"]
    return probe_video(path).frames


def _same(given: Any, kept: Any) -> bool:
    """Whether a caller's value (text or number) is the kept one."""
    try:
        return float(given) == float(kept)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of hundreds of digits
        return str(given).strip() == str(kept)
