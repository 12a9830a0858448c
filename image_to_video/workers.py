"""The workers of this server, seen together: which device each one gets, the board they report to
(``GET /api/workers``, the page's Workers panel, ``start_app.sh status``), and the one engine view the
page and the readiness check read when there are several engines.

Free of torch: it reads the engines it is handed (an ``Engine`` or a ``RemoteEngine``) by their
``status``, ``memory_mode`` and, for a remote one, ``machine``.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .model_status import ModelState

#: A worker's states, as the board lists them.
WORKER_STATES = ("loading", "ready", "busy", "lost", "restarting", "error")


def worker_devices(model_device: str, count: int, cuda_devices: int) -> list[str]:
    """The device of each of ``count`` workers: cuda:i on a machine with CUDA (more workers than GPUs
    take them in turn, each with its share of the memory: ``memory_shares``), else cpu. ``model_device``
    is ``model.device``: auto, cpu, cuda or cuda:N (one worker only: name no single GPU for several).
    Each worker's process sees only its own GPU, as its ``cuda`` (``process_channel.pin_gpu``)."""
    if model_device == "cpu" or (model_device == "auto" and cuda_devices == 0):
        return ["cpu"] * count
    if model_device.startswith("cuda:"):
        if count > 1:
            raise ConfigError(f"Invalid setting model.device: {model_device!r} with jobs.workers {count}. Allowed: "
                              "auto or cuda, so that worker i uses cuda:i (CUDA_VISIBLE_DEVICES picks the GPUs).")
        return [model_device]
    if cuda_devices == 0:  # model.device cuda on a machine without one: the engine says so as it loads
        return ["cuda"] * count
    return [f"cuda:{i % cuda_devices}" for i in range(count)]


def memory_shares(devices: list[str]) -> list[float]:
    """Each worker's part of its GPU's memory (``worker_devices``' list): 1/k where k workers share one
    GPU, which each counts as its free memory at most as it chooses its memory mode
    (``gpu.pick_memory_mode``'s ``share``); 1 on a GPU of its own and on the CPU."""
    return [1.0 if device == "cpu" else 1 / devices.count(device) for device in devices]


def worker_name(device: str, index: int) -> str:
    """"gpu0", "gpu1", ... on CUDA, "cpu0", "cpu1", ... on a CPU: the worker's name in jobs and lists."""
    return f"{'cpu' if device == 'cpu' else 'gpu'}{index}"


@dataclass
class _Entry:
    name: str
    device: str
    engine: Any
    current_job: str | None = None
    jobs_done: int = 0
    #: Set while the worker's engine is gone (lost) or being started again (restarting).
    trouble: str | None = None


class WorkerBoard:
    """What each worker is doing, for the lists; the workers report to it, readers get plain dicts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def add(self, name: str, *, device: str, engine: Any) -> None:
        with self._lock:
            self._entries[name] = _Entry(name, device, engine)

    def job_started(self, name: str, job_id: str) -> None:
        with self._lock:
            self._entries[name].current_job = job_id

    def job_ended(self, name: str, *, done: bool) -> None:
        """The worker's job ended; ``done``: it made its video (counted in ``jobs_done``)."""
        with self._lock:
            entry = self._entries[name]
            entry.current_job = None
            entry.jobs_done += done

    def trouble(self, name: str, state: str | None) -> None:
        """The worker's engine was lost, is restarting, or (None) is back."""
        with self._lock:
            self._entries[name].trouble = state

    def identity(self, name: str) -> dict[str, str]:
        """Which worker, device and machine: what a job's record names as the one that ran it."""
        with self._lock:
            entry = self._entries[name]
        return {"name": name, "device": _device_of(entry), "machine": _machine_of(entry.engine)}

    def list(self) -> list[dict[str, Any]]:
        """Each worker: id, machine, pid (of its engine's process), device, model (the one it holds now),
        memory_mode, state, current_job, jobs_done (``GET /api/workers``)."""
        with self._lock:
            entries = [_Entry(**vars(entry)) for entry in self._entries.values()]
        return [{"id": entry.name, "machine": _machine_of(entry.engine),
                 "pid": entry.engine.pid if hasattr(entry.engine, "pid") else os.getpid(), "device": _device_of(entry),
                 "model": loaded_model(entry.engine), "memory_mode": entry.engine.memory_mode, "state": _state_of(entry),
                 "current_job": entry.current_job, "jobs_done": entry.jobs_done} for entry in entries]


def loaded_model(engine: Any) -> str | None:
    """The model an engine holds (or is loading): a ``ModelSwitch``'s or a remote host's current one, a
    single engine's own; None while a remote host has not answered yet."""
    if hasattr(engine, "loaded_model"):
        return engine.loaded_model
    card = getattr(engine, "card", None)
    return card.name if card is not None else None


def _machine_of(engine: Any) -> str:
    """The host name the engine runs on: a remote engine says; an in-process one runs here."""
    return getattr(engine, "machine", None) or socket.gethostname()


def _device_of(entry: _Entry) -> str:
    device = getattr(entry.engine, "device", None)
    return str(device) if device is not None else entry.device


def _state_of(entry: _Entry) -> str:
    if entry.trouble:
        return entry.trouble
    if entry.current_job:
        return "busy"
    state = entry.engine.status.state
    if state is ModelState.READY:
        return "ready"
    return "error" if state is ModelState.ERROR else "loading"


class EngineGroup:
    """Several engines as the page and the readiness check see one: ready when any is; the status,
    memory mode and GPU of the first ready one (else of the first one: loading, or why not)."""

    def __init__(self, engines: list[Any]):
        self.engines = list(engines)

    def _lead(self) -> Any:
        return next((engine for engine in self.engines if engine.ready), self.engines[0])

    status = property(lambda self: self._lead().status)
    loaded_model = property(lambda self: loaded_model(self._lead()))
    ready = property(lambda self: any(engine.ready for engine in self.engines))
    memory_mode = property(lambda self: self._lead().memory_mode)
    gpu_memory_gb = property(lambda self: self._lead().gpu_memory_gb)
    gpu_name = property(lambda self: self._lead().gpu_name)

    def device_answers(self) -> bool:
        return any(engine.device_answers() for engine in self.engines)
