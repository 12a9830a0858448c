"""The speed switches of ``model`` (config), each measured by bench/speed.py (docs/PERFORMANCE.md).

* ``apply_speed_switches``: cudnn benchmark, the DPM-Solver++ sampler, fused QKV projections and
  channels-last convolutions, applied once to a loaded pipeline; ``model.deterministic`` instead
  asks for deterministic kernels (``make_deterministic``).
* ``check_attention_backend``, ``AttentionChoice`` and ``UNetAttention``: ``model.attention_backend``
  around the denoiser's calls only, tried first at every attention shape the UNet makes at the
  video's size, falling back to PyTorch's choice where that kernel cannot run.
* ``CompiledForward``: ``torch.compile`` of the denoiser, its kernels cached in the models folder,
  uncompiled in group and sequential offload; ``warm_up`` compiles the configured shapes that fit
  before "ready", in the memory mode the model loaded in, and only those shapes in that mode run
  compiled (anything else runs eager: no compile inside a job, no recompile limit).

Nothing here knows the engine: its user hands in the pipeline, the denoiser, the device and
callbacks.
"""

from __future__ import annotations

import dataclasses
import functools
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
from torch.overrides import TorchFunctionMode

try:  # where torch keeps compiled kernels unless told; a private module, so it may move
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as _torch_cache_dir
except ImportError:
    _torch_cache_dir = None

from . import gpu
from .config import GenerationDefaults, ModelSettings
from .request import GenerationRequest

log = logging.getLogger(__name__)

#: CLIP's context length: the prompt's tokens in the UNet's cross-attention.
PROMPT_TOKENS = 77
#: model.attention_backend -> PyTorch's kernel.
_KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def apply_speed_switches(pipe, denoiser: torch.nn.Module, settings: ModelSettings, device: torch.device) -> None:
    """cudnn benchmark, the sampler, fused QKV (in ``denoiser``) and channels-last (in ``denoiser``
    and the VAE), as ``settings`` say."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark and not settings.deterministic
        if settings.deterministic:
            make_deterministic()
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


#: The switches only the UNet family has (attention kernel hooks, fused QKV, channels-last, the
#: sampler choice, DeepCache, compile of the UNet's forward).
UNET_SWITCHES = {"fuse_qkv": False, "channels_last": False, "compile": False, "scheduler": "ddim",
                 "deep_cache_interval": 0, "attention_backend": "auto"}


def for_family(settings: ModelSettings, card) -> ModelSettings:
    """``settings`` with each switch the family's card does not list (``card.speed_switches``) turned
    off, and said in the log: the UNet's switches mean nothing to Wan's transformers."""
    unused = {name: off for name, off in UNET_SWITCHES.items()
              if name not in card.speed_switches and getattr(settings, name) != off}
    for name in unused:
        log.warning("model.%s does not apply to %s: left off", name, card.title)
    return dataclasses.replace(settings, **unused) if unused else settings


def make_deterministic() -> None:
    """Only deterministic kernels from now on (``model.deterministic``): the same seed then gives the
    identical video on the same GPU, driver and versions. cuBLAS needs a fixed workspace, set before
    its first use (the weights are loaded, nothing has multiplied yet); an operation torch has no
    deterministic kernel for warns in the log rather than failing the video. Slower: off by default."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


# -- attention kernel --------------------------------------------------------------------------------

def attention_kernel(backend: str):
    """PyTorch's context that allows only the named attention kernel (flash, efficient, cudnn, math)."""
    return sdpa_kernel(_KERNELS[backend])


def check_attention_backend(backend: str, denoiser: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                            sizes: Iterable[tuple[int, int, int, int]] = ((512, 512, 16, 2),)) -> str:
    """``backend`` if that kernel takes every attention call ``denoiser`` makes at each (width, height,
    frames, batch) of ``sizes`` on ``device`` (the real shapes: ``attention_shapes``), else "auto"
    (PyTorch's choice), said in the log: a kernel a GPU lacks must not fail every video."""
    if backend == "auto":
        return backend
    shapes = sorted({shape for size in sizes for shape in attention_shapes(denoiser, *size)})
    try:
        with attention_kernel(backend):
            for query_shape, key_shape, value_shape in shapes:
                try:
                    query = torch.zeros(query_shape, device=device, dtype=dtype)
                    key, value = (torch.zeros(shape, device=device, dtype=dtype) for shape in (key_shape, value_shape))
                    torch.nn.functional.scaled_dot_product_attention(query, key, value)
                except torch.cuda.OutOfMemoryError:  # no room to try this shape now: a memory matter, not the kernel's
                    log.info("model.attention_backend: no memory to try %s at %s", backend, query_shape)
    except RuntimeError as error:
        log.warning("model.attention_backend: %s cannot run here (%s); using PyTorch's choice of kernel instead",
                    backend, str(error).splitlines()[0][:200])
        return "auto"
    return backend


