"""Write videos that play in every browser, and never leave a broken file behind.

H.264 in MP4, yuv420p, ``+faststart``; written under a temporary name in the output
folder, decoded once to prove it is whole, then renamed into place. ffmpeg can leave an
unplayable file without saying so (docs/DEPENDENCIES.md, "Video files"), hence the check.

Every ffmpeg run here and in ``finishing`` goes through ``run_ffmpeg``, which watches the job's
cancel switch while ffmpeg works: a cancelled job's encoder is killed within ``CANCEL_POLL_S``, and
its temporary file removed, instead of running on for a minute after the owner pressed Cancel.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import imageio_ffmpeg
import numpy as np

from .errors import Cancelled, GenerationFailed

VIDEO_CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"
#: How often a running ffmpeg looks at the job's cancel switch: a cancelled step stops within this.
CANCEL_POLL_S = 0.2


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
                before_commit: Callable[[VideoInfo], None] | None = None,
                cancel: threading.Event | None = None, crf: int = 18,
                progress: Callable[[int, int], None] | None = None) -> VideoInfo:
    """Encode ``frames`` (uint8, shape frames x height x width x 3) to the MP4 ``path``.

    The file appears under ``path`` only once it has been decoded completely and
    has the expected frame count and size. Raises ``GenerationFailed`` otherwise.
    ``before_commit(info)`` runs after that check and before the rename, so whatever it
    writes (the video's record) exists before the video does; if it raises, no video appears.
    Once ``cancel`` is set, the encoder or the check is stopped and ``Cancelled`` raised.
    """
    frames = _check_frames(frames)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.tmp.mp4")
    try:
        _encode(frames, tmp, fps, comment, cancel, crf=crf, progress=progress)
        info = probe_video(tmp, cancel=cancel)
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


def _encode(frames: np.ndarray, path: Path, fps: int, comment: str, cancel: threading.Event | None, *,
            crf: int = 18, progress: Callable[[int, int], None] | None = None) -> None:
    """H.264 (CRF ``crf``, 18 by default: visually lossless; preset medium) of the raw frames piped to
    ffmpeg, at exactly their size; ``progress(done, total)``: the frames handed to the encoder so far."""
    height, width = frames.shape[1:3]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-", "-an",
               "-c:v", VIDEO_CODEC, "-pix_fmt", PIXEL_FORMAT, "-crf", str(int(crf)), "-preset", "medium",
               "-movflags", "+faststart", "-metadata", f"comment={comment}", str(path)]
    try:
        returncode, _, stderr = run_ffmpeg(command, frames, cancel, progress)
    except OSError as error:
        raise GenerationFailed(f"The video encoder failed: {error}") from error
    if returncode != 0:
        raise GenerationFailed(f"The video encoder failed: {ffmpeg_words(stderr) or f'exit status {returncode}'}")


#: A file path in ffmpeg's words: a slash and what follows up to a space, quote or colon.
_PATH = re.compile(r"(?:/[^\s/'\":|]+)+/")


def ffmpeg_words(stderr: bytes, limit: int = 300) -> str:
    """ffmpeg's error output as one line for a message: its lines joined by " | ", folders cut from file
    paths (a user needs the cause, not the server's folders), and the first ``limit`` characters kept,
    since ffmpeg says the cause first and its consequences ("Error opening output files") after."""
    lines = (line.strip() for line in stderr.decode("utf-8", "replace").splitlines())
    said = _PATH.sub("", " | ".join(line for line in lines if line))
    return said if len(said) <= limit else said[:limit - 1] + "…"


def run_ffmpeg(command: list[str], frames: np.ndarray, cancel: threading.Event | None,
               progress: Callable[[int, int], None] | None = None) -> tuple[int, bytes, bytes]:
    """Run ``command`` with ``frames`` (uint8) on its standard input: (exit status, its standard output,
    its error output). While ffmpeg works (its pipes served by threads of their own) the caller looks at
    ``cancel`` every ``CANCEL_POLL_S``: once set, ffmpeg is killed and ``Cancelled`` raised. ffmpeg never
    outlives this call. ``OSError`` when ffmpeg cannot be started. ``progress(done, total)``: the frames
    handed to ffmpeg so far, reported as they go (from the caller's thread)."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frames = np.ascontiguousarray(frames)
    answer: dict[str, Any] = {}
    sent = [0]

    def read(stream, name: str) -> None:
        answer[name] = stream.read()

    def talk() -> None:
        readers = [threading.Thread(target=read, args=(stream, name), daemon=True)
                   for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
        try:
            for reader in readers:
                reader.start()
            try:
                for frame in frames:  # one frame at a time (the frames' own bytes, not a copy), counted
                    process.stdin.write(memoryview(frame).cast("B"))
                    sent[0] += 1
            except (BrokenPipeError, ValueError, OSError):
                pass  # ffmpeg stopped reading: its exit status and words say why
            finally:
                with contextlib.suppress(OSError, ValueError):
                    process.stdin.close()
            for reader in readers:
                reader.join()
            process.wait()
            answer["output"] = (answer.get("stdout", b""), answer.get("stderr", b""))
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            answer["error"] = error

    talker = threading.Thread(target=talk, name="ffmpeg-pipes", daemon=True)
    talker.start()
    told = -1
    try:
        while talker.is_alive():
            talker.join(CANCEL_POLL_S)
            stop_if_cancelled(cancel)
            if progress is not None and sent[0] != told:
                told = sent[0]
                progress(told, len(frames))
        if progress is not None and sent[0] != told:  # the last frames, handed on since the last look
            progress(sent[0], len(frames))
    finally:
        if process.poll() is None:  # cancelled (or interrupted): stop ffmpeg now, not when it is done
            process.kill()
        talker.join()  # the pipes close with ffmpeg, and the thread ends
    if "error" in answer:
        raise answer["error"]
    stdout, stderr = answer["output"]
    return process.returncode, stdout, stderr


def stop_if_cancelled(cancel: threading.Event | None) -> None:
    """Raise ``Cancelled`` (the job's usual message) once the job's cancel switch is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(key="err_cancelled")


def probe_video(path: Path, *, cancel: threading.Event | None = None) -> VideoInfo:
    """Decode ``path`` completely and report what is in it; raise ``GenerationFailed`` if unreadable
    (``Cancelled``, the decoder stopped, once ``cancel`` is set)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = reader.__next__()
        count = 0
        for _ in reader:
            stop_if_cancelled(cancel)
            count += 1
    except (OSError, RuntimeError, StopIteration) as error:
        raise GenerationFailed(f"The video file {Path(path).name} does not decode: {error}") from error
    finally:
        reader.close()  # stops ffmpeg when the check was cut short
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
