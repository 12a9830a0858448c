"""How much GPU memory and time a video will take, before it starts.

Nothing here is measured with this app on a GPU yet (issue 6 will replace these
numbers with a measured table), so every figure shown is labelled an estimate:

* Memory: a straight line through the peak memory that users of the app we
  replace report on an RTX 4090 (SEED_APP.md: 512p/16 frames 13.6 GB, 768p/24
  17.8 GB, 1024p/32 21.9 GB), in "512p-frame units" (frames x (side / 512)^2).
* Time: the compute cost (STACK.md, counted with torch's FlopCounterMode on the
  real UNet: 41.9 TFLOP per 512p/16-frame step with guidance, growing as
  pixels^1.18; VAE decode 2.5 TFLOP per 512p frame), divided by the rate that
  the same users' 40-60 s per 512p/16/50 video implies (about 42 TFLOP/s). On
  the demo model the rate is the one measured here (bench/demo_speed.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
#: The fp16 weights of all components (STACK.md), included in the peak above.
WEIGHTS_GB = 4.97
#: Leave this share of the GPU's memory free (CUDA context, fragmentation).
HEADROOM = 0.92


@dataclass(frozen=True)
class Estimate:
    peak_gb: float
    seconds: float
    #: The GPU's memory, when known; None on a CPU.
    gpu_gb: float | None

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


def estimate(side: int, frames: int, steps: int, *, gpu_gb: float | None, demo: bool) -> Estimate:
    """Peak GPU memory of the real model, and the time per video on this machine's kind of device."""
    tflop = compute_tflop(side, frames, steps)
    if demo:
        rate = compute_tflop(512, 16, 50) / DEMO_SECONDS_512_16_50
    else:
        rate = RTX4090_TFLOPS
    return Estimate(peak_gb=peak_memory_gb(side, frames), seconds=tflop / rate, gpu_gb=gpu_gb)


def nearest_fitting(resolutions: Mapping[str, int], frames_range: tuple[int, int], resolution: str,
                    frames: int, gpu_gb: float) -> tuple[str, int] | None:
    """The setting closest to (resolution, frames) that fits in ``gpu_gb``: fewer frames at the
    same resolution first, else the next resolution down. None if nothing fits."""
    budget = gpu_gb * HEADROOM
    by_side = sorted(resolutions.items(), key=lambda item: item[1], reverse=True)
    start = [name for name, _ in by_side].index(resolution)
    for name, side in by_side[start:]:
        for count in range(min(frames, frames_range[1]), frames_range[0] - 1, -1):
            if peak_memory_gb(side, count) <= budget:
                return name, count
    return None
