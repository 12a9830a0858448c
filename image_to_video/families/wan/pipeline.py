"""Wan 2.2 (``diffusers.WanImageToVideoPipeline``): what the engine does that is specific to it.

The same interface as I2VGen-XL's (families/i2vgen_xl/pipeline.py): ``load``, ``pipeline``,
``denoiser``, ``denoise`` and ``decode``. Unlike I2VGen-XL, Wan's pipeline has what the app needs:
``callback_on_step_end`` gives progress and the latents for a preview after each step; cancel and the
fault injector's step hook are a forward pre-hook on each expert (called twice a step with guidance).

The frames equal plain diffusers' on the same folder, seed and settings: the pipeline reads the prompt
itself (its own ``ftfy`` cleaning, umT5 with ``max_sequence_length`` 512), runs the scheduler its folder
ships, draws its noise from ``torch.Generator("cpu").manual_seed(seed)``, and the latents are decoded
exactly as the pipeline decodes them, the whole video at once (Wan's VAE is causal over time: cutting
it into chunks would change the frames; it already decodes frame by frame inside, so its memory is small).

A request's LoRAs (``loras``) are made the pipeline's active adapters before it denoises, as plain
diffusers' ``load_lora_weights`` and ``set_adapters`` make them; one without LoRAs unloads them all
(families/adapters.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline
from diffusers.utils.torch_utils import get_module_execution_device

from ... import loras
from ...errors import Cancelled, GenerationFailed
from ...progress import Progress, ProgressFn
from ...request import GenerationRequest
from ..adapters import Adapters
from ..preview import PREVIEWS_PER_VIDEO, latent_strip, nothing

log = logging.getLogger(__name__)

#: The colours the latent-to-RGB approximation is fitted on: the cube's corners and grey, in [-1, 1].
_COLOURS = torch.tensor([[r, g, b] for r in (-1.0, 1.0) for g in (-1.0, 1.0) for b in (-1.0, 1.0)] + [[0.0] * 3])


class Wan:
    """A loaded Wan 2.2 pipeline (TI2V-5B or I2V-A14B) on ``device``, computing in ``dtype``."""

    name = "wan"

    def __init__(self, pipeline: WanImageToVideoPipeline, device: torch.device, dtype: torch.dtype):
        self.pipeline, self.device, self.dtype = pipeline, device, dtype
        self._latent_rgb: np.ndarray | None = None
        self.decode_counts: dict[str, float] = {}  # its VAE is float32 already: no redo to count
        #: The request's LoRAs, loaded before each denoising (none: every one unloaded).
        self.adapters = Adapters(pipeline, "Wan2.2-I2V-A14B" if self.takes_end_frame else "Wan2.2-TI2V-5B")

    @classmethod
    def load(cls, folder: Path, *, device: torch.device, dtype: torch.dtype, variant: str | None,
             device_map: str | None) -> Wan:
        pipe = WanImageToVideoPipeline.from_pretrained(folder, dtype=dtype, variant=variant, device_map=device_map)
        if pipe.vae.dtype != torch.float32:  # diffusers' Wan examples keep the VAE in float32: it is small
            pipe.vae.to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        family = cls(pipe, device, dtype)
        family._latent_rgb = fit_latent_rgb(pipe.vae)
        return family

    @property
    def experts(self) -> list[torch.nn.Module]:
        """The modules called once a step (twice with guidance): ``transformer``, and A14B's ``transformer_2``."""
        return [m for m in (self.pipeline.transformer, getattr(self.pipeline, "transformer_2", None)) if m is not None]

    @property
    def denoiser(self) -> torch.nn.Module:
        """The first expert (the one that runs the first, noisiest steps)."""
        return self.experts[0]

    @property
    def takes_end_frame(self) -> bool:
        """Only the A14B layout uses ``last_image`` (TI2V-5B conditions on the first frame only and would
        ignore it silently)."""
        return not self.pipeline.config.expand_timesteps

    def denoise(self, request: GenerationRequest, *, report: ProgressFn, cancel: threading.Event,
                before_step: Callable[[], None] = nothing,
                within: Iterable[contextlib.AbstractContextManager] = ()) -> torch.Tensor:
        """The video's latents after ``request.num_inference_steps`` steps, as the pipeline returns them
        with ``output_type="latent"`` (for TI2V-5B with the first frame's condition put back)."""
        total = request.num_inference_steps
        started = time.perf_counter()
        preview_every = max(1, total // PREVIEWS_PER_VIDEO)

        def on_step_start(_module, _args):
            if cancel.is_set():
                raise Cancelled(key="err_cancelled")
            before_step()

        def on_step_end(_pipe, index: int, _timestep, outputs: dict) -> dict:
            done = index + 1
            elapsed = time.perf_counter() - started
            due = done % preview_every == 0 and done < total
            preview = self.latent_preview(outputs["latents"]) if due else None
            report(Progress("denoising", done, total, elapsed, elapsed / done * (total - done), preview))
            if cancel.is_set():
                raise Cancelled(key="err_cancelled")
            return {}

        end = getattr(request, "last_image", None)
        if end is not None and not self.takes_end_frame:
            raise GenerationFailed(key="err_end_frame_unsupported", model="Wan2.2-TI2V-5B")
        self.adapters.use(getattr(request, "loras", ()), loras.find)  # exactly the request's (InvalidInput: unfit)
        hooks = [expert.register_forward_pre_hook(on_step_start) for expert in self.experts]
        try:
            report(Progress("denoising", 0, total, 0.0, None))
            with contextlib.ExitStack() as stack:
                for context in within:
                    stack.enter_context(context)
                return self.pipeline(
                    image=request.image,
                    prompt=request.model_prompt,
                    negative_prompt=request.model_negative_prompt,
                    height=request.height,
                    width=request.width,
                    num_frames=request.num_frames,
                    num_inference_steps=total,
                    guidance_scale=request.guidance_scale,
                    generator=torch.Generator("cpu").manual_seed(request.seed),
                    **({"last_image": end} if end is not None else {}),
                    output_type="latent",
                    callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=["latents"],
                ).frames
        finally:
            for hook in hooks:
                hook.remove()

    def decode(self, latents: torch.Tensor, *, chunk: int, report: ProgressFn, cancel: threading.Event,
               before_chunk: Callable[[], None] = nothing) -> np.ndarray:
        """uint8 frames (frames, h, w, 3), decoded as the pipeline decodes them: the whole video at once
        (``chunk`` does not apply: Wan's VAE is causal over time)."""
        if cancel.is_set():
            raise Cancelled(key="err_cancelled")
        before_chunk()
        started = time.perf_counter()
        video = self._decode(latents)
        if not bool(torch.isfinite(video).all()):
            raise GenerationFailed(key="err_non_finite_video")
        # (batch, channels, frames, h, w) in [-1, 1] -> (frames, h, w, channels) uint8, as the pipeline's
        # video processor maps it to [0, 1]
        frames = ((video[0] / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
        elapsed = time.perf_counter() - started
        report(Progress("decoding", len(frames), len(frames), elapsed, 0.0))
        return frames

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """diffusers' own decoding lines of ``WanImageToVideoPipeline.__call__`` (0.42.1)."""
        vae = self.pipeline.vae
        latents = latents.to(device=get_module_execution_device(vae), dtype=vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
        video = vae.decode(latents / std + mean, return_dict=False)[0]
        self.pipeline.maybe_free_model_hooks()
        return video

    def latent_preview(self, latents: torch.Tensor, frames: int = 4, scale: int = 8) -> np.ndarray:
        """An approximate strip of up to ``frames`` frames, as RGB, from the denoising latents (batch,
        channels, frames, h, w): each latent pixel's colour by the linear map ``fit_latent_rgb`` fitted."""
        weights = self._latent_rgb
        return latent_strip(latents[0].detach().float().cpu().numpy(), weights[:-1], weights[-1], frames=frames,
                            scale=scale)


@torch.no_grad()
def fit_latent_rgb(vae: torch.nn.Module) -> np.ndarray:
    """A linear map from Wan's normalised latents to RGB, (channels + 1, 3) with the bias last: the
    VAE encodes nine flat colours (one small frame each) and least squares fits their latents to them.
    Approximate by nature (what a preview needs), but fitted to this very VAE, whatever its channels."""
    side = 2 * int(getattr(vae.config, "scale_factor_spatial", 8) or 8)
    device = get_module_execution_device(vae)
    pictures = _COLOURS.view(-1, 3, 1, 1, 1).expand(-1, 3, 1, side, side)
    latents = vae.encode(pictures.to(device, vae.dtype)).latent_dist.mode().float().cpu()
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(shape)
    features = ((latents - mean) / std).mean(dim=(2, 3, 4))  # (colours, channels)
    features = torch.cat([features, torch.ones(len(features), 1)], dim=1)
    return torch.linalg.lstsq(features, _COLOURS).solution.numpy().astype(np.float32)
