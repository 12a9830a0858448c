"""GPU policy, in one place: which device and dtype, where the weights stay, and what a CUDA error means.

* Device: ``model.device`` (auto, cpu, cuda, cuda:N) and ``model.dtype`` become a torch device and dtype.
* Memory modes: ``gpu`` (everything on the GPU), ``model_offload`` (each component moves to the GPU
  while it runs), ``sequential_offload`` (each layer does), and ``cpu``. ``pick_memory_mode`` chooses
  one from the GPU's free memory; ``enter_memory_mode`` puts a loaded pipeline in any mode from any
  mode; ``low_memory_mode`` goes one mode down for one job and back.
* Failures: ``OutOfMemoryError`` and ``is_fatal_cuda_error`` classify an error;
  ``fatal_errors_as_gpu_failed`` turns the fatal ones into ``GPUFailed``; ``out_of_memory_error`` is
  what the user reads when a job does not fit even in low-memory mode.

The engine hands in what these need (the pipeline, the device); nothing here knows the engine.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

from . import model_store
from .errors import AppError, GPUFailed, ModelUnavailable, OutOfMemory
from .estimates import working_memory_gb
from .request import GenerationRequest

log = logging.getLogger(__name__)

#: One step down in memory for a job that ran out of it (sequential offload is the floor).
_LOWER = {"gpu": "model_offload", "model_offload": "sequential_offload"}


# -- device ------------------------------------------------------------------------------------------

def pick_device(wanted: str, dtype: str, *, demo: bool = False) -> tuple[torch.device, torch.dtype]:
    """The device and dtype for ``model.device`` and ``model.dtype``; a CPU always runs float32."""
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(key="err_no_cuda", device=wanted)
    if wanted == "cpu":
        if not demo:
            log.warning("No CUDA GPU: running I2VGen-XL on the CPU in float32. One video will "
                        "take hours; use a GPU, or the demo model (--demo) to try the app.")
        return torch.device("cpu"), torch.float32
    chosen = {"auto": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16,
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
    if mode in ("model_offload", "sequential_offload"):
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
    """Give cached GPU memory back (after a failure, or after a memory-mode switch)."""
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    """The most GPU memory allocated since the last reset; None on a CPU (no figure is invented)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# -- memory modes ------------------------------------------------------------------------------------

def choose_memory_mode(free_gb: float, sizes_gb: dict[str, float], *, work_gb: float) -> tuple[str, str]:
    """The fastest memory mode that fits: (mode, why), from the GPU's free memory, the size of
    each component's weights and the working memory of the default video."""
    weights = sum(sizes_gb.values())
    largest = max(sizes_gb.values(), default=0.0)
    if free_gb >= weights + work_gb:
        return "gpu", f"{free_gb:.1f} GB free >= {weights:.1f} GB of weights + {work_gb:.1f} GB to work"
    if free_gb >= largest + work_gb:
        return "model_offload", (f"{free_gb:.1f} GB free < {weights + work_gb:.1f} GB for everything, but holds "
                                 f"the largest part ({largest:.1f} GB) + {work_gb:.1f} GB to work")
    return "sequential_offload", f"{free_gb:.1f} GB free < {largest + work_gb:.1f} GB for the largest part at work"


def pick_memory_mode(setting: str, device: torch.device, dtype: torch.dtype, folder: Path,
                     variant: str | None) -> str:
    """``model.memory_mode`` on a GPU ("auto": from its free memory and the weight files in
    ``folder``); "cpu" on a CPU."""
    if device.type != "cuda":
        return "cpu"
    if setting != "auto":
        return setting
    free = torch.cuda.mem_get_info(device)[0] / 2**30
    sizes = model_store.component_sizes_gb(folder, variant, bytes_per_value=dtype.itemsize)
    mode, reason = choose_memory_mode(free, sizes, work_gb=working_memory_gb(512, 16))
    log.info("Memory mode %s: %s", mode, reason)
    return mode


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
    pipe.remove_all_hooks()
    on_switch(mode)
    if mode == "gpu":
        pipe.to(device)
    elif mode == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    free_memory(device)


@contextlib.contextmanager
def low_memory_mode(pipe, mode: str, device: torch.device, *,
                    on_switch: Callable[[str], None] | None = None) -> Iterator[str]:
    """One step down in memory from ``mode`` for one job (gpu -> model offload -> sequential offload),
    then back to ``mode``. Yields the mode the job runs in."""
    lower = _LOWER.get(mode)
    if lower:
        log.info("Low-memory retry in %s mode", lower)
        enter_memory_mode(pipe, lower, device, on_switch=on_switch)
    try:
        yield lower or mode
    finally:
        if lower:
            enter_memory_mode(pipe, mode, device, on_switch=on_switch)


# -- failures ----------------------------------------------------------------------------------------

#: What torch raises when the GPU runs out of memory: the engine retries the job in low-memory mode.
OutOfMemoryError = torch.cuda.OutOfMemoryError


def is_fatal_cuda_error(error: BaseException) -> bool:
    """CUDA errors after which the process's GPU context is unusable (a restart is needed)."""
    text = str(error)
    return any(marker in text for marker in (
        "CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS", "cuDNN error"))


@contextlib.contextmanager
def fatal_errors_as_gpu_failed(request: GenerationRequest) -> Iterator[None]:
    """Turns a CUDA error that leaves the GPU unusable into ``GPUFailed`` (the process must restart),
    its traceback logged once here; the original is chained. Every other error passes unchanged."""
    try:
        yield
    except AppError:
        raise
    except Exception as error:
        if not is_fatal_cuda_error(error):
            raise
        log.exception("Fatal CUDA error at %s/%d frames: the GPU is unusable until the process restarts",
                      request.resolution, request.num_frames)
        raise GPUFailed(key="err_gpu_fatal") from error


def out_of_memory_error(request: GenerationRequest, resolutions: Mapping[str, int]) -> OutOfMemory:
    """What to lower, and by how much: the next resolution down, else fewer frames."""
    smaller = sorted((side, name) for name, side in resolutions.items() if side < request.width)
    if smaller:
        side, name = smaller[-1]
        return OutOfMemory(key="err_oom_resolution", resolution=request.resolution, frames=request.num_frames,
                           lower=name, saving=f"{1 - (side / request.width) ** 2:.0%}")
    return OutOfMemory(key="err_oom_frames", resolution=request.resolution, frames=request.num_frames,
                       fewer=max(2, request.num_frames // 2))
