"""The output folder's single owner: file names, companions, records, history, retention, disk space.

Every video is ``video_YYYYMMDD_HHMMSS_<8 hex>-s<seed>-<prompt-slug>.mp4`` (the final result; the
slug is the start of the prompt in ASCII, ``prompt_slug``; older videos lack the part after the hex) with
companions of the same stem: ``.json`` (its record: every setting, the seed, versions, timings, every file made),
``_input.png`` (the picture exactly as the model saw it) and, when the job asked for them, what
was derived beside the model's own frames: ``_model.mp4`` (the model's frames before a loop,
interpolation or upscale), ``_segment.mp4`` (the last segment made, on its own), ``.gif``,
``.webm`` and ``_frames.zip`` (every frame as a PNG); ``_all.zip`` (all of them in one zip) is made
when the page first offers it. The companions are written
first and the video's rename into place is the last step (its commit point): companions
without their video are leftovers of a crash, removed at start. Only this module builds
those names, finds, lists and deletes them, so a name from a browser or an API
caller can only ever reach a video's own files in this folder.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from .config import OutputSettings
from .errors import GenerationFailed, InvalidInput
from .video import replaced_atomically, write_json

log = logging.getLogger(__name__)

#: ``video_YYYYMMDD_HHMMSS_<8 hex>``, then (since issue 24) ``-s<seed>`` and the start of the prompt as an
#: ASCII slug (``-a-cat-runs``): words joined by hyphens only, so no companion's ``_...`` ending can be
#: part of a name, and a name from anyone can only be one of ours.
VIDEO_NAME = re.compile(r"video_[0-9]{8}_[0-9]{6}_[0-9a-f]{8}(?:-s[0-9]{1,10}(?:-[a-z0-9]+)*)?")
#: The most characters of the prompt's slug in a name.
SLUG_CHARS = 40
#: What a crash can leave behind: the writers' temporary names (never a finished file).
_TEMPORARY = (".video_*.tmp.mp4", ".video_*.tmp.gif", ".video_*.tmp.webm", ".video_*.tmp.zip",
              ".video_*.json.*.tmp", ".video_*_input.png.*.tmp")
#: A companion's kind -> the end of its file name after the stem (the MP4 itself is "video").
COMPANIONS = {"record": ".json", "input_image": "_input.png", "model_video": "_model.mp4",
              "segment_video": "_segment.mp4", "gif": ".gif", "webm": ".webm", "png_frames": "_frames.zip",
              "everything": "_all.zip"}
#: The companions derived from the model's frames (not the record or the input picture).
DERIVED = ("model_video", "segment_video", "gif", "webm", "png_frames")
#: Longest first, so that "_model.mp4" is taken off before ".mp4".
_ENDINGS = sorted([".mp4", *COMPANIONS.values()], key=len, reverse=True)


def new_video_name(now: datetime | None = None, *, seed: int | None = None, prompt: str = "") -> str:
    """``video_YYYYMMDD_HHMMSS_<8 hex>``: sortable by time, unique within a second; with a ``seed``,
    ``-s<seed>`` and the start of ``prompt`` as an ASCII slug (``prompt_slug``) after it."""
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    name = f"video_{stamp}_{uuid.uuid4().hex[:8]}"
    if seed is None:
        return name
    slug = prompt_slug(prompt)
    return f"{name}-s{int(seed)}" + (f"-{slug}" if slug else "")


def prompt_slug(prompt: str, limit: int = SLUG_CHARS) -> str:
    """The start of ``prompt`` safe in any file name: ASCII letters and digits in lower case, words joined
    by hyphens, at most ``limit`` characters, cut at a word's end; "" when nothing ASCII is left (a Chinese
    prompt without its English)."""
    text = unicodedata.normalize("NFKD", str(prompt or "")).encode("ascii", "ignore").decode("ascii").lower()
    words = re.findall(r"[a-z0-9]+", text)
    slug = ""
    for word in words:
        longer = f"{slug}-{word}" if slug else word
        if len(longer) > limit:
            if not slug:
                slug = word[:limit]
            break
        slug = longer
    return slug


@dataclass(frozen=True)
class VideoFiles:
    """One video's files: the MP4 and its companions (which may not exist yet)."""

    folder: Path
    name: str

    @property
    def video(self) -> Path:
        return self.folder / f"{self.name}.mp4"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def input_image(self) -> Path:
        return self.folder / f"{self.name}_input.png"

    def companion(self, kind: str) -> Path:
        """The file of ``kind`` (a ``COMPANIONS`` key) beside the video."""
        return self.folder / f"{self.name}{COMPANIONS[kind]}"

    def all(self) -> list[Path]:
        """The video and every companion it may have."""
        return [self.video, *(self.companion(kind) for kind in COMPANIONS)]

    def existing(self) -> list[Path]:
        return [path for path in self.all() if path.exists()]


