"""GPU policy, in one place: which device and dtype, where the weights stay, and what a CUDA error means.

* Device: ``model.device`` (auto, cpu, cuda, cuda:N) and ``model.dtype`` become a torch device and dtype.
* Memory modes: ``gpu`` (everything on the GPU), ``model_offload`` (each component moves to the GPU
  while it runs), ``group_offload`` (the UNet's blocks one at a time, the other components as in model
  offload), ``sequential_offload`` (each layer does), and ``cpu``. ``pick_memory_mode`` chooses
  one from the GPU's free memory and the memory each mode needs (traced from the model's shapes);
  ``fitting`` keeps the video shapes whose jobs fit in the chosen one (what compile warms up);
  ``enter_memory_mode`` puts a loaded pipeline in any mode from any mode; ``step_down`` runs a job
  again one mode lower each time it runs out of memory, then switches back (``low_memory_mode``:
  one step down for one run).
* Time: ``clock`` reads the host clock once the device's queued work is done.
* Failures: ``is_out_of_memory``, ``is_unsupported_by_cudnn`` and ``is_fatal_cuda_error`` classify an
  error; ``fatal_errors_as_gpu_failed`` turns the fatal ones into ``GPUFailed`` and cuDNN's missing
  kernels into ``GenerationFailed``; ``out_of_memory_error`` is what the user reads when a job does not
  fit even in low-memory mode.

The engine hands in what these need (the pipeline, the device); nothing here knows the engine.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from . import families, model_store
from .errors import AppError, GenerationFailed, GPUFailed, ModelUnavailable, OutOfMemory
from .estimates import DEFAULT_DECODE_CHUNK, memory_needs_gb
from .request import GenerationRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

#: One step down in memory for a job that ran out of it (sequential offload is the floor).
_LOWER = {"gpu": "model_offload", "model_offload": "group_offload", "group_offload": "sequential_offload"}
#: The video the automatic choice makes room for: the page's default (512p, 16 frames, with guidance).
_DEFAULT_VIDEO = (512, 16)
#: diffusers' names for the group-offload hooks, which ``pipe.remove_all_hooks`` leaves on (docs/DEPENDENCIES.md).
_GROUP_OFFLOAD_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


# -- device ------------------------------------------------------------------------------------------

def pick_device(wanted: str, dtype: str, *, demo: bool = False, gpu_dtype: str = "float16",
                title: str = "I2VGen-XL") -> tuple[torch.device, torch.dtype]:
    """The device and dtype for ``model.device`` and ``model.dtype`` ("auto": the family's ``gpu_dtype``);
    a CPU always runs float32."""
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(key="err_no_cuda", device=wanted)
    if wanted == "cpu":
        if not demo:
            log.warning("No CUDA GPU: running %s on the CPU in float32. One video will "
                        "take hours; use a GPU, or the demo model (--demo) to try the app.", title)
        return torch.device("cpu"), torch.float32
    chosen = {"auto": {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(gpu_dtype, torch.float16),
              "float16": torch.float16, "bfloat16": torch.bfloat16,
              "float32": torch.float32}[dtype]
    return torch.device(wanted), chosen


def gpu_properties(device: torch.device | None):
    """torch's description of the GPU ``device`` is (name, total_memory); None on a CPU or before loading."""
    if device is None or device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device)


def total_memory_gb(device: torch.device | None) -> float | None:
    gpu = gpu_properties(device)
    return gpu.total_memory / 2**30 if gpu else None


def gpu_name(device: torch.device | None) -> str | None:
    gpu = gpu_properties(device)
    return gpu.name if gpu else None


