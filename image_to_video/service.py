"""From a validated request to a finished video on disk: generate, encode, record.

``VideoService.make_video`` runs one request on the engine (one at a time) and writes
the normalised input image and a JSON record with everything needed to make the video
again, then the video: its rename into place is the last step, so a video on disk always
has its record (a crash before leaves companions that ``OutputFolder.clean_temporary_files``
removes at start). Where those files go and what they are called is the output
folder's business (``outputs.py``); the job queue (``worker.py``) calls this.
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
from .config import ModelSettings
from .outputs import OutputFolder, VideoFiles
from .progress import Progress, ProgressFn, ignore
from .request import GenerationRequest
from .video import write_video

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
    """Makes one video at a time with ``engine`` and keeps it in ``outputs``.

    ``engine`` is anything with the engine's ``generate``, ``status``, ``model_path`` and
    ``model_revision``; ``model`` gives the weights' variant for the record; ``faults`` (tests
    only, a ``faults.FaultInjector``) may fail the ``commit`` stage, just before the video's rename.
    """

    def __init__(self, engine, outputs: OutputFolder, model: ModelSettings, *, faults=None):
        self.engine = engine
        self.outputs = outputs
        self.model = model
        self.faults = faults
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
        return result

    def _run(self, request: GenerationRequest, report: ProgressFn, cancel: threading.Event) -> VideoResult:
        started = time.perf_counter()
        result = self.engine.generate(request, progress=report, cancel=cancel)
        files = self.outputs.new_video()
        record = self._record(request, files)
        report(Progress("encoding", 0, 1, 0.0, None))
        encode_started = time.perf_counter()

        def commit(info) -> None:
            """The picture and the record, each atomically, while the checked video waits to be renamed."""
            result.timings["encode_s"] = time.perf_counter() - encode_started
            result.timings["total_s"] = time.perf_counter() - started
            record.update(
                video_info={**asdict(info), "duration_s": info.duration},
                timings_s={k.removesuffix("_s"): round(v, 3) for k, v in result.timings.items()},
                peak_gpu_memory_gb=None if result.peak_gpu_memory_gb is None else round(result.peak_gpu_memory_gb, 3),
                peak_process_memory_gb=round(_peak_rss_gb(), 3),
            )
            self.outputs.save_input_image(request.image, files)
            self.outputs.save_record(record, files)
            if self.faults is not None:
                self.faults.trip("commit")

        try:
            write_video(result.frames, files.video, request.fps, comment=json.dumps(record, default=str),
                        before_commit=commit)
        except BaseException:
            self.outputs.remove_companions(files)  # no video: no record or picture of one either
            raise
        report(Progress("encoding", 1, 1, result.timings["encode_s"], 0.0))
        log.info("Wrote %s in %.1f s (seed %d)", files.video.name, result.timings["total_s"], request.seed)
        return VideoResult(files.video, files.record, files.input_image, request.seed, record)

    def _record(self, request: GenerationRequest, files: VideoFiles) -> dict[str, Any]:
        status = self.engine.status
        return {
            "app": "Image-to-Video",
            "app_version": __version__,
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "video": files.video.name,
            "input_image": files.input_image.name,
            "parameters": request.parameters(),
            "model": {
                "source": self.engine.model_path,
                "revision": self.engine.model_revision,
                "variant": self.model.variant,
                "demo": status.is_demo,
                "device": status.device,
            },
            "versions": {"python": platform.python_version(), **_package_versions()},
            "deterministic": determinism(self.model, getattr(self.engine, "device", None)),
        }


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
