"""The running jobs of this process, in memory: their cancel switch, latest progress and live preview.

The worker writes here at every step; the queue's readers (the page following a job,
the API) read here without touching the database, and ``wait_for_change`` wakes them
as soon as something moved instead of polling. The store gets a throttled copy of the
progress, for readers in other processes and after a restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .progress import Progress


@dataclass
class Running:
    """One job this process is running."""

    job_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    #: Cancelled by a shutdown, not by its owner: it goes back to the queue.
    requeue: bool = False
    progress: Progress | None = None
    preview: Any = None


class LiveJobs:
    """Thread-safe board of the running job(s); every change wakes ``wait_for_change``."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running: dict[str, Running] = {}
        self._version = 0

    def start(self, job_id: str) -> Running:
        with self._changed:
            running = self._running[job_id] = Running(job_id)
            self._bump()
            return running

    def finish(self, job_id: str) -> None:
        with self._changed:
            self._running.pop(job_id, None)
            self._bump()

    def report(self, job_id: str, progress: Progress) -> None:
        with self._changed:
            running = self._running.get(job_id)
            if running is None:
                return
            running.progress = progress
            if progress.preview is not None:
                running.preview = progress.preview
            self._bump()

    def cancel(self, job_id: str) -> bool:
        """Ask a running job to stop at its next step (its owner's cancel); False if it is not running here."""
        with self._changed:
            running = self._running.get(job_id)
            if running is None:
                return False
            running.cancel.set()
            self._bump()
            return True

    def requeue_unless_cancelled(self, job_id: str) -> bool:
        """Stop a running job to shut down, to run again after the restart, unless its owner has already
        cancelled it (then it stays cancelled). True when it will be re-queued."""
        with self._changed:
            running = self._running.get(job_id)
            if running is None or running.cancel.is_set():
                return False
            running.requeue = True
            running.cancel.set()
            self._bump()
            return True

    def get(self, job_id: str) -> Running | None:
        with self._changed:
            return self._running.get(job_id)

    def ids(self) -> list[str]:
        with self._changed:
            return list(self._running)

    @property
    def version(self) -> int:
        with self._changed:
            return self._version

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until the board changed after ``version`` (or ``timeout`` s passed); returns the new version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout=timeout)
            return self._version

    def wait_until_idle(self, timeout: float) -> bool:
        """Block until no job runs here (or ``timeout`` s passed); True when none runs."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._running, timeout=timeout)

    def poke(self) -> None:
        """Wake the waiters (a job changed in the store: queued, cancelled, finished)."""
        with self._changed:
            self._bump()

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()
