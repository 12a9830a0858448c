"""Videos a creator brings to continue: an MP4 or WebM of their own, checked on the server and kept for
that page's owner only, its frames at one of the model's sizes and frame rates.

A brought video then continues exactly as a video of this server does: ``JobQueue`` takes its last frame
as the picture and its size, frame rate, aspect and model as fixed settings, and ``VideoService`` joins
the new segments onto its frames. What it holds is our own H.264 MP4, made here from the upload by one
ffmpeg run that is bounded in time and frames (the demuxer forced from the file's first bytes, so that
ffmpeg never guesses a playlist or another format that reads other files), then decoded whole once.
Each one is ``brought_<32 hex>.mp4`` with its ``.json`` record (owner, original name, settings) in
``folder``; a name that is another owner's is, to this owner, no video at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from .config import AppConfig, ImageSettings
from .errors import GenerationFailed, InvalidInput, shown
from .video import probe_video, write_json

log = logging.getLogger(__name__)

#: A brought video's name: unguessable, and never one of the output folder's (``video_...``).
NAME = re.compile(r"brought_[0-9a-f]{32}")
#: The containers taken, by their first bytes: MP4 (ISO base media: "ftyp" at byte 4) and WebM (EBML).
_DEMUXERS = {"mov": lambda head: head[4:8] == b"ftyp", "matroska": lambda head: head[:4] == b"\x1a\x45\xdf\xa3"}
#: Seconds ffmpeg may take to read a file's header (a hostile file never keeps a page event waiting).
PROBE_S = 15.0


@dataclass(frozen=True)
class Limits:
    """What a brought video may be: its file's size, its frames (after its frame rate is made one the model
    takes), its picture (``images``: the same size and shape rules as an uploaded picture), and how long
    making our copy may take."""

    max_mb: float = 30.0
    max_frames: int = 300
    images: ImageSettings = ImageSettings()
    decode_s: float = 120.0


@dataclass(frozen=True)
class Header:
    """What ffmpeg reads in a file's header: the shown size (rotation applied), frame rate, duration."""

    width: int
    height: int
    fps: float
    duration_s: float


def is_brought(name: Any) -> bool:
    """Whether ``name`` is a brought video's name (with or without ``.mp4``)."""
    return isinstance(name, str) and bool(NAME.fullmatch(name.strip().removesuffix(".mp4")))