def describe_device(device: torch.device, dtype: torch.dtype, mode: str | None = None) -> tuple[str, dict]:
    """The status's device line: (i18n key, parameters); an offloading ``mode`` is said (it is slower)."""
    gpu = gpu_properties(device)
    if not gpu:
        return "device_cpu", {}
    params = {"name": gpu.name, "memory": f"{gpu.total_memory / 2**30:.0f}", "dtype": str(dtype)[6:]}
    if mode in ("model_offload", "group_offload", "sequential_offload"):
        return "device_gpu_offload", {**params, "mode_key": f"mode_{mode}"}
    return "device_gpu", params


def device_answers(device: torch.device) -> bool:
    """A tiny operation on ``device``: False if it no longer responds."""
    try:
        return torch.ones(2, device=device).sum().item() == 2
    except Exception:  # any failure means: not answering
        log.exception("The device did not answer")
        return False


def free_memory(device: torch.device | None) -> None:
    """Give cached GPU memory back (after a failure, or after a memory-mode switch). The peak statistics
    stay: a job retried lower after running out of memory keeps the failed attempt's peak."""
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    """Start a job's peak: call it once at the job's start, not at each attempt, so that the peak of a
    job retried lower covers every attempt (the failed one was the larger)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def clock(device: torch.device | None) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done: CUDA runs the kernels a call
    launched after it returns, so a split read without this (denoise | decode) gives the denoising's
    last kernels to whatever is timed next (``torch.cuda.synchronize``, on a GPU only)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def peak_memory_gb(device: torch.device) -> float | None:
    """The most GPU memory allocated since the last ``reset_peak_memory`` (``free_memory`` keeps it); None
    on a CPU (no figure is invented)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# -- memory modes ------------------------------------------------------------------------------------

def choose_memory_mode(free_gb: float, needs_gb: Mapping[str, float]) -> tuple[str, str]:
    """The fastest memory mode that fits: (mode, why), from the GPU's free memory and what each mode
    needs at its peak (``needs_gb``, fastest first); the last mode when none fits."""
    modes = list(needs_gb)
    for mode in modes[:-1]:
        if free_gb >= needs_gb[mode]:
            return mode, f"{free_gb:.1f} GB free >= {needs_gb[mode]:.1f} GB that {mode} needs"
    faster = modes[-2] if len(modes) > 1 else modes[-1]
    return modes[-1], f"{free_gb:.1f} GB free < {needs_gb[faster]:.1f} GB that {faster} needs"


def pick_memory_mode(setting: str, device: torch.device, dtype: torch.dtype, folder: Path,
                     variant: str | None, *, decode_chunk: int = DEFAULT_DECODE_CHUNK,
                     needs: Mapping[str, float] | None = None, share: float = 1.0, fused_qkv: bool = False) -> str:
    """``model.memory_mode`` on a GPU ("auto": from its free memory and what each mode needs for the
    default video: for I2VGen-XL (``needs`` None) the weight files in ``folder`` plus the working memory
    traced from the model's shapes, decoding ``decode_chunk`` frames at once; for another family the
    ``needs`` its card's traced table gives, fastest mode first); "cpu" on a CPU. A family without a
    table (``needs`` empty): everything on the GPU when its weights and a margin of a third fit, else
    group offload (its denoisers block by block). ``share``: this worker's part of the GPU when
    several share it (1/k for k workers): it counts at most that part of the GPU's memory as free, so
    two workers measuring at once do not both take it all, and one restarted beside the others still
    gets its part. ``fused_qkv``: ``model.fuse_qkv`` is on (its fused weights are counted too)."""
    if device.type != "cuda":
        return "cpu"
    if setting != "auto":
        return setting
    free, total = torch.cuda.mem_get_info(device)
    free = min(free, total * share) / 2**30
    if needs:
        mode, reason = choose_memory_mode(free, needs)
        log.info("Memory mode %s: %s (the default video, from the model's traced memory table)", mode, reason)
        return mode
    sizes = model_store.component_sizes_gb(folder, variant, bytes_per_value=dtype.itemsize)
    if needs is not None:  # a family without a traced table
        weights = sum(sizes.values())
        mode = "gpu" if free >= weights * 4 / 3 + 4 else "group_offload"
        log.info("Memory mode %s: %.1f GB free, weights %.1f GB (not traced: weights + a third + 4 GB)", mode,
                 free, weights)
        return mode
    side, frames = _DEFAULT_VIDEO
    mode, reason = choose_memory_mode(free, traced_needs_gb(side, side, frames, dtype, sizes, decode_chunk=decode_chunk,
                                                            fused_qkv=fused_qkv))
    log.info("Memory mode %s: %s (%dp, %d frames, traced from the model's shapes)", mode, reason, side, frames)
    return mode


