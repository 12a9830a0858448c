"""A generation request, validated against the configured limits.

Every caller (the page, the API, the command line) builds its request with
``build_request``; nothing reaches the engine without passing through it.
"""

from __future__ import annotations

import math
import random
import unicodedata
from dataclasses import asdict, make_dataclass
from typing import Any

from PIL import Image

from .config import PARAMETER_NAMES, PARAMETERS, AppConfig, Parameter
from .errors import InvalidInput, exact, shown
from .images import normalise_image

MAX_SEED = 2**32 - 1


def _parameters(self) -> dict[str, Any]:
    """Everything but the image, as recorded beside the video."""
    values = asdict(self)
    del values["image"]
    return values


#: One video to make: the prompts, ``PARAMETERS`` (config.py; the resolution first, with its size in
#: pixels) and the seed used.
#: ``image`` is RGB, exactly ``width`` x ``height``.
GenerationRequest = make_dataclass(
    "GenerationRequest",
    [("image", Image.Image), ("prompt", str), ("negative_prompt", str),
     (PARAMETERS[0].name, PARAMETERS[0].kind), ("width", int), ("height", int),
     *[(p.name, p.kind) for p in PARAMETERS[1:]], ("seed", int)],
    namespace={"parameters": _parameters}, frozen=True)


def build_request(config: AppConfig, *, image: Any, prompt: Any, negative_prompt: Any = None,
                  seed: Any = None, **settings: Any) -> GenerationRequest:
    """Check every parameter, fill the missing ones from the configured defaults,
    and normalise ``image`` (a PIL image, a path or bytes) to the output size.

    ``settings`` are ``PARAMETERS`` by name (``num_frames=16``), as any caller sends them
    (text, numbers or None). Raises ``InvalidInput`` naming the parameter, the value and
    what is allowed; the image is only decoded once every other parameter has passed. A
    seed of -1 (or none) is replaced by a random one, so the request records the seed used.
    """
    unknown = sorted(set(settings) - set(PARAMETER_NAMES))
    if unknown:
        raise TypeError(f"build_request() got an unknown setting {unknown[0]!r}")
    generation = config.generation
    d = generation.defaults
    resolution, *numbers = PARAMETERS  # checked in this order: resolution, seed, prompts, the numbers
    checked = {resolution.name: _check(resolution, settings.get(resolution.name), generation)}
    side = generation.resolutions[checked["resolution"]]
    seed = _integer("param_seed", d.seed if seed in (None, "") else seed, -1, MAX_SEED)
    prompts = dict(
        prompt=clean_prompt(prompt, generation.max_prompt_chars, required=True),
        negative_prompt=clean_prompt(d.negative_prompt if negative_prompt is None else negative_prompt,
                                     generation.max_prompt_chars, required=False, name_key="param_negative_prompt"),
    )
    checked.update({p.name: _check(p, settings.get(p.name), generation) for p in numbers})
    rgb = normalise_image(image, (side, side), config.images)
    return GenerationRequest(image=rgb, **prompts, **checked, width=side, height=side,
                             seed=random.randint(0, MAX_SEED) if seed == -1 else seed)


def _check(parameter: Parameter, value: Any, generation) -> Any:
    """One parameter's value, checked against its configured choices or range; the default when empty."""
    if value is None or value == "":
        value = getattr(generation.defaults, parameter.name)
    if parameter.limits is None:  # the resolution: one of the configured names
        if str(value) not in generation.resolutions:
            raise InvalidInput(key="err_resolution", value=shown(value), allowed=", ".join(generation.resolutions))
        return str(value)
    limits = generation.limits(parameter.name)
    if parameter.kind is int:
        return _integer(parameter.message_name_key, value, int(limits.min), int(limits.max))
    number = _number(parameter.message_name_key, value)
    if number not in limits:
        raise InvalidInput(key="err_out_of_range", name_key=parameter.message_name_key, value=shown(value),
                           low=exact(limits.min), high=exact(limits.max))
    return float(number)


def clean_prompt(text: Any, max_chars: int, *, required: bool, name_key: str = "param_prompt") -> str:
    """Normalise a prompt: NFC, control characters removed, whitespace collapsed.

    ``name_key`` names it in messages (the prompt, the negative prompt).
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidInput(key="err_prompt_type", name_key=name_key, kind=type(text).__name__)
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c).startswith(("C", "Z")) else c for c in text)
    text = " ".join(text.split())
    if required and not text:
        raise InvalidInput(key="err_prompt_missing")
    if len(text) > max_chars:
        raise InvalidInput(key="err_prompt_long", name_key=name_key, length=len(text), limit=max_chars)
    return text


def _number(name: str, value: Any) -> float | int:
    """``value`` as a finite number; an int stays an int, exact however large (float() would overflow)."""
    if isinstance(value, bool) or value is None:
        raise InvalidInput(key="err_not_number", name_key=name, value=shown(value))
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(key="err_not_number", name_key=name, value=shown(value)) from None
    if not math.isfinite(number):
        raise InvalidInput(key="err_not_finite", name_key=name, value=shown(value))
    return number


def _integer(name: str, value: Any, low: int, high: int) -> int:
    number = _number(name, value)
    if isinstance(number, float) and not number.is_integer():
        raise InvalidInput(key="err_not_whole", name_key=name, value=shown(value))
    if not low <= number <= high:
        raise InvalidInput(key="err_out_of_range", name_key=name, value=shown(value), low=low, high=high)
    return int(number)
