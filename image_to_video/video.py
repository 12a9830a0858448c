"""Write videos that play in every browser, and never leave a broken file behind.

H.264 in MP4, yuv420p, ``+faststart``; written under a temporary name in the output
folder, decoded once to prove it is whole, then renamed into place. imageio-ffmpeg
can leave an unplayable file without raising (docs/DEPENDENCIES.md, "Video files"), hence the check.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import imageio_ffmpeg
import numpy as np

from .errors import GenerationFailed

VIDEO_CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder sees in a video file."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str
    pixel_format: str

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


def write_video(frames: np.ndarray, path: Path, fps: int, *, comment: str = "",
                before_commit: Callable[[VideoInfo], None] | None = None) -> VideoInfo:
    """Encode ``frames`` (uint8, shape frames x height x width x 3) to the MP4 ``path``.

    The file appears under ``path`` only once it has been decoded completely and
    has the expected frame count and size. Raises ``GenerationFailed`` otherwise.
    ``before_commit(info)`` runs after that check and before the rename, so whatever it
    writes (the video's record) exists before the video does; if it raises, no video appears.
    """
    frames = _check_frames(frames)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.tmp.mp4")
    try:
        _encode(frames, tmp, fps, comment)
        info = probe_video(tmp)
        expected = (len(frames), frames.shape[2], frames.shape[1])
        if (info.frames, info.width, info.height) != expected:
            raise GenerationFailed(f"The encoded video has {info.frames} frames of {info.width}x{info.height}, "
                                   f"expected {expected[0]} of {expected[1]}x{expected[2]}.")
        if before_commit is not None:
            before_commit(info)
        os.replace(tmp, path)
        return info
    finally:
        tmp.unlink(missing_ok=True)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (frames, height, width, 3), got {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 with yuv420p needs even sizes, got {frames.shape[2]}x{frames.shape[1]}")
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _encode(frames: np.ndarray, path: Path, fps: int, comment: str) -> None:
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec=VIDEO_CODEC, pix_fmt_out=PIXEL_FORMAT,
        quality=None, bitrate=None, macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-crf", "18", "-preset", "medium", "-movflags", "+faststart",
                       "-metadata", f"comment={comment}"],
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(frame)
    except (OSError, RuntimeError) as error:
        raise GenerationFailed(f"The video encoder failed: {error}") from error
    finally:
        writer.close()


def probe_video(path: Path) -> VideoInfo:
    """Decode ``path`` completely and report what is in it; raise ``GenerationFailed`` if unreadable."""
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = reader.__next__()
        count = sum(1 for _ in reader)
    except (OSError, RuntimeError, StopIteration) as error:
        raise GenerationFailed(f"The video file {Path(path).name} does not decode: {error}") from error
    width, height = meta["size"]
    # pix_fmt reads e.g. "yuv420p(progressive)"; the frames themselves come back as RGB.
    return VideoInfo(frames=count, fps=float(meta["fps"]), width=width, height=height,
                     codec=meta.get("codec", ""), pixel_format=meta.get("pix_fmt", "").split("(")[0])


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` as JSON atomically: readers never see half a file."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` (``.NAME.<hex>.tmp``) to write to; it becomes ``path`` only when
    the block succeeds, and is removed otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