def usable_memory_gb(device: torch.device, share: float = 1.0) -> float:
    """The GPU memory a loaded engine may use: what is free plus what its process's allocator holds
    already (its weights), at most its ``share`` of the GPU (``pick_memory_mode``)."""
    free, total = torch.cuda.mem_get_info(device)
    return min(free + torch.cuda.memory_reserved(device), total * share) / 2**30


def traced_needs_gb(width: int, height: int, frames: int, dtype: torch.dtype, sizes: Mapping[str, float], *,
                    decode_chunk: int = DEFAULT_DECODE_CHUNK, fused_qkv: bool = False) -> dict[str, float]:
    """I2VGen-XL's need per memory mode (``estimates.memory_needs_gb``) for a video of ``width`` x
    ``height`` (the traced table goes by pixels) with the weights ``sizes``; in a half-precision
    ``dtype`` the VAE's float32 redo of a chunk that came out NaN or inf is counted too."""
    return memory_needs_gb(round(math.sqrt(width * height)), frames, chunk=decode_chunk, sizes_gb=sizes,
                           fused_qkv=fused_qkv, half_vae=dtype.itemsize < 4)


def fitting(shapes: Iterable[tuple[int, int, int]], mode: str, device: torch.device, dtype: torch.dtype,
            folder: Path, variant: str | None, *, decode_chunk: int = DEFAULT_DECODE_CHUNK,
            needs: Mapping[str, float] | None = None, share: float = 1.0,
            fused_qkv: bool = False) -> Iterator[tuple[int, int, int]]:
    """The (width, height, frames) of ``shapes`` whose jobs fit in ``mode`` on ``device`` now (the
    arguments of ``pick_memory_mode``), each checked as it is asked for; each left out is said in the
    log. A job that does not fit would run a mode lower, where its compiled graph is of no use, and
    compiling it (compile's warm-up) would run out of memory before the app is ready. Every shape
    fits on a CPU, and for a family with its own table (``needs``) only its default video is known:
    its figure stands for every shape."""
    sizes = model_store.component_sizes_gb(folder, variant, bytes_per_value=dtype.itemsize) if (
        device.type == "cuda" and needs is None) else {}
    for shape in shapes:
        if device.type == "cuda":
            figures = needs if needs is not None else traced_needs_gb(*shape, dtype, sizes, decode_chunk=decode_chunk,
                                                                      fused_qkv=fused_qkv)
            need, usable = figures.get(mode, 0.0), usable_memory_gb(device, share)
            if need > usable:
                log.warning("Not compiled for %dx%d, %d frames: its jobs need %.1f GB in %s mode, %.1f GB usable "
                            "here; they run uncompiled", *shape, need, mode, usable)
                continue
        yield shape


def loads_directly(mode: str, device: torch.device) -> str | None:
    """The ``device_map`` that loads the weights straight onto ``device`` in their final dtype (no copy
    on the CPU first): where everything stays on one device; None where offload hooks place them."""
    return str(device) if mode in ("gpu", "cpu") and str(device) in ("cuda", "cpu") else None


