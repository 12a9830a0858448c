"""Where jobs are kept: the ``Job`` record, the ``JobStore`` interface and its SQLite implementation.

Every generation, from the page, the HTTP API or the command line, is a ``Job`` with
an id, its parameters and a state. Jobs live in a ``JobStore`` (SQLite by default,
behind a small interface so a shared queue can replace it later), so a closed tab, a
reload, a restart or a ``kill -9`` loses nothing: at start-up queued jobs stay queued
and a job that was running is marked interrupted, to be retried with one click.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from .errors import AppError, QueueFull
from .i18n import t

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = (DONE, FAILED, CANCELLED, INTERRUPTED)

#: The model of a job stored before jobs named one (the app had one model then).
DEFAULT_MODEL = "i2vgen-xl"
#: How long a queued job may be passed over for jobs of the model a worker holds (``claim_next``):
#: switching models costs a load (seconds to minutes), waiting too long is worse.
PREFER_MODEL_FOR_S = 120.0



def end_frame_path(image_path: str | Path) -> Path:
    """Where a job's end frame is kept: beside its picture, ``<id>_end.png``."""
    path = Path(image_path)
    return path.with_name(f"{path.stem}_end.png")


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
    #: The id of the job that a retry of this one made (set once: a second retry answers with it).
    retried_as: str | None = None
    #: Which worker ran it last (its name, "gpu1"), on which device ("cuda:1") and machine (host name).
    worker_name: str | None = None
    worker_device: str | None = None
    worker_machine: str | None = None

    def localized_message(self, lang: str) -> str | None:
        """``message`` in ``lang`` when it was stored with its key, else as stored (English)."""
        if self.message_key:
            try:
                stored = json.loads(self.message_key)
                return t(stored["key"], lang, **stored["params"])
            except (ValueError, TypeError, KeyError, IndexError):  # a damaged row: its English text
                log.warning("The message of job %s cannot be read in %s; showing it as stored", self.id, lang)
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
            "attempts": self.attempts, "retried_as": self.retried_as,
            "worker": {"name": self.worker_name, "device": self.worker_device, "machine": self.worker_machine}
            if self.worker_name else None,
        }


class JobStore(Protocol):
    """Where jobs are kept. SQLite here; a shared queue engine can implement the same."""

    def add(self, job: Job, *, max_queued: int, retry_of: str | None = None) -> Job: ...
    def get(self, job_id: str) -> Job | None: ...
    def update(self, job_id: str, **changes: Any) -> Job | None: ...
    def claim_next(self, worker: str, *, owner: str | None = None, ran_on: dict[str, str] | None = None,
                   prefer_model: str | None = None, patience_s: float = PREFER_MODEL_FOR_S) -> Job | None: ...
    def cancel_if_queued(self, job_id: str, message: str) -> bool: ...
    def list(self, *, owner: str | None = None, limit: int = 50) -> list[Job]: ...
    def position(self, job_id: str) -> int | None: ...
    def recover(self, is_alive: Callable[[str], bool]) -> tuple[int, int]: ...
    def inputs_to_prune(self, finished_before: float) -> list[str]: ...
    def image_paths(self) -> set[str]: ...


_COLUMNS = [f.name for f in fields(Job)]


#: Columns added after the first release, with their type: an older database gains them at start.
_ADDED_COLUMNS = {"message_key": "TEXT", "retried_as": "TEXT", "worker_name": "TEXT", "worker_device": "TEXT",
                  "worker_machine": "TEXT"}


