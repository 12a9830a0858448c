"""The GPU worker: one thread that claims the next job and turns it into a video, one at a time.

It records every outcome in the store, with a message the owner can act on; the
running job's progress goes to ``LiveJobs`` at every step and to the store at most
once a second (and at each stage change), for readers in other processes. After a
CUDA error that leaves the GPU unusable it calls ``on_fatal`` (the server restarts
itself in place, or a worker process is started afresh). Nothing one job or the store
raises ends the thread: it logs the error, waits a little longer each time, and carries
on; ``healthy`` tells the readiness check whether it is running and its last store call
succeeded.

Several workers (``jobs.workers``) share one store and one ``LiveJobs``, each with its own
engine, often in a process of its own (``remote_engine``). When that process is lost under a
job (``WorkerLost``), the job goes back to the queue for another run (up to
``jobs.max_attempts``), the engine is started again, and the worker goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from .errors import AppError, Cancelled, GPUFailed, InvalidInput, WorkerLost
from .job_store import CANCELLED, DONE, FAILED, QUEUED, Job, JobStore, end_frame_path, error_message
from .live import LiveJobs, Running
from .processes import this_worker, worker_alive
from .progress import Progress, ProgressFn
from .request import GenerationRequest
from .workers import WorkerBoard

log = logging.getLogger(__name__)

#: The store gets the running job's progress at most this often (and at every stage change).
STORE_EVERY_S = 1.0

#: After a store error the worker waits this long, doubling up to ``BACKOFF_MAX_S``, and tries again.
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0

#: How long a shutdown waits for the job it stopped (after ``jobs.shutdown_grace_s``): every step checks
#: the cancel switch, the model's at each denoising step and the ffmpeg ones every ``video.CANCEL_POLL_S``,
#: so a job stops within a second or two; with the default grace (10 s) the server is gone well within the
#: 20 s ``start_app.sh stop`` gives it before KILL, and the stopped job is back in the queue.
STOP_WAIT_S = 5.0

#: ``make_video(request, progress=..., cancel=...)``: the video service's one call.
MakeVideo = Callable[..., object]


class Worker:
    """Runs queued jobs on the GPU, one at a time, in a background thread."""

    def __init__(self, store: JobStore, live: LiveJobs, make_video: MakeVideo, *,
                 model_ready: Callable[[], bool], only_owner: str | None = None,
                 on_fatal: Callable[[], None] | None = None, after_job: Callable[[], None] | None = None,
                 name: str = "worker", board: WorkerBoard | None = None, max_attempts: int = 3,
                 engine_lost: Callable[[], bool] | None = None, restart: Callable[[], None] | None = None,
                 loaded_model: Callable[[], str | None] | None = None):
        """``only_owner`` makes this worker run only that owner's jobs (the command line's).
        ``on_fatal`` is called after a CUDA error that leaves the GPU unusable; ``after_job``
        after every job (housekeeping: pruning old input pictures). ``name`` and ``board``: this
        worker among several (``board.add`` it first: its jobs record its name, device and machine).
        ``engine_lost`` says whether the engine's process is gone, ``restart`` starts a fresh one; a
        job whose engine is lost under it runs again, ``max_attempts`` runs in all. ``loaded_model``: the
        model the engine holds, whose queued jobs go first (``claim_next``: no switch, none starving)."""
        self.name, self.board, self.max_attempts = name, board, max_attempts
        self.engine_lost, self.restart = engine_lost, restart
        self.store = store
        self.live = live
        self.make_video = make_video
        self.model_ready = model_ready
        self.loaded_model = loaded_model or (lambda: None)
        self.only_owner = only_owner
        self.on_fatal = on_fatal
        self.after_job = after_job
        self.worker_id = this_worker()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: The error the worker is waiting out (the store's, mostly), or None when its last step succeeded.
        self.error: Exception | None = None

    def start(self) -> threading.Thread:
        """Recover after a crash, then start the worker thread."""
        queued, interrupted = self.store.recover(worker_alive)
        if queued or interrupted:
            log.info("Found %d queued job(s); marked %d interrupted job(s)", queued, interrupted)
        self._thread = threading.Thread(target=self._work, name=f"worker-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    @property
    def healthy(self) -> bool:
        """True while the worker thread runs and is not waiting out an error (a store it cannot reach)."""
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def _work(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception as error:  # noqa: BLE001 - the thread must outlive any one failure
                failures += 1
                self._back_off(error, failures)
            else:
                failures = 0

    def _step(self) -> None:
        """Run the next job, or wait a moment for one."""
        version = self.live.version  # a job submitted from now on wakes the wait below
        if self.engine_lost and self.engine_lost():
            self._restart_engine()
        ready = self.model_ready()
        ran_on = self.board.identity(self.name) if self.board and ready else None
        job = self.store.claim_next(self.worker_id, owner=self.only_owner, ran_on=ran_on,
                                    prefer_model=self.loaded_model()) if ready else None
        self.error = None
        if job is None:
            self.live.wait_for_change(version, 1.0)
            return
        self._run(job)
        if self.after_job:
            self.after_job()

    def _back_off(self, error: Exception, failures: int) -> None:
        """Log ``error`` and wait before the next try, longer after each failure in a row."""
        self.error = error
        delay = min(BACKOFF_S * 2 ** (failures - 1), BACKOFF_MAX_S)
        log.error("The job worker hit an error (%s: %s); trying again in %.1f s", type(error).__name__, error,
                  delay, exc_info=failures == 1)
        self._stopping.wait(delay)

    def _restart_engine(self) -> None:
        """Start a fresh engine process in place of a lost one (the board says so meanwhile)."""
        if self.board:
            self.board.trouble(self.name, "restarting")
        log.warning("Worker %s: its engine is gone; starting it again", self.name)
        try:
            self.restart()
        except Exception:
            if self.board:
                self.board.trouble(self.name, "lost")
            raise  # the worker backs off and tries again
        if self.board:
            self.board.trouble(self.name, None)

    def _run(self, job: Job) -> None:
        running = self.live.start(job.id)
        if self.board:
            self.board.job_started(self.name, job.id)
        log.info("Running job %s on worker %s (attempt %d)", job.id, self.name, job.attempts)
        error = None
        try:
            result = self.make_video(_request_for(job), progress=self._reporter(job.id), cancel=running.cancel)
        except Exception as failure:  # every failure ends in the job's state, with a message
            error = failure
            outcome = self._failure(job, running, failure)
        else:
            note = getattr(result, "note", None)  # e.g. a GIF asked for that could not be made
            outcome = dict(state=DONE, finished=time.time(), video_path=str(result.video_path),
                           metadata_path=str(result.metadata_path),
                           **(error_message(note) if note else {"message": None, "message_key": None}))
        try:
            self._record(job.id, outcome)
        finally:
            self.live.finish(job.id)
            if self.board:
                self.board.job_ended(self.name, done=outcome["state"] == DONE)
        if outcome["state"] == DONE:  # its video has a copy of the picture beside it
            Path(job.image_path).unlink(missing_ok=True)
            end_frame_path(job.image_path).unlink(missing_ok=True)
        if isinstance(error, GPUFailed) and self.on_fatal:
            self.on_fatal()
        if isinstance(error, WorkerLost) and self.restart:
            self._restart_engine()

    def _record(self, job_id: str, outcome: dict) -> None:
        """Store a job's outcome, trying again while the store fails (a job that ran must not stay
        "running"); gives up only when the worker stops (the next start marks it interrupted)."""
        failures = 0
        while True:
            try:
                self.store.update(job_id, **outcome)
                self.error = None
                return
            except Exception as error:  # noqa: BLE001 - retried below, logged by _back_off
                failures += 1
                if self._stopping.is_set():
                    raise
                self._back_off(error, failures)

    def _failure(self, job: Job, running: Running, error: Exception) -> dict:
        """The store changes for a job that raised ``error``."""
        if isinstance(error, WorkerLost):  # its owner's cancel stands; anything else runs again
            if not running.cancel.is_set() or running.requeue:
                return self._lost(job, error)
            error = Cancelled(key="err_cancelled")
        if isinstance(error, Cancelled) and running.requeue:
            log.warning("Job %s stopped for the shutdown; it is back in the queue and runs again after the restart",
                        job.id)
            return dict(state=QUEUED, started=None, **error_message(AppError(key="msg_requeued")))
        state = CANCELLED if isinstance(error, Cancelled) else FAILED
        if not isinstance(error, AppError):
            log.exception("Job %s failed", job.id, exc_info=error)
            error = AppError(key="err_something_wrong")
        return dict(state=state, finished=time.time(), **error_message(error))

    def _lost(self, job: Job, error: WorkerLost) -> dict:
        """The store changes for a job whose engine process was lost under it: back in the queue for
        its next run, or failed after ``max_attempts`` runs (``claim_next`` counted this one)."""
        if job.attempts < self.max_attempts:
            log.warning("Job %s goes back in the queue: %s", job.id, error)
            return dict(state=QUEUED, started=None,
                        **error_message(AppError(key="msg_worker_lost_requeued", attempt=job.attempts + 1)))
        log.error("Job %s failed: its worker stopped under it %d times", job.id, job.attempts)
        return dict(state=FAILED, finished=time.time(),
                    **error_message(AppError(key="err_worker_lost_final", attempts=job.attempts)))

    def _reporter(self, job_id: str) -> ProgressFn:
        last = {"stage": None, "stored": 0.0}

        def report(progress: Progress) -> None:
            self.live.report(job_id, progress)
            now = time.monotonic()
            finished_stage = progress.done >= progress.total
            if progress.stage != last["stage"] or finished_stage or now - last["stored"] >= STORE_EVERY_S:
                last.update(stage=progress.stage, stored=now)
                try:
                    self.store.update(job_id, stage=progress.stage, done=progress.done, total=progress.total,
                                      eta=progress.eta_s)
                except Exception as error:  # noqa: BLE001 - a missed progress copy must not fail the job
                    log.warning("Could not store the progress of job %s: %s", job_id, error)
        return report

    def stop_claiming(self) -> None:
        """Take no new job (the running one goes on): the first step of a shutdown, which stops every
        worker's claims before any waits for its job."""
        self._stopping.set()

    def shutdown(self, grace_s: float) -> None:
        """Take no new jobs; let the running one finish within ``grace_s``, else stop it and put it
        back in the queue (within ``STOP_WAIT_S``; one that does not stop by then is left running, and
        the next start marks it interrupted, as the log says). Queued jobs stay in the store for the
        next start."""
        self.stop_claiming()
        self.live.poke()
        self.live.wait_until_idle(grace_s)
        for job_id in self.live.ids():
            if self.live.requeue_unless_cancelled(job_id):
                log.warning("Stopping job %s to shut down", job_id)
        if not self.live.wait_until_idle(STOP_WAIT_S):  # a stopped job ends at its next step
            for job_id in self.live.ids():
                log.error("Job %s did not stop within %.0f s of the shutdown; the next start marks it interrupted "
                          "(Retry makes it again)", job_id, STOP_WAIT_S)
        if self._thread:
            self._thread.join(2)


def _request_for(job: Job) -> GenerationRequest:
    params = dict(job.params)
    ends = params.pop("end_frame", False)
    try:
        with Image.open(job.image_path) as image:
            rgb = image.convert("RGB")
        if ends:
            with Image.open(end_frame_path(job.image_path)) as image:
                params["last_image"] = image.convert("RGB")
    except OSError:
        raise InvalidInput(key="err_input_gone") from None
    return GenerationRequest(image=rgb, **params)