def inference_only(pipe) -> None:
    """No gradients anywhere in ``pipe`` (call it after the speed switches, whose fused layers are new).
    It also keeps the memory modes switchable: the offload hooks re-make parameters inside inference
    mode, and accelerate cannot give such a parameter requires_grad=True again when a later switch
    takes the hooks off."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.requires_grad_(False)


def enter_memory_mode(pipe, mode: str, device: torch.device, *,
                      on_switch: Callable[[str], None] | None = None) -> None:
    """Put the loaded ``pipe`` in ``mode`` from whatever mode it is in. ``on_switch(mode)`` runs once
    the old offload hooks are off, before the new mode places the weights."""
    on_switch = on_switch or (lambda _mode: None)
    if mode == "cpu":
        on_switch(mode)
        pipe.to(device)
        return
    remove_offload_hooks(pipe)
    on_switch(mode)
    if mode == "gpu":
        pipe.to(device)
    elif mode == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "group_offload":
        enable_group_offload(pipe, device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    free_memory(device)


def remove_offload_hooks(pipe) -> None:
    """Every offload hook off: accelerate's (``remove_all_hooks``) and diffusers' group-offload hooks,
    which ``remove_all_hooks`` leaves on and with which ``pipe.to`` silently leaves a component where it is."""
    pipe.remove_all_hooks()
    for component in pipe.components.values():
        registry = getattr(component, "_diffusers_hook", None)
        for name in _GROUP_OFFLOAD_HOOKS if registry is not None else ():
            registry.remove_hook(name, recurse=True)


#: The components called once a denoising step, as the families' cards name them: the UNet (I2VGen-XL),
#: the experts (Wan).
DENOISERS = frozenset(name for card in families.CARDS.values() for name in card.denoisers)


def enable_group_offload(pipe, device: torch.device) -> None:
    """The denoisers, called once a step, block by block (diffusers' block-level group offload: each
    block on the GPU while it runs, the rest of the model for the whole call); the other components
    (text and image encoders, VAE), each called once a video, whole while they run (accelerate's model
    offload, each moving the one before off, in the pipeline's own ``model_cpu_offload_seq`` order)."""
    from accelerate import cpu_offload_with_hook

    pipe.to("cpu")
    order = [name for name in pipe.model_cpu_offload_seq.split("->") if pipe.components.get(name) is not None]
    hook = None
    for name in order:
        if name not in DENOISERS:
            _, hook = cpu_offload_with_hook(pipe.components[name], device, prev_module_hook=hook)
    for name in order:
        if name in DENOISERS:
            pipe.components[name].enable_group_offload(onload_device=device, offload_type="block_level",
                                                       num_blocks_per_group=1)


def lower_modes(mode: str) -> list[str]:
    """Every memory mode below ``mode``, one step at a time down ``_LOWER`` to the floor."""
    lower = []
    while mode in _LOWER:
        mode = _LOWER[mode]
        lower.append(mode)
    return lower


def switch_or_fail(pipe, mode: str, device: torch.device, *, on_switch: Callable[[str], None] | None = None) -> None:
    """``enter_memory_mode`` after the memory of what failed before is freed; a switch that fails
    (out of memory moving the weights) may leave the pipeline half moved: ``GPUFailed``, so that the
    process restarts with a whole one."""
    free_memory(device)
    try:
        enter_memory_mode(pipe, mode, device, on_switch=on_switch)
    except Exception as error:
        forget_locals(error)
        log.exception("Switching to %s mode failed: the pipeline may be half moved; the process must restart", mode)
        raise GPUFailed(key="err_gpu_switch_failed", mode=mode) from error


def forget_locals(error: BaseException) -> None:
    """Drop the variables of the finished frames in ``error``'s traceback (a failed attempt's
    activations): the message and the lines stay for the log, the tensors go."""
    traceback.clear_frames(error.__traceback__)


def step_down(attempt: Callable[[bool], T], pipe, mode: str, device: torch.device, *,
              on_switch: Callable[[str], None] | None = None,
              trip: Callable[[str], None] = lambda _stage: None) -> tuple[T | None, int]:
    """``attempt(low_memory=False)`` in ``mode``; each time it runs out of memory, its memory is freed
    and it runs again one memory mode lower (``attempt(True)``), down to the floor (in the same mode
    where there is nothing lower); then the pipeline goes back to ``mode``. Returns (the result or
    None if even the last try ran out, the number of retries). Any other error passes, after the
    switch back; a switch that fails raises ``GPUFailed``. ``trip(stage)`` runs inside each switch
    ("switch_down", "switch_back"): a test's fault injection."""
    current, result, failure, retries = mode, None, None, 0
    for target in [mode, *(lower_modes(mode) or [mode])]:
        if target != current:
            switch_or_fail(pipe, target, device, on_switch=_tripping(on_switch, trip, "switch_down"))
            current = target
        try:
            result = attempt(retries > 0)
            break
        except Exception as error:  # noqa: BLE001 (classified just below, never swallowed)
            forget_locals(error)
            if not is_out_of_memory(error):
                failure = error
                break
            log.warning("Out of GPU memory in %s mode (%s); retrying in low-memory mode", target,
                        str(error).splitlines()[0][:200])
        free_memory(device)  # outside the except block: the exception there is still in flight
        if not device_answers(device):
            raise GPUFailed(key="err_gpu_fatal")
        retries += 1
    else:
        retries -= 1  # the last try was not followed by another
    if failure is not None and is_fatal_cuda_error(failure):
        raise failure  # the GPU is unusable: no switch back, the process restarts
    if current != mode:
        switch_or_fail(pipe, mode, device, on_switch=_tripping(on_switch, trip, "switch_back"))
    if failure is not None:
        raise failure
    return result, retries


@contextlib.contextmanager
def low_memory_mode(pipe, mode: str, device: torch.device, *,
                    on_switch: Callable[[str], None] | None = None) -> Iterator[str]:
    """One step down in memory from ``mode`` for one run, then back to ``mode``, each switch made
    after the memory of what failed is freed (``switch_or_fail``). Yields the mode the run is in."""
    lower = _LOWER.get(mode)
    if lower:
        switch_or_fail(pipe, lower, device, on_switch=on_switch)
    try:
        yield lower or mode
    except BaseException as error:
        forget_locals(error)  # the switch back below runs while this is in flight
        raise
    finally:
        if lower:
            switch_or_fail(pipe, mode, device, on_switch=on_switch)


def _tripping(on_switch: Callable[[str], None] | None, trip: Callable[[str], None], stage: str):
    def switching(mode: str) -> None:
        trip(stage)
        if on_switch:
            on_switch(mode)
    return switching


# -- failures ----------------------------------------------------------------------------------------

#: What torch's caching allocator raises when the GPU runs out of memory.
OutOfMemoryError = torch.cuda.OutOfMemoryError

#: Out of memory as torch words it outside its caching allocator (docs/DEPENDENCIES.md, "What torch
#: says when the GPU runs out of memory"): cuBLAS and cuDNN failing to allocate their workspace, and a
#: CUDA call that finds no memory (cudaErrorMemoryAllocation, not a sticky error: the context stays
#: usable, which ``step_down`` checks before it retries).
_OUT_OF_MEMORY_MARKERS = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "_ALLOCATION_FAILED",
                          "CUDA error: out of memory")

