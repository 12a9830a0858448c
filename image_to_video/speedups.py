"""The speed switches of ``model`` (config), each measured by bench/speed.py (docs/PERFORMANCE.md).

* ``apply_speed_switches``: cudnn benchmark, the DPM-Solver++ sampler, fused QKV projections and
  channels-last convolutions, applied once to a loaded pipeline.
* ``check_attention_backend`` and ``UNetAttention``: ``model.attention_backend`` around the
  denoiser's calls only, falling back to PyTorch's choice where that kernel cannot run.
* ``CompiledForward``: ``torch.compile`` of the denoiser, its kernels cached in the models folder,
  uncompiled in sequential offload; ``warm_up`` compiles the configured shapes before "ready".

Nothing here knows the engine: its user hands in the pipeline, the denoiser, the device and
callbacks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler
from diffusers.models.attention_processor import Attention
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

try:  # where torch keeps compiled kernels unless told; a private module, so it may move
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as _torch_cache_dir
except ImportError:
    _torch_cache_dir = None

from .config import GenerationDefaults, ModelSettings
from .request import GenerationRequest

log = logging.getLogger(__name__)

#: model.attention_backend -> PyTorch's kernel.
_KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def apply_speed_switches(pipe, denoiser: torch.nn.Module, settings: ModelSettings, device: torch.device) -> None:
    """cudnn benchmark, the sampler, fused QKV (in ``denoiser``) and channels-last (in ``denoiser``
    and the VAE), as ``settings`` say."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    if settings.scheduler == "dpmpp":
        # Trailing timesteps: the model's zero-terminal-SNR schedule then starts from pure noise.
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            pipe.scheduler.config, algorithm_type="dpmsolver++", timestep_spacing="trailing")
    if settings.fuse_qkv:
        denoiser.fuse_qkv_projections()
    if settings.channels_last:
        # The UNet as a whole refuses channels_last (its Conv3d layers need channels_last_3d).
        for module in [*denoiser.modules(), *pipe.vae.modules()]:
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=torch.channels_last)
            elif isinstance(module, torch.nn.Conv3d):
                module.to(memory_format=torch.channels_last_3d)


# -- attention kernel --------------------------------------------------------------------------------

def attention_kernel(backend: str):
    """PyTorch's context that allows only the named attention kernel (flash, efficient, cudnn, math)."""
    return sdpa_kernel(_KERNELS[backend])


def check_attention_backend(backend: str, denoiser: torch.nn.Module, device: torch.device,
                            dtype: torch.dtype) -> str:
    """``backend`` if that kernel takes every attention head size of ``denoiser`` on ``device``, else
    "auto" (PyTorch's choice), said in the log: a kernel a GPU lacks must not fail every video."""
    if backend == "auto":
        return backend
    head_dims = sorted({module.inner_dim // module.heads for module in denoiser.modules()
                        if isinstance(module, Attention)})
    try:
        with attention_kernel(backend):
            for head_dim in head_dims:
                query = torch.zeros(2, 1, 16, head_dim, device=device, dtype=dtype)
                torch.nn.functional.scaled_dot_product_attention(query, query[:, :, :8], query[:, :, :8])
    except RuntimeError as error:
        log.warning("model.attention_backend: %s cannot run here (%s); using PyTorch's choice of kernel instead",
                    backend, str(error).splitlines()[0][:200])
        return "auto"
    return backend


class UNetAttention:
    """The configured scaled-dot-product-attention kernel (model.attention_backend) around each UNet
    call, and only there: the encoders and the VAE keep PyTorch's choice. The VAE's attention has one
    head 512 wide, which the flash and cuDNN kernels do not take."""

    def __init__(self, unet: torch.nn.Module, backend: str):
        self.unet, self.backend = unet, backend
        self._hooks: list = []
        self._active = None

    def __enter__(self) -> UNetAttention:
        if self.backend != "auto":
            self._hooks = [self.unet.register_forward_pre_hook(self._on),
                           self.unet.register_forward_hook(self._off)]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._off()  # a UNet call that raised never reached its forward hook

    def _on(self, *_) -> None:
        self._off()
        self._active = attention_kernel(self.backend)
        self._active.__enter__()

    def _off(self, *_) -> None:
        if self._active is not None:
            active, self._active = self._active, None
            active.__exit__(None, None, None)


# -- compile -----------------------------------------------------------------------------------------

def default_inductor_cache() -> str | None:
    """Where torch puts compiled kernels unless told (a folder in /tmp); None if that is unknown."""
    return os.path.abspath(_torch_cache_dir()) if _torch_cache_dir else None


class CompiledForward:
    """``torch.compile(fullgraph=True)`` of a module's forward, its kernels kept in ``cache_dir``.

    Build it before any offload hook wraps the forward, so the hooks stay outside the graph;
    ``choose(mode)`` then sets the forward for a memory mode (``gpu.enter_memory_mode``'s ``on_switch``).
    """

    def __init__(self, module: torch.nn.Module, cache_dir: Path):
        # Keep inductor's compiled kernels beside the models (not in /tmp, which a reboot empties):
        # a later start finds them and compiles in a fraction of the time.
        if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, default_inductor_cache()):  # not chosen by the user
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
        self.module = module
        self.eager = module.forward
        self.compiled = torch.compile(self.eager, fullgraph=True, dynamic=False)

    def choose(self, mode: str) -> None:
        """The compiled forward, except in sequential offload: its hooks sit inside the UNet, on every
        layer, and cannot be compiled (the weights' transfers bound that mode's speed anyway)."""
        self.module.forward = self.eager if mode == "sequential_offload" else self.compiled


def warm_up(shapes: Iterable[tuple[int, int, int]], memory_mode: str, *,
            denoise: Callable[[GenerationRequest], object],
            set_status: Callable[[tuple[str, dict]], None]) -> None:
    """Compile each (width, height, frames) shape before the app says ready: ``denoise`` runs one
    denoising step of a gray picture for each, after ``set_status`` says so."""
    if memory_mode == "sequential_offload":
        log.info("Sequential offload: the UNet runs uncompiled, so there is nothing to compile")
        return
    for width, height, frames in shapes:
        set_status(("status_compiling", {"width": width, "height": height, "frames": frames}))
        started = time.perf_counter()
        defaults = GenerationDefaults()  # fps and guidance do not change the compiled graph's shapes
        request = GenerationRequest(image=Image.new("RGB", (width, height), "gray"), prompt="", negative_prompt="",
                                    resolution="warm-up", width=width, height=height, num_frames=frames,
                                    fps=defaults.fps, num_inference_steps=1, guidance_scale=defaults.guidance_scale,
                                    seed=0)
        with torch.inference_mode():
            denoise(request)
        log.info("Compiled the UNet for %dx%d, %d frames in %.1f s", width, height, frames,
                 time.perf_counter() - started)
