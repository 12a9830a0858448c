"""Several models on one worker, one loaded at a time: the engine of the model a job names.

A server offers several models (``model.offer``); each worker holds one ``Engine`` and, when the next
job names another model, lets go of it (its pipeline freed from the GPU first) and loads the other: a
stage of the job (``loading_model``) with its time in the job's timings. Everything else reads the
loaded engine, so the page, the API and ``GET /api/workers`` see the model a worker holds now.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from . import gpu
from .config import AppConfig
from .engine import Engine, Frames, not_ready
from .errors import InvalidInput
from .model_status import ModelState
from .progress import Progress, ProgressFn, ignore
from .request import GenerationRequest

log = logging.getLogger(__name__)


class ModelSwitch:
    """An ``Engine`` for each offered model, one at a time: ``generate`` loads the model the request
    names first when it is not the loaded one. ``make_engine`` builds a model's engine (not loaded)."""

    def __init__(self, configs: Mapping[str, AppConfig], first: str, make_engine: Callable[[AppConfig], Engine]):
        self.configs, self._make = dict(configs), make_engine
        self._engine = make_engine(self.configs[first])
        self._share = 1.0
        self._lock = threading.Lock()  # a job's switch against a second start_loading

    engine = property(lambda self: self._engine)
    #: The model loaded, or loading (its card's name).
    loaded_model = property(lambda self: self._engine.card.name)

    @property
    def memory_share(self) -> float:
        return self._share

    @memory_share.setter
    def memory_share(self, share: float) -> None:
        self._share = self._engine.memory_share = share

    ready = property(lambda self: self._engine.ready)

    @property
    def takes_jobs(self) -> bool:
        """Whether the worker may take a job: the loaded model is ready, or it failed to load, since a
        job for another model switches away from it (and one for it tries again, or fails with why)."""
        engine = self._engine
        return engine.ready or engine.status.state is ModelState.ERROR

    def __getattr__(self, name: str):
        """The loaded engine's: start_loading, load, status, device, memory_mode, card, model_path, ..."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._engine, name)

    def generate(self, request: GenerationRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> Frames:
        """``request``'s frames on the model it names, loaded first if it is not (``model_switch_s`` in
        the timings); a model that cannot load fails the job with why (``ModelUnavailable``)."""
        report = progress or ignore
        switched = None
        if request.model != self.loaded_model or self._engine.status.state is ModelState.ERROR:
            switched = self._switch(request.model, report)
        frames = self._engine.generate(request, progress=report, cancel=cancel)
        if switched is not None:
            frames.timings["model_switch_s"] = switched
        return frames

    def _switch(self, name: str, report: ProgressFn) -> float:
        """Free the loaded model, then load ``name`` (again, after a failed load); its seconds."""
        config = self.configs.get(name)
        if config is None:  # a job stored for a model no longer offered (the server restarted with others)
            raise InvalidInput(key="err_model_not_offered", value=name, allowed=", ".join(self.configs))
        started = time.perf_counter()
        report(Progress("loading_model", 0, 1, 0.0, None))
        with self._lock:
            old, engine = self._engine, self._make(config)  # nothing loaded yet: readers see it loading
            engine.memory_share = self._share
            self._engine = engine
            log.info("Switching models: %s -> %s", old.card.name, name)
            device = old.device
            del old
            gpu.free_memory(device)  # collects the pipeline's cycles (offload hooks) before the next one loads
            engine.load()
        seconds = time.perf_counter() - started
        report(Progress("loading_model", 1, 1, seconds, 0.0))
        if not engine.ready:
            raise not_ready(engine.status)
        log.info("Model %s loaded in %.1f s", name, seconds)
        return seconds
