"""An engine in another process or on another machine, seen by the server as if it were its own.

``RemoteEngine`` gives ``VideoService``, the ``Worker``, the page and the API what they read of an
``Engine`` (``generate``, ``status``, ``ready``, ``device``, ``memory_mode``, ...), over a ``Channel``
to an ``engine_host.EngineHost``: a local child process (``process_channel.ProcessChannel``) or a
Ray actor (``ray_backend``). ``generate`` starts the job on the host, then polls it, forwarding
progress and the live preview, and a cancel; the host's error comes back as the same ``AppError``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Protocol

import torch

from .errors import WorkerLost, rebuilt_error
from .model_status import ModelState, ModelStatus
from .progress import ProgressFn, ignore
from .request import GenerationRequest

#: How often a running job is polled for its progress.
POLL_S = 0.2


class Channel(Protocol):
    """One ``EngineHost`` somewhere, called by method name."""

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``EngineHost.<method>(*args, **kwargs)`` there and return its result; raises
        ``errors.WorkerLost`` when the host is gone, unreachable or does not answer in time."""

    def restart(self) -> None:
        """Bring up a fresh host (a Ray actor restarts by itself: wait until it answers)."""

    def close(self) -> None:
        """Stop the host for good."""


def plain_request(request: GenerationRequest) -> dict:
    """A request as the host takes it: its fields by name (the picture a PIL image), which pickle
    anywhere (the request's own class, made by ``make_dataclass``, does not)."""
    return {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}


class RemoteEngine:
    """An ``Engine`` behind ``channel``: one job at a time, as the worker that owns it sends them."""

    def __init__(self, channel: Channel, *, name: str, poll_s: float = POLL_S):
        self.channel, self.name, self.poll_s = channel, name, poll_s
        #: The host's last ``describe()``; None until it first answered (and after a restart).
        self._described: dict | None = None
        #: True once a call found the host gone, until ``restart``.
        self.lost = False

    # -- what the service, the worker and the page read ---------------------------
    # Read from the host's last description, never by a call: a page or an API request must not
    # wait for a host that is starting or busy. The worker's thread refreshes it (``check``).

    @property
    def status(self) -> ModelStatus:
        if self.lost:
            return ModelStatus(state=ModelState.ERROR, key="status_worker_lost", params={"worker": self.name})
        described = self._described
        if described is None:
            return ModelStatus(key="status_worker_starting", params={"worker": self.name})
        return described["status"]

    ready = property(lambda self: self.status.ready)
    memory_mode = property(lambda self: self._field("memory_mode"))
    #: The model the host holds or is loading (``engine_host`` describes it).
    loaded_model = property(lambda self: self._field("model"))
    model_path = property(lambda self: self._field("model_path"))
    model_revision = property(lambda self: self._field("model_revision"))
    gpu_memory_gb = property(lambda self: self._field("gpu_memory_gb"))
    gpu_name = property(lambda self: self._field("gpu_name"))
    #: The machine (host name) and process id of the host.
    machine = property(lambda self: self._field("host"))
    pid = property(lambda self: self._field("pid"))

    @property
    def device(self) -> torch.device | None:
        """The host's device, as the engine gives its own (the service reads ``device.type``)."""
        name = self._field("device")
        try:
            return torch.device(name) if name else None
        except (RuntimeError, TypeError):  # not a device yet ("auto" while a Ray actor loads)
            return None

    def device_answers(self) -> bool:
        """The host answered and its model is ready (the host checks its own device as it runs jobs)."""
        return self.ready

    def describe(self) -> dict:
        """The host's ``describe()``, fresh, kept for the readers; a gone host marks this engine lost
        (and raises ``WorkerLost``)."""
        self._described = described = self._call("describe")
        return described

    def check(self) -> bool:
        """Ask the host how it stands (the worker's thread does, between jobs); True when it takes a job
        (its model is ready, or another offered model's job may switch from one that failed to load)."""
        try:
            described = self.describe()
        except WorkerLost:
            return False
        return bool(described.get("takes_jobs", self.ready))

    def _field(self, name: str) -> Any:
        described = self._described
        return None if described is None or self.lost else described.get(name)

    # -- running ------------------------------------------------------------------

    def start_loading(self) -> None:
        self._call("start_loading")

    def generate(self, request: GenerationRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> Any:
        """The host's frames for ``request`` (an ``engine.Frames``); the host's error re-raised as
        itself, ``WorkerLost`` when the host goes away meanwhile."""
        report, cancel = progress or ignore, cancel or threading.Event()
        job_id = f"{self.name}-{time.time_ns()}"
        self._call("start", job_id, plain_request(request))
        cancel_sent, last = False, None
        while True:
            if cancel.is_set() and not cancel_sent:
                self._call("cancel", job_id)
                cancel_sent = True
            state = self._call("poll", job_id)
            moved = state["progress"]
            if moved is not None and ((moved.stage, moved.done, moved.total) != last or moved.preview is not None):
                report(moved)
                last = (moved.stage, moved.done, moved.total)
            if state["finished"]:
                if state["error"] is not None:
                    error = rebuilt_error(state["error"])
                    self.lost = self.lost or isinstance(error, WorkerLost)
                    raise error
                return state["frames"]
            if cancel_sent:
                time.sleep(self.poll_s)
            else:
                cancel.wait(self.poll_s)  # a cancel is sent at once, not at the next poll

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return self.channel.call(method, *args)
        except WorkerLost:
            self.lost = True
            raise

    # -- its life -----------------------------------------------------------------

    def restart(self) -> None:
        """A fresh host, loading its model (after it was lost, or after a fatal GPU error)."""
        self.channel.restart()
        self._described, self.lost = None, False
        self.start_loading()

    def close(self) -> None:
        self.channel.close()
