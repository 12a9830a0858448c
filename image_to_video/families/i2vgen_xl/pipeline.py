"""The I2VGen-XL model family (``diffusers.I2VGenXLPipeline``): what the engine does that is specific to it.

A model family is one class with this interface, which the engine calls and nothing more:

* ``Family.load(folder, *, device, dtype, variant, device_map) -> Family``: the pipeline from a
  local folder, weights in ``dtype``, straight onto ``device_map`` when that is not None.
* ``.pipeline`` (the diffusers pipeline: memory modes and offload hooks act on it) and
  ``.denoiser`` (the module called once per denoising step: step hooks, compile, the attention
  kernel and DeepCache attach to it).
* ``.denoise(request, *, report, cancel, before_step, within) -> latents``: the denoising loop, with
  a ``Progress`` report after each step (a latent preview every few), ``Cancelled`` at the next step
  once ``cancel`` is set, ``before_step()`` before each step and the ``within`` contexts entered
  around the loop. The same seed must give the same latents.
* ``.decode(latents, *, chunk, report, cancel, before_chunk) -> frames``: uint8 (frames, h, w, 3),
  ``chunk`` frames at a time, a ``Progress`` report after each chunk; every pixel finite (a chunk
  with NaN or inf is decoded again in float32, else ``GenerationFailed``).
* ``.decode_counts``: what the last ``decode`` adds to the job's timings and record, such as
  ``vae_fp32_redecodes``: how many chunks were decoded again in float32 (else a slow VAE would hide
  a video decoded twice).

A second family (Wan2.2-TI2V-5B through ``diffusers.WanImageToVideoPipeline``) is one more module
with such a class (its denoiser is ``pipe.transformer``; its prompt encoding, seeding, latent
layout and preview colours are its own) and a setting that chooses it.

Two traps of this pipeline are handled here (docs/DEPENDENCIES.md): its own prompt encoding
crashes with transformers >= 5.6 (trap 1), and it has no step callback and no interrupt
(trap 2), so progress, cancel and previews are hooks on the UNet.
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
from diffusers import I2VGenXLPipeline

from ...errors import Cancelled, GenerationFailed
from ...progress import Progress, ProgressFn
from ...request import GenerationRequest
from ..preview import PREVIEWS_PER_VIDEO, latent_strip, nothing

log = logging.getLogger(__name__)

#: CLIP's context length; the prompt is padded or cut to it.
PROMPT_TOKENS = 77
# Latent -> RGB approximation of the Stable Diffusion VAE family, which I2VGen-XL uses:
# cheap enough to run every few steps, close enough to cancel a bad job early.
_LATENT_RGB = np.array([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                        [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]], dtype=np.float32)


class I2VGenXL:
    """A loaded I2VGen-XL pipeline on ``device``, computing in ``dtype``."""

    name = "i2vgen-xl"

    def __init__(self, pipeline: I2VGenXLPipeline, device: torch.device, dtype: torch.dtype):
        self.pipeline, self.device, self.dtype = pipeline, device, dtype
        self.decode_counts: dict[str, float] = {}

    @classmethod
    def load(cls, folder: Path, *, device: torch.device, dtype: torch.dtype, variant: str | None,
             device_map: str | None) -> I2VGenXL:
        pipe = I2VGenXLPipeline.from_pretrained(folder, dtype=dtype, variant=variant, device_map=device_map)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, device, dtype)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The module called once per denoising step: here the UNet."""
        return self.pipeline.unet

    unet = denoiser

    def encode_prompt(self, text: str) -> torch.Tensor:
        return encode_prompt(self.pipeline, text, self.device, self.dtype)

    def denoise(self, request: GenerationRequest, *, report: ProgressFn, cancel: threading.Event,
                before_step: Callable[[], None] = nothing,
                within: Iterable[contextlib.AbstractContextManager] = ()) -> torch.Tensor:
        """The video's latents (batch, 4, frames, h/8, w/8) after ``request.num_inference_steps`` steps."""
        total = request.num_inference_steps
        clock = {"start": time.perf_counter(), "done": 0}
        preview_every = max(1, total // PREVIEWS_PER_VIDEO)

        def on_step_start(_module, _args):
            if cancel.is_set():
                raise Cancelled(key="err_cancelled")
            before_step()

        def on_step_end(_module, args, _output):
            clock["done"] += 1
            elapsed = time.perf_counter() - clock["start"]
            eta = elapsed / clock["done"] * (total - clock["done"])
            due = clock["done"] % preview_every == 0 and clock["done"] < total
            preview = latent_preview(args[0]) if due else None
            report(Progress("denoising", clock["done"], total, elapsed, eta, preview))

        # The conditioning image is VAE-encoded with the global RNG (docs/DEPENDENCIES.md, "The
        # conditioning image is encoded with the global RNG"): seed it as well as the generator.
        torch.manual_seed(request.seed)
        generator = torch.Generator("cpu").manual_seed(request.seed)
        unet = self.pipeline.unet
        hooks = [unet.register_forward_pre_hook(on_step_start), unet.register_forward_hook(on_step_end)]
        try:
            report(Progress("denoising", 0, total, 0.0, None))
            with contextlib.ExitStack() as stack:
                for context in within:
                    stack.enter_context(context)
                return self._call(request, generator)
        finally:
            for hook in hooks:
                hook.remove()

    def _call(self, request: GenerationRequest, generator: torch.Generator) -> torch.Tensor:
        return self.pipeline(
            image=request.image,
            prompt_embeds=self.encode_prompt(request.model_prompt),
            negative_prompt_embeds=self.encode_prompt(request.model_negative_prompt),
            height=request.height,
            width=request.width,
            num_frames=request.num_frames,
            target_fps=request.fps,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            generator=generator,
            output_type="latent",
        ).frames

    def decode(self, latents: torch.Tensor, *, chunk: int, report: ProgressFn, cancel: threading.Event,
               before_chunk: Callable[[], None] = nothing) -> np.ndarray:
        """uint8 frames (frames, h, w, 3), decoded ``chunk`` frames at a time."""
        num_frames = latents.shape[2]
        started = time.perf_counter()
        pieces = []
        self.decode_counts = {}
        for first in range(0, num_frames, chunk):
            if cancel.is_set():
                raise Cancelled(key="err_cancelled")
            before_chunk()
            video = self._decode_finite(latents[:, :, first:first + chunk])
            # (batch, channels, frames, h, w) in [-1, 1] -> (frames, h, w, channels) uint8
            video = ((video[0] / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            pieces.append(video.permute(1, 2, 3, 0).cpu().numpy())
            done = min(first + chunk, num_frames)
            elapsed = time.perf_counter() - started
            report(Progress("decoding", done, num_frames, elapsed, elapsed / done * (num_frames - done)))
        return np.concatenate(pieces)

    def _decode_finite(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's frames for ``latents``, every pixel finite: where the computing dtype gave NaN or
        inf, decoded once more with the VAE in float32 (the hub's VAE config says ``force_upcast``),
        one frame at a time (float32 doubles the decode's memory: ``estimates`` counts one frame), and
        counted in ``decode_counts``; still not finite: ``GenerationFailed``, so that no such video is
        ever saved."""
        video = self.pipeline.decode_latents(latents)
        if bool(torch.isfinite(video).all()):
            return video
        del video  # before the redo, which needs the room
        log.warning("The VAE gave NaN or infinite pixels in %s; decoding this chunk again in float32",
                    str(self.pipeline.vae.dtype)[6:])
        self.decode_counts["vae_fp32_redecodes"] = self.decode_counts.get("vae_fp32_redecodes", 0.0) + 1
        with vae_in_float32(self.pipeline.vae):
            video = self.pipeline.decode_latents(latents.float(), decode_chunk_size=1)
        if not bool(torch.isfinite(video).all()):
            raise GenerationFailed(key="err_non_finite_video")
        return video


@contextlib.contextmanager
def vae_in_float32(vae: torch.nn.Module):
    """The VAE's weights in float32 inside the block, back in their own dtype after."""
    dtype = vae.dtype
    if dtype != torch.float32:
        vae.to(torch.float32)
    try:
        yield vae
    finally:
        if dtype != torch.float32:
            vae.to(dtype)


def encode_prompt(pipe: I2VGenXLPipeline, text: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """CLIP embeddings as the pipeline's default ``clip_skip=1`` computes them.

    The pipeline's own path crashes with transformers >= 5.6 (docs/DEPENDENCIES.md, trap 1):
    the final layer norm applied to the second-to-last hidden state.
    """
    tokens = pipe.tokenizer(text, padding="max_length", max_length=PROMPT_TOKENS, truncation=True,
                            return_tensors="pt")
    encoder = pipe.text_encoder
    mask = tokens.attention_mask.to(device) if getattr(encoder.config, "use_attention_mask", False) else None
    hidden = encoder(tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    norm = encoder.text_model.final_layer_norm if hasattr(encoder, "text_model") else encoder.final_layer_norm
    return norm(hidden).to(dtype)


def latent_preview(latents: torch.Tensor, frames: int = 4, scale: int = 4) -> np.ndarray:
    """A strip of up to ``frames`` frames, as RGB, from UNet input latents (batch, 4, frames, h, w)."""
    sample = latents[0].detach().float().cpu().numpy()  # the first of the guidance pair
    return latent_strip(sample, _LATENT_RGB, frames=frames, scale=scale)
