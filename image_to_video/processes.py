"""Is a process still the one we started? Process identity by PID plus start time.

A PID alone is not an identity: after a crash the kernel hands the same number to
another program. The start time in clock ticks since boot (field 22 of
``/proc/PID/stat``) tells them apart. The job queue records its worker this way, and
the launcher its app's PID file, so ``kill -9`` and a reused PID are both seen for
what they are.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

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
