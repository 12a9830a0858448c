"""The GPU worker: one thread that claims the next job and turns it into a video, one at a time.

It records every outcome in the store, with a message the owner can act on; the
running job's progress goes to ``LiveJobs`` at every step and to the store at most
once a second (and at each stage change), for readers in other processes. After a
CUDA error that leaves the GPU unusable it calls ``on_fatal`` (the server restarts
itself in place).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from PIL import Image

from .errors import AppError, Cancelled, GPUFailed, InvalidInput
from .job_store import CANCELLED, DONE, FAILED, QUEUED, Job, JobStore, error_message
from .live import LiveJobs, Running
from .processes import this_worker, worker_alive
from .progress import Progress, ProgressFn
from .request import GenerationRequest

log = logging.getLogger(__name__)

#: The store gets the running job's progress at most this often (and at every stage change).
STORE_EVERY_S = 1.0

#: ``make_video(request, progress=..., cancel=...)``: the video service's one call.
MakeVideo = Callable[..., object]


class Worker:
    """Runs queued jobs on the GPU, one at a time, in a background thread."""

    def __init__(self, store: JobStore, live: LiveJobs, make_video: MakeVideo, *,
                 model_ready: Callable[[], bool], only_owner: str | None = None,
                 on_fatal: Callable[[], None] | None = None):
        """``only_owner`` makes this worker run only that owner's jobs (the command line's).
        ``on_fatal`` is called after a CUDA error that leaves the GPU unusable."""
        self.store = store
        self.live = live
        self.make_video = make_video
        self.model_ready = model_ready
        self.only_owner = only_owner
        self.on_fatal = on_fatal
        self.worker_id = this_worker()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        """Recover after a crash, then start the worker thread."""
        queued, interrupted = self.store.recover(worker_alive)
        if queued or interrupted:
            log.info("Found %d queued job(s); marked %d interrupted job(s)", queued, interrupted)
        self._thread = threading.Thread(target=self._work, name="gpu-worker", daemon=True)
        self._thread.start()
        return self._thread

    def _work(self) -> None:
        while not self._stopping.is_set():
            version = self.live.version  # a job submitted from now on wakes the wait below
            job = self.store.claim_next(self.worker_id, owner=self.only_owner) if self.model_ready() else None
            if job is None:
                self.live.wait_for_change(version, 1.0)
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        running = self.live.start(job.id)
        log.info("Running job %s (attempt %d)", job.id, job.attempts)
        try:
            result = self.make_video(_request_for(job), progress=self._reporter(job.id), cancel=running.cancel)
        except Exception as error:  # every failure ends in the job's state, with a message
            self._record_failure(job, running, error)
        else:
            self.store.update(job.id, state=DONE, finished=time.time(), message=None,
                              video_path=str(result.video_path), metadata_path=str(result.metadata_path))
        finally:
            self.live.finish(job.id)

    def _record_failure(self, job: Job, running: Running, error: Exception) -> None:
        if isinstance(error, Cancelled) and running.requeue:
            self.store.update(job.id, state=QUEUED, started=None, **error_message(AppError(key="msg_requeued")))
            return
        state = CANCELLED if isinstance(error, Cancelled) else FAILED
        if not isinstance(error, AppError):
            log.exception("Job %s failed", job.id, exc_info=error)
            error = AppError(key="err_something_wrong")
        self.store.update(job.id, state=state, finished=time.time(), **error_message(error))
        if isinstance(error, GPUFailed) and self.on_fatal:
            self.on_fatal()

    def _reporter(self, job_id: str) -> ProgressFn:
        last = {"stage": None, "stored": 0.0}

        def report(progress: Progress) -> None:
            self.live.report(job_id, progress)
            now = time.monotonic()
            finished_stage = progress.done >= progress.total
            if progress.stage != last["stage"] or finished_stage or now - last["stored"] >= STORE_EVERY_S:
                last.update(stage=progress.stage, stored=now)
                self.store.update(job_id, stage=progress.stage, done=progress.done, total=progress.total,
                                  eta=progress.eta_s)
        return report

    def shutdown(self, grace_s: float) -> None:
        """Take no new jobs; let the running one finish within ``grace_s``, else stop it and put it
        back in the queue. Queued jobs stay in the store for the next start."""
        self._stopping.set()
        self.live.poke()
        self.live.wait_until_idle(grace_s)
        for job_id in self.live.ids():
            if self.live.requeue_unless_cancelled(job_id):
                log.warning("Stopping job %s to shut down; it will run again after the restart", job_id)
        self.live.wait_until_idle(30)  # a cancelled job stops at its next step
        if self._thread:
            self._thread.join(5)


def _request_for(job: Job) -> GenerationRequest:
    try:
        with Image.open(job.image_path) as image:
            rgb = image.convert("RGB")
    except OSError:
        raise InvalidInput(key="err_input_gone") from None
    return GenerationRequest(image=rgb, **job.params)
