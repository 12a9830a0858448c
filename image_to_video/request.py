"""A generation request, validated against the configured limits.

Every caller (the page, the API, the command line) builds its request with
``build_request``; nothing reaches the engine without passing through it.
"""

from __future__ import annotations

import math
import random
import unicodedata
from dataclasses import field, make_dataclass
from typing import Any

from PIL import Image

from . import families
from . import loras as lora_files
from .config import FORMATS, INTERPOLATE_METHODS, LOOPS, PARAMETER_NAMES, PARAMETERS, UPSCALES, AppConfig, Parameter
from .errors import InvalidInput, exact, shown
from .i18n import t
from .images import fit_picture, open_picture

MAX_SEED = 2**32 - 1


#: The steps after the model a request may ask for, with their defaults (nothing added: one
#: segment, no loop, no interpolation, the MP4 only, the model's size). ``continue_from`` names
#: the video whose last frame is the picture (as ``JobQueue`` resolved it), "" for none.
#: ``interpolate_method``: how interpolation makes its frames (``INTERPOLATE_METHODS``, RIFE first).
FINISHING_DEFAULTS: dict[str, Any] = {"continue_from": "", "segments": 1, "loop": "none",
                                      "interpolate_fps": 0, "formats": "mp4", "upscale": 1,
                                      "interpolate_method": INTERPOLATE_METHODS[0], "crf": 0}
#: ``quality`` (another name for ``crf``) in words: the H.264 constant rate factor each stands for.
QUALITIES = {"best": 14, "high": 18, "medium": 23, "low": 28}


def _parameters(self) -> dict[str, Any]:
    """Everything but the pictures, as recorded beside the video (``end_frame``: whether it ends on one)."""
    values = {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("image", "last_image")}
    values["end_frame"] = self.last_image is not None
    values["loras"] = [dict(entry) for entry in self.loras]  # a list, as the stored job reads it back
    return values


#: What a done job and its record state at their top level (the contract of the API and the record).
SUMMARY_FIELDS = ("family", "model", "width", "height", "num_frames", "num_inference_steps", "guidance_scale",
                  "seed", "fps", "aspect", "resolution", "loras")


def summary(parameters: dict[str, Any]) -> dict[str, Any]:
    """A request's ``parameters()`` as the API and the record state them at their top level: the
    ``SUMMARY_FIELDS``, the prompt as written, the negative prompt the model used (a model's default
    when none was given; the English when it was translated), and both texts as the model read them."""
    values = {name: parameters[name] for name in SUMMARY_FIELDS if name in parameters}
    values.setdefault("family", "i2vgen-xl")
    read = {"prompt": parameters.get("prompt_en") or parameters.get("prompt", ""),
            "negative_prompt": parameters.get("negative_prompt_en") or parameters.get("negative_prompt", "")}
    return {**values, "prompt": parameters.get("prompt", ""), "negative_prompt": read["negative_prompt"],
            "model_read": read}


def _model_prompt(self) -> str:
    """What the model reads: the English translation when the prompt was translated."""
    return self.prompt_en or self.prompt


def _model_negative_prompt(self) -> str:
    return self.negative_prompt_en or self.negative_prompt


def _format_list(self) -> tuple[str, ...]:
    return tuple(self.formats.split(","))


def _output_fps(self) -> int:
    """The finished video's frame rate: the interpolated one, else the model's."""
    return self.interpolate_fps or self.fps


#: One video to make: the prompts, ``PARAMETERS`` (config.py; the resolution first, with its size in
#: pixels), the seed used, then the finishing steps (``FINISHING_DEFAULTS``), the English the
#: model reads when a prompt was translated ("" when it was not), the aspect the size was made for
#: and the picture the video ends on (None: none; only models whose card says ``end_frame``), then the
#: LoRAs, each {"name", "strength", "sha256"} (loras.py; only models whose card says ``loras``).
#: ``image`` (and ``last_image``) is RGB, exactly ``width`` x ``height``. Stored jobs made before a
#: field existed get its default (square, before sizes had aspects).
GenerationRequest = make_dataclass(
    "GenerationRequest",
    [("image", Image.Image), ("prompt", str), ("negative_prompt", str),
     (PARAMETERS[0].name, PARAMETERS[0].kind), ("width", int), ("height", int),
     *[(p.name, p.kind) for p in PARAMETERS[1:]], ("seed", int),
     *[(name, type(value), field(default=value)) for name, value in FINISHING_DEFAULTS.items()],
     ("prompt_en", str, field(default="")), ("negative_prompt_en", str, field(default="")),
     ("aspect", str, field(default="1:1")), ("family", str, field(default="i2vgen-xl")),
     ("model", str, field(default="i2vgen-xl")), ("last_image", Any, field(default=None, repr=False)),
     ("loras", tuple, field(default=()))],
    namespace={"parameters": _parameters, "model_prompt": property(_model_prompt),
               "model_negative_prompt": property(_model_negative_prompt),
               "format_list": property(_format_list), "output_fps": property(_output_fps)},
    frozen=True)


