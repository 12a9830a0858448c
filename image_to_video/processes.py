"""Is a process still the one we started? Process identity by PID plus start time.

A PID alone is not an identity: after a crash the kernel hands the same number to
another program. The start time in clock ticks since boot (field 22 of
``/proc/PID/stat``) tells them apart. The job queue records its worker this way, and
the launcher its app's PID file, so ``kill -9`` and a reused PID are both seen for
what they are.

``FolderLock`` keeps one process per data folder (and per output folder): an exclusive
``flock`` that the kernel releases when its process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import AlreadyRunning

if TYPE_CHECKING:
    from .config import AppConfig

GONE = "gone"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and brackets, so split after its last ")".
    return stat.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot, or ``"gone"`` when there is no such process."""
    fields = _stat_fields(pid)
    return fields[19] if fields else GONE


def is_running(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) does not."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def is_same_process(pid: int, ticks: str) -> bool:
    """True while ``pid`` is still the process that started at ``ticks``."""
    return ticks != GONE and start_ticks(pid) == ticks


def this_worker() -> str:
    """This process as a worker id: host, PID and start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{start_ticks(os.getpid())}"


def worker_alive(worker: str) -> bool:
    """False when ``worker`` ran on this host and that process is gone (or is another one now)."""
    try:
        host, pid, ticks = worker.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's worker: not ours to judge
    return is_same_process(pid_number, ticks)


class FolderLock:
    """An exclusive lock on ``<folder>/app.lock``, held for the life of this process.

    The file says who holds it (``{"pid": ..., ...}`` as JSON), for the message the next
    process shows. Only the ``flock`` counts, never the file's words: after a ``kill -9``
    the kernel has dropped the lock and the stale file is simply taken over. The file
    descriptor is not inherited across ``exec``, so a process that replaces itself
    (``app.restart_process``) takes the lock again.
    """

    NAME = "app.lock"

    def __init__(self, folder: Path):
        self.path = Path(folder) / self.NAME
        self._file: TextIO | None = None
        #: A second folder's lock held with this one and let go with it (the output folder's).
        self.also: FolderLock | None = None

    def acquire(self, **holder: Any) -> dict[str, Any] | None:
        """Take the lock and write this PID and ``holder`` into the file; returns None.
        When another process holds it, returns what that one wrote (``{}`` if unreadable)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return self.holder()
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), **holder}))
        file.flush()
        self._file = file
        return None

    def holder(self) -> dict[str, Any]:
        """What the holding process wrote (it may be writing it right now: read twice)."""
        for _attempt in range(2):
            try:
                record = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(record, dict):
                    return record
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        return {}

    def release(self) -> None:
        """Let the lock go (the process ending does the same)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.also is not None:
            self.also.release()
            self.also = None


def claim_data_folder(config: AppConfig, command: str) -> FolderLock:
    """This process's exclusive hold on the data folder and the output folder, for as long as it lives.

    One server per folder, not one per port: there is one GPU and one queue, and a
    second server (or ``generate``) on the same jobs would run a second job on that GPU
    at once and clean up the first one's half-written files at its start. The output folder
    is held too (``outputs/app.lock``): a second server with a data folder of its own but the
    same output folder would remove the first one's videos in progress as a crash's leftovers.
    """
    server = config.server
    address = "localhost" if server.host in ("0.0.0.0", "::", "") else server.host
    holder = dict(command=command, port=server.port if command == "serve" else None,
                  url=f"http://{address}:{server.port}/" if command == "serve" else None)
    lock = _claim(FolderLock(config.paths.state_dir), holder, output=False)
    if Path(config.paths.output_dir).resolve() != Path(config.paths.state_dir).resolve():
        try:
            lock.also = _claim(FolderLock(config.paths.output_dir), holder, output=True)
        except AlreadyRunning:
            lock.release()
            raise
    return lock


def _claim(lock: FolderLock, holder: dict[str, Any], *, output: bool) -> FolderLock:
    """``lock`` taken; raises ``AlreadyRunning`` naming the process that holds it."""
    other = lock.acquire(**holder)
    if other is None:
        return lock
    folder, pid = lock.path.parent, other.get("pid", "?")
    if output:
        raise AlreadyRunning(key="err_output_folder_taken", pid=pid, folder=folder)
    if other.get("command") == "generate":
        raise AlreadyRunning(key="err_folder_has_generate", pid=pid, folder=folder)
    raise AlreadyRunning(key="err_folder_has_server", pid=pid, port=other.get("port", "?"), folder=folder,
                         url=other.get("url") or "the address it printed")
