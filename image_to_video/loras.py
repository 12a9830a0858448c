"""LoRA files on disk: which are offered, their hashes, and a request's ``loras`` checked against them.

A LoRA is a ``.safetensors`` file in diffusers' LoRA format (what ``save_lora_weights`` writes; diffusers
also converts the common Wan formats as it loads them) in ``loras/`` inside the models folder
(``paths.models_dir``), named by its file's stem: ``models/loras/style.safetensors`` is ``style``. The
folder is read at every request, so a file put there is offered without a restart.

A request names its LoRAs as ``name:strength`` separated by commas (``style:0.8,motion:1``; a name alone
is strength 1). ``check`` turns that into the request's ``loras``: one plain dict per LoRA, ``{"name",
"strength", "sha256"}``, which the job stores and its record lists. The hash says which file the job used,
and at run time ``find`` gives the model the file of that name and that hash, in any LoRA folder this
process serves (``serve_from``, called for each engine's models folder), or refuses when the file changed
since the job was queued. Torch-free: validation reads only the file's header and bytes; the model code
that loads the weights is ``families/adapters.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidInput, exact, shown

#: The folder inside the models folder that holds the LoRA files.
FOLDER = "loras"
SUFFIX = ".safetensors"
#: Strengths a LoRA may be given (0 leaves the model as it is; negative ones push away from its style).
MIN_STRENGTH, MAX_STRENGTH = -4.0, 4.0
#: LoRAs one job may use at once.
MAX_LORAS = 8

_hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: each file read once
_served: list[Path] = []  # the LoRA folders of this process's engines (``serve_from``)
_lock = threading.Lock()


def folder(models_dir: Path) -> Path:
    """Where the LoRAs of ``models_dir`` are: ``<models_dir>/loras``."""
    return Path(models_dir) / FOLDER


def available(models_dir: Path) -> dict[str, Path]:
    """The LoRAs on disk now, name -> file, by name: every ``*.safetensors`` file of the folder whose stem
    a request can name (no comma or colon, no space at its ends, not hidden)."""
    found = {}
    try:
        paths = sorted(folder(models_dir).iterdir(), key=lambda path: path.name.lower())
    except OSError:  # no folder (yet): no LoRAs
        return {}
    for path in paths:
        name = path.name[:-len(SUFFIX)] if path.name.endswith(SUFFIX) else ""
        if name and name == name.strip() and not name.startswith(".") and not {",", ":"} & set(name) \
                and path.is_file():
            found[name] = path
    return found


def listing(models_dir: Path) -> list[dict[str, Any]]:
    """The LoRAs on disk as the page and the API list them: name and size (no server paths)."""
    return [{"name": name, "size_mb": round(path.stat().st_size / 1e6, 1)}
            for name, path in available(models_dir).items()]


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex), read once per content: kept by path, size and modification time."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _hashes.get(key)
    if known is None:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        known = digest.hexdigest()
        with _lock:
            _hashes[key] = known
    return known


def text(loras: Any) -> str:
    """A request's ``loras`` back as ``name:strength,...`` (what the page and the command line show)."""
    return ",".join(f"{entry['name']}:{exact(float(entry['strength']))}" for entry in loras or ())


def check(value: Any, models_dir: Path, card: Any) -> tuple[dict[str, Any], ...]:
    """``value`` (``"style:0.8,motion:1"``, a list of such items or of (name, strength) pairs, a {name:
    strength} mapping, or a record's list of {"name", "strength"}) as the request's ``loras``: each LoRA
    once, found in ``models_dir``'s LoRA folder, its strength a number from ``MIN_STRENGTH`` to
    ``MAX_STRENGTH``, for a model whose ``card`` takes LoRAs. Empty: ``()``. Raises ``InvalidInput``
    naming the LoRA otherwise."""
    wanted = _parse(value)
    if not wanted:
        return ()
    if not card.loras:
        raise InvalidInput(key="err_loras_unsupported", model=card.title)
    if len(wanted) > MAX_LORAS:
        raise InvalidInput(key="err_too_many_loras", count=len(wanted), limit=MAX_LORAS)
    on_disk = available(models_dir)
    checked, seen = [], set()
    for name, strength in wanted:
        if name in seen:
            raise InvalidInput(key="err_lora_twice", name=shown(name))
        seen.add(name)
        if name not in on_disk:
            if on_disk:
                raise InvalidInput(key="err_lora_missing", name=shown(name), allowed=", ".join(on_disk))
            raise InvalidInput(key="err_lora_none", name=shown(name))
        checked.append({"name": name, "strength": _strength(name, strength), "sha256": _readable(name, on_disk[name])})
    return tuple(checked)


