"""Jobs the server owns: a persistent store, a bounded queue and one GPU worker.

Every generation, from the page, the HTTP API or the command line, is a ``Job``
with an id, its parameters and a state. Jobs live in a ``JobStore`` (SQLite by
default, behind a small interface so a shared queue can replace it later), so a
closed tab, a reload, a restart or a ``kill -9`` loses nothing: at start-up queued
jobs stay queued and a job that was running is marked interrupted, to be retried
with one click.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from .engine import Progress, is_fatal_cuda_error
from .errors import AppError, Cancelled, InvalidInput, ModelUnavailable
from .i18n import t
from .request import GenerationRequest, build_request

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = (DONE, FAILED, CANCELLED, INTERRUPTED)


class QueueFull(AppError):
    """The queue is at its configured bound; the job was not accepted."""


class JobNotFound(AppError):
    """No job with that id (or not one of the caller's)."""


@dataclass(frozen=True)
class Job:
    """One generation job, as stored."""

    id: str
    owner: str
    state: str
    params: dict[str, Any]
    image_path: str
    created: float
    source: str = "ui"
    started: float | None = None
    finished: float | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    eta: float | None = None
    message: str | None = None
    video_path: str | None = None
    metadata_path: str | None = None
    attempts: int = 0
    #: The process running it: "host:pid:start ticks" (to tell a live worker from a crashed one).
    worker: str | None = None
    #: ``message`` as an i18n key and its parameters (JSON), so the page can show it in any language.
    message_key: str | None = None

    def localized_message(self, lang: str) -> str | None:
        """``message`` in ``lang`` when it was stored with its key, else as stored (English)."""
        if self.message_key:
            stored = json.loads(self.message_key)
            return t(stored["key"], lang, **stored["params"])
        return self.message

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED

    def public(self) -> dict[str, Any]:
        """What the API and the page show of a job (no server paths)."""
        return {
            "id": self.id, "state": self.state, "source": self.source, "params": self.params,
            "created": self.created, "started": self.started, "finished": self.finished,
            "progress": {"stage": self.stage, "done": self.done, "total": self.total, "eta_s": self.eta},
            "message": self.message, "video": Path(self.video_path).name if self.video_path else None,
            "attempts": self.attempts,
        }


class JobStore(Protocol):
    """Where jobs are kept. SQLite here; a shared queue engine can implement the same."""

    def add(self, job: Job, *, max_queued: int) -> None: ...
    def get(self, job_id: str) -> Job | None: ...
    def update(self, job_id: str, **changes: Any) -> Job | None: ...
    def claim_next(self, worker: str, *, owner: str | None = None) -> Job | None: ...
    def cancel_if_queued(self, job_id: str, message: str) -> bool: ...
    def list(self, *, owner: str | None = None, limit: int = 50) -> list[Job]: ...
    def position(self, job_id: str) -> int | None: ...
    def recover(self, is_alive: Callable[[str], bool]) -> tuple[int, int]: ...


_COLUMNS = [f.name for f in fields(Job)]


class SQLiteJobStore:
    """Jobs in one SQLite file; safe across threads and processes (WAL, immediate transactions)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
                image_path TEXT NOT NULL, created REAL NOT NULL, source TEXT, started REAL, finished REAL,
                stage TEXT, done INTEGER, total INTEGER, eta REAL, message TEXT, video_path TEXT,
                metadata_path TEXT, attempts INTEGER, worker TEXT, message_key TEXT)""")
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "message_key" not in columns:  # a database from before messages were translatable
                db.execute("ALTER TABLE jobs ADD COLUMN message_key TEXT")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.close()

    @staticmethod
    def _row(row: tuple | None) -> Job | None:
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row))
        values["params"] = json.loads(values["params"])
        values["done"] = values["done"] or 0
        values["total"] = values["total"] or 0
        values["attempts"] = values["attempts"] or 0
        return Job(**values)

    def add(self, job: Job, *, max_queued: int) -> None:
        """Insert ``job`` unless ``max_queued`` jobs already wait (checked atomically)."""
        with self._connect() as db:
            (waiting,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()
            if waiting >= max_queued:
                raise QueueFull(key="err_queue_full", waiting=waiting)
            values = [json.dumps(job.params) if name == "params" else getattr(job, name) for name in _COLUMNS]
            db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       values)

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            return self._row(db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?",
                                        (job_id,)).fetchone())

    def update(self, job_id: str, **changes: Any) -> Job | None:
        if "params" in changes:
            changes["params"] = json.dumps(changes["params"])
        assignments = ", ".join(f"{key} = ?" for key in changes)
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*changes.values(), job_id])
            return self._row(db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?",
                                        (job_id,)).fetchone())

    def claim_next(self, worker: str, *, owner: str | None = None) -> Job | None:
        """Atomically move the oldest queued job (of ``owner``, if given) to running."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE state = ?"
        args: list[Any] = [QUEUED]
        if owner is not None:
            query += " AND owner = ?"
            args.append(owner)
        with self._connect() as db:
            row = db.execute(query + " ORDER BY created LIMIT 1", args).fetchone()
            if row is None:
                return None
            job = self._row(row)
            now = time.time()
            db.execute("UPDATE jobs SET state = ?, started = ?, attempts = attempts + 1, stage = NULL, "
                       "done = 0, total = 0, eta = NULL, message = NULL, message_key = NULL, worker = ? "
                       "WHERE id = ?",
                       (RUNNING, now, worker, job.id))
            return replace(job, state=RUNNING, started=now, attempts=job.attempts + 1, worker=worker)

    def cancel_if_queued(self, job_id: str, message: str) -> bool:
        with self._connect() as db:
            return db.execute("UPDATE jobs SET state = ?, finished = ?, message = ? WHERE id = ? AND state = ?",
                              (CANCELLED, time.time(), message, job_id, QUEUED)).rowcount == 1

    def list(self, *, owner: str | None = None, limit: int = 50) -> list[Job]:
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        args: list[Any] = []
        if owner is not None:
            query += " WHERE owner = ?"
            args.append(owner)
        query += " ORDER BY created DESC LIMIT ?"
        with self._connect() as db:
            return [self._row(row) for row in db.execute(query, [*args, limit]).fetchall()]

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run, 2 after it, ...; None unless queued."""
        with self._connect() as db:
            row = db.execute("SELECT created FROM jobs WHERE id = ? AND state = ?", (job_id, QUEUED)).fetchone()
            if row is None:
                return None
            (ahead,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ? AND created < ?",
                                  (QUEUED, row[0])).fetchone()
            return ahead + 1

    def recover(self, is_alive: Callable[[str], bool]) -> tuple[int, int]:
        """Running jobs whose worker process is gone become interrupted. Returns (queued, interrupted)."""
        with self._connect() as db:
            rows = db.execute("SELECT id, worker FROM jobs WHERE state = ?", (RUNNING,)).fetchall()
            dead = [job_id for job_id, worker in rows if not is_alive(worker or "")]
            message = _message(AppError(key="err_interrupted"))
            for job_id in dead:
                db.execute("UPDATE jobs SET state = ?, finished = ?, message = ?, message_key = ? WHERE id = ?",
                           (INTERRUPTED, time.time(), message["message"], message["message_key"], job_id))
            (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()
            return queued, len(dead)


def _message(error: AppError) -> dict[str, Any]:
    """An error as the job's message, with its i18n key when it has one."""
    key = json.dumps({"key": error.key, "params": error.params}, default=str) if error.key else None
    return {"message": str(error), "message_key": key}


def this_worker() -> str:
    """This process as a worker id: host, PID and start time (PIDs are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def worker_alive(worker: str) -> bool:
    """False when ``worker`` ran on this host and that process is gone (or is another one now)."""
    try:
        host, pid, ticks = worker.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's worker: not ours to judge
    return _start_ticks(pid_number) == ticks


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class _Running:
    job_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    requeue: bool = False  # cancelled by a shutdown: put it back in the queue


class JobQueue:
    """Accepts jobs (validated first), runs them one at a time on the GPU, and reports on them."""

    def __init__(self, store: JobStore, service, *, inputs_dir: Path, max_queued: int,
                 only_owner: str | None = None, on_fatal: Callable[[], None] | None = None):
        """``only_owner`` makes this worker run only that owner's jobs (the command line's).
        ``on_fatal`` is called after a CUDA error that leaves the GPU unusable (the server restarts)."""
        self.store = store
        self.on_fatal = on_fatal
        self.only_owner = only_owner
        self.worker_id = this_worker()
        self.service = service
        self.config = service.config
        self.inputs_dir = Path(inputs_dir)
        self.max_queued = max_queued
        self._running: _Running | None = None
        self._previews: dict[str, Any] = {}  # job id -> latest live preview (kept in memory only)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    # -- submitting ------------------------------------------------------------

    def submit(self, image: Any, prompt: Any, *, owner: str, source: str = "ui", **params: Any) -> Job:
        """Validate everything, keep the normalised image, and queue the job.

        Raises ``InvalidInput`` (nothing is stored) or ``QueueFull``.
        """
        if self._stopping.is_set():
            raise ModelUnavailable(key="err_shutting_down")
        request = build_request(self.config, image=image, prompt=prompt, **params)
        job_id = uuid.uuid4().hex[:12]
        image_path = self.inputs_dir / f"{job_id}.png"
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        request.image.save(image_path)
        job = Job(id=job_id, owner=owner, state=QUEUED, params=request.parameters(),
                  image_path=str(image_path), created=time.time(), source=source)
        try:
            self.store.add(job, max_queued=self.max_queued)
        except BaseException:
            image_path.unlink(missing_ok=True)
            raise
        log.info("Queued job %s from %s (%s)", job_id, source, owner[:8])
        self._wake.set()
        return job

    def retry(self, job_id: str, *, owner: str | None = None) -> Job:
        """Queue a finished (failed, cancelled or interrupted) job again as a new job."""
        old = self.get(job_id, owner=owner)
        if old.state not in (FAILED, CANCELLED, INTERRUPTED):
            raise InvalidInput(key="err_already_running", state=old.state)
        if not Path(old.image_path).is_file():
            raise InvalidInput(key="err_input_gone")
        params = {k: v for k, v in old.params.items() if k not in ("width", "height", "prompt")}
        return self.submit(Image.open(old.image_path), old.params["prompt"], owner=old.owner,
                           source=old.source, **params)

    def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a queued job now, or a running one at its next step."""
        job = self.get(job_id, owner=owner)
        if job.state == QUEUED and self.store.cancel_if_queued(job_id, "Cancelled before it started."):
            return self.get(job_id)
        with self._lock:
            if self._running and self._running.job_id == job_id:
                self._running.cancel.set()
        return self.get(job_id)

    # -- reading ---------------------------------------------------------------

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        job = self.store.get(str(job_id))
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(key="err_no_job", job=job_id)
        return job

    def list(self, *, owner: str | None = None, limit: int = 50) -> list[Job]:
        return self.store.list(owner=owner, limit=limit)

    def position(self, job_id: str) -> int | None:
        return self.store.position(job_id)

    def wait(self, job_id: str, *, on_update: Callable[[Job], None] | None = None,
             timeout: float | None = None, poll_s: float = 0.25) -> Job:
        """Block until the job has finished, calling ``on_update`` whenever it changes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            job = self.get(job_id)
            snapshot = (job.state, job.stage, job.done)
            if on_update and snapshot != last:
                on_update(job)
                last = snapshot
            if job.finished_state:
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(poll_s)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None

    # -- running ---------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Recover after a crash, then start the GPU worker thread."""
        queued, interrupted = self.store.recover(worker_alive)
        if queued or interrupted:
            log.info("Found %d queued job(s); marked %d interrupted job(s)", queued, interrupted)
        self._worker = threading.Thread(target=self._work, name="gpu-worker", daemon=True)
        self._worker.start()
        return self._worker

    def _work(self) -> None:
        while not self._stopping.is_set():
            if not self.service.engine.ready:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            job = self.store.claim_next(self.worker_id, owner=self.only_owner)
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        running = _Running(job.id)
        with self._lock:
            self._running = running
        log.info("Running job %s (attempt %d)", job.id, job.attempts)
        try:
            request = self._request_for(job)
            result = self.service.make_video(request, progress=self._reporter(job.id), cancel=running.cancel)
        except Cancelled as error:
            if running.requeue:
                self.store.update(job.id, state=QUEUED, started=None, **_message(AppError(key="msg_requeued")))
            else:
                self.store.update(job.id, state=CANCELLED, finished=time.time(), **_message(error))
        except AppError as error:
            self.store.update(job.id, state=FAILED, finished=time.time(), **_message(error))
        except Exception as error:
            log.exception("Job %s failed", job.id)
            if is_fatal_cuda_error(error):
                self.store.update(job.id, state=FAILED, finished=time.time(), **_message(AppError(key="err_gpu_fatal")))
                if self.on_fatal:
                    self.on_fatal()
                return
            self.store.update(job.id, state=FAILED, finished=time.time(),
                              **_message(AppError(key="err_something_wrong")))
        else:
            self.store.update(job.id, state=DONE, finished=time.time(), message=None,
                              video_path=str(result.video_path), metadata_path=str(result.metadata_path))
        finally:
            self._previews.pop(job.id, None)
            with self._lock:
                self._running = None

    def _request_for(self, job: Job) -> GenerationRequest:
        try:
            with Image.open(job.image_path) as image:
                rgb = image.convert("RGB")
        except OSError:
            raise InvalidInput(key="err_input_gone") from None
        return GenerationRequest(image=rgb, **job.params)

    def _reporter(self, job_id: str) -> Callable[[Progress], None]:
        def report(progress: Progress) -> None:
            if progress.preview is not None:
                self._previews[job_id] = progress.preview
            self.store.update(job_id, stage=progress.stage, done=progress.done, total=progress.total,
                              eta=None if progress.eta is None else round(progress.eta, 1))
        return report

    def preview(self, job_id: str):
        """The latest live preview of a running job (an RGB array), or None."""
        return self._previews.get(job_id)

    def shutdown(self, grace_s: float) -> None:
        """Take no new jobs; let the running one finish within ``grace_s``, else stop it and
        put it back in the queue. Queued jobs stay in the store for the next start."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + grace_s
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            if self._running and not self._running.cancel.is_set():  # not one a user cancelled
                log.warning("Stopping job %s to shut down; it will run again after the restart",
                            self._running.job_id)
                self._running.requeue = True
                self._running.cancel.set()
        deadline = time.monotonic() + 30
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._worker:
            self._worker.join(5)
