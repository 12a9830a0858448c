"""The models a server offers and how each stands on it: the page's model picker and ``GET /api/models``.

Each offered model (``model.offer``, ``AppConfig.offered``) is ready or loading on a worker, on disk,
or not downloaded yet (with its download size); with what its default video needs of GPU memory in
each memory mode, so a creator sees before choosing whether it fits the card here. Each model's Fast
preset names LoRA files to download once (``fast_presets``, ``lora_sources``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import estimates, families, loras, model_store
from .config import AppConfig
from .errors import InvalidInput, shown
from .model_status import ModelState
from .workers import loaded_model

#: How a model stands, best first (what the picker shows beside its name).
STATES = ("ready", "loading", "error", "on_disk", "not_downloaded")


def engines_of(engine: Any) -> list[Any]:
    """The workers' engines behind what the server holds: a group's, or the one engine."""
    return list(getattr(engine, "engines", None) or [engine])


def model_list(config: AppConfig, engines: list[Any]) -> list[dict[str, Any]]:
    """Each offered model, in the app's order: name, title, family, whether it is the server's default,
    its state (``STATES``) with the workers holding it and the reason of a failed load, its download
    size, whether it can end on a picture, whether it takes LoRAs, and ``memory_gb`` (its default video's
    peak per memory mode, fastest first; empty where no figure is known)."""
    offered = config.offered or {config.model.family: config}
    listed = []
    for name, one in offered.items():
        card = families.CARDS[name]
        holding = [engine for engine in engines if loaded_model(engine) == name]
        state, message = _state(holding, one)
        defaults = one.generation.defaults
        listed.append({
            "name": name, "title": card.title, "family": card.family, "default": name == config.model.family,
            "state": state, "message": message, "workers": [e.name for e in holding if getattr(e, "name", None)],
            "download_gb": None if one.model.demo else card.download_gb, "demo": one.model.demo,
            "end_frame": card.end_frame, "loras": card.loras, "licence": card.licence,
            "resolution": defaults.resolution, "num_frames": defaults.num_frames,
            "memory_gb": _memory_gb(card, one),
        })
    return listed


def _state(holding: list[Any], config: AppConfig) -> tuple[str, str | None]:
    """How a model stands: on a worker (ready, loading, or why it failed), else on disk or not."""
    states = [engine.status.state for engine in holding]
    if ModelState.READY in states:
        return "ready", None
    if any(state is not ModelState.ERROR for state in states):
        return "loading", None
    if states:
        return "error", holding[0].status.message
    return ("on_disk" if on_disk(config) else "not_downloaded"), None


def on_disk(config: AppConfig) -> bool:
    """Whether loading the model needs no download: a demo (built in a second), a folder, or a hub
    repo downloaded completely into the models folder."""
    if config.model.demo:
        return True
    source = config.model_path
    if model_store.is_local(source):
        return True
    if not model_store.is_repo_id(source):
        return False
    record = model_store.download_record(model_store.local_folder(source, Path(config.paths.models_dir)))
    return bool(record and record.get("repo_id") == source)


def _memory_gb(card: families.Card, config: AppConfig) -> dict[str, float]:
    """The default video's peak GPU memory per memory mode: the family's traced table (Wan), or
    I2VGen-XL's (``estimates``)."""
    defaults = config.generation.defaults
    needs = families.memory_needs(card, defaults.resolution, defaults.num_frames)
    if needs is None:
        width, height = families.served_card(config).size(defaults.resolution, "1:1")
        needs = estimates.memory_needs_gb(max(width, height), defaults.num_frames)
    return {mode: round(gb, 1) for mode, gb in needs.items()}


def fast_presets(models_dir: Path) -> dict[str, dict]:
    """Each model's Fast preset: its ``loras`` as a job names them, their size, and whether all are on disk."""
    on_disk = loras.available(models_dir)
    return {card.name: {"preset": card.fast.preset, "loras": card.fast.loras_text(),
                        "size_gb": round(card.fast.size_gb(), 2),
                        "on_disk": all(name in on_disk for name in card.fast.names())}
            for card in families.CARDS.values() if card.fast}


def lora_sources(fast, repo, file, name) -> list[tuple]:
    """What ``POST /api/loras`` (and ``main.py loras fetch``) asks to download: a model's Fast LoRAs, or one
    file of a repo. Raises ``InvalidInput`` for anything else."""
    if fast not in (None, ""):
        card = families.CARDS.get(str(fast).strip().lower())
        if card is None or card.fast is None:
            raise InvalidInput(key="err_lora_fetch_no_fast", model=shown(fast), allowed=", ".join(
                card.name for card in families.CARDS.values() if card.fast))
        return [(lora.repo, lora.file, lora.name) for lora in card.fast.loras]
    if repo in (None, "") or file in (None, ""):
        raise InvalidInput(key="err_lora_fetch_what")
    repo, file, name = loras.check_source(repo, file, name)
    for card in families.CARDS.values():  # a Fast preset's name keeps its card's file: never another's
        for lora in card.fast.loras if card.fast else ():
            if name == lora.name and (repo, file) != (lora.repo, lora.file):
                raise InvalidInput(key="err_lora_fetch_reserved", name=shown(name), repo=lora.repo, file=lora.file)
    return [(repo, file, name)]