def _parse(value: Any) -> list[tuple[str, Any]]:
    """(name, strength as given) pairs, in order."""
    if value is None or value == "":
        return []
    if isinstance(value, Mapping):
        return [(str(name).strip(), strength) for name, strength in value.items()]
    if isinstance(value, str):
        items: list[Any] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            items += [part for part in item.split(",") if part.strip()] if isinstance(item, str) else [item]
    else:
        raise InvalidInput(key="err_lora_format", value=shown(value))
    pairs = []
    for item in items:
        if isinstance(item, Mapping) and "name" in item:  # a record's entry
            pairs.append((str(item["name"]).strip(), item.get("strength", 1.0)))
        elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):  # (name, strength)
            pairs.append((item[0].strip(), item[1]))
        elif isinstance(item, str):
            name, colon, strength = item.strip().rpartition(":")
            pairs.append((name.strip(), strength.strip()) if colon else (strength.strip(), 1.0))
        else:
            raise InvalidInput(key="err_lora_format", value=shown(value))
        if not pairs[-1][0]:
            raise InvalidInput(key="err_lora_format", value=shown(value))
    return pairs


def _strength(name: str, value: Any) -> float:
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or not math.isfinite(number) or not MIN_STRENGTH <= number <= MAX_STRENGTH:
        raise InvalidInput(key="err_lora_strength", name=shown(name), value=shown(value), low=exact(MIN_STRENGTH),
                           high=exact(MAX_STRENGTH))
    return number + 0.0  # -0.0 as 0.0


def _readable(name: str, path: Path) -> str:
    """The file's sha256, once its header reads as safetensors holding LoRA weights (the weights themselves
    are checked against the model when the job starts)."""
    try:
        with open(path, "rb") as file:
            size = int.from_bytes(file.read(8), "little")
            if not 2 <= size <= min(100_000_000, os.fstat(file.fileno()).st_size - 8):
                raise ValueError("no safetensors header")
            header = json.loads(file.read(size))
        tensors = [key for key in header if key != "__metadata__"] if isinstance(header, dict) else []
        if not tensors:
            raise ValueError("no tensors")
    except (OSError, ValueError, UnicodeDecodeError):
        raise InvalidInput(key="err_lora_unreadable", name=shown(name)) from None
    return sha256(path)


def serve_from(models_dir: Path) -> None:
    """Let ``find`` look in ``models_dir``'s LoRA folder (an engine on that models folder runs here)."""
    place = folder(models_dir).resolve()
    with _lock:
        if place not in _served:
            _served.append(place)


def find(entry: Mapping[str, Any]) -> Path:
    """The file of one of a request's ``loras``: named ``entry["name"]`` in a folder ``serve_from`` named,
    with the hash the job was checked with. Raises ``InvalidInput`` when it is gone or has changed."""
    name, wanted = entry["name"], entry["sha256"]
    with _lock:
        places = list(_served)
    found = [path for path in (place / f"{name}{SUFFIX}" for place in places) if path.is_file()]
    for path in found:
        if sha256(path) == wanted:
            return path
    if found:
        raise InvalidInput(key="err_lora_changed", name=shown(name), sha256=wanted[:12])
    raise InvalidInput(key="err_lora_gone", name=shown(name))
