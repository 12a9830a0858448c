"""Find the model's weights on disk, downloading them from the hub the first time.

A folder is used as it is. A hub repo id is downloaded once into
``models/<repo name>`` (an interrupted download keeps the files that finished;
the next start fetches only the rest, the cut-off file from its start), honouring ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``, and a small record of
what was fetched is written beside it so later starts need no network at all.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

from .errors import ModelUnavailable

log = logging.getLogger(__name__)

#: Written into a downloaded folder once every file is there.
COMPLETE_FILE = ".download_complete.json"

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


def is_local(source: str) -> bool:
    return Path(source).expanduser().is_dir()


def is_repo_id(source: str) -> bool:
    """True when ``source`` reads as a hub repo id (``owner/name``), not as a folder path."""
    return not (Path(source).is_absolute() or source.startswith((".", "~")) or source.count("/") != 1)


def local_folder(repo_id: str, models_dir: Path) -> Path:
    """Where a hub repo is (or will be) stored: ``models/<repo name>``."""
    return Path(models_dir) / repo_id.rstrip("/").split("/")[-1]


def has_variant(folder: Path, variant: str) -> bool:
    """True when ``folder`` holds weight files of ``variant`` (e.g. ``*.fp16.safetensors``)."""
    return bool(variant) and any(Path(folder).glob(f"*/*.{variant}.safetensors"))


#: The largest safetensors header read (safetensors itself refuses headers of 100 MB or more).
MAX_HEADER_BYTES = 100_000_000


def safetensors_header(path: Path) -> dict:
    """A safetensors file's header (the JSON before its weights, read alone: no weight is read). Raises
    ``ValueError`` for a file that has none, ``OSError`` for one that cannot be read."""
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        if not 2 <= size <= min(MAX_HEADER_BYTES, os.fstat(file.fileno()).st_size - 8):
            raise ValueError("no safetensors header")
        header = json.loads(file.read(size))
    if not isinstance(header, dict):
        raise ValueError("no safetensors header")
    return header


#: Bytes per value of the safetensors dtypes that loading does not convert (floats take the pipeline's dtype).
_FIXED_BYTES = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def component_sizes_gb(folder: Path, variant: str | None, *, bytes_per_value: int) -> dict[str, float]:
    """GB each component's weights take once loaded with ``bytes_per_value`` per float, read from the
    safetensors headers (no weights are read)."""
    sizes: dict[str, float] = {}
    for path in sorted(Path(folder).glob("*/*.safetensors")):
        # name.safetensors, name.fp16.safetensors, name.fp16-00001-of-00002.safetensors
        parts = path.name.split(".")
        if (parts[1].split("-")[0] if len(parts) == 3 else None) != (variant or None):
            continue
        total = 0
        for name, entry in safetensors_header(path).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count * _FIXED_BYTES.get(entry["dtype"], bytes_per_value)
        sizes[path.parent.name] = sizes.get(path.parent.name, 0.0) + total / 2**30
    return sizes


def download_record(folder: Path) -> dict | None:
    """The record written after a complete download, or None."""
    try:
        return json.loads((Path(folder) / COMPLETE_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_local(source: str, models_dir: Path, *, variant: str, revision: str,
                 progress: ProgressFn | None = None, extra_patterns: tuple[str, ...] = ()) -> tuple[Path, str | None]:
    """Return (folder, revision sha or None) holding the weights for ``source``.

    ``extra_patterns`` names more files to fetch beside the weights and the json/txt files
    (a translator's ``*.spm`` tokenizer models). Raises ``ModelUnavailable`` with what to do
    when they cannot be had.
    """
    if is_local(source):
        return Path(source).expanduser().resolve(), None
    if not is_repo_id(source):
        raise ModelUnavailable(key="err_model_folder_missing", source=source)
    folder = local_folder(source, models_dir)
    record = download_record(folder)
    if record and record.get("repo_id") == source and record.get("variant") == variant:
        return folder, record.get("sha")
    return folder, _download(source, folder, variant=variant, revision=revision, progress=progress,
                             extra_patterns=extra_patterns)


def _weight_patterns(variant: str, files: list[str]) -> list[str]:
    """The weight files to fetch among the repo's ``files``: the safetensors of ``variant`` where the repo
    has them, else its full-precision safetensors (Wan's repos have no fp16 files), or, for a repo
    that has none (older ones, such as many Helsinki-NLP translators), PyTorch's ``*.bin`` files."""
    for pattern in ([f"*.{variant}.safetensors"] if variant else []) + ["*.safetensors"]:
        if any(fnmatch(name, pattern) for name in files):
            return [pattern]
    return ["*.bin"] if any(fnmatch(name, "*.bin") for name in files) else ["*.safetensors"]


def _download(repo_id: str, folder: Path, *, variant: str, revision: str,
              progress: ProgressFn | None, extra_patterns: tuple[str, ...] = ()) -> str | None:
    import httpx2  # huggingface_hub's HTTP client: a refused connection or a timeout is one of its errors
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(key="err_model_offline", repo=repo_id, folder=str(folder))
    log.info("Downloading %s (%s) into %s", repo_id, variant or "full precision", folder)
    try:
        # model_info waits forever by default: a hub that takes the connection and never answers would
        # hold the start; the per-request timeout is huggingface_hub's own for its metadata requests.
        info = HfApi().model_info(repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        sha = info.sha
        weights = _weight_patterns(variant, [s.rfilename for s in info.siblings or []])
        snapshot_download(repo_id, revision=sha or revision, local_dir=folder,
                          allow_patterns=["*.json", "*.txt", *weights, *extra_patterns],
                          tqdm_class=progress_class(progress))
    except (HfHubHTTPError, LocalEntryNotFoundError, httpx2.HTTPError, OSError, ValueError) as error:
        raise ModelUnavailable(key="err_model_download", repo=repo_id, error=str(error),
                               folder=str(folder)) from error
    record = {"repo_id": repo_id, "revision": revision, "sha": sha, "variant": variant}
    (folder / COMPLETE_FILE).write_text(json.dumps(record, indent=2))
    return sha


class DownloadOverrun(Exception):
    """A download went past the bytes it may take (``progress_class``'s ``limit``)."""


def progress_class(progress: ProgressFn | None, limit: int | None = None):
    """A tqdm class that forwards the byte counts of snapshot_download or hf_hub_download to ``progress``,
    and stops the download (``DownloadOverrun``) once more than ``limit`` bytes came: huggingface_hub
    checks a file's size only at its end.

    snapshot_download keeps two byte bars (received and written); the received one
    is reported. Counts are kept here because a disabled tqdm does not count.
    """
    from tqdm.auto import tqdm

    class _Reporter(tqdm):
        def __init__(self, *args, **kwargs):
            desc = str(kwargs.get("desc") or "")
            self._reports = kwargs.get("unit") == "B" and not desc.startswith("Reconstruct")
            self._done = kwargs.get("initial") or 0
            kwargs.setdefault("mininterval", 5.0)  # the bar goes to the log file: few lines
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self._done += n or 0
            if self._reports and limit is not None and self._done > limit:
                raise DownloadOverrun(self._done)
            if progress and self._reports and self.total:
                progress(int(self._done), int(self.total))
            return super().update(n)

    return _Reporter


#: What a download's error says, in plain words, when the network is the cause ("[Errno -2] Name or
#: service not known" means the hub's address could not be looked up: no network or no DNS).
_NETWORK_WORDS = (
    (("Errno -2", "Errno -3", "Errno -5", "Name or service not known", "Temporary failure in name resolution",
      "nodename nor servname", "getaddrinfo failed", "No address associated"),
     "no network: this server could not look up the hub's address"),
    (("Connection refused", "Errno 111"), "no network: the connection was refused"),
    (("Network is unreachable", "Errno 101", "No route to host"), "no network: the hub cannot be reached"),
    (("timed out", "Timeout", "ReadTimeout", "ConnectTimeout"),
     "no network: the hub did not answer in time (timed out)"),
)


def plain_network_error(error: str) -> str:
    """A download's error for a status message: in plain words when the network is the cause, never a
    raw ``[Errno -2]``; else its first line, cut short."""
    text = str(error)
    for needles, words in _NETWORK_WORDS:
        if any(needle.lower() in text.lower() for needle in needles):
            return words
    text = (text.strip().splitlines() or [""])[0]
    return text if len(text) <= 200 else text[:200] + "…"