class _RecordAttention(TorchFunctionMode):
    """Records (query, key, value) shapes of every attention call; answers each with an empty output."""

    def __init__(self):
        super().__init__()
        self.shapes: set[tuple[tuple[int, ...], ...]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is not torch._C._nn.scaled_dot_product_attention:  # torch.nn.functional's, even when wrapped
            return func(*args, **(kwargs or {}))
        query, key, value = args[:3]
        self.shapes.add((tuple(query.shape), tuple(key.shape), tuple(value.shape)))
        return torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)


@functools.lru_cache(maxsize=256)
def _traced_shapes(unet_type: type, config: tuple, width: int, height: int, frames: int, batch: int) -> frozenset:
    with torch.device("meta"):
        unet = unet_type.from_config(dict(config))
        recorder = _RecordAttention()
        latents = torch.randn(batch, unet.config.in_channels, frames, height // 8, width // 8)
        width_of = unet.config.cross_attention_dim
        with torch.inference_mode(), recorder:
            unet(latents, torch.full((batch,), 999), encoder_hidden_states=torch.randn(batch, PROMPT_TOKENS, width_of),
                 fps=torch.full((batch,), 8), image_latents=torch.randn_like(latents),
                 image_embeddings=torch.randn(batch, 1, width_of), return_dict=False)
    return frozenset(recorder.shapes)


def attention_shapes(denoiser: torch.nn.Module, width: int, height: int, frames: int, batch: int) -> frozenset:
    """Every distinct (query, key, value) shape of the attention calls ``denoiser`` makes for one
    video of ``width`` x ``height`` and ``frames`` (``batch`` 2 with guidance): spatial self- and
    cross-attention at each UNet level, temporal attention over the frames. Recorded by running a copy
    of it, built from its config, on the meta device (nothing allocated), once per size."""
    config = tuple(sorted((name, _hashable(value)) for name, value in denoiser.config.items()
                          if not name.startswith("_")))
    return _traced_shapes(type(denoiser), config, width, height, frames, batch)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


class AttentionChoice:
    """``model.attention_backend`` per video size: checked (``check_attention_backend``) the first time
    a size is asked for, then remembered; "auto" for a size the kernel cannot take."""

    def __init__(self, backend: str, denoiser: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        self.backend, self.denoiser, self.device, self.dtype = backend, denoiser, device, dtype
        self._checked: dict[tuple[int, int, int, int], str] = {}

    def for_request(self, request: GenerationRequest) -> str:
        size = (request.width, request.height, request.num_frames, 2 if request.guidance_scale > 1 else 1)
        if self.backend == "auto":
            return self.backend
        if size not in self._checked:
            self._checked[size] = check_attention_backend(self.backend, self.denoiser, self.device, self.dtype, [size])
        return self._checked[size]


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


#: Memory modes whose offload hooks sit inside the UNet: it runs uncompiled there.
UNCOMPILED_MODES = ("group_offload", "sequential_offload")


class CompiledForward:
    """``torch.compile(fullgraph=True)`` of a module's forward, its kernels kept in ``cache_dir``, used
    only for what ``warm_up`` compiled: the input shapes, in the memory mode it ran in, with the weights
    as they were then. Anything else runs the eager forward, so a job never waits minutes for a compile,
    and torch's recompile limit (``FailOnRecompileLimitHit`` under fullgraph, docs/DEPENDENCIES.md)
    never fails a job. The weights matter: after an out-of-memory step-down to model offload,
    accelerate's hook moves them inside the job's ``torch.inference_mode()``, which makes them
    inference tensors; dynamo's guards on them then fail and the same shape would compile again
    (minutes, inside the job). Such a job runs eager instead (issue 23, defect 1).

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
        self.graph = torch.compile(self.eager, fullgraph=True, dynamic=False)
        self.warmed: set[tuple] = set()  # what was compiled before "ready": ``key``s
        self.warming = False
        self.mode: str | None = None  # the memory mode ``choose`` last set
        self.compiled = self._forward  # one bound method, so that the module's forward can be told apart

    def choose(self, mode: str) -> None:
        """The compiled forward, except in group and sequential offload: their hooks sit inside the
        UNet (on its blocks, on every layer) and cannot be compiled (the weights' transfers bound
        those modes' speed anyway)."""
        self.mode = mode
        self.module.forward = self.eager if mode in UNCOMPILED_MODES else self.compiled

    def key(self, args: tuple, kwargs: dict) -> tuple:
        """What one warmed-up graph is for: the memory mode, whether the weights are inference tensors
        (what an offload hook's move inside inference mode changes; dynamo guards each weight's
        dispatch keys), and the inputs' shapes."""
        weight = next(self.module.parameters(), None)
        return self.mode, weight is not None and weight.is_inference(), input_shapes(args, kwargs)

    def _forward(self, *args, **kwargs):
        key = self.key(args, kwargs)
        if self.warming:
            self.warmed.add(key)
        elif key not in self.warmed:
            return self.eager(*args, **kwargs)
        try:
            return self.graph(*args, **kwargs)
        except Exception as error:
            if not is_recompile_limit(error):
                raise
            self.warmed.discard(key)  # raised before anything ran: the eager forward runs it instead
            log.warning("torch.compile's recompile limit: %s runs uncompiled (%s)", key[2],
                        str(error).splitlines()[0][:200])
            if self.warming:
                raise
            return self.eager(*args, **kwargs)


def is_recompile_limit(error: BaseException) -> bool:
    """torch.compile refused a new graph past ``torch._dynamo.config.recompile_limit``: under fullgraph,
    torch 2.13 raises ``Unsupported("Dynamo recompile limit exceeded")``, other versions
    ``FailOnRecompileLimitHit`` (docs/DEPENDENCIES.md)."""
    return isinstance(error, torch._dynamo.exc.FailOnRecompileLimitHit) or (
        isinstance(error, torch._dynamo.exc.Unsupported) and "recompile limit" in str(error))


def input_shapes(args: tuple, kwargs: dict) -> tuple:
    """What tells one compiled graph from another here (dynamic=False): each tensor's shape and dtype,
    and whether it is an inference tensor (dynamo guards its dispatch keys)."""
    values = [*args, *(kwargs[name] for name in sorted(kwargs))]
    return tuple((tuple(v.shape), v.dtype, v.is_inference()) if isinstance(v, torch.Tensor) else type(v).__name__
                 for v in values)


def warm_up(compiled: CompiledForward, shapes: Iterable[tuple[int, int, int]], *,
            denoise: Callable[[GenerationRequest], object],
            set_status: Callable[[tuple[str, dict]], None]) -> None:
    """Compile each (width, height, frames) shape before the app says ready: ``denoise`` runs one
    denoising step of a gray picture for each, after ``set_status`` says so. Only these shapes run
    compiled later, in the memory mode ``compiled`` was chosen for; past torch's recompile limit the
    rest are left uncompiled, said in the log. ``shapes`` should hold only those whose jobs fit in
    this mode (``gpu.fitting``); one that runs out of memory all the same is skipped, said in the log:
    never a failed start."""
    memory_mode = compiled.mode
    if memory_mode in UNCOMPILED_MODES:
        log.info("%s: the UNet runs uncompiled, so there is nothing to compile", memory_mode)
        return
    for width, height, frames in shapes:
        set_status(("status_compiling", {"width": width, "height": height, "frames": frames}))
        started = time.perf_counter()
        defaults = GenerationDefaults()  # fps and guidance do not change the compiled graph's shapes
        request = GenerationRequest(image=Image.new("RGB", (width, height), "gray"), prompt="", negative_prompt="",
                                    resolution="warm-up", width=width, height=height, num_frames=frames,
                                    fps=defaults.fps, num_inference_steps=1, guidance_scale=defaults.guidance_scale,
                                    seed=0)
        compiled.warming, before, ran_out = True, set(compiled.warmed), False
        try:
            with torch.inference_mode():
                denoise(request)
        except Exception as error:
            if is_recompile_limit(error):
                log.warning("Stopped compiling at %dx%d, %d frames: torch's recompile limit; the remaining shapes "
                            "run uncompiled", width, height, frames)
                return
            if not gpu.is_out_of_memory(error):
                raise
            gpu.forget_locals(error)
            compiled.warmed, ran_out = before, True  # its jobs would run lower (uncompiled), if at all
            log.warning("Not compiled for %dx%d, %d frames: out of GPU memory in %s mode (%s); it runs uncompiled",
                        width, height, frames, memory_mode, str(error).splitlines()[0][:200])
        finally:
            compiled.warming = False
        if ran_out:  # outside the except block, where the error no longer holds the step's memory
            gpu.free_memory(torch.device("cuda") if torch.cuda.is_initialized() else None)
            continue
        log.info("Compiled the UNet for %dx%d, %d frames in %.1f s", width, height, frames,
                 time.perf_counter() - started)
