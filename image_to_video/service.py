"""From a validated request to a finished video on disk: generate, encode, record.

``VideoService.make_video`` runs one request on the engine (one at a time), writes
the video, the normalised input image and a JSON record with everything needed to
reproduce the video. It also checks free disk first, keeps the output folder within
its retention limits, and lists past results. The job queue (``jobs.py``) calls it.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import resource
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .config import AppConfig
from .engine import Engine, Progress, ProgressFn
from .errors import GenerationFailed, InvalidInput, OutOfMemory
from .request import GenerationRequest, build_request
from .video import new_video_name, write_json, write_video

log = logging.getLogger(__name__)

_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "gradio", "imageio-ffmpeg", "pillow")


@dataclass(frozen=True)
class VideoResult:
    video_path: Path
    metadata_path: Path
    image_path: Path
    seed: int
    metadata: dict[str, Any]


class VideoService:
    """Runs generation jobs one at a time and keeps their results in the output folder."""

    def __init__(self, config: AppConfig, engine: Engine):
        self.config = config
        self.engine = engine
        self.output_dir = config.paths.output_dir
        self._gpu = threading.Lock()

    def generate(self, image: Any, prompt: Any, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None, **params: Any) -> VideoResult:
        """Validate the inputs and make one video right away (no queue)."""
        request = build_request(self.config, image=image, prompt=prompt, **params)
        return self.make_video(request, progress=progress, cancel=cancel)

    def make_video(self, request: GenerationRequest, *, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None) -> VideoResult:
        """Generate, encode and record ``request``; one call at a time uses the GPU.

        Raises an ``AppError`` subclass with a message for the user on any expected failure.
        """
        self._check_disk()
        try:
            with self._gpu:
                result = self._run(request, progress or (lambda _: None), cancel or threading.Event())
        except OutOfMemory:
            raise out_of_memory_error(request, self.config.generation.resolutions) from None
        self.apply_retention()
        return result

    def _check_disk(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        free_gb = shutil.disk_usage(self.output_dir).free / 1e9
        if free_gb < self.config.outputs.min_free_gb:
            raise GenerationFailed(key="err_disk", free=f"{free_gb:.1f}", folder=self.output_dir,
                                   needed=f"{self.config.outputs.min_free_gb:g}")

    def apply_retention(self) -> int:
        """Delete the oldest videos beyond the configured age and total size. Returns how many."""
        limits = self.config.outputs
        videos = sorted(self.output_dir.glob("video_*.mp4"), key=lambda p: p.stat().st_mtime)
        removed = 0
        if limits.max_age_days > 0:
            cutoff = time.time() - limits.max_age_days * 86400
            while videos and videos[0].stat().st_mtime < cutoff:
                _remove_video(videos.pop(0))
                removed += 1
        if limits.max_total_gb > 0:
            sizes = {v: sum(f.stat().st_size for f in _companions(v)) for v in videos}
            total = sum(sizes.values())
            while videos and total > limits.max_total_gb * 1e9:
                video = videos.pop(0)
                total -= sizes[video]
                _remove_video(video)
                removed += 1
        if removed:
            log.info("Retention: removed %d old video(s) from %s", removed, self.output_dir)
        return removed

    def clean_temporary_files(self) -> int:
        """Remove half-written files left by a crash (never a finished video)."""
        stale = [*self.output_dir.glob(".video_*.tmp.mp4"), *self.output_dir.glob(".video_*.json.*.tmp")]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def _run(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event) -> VideoResult:
        started = time.perf_counter()
        result = self.engine.generate(request, progress=report, cancel=cancel)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        name = new_video_name()
        video_path = self.output_dir / f"{name}.mp4"
        image_path = self.output_dir / f"{name}_input.png"
        record = self._record(request, video_path, image_path)
        report(Progress("encoding", 0, 1, 0.0, None))
        encode_started = time.perf_counter()
        info = write_video(result.frames, video_path, request.fps, comment=json.dumps(record, default=str))
        request.image.save(image_path)
        result.timings["encode_s"] = time.perf_counter() - encode_started
        result.timings["total_s"] = time.perf_counter() - started
        report(Progress("encoding", 1, 1, result.timings["encode_s"], 0.0))
        record.update(
            video_info={**asdict(info), "duration_s": info.duration},
            timings_s={k.removesuffix("_s"): round(v, 3) for k, v in result.timings.items()},
            peak_gpu_memory_gb=None if result.peak_gpu_memory_gb is None else round(result.peak_gpu_memory_gb, 3),
            peak_process_memory_gb=round(_peak_rss_gb(), 3),
        )
        metadata_path = video_path.with_suffix(".json")
        write_json(record, metadata_path)
        log.info("Wrote %s in %.1f s (seed %d)", video_path.name, result.timings["total_s"], request.seed)
        return VideoResult(video_path, metadata_path, image_path, request.seed, record)

    def _record(self, request: GenerationRequest, video_path: Path, image_path: Path) -> dict[str, Any]:
        status = self.engine.status
        return {
            "app": "Image-to-Video",
            "app_version": __version__,
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "video": video_path.name,
            "input_image": image_path.name,
            "parameters": request.parameters(),
            "model": {
                "source": self.engine.model_path,
                "revision": self.engine.model_revision,
                "variant": self.config.model.variant,
                "demo": status.is_demo,
                "device": status.device,
            },
            "versions": {"python": platform.python_version(), **_package_versions()},
        }

    def delete_video(self, name: str) -> bool:
        """Delete one video of the output folder, with its record and input image."""
        if not _VIDEO_NAME.fullmatch(Path(name).stem):
            raise InvalidInput(key="err_video_gone")
        video = self.output_dir / f"{Path(name).stem}.mp4"
        if not video.is_file():
            return False
        _remove_video(video)
        log.info("Deleted %s", video.name)
        return True

    def find_video(self, name: str) -> dict[str, Any] | None:
        """The record of one video of the output folder (with its paths), or None."""
        stem = Path(name).stem
        return _read_record(self.output_dir / f"{stem}.mp4") if _VIDEO_NAME.fullmatch(stem) else None

    def history(self, limit: int = 24) -> list[dict[str, Any]]:
        """Records of the newest videos in the output folder, newest first."""
        records = []
        for path in sorted(self.output_dir.glob("video_*.json"), reverse=True):
            record = _read_record(path.with_suffix(".mp4"))
            if record:
                records.append(record)
            if len(records) >= limit:
                break
        return records


_VIDEO_NAME = re.compile(r"video_\d{8}_\d{6}_[0-9a-f]{8}")


def out_of_memory_error(request: GenerationRequest, resolutions: Mapping[str, int]) -> OutOfMemory:
    """What to lower, and by how much: the next resolution down, else fewer frames."""
    smaller = sorted((side, name) for name, side in resolutions.items() if side < request.width)
    if smaller:
        side, name = smaller[-1]
        return OutOfMemory(key="err_oom_resolution", resolution=request.resolution, frames=request.num_frames,
                           lower=name, saving=f"{1 - (side / request.width) ** 2:.0%}")
    return OutOfMemory(key="err_oom_frames", resolution=request.resolution, frames=request.num_frames,
                       fewer=max(2, request.num_frames // 2))


def _read_record(video: Path) -> dict[str, Any] | None:
    """A video's JSON record with its paths added, or None if either file is missing or unreadable."""
    if not video.is_file():
        return None
    try:
        record = json.loads(video.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    image = video.with_name(f"{video.stem}_input.png")
    return {**record, "video_path": str(video), "image_path": str(image) if image.is_file() else None}


def _companions(video: Path) -> list[Path]:
    """A video and the files written beside it."""
    return [p for p in (video, video.with_suffix(".json"), video.with_name(video.stem + "_input.png"))
            if p.exists()]


def _remove_video(video: Path) -> None:
    for path in _companions(video):
        path.unlink(missing_ok=True)


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
