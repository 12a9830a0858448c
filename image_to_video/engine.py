"""The I2VGen-XL engine: load the pipeline once, then turn requests into frames.

The engine owns the model and nothing else: no files, no UI. It reports its
state (downloading, loading, ready, error) for the page to show, reports progress
per denoising step with an ETA and then per decoding chunk, and stops at the next
step when asked to cancel. The diffusers pipeline offers no step callback and no
interrupt (STACK.md, trap 2), so both are hooks on the UNet.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import demo_model, model_store
from .config import ModelSettings
from .deep_cache import DeepCache
from .errors import Cancelled, ModelUnavailable, OutOfMemory
from .estimates import working_memory_gb
from .i18n import t
from .request import GenerationRequest

log = logging.getLogger(__name__)

#: CLIP's context length; the prompt is padded or cut to it.
PROMPT_TOKENS = 77


class ModelState(enum.Enum):
    NOT_LOADED = "starting"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"


@dataclass(frozen=True)
class ModelStatus:
    """What the page shows about the model."""

    state: ModelState = ModelState.NOT_LOADED
    is_demo: bool = False
    #: 0..1 while downloading, else None.
    fraction: float | None = None
    #: The message and the device line as i18n keys with their parameters.
    key: str = "status_starting"
    params: dict = field(default_factory=dict)
    device_key: str = ""
    device_params: dict = field(default_factory=dict)

    def text(self, lang: str | None) -> str:
        return render(self.key, self.params, lang)

    def device_text(self, lang: str | None) -> str:
        return render(self.device_key, self.device_params, lang) if self.device_key else ""

    @property
    def message(self) -> str:
        """In English, for the log and the API."""
        return self.text("en")

    @property
    def device(self) -> str:
        return self.device_text("en")


def render(key: str, params: dict, lang: str | None) -> str:
    """``t(key, lang, **params)``, where a parameter named ``x_key`` is itself a text key, shown as ``x``."""
    params = {name.removesuffix("_key"): t(value, lang) if name.endswith("_key") else value
              for name, value in params.items()}
    return t(key, lang, **params)


@dataclass(frozen=True)
class Progress:
    """One progress report: a stage, how far it is, and the estimated time left."""

    stage: str  # "denoising", "decoding" or "encoding"
    done: int
    total: int
    elapsed: float
    eta: float | None
    #: Every few denoising steps: a rough RGB picture of frames as they form (uint8, HxWx3).
    preview: np.ndarray | None = None


ProgressFn = Callable[[Progress], None]


@dataclass
class Frames:
    """What one generation produced, with its measurements."""

    frames: np.ndarray  # uint8, frames x height x width x 3
    timings: dict[str, float] = field(default_factory=dict)
    peak_gpu_memory_gb: float | None = None


def format_seconds(seconds: float, lang: str | None = "en") -> str:
    seconds = max(0, round(seconds))
    if seconds >= 60:
        return t("minutes_seconds", lang, minutes=seconds // 60, seconds=f"{seconds % 60:02d}")
    return t("seconds", lang, seconds=seconds)


class Engine:
    """Loads ``I2VGenXLPipeline`` from ``model_path`` and generates videos with it.

    ``model_path`` is a folder or a hub repo id (downloaded into ``models_dir``).
    Build it, call ``load`` (or ``start_loading``) once, then ``generate`` from
    one thread at a time.
    """

    def __init__(self, settings: ModelSettings, model_path: str, models_dir: Path,
                 warmup_shapes: tuple[tuple[int, int, int], ...] = ()):
        self.settings = settings
        self.model_path = model_path
        self.models_dir = Path(models_dir)
        #: (width, height, frames) compiled before the app says ready, when model.compile is on.
        self.warmup_shapes = warmup_shapes
        self.model_revision: str | None = None
        #: gpu, model_offload or sequential_offload on CUDA; "cpu" on a CPU. Set by loading.
        self.memory_mode: str | None = None
        #: The attention kernel in use: model.attention_backend, or "auto" where that one cannot run here.
        self.attention_backend = settings.attention_backend
        self._pipe = None
        #: (eager, compiled) forward of the UNet when model.compile is on.
        self._unet_forwards = None
        self._device = None
        self._dtype = None
        self._status = ModelStatus(is_demo=settings.demo)
        self._status_lock = threading.Lock()
        self.faults = FaultInjector(os.environ.get("I2V_TEST_FAULTS", ""))

    # -- state ---------------------------------------------------------------

    @property
    def status(self) -> ModelStatus:
        with self._status_lock:
            return self._status

    def _set_status(self, say: tuple[str, dict] | None = None, device: tuple[str, dict] | None = None,
                    **changes) -> None:
        """Change the status; ``say`` and ``device`` are (i18n key, parameters)."""
        if say is not None:
            changes.update(key=say[0], params=say[1])
        if device is not None:
            changes.update(device_key=device[0], device_params=device[1])
        with self._status_lock:
            self._status = replace(self._status, **changes)
        log.info("Model %s: %s", self._status.state.value, self._status.message)

    @property
    def ready(self) -> bool:
        return self.status.state is ModelState.READY

    def _gpu(self):
        """torch's description of the GPU the model runs on; None on a CPU or before loading."""
        if self._device is None or self._device.type != "cuda":
            return None
        import torch

        return torch.cuda.get_device_properties(self._device)

    @property
    def gpu_memory_gb(self) -> float | None:
        """Total memory of the GPU the model runs on; None on a CPU or before loading."""
        gpu = self._gpu()
        return gpu.total_memory / 2**30 if gpu else None

    @property
    def gpu_name(self) -> str | None:
        """The name of the GPU the model runs on (as torch reports it); None on a CPU or before loading."""
        gpu = self._gpu()
        return gpu.name if gpu else None

    def device_answers(self) -> bool:
        """A tiny operation on the model's device: False if the GPU no longer responds."""
        if not self.ready:
            return False
        try:
            import torch

            return torch.ones(2, device=self._device).sum().item() == 2
        except Exception:  # any failure means: not answering
            log.exception("The device did not answer")
            return False

    # -- loading -------------------------------------------------------------

    def start_loading(self) -> threading.Thread:
        """Load in a background thread so the server can answer while the model loads."""
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def load(self) -> None:
        """Download if needed, then load the pipeline. Failures end in the ERROR state."""
        try:
            self._load()
        except ModelUnavailable as error:
            say = (error.key, error.params) if error.key else ("status_plain", {"text": str(error)})
            self._set_status(say, state=ModelState.ERROR, fraction=None)
        except Exception as error:  # the page must say why, whatever it was
            log.exception("Loading the model failed")
            self._set_status(("status_load_failed", {"path": self.model_path,
                                                     "error": f"{type(error).__name__}: {error}"}),
                             state=ModelState.ERROR, fraction=None)

    def _load(self) -> None:
        import torch

        folder = self._resolve_folder()
        self._device, self._dtype = self._pick_device(torch)
        device = self._describe_device()
        self._set_status(("status_loading", {"folder": str(folder), "device": str(self._device)}),
                         device=device, state=ModelState.LOADING, fraction=None)
        started = time.perf_counter()
        self._from_pretrained(folder)
        if self.memory_mode in ("model_offload", "sequential_offload"):  # say so: it is slower
            device = ("device_gpu_offload", {**device[1], "mode_key": f"mode_{self.memory_mode}"})
        self._set_status(("status_ready", {"seconds": f"{time.perf_counter() - started:.1f}"}), device=device,
                         state=ModelState.READY, is_demo=demo_model.is_demo_model(folder))

    def _resolve_folder(self) -> Path:
        if self.settings.demo:
            return demo_model.build_demo_model(Path(self.model_path))
        if not model_store.is_local(self.model_path):
            self._set_status(("status_download_start", {"source": self.model_path}),
                             state=ModelState.DOWNLOADING, fraction=0.0)
        folder, self.model_revision = model_store.ensure_local(
            self.model_path, self.models_dir, variant=self.settings.variant,
            revision=self.settings.revision, progress=self._on_download)
        return folder

    def _on_download(self, done: int, total: int) -> None:
        self._set_status(("status_downloading", {"done": f"{done / 1e9:.2f}", "total": f"{total / 1e9:.2f}",
                                                 "percent": f"{100 * done / total:.0f}"}),
                         fraction=done / total)

    def _pick_device(self, torch):
        wanted = self.settings.device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise ModelUnavailable(key="err_no_cuda", device=wanted)
        if wanted == "cpu":
            if not self.settings.demo:
                log.warning("No CUDA GPU: running I2VGen-XL on the CPU in float32. One video will "
                            "take hours; use a GPU, or the demo model (--demo) to try the app.")
            return torch.device("cpu"), torch.float32
        dtype = {"auto": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float32": torch.float32}[self.settings.dtype]
        return torch.device(wanted), dtype

    def _describe_device(self) -> tuple[str, dict]:
        gpu = self._gpu()
        if gpu:
            return "device_gpu", {"name": gpu.name, "memory": f"{gpu.total_memory / 2**30:.0f}",
                                  "dtype": str(self._dtype)[6:]}
        return "device_cpu", {}

    def _from_pretrained(self, folder: Path) -> None:
        """Load the pipeline into ``self._pipe``, in its memory mode, with the speed switches applied."""
        import torch
        from diffusers import I2VGenXLPipeline

        variant = self.settings.variant if model_store.has_variant(folder, self.settings.variant) else None
        self.memory_mode = self._pick_memory_mode(torch, folder, variant)
        # All on one device: the weights go straight there in their final dtype (no copy on the CPU first).
        direct = self.memory_mode in ("gpu", "cpu") and str(self._device) in ("cuda", "cpu")
        pipe = I2VGenXLPipeline.from_pretrained(folder, dtype=self._dtype, variant=variant,
                                                device_map=str(self._device) if direct else None)
        pipe.set_progress_bar_config(disable=True)
        self._optimise(torch, pipe)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                # Inference only (after _optimise, whose fused layers are new). It also keeps the memory
                # modes switchable: the offload hooks re-make parameters inside inference mode, and
                # accelerate cannot give such a parameter requires_grad=True again when a later switch
                # takes the hooks off.
                component.requires_grad_(False)
        self._pipe = pipe
        self.attention_backend = self._check_attention_backend(torch, pipe.unet)
        if self.settings.compile:
            # Compiled before any offload hook wraps the forward: the hooks stay outside the graph.
            self._unet_forwards = (pipe.unet.forward, self._compiled(torch, pipe.unet.forward))
        self._enter_memory_mode(self.memory_mode)
        if self.settings.compile:
            self._warm_up(torch)

    def _pick_memory_mode(self, torch, folder: Path, variant: str | None) -> str:
        if self._device.type != "cuda":
            return "cpu"
        if self.settings.memory_mode != "auto":
            return self.settings.memory_mode
        free = torch.cuda.mem_get_info(self._device)[0] / 2**30
        sizes = model_store.component_sizes_gb(folder, variant, bytes_per_value=self._dtype.itemsize)
        mode, reason = choose_memory_mode(free, sizes, work_gb=working_memory_gb(512, 16))
        log.info("Memory mode %s: %s", mode, reason)
        return mode

    def _enter_memory_mode(self, mode: str) -> None:
        """Put the loaded pipeline in ``mode`` from whatever mode it is in."""
        pipe = self._pipe
        if mode == "cpu":
            self._choose_unet_forward(mode)
            pipe.to(self._device)
            return
        pipe.remove_all_hooks()
        self._choose_unet_forward(mode)
        if mode == "gpu":
            pipe.to(self._device)
        elif mode == "model_offload":
            pipe.enable_model_cpu_offload(device=self._device)
        else:
            pipe.enable_sequential_cpu_offload(device=self._device)
        self.free_memory()

    def _optimise(self, torch, pipe) -> None:
        """The speed switches of ``model`` (config); each is measured in docs/PERFORMANCE.md."""
        if self._device.type == "cuda":
            torch.backends.cudnn.benchmark = self.settings.cudnn_benchmark
        if self.settings.scheduler == "dpmpp":
            from diffusers import DPMSolverMultistepScheduler

            # Trailing timesteps: the model's zero-terminal-SNR schedule then starts from pure noise.
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(
                pipe.scheduler.config, algorithm_type="dpmsolver++", timestep_spacing="trailing")
        if self.settings.fuse_qkv:
            pipe.unet.fuse_qkv_projections()
        if self.settings.channels_last:
            # The UNet as a whole refuses channels_last (its Conv3d layers need channels_last_3d).
            for module in [*pipe.unet.modules(), *pipe.vae.modules()]:
                if isinstance(module, torch.nn.Conv2d):
                    module.to(memory_format=torch.channels_last)
                elif isinstance(module, torch.nn.Conv3d):
                    module.to(memory_format=torch.channels_last_3d)

    def _check_attention_backend(self, torch, unet) -> str:
        """model.attention_backend if that kernel takes every attention shape of this UNet on this
        device, else "auto" (PyTorch's choice), said in the log: a kernel a GPU lacks must not fail
        every video."""
        backend = self.settings.attention_backend
        if backend == "auto":
            return backend
        from diffusers.models.attention_processor import Attention

        head_dims = sorted({module.inner_dim // module.heads for module in unet.modules() if isinstance(module, Attention)})
        try:
            with attention_kernel(backend):
                for head_dim in head_dims:
                    query = torch.zeros(2, 1, 16, head_dim, device=self._device, dtype=self._dtype)
                    torch.nn.functional.scaled_dot_product_attention(query, query[:, :, :8], query[:, :, :8])
        except RuntimeError as error:
            log.warning("model.attention_backend: %s cannot run here (%s); using PyTorch's choice of kernel instead",
                        backend, str(error).splitlines()[0][:200])
            return "auto"
        return backend

    def _compiled(self, torch, forward):
        """``forward`` for torch.compile, its kernels kept in the models folder."""
        # Keep inductor's compiled kernels beside the models (not in /tmp, which a reboot empties):
        # a later start finds them and compiles in a fraction of the time.
        if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, _default_inductor_cache()):  # not chosen by the user
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.models_dir.resolve() / ".compile-cache")
        return torch.compile(forward, fullgraph=True, dynamic=False)

    def _choose_unet_forward(self, mode: str) -> None:
        """The compiled UNet, except in sequential offload: its hooks sit inside the UNet, on every
        layer, and cannot be compiled (the weights' transfers bound that mode's speed anyway)."""
        if self._unet_forwards:
            eager, compiled = self._unet_forwards
            self._pipe.unet.forward = eager if mode == "sequential_offload" else compiled

    def _warm_up(self, torch) -> None:
        """Compile each warm-up shape before the app says ready (one denoising step each)."""
        if self.memory_mode == "sequential_offload":
            log.info("Sequential offload: the UNet runs uncompiled, so there is nothing to compile")
            return
        for width, height, frames in self.warmup_shapes:
            self._set_status(("status_compiling", {"width": width, "height": height, "frames": frames}))
            started = time.perf_counter()
            request = GenerationRequest(image=Image.new("RGB", (width, height), "gray"), prompt="", negative_prompt="",
                                        resolution="warm-up", width=width, height=height, num_frames=frames, fps=8,
                                        num_inference_steps=1, guidance_scale=9.0, seed=0)
            with torch.inference_mode():
                self._denoise(request, lambda _: None, threading.Event())
            log.info("Compiled the UNet for %dx%d, %d frames in %.1f s", width, height, frames,
                     time.perf_counter() - started)

    # -- generation ----------------------------------------------------------

    def generate(self, request: GenerationRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> Frames:
        """Make the frames for ``request``. Raises ``Cancelled`` if ``cancel`` is set meanwhile.

        Out of GPU memory in any stage, the memory is freed and the job runs once more
        in low-memory mode (model CPU offload, one frame decoded at a time); if that
        fails too, it raises ``OutOfMemory`` (the service adds what to lower). Either
        way the engine is back to its normal mode for the next job.
        """
        if not self.ready:
            raise self._not_ready_error()
        import torch

        cancel = cancel or threading.Event()
        report = progress or (lambda _: None)
        try:
            return self._generate(request, report, cancel, low_memory=False)
        except torch.cuda.OutOfMemoryError:
            log.warning("Out of GPU memory at %s/%d frames; retrying in low-memory mode",
                        request.resolution, request.num_frames)
        # Freed outside the except block: the traceback there still holds the tensors.
        self.free_memory()
        try:
            with self._low_memory_mode():
                frames = self._generate(request, report, cancel, low_memory=True)
            frames.timings["low_memory_retry"] = 1.0
            return frames
        except torch.cuda.OutOfMemoryError:
            log.warning("Out of GPU memory in low-memory mode too")
        self.free_memory()
        raise OutOfMemory(f"The GPU ran out of memory at {request.resolution} with {request.num_frames} "
                          "frames, even in low-memory mode.")

    def _generate(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event, *,
                  low_memory: bool) -> Frames:
        import torch

        timings: dict[str, float] = {}
        if self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)
        with torch.inference_mode():
            started = time.perf_counter()
            latents = self._denoise(request, report, cancel)
            timings["denoise_s"] = time.perf_counter() - started
            started = time.perf_counter()
            frames = self._decode(latents, report, cancel, chunk=1 if low_memory else None)
            timings["decode_s"] = time.perf_counter() - started
            del latents
        peak = None
        if self._device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self._device) / 2**30
        return Frames(frames=frames, timings=timings, peak_gpu_memory_gb=peak)

    def free_memory(self) -> None:
        """Give cached GPU memory back after a failure."""
        import gc

        import torch

        gc.collect()
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self._device)

    @contextlib.contextmanager
    def _low_memory_mode(self):
        """One step down in memory for one job (gpu -> model offload -> sequential offload),
        then back to the engine's own mode."""
        lower = {"gpu": "model_offload", "model_offload": "sequential_offload"}.get(self.memory_mode)
        if lower:
            log.info("Low-memory retry in %s mode", lower)
            self._enter_memory_mode(lower)
        try:
            yield
        finally:
            if lower:
                self._enter_memory_mode(self.memory_mode)

    def _not_ready_error(self) -> ModelUnavailable:
        status = self.status
        if status.state is ModelState.ERROR:
            return ModelUnavailable(key="err_not_available", detail=status.message)
        return ModelUnavailable(key="err_not_ready", state=status.state.value)

    def encode_prompt(self, text: str):
        return encode_prompt(self._pipe, text, self._device, self._dtype)

    def _denoise(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event):
        import torch

        total = request.num_inference_steps
        clock = {"start": time.perf_counter(), "done": 0}
        preview_every = max(1, total // PREVIEWS_PER_VIDEO)

        def before_step(_module, _args):
            if cancel.is_set():
                raise Cancelled(key="err_cancelled")
            self.faults.trip("denoise")

        def after_step(_module, args, _output):
            clock["done"] += 1
            elapsed = time.perf_counter() - clock["start"]
            eta = elapsed / clock["done"] * (total - clock["done"])
            due = clock["done"] % preview_every == 0 and clock["done"] < total
            preview = latent_preview(args[0]) if due else None
            report(Progress("denoising", clock["done"], total, elapsed, eta, preview))

        # The conditioning image is VAE-encoded with the global RNG (STACK.md):
        # seed it as well as the generator so a seed gives one video.
        torch.manual_seed(request.seed)
        generator = torch.Generator("cpu").manual_seed(request.seed)
        hooks = [self._pipe.unet.register_forward_pre_hook(before_step),
                 self._pipe.unet.register_forward_hook(after_step)]
        try:
            report(Progress("denoising", 0, total, 0.0, None))
            reuse = DeepCache(self._pipe.unet, self.settings.deep_cache_interval) \
                if self.settings.deep_cache_interval else contextlib.nullcontext()
            with UNetAttention(self._pipe.unet, self.attention_backend), reuse:
                return self._denoise_call(request, generator)
        finally:
            for hook in hooks:
                hook.remove()

    def _denoise_call(self, request: GenerationRequest, generator):
        return self._pipe(
            image=request.image,
            prompt_embeds=self.encode_prompt(request.prompt),
            negative_prompt_embeds=self.encode_prompt(request.negative_prompt),
            height=request.height,
            width=request.width,
            num_frames=request.num_frames,
            target_fps=request.fps,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            generator=generator,
            output_type="latent",
        ).frames

    def _decode(self, latents, report: ProgressFn, cancel: threading.Event, *, chunk: int | None) -> np.ndarray:
        import torch

        num_frames = latents.shape[2]
        chunk = chunk or self.settings.decode_chunk_size
        started = time.perf_counter()
        pieces = []
        for first in range(0, num_frames, chunk):
            if cancel.is_set():
                raise Cancelled(key="err_cancelled")
            self.faults.trip("decode")
            video = self._pipe.decode_latents(latents[:, :, first:first + chunk])
            # (batch, channels, frames, h, w) in [-1, 1] -> (frames, h, w, channels) uint8
            video = ((video[0] / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            pieces.append(video.permute(1, 2, 3, 0).cpu().numpy())
            done = min(first + chunk, num_frames)
            elapsed = time.perf_counter() - started
            report(Progress("decoding", done, num_frames, elapsed, elapsed / done * (num_frames - done)))
        return np.concatenate(pieces)


def attention_kernel(backend: str):
    """PyTorch's context that allows only the named attention kernel (flash, efficient, cudnn, math)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[backend])


class UNetAttention:
    """The configured scaled-dot-product-attention kernel (model.attention_backend) around each UNet
    call, and only there: the encoders and the VAE keep PyTorch's choice. The VAE's attention has one
    head 512 wide, which the flash and cuDNN kernels do not take."""

    def __init__(self, unet, backend: str):
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


def encode_prompt(pipe, text: str, device, dtype):
    """CLIP embeddings as the pipeline's default ``clip_skip=1`` computes them.

    The pipeline's own path crashes with transformers >= 5.6 (STACK.md, trap 1):
    the final layer norm applied to the second-to-last hidden state.
    """
    tokens = pipe.tokenizer(text, padding="max_length", max_length=PROMPT_TOKENS, truncation=True,
                            return_tensors="pt")
    encoder = pipe.text_encoder
    mask = tokens.attention_mask.to(device) if getattr(encoder.config, "use_attention_mask", False) else None
    hidden = encoder(tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    norm = encoder.text_model.final_layer_norm if hasattr(encoder, "text_model") else encoder.final_layer_norm
    return norm(hidden).to(dtype)


def _default_inductor_cache() -> str | None:
    """Where torch puts compiled kernels unless told (a folder in /tmp); None if that is unknown."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:
        return None
    return os.path.abspath(default_cache_dir())


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


#: Denoising steps between two live previews: a video shows about this many.
PREVIEWS_PER_VIDEO = 10
# Latent -> RGB approximation of the Stable Diffusion VAE family, which I2VGen-XL uses:
# cheap enough to run every few steps, close enough to cancel a bad job early.
_LATENT_RGB = np.array([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                        [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]], dtype=np.float32)


def latent_preview(latents, frames: int = 4, scale: int = 4) -> np.ndarray:
    """A strip of up to ``frames`` frames, as RGB, from UNet input latents (batch, 4, frames, h, w)."""
    sample = latents[0].detach().float().cpu().numpy()  # the first of the guidance pair
    picks = np.linspace(0, sample.shape[1] - 1, num=min(frames, sample.shape[1])).round().astype(int)
    rgb = np.einsum("cfhw,cr->fhwr", sample[:, picks], _LATENT_RGB)
    strip = np.concatenate(list(rgb), axis=1)
    strip = ((np.clip(strip, -1, 1) + 1) * 127.5).astype(np.uint8)
    return strip.repeat(scale, axis=0).repeat(scale, axis=1)


def is_fatal_cuda_error(error: BaseException) -> bool:
    """CUDA errors after which the process's GPU context is unusable (a restart is needed)."""
    text = str(error)
    return any(marker in text for marker in (
        "CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS", "cuDNN error"))


class FaultInjector:
    """Test-only switch: ``I2V_TEST_FAULTS="oom@denoise*1,fatal@decode*1"`` raises the named
    failure at the start of that stage, the given number of times. Unset in normal use."""

    def __init__(self, spec: str = ""):
        self._faults: dict[str, list] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kind, _, rest = item.partition("@")
            stage, _, count = rest.partition("*")
            self._faults[stage] = [kind, int(count or 1)]
        if self._faults:
            log.warning("Fault injection is on (I2V_TEST_FAULTS): %s", spec)

    def trip(self, stage: str) -> None:
        fault = self._faults.get(stage)
        if not fault or fault[1] <= 0:
            return
        fault[1] -= 1
        import torch

        if fault[0] == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (injected by I2V_TEST_FAULTS)")
        raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by I2V_TEST_FAULTS)")