#: cuDNN that has no kernel for this shape, layout or dtype (docs/DEPENDENCIES.md, "What torch says when
#: cuDNN has no kernel for a shape"): its NOT_SUPPORTED and BAD_PARAM statuses (cuDNN 9's sub-codes too),
#: and torch's convolution finding no engine or algorithm that runs (v8 API without and with
#: ``cudnn.benchmark``, then the v7 API). Neither memory (a lower memory mode fails the same way) nor a
#: broken GPU (nothing sticky happened): the job fails with what to change, the process serves on.
_CUDNN_UNSUPPORTED_MARKERS = ("CUDNN_STATUS_NOT_SUPPORTED", "CUDNN_STATUS_BAD_PARAM",
                              "GET was unable to find an engine to execute this computation",
                              "FIND was unable to find an engine to execute this computation",
                              "Unable to find a valid cuDNN algorithm to run convolution")


def is_out_of_memory(error: BaseException) -> bool:
    """The GPU (or a library on it) ran out of memory: the job can run again lower, no restart needed."""
    return isinstance(error, OutOfMemoryError) or any(marker in str(error) for marker in _OUT_OF_MEMORY_MARKERS)


def is_unsupported_by_cudnn(error: BaseException) -> bool:
    """cuDNN has no kernel for what the job asked (its size, aspect, layout): not out of memory, not fatal."""
    return not is_out_of_memory(error) and any(marker in str(error) for marker in _CUDNN_UNSUPPORTED_MARKERS)


