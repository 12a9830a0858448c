"""How much GPU memory and time a video will take, before it starts.

Once ``bench/speed.py --scaling --out docs/performance-gpu.json`` has run on a GPU
(docs/PERFORMANCE.md), its measured peak memory per resolution and frames is used,
and its time per step and decoding on that same GPU model; the page says
"measured". Until then, and for sizes or GPUs the table does not cover, every
figure is computed as below and labelled an estimate:

* Memory: a straight line through the peak memory that users of the app we
  replace report on an RTX 4090 (docs/DEPENDENCIES.md: 512p/16 frames 13.6 GB, 768p/24
  17.8 GB, 1024p/32 21.9 GB), in "512p-frame units" (frames x (side / 512)^2).
* Time: the compute cost (docs/DEPENDENCIES.md, counted with torch's FlopCounterMode on the
  real UNet: 41.9 TFLOP per 512p/16-frame step with guidance, growing as
  pixels^1.18; VAE decode 2.5 TFLOP per 512p frame), divided by the rate that
  the same users' 40-60 s per 512p/16/50 video implies (about 42 TFLOP/s). On
  the demo model the rate is the one measured here (bench/demo_speed.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

# Peak GB = BASE + PER_UNIT x frames x (side / 512)^2, fitted to the three reported points.
BASE_GB = 13.0
PER_UNIT_GB = 0.072
# Compute: TFLOP for one denoising step (batch 2) and for decoding one frame, at 512p/16 frames.
STEP_TFLOP_512_16 = 41.9
DECODE_TFLOP_512 = 2.5
PIXEL_EXPONENT = 1.18
# Effective TFLOP/s: the reported RTX 4090 time, and the demo model measured on a 2-core CPU
# (28 s for 512p/16/50, scaled to the real model's FLOP count so the same formula applies).
RTX4090_TFLOPS = 42.0
DEMO_SECONDS_512_16_50 = 28.0
#: The fp16 weights of all components (docs/DEPENDENCIES.md, "The real model's shapes"), included in the peak above.
WEIGHTS_GB = 4.97
#: Leave this share of the GPU's memory free (CUDA context, fragmentation).
HEADROOM = 0.92


#: The benchmark's output on a GPU, when it has been run (docs/PERFORMANCE.md).
MEASURED_FILE = Path(__file__).resolve().parent.parent / "docs" / "performance-gpu.json"


@dataclass(frozen=True)
class MeasuredTable:
    """The engine's peak memory and step time per (side, frames), measured on ``gpu`` by bench/speed.py."""

    gpu: str
    rows: dict = field(default_factory=dict)  # (side, frames) -> the bench's scaling row

    @classmethod
    def load(cls, path: Path = MEASURED_FILE) -> MeasuredTable | None:
        """The table in ``path``; None without one, or when it was not measured on the real shapes on a GPU."""
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(report, dict) or report.get("shapes") != "real":
            return None
        rows = {(r["resolution"], r["frames"]): r for r in report.get("scaling", [])
                if isinstance(r, dict) and r.get("peak_gpu_gb")}
        return cls(gpu=str(report.get("machine", "")).split(",")[0], rows=rows) if rows else None

    def _along_frames(self, side: int, frames: int, value: Callable[[dict], float]) -> float | None:
        """The row's value, or a straight line through the two nearest measured frame counts at ``side``."""
        if (side, frames) in self.rows:
            return value(self.rows[(side, frames)])
        known = sorted((count, value(row)) for (s, count), row in self.rows.items() if s == side)
        if len(known) < 2:
            return None
        (f0, v0), (f1, v1) = sorted(known, key=lambda item: abs(item[0] - frames))[:2]
        return v0 + (v1 - v0) * (frames - f0) / (f1 - f0)

    def peak_gb(self, side: int, frames: int) -> float | None:
        return self._along_frames(side, frames, lambda row: row["peak_gpu_gb"])

    def seconds(self, side: int, frames: int, steps: int) -> float | None:
        step = self._along_frames(side, frames, lambda row: row["unet_s_per_step"])
        decode = self._along_frames(side, frames, lambda row: row["decode_s"])
        return None if step is None or decode is None else steps * step + decode


@functools.cache
def measured_table() -> MeasuredTable | None:
    return MeasuredTable.load()


@dataclass(frozen=True)
class Estimate:
    peak_gb: float
    seconds: float
    #: The GPU's memory, when known; None on a CPU.
    gpu_gb: float | None
    #: The GPU the peak memory was measured on, when it was; the time likewise (on this GPU model only).
    peak_measured_on: str | None = None
    time_measured_on: str | None = None

    @property
    def fits(self) -> bool:
        return self.gpu_gb is None or self.peak_gb <= self.gpu_gb * HEADROOM


def units(side: int, frames: int) -> float:
    return frames * (side / 512) ** 2


def peak_memory_gb(side: int, frames: int) -> float:
    return BASE_GB + PER_UNIT_GB * units(side, frames)


def working_memory_gb(side: int, frames: int) -> float:
    """GPU memory a video needs beyond the weights (activations, latents, decoding)."""
    return peak_memory_gb(side, frames) - WEIGHTS_GB


def compute_tflop(side: int, frames: int, steps: int) -> float:
    step = STEP_TFLOP_512_16 * (side / 512) ** (2 * PIXEL_EXPONENT) * frames / 16
    return steps * step + DECODE_TFLOP_512 * (side / 512) ** 2 * frames


def estimate(side: int, frames: int, steps: int, *, gpu_gb: float | None, demo: bool,
             gpu_name: str | None = None, measured: MeasuredTable | None = None) -> Estimate:
    """Peak GPU memory of the real model, and the time per video on this machine's kind of device:
    measured where the table (``measured``, else docs/performance-gpu.json) covers it, else computed."""
    tflop = compute_tflop(side, frames, steps)
    if demo:
        rate = compute_tflop(512, 16, 50) / DEMO_SECONDS_512_16_50
    else:
        rate = RTX4090_TFLOPS
    result = Estimate(peak_gb=peak_memory_gb(side, frames), seconds=tflop / rate, gpu_gb=gpu_gb)
    table = None if demo else (measured or measured_table())
    if table is None:
        return result
    peak = table.peak_gb(side, frames)
    if peak is not None:
        result = replace(result, peak_gb=peak, peak_measured_on=table.gpu)
    seconds = table.seconds(side, frames, steps) if gpu_name and gpu_name == table.gpu else None
    if seconds is not None:
        result = replace(result, seconds=seconds, time_measured_on=table.gpu)
    return result


def nearest_fitting(resolutions: Mapping[str, int], frames_range: tuple[int, int], resolution: str,
                    frames: int, gpu_gb: float, measured: MeasuredTable | None = None) -> tuple[str, int] | None:
    """The setting closest to (resolution, frames) that fits in ``gpu_gb``: fewer frames at the
    same resolution first, else the next resolution down. None if nothing fits."""
    by_side = sorted(resolutions.items(), key=lambda item: item[1], reverse=True)
    start = [name for name, _ in by_side].index(resolution)
    for name, side in by_side[start:]:
        for count in range(min(frames, frames_range[1]), frames_range[0] - 1, -1):
            if estimate(side, count, 1, gpu_gb=gpu_gb, demo=False, measured=measured).fits:
                return name, count
    return None
