"""Model families: each one folder (``families/<name>/``) with a torch-free card and its pipeline code.

The shared code reads a ``Card`` (card.py) and never names a model; the pipeline code is imported only
when a model is loaded (``load_family``). Which card a server serves is ``model.family``, where "auto"
reads the model folder's ``model_index.json`` (``_class_name``, and for Wan its layout), or knows a hub
repo by name, else I2VGen-XL (``detect``). ``served_config`` puts that card's generation settings in
the config every caller reads (request validation, the page, the API form, the command line).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from pathlib import Path

from ..config import AppConfig
from ..errors import ConfigError, InvalidInput, shown
from . import i2vgen_xl, wan
from .card import ASPECTS, AUTO, Card

log = logging.getLogger(__name__)

#: Every model the app knows, by name; the first is the default.
CARDS: dict[str, Card] = {card.name: card for card in (i2vgen_xl.CARD, *wan.CARDS)}
DEFAULT = i2vgen_xl.CARD.name

__all__ = ["ASPECTS", "AUTO", "CARDS", "Card", "DEFAULT", "build_demo", "config_for", "detect", "load_family",
           "offered_names", "served_card", "served_config"]


def detect(source: str) -> str | None:
    """The card name of a model folder (from its ``model_index.json``) or of a known hub repo id; None
    when it cannot be told (a folder without the file, an unknown repo)."""
    folder = Path(source).expanduser()
    index = folder / "model_index.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return _card_of_index(data) if isinstance(data, dict) else None
    for card in CARDS.values():
        if source.strip().lower() in (repo.lower() for repo in card.hub_repos):
            return card.name
    return None


def _card_of_index(index: dict) -> str | None:
    """Which card a ``model_index.json`` is: its pipeline class, and for Wan its layout (``expand_timesteps``,
    the first frame as the condition: TI2V-5B; else the I2V layout of A14B, with its second expert and
    ``boundary_ratio``, or Wan 2.1's single one, which conditions the same way)."""
    class_name = index.get("_class_name")
    if class_name == wan.TI2V_5B.pipeline_class:
        return wan.TI2V_5B.name if index.get("expand_timesteps") is True else wan.I2V_A14B.name
    return next((card.name for card in CARDS.values() if card.pipeline_class == class_name), None)


def served_card(config: AppConfig) -> Card:
    """The card of the model ``config`` serves, with the config's generation settings (for I2VGen-XL
    those are the config file's ``generation`` section, its resolutions square)."""
    card = CARDS[config.model.family if config.model.family in CARDS else DEFAULT]
    if card.name != i2vgen_xl.CARD.name:
        return card
    generation = config.generation
    return dataclasses.replace(card, generation=generation,
                               base_sizes={name: (side, side) for name, side in generation.resolutions.items()})


def served_config(config: AppConfig) -> AppConfig:
    """``config`` with ``model.family`` a card's name ("auto" told from the model folder or hub repo),
    for a family other than I2VGen-XL that card's generation settings (the prompt limit stays the
    config's), and ``offered``: the config of each model ``model.offer`` names (``config_for``).
    Calling it again on its own result changes nothing."""
    if config.offered:
        return config
    served = _one_model(config)
    names = offered_names(config.model.offer, served.model.family)
    offered = {name: served if name == served.model.family else _one_model(_other(config, name)) for name in names}
    return dataclasses.replace(served, offered=offered)


def offered_names(offer: str, served: str) -> tuple[str, ...]:
    """The models ``offer`` ("all" or names separated by commas) names, in the app's order, ``served``
    always among them."""
    wanted = set(CARDS) if offer.strip() == "all" else {name.strip() for name in offer.split(",") if name.strip()}
    unknown = sorted(wanted - set(CARDS))
    if unknown:
        raise ConfigError(f"Invalid setting model.offer: {unknown[0]!r}. Allowed: all, or some of "
                          f"{', '.join(CARDS)} separated by commas.")
    return tuple(name for name in CARDS if name in wanted | {served})


def _other(config: AppConfig, name: str) -> AppConfig:
    """``config`` for another offered model: its family, its first hub repo (a demo: its family's demo)."""
    source = config.model.source if config.model.demo else CARDS[name].hub_repos[0]
    return dataclasses.replace(config, model=dataclasses.replace(config.model, family=name, source=source))


def config_for(config: AppConfig, model) -> AppConfig:
    """The config of the offered model named ``model`` (None or "": ``config``'s own); a model the
    server does not offer is refused with the ones it does."""
    own = served_card(config).name
    model = model.strip().lower() if isinstance(model, str) else model  # as a person types it
    if model in (None, "") or model == own:
        return config
    chosen = config.offered.get(model) if isinstance(model, str) else None
    if chosen is None:
        raise InvalidInput(key="err_model_not_offered", value=shown(model),
                           allowed=", ".join(config.offered or (own,)))
    return dataclasses.replace(chosen, offered=config.offered)


def _one_model(config: AppConfig) -> AppConfig:
    """``config`` for its one model: ``model.family`` told, the family's generation settings."""
    name = config.model.family
    if name == "auto":
        told = None if config.model.demo else detect(config.model_path)
        name = told or DEFAULT
    if name not in CARDS:
        raise ConfigError(f"Invalid setting model.family: {name!r}. Allowed: auto, {', '.join(CARDS)}.")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, family=name))
    if name == i2vgen_xl.CARD.name:
        multiple = i2vgen_xl.CARD.size_multiple
        for resolution, side in config.generation.resolutions.items():
            if side % multiple:
                raise ConfigError(f"Invalid setting generation.resolutions.{resolution}: {side}. Allowed: a multiple "
                                  f"of {multiple} from 64 to 2048 (I2VGen-XL's UNet halves its latents three times).")
        return config
    generation = dataclasses.replace(CARDS[name].generation, max_prompt_chars=config.generation.max_prompt_chars)
    return dataclasses.replace(config, generation=generation)


def _attribute(reference: str):
    """``"wan.pipeline:Wan"`` -> the object, importing ``image_to_video.families.wan.pipeline``."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def load_family(card: Card) -> type:
    """The card's pipeline class (``Family`` interface: load, denoise, decode), imported now."""
    return _attribute(card.pipeline)


def memory_needs(card: Card, resolution: str | None = None, frames: int | None = None) -> dict[str, float] | None:
    """What each memory mode needs for a video of ``resolution`` and ``frames`` (default: the card's default
    video), fastest mode first, from its family's traced table (``families/<family>/memory.py``; any aspect
    has about the base size's pixels); None for I2VGen-XL (``estimates`` traces it); empty for a family
    without a table."""
    if card.family == i2vgen_xl.CARD.family:
        return None
    if card.family != wan.TI2V_5B.family:
        return {}
    from .wan import memory

    defaults = card.generation.defaults
    return memory.needs_gb(card.name, *card.base_sizes[resolution or defaults.resolution],
                           frames or defaults.num_frames)


def build_demo(card: Card, path: Path, *, force: bool = False) -> Path:
    """Write the card's demo model (tiny random weights in its exact layout) to ``path`` unless it is there."""
    builder = _attribute(card.demo_builder)
    if card.family == "wan":
        return builder(Path(path), card.name.removeprefix("wan2.2-"), force=force)
    return builder(Path(path), force=force)
