"""From a user's inputs to a finished video on disk: validate, generate, encode, record.

``VideoService`` is what the page (and later the API and command line) calls. It
validates every input before touching the GPU, runs one job at a time, writes the
video, the normalised input image and a JSON record with everything needed to
reproduce the video, and lists past results.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .config import AppConfig
from .engine import Engine, Progress, ProgressFn
from .errors import InvalidInput, ModelUnavailable
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
        self._active: dict[str, threading.Event] = {}
        self._active_lock = threading.Lock()
        self._closing = False

    @property
    def busy(self) -> bool:
        """True while a job is waiting for or using the GPU."""
        with self._active_lock:
            return bool(self._active)

    def generate(self, image: Any, prompt: Any, *, owner: str = "local",
                 progress: ProgressFn | None = None, **params: Any) -> VideoResult:
        """Validate, generate and save one video for ``owner`` (a browser session or a client).

        ``params`` are the request's optional fields (resolution, num_frames, fps,
        num_inference_steps, guidance_scale, negative_prompt, seed). Raises an
        ``AppError`` subclass with a message for the user on any expected failure.
        """
        request = build_request(self.config, image=image, prompt=prompt, **params)
        cancel = self._claim(owner)
        try:
            with self._gpu:
                return self._run(request, progress or (lambda _: None), cancel)
        finally:
            with self._active_lock:
                self._active.pop(owner, None)

    def cancel(self, owner: str) -> bool:
        """Ask ``owner``'s running job to stop at its next step. True if there was one."""
        with self._active_lock:
            event = self._active.get(owner)
        if event:
            event.set()
        return event is not None

    def shutdown(self, grace_s: float) -> None:
        """Take no new jobs; give running ones ``grace_s`` seconds, then cancel them."""
        self._closing = True
        if self._wait_idle(grace_s):
            return
        with self._active_lock:
            events = list(self._active.values())
        log.warning("Cancelling %d unfinished job(s) to shut down", len(events))
        for event in events:
            event.set()
        self._wait_idle(30)

    def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.busy

    def _claim(self, owner: str) -> threading.Event:
        with self._active_lock:
            if self._closing:
                raise ModelUnavailable("The server is shutting down; try again in a minute.")
            if owner in self._active:
                raise InvalidInput("A video is already being made for you; wait for it to finish "
                                   "or press Cancel before starting another.")
            event = self._active[owner] = threading.Event()
            return event

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

    def history(self, limit: int = 24) -> list[dict[str, Any]]:
        """Records of the newest videos in the output folder, newest first."""
        records = []
        for path in sorted(self.output_dir.glob("video_*.json"), reverse=True):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            video = path.with_suffix(".mp4")
            if video.is_file():
                records.append({**record, "video_path": str(video)})
            if len(records) >= limit:
                break
        return records


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