class SQLiteJobStore:
    """Jobs in one SQLite file; safe across threads and processes (WAL, immediate transactions)."""

    def __init__(self, path: Path, *, timeout_s: float = 30):
        """``timeout_s``: how long a call waits for another writer's lock before it raises
        ``sqlite3.OperationalError`` ("database is locked")."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
                image_path TEXT NOT NULL, created REAL NOT NULL, source TEXT, started REAL, finished REAL,
                stage TEXT, done INTEGER, total INTEGER, eta REAL, message TEXT, video_path TEXT,
                metadata_path TEXT, attempts INTEGER, worker TEXT, message_key TEXT, retried_as TEXT)""")
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in columns:  # a database from before this column existed
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created)")

    @contextmanager
    def _connect(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: a writer's takes the write lock at once (``BEGIN IMMEDIATE``); a reader's
        takes none, so in WAL mode reads go on while another process holds the write lock."""
        with self._lock:
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            db.text_factory = _text
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield db
                db.execute("COMMIT")
            except BaseException:
                # Only roll back a transaction that began: after a failed BEGIN (database locked)
                # a ROLLBACK raises "no transaction is active", which would replace the real error.
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
            finally:
                db.close()

    @staticmethod
    def _row(row: tuple | None) -> Job | None:
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row))
        values["params"] = _params(values["params"]) or {}  # a damaged row still lists (and then fails)
        values["done"] = values["done"] or 0
        values["total"] = values["total"] or 0
        values["attempts"] = values["attempts"] or 0
        return Job(**values)

    def add(self, job: Job, *, max_queued: int, retry_of: str | None = None) -> Job:
        """Insert ``job`` unless ``max_queued`` jobs already wait (checked atomically); returns it.

        With ``retry_of``, ``job`` is the retry of that job, made once: when it was retried already
        nothing is inserted and the earlier retry is returned (one transaction, so of any number
        of simultaneous retries exactly one inserts).
        """
        with self._connect() as db:
            earlier = self._retried_as(db, retry_of) if retry_of is not None else None
            if earlier is not None:
                return earlier
            (waiting,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()
            if waiting >= max_queued:
                raise QueueFull(key="err_queue_full", waiting=waiting)
            values = [json.dumps(job.params) if name == "params" else getattr(job, name) for name in _COLUMNS]
            db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       values)
            if retry_of is not None:
                db.execute("UPDATE jobs SET retried_as = ? WHERE id = ? AND retried_as IS NULL", (job.id, retry_of))
            return job

    def _retried_as(self, db: sqlite3.Connection, job_id: str) -> Job | None:
        """The job an earlier retry of ``job_id`` made, or None."""
        row = db.execute("SELECT retried_as FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return self._row(db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (row[0],)).fetchone())

    def get(self, job_id: str) -> Job | None:
        with self._connect(write=False) as db:
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

    def claim_next(self, worker: str, *, owner: str | None = None, ran_on: dict[str, str] | None = None,
                   prefer_model: str | None = None, patience_s: float = PREFER_MODEL_FOR_S) -> Job | None:
        """Atomically move the oldest queued job (of ``owner``, if given) to running. ``worker`` is the
        claiming process (``processes.this_worker``); ``ran_on`` the worker's name, device and machine.
        ``prefer_model``: the model the worker holds; a job for it goes first, saving a model switch,
        unless the oldest job (for another model) has waited ``patience_s`` already (none starves)."""
        placed = {f"worker_{key}": (ran_on or {}).get(key) for key in ("name", "device", "machine")}
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE state = ?"
        args: list[Any] = [QUEUED]
        if owner is not None:
            query += " AND owner = ?"
            args.append(owner)
        with self._connect() as db:
            while True:
                row = db.execute(query + " ORDER BY created LIMIT 1", args).fetchone()
                if row is None:
                    return None
                oldest = _params(row[_COLUMNS.index("params")])
                if (prefer_model and oldest is not None and oldest.get("model", DEFAULT_MODEL) != prefer_model
                        and time.time() - row[_COLUMNS.index("created")] < patience_s):
                    row = db.execute(query + " AND coalesce(CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END, ?) = ? "
                                     "ORDER BY created LIMIT 1", [*args, DEFAULT_MODEL, prefer_model]).fetchone() or row
                if _params(row[_COLUMNS.index("params")]) is None:  # a damaged row must not block the queue
                    self._fail_unreadable(db, row[0])
                    continue
                job = self._row(row)
                now = time.time()
                db.execute("UPDATE jobs SET state = ?, started = ?, attempts = attempts + 1, stage = NULL, "
                           "done = 0, total = 0, eta = NULL, message = NULL, message_key = NULL, worker = ?, "
                           "worker_name = ?, worker_device = ?, worker_machine = ? WHERE id = ?",
                           (RUNNING, now, worker, *placed.values(), job.id))
                return replace(job, state=RUNNING, started=now, attempts=job.attempts + 1, worker=worker, **placed)

    @staticmethod
    def _fail_unreadable(db: sqlite3.Connection, job_id: str) -> None:
        log.error("The settings of job %s cannot be read (a damaged row); marking it failed", job_id)
        message = error_message(AppError(key="err_something_wrong"))
        db.execute("UPDATE jobs SET state = ?, finished = ?, message = ?, message_key = ? WHERE id = ?",
                   (FAILED, time.time(), message["message"], message["message_key"], job_id))

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
        with self._connect(write=False) as db:
            return [self._row(row) for row in db.execute(query, [*args, limit]).fetchall()]

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run, 2 after it, ...; None unless queued."""
        with self._connect(write=False) as db:
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
            message = error_message(AppError(key="err_interrupted"))
            for job_id in dead:
                db.execute("UPDATE jobs SET state = ?, finished = ?, message = ?, message_key = ? WHERE id = ?",
                           (INTERRUPTED, time.time(), message["message"], message["message_key"], job_id))
            (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()
            return queued, len(dead)

    def inputs_to_prune(self, finished_before: float) -> list[str]:
        """Input pictures no job needs any more: a done job's (its video has a copy beside it), and
        those of jobs that failed, were cancelled or interrupted before ``finished_before``."""
        with self._connect(write=False) as db:
            rows = db.execute("SELECT image_path FROM jobs WHERE state = ? OR (state IN (?, ?, ?) AND finished < ?)",
                              (DONE, FAILED, CANCELLED, INTERRUPTED, finished_before)).fetchall()
            return [path for (path,) in rows]

    def image_paths(self) -> set[str]:
        """The input picture of every job (to tell a picture no job refers to)."""
        with self._connect(write=False) as db:
            return {path for (path,) in db.execute("SELECT image_path FROM jobs").fetchall()}


def _text(value: bytes) -> str:
    """A stored text, with a replacement character for each byte that is not UTF-8: one row written
    by hand or by a broken tool must not make the whole job list unreadable."""
    return value.decode("utf-8", errors="replace")


def _params(text: Any) -> dict[str, Any] | None:
    """A job's stored settings, or None when they are not a JSON object (a damaged row)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def error_message(error: AppError) -> dict[str, Any]:
    """An error as the job's message, with its i18n key when it has one."""
    key = json.dumps({"key": error.key, "params": error.params}, default=str) if error.key else None
    return {"message": str(error), "message_key": key}


def set_aside_if_damaged(path: Path) -> tuple[Path, str] | None:
    """When ``path`` is not a sound SQLite database, rename it (with its ``-wal`` and ``-shm``) to
    ``<name>.damaged-<timestamp>`` so that a fresh one can start; returns (new name, what is wrong),
    or None when it is sound or absent. Nothing is deleted."""
    path = Path(path)
    problem = _damage(path) if path.exists() else None
    if problem is None:
        return None
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(aside.with_name(aside.name + suffix))
    return aside, problem


def _damage(path: Path) -> str | None:
    """What is wrong with the database at ``path`` (SQLite's words), or None when it is sound.
    A locked or unreadable file raises instead: it is not damaged and must not be set aside."""
    db = sqlite3.connect(path, timeout=30)
    try:
        result = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as error:  # "file is not a database", "database disk image is malformed"
        return str(error)
    finally:
        db.close()
    return None if result == ["ok"] else "; ".join(map(str, result))