def is_fatal_cuda_error(error: BaseException) -> bool:
    """CUDA errors after which the process's GPU context is unusable (a restart is needed); out of
    memory, however worded, is not one of them, nor cuDNN having no kernel for a shape."""
    if is_out_of_memory(error) or is_unsupported_by_cudnn(error):
        return False
    text = str(error)
    return any(marker in text for marker in (
        "CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS", "cuDNN error"))


def _cudnn_words(error: BaseException) -> str:
    """What cuDNN said, for the message: its status name, else the first line of torch's words."""
    text = (str(error).splitlines() or [""])[0]
    if "CUDNN_STATUS_" in text:
        return "CUDNN_STATUS_" + (text.split("CUDNN_STATUS_", 1)[1].split(".")[0].split() or [""])[0]
    return text[:120]


@contextlib.contextmanager
def fatal_errors_as_gpu_failed(request: GenerationRequest) -> Iterator[None]:
    """Turns a CUDA error that leaves the GPU unusable into ``GPUFailed`` (the process must restart),
    its traceback logged once here; cuDNN having no kernel for the job's size into ``GenerationFailed``
    saying what to change (the process serves on). The original is chained. Every other error passes
    unchanged."""
    try:
        yield
    except AppError:
        raise
    except Exception as error:
        if is_unsupported_by_cudnn(error):
            forget_locals(error)
            log.warning("cuDNN has no kernel for %s (%dx%d, %d frames): the job fails, the GPU is fine",
                        request.resolution, request.width, request.height, request.num_frames, exc_info=error)
            raise GenerationFailed(key="err_cudnn_unsupported", width=request.width, height=request.height,
                                   frames=request.num_frames, detail=_cudnn_words(error)) from error
        if not is_fatal_cuda_error(error):
            raise
        log.exception("Fatal CUDA error at %s/%d frames: the GPU is unusable until the process restarts",
                      request.resolution, request.num_frames)
        raise GPUFailed(key="err_gpu_fatal") from error


def out_of_memory_error(request: GenerationRequest, resolutions: Mapping[str, int]) -> OutOfMemory:
    """What to lower, and by how much: the next resolution down (by the sides ``resolutions`` names, whatever
    the aspect), else fewer frames (about half; a 4k+1 count stays 4k+1, as Wan needs)."""
    current = resolutions.get(request.resolution, min(request.width, request.height))
    smaller = sorted((side, name) for name, side in resolutions.items() if side < current)
    if smaller:
        side, name = smaller[-1]
        return OutOfMemory(key="err_oom_resolution", resolution=request.resolution, frames=request.num_frames,
                           lower=name, saving=f"{1 - (side / current) ** 2:.0%}")
    frames = request.num_frames
    fewer = (frames // 2 - 1) // 4 * 4 + 1 if frames >= 9 and (frames - 1) % 4 == 0 else max(2, frames // 2)
    return OutOfMemory(key="err_oom_frames", resolution=request.resolution, frames=frames, fewer=fewer)
