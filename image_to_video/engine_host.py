"""One engine on one device, driven by plain calls that each return at once: what a worker process
(``process_channel``) or a Ray actor (``ray_backend``) holds.

Every call takes and returns picklable values only (a request as a dict, progress, frames, errors as
``errors.plain_error``), because each crosses a process boundary or the network. A job runs in a
thread of the host; the caller polls it (``poll``), so no call blocks for the length of a video and
a cancel or a status question is answered while the job runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import threading
from typing import Any

from . import cpu_threads, families, loras
from .config import AppConfig
from .engine import Engine, Frames
from .errors import WorkerLost, plain_error
from .faults import FaultInjector
from .model_switch import ModelSwitch
from .progress import Progress
from .request import GenerationRequest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Job:
    """The host's one running (or finished, not yet collected) job."""

    job_id: str
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    progress: Progress | None = None
    #: The newest preview no poll has handed over yet.
    preview: Any = None
    finished: bool = False
    frames: Frames | None = None
    error: dict | None = None


class EngineHost:
    """One Engine on one device, driven by plain picklable calls that each return at once; held by a
    worker process or a Ray actor. One job at a time, run in a thread of the host."""

    def __init__(self, config: AppConfig, *, device: str, name: str, threads: int | None = None,
                 shown_device: str | None = None, memory_share: float = 1.0):
        """``device``: cpu, cuda or cuda:N (the worker's own); ``threads``: torch's CPU threads in this
        process (None leaves torch's default). ``shown_device``: the name the worker's GPU has for the
        server (cuda:1) where this process sees it alone, as ``cuda`` (its CUDA_VISIBLE_DEVICES);
        ``memory_share``: its part of that GPU's memory, where several workers share it
        (``workers.memory_shares``). Nothing loads until ``start_loading``."""
        if threads:
            cpu_threads.apply(cpu_threads.ThreadPlan(threads, "the server's share for this worker"), who=name)
        self.name, self.asked_device, self.shown_device = name, device, shown_device
        self.engine = engine_for(config, device)
        self.engine.memory_share = memory_share  # read as it chooses its memory mode (gpu.pick_memory_mode)
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._loader: threading.Thread | None = None

    def start_loading(self) -> None:
        """Load the model in the background; a second call (a restarted Ray actor's) does nothing."""
        with self._lock:
            if self._loader is None:
                self._loader = self.engine.start_loading()

    def describe(self) -> dict:
        """Who and where this host is and how its engine stands, as plain values."""
        engine = self.engine
        with self._lock:
            job = self._job.job_id if self._job and not self._job.finished else None
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                "device": self.shown_device or (str(engine.device) if engine.device is not None else self.asked_device),
                # the device as this process names it (cuda: the one GPU it sees), and the GPUs it sees
                "model_device": engine.settings.device, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "memory_share": engine.memory_share,
                "memory_mode": engine.memory_mode, "ready": engine.ready, "status": engine.status,
                "takes_jobs": takes_jobs(engine),
                "model": engine.card.name, "model_path": engine.model_path, "model_revision": engine.model_revision,
                "gpu_memory_gb": engine.gpu_memory_gb, "gpu_name": engine.gpu_name, "job": job,
                "cpu_threads": _torch_threads(),
                "cpu_wait_policy": cpu_threads.wait_policy_in_force()}

    def start(self, job_id: str, request: dict) -> None:
        """Start generating ``request`` (``remote_engine.plain_request``'s fields) as ``job_id``; returns
        at once. Raises ``RuntimeError`` while another job runs (a worker sends one at a time)."""
        with self._lock:
            if self._job is not None and not self._job.finished:
                raise RuntimeError(f"worker {self.name} is already running job {self._job.job_id}")
            self._job = job = _Job(job_id)
        threading.Thread(target=self._run, args=(job, GenerationRequest(**request)), name=f"job-{job_id}",
                         daemon=True).start()

    def poll(self, job_id: str) -> dict:
        """How ``job_id`` stands: {"progress", "finished", "frames", "error"}. Once it has finished the
        host forgets it (its frames are handed over once). A job this host does not know (it was
        restarted meanwhile) is reported finished with a ``WorkerLost`` error."""
        with self._lock:
            job = self._job
            if job is None or job.job_id != job_id:
                lost = WorkerLost(key="err_worker_lost", worker=self.name)
                return {"progress": None, "finished": True, "frames": None, "error": plain_error(lost)}
            progress = job.progress
            if progress is not None:  # the newest preview not handed over yet, else none
                progress = dataclasses.replace(progress, preview=job.preview)
            job.preview = None
            if job.finished:
                self._job = None
            return {"progress": progress, "finished": job.finished, "frames": job.frames, "error": job.error}

    def cancel(self, job_id: str) -> None:
        """Ask ``job_id`` to stop at its next step; nothing when it is not this host's job."""
        with self._lock:
            if self._job is not None and self._job.job_id == job_id:
                self._job.cancel.set()

    def _run(self, job: _Job, request: GenerationRequest) -> None:
        try:
            frames = self.engine.generate(request, progress=lambda p: self._report(job, p), cancel=job.cancel)
        except Exception as error:  # every failure travels back to the server in poll()
            if not hasattr(error, "key"):
                log.exception("Job %s failed on worker %s", job.job_id, self.name)
            with self._lock:
                job.error, job.finished = plain_error(error), True
        else:
            with self._lock:
                job.frames, job.finished = frames, True

    def _report(self, job: _Job, progress: Progress) -> None:
        with self._lock:
            job.progress = progress
            if progress.preview is not None:
                job.preview = progress.preview


def takes_jobs(engine) -> bool:
    """Whether a worker may take a job: its model is ready, or (a ``ModelSwitch``) another model's job
    can switch away from one that failed to load."""
    return getattr(engine, "takes_jobs", engine.ready)


def _torch_threads() -> int | None:
    """Torch's CPU threads in this process, where torch is loaded (it is once an engine is)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def engine_for(config: AppConfig, device: str | None = None, *,
               faults: FaultInjector | None = None) -> Engine | ModelSwitch:
    """The engine ``config`` describes, on ``device`` (a worker's own; None keeps ``model.device``): where
    the server offers several models (``config.offered``), a ``ModelSwitch`` between their engines,
    ``config``'s own model loaded first. Its jobs' LoRAs are found in ``paths.models_dir`` (``loras.find``)."""
    loras.serve_from(config.paths.models_dir)

    def make(one: AppConfig) -> Engine:
        model = one.model if device is None else dataclasses.replace(one.model, device=device)
        return Engine(model, one.model_path, one.paths.models_dir, resolutions=one.generation.resolutions,
                      warmup_shapes=warmup_shapes(one), faults=faults, card=families.served_card(one))

    if len(config.offered) > 1:
        return ModelSwitch(config.offered, config.model.family, make)
    return make(config)


def warmup_shapes(config: AppConfig) -> tuple[tuple[int, int, int], ...]:
    """(width, height, frames) of the default settings and every preset, square (the other aspects run
    uncompiled): compiled at start-up."""
    g = config.generation
    chosen = [(g.defaults.resolution, g.defaults.num_frames)]
    chosen += [(p.resolution, int(p.num_frames)) for p in g.presets.values()]
    shapes = []
    for resolution, frames in chosen:
        width, height = families.served_card(config).size(resolution, "1:1")
        if (width, height, frames) not in shapes:
            shapes.append((width, height, frames))
    return tuple(shapes)
