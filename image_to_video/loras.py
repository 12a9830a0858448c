"""LoRA files on disk: which are offered, their hashes, and a request's ``loras`` checked against them.

A LoRA is a ``.safetensors`` file in diffusers' LoRA format (what ``save_lora_weights`` writes; diffusers
also converts the common Wan formats as it loads them) in ``loras/`` inside the models folder
(``paths.models_dir``), named by its file's stem: ``models/loras/style.safetensors`` is ``style``. The
folder is read at every request, so a file put there is offered without a restart.

A request names its LoRAs as ``name:strength`` separated by commas (``style:0.8,motion:1``; a name alone
is strength 1). A model with two experts (Wan2.2-I2V-A14B: ``high`` for the noisy steps, ``low`` after)
takes ``name@high:1`` or ``name@low:1``: the file's weights go into that expert only, as diffusers'
``load_lora_weights`` (``load_into_transformer_2`` for ``low``) puts them; a name without ``@`` loads as its
file says. ``check`` turns that into the request's ``loras``: one plain dict per LoRA, ``{"name",
"strength", "sha256"}`` (and ``"expert"`` when one is named), which the job stores and its record lists. The hash says which file the job used,
and at run time ``find`` gives the model the file of that name and that hash, in any LoRA folder this
process serves (``serve_from``, called for each engine's models folder), or refuses when the file changed
since the job was queued. Torch-free: validation reads only the file's header and bytes; the model code
that loads the weights is ``families/adapters.py``.

``fetch`` downloads one LoRA file from the hub (``HF_ENDPOINT`` honoured, as for the models) into the
folder, under a name; ``Fetches`` runs such downloads one at a time beside the server (the page's and the
API's "download" and a Fast preset's LoRAs, which its card names).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import AppError, InvalidInput, ModelUnavailable, exact, shown

log = logging.getLogger(__name__)

#: The folder inside the models folder that holds the LoRA files.
FOLDER = "loras"
SUFFIX = ".safetensors"
#: Strengths a LoRA may be given (0 leaves the model as it is; negative ones push away from its style).
MIN_STRENGTH, MAX_STRENGTH = -4.0, 4.0
#: LoRAs one job may use at once.
MAX_LORAS = 8
#: The experts a LoRA may be put into alone (``name@high``): the noisy steps' and the later steps'.
EXPERTS = ("high", "low")
#: The largest LoRA file ``fetch`` downloads (the A14B Lightning files are about 0.6 GB each).
MAX_FETCH_BYTES = 4 * 10**9

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
        if valid_name(name) and path.is_file():
            found[name] = path
    return found


def valid_name(name: str) -> bool:
    """Whether a request can name a LoRA file of this stem: not empty, no comma or colon, no space at its
    ends, not hidden, not ending like an expert (``@high``, ``@low``)."""
    return bool(name) and name == name.strip() and not name.startswith(".") and not {",", ":", "/", "\\"} & set(name) \
        and name.rpartition("@")[2] not in EXPERTS and len(name) <= 200


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
    return ",".join(f"{entry['name']}{'@' + entry['expert'] if entry.get('expert') else ''}:"
                    f"{exact(float(entry['strength']))}" for entry in loras or ())


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
    for given, strength in wanted:
        name, expert = split_expert(given)
        if expert and len(card.denoisers) < 2:
            raise InvalidInput(key="err_lora_expert_one", name=shown(given), model=card.title)
        if (name, expert) in seen:
            raise InvalidInput(key="err_lora_twice", name=shown(given))
        seen.add((name, expert))
        if name not in on_disk:
            fast = getattr(card, "fast", None)
            if fast is not None and name in fast.names():
                raise InvalidInput(key="err_lora_fast_missing", name=shown(name), model=card.name,
                                   size=f"{fast.size_gb():.1f}")
            if on_disk:
                raise InvalidInput(key="err_lora_missing", name=shown(name), allowed=", ".join(on_disk))
            raise InvalidInput(key="err_lora_none", name=shown(name))
        entry = {"name": name, "strength": _strength(given, strength), "sha256": _readable(name, on_disk[name])}
        checked.append({**entry, "expert": expert} if expert else entry)
    return tuple(checked)


def weights_gb(value: Any, models_dir: Path, *, bytes_per_value: int) -> float:
    """GB the LoRAs ``value`` names (as a request gives them) take once loaded at ``bytes_per_value`` per
    weight, read from their files' headers; nothing for a value that does not parse or a name not on disk
    (the request's own check says what is wrong). A file put into both experts counts once for each."""
    try:
        wanted = _parse(value)
    except InvalidInput:
        return 0.0
    if len(wanted) > MAX_LORAS:  # refused by the check: not thousands of header reads for a page's estimate
        return 0.0
    on_disk, total = available(models_dir), 0
    for given, _strength in wanted:
        path = on_disk.get(split_expert(given)[0])
        if path is not None:
            total += _weight_count(path) * bytes_per_value
    return total / 2**30


def _weight_count(path: Path) -> int:
    """How many weights the safetensors file at ``path`` holds (its header only; 0 if unreadable)."""
    from .model_store import safetensors_header

    try:
        header = safetensors_header(path)
        return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    except (OSError, ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return 0


def split_expert(given: str) -> tuple[str, str | None]:
    """``"style@low"`` -> ("style", "low"); a name without an expert -> (name, None)."""
    name, at, expert = given.rpartition("@")
    return (name.strip(), expert) if at and expert in EXPERTS and name.strip() else (given, None)


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
            expert = item.get("expert")
            pairs.append((str(item["name"]).strip() + (f"@{expert}" if expert else ""), item.get("strength", 1.0)))
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
    from .model_store import safetensors_header

    try:
        if not [key for key in safetensors_header(path) if key != "__metadata__"]:
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


# -- Downloading a LoRA from the hub ---------------------------------------------------------------------

#: Beside the LoRA files: where each fetched one came from (name -> repo, file, sha256), so fetching it
#: again is a no-op and a file of that name the user put there is never overwritten.
FETCHED_FILE = ".fetched.json"
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def fetched(models_dir: Path) -> dict[str, dict[str, str]]:
    """name -> {"repo", "file", "sha256"} of the LoRAs ``fetch`` downloaded into ``models_dir``'s folder (an
    entry that does not read so, in a damaged or hand-edited file, is left out: that LoRA counts as yours)."""
    try:
        record = json.loads((folder(models_dir) / FETCHED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {name: entry for name, entry in record.items()
            if isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("repo", "file", "sha256"))}


def check_source(repo: Any, file: Any, name: Any) -> tuple[str, str, str]:
    """(repo, file, name) of a LoRA to fetch, each checked: a hub repo id, a ``.safetensors`` path in it
    (no ``..``), a name a request can use (empty: the file's stem). Raises ``InvalidInput`` otherwise."""
    repo, file = str(repo or "").strip(), str(file or "").strip()
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise InvalidInput(key="err_lora_fetch_repo", value=shown(repo))
    if not (_PATH.fullmatch(file) and file.endswith(SUFFIX) and ".." not in file.split("/")) or len(file) > 300:
        raise InvalidInput(key="err_lora_fetch_file", value=shown(file))
    name = str(name or "").strip() or file.rsplit("/", 1)[-1][:-len(SUFFIX)]
    if not valid_name(name):
        raise InvalidInput(key="err_lora_fetch_name", value=shown(name))
    if not name.isprintable() or len((name + SUFFIX).encode()) > 255:  # a file name the disk and page can hold
        raise InvalidInput(key="err_lora_fetch_name_plain", value=shown(name))
    return repo, file, name


def fetch(repo: str, file: str, name: str, models_dir: Path, *, revision: str | None = None,
          progress: Callable[[int, int], None] | None = None, max_bytes: int = MAX_FETCH_BYTES) -> Path:
    """Download ``file`` of hub repo ``repo`` into ``models_dir``'s LoRA folder as ``<name>.safetensors``
    and return its path. Already fetched from there: returned as it is. Another file of that name is
    never replaced (``InvalidInput``); a file over ``max_bytes``, or bigger than the free disk, is not
    fetched; ``ModelUnavailable`` says why a download failed (offline, not found, network). One fetch of a
    name at a time, across processes too (the command line beside the server): a later one finds it done."""
    from filelock import FileLock  # huggingface_hub's own dependency

    repo, file, name = check_source(repo, file, name)
    waiting = folder(models_dir) / ".fetching"
    waiting.mkdir(parents=True, exist_ok=True)
    with FileLock(str(waiting / f".{name}.lock")):  # a name never starts with ".": never a partial folder's
        return _fetch(repo, file, name, models_dir, revision=revision, progress=progress, max_bytes=max_bytes)


def _fetch(repo: str, file: str, name: str, models_dir: Path, *, revision: str | None,
           progress: Callable[[int, int], None] | None, max_bytes: int) -> Path:
    """``fetch``'s download, with the name's lock held."""
    import shutil

    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from .model_store import DownloadOverrun, plain_network_error, progress_class

    place = folder(models_dir)
    target = place / f"{name}{SUFFIX}"
    known = fetched(models_dir).get(name)
    if target.exists():
        if known and (known.get("repo"), known.get("file")) == (repo, file) and sha256(target) == known.get("sha256"):
            return target
        raise InvalidInput(key="err_lora_fetch_taken", name=shown(name))
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(key="err_model_offline", repo=f"{repo}/{file}", folder=str(place))
    import httpx2  # huggingface_hub's HTTP client: a refused connection or a timeout is one of its errors

    place.mkdir(parents=True, exist_ok=True)
    partial = place / ".fetching" / name  # hf_hub_download resumes an interrupted file from here
    try:
        size = get_hf_file_metadata(hf_hub_url(repo, file, revision=revision),
                                    timeout=constants.HF_HUB_ETAG_TIMEOUT).size or 0
        if size > max_bytes:
            raise InvalidInput(key="err_lora_fetch_big", name=shown(name), size=f"{size / 1e9:.1f}",
                               limit=f"{max_bytes / 1e9:g}")
        if size > shutil.disk_usage(place).free - 2**30:
            raise InvalidInput(key="err_lora_fetch_disk", name=shown(name), size=f"{size / 1e9:.1f}")
        log.info("Downloading LoRA %s from %s/%s", name, repo, file)
        limit = min(size, max_bytes) if size else max_bytes  # what the hub announced, no more
        path = Path(hf_hub_download(repo, file, revision=revision, local_dir=partial,
                                    tqdm_class=progress_class(progress, limit)))
    except DownloadOverrun:  # a hub that sends more than it said: stopped, and its bytes are not kept
        shutil.rmtree(partial, ignore_errors=True)
        raise InvalidInput(key="err_lora_fetch_overrun", name=shown(name), size=size,
                           limit=f"{max_bytes / 1e9:g}") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, httpx2.HTTPError, OSError, ValueError) as error:
        raise ModelUnavailable(key="err_lora_fetch_failed", repo=repo, file=file, folder=str(place), name=name,
                               error=plain_network_error(str(error))) from error
    got = path.stat().st_size
    if got > max_bytes:
        shutil.rmtree(partial, ignore_errors=True)
        raise InvalidInput(key="err_lora_fetch_big", name=shown(name), size=f"{got / 1e9:.1f}",
                           limit=f"{max_bytes / 1e9:g}")
    try:
        digest = _readable(name, path)
    except InvalidInput:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    with _lock:
        if target.exists():  # put there while this one downloaded: the user's file stays
            raise InvalidInput(key="err_lora_fetch_taken", name=shown(name))
        os.replace(path, target)
        record = fetched(models_dir)
        record[name] = {"repo": repo, "file": file, "sha256": digest}
        temporary = place / f"{FETCHED_FILE}.tmp"
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(temporary, place / FETCHED_FILE)
    shutil.rmtree(partial, ignore_errors=True)
    log.info("LoRA %s is in %s", name, target)
    return target


class Fetches:
    """LoRA downloads beside a server, one at a time, in the order asked: what is queued, the one running
    (bytes done and in all) and how each ended, for ``GET /api/loras`` and the page."""

    #: Downloads waiting at most; more are refused until some end.
    MAX_WAITING = 8

    def __init__(self, models_dir: Path):
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []  # {"name", "repo", "file", "state", "done_mb", "total_mb", "error"}
        self._thread: threading.Thread | None = None

    def start(self, sources: Sequence[tuple[Any, Any, Any]]) -> list[dict[str, Any]]:
        """Queue the downloads of ``sources`` ((repo, file, name) each, checked first: ``InvalidInput``
        names a bad one and queues none); one already on disk from that source or already queued is not
        fetched again. Returns the state of every download (``state``, in English)."""
        checked = [check_source(*source) for source in sources]
        on_disk, done = available(self.models_dir), fetched(self.models_dir)
        with self._lock:
            active = [item for item in self._items if item["state"] in ("waiting", "downloading")]
            queued = len(self._items)  # a source refused below takes back the ones queued before it
            for repo, file, name in checked:
                if name in on_disk:
                    if (done.get(name, {}).get("repo"), done.get(name, {}).get("file")) != (repo, file):
                        del self._items[queued:]
                        raise InvalidInput(key="err_lora_fetch_taken", name=shown(name))
                    continue
                if any(item["name"] == name for item in active):
                    continue
                if len(active) >= self.MAX_WAITING:
                    del self._items[queued:]
                    raise InvalidInput(key="err_lora_fetch_busy", count=len(active))
                item = {"name": name, "repo": repo, "file": file, "state": "waiting", "done_mb": 0.0,
                        "total_mb": None, "error": None}
                self._items.append(item)
                active.append(item)
            self._items = self._items[-50:]
            if active and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="lora-fetch", daemon=True)
                self._thread.start()
        return self.state()

    def state(self, lang: str | None = None) -> list[dict[str, Any]]:
        """Each download, oldest first: name, repo, file, state (waiting, downloading, done, failed), MB done
        and in all, and why it failed (in ``lang``)."""
        from .i18n import localized

        with self._lock:
            items = [dict(item) for item in self._items]
        for item in items:
            if isinstance(item["error"], BaseException):
                item["error"] = localized(item["error"], lang)
        return items

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued download ended (tests, the command line); False on timeout."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                item = next((item for item in self._items if item["state"] == "waiting"), None)
                if item is None:
                    return
                item["state"] = "downloading"

            def progress(done: int, total: int, item=item) -> None:
                with self._lock:
                    item["done_mb"], item["total_mb"] = round(done / 1e6, 1), round(total / 1e6, 1)

            try:
                fetch(item["repo"], item["file"], item["name"], self.models_dir, progress=progress)
                ended = {"state": "done", "error": None}
            except AppError as error:
                ended = {"state": "failed", "error": error}
            except Exception as error:  # never kill the thread: the next download still runs
                log.exception("Downloading LoRA %s failed", item["name"])
                ended = {"state": "failed", "error": f"{type(error).__name__}: {error}"}
            with self._lock:
                item.update(ended)
