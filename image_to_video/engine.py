"""The engine: load the model once, then turn requests into frames, reporting its state for the page.

A thin front over layers that never import it back: ``gpu`` (device, memory modes, CUDA errors),
``speedups`` (compile, attention kernel, other switches), the model family (``families``: its card, and
its pipeline code for loading, prompts, denoising, decoding) and ``model_store`` (downloads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import families, gpu, model_store, speedups
from .config import GenerationSettings, ModelSettings
from .deep_cache import DeepCache
from .errors import GPUFailed, InvalidInput, ModelUnavailable
from .faults import FaultInjector
from .families.i2vgen_xl import demo as demo_model
from .model_status import ModelState, ModelStatus, StatusBoard
from .progress import ProgressFn, ignore
from .request import GenerationRequest

log = logging.getLogger(__name__)

@dataclass
class Frames:
    """What one generation produced, with its measurements."""

    frames: np.ndarray  # uint8, frames x height x width x 3
    timings: dict[str, float] = field(default_factory=dict)
    peak_gpu_memory_gb: float | None = None


class Engine:
    """Loads a model family's pipeline from ``model_path`` (a folder, or a hub repo id downloaded into
    ``models_dir``) once, then ``generate``s from one thread at a time; ``faults`` is for tests."""

    def __init__(self, settings: ModelSettings, model_path: str, models_dir: Path, *,
                 resolutions: Mapping[str, int] | None = None,
                 warmup_shapes: tuple[tuple[int, int, int], ...] = (),
                 faults: FaultInjector | None = None, card: families.Card | None = None):
        self.settings, self.model_path, self.models_dir = settings, model_path, Path(models_dir)
        self.card = card or families.CARDS[families.DEFAULT]  # the model's card (families/): I2VGen-XL unless told
        self.resolutions = resolutions or GenerationSettings().resolutions  # what to lower when out of memory
        self.faults = faults or FaultInjector()  # none unless a test injects some
        self.warmup_shapes = warmup_shapes  # (width, height, frames) compiled before "ready" (model.compile)
        self.model_revision: str | None = None
        self.memory_mode: str | None = None  # gpu, model_offload or sequential_offload on CUDA; cpu on a CPU
        self.memory_share = 1.0  # this engine's part of its GPU where workers share one (engine_host sets it)
        self.attention_backend = settings.attention_backend  # or "auto" where that kernel cannot run here
        self._family = self._compiled = self._device = self._dtype = self._attention = None
        self._on_switch = None  # what a memory-mode switch also changes: the compiled forward's choice
        self._board = StatusBoard(ModelStatus(is_demo=settings.demo))
        self._set_status = self._board.update

    status = property(lambda self: self._board.current)
    ready = property(lambda self: self.status.ready)
    #: Once loaded (else None): the family, its pipeline and denoiser, device, dtype, compiled forwards.
    family = property(lambda self: self._family)
    pipeline = property(lambda self: self._family and self._family.pipeline)
    denoiser = property(lambda self: self._family and self._family.denoiser)
    device = property(lambda self: self._device)
    dtype = property(lambda self: self._dtype)
    compiled = property(lambda self: self._compiled)
    gpu_memory_gb = property(lambda self: gpu.total_memory_gb(self._device))  # None on a CPU or before loading
    gpu_name = property(lambda self: gpu.gpu_name(self._device))

    def device_answers(self) -> bool:
        """A tiny operation on the model's device: False if the GPU no longer responds."""
        return self.ready and gpu.device_answers(self._device)

    def free_memory(self) -> None:
        """Give cached GPU memory back after a failure."""
        gpu.free_memory(self._device)

    def switch_memory_mode(self, mode: str) -> None:
        """Put the pipeline in ``mode`` and make it the engine's own (a low-memory retry returns to it)."""
        gpu.enter_memory_mode(self.pipeline, mode, self._device, on_switch=self._on_switch)
        self.memory_mode = mode

    def start_loading(self) -> threading.Thread:
        """Load in a background thread so the server can answer while the model loads."""
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def load(self) -> None:
        """Download if needed, then load the pipeline. Failures end in the ERROR state."""
        try:
            folder, self.model_revision = local_folder(self.settings, self.model_path, self.models_dir,
                                                       self._set_status, card=self.card)
            self._device, self._dtype = gpu.pick_device(self.settings.device, self.settings.dtype,
                                                        demo=self.settings.demo, gpu_dtype=self.card.gpu_dtype,
                                                        title=self.card.title)
            self._set_status(("status_loading", {"folder": str(folder), "device": str(self._device)}),
                             device=gpu.describe_device(self._device, self._dtype),
                             state=ModelState.LOADING, fraction=None)
            started = time.perf_counter()
            self._from_pretrained(folder)
            self._set_status(("status_ready", {"seconds": f"{time.perf_counter() - started:.1f}"}),
                             device=gpu.describe_device(self._device, self._dtype, self.memory_mode),
                             state=ModelState.READY, is_demo=is_demo_folder(folder))
        except ModelUnavailable as error:
            say = (error.key, error.params) if error.key else ("status_plain", {"text": str(error)})
            self._set_status(say, state=ModelState.ERROR, fraction=None)
        except Exception as error:  # the page must say why, whatever it was
            log.exception("Loading the model failed")
            self._set_status(("status_load_failed", {"path": self.model_path, "model": self.card.title,
                                                     "error": f"{type(error).__name__}: {error}"}),
                             state=ModelState.ERROR, fraction=None)

    def _from_pretrained(self, folder: Path) -> None:
        """The family's pipeline, loaded in its memory mode, with the speed switches its card lists applied."""
        settings, device, dtype = speedups.for_family(self.settings, self.card), self._device, self._dtype
        variant = settings.variant if model_store.has_variant(folder, settings.variant) else None
        memory = dict(device=device, dtype=dtype, folder=folder, variant=variant, share=self.memory_share,
                      needs=families.memory_needs(self.card), fused_qkv=settings.fuse_qkv)
        self.memory_mode = gpu.pick_memory_mode(settings.memory_mode, **memory)
        family = families.load_family(self.card).load(folder, device=device, dtype=dtype, variant=variant,
                                                      device_map=gpu.loads_directly(self.memory_mode, device))
        speedups.apply_speed_switches(family.pipeline, family.denoiser, settings, device)
        gpu.inference_only(family.pipeline)
        self._family = family
        self.attention_backend = speedups.check_attention_backend(settings.attention_backend, family.denoiser,
                                                                  device, dtype)
        self._attention = speedups.AttentionChoice(self.attention_backend, family.denoiser, device, dtype)
        if settings.compile:  # before any offload hook wraps the forward: the hooks stay outside the graph
            self._compiled = speedups.CompiledForward(family.denoiser, self.models_dir.resolve() / ".compile-cache")
            self._on_switch = self._compiled.choose
        gpu.enter_memory_mode(family.pipeline, self.memory_mode, device, on_switch=self._on_switch)
        if settings.compile:  # only the shapes whose jobs fit in this memory mode
            speedups.warm_up(self._compiled, gpu.fitting(self.warmup_shapes, self.memory_mode, **memory),
                             set_status=self._set_status, denoise=lambda r: self._denoise(r, ignore, threading.Event()))

    def generate(self, request: GenerationRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> Frames:
        """The frames for ``request``, or ``Cancelled``. Out of GPU memory, the job runs again a memory mode lower
        (then ``OutOfMemory`` says what to lower from ``resolutions``); a fatal CUDA error: ``GPUFailed``."""
        if not self.ready:
            raise not_ready(self.status)
        other_model(request, self.card)
        try:
            with gpu.fatal_errors_as_gpu_failed(request):
                return self._generate_or_retry(request, progress or ignore, cancel or threading.Event())
        except GPUFailed as error:
            if error.key == "err_gpu_switch_failed":  # the pipeline may be half moved: serve nothing more
                self.memory_mode = None
                self._set_status(("status_gpu_broken", {}), state=ModelState.ERROR, fraction=None)
            raise

    def _generate_or_retry(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event) -> Frames:
        gpu.reset_peak_memory(self._device)  # once a job: its peak covers every attempt
        frames, retries = gpu.step_down(lambda low_memory: self._generate(request, report, cancel,
                                                                          low_memory=low_memory),
                                        self.pipeline, self.memory_mode, self._device, on_switch=self._on_switch,
                                        trip=self.faults.trip)
        if frames is None:
            log.warning("Out of GPU memory at %s/%d frames in low-memory mode too", request.resolution,
                        request.num_frames)
            raise gpu.out_of_memory_error(request, self.resolutions)
        if retries:
            frames.timings["low_memory_retry"] = float(retries)
        return frames

    def _generate(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event, *,
                  low_memory: bool) -> Frames:
        with torch.inference_mode():  # each split read once the device has done its queued work (gpu.clock)
            started = gpu.clock(device := self._device)
            latents = self._denoise(request, report, cancel)
            split = gpu.clock(device)
            frames = self._family.decode(latents, chunk=1 if low_memory else self.settings.decode_chunk_size,
                                         report=report, cancel=cancel, before_chunk=partial(self.faults.trip, "decode"))
            timings = dict(denoise_s=split - started, decode_s=gpu.clock(device) - split, **self._family.decode_counts)
            del latents
        return Frames(frames=frames, timings=timings, peak_gpu_memory_gb=gpu.peak_memory_gb(self._device))

    def _denoise(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event):
        within = [speedups.UNetAttention(self.denoiser, self._attention.for_request(request))]
        if self.settings.deep_cache_interval and "deep_cache_interval" in self.card.speed_switches:
            within.append(DeepCache(self.denoiser, self.settings.deep_cache_interval))
        return self._family.denoise(request, report=report, cancel=cancel,
                                    before_step=partial(self.faults.trip, "denoise"), within=within)


def local_folder(settings: ModelSettings, model_path: str, models_dir: Path,
                 set_status: Callable[..., None], *, card: families.Card | None = None) -> tuple[Path, str | None]:
    """The model's folder and hub revision: the demo model of ``card``'s family built, or ``model_path``
    downloaded into ``models_dir`` if it is not a folder, with the download's progress told to ``set_status``."""
    if settings.demo:
        return families.build_demo(card or families.CARDS[families.DEFAULT], Path(model_path)), None
    if not model_store.is_local(model_path):
        set_status(("status_download_start", {"source": model_path}), state=ModelState.DOWNLOADING, fraction=0.0)

    def on_download(done: int, total: int) -> None:
        set_status(("status_downloading", {"done": f"{done / 1e9:.2f}", "total": f"{total / 1e9:.2f}",
                                           "percent": f"{100 * done / total:.0f}"}), fraction=done / total)

    return model_store.ensure_local(model_path, models_dir, variant=settings.variant, revision=settings.revision,
                                    progress=on_download, extra_patterns=card.download_patterns if card else ())


def is_demo_folder(folder: Path) -> bool:
    """A demo model of any family (each writes the same marker file)."""
    return (Path(folder) / demo_model.MARKER_FILE).is_file()


def other_model(request: GenerationRequest, card: families.Card) -> None:
    """A job queued for another model (a server restarted with another ``--model``) is refused, not run
    on this one with settings it was not checked against."""
    if request.model != card.name:
        raise InvalidInput(key="err_other_model", value=request.model, model=card.name)


def not_ready(status: ModelStatus) -> ModelUnavailable:
    """Why a job cannot run yet: still loading, or loading failed (and why)."""
    if status.state is ModelState.ERROR:
        return ModelUnavailable(key="err_not_available", detail=status.message)
    return ModelUnavailable(key="err_not_ready", state=status.state.value)