class BroughtVideos:
    """The brought videos kept in ``folder``, each its owner's."""

    def __init__(self, folder: Path, limits: Limits = Limits(), *, keep_days: float = 7.0, per_owner: int = 10,
                 most: int = 200):
        """``keep_days``: a brought video is removed after this long; ``per_owner``: an owner's newest ones
        kept, and ``most``: everyone's (older ones go as new ones come: page ids cost nothing to make)."""
        self.folder, self.limits, self.keep_days, self.per_owner = Path(folder), limits, keep_days, per_owner
        self.most = most

    def take(self, path: str | os.PathLike, owner: str, *, size_for, fps_range: tuple[int, int],
             parameters: dict[str, Any], original_name: str = "") -> dict[str, Any]:
        """Check the file at ``path`` and keep our copy of it for ``owner``; its record.

        ``size_for(width, height)`` gives the (aspect, (width, height)) its frames get (the model's size
        nearest its shape); its frame rate becomes the nearest one in ``fps_range`` (frames dropped or
        repeated by time when it is outside); ``parameters`` (resolution, model) go into its record with
        the aspect and frame rate. Raises ``InvalidInput`` saying what to do for anything that is not a
        video of acceptable size, shape, length and frame rate that decodes in time; nothing is kept then.
        """
        path = Path(path)
        demuxer = self._check_file(path)
        header = read_header(path, demuxer)
        self._check_picture(header)
        fps = min(max(round(header.fps), fps_range[0]), fps_range[1])
        most = self.limits.max_frames
        if header.duration_s * fps > most + 1:
            raise _too_long(round(header.duration_s * fps), fps, most)
        aspect, (width, height) = size_for(header.width, header.height)
        name = f"brought_{secrets.token_hex(16)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        video = self.folder / f"{name}.mp4"
        tmp = self.folder / f".{name}.tmp.mp4"
        try:  # the record first, then the video: a video here always has its record
            frames = self._transcode(path, demuxer, tmp, fps, (width, height))
            record = {"video": video.name, "owner": owner, "brought": _plain_name(original_name or path.name),
                      "created": time.time(),
                      "source": {"width": header.width, "height": header.height, "fps": header.fps},
                      "parameters": {**parameters, "fps": fps, "aspect": aspect, "width": width, "height": height},
                      "model_frames": {"frames": frames, "fps": fps, "file": video.name}}
            write_json(record, self.folder / f"{name}.json")
            os.replace(tmp, video)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("Kept a brought video %s (%d frames of %dx%d at %d fps) for %s", video.name, frames, width, height,
                 fps, owner[:8])
        self.prune(owner)
        return self.find(video.name, owner) or {}

    def find(self, name: Any, owner: Any) -> dict[str, Any] | None:
        """``name``'s record with its ``video_path``, if it is ``owner``'s and still here; else None."""
        video = self.frames_file(name)
        if video is None:
            return None
        try:
            record = json.loads(video.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(owner, str) or record.get("owner") != owner:
            return None
        return {**record, "video_path": str(video)}

    def frames_file(self, name: Any) -> Path | None:
        """The MP4 of brought video ``name`` (whoever's it is: the job that continues it was checked when it
        was submitted), or None."""
        if not is_brought(name):
            return None
        video = self.folder / f"{name.strip().removesuffix('.mp4')}.mp4"
        return video if video.is_file() else None

    def prune(self, owner: str | None = None) -> int:
        """Remove the brought videos older than ``keep_days``, ``owner``'s beyond its newest ``per_owner``, and
        everyone's beyond the newest ``most``."""
        if not self.folder.is_dir():
            return 0
        cutoff, kept, removed = time.time() - self.keep_days * 86400, [], 0
        for record_path in self.folder.glob("brought_*.json"):
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                created = float(record.get("created", 0))
            except (OSError, ValueError, TypeError, AttributeError):
                record, created = {}, 0.0
            if created < cutoff:
                removed += _remove(record_path)
            else:
                kept.append((created, record_path, record.get("owner")))
        kept.sort(reverse=True, key=lambda entry: entry[0])
        mine = [entry for entry in kept if owner is not None and entry[2] == owner]
        for _created, record_path, _owner in {*mine[self.per_owner:], *kept[self.most:]}:
            removed += _remove(record_path)
        return removed

    def _check_file(self, path: Path) -> str:
        """The demuxer for the file (by its first bytes), once it is an MP4 or WebM of acceptable size."""
        try:
            size = path.stat().st_size
            with path.open("rb") as file:
                head = file.read(16)
        except OSError:
            raise InvalidInput(key="err_upload_missing") from None
        if size > self.limits.max_mb * 2**20:
            raise InvalidInput(key="err_brought_too_big", size=f"{size / 2**20:.0f}", limit=f"{self.limits.max_mb:g}")
        demuxer = next((name for name, matches in _DEMUXERS.items() if matches(head)), None)
        if demuxer is None:
            raise InvalidInput(key="err_brought_not_video")
        return demuxer

    def _check_picture(self, header: Header) -> None:
        """A frame is checked as an uploaded picture is: not too many pixels, too small or too narrow."""
        rules, width, height = self.limits.images, header.width, header.height
        megapixels = width * height / 1e6
        if megapixels > rules.max_megapixels or min(width, height) < rules.min_side or \
                max(width, height) / min(width, height) > rules.max_aspect_ratio:
            raise InvalidInput(key="err_brought_shape", width=width, height=height, min_side=rules.min_side,
                               limit=f"{rules.max_megapixels:g}", ratio=f"{rules.max_aspect_ratio:g}")
        if header.fps <= 0:
            raise InvalidInput(key="err_brought_not_video")

    def _transcode(self, path: Path, demuxer: str, tmp: Path, fps: int, size: tuple[int, int]) -> int:
        """Our MP4 of the video in ``tmp``: ``fps`` frames a second, scaled to cover ``size`` and centre-cropped
        (as a picture is), at most one frame beyond the limit; its frames, counted by decoding it whole."""
        width, height = size
        most = self.limits.max_frames
        graph = (f"fps={fps},scale={width}:{height}:force_original_aspect_ratio=increase:flags=lanczos,"
                 f"crop={width}:{height},setsar=1,format=yuv420p")
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                   "-f", demuxer, "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph,
                   "-frames:v", str(most + 1), "-c:v", "libx264", "-crf", "18", "-preset", "veryfast",
                   "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.limits.decode_s)
        except subprocess.TimeoutExpired:  # run() kills ffmpeg
            raise InvalidInput(key="err_brought_slow", seconds=f"{self.limits.decode_s:g}") from None
        if done.returncode != 0 or not tmp.is_file():
            log.info("A brought video did not decode: %s", shown(done.stderr.decode("utf-8", "replace")))
            raise InvalidInput(key="err_brought_not_video")
        try:
            info = probe_video(tmp)
        except GenerationFailed:
            raise InvalidInput(key="err_brought_not_video") from None
        if info.frames > most:
            raise _too_long(info.frames, fps, most)
        if info.frames < 1 or (info.width, info.height) != size:
            raise InvalidInput(key="err_brought_not_video")
        return info.frames


def brought_videos(config: AppConfig) -> BroughtVideos:
    """The brought videos of this server: in the state folder's ``brought/``, a file no larger than an upload
    may be, at most half the frames a finished video may have (the new segments need the rest), frames that
    pass the picture rules, kept as long as the inputs of unfinished jobs (a day at least)."""
    limits = Limits(max_mb=config.server.max_upload_mb, max_frames=config.finishing.max_output_frames // 2,
                    images=config.images)
    return BroughtVideos(config.paths.state_dir / "brought", limits, keep_days=max(config.jobs.keep_inputs_days, 1.0))


def read_header(path: Path, demuxer: str) -> Header:
    """What ffmpeg reads in ``path``'s header with ``demuxer`` (within ``PROBE_S``); ``InvalidInput`` when it
    holds no video stream ffmpeg can read."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-f", demuxer, "-i", str(path)]
    try:
        said = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_S).stderr
    except subprocess.TimeoutExpired:
        raise InvalidInput(key="err_brought_slow", seconds=f"{PROBE_S:g}") from None
    return parse_header(said.decode("utf-8", "replace"))


def parse_header(text: str) -> Header:
    """``ffmpeg -i``'s words about a file: its first video stream's size (swapped when it is shown turned a
    quarter), frame rate and the file's duration."""
    stream = next((line for line in text.splitlines() if re.search(r"Stream #\S+.*: Video: ", line)), None)
    size = re.search(r" (\d{1,6})x(\d{1,6})[ ,\[]", stream or "")
    if stream is None or size is None:
        raise InvalidInput(key="err_brought_not_video")
    width, height = int(size.group(1)), int(size.group(2))
    if re.search(r"rotation of -?(90|270)\.", text):
        width, height = height, width
    rate = re.search(r" (\d+(?:\.\d+)?)(k?) (?:fps|tbr)", stream)  # "1k fps" is 1000 frames a second
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    seconds = 3600 * int(duration.group(1)) + 60 * int(duration.group(2)) + float(duration.group(3)) \
        if duration else 0.0
    fps = float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else 0.0
    return Header(width, height, fps, seconds)


def _too_long(frames: int, fps: int, most: int) -> InvalidInput:
    return InvalidInput(key="err_brought_too_long", frames=frames, fps=fps, limit=most,
                        seconds=f"{most / fps:.1f}")


def _plain_name(name: str) -> str:
    """A file's name as a caller gave it, safe to show: its last part, printable, at most 80 characters."""
    base = re.split(r"[\\/]", str(name))[-1]
    return "".join(ch for ch in base if ch.isprintable())[:80] or "video"


def _remove(record_path: Path) -> int:
    record_path.with_suffix(".mp4").unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)
    return 1
