"""A generation request, validated against the configured limits.

Every caller (the page, the API, the command line) builds its request with
``build_request``; nothing reaches the engine without passing through it.
"""

from __future__ import annotations

import math
import random
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from .config import AppConfig
from .errors import InvalidInput
from .images import normalise_image

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """One video to make. ``image`` is RGB, exactly ``width`` x ``height``."""

    image: Image.Image
    prompt: str
    negative_prompt: str
    resolution: str
    width: int
    height: int
    num_frames: int
    fps: int
    num_inference_steps: int
    guidance_scale: float
    seed: int

    def parameters(self) -> dict[str, Any]:
        """Everything but the image, as recorded beside the video."""
        values = asdict(self)
        del values["image"]
        return values


def build_request(config: AppConfig, *, image: Any, prompt: Any, negative_prompt: Any = None,
                  resolution: Any = None, num_frames: Any = None, fps: Any = None,
                  num_inference_steps: Any = None, guidance_scale: Any = None,
                  seed: Any = None) -> GenerationRequest:
    """Check every parameter, fill the missing ones from the configured defaults,
    and normalise ``image`` (a PIL image, a path or bytes) to the output size.

    Raises ``InvalidInput`` naming the parameter, the value and what is allowed;
    the image is only decoded once every other parameter has passed. A seed of -1
    (or none) is replaced by a random one, so the request records the seed used.
    """
    settings = config.generation
    d = settings.defaults
    resolution = d.resolution if resolution in (None, "") else str(resolution)
    if resolution not in settings.resolutions:
        raise InvalidInput(key="err_resolution", value=resolution, allowed=", ".join(settings.resolutions))
    side = settings.resolutions[resolution]
    seed = _integer("Seed", d.seed if seed in (None, "") else seed, -1, MAX_SEED)
    checked = dict(
        prompt=clean_prompt(prompt, settings.max_prompt_chars, required=True),
        negative_prompt=clean_prompt(d.negative_prompt if negative_prompt is None else negative_prompt,
                                     settings.max_prompt_chars, required=False),
        resolution=resolution,
        width=side,
        height=side,
        num_frames=_in_range("Frames", num_frames, d.num_frames, settings.num_frames, integer=True),
        fps=_in_range("FPS", fps, d.fps, settings.fps, integer=True),
        num_inference_steps=_in_range("Steps", num_inference_steps, d.num_inference_steps,
                                      settings.num_inference_steps, integer=True),
        guidance_scale=_in_range("Guidance scale", guidance_scale, d.guidance_scale,
                                 settings.guidance_scale, integer=False),
        seed=random.randint(0, MAX_SEED) if seed == -1 else seed,
    )
    rgb = normalise_image(image, (side, side), config.images)
    return GenerationRequest(image=rgb, **checked)


def clean_prompt(text: Any, max_chars: int, *, required: bool) -> str:
    """Normalise a prompt: NFC, control characters removed, whitespace collapsed."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidInput(key="err_prompt_type", kind=type(text).__name__)
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c).startswith(("C", "Z")) else c for c in text)
    text = " ".join(text.split())
    if required and not text:
        raise InvalidInput(key="err_prompt_missing")
    if len(text) > max_chars:
        raise InvalidInput(key="err_prompt_long", length=len(text), limit=max_chars)
    return text


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise InvalidInput(key="err_not_number", name=name, value=value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(key="err_not_number", name=name, value=value) from None
    if not math.isfinite(number):
        raise InvalidInput(key="err_not_finite", name=name, value=value)
    return number


def _integer(name: str, value: Any, low: int, high: int) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise InvalidInput(key="err_not_whole", name=name, value=value)
    if not low <= number <= high:
        raise InvalidInput(key="err_out_of_range", name=name, value=int(number), low=low, high=high)
    return int(number)


def _in_range(name: str, value: Any, default: Any, limits, *, integer: bool):
    if value is None or value == "":
        value = default
    if integer:
        return _integer(name, value, int(limits.min), int(limits.max))
    number = _number(name, value)
    if number not in limits:
        raise InvalidInput(key="err_out_of_range", name=name, value=f"{number:g}", low=f"{limits.min:g}",
                           high=f"{limits.max:g}")
    return number
