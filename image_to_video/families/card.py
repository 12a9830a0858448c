"""What a model family is, without torch: its ``Card``, and the size of a video in it.

A card is everything the shared code needs to know about a family (ranges, defaults, presets, sizes,
frame-count rule, languages, which modules denoise, the offload order, hub repos, the demo) while the
model itself is not loaded; ``Card.pipeline`` names the module that loads and runs it, imported only
when a model is loaded (``families.load_family``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import GenerationSettings

#: Every aspect ratio a family may offer, widest first; "auto" picks the one nearest the picture's.
ASPECTS = ("16:9", "4:3", "1:1", "3:4", "9:16")
AUTO = "auto"


def ratio(aspect: str) -> float:
    """``"16:9"`` -> 16/9."""
    width, height = aspect.split(":")
    return int(width) / int(height)


@dataclass(frozen=True)
class HubLora:
    """A LoRA file published on the hub that a preset uses, kept as ``loras/<name>.safetensors``."""

    name: str
    repo: str
    file: str
    #: The expert it goes into alone ("high", "low"), or None: as the file says.
    expert: str | None
    #: Its size, for the page's "download" button and the memory it adds.
    size_mb: float


@dataclass(frozen=True)
class Fast:
    """A few-step preset: the step-distillation LoRAs its model card publishes, applied at full strength,
    with the steps and guidance they were distilled for (the preset ``preset`` of the card's generation
    settings holds those)."""

    preset: str
    loras: tuple[HubLora, ...]

    def names(self) -> tuple[str, ...]:
        return tuple(lora.name for lora in self.loras)

    def loras_text(self) -> str:
        """The request's ``loras`` that apply it: ``name@expert:1,...``."""
        return ",".join(f"{lora.name}{'@' + lora.expert if lora.expert else ''}:1" for lora in self.loras)

    def size_gb(self) -> float:
        return sum(lora.size_mb for lora in self.loras) / 1000


@dataclass(frozen=True)
class Card:
    """One model of a family (the name a user picks), with its published figures."""

    #: The name a config, job or page uses: "i2vgen-xl", "wan2.2-ti2v-5b", "wan2.2-i2v-a14b".
    name: str
    #: The family it belongs to (the record's ``family``): "i2vgen-xl" or "wan".
    family: str
    #: How the page names it.
    title: str
    #: ``model_index.json``'s ``_class_name`` of its diffusers folders.
    pipeline_class: str
    #: "module:Class" of the family's pipeline code, relative to ``image_to_video.families``.
    pipeline: str
    #: The hub repos it is published as (the first is the default source), and their download size.
    hub_repos: tuple[str, ...]
    download_gb: float
    licence: str
    #: Defaults, presets, ranges and the resolution names with their short side in pixels.
    generation: GenerationSettings
    #: Resolution name -> (width, height) of its landscape (or square) size; other aspects keep its area.
    base_sizes: dict[str, tuple[int, int]]
    #: The aspect ratios it makes, and the multiple each side must be (the latent grid times the patch).
    aspects: tuple[str, ...]
    size_multiple: int
    #: Frame counts it makes: ``frame_step * k + 1`` when the step is above 1 (a temporal VAE factor).
    frame_step: int
    #: The weights' dtype on a GPU ("auto" in ``model.dtype``); a CPU always runs float32.
    gpu_dtype: str
    #: The pipeline's components called once a step (group offload moves them block by block; the others
    #: whole, in the pipeline's own ``model_cpu_offload_seq`` order).
    denoisers: tuple[str, ...]
    #: The prompt languages its text encoder reads ("en" only: others are translated first).
    prompt_languages: tuple[str, ...]
    #: Whether it can end the video on a second picture (``last_image``).
    end_frame: bool
    #: "module:function" (relative to ``image_to_video.families``) that writes its demo: tiny random
    #: weights in its exact layout, so every path runs on any machine (its folder: ``AppConfig.model_path``).
    demo_builder: str
    #: Files to download beside the weights and the json/txt files (e.g. a SentencePiece tokenizer).
    download_patterns: tuple[str, ...] = ()
    #: The speed switches of ``model.*`` that apply to it (the others are UNet-specific).
    speed_switches: tuple[str, ...] = ()
    #: Whether it takes LoRAs (``loras/`` in the models folder; its pipeline code loads them before denoising).
    #: Why, or why not: ``sources["loras"]``.
    loras: bool = False
    #: Its few-step preset, when a step-distillation LoRA for it is published (``sources["fast"]``).
    fast: Fast | None = None
    #: Where each figure above comes from.
    sources: dict[str, str] = field(default_factory=dict)

    def sizes(self, resolution: str) -> dict[str, tuple[int, int]]:
        """Aspect -> (width, height) at ``resolution``: the base size, its transpose, and the other
        aspects at about the same number of pixels, each side a multiple of ``size_multiple``."""
        base_w, base_h = self.base_sizes[resolution]
        area, m = base_w * base_h, self.size_multiple
        made = {}
        for aspect in self.aspects:
            r = ratio(aspect)
            if math.isclose(r, base_w / base_h, rel_tol=0.05) or (base_w == base_h and r == 1):
                made[aspect] = (base_w, base_h)
            elif math.isclose(r, base_h / base_w, rel_tol=0.05):
                made[aspect] = (base_h, base_w)
            else:
                made[aspect] = (max(m, round(math.sqrt(area * r) / m) * m), max(m, round(math.sqrt(area / r) / m) * m))
        return made

    def size(self, resolution: str, aspect: str) -> tuple[int, int]:
        return self.sizes(resolution)[aspect]

    def nearest_aspect(self, width: int, height: int) -> str:
        """The aspect of ``aspects`` nearest a ``width`` x ``height`` picture (by log ratio: 2:1 is as
        far from 1:1 as 1:2)."""
        wanted = math.log(width / height)
        return min(self.aspects, key=lambda aspect: abs(math.log(ratio(aspect)) - wanted))

    def frames_allowed(self, frames: int) -> bool:
        return self.frame_step <= 1 or (frames - 1) % self.frame_step == 0

    def nearest_frames(self, frames: int) -> tuple[int, ...]:
        """The allowed frame counts around ``frames`` (one below, one above, within the range)."""
        limits = self.generation.num_frames
        step = self.frame_step
        below = (frames - 1) // step * step + 1
        return tuple(n for n in (below, below + step) if limits.min <= n <= limits.max)

    def frames_text(self) -> str:
        """The frame-count rule in words, for the API's description and messages."""
        limits = self.generation.num_frames
        if self.frame_step <= 1:
            return f"{limits.min:g} to {limits.max:g}"
        first = int(limits.min)
        examples = ", ".join(str(first + self.frame_step * k) for k in range(3))
        return f"{first} to {limits.max:g}, {self.frame_step}k+1 ({examples}, ...)"

    def resolution_text(self) -> str:
        """``480p (832x480), 720p (1280x704)``: each resolution with its base size."""
        return ", ".join(f"{name} ({w}x{h})" for name, (w, h) in self.base_sizes.items())