def build_request(config: AppConfig, *, image: Any, prompt: Any, negative_prompt: Any = None,
                  seed: Any = None, continued_frames: int = 0, prompt_en: str = "", negative_prompt_en: str = "",
                  aspect: Any = None, last_image: Any = None, loras: Any = None, **settings: Any) -> GenerationRequest:
    """Check every parameter, fill the missing ones from the configured defaults,
    and normalise ``image`` (a PIL image, a path or bytes) to the output size: the served model's
    size for the resolution and ``aspect`` ("auto" or empty: the model's aspect nearest the picture's),
    the picture scaled to cover it and centre-cropped (as little as possible). ``last_image``: the
    picture the video ends on, for a model that can (else refused), fitted to the same size. ``loras``:
    ``"name:strength,..."`` (or a list, or a record's entries), checked by ``loras.check`` against the
    LoRA folder of ``paths.models_dir``, for a model that takes them (else refused).

    ``model`` (among ``settings``): which offered model makes it (``families.config_for``; none: the
    server's own), whose card and generation settings every check below reads.

    ``settings`` are ``PARAMETERS`` by name (``num_frames=16``), as any caller sends them
    (text, numbers or None). Raises ``InvalidInput`` naming the parameter, the value and
    what is allowed; the image is only decoded once every other parameter has passed. A
    seed of -1 (or none) is replaced by a random one, so the request records the seed used.
    """
    quality = settings.pop("quality", None)  # another name for crf, or a word of QUALITIES
    if quality not in (None, "") and settings.get("crf") in (None, "", 0):
        settings["crf"] = quality
    finishing = {name: settings.pop(name) for name in FINISHING_DEFAULTS if name in settings}
    config = families.config_for(config, settings.pop("model", None))  # the model the job names, checked by its limits
    card = families.served_card(config)
    settings.pop("family", None)  # a record's parameters: the model says it
    settings.pop("end_frame", None)  # a record's note; the picture itself comes as last_image
    unknown = sorted(set(settings) - set(PARAMETER_NAMES))
    if unknown:
        raise TypeError(f"build_request() got an unknown setting {unknown[0]!r}")
    generation = config.generation
    d = generation.defaults
    resolution, *numbers = PARAMETERS  # checked in this order: resolution, aspect, seed, prompts, the numbers
    checked = {resolution.name: _check(resolution, settings.get(resolution.name), generation)}
    wanted_aspect = _aspect(aspect, card)
    seed = _integer("param_seed", d.seed if seed in (None, "") else seed, -1, MAX_SEED)
    prompts = dict(
        prompt=clean_prompt(prompt, generation.max_prompt_chars, required=True),
        negative_prompt=clean_prompt(d.negative_prompt if negative_prompt is None else negative_prompt,
                                     generation.max_prompt_chars, required=False, name_key="param_negative_prompt"),
    )
    checked.update({p.name: _check(p, settings.get(p.name), generation) for p in numbers})
    if not card.frames_allowed(checked["num_frames"]):
        raise InvalidInput(key="err_frame_count", value=checked["num_frames"], model=card.title,
                           rule=card.frames_text(), nearest=" / ".join(map(str, card.nearest_frames(checked["num_frames"]))))
    ends = last_image not in (None, "", b"")
    if ends and not card.end_frame:
        raise InvalidInput(key="err_end_frame_unsupported", model=card.title)
    chosen_loras = lora_files.check(loras, config.paths.models_dir, card)
    picture = open_picture(image, config.images)
    chosen = card.nearest_aspect(*picture.size) if wanted_aspect == families.AUTO else wanted_aspect
    width, height = card.size(checked["resolution"], chosen)
    finished = check_finishing(config, finishing, fps=checked["fps"], num_frames=checked["num_frames"],
                               size=(width, height), continued_frames=continued_frames)
    end = fit_picture(_end_frame(last_image, config), (width, height)) if ends else None
    return GenerationRequest(image=fit_picture(picture, (width, height)), **prompts, **checked, width=width,
                             height=height, seed=random.randint(0, MAX_SEED) if seed == -1 else seed, **finished,
                             prompt_en=prompt_en, negative_prompt_en=negative_prompt_en, aspect=chosen,
                             family=card.family, model=card.name, last_image=end, loras=chosen_loras)


def _end_frame(source: Any, config: AppConfig) -> Image.Image:
    """The end frame, checked as the picture is; a refusal says it is the end frame that cannot be used
    (with two pictures sent, "not an image we can read" alone does not say which to fix)."""
    try:
        return open_picture(source, config.images)
    except InvalidInput as error:
        if error.key is None:
            raise
        raise InvalidInput(key="err_end_frame_picture", problem_en=t(error.key, "en", **error.params),
                           problem_zh=t(error.key, "zh-CN", **error.params)) from None


def _aspect(value: Any, card: families.Card) -> str:
    """``"auto"`` (also for empty) or one of the card's aspects, as "W:H"."""
    if value is None or value == "":
        return families.AUTO
    text = value.strip().lower().replace("x", ":").replace("/", ":") if isinstance(value, str) else value
    if text != families.AUTO and text not in card.aspects:
        raise InvalidInput(key="err_choice", name_key="param_aspect", value=shown(value),
                           allowed=", ".join((families.AUTO, *card.aspects)))
    return text