def model_name(source: str) -> str:
    """What a record (and the MP4's comment) says of the model: a hub repo id as it is
    (``ali-vilab/i2vgen-xl``), a folder by its last part only (``i2vgen-xl``). The record travels
    with the video: a folder's full path would tell anyone it is shared with the server's user
    name and folders."""
    source = str(source)
    path = Path(source).expanduser()
    repo_id = not (path.is_absolute() or source.startswith((".", "~")) or source.count("/") != 1)
    if repo_id and not path.is_dir():
        return source
    return path.resolve().name or source


def free_gb(folder: Path) -> float:
    """Free disk space where ``folder`` is (or will be created), in GB."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / 1e9


class OutputFolder:
    """The videos of one output folder."""

    def __init__(self, folder: Path, settings: OutputSettings):
        self.folder = Path(folder)
        self.settings = settings

    # -- writing ---------------------------------------------------------------

    def new_video(self, *, seed: int | None = None, prompt: str = "") -> VideoFiles:
        """Names for a new video (nothing is written yet), with its ``seed`` and the start of its ``prompt``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return VideoFiles(self.folder, new_video_name(seed=seed, prompt=prompt))

    def save_input_image(self, image: Image.Image, files: VideoFiles) -> None:
        """The model's input picture beside its video, written atomically."""
        with replaced_atomically(files.input_image) as tmp:
            image.save(tmp, format="PNG")

    def save_record(self, record: dict[str, Any], files: VideoFiles) -> None:
        write_json(record, files.record)

    def remove_companions(self, files: VideoFiles) -> None:
        """Remove every companion of a video that was never committed."""
        for path in files.all()[1:]:
            path.unlink(missing_ok=True)

    def check_free_space(self) -> None:
        """Raise ``GenerationFailed`` (with what to do) when less than ``outputs.min_free_gb`` is free."""
        free = free_gb(self.folder)
        if free < self.settings.min_free_gb:
            raise GenerationFailed(key="err_disk", free=f"{free:.1f}", folder=self.folder,
                                   needed=f"{self.settings.min_free_gb:g}")

    def has_free_space(self) -> bool:
        return free_gb(self.folder) >= self.settings.min_free_gb

    # -- reading ---------------------------------------------------------------

    def files(self, name: str) -> VideoFiles:
        """A video's files from its name (with or without ``.mp4``, or a companion's name).

        Raises ``InvalidInput`` for anything that is not one of our names: no path reaches
        outside the folder.
        """
        stem = Path(str(name)).name
        ending = next((end for end in _ENDINGS if stem.endswith(end)), "")
        stem = stem.removesuffix(ending)
        if not VIDEO_NAME.fullmatch(stem):
            raise InvalidInput(key="err_video_gone")
        return VideoFiles(self.folder, stem)

    def find(self, name: str) -> dict[str, Any] | None:
        """A video's record with its paths (``video_path``, ``record_path``, ``image_path``), or None
        when there is no such video. A video whose record is missing or damaged (an older version's,
        one copied in by hand) gets a stand-in with ``record_missing`` set, so it can still be
        listed, watched and deleted."""
        try:
            files = self.files(name)
        except InvalidInput:
            return None
        return _read_record(files)

    def write_zip(self, name: str, destination: Path) -> list[str]:
        """One zip at ``destination`` of everything video ``name`` has here (``write_zip``); the names it
        holds. Raises ``InvalidInput`` for a name that is not ours, ``FileNotFoundError`` when it is gone."""
        return write_zip(self.files(name), destination)

    def model_frames_file(self, name: str) -> Path | None:
        """The file with the model's own frames of video ``name`` (its ``_model.mp4`` when the video
        was looped, interpolated or upscaled, else the video itself): what continuing it joins onto.
        None when there is no such video."""
        try:
            files = self.files(name)
        except InvalidInput:
            return None
        if not files.video.is_file():
            return None
        model = files.companion("model_video")
        return model if model.is_file() else files.video

    def history(self, limit: int = 24) -> list[dict[str, Any]]:
        """Records of the newest videos, newest first (by when the video was written: names
        only tell the second)."""
        records = []
        for _written, path in sorted(self._videos(), reverse=True):
            record = self.find(path.name)
            if record:
                records.append(record)
            if len(records) >= limit:
                break
        return records

    # -- removing --------------------------------------------------------------

    def delete(self, name: str) -> bool:
        """Delete one video with its record and input image; False if it was not there."""
        files = self.files(name)
        if not files.video.is_file():
            return False
        _remove(files)
        log.info("Deleted %s", files.video.name)
        return True

    def apply_retention(self, keep: VideoFiles | None = None) -> int:
        """Delete the oldest videos beyond ``outputs.max_age_days`` and ``outputs.max_total_gb``;
        never ``keep`` (the video just made), whatever the other files' times say."""
        limits = self.settings
        videos = [self.files(path.name) for _written, path in sorted(self._videos())]
        videos = [files for files in videos if files != keep]
        removed = 0
        if limits.max_age_days > 0:
            cutoff = time.time() - limits.max_age_days * 86400
            while videos and _written(videos[0].video) < cutoff:
                _remove(videos.pop(0))
                removed += 1
        if limits.max_total_gb > 0:
            sizes = {files: sum(_size(f) for f in files.existing()) for files in videos}
            total = sum(sizes.values()) + (sum(_size(f) for f in keep.existing()) if keep else 0)
            while videos and total > limits.max_total_gb * 1e9:
                files = videos.pop(0)
                total -= sizes[files]
                _remove(files)
                removed += 1
        if removed:
            log.info("Retention: removed %d old video(s) from %s", removed, self.folder)
        return removed

    def _videos(self) -> list[tuple[int, Path]]:
        """(when written, path) of every video; one deleted meanwhile (another browser, retention) is left out."""
        found = []
        for path in self.folder.glob("video_*.mp4"):
            if VIDEO_NAME.fullmatch(path.stem):
                try:
                    found.append((path.stat().st_mtime_ns, path))
                except OSError:
                    continue
        return found

    def clean_temporary_files(self) -> int:
        """Remove what a crash left (never a finished video): half-written files, and companions
        whose video was never committed. Run at start, before any video is being made."""
        stale = [path for pattern in _TEMPORARY for path in self.folder.glob(pattern)]
        stale += [path for end in COMPANIONS.values() for path in self.folder.glob(f"video_*{end}")
                  if self._is_orphan(path)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def _is_orphan(self, path: Path) -> bool:
        try:
            files = self.files(path.name)
        except InvalidInput:
            return False  # not one of our names: not ours to remove
        return not files.video.exists()


def write_zip(files: VideoFiles, destination: Path) -> list[str]:
    """One zip at ``destination`` of everything a video has (the video, its record, its picture, every
    derived file), stored as they are (videos do not shrink); the names it holds. ``FileNotFoundError``
    when the video is gone."""
    if not files.video.is_file():
        raise FileNotFoundError(files.video.name)
    names = []
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in files.existing():
            if path != files.companion("everything"):
                archive.write(path, arcname=path.name)
                names.append(path.name)
    return names


def everything_zip(files: VideoFiles) -> Path | None:
    """The video's ``_all.zip`` beside it (``write_zip``; made once, on first asking, under a temporary name,
    and deleted with the video): what the page offers as one download. None when the video is gone or the
    zip cannot be written."""
    path = files.companion("everything")
    if path.is_file():
        return path
    temporary = files.folder / f".{files.name}.{uuid.uuid4().hex[:6]}.tmp.zip"
    try:
        write_zip(files, temporary)
        temporary.replace(path)
        return path
    except (OSError, zipfile.BadZipFile):
        return None
    finally:
        temporary.unlink(missing_ok=True)


def _read_record(files: VideoFiles) -> dict[str, Any] | None:
    if not files.video.is_file():
        return None
    try:
        record = json.loads(files.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    image = files.input_image
    paths = {"video_path": str(files.video), "image_path": str(image) if image.is_file() else None}
    if not isinstance(record, dict) or not isinstance(record.get("parameters", {}), dict):
        return {**_stand_in(files), **paths, "record_path": None}
    return {**record, **paths, "record_path": str(files.record)}


def _stand_in(files: VideoFiles) -> dict[str, Any]:
    """What is known of a video without a readable record: its name and when it was written."""
    written = datetime.fromtimestamp(_written(files.video)) if _written(files.video) != float("inf") else None
    return {"video": files.video.name, "created": written.isoformat(timespec="seconds") if written else "",
            "parameters": {}, "record_missing": True}


def _written(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # gone already: nothing to remove


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove(files: VideoFiles) -> None:
    for path in files.existing():
        path.unlink(missing_ok=True)