def check_finishing(config: AppConfig, values: dict[str, Any], *, fps: int, num_frames: int,
                    size: tuple[int, int], continued_frames: int = 0) -> dict[str, Any]:
    """The finishing steps asked for (``FINISHING_DEFAULTS`` by name, as any caller sends them),
    checked against ``config.finishing``; the defaults where empty. ``continued_frames``: the
    frames of the video a job continues (0 for none), for the finished video's length."""
    limits = config.finishing
    given = {name: values.get(name) for name in FINISHING_DEFAULTS}
    given = {name: FINISHING_DEFAULTS[name] if value is None or value == "" else value for name, value in given.items()}
    segments = _integer("param_segments", given["segments"], 1, limits.max_segments)
    loop = _choice("param_loop", given["loop"], LOOPS)
    interpolate_fps = _integer("param_interpolate_fps", given["interpolate_fps"], 0, limits.max_interpolate_fps)
    if interpolate_fps and interpolate_fps <= fps:
        raise InvalidInput(key="err_interpolate_fps", value=interpolate_fps, fps=fps, low=fps + 1,
                           high=limits.max_interpolate_fps)
    interpolate_method = _choice("param_interpolate_method", given["interpolate_method"], INTERPOLATE_METHODS)
    upscale = _integer("param_upscale", given["upscale"], 1, max(UPSCALES))
    crf = given["crf"]
    crf = QUALITIES.get(crf.strip().lower(), crf) if isinstance(crf, str) else crf
    crf = _integer("param_crf", crf, 0, 51) or limits.crf  # 0: the server's default (finishing.crf)
    formats = _formats(given["formats"])
    frames = finished_frames(num_frames, segments, loop, continued_frames)
    if interpolate_fps:
        frames = round(frames * interpolate_fps / fps)
    if frames > limits.max_output_frames:
        raise InvalidInput(key="err_too_many_frames", frames=frames, limit=limits.max_output_frames)
    megapixels = frames * size[0] * size[1] * upscale ** 2 / 1e6
    if megapixels > limits.max_output_megapixels:
        raise InvalidInput(key="err_finished_too_large", frames=frames, size=f"{size[0] * upscale}x{size[1] * upscale}",
                           megapixels=f"{megapixels:.0f}", limit=f"{limits.max_output_megapixels:g}")
    continue_from = given["continue_from"]
    if not isinstance(continue_from, str):
        raise InvalidInput(key="err_continue_from", value=shown(continue_from))
    return dict(continue_from=continue_from, segments=segments, loop=loop, interpolate_fps=interpolate_fps,
                formats=formats, upscale=upscale, interpolate_method=interpolate_method, crf=crf)


def finished_frames(num_frames: int, segments: int, loop: str, continued_frames: int = 0) -> int:
    """Frames of the finished video before interpolation: the continued video's, then each new
    segment without its first frame (the seam, the frame before it), then the loop."""
    if continued_frames:
        frames = continued_frames + segments * (num_frames - 1)
    else:
        frames = num_frames + (segments - 1) * (num_frames - 1)
    if loop == "boomerang":
        return 2 * frames - 2
    if loop == "crossfade":
        return frames - crossfade_overlap(frames)
    return frames


def crossfade_overlap(frames: int) -> int:
    """Frames a crossfade loop blends the end into the start with (the finished clip is that much shorter)."""
    return max(2, frames // 4)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in allowed:
        raise InvalidInput(key="err_choice", name_key=name, value=shown(value), allowed=", ".join(allowed))
    return text


def _formats(value: Any) -> str:
    """The files to deliver, as "mp4,gif,webm" in that order (the MP4 always); a list or a text with
    commas or spaces."""
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = [part for item in value for part in item.replace(",", " ").split()]
    else:
        raise InvalidInput(key="err_choice", name_key="param_formats", value=shown(value), allowed=", ".join(FORMATS))
    wanted = {_choice("param_formats", item, FORMATS) for item in items} | {"mp4"}
    return ",".join(f for f in FORMATS if f in wanted)


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


#: A prompt longer than this many times its limit is refused before it is cleaned: the spaces and control
#: characters cleaning removes never need more room, and cleaning a 10 MB text costs seconds and memory.
RAW_PROMPT_FACTOR = 4


def clean_prompt(text: Any, max_chars: int, *, required: bool, name_key: str = "param_prompt") -> str:
    """Normalise a prompt: NFC, control characters removed, whitespace collapsed.

    ``name_key`` names it in messages (the prompt, the negative prompt).
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidInput(key="err_prompt_type", name_key=name_key, kind=type(text).__name__)
    if len(text) > RAW_PROMPT_FACTOR * max_chars:  # refused unread: cleaning megabytes costs seconds
        raise InvalidInput(key="err_prompt_long", name_key=name_key, length=len(text), limit=max_chars)
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
