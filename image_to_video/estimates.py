"""How much GPU memory and time a video will take, before it starts.

Once ``bench/speed.py --scaling --out docs/performance-gpu.json`` has run on a GPU
(docs/PERFORMANCE.md), its measured peak memory per resolution and frames is used,
and its time per step and decoding on that same GPU model; the page says
"measured". Until then, and for sizes or GPUs the table does not cover, every
figure is computed as below and labelled an estimate:

* Memory: traced from the real model's shapes (``memory_trace``, docs/memory-traced.json: each
  stage's working memory per size, frames, guidance batch and decode chunk, with the
  memory-efficient attention kernels), plus the weights each memory mode keeps on the GPU in
  that stage, plus a margin (``MARGIN_SHARE``, ``MARGIN_GB``) for what a trace cannot see. A VAE in
  half precision may decode a chunk to NaN or inf, and then decodes it again one frame at a time in
  float32 (its weights too): that redo is one more stage. Fused QKV projections (``model.fuse_qkv``)
  keep the UNet's ``to_q/k/v`` beside the fused ``to_qkv``: more UNet weights.
  ``memory_needs_gb`` gives each mode's peak; the page shows the all-on-GPU one.
* Time: the compute cost (docs/DEPENDENCIES.md, counted with torch's FlopCounterMode on the
  real UNet: 41.9 TFLOP per 512p/16-frame step with guidance, growing as
  pixels^1.18; VAE decode 2.5 TFLOP per 512p frame), divided by the rate that
  the same users' 40-60 s per 512p/16/50 video implies (about 42 TFLOP/s). On
  the demo model the rate is the one measured here (bench/demo_speed.py).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import ModelSettings

# Compute: TFLOP for one denoising step (batch 2) and for decoding one frame, at 512p/16 frames.
STEP_TFLOP_512_16 = 41.9
DECODE_TFLOP_512 = 2.5
PIXEL_EXPONENT = 1.18
# Effective TFLOP/s: the reported RTX 4090 time, and the demo model measured on a 2-core CPU
# (28 s for 512p/16/50, scaled to the real model's FLOP count so the same formula applies).
RTX4090_TFLOPS = 42.0
DEMO_SECONDS_512_16_50 = 28.0
#: Leave this share of the GPU's total memory free (the CUDA context, about 0.3-0.5 GB, is outside the trace).
HEADROOM = 0.92
#: Added to each stage's traced working memory: the allocator's fragmentation (a share of it) and the
#: cuDNN/cuBLAS workspaces and 2 MB block rounding (fixed), which the trace does not see (docs/PERFORMANCE.md).
MARGIN_SHARE = 0.15
MARGIN_GB = 0.75
#: The memory modes, fastest first (``gpu`` keeps everything on the GPU; docs in ``gpu``).
MEMORY_MODES = ("gpu", "model_offload", "group_offload", "sequential_offload")
#: The frames the VAE decodes at once unless ``model.decode_chunk_size`` says otherwise.
DEFAULT_DECODE_CHUNK = ModelSettings.decode_chunk_size


#: The benchmark's output on a GPU, when it has been run (docs/PERFORMANCE.md).
MEASURED_FILE = Path(__file__).resolve().parent.parent / "docs" / "performance-gpu.json"
#: The memory traced from the real model's shapes (``python -m image_to_video.memory_trace``).
TRACED_FILE = MEASURED_FILE.with_name("memory-traced.json")


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


def _line(points: list[tuple[float, float]], x: float) -> float:
    """The value at ``x`` on the straight line through the two points nearest to it (one point: its value)."""
    nearest = sorted(points, key=lambda point: (abs(point[0] - x), point[0]))[:2]
    if len(nearest) == 1 or nearest[0][0] == nearest[1][0]:
        return nearest[0][1]
    (x0, y0), (x1, y1) = nearest
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class TracedTable:
    """docs/memory-traced.json: each stage's working memory (GB, weights not included) as traced from the
    model's shapes. Between the traced frame counts and decode chunks a straight line; between sides a
    straight line in pixels (side^2), which activations grow with."""

    report: dict

    @classmethod
    def load(cls, path: Path = TRACED_FILE) -> TracedTable:
        try:
            return cls(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            raise RuntimeError(f"Cannot read the traced memory table {path} ({error}): "
                               "run python -m image_to_video.memory_trace to write it again.") from error

    shapes = property(lambda self: self.report["shapes"])
    #: GB of each component's weights in float16, counted from the traced shapes.
    weights_gb = property(lambda self: dict(self.report["weights_gb"]))
    #: The share of the UNet's weights on the GPU at once under group offload.
    unet_group_share = property(lambda self: self.report["unet_group_offload_share"])
    #: The UNet's weights that fused QKV projections add (``to_qkv``, ``to_kv``), as a share of its own.
    unet_fused_qkv_share = property(lambda self: self.report["unet_fused_qkv_share"])

    def _by_side(self, side: int, value_at: Callable[[int], float]) -> float:
        sides = sorted({row["side"] for row in self.report["rows"]})
        return _line([(known ** 2, value_at(known)) for known in sides], side ** 2)

    def denoise_gb(self, side: int, frames: int, *, batch: int) -> float:
        """One UNet call at ``batch`` (2 with guidance, 1 without)."""
        def at(known: int) -> float:
            return _line([(row["frames"], row["denoise_gb"][str(batch)]) for row in self.report["rows"]
                          if row["side"] == known], frames)
        return self._by_side(side, at)

    def decode_gb(self, side: int, chunk: int) -> float:
        """Decoding ``chunk`` frames at once."""
        return self._by_side(side, lambda known: _line(
            [(int(count), gb) for count, gb in self.report["decode_gb"][str(known)].items()], chunk))

    def decode_fp32_gb(self, side: int) -> float:
        """Decoding one frame with the VAE in float32: the redo of a chunk that came out NaN or inf."""
        return self._by_side(side, lambda known: self.report["decode_fp32_gb"][str(known)])

    def stages(self, side: int, frames: int, *, batch: int, chunk: int) -> list[tuple[tuple[str, ...], float]]:
        """Each stage of a video: (the components it runs with the offload modes' hooks on the GPU,
        its working memory). The VAE stays on the GPU once used: no hook moves it off again."""
        encoders = self.report["encoders_gb"]
        picture = self._by_side(side, lambda known: self.report["encode_image_gb"][str(known)])
        return [(("text_encoder", "vae"), encoders["text_encoder"]),
                (("image_encoder", "vae"), max(encoders["image_encoder"], picture)),
                (("unet", "vae"), self.denoise_gb(side, frames, batch=batch)),
                (("vae",), self.decode_gb(side, chunk))]


@functools.cache
def traced_table() -> TracedTable:
    return TracedTable.load()


def with_margin(work_gb: float) -> float:
    return work_gb * (1 + MARGIN_SHARE) + MARGIN_GB


def memory_needs_gb(side: int, frames: int, *, batch: int = 2, chunk: int = DEFAULT_DECODE_CHUNK,
                    sizes_gb: Mapping[str, float] | None = None, table: TracedTable | None = None,
                    fused_qkv: bool = False, half_vae: bool = True) -> dict[str, float]:
    """GB each memory mode needs at its peak for one video, fastest mode first: per stage, the weights
    the mode keeps on the GPU then (``sizes_gb``, default the traced model's) plus the stage's traced
    working memory with its margin. Sequential offload keeps about one layer's weights there (counted as none).
    ``fused_qkv``: the UNet's fused projections beside its own. ``half_vae``: the VAE computes in half
    precision, so the float32 redo of a chunk (one frame at a time, the VAE's weights twice their size
    while it runs) is a stage too."""
    table = table or traced_table()
    sizes = dict(sizes_gb or table.weights_gb)
    if fused_qkv:
        sizes["unet"] = sizes.get("unet", 0.0) * (1 + table.unet_fused_qkv_share)

    def on_gpu(mode: str, parts: tuple[str, ...]) -> float:
        if mode == "gpu":
            return sum(sizes.values())
        if mode == "sequential_offload":
            return 0.0
        share = table.unet_group_share if mode == "group_offload" else 1.0
        return sum(sizes.get(part, 0.0) * (share if part == "unet" else 1.0) for part in parts)

    stages = [(parts, 0.0, work) for parts, work in table.stages(side, frames, batch=batch, chunk=chunk)]
    if half_vae:  # the float32 weights: one more half-precision VAE's worth beside them (none in sequential offload)
        stages.append((("vae",), sizes.get("vae", 0.0), table.decode_fp32_gb(side)))
    return {mode: max(on_gpu(mode, parts) + (extra if mode != "sequential_offload" else 0.0) + with_margin(work)
                      for parts, extra, work in stages) for mode in MEMORY_MODES}


@dataclass(frozen=True)
class Estimate:
    peak_gb: float
    seconds: float
    #: The GPU's memory, when known; None on a CPU.
    gpu_gb: float | None
    #: The GPU the peak memory was measured on, when it was; the time likewise (on this GPU model only).
    peak_measured_on: str | None = None
    time_measured_on: str | None = None
    #: How many jobs made on this machine the time was learned from (0: not learned yet).
    learned_jobs: int = 0

    @property
    def fits(self) -> bool:
        return self.gpu_gb is None or self.peak_gb <= self.gpu_gb * HEADROOM


def peak_memory_gb(side: int, frames: int) -> float:
    """The peak with everything on the GPU, with guidance (batch 2), decoding the default chunk."""
    return memory_needs_gb(side, frames)["gpu"]


def compute_tflop(side: int, frames: int, steps: int) -> float:
    step = STEP_TFLOP_512_16 * (side / 512) ** (2 * PIXEL_EXPONENT) * frames / 16
    return steps * step + DECODE_TFLOP_512 * (side / 512) ** 2 * frames


def estimate(side: int, frames: int, steps: int, *, gpu_gb: float | None, demo: bool,
             gpu_name: str | None = None, measured: MeasuredTable | None = None, plan: Plan | None = None,
             learned: LearnedTimes | None = None, key: str | None = None) -> Estimate:
    """Peak GPU memory of the real model, and the time per video on this machine's kind of device:
    learned from the jobs made here (``learned``, the table ``key``) once one ran, else measured where the
    table (``measured``, else docs/performance-gpu.json) covers it, else computed. With a ``plan`` the time
    is the whole job's: its segments and finishing steps too, scaled to the output frames and size."""
    steps = steps * plan.passes / 2 if plan is not None else steps  # steps of two passes (with guidance)
    result = _model_estimate(side, frames, steps, gpu_gb=gpu_gb, demo=demo, gpu_name=gpu_name, measured=measured)
    if plan is None:
        return result
    result = replace(result, seconds=result.seconds * plan.segments + finishing_seconds(plan))
    seconds = learned.seconds(key, plan) if learned is not None and key else None
    if seconds is not None:
        result = replace(result, seconds=seconds, learned_jobs=learned.jobs(key))
    return result


def _model_estimate(side: int, frames: int, steps: int, *, gpu_gb: float | None, demo: bool,
                    gpu_name: str | None = None, measured: MeasuredTable | None = None) -> Estimate:
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


# -- Times learned on this machine ------------------------------------------------------------------

#: The finishing steps' cost before this machine has measured them: seconds for 16 frames of 512x512
#: output, measured on a 2-core CPU (docs/PERFORMANCE.md); scaled by output frames x pixels.
FINISHING_SECONDS_512_16 = {"joining": 0.1, "looping": 0.1, "interpolating": 4.0, "upscaling": 0.5,
                            "encoding": 0.5, "gif": 3.0, "webm": 1.0, "png": 0.5}
#: Of the steps timed per job (``timings_s``), those done on the model's frames and those on the output's.
_MODEL_STEPS = ("denoise", "decode")
_UNIT = 512 * 512 * 16  # pixels x frames of one unit of work
#: How much a new measurement weighs against what was learned before (an exponential average).
LEARN_WEIGHT = 0.5
#: The file in the state folder.
LEARNED_FILE = "learned_times.json"


def machine_key(model: str, *, demo: bool, gpu_name: str | None) -> str:
    """Which table a job's times go to: this machine, its device (the GPU's name, else the CPU) and the model."""
    import platform

    return "|".join((platform.node() or "this-machine", gpu_name or "cpu", model + (" (demo)" if demo else "")))


@dataclass(frozen=True)
class Plan:
    """What one job will do, for its time: the model's work and the finishing steps on the output frames."""

    width: int
    height: int
    frames: int
    steps: int
    segments: int = 1
    #: The frames and size of the finished video, and the finishing steps (``FINISHING_SECONDS_512_16`` names).
    output_frames: int = 0
    output_pixels: int = 0
    finishing: tuple[str, ...] = ("encoding",)
    #: The model's passes per step: 2 with guidance (the prompt and the negative prompt), 1 at guidance 1,
    #: where the pipelines skip the second (a Fast preset's distilled steps).
    passes: int = 2

    def unit(self) -> float:
        return self.width * self.height * self.frames / _UNIT

    def output_unit(self) -> float:
        return (self.output_pixels or self.width * self.height) * (self.output_frames or self.frames) / _UNIT


def plan_of(width: int, height: int, frames: int, steps: int, *, segments=1, loop="none", interpolate_fps=0,
            fps=8, formats="mp4", upscale=1, continued_frames: int = 0, guidance=None) -> Plan:
    """The work of a request with these settings (as the page's form or a record's parameters give them);
    ``guidance`` 1 or below: one pass of the model per step (diffusers' pipelines guide only above 1)."""
    segments = max(1, int(segments or 1))
    # as request.finished_frames counts them: each later part without its seam frame, then the loop
    total = (continued_frames + segments * (frames - 1)) if continued_frames else frames + (segments - 1) * (frames - 1)
    done = ["encoding"]
    if segments > 1 or continued_frames:
        done.append("joining")
    if loop in ("boomerang", "crossfade"):
        done.append("looping")
        total = 2 * total - 2 if loop == "boomerang" else total - max(2, total // 4)
    interpolate_fps = int(interpolate_fps or 0)
    if interpolate_fps and fps and interpolate_fps > int(fps):
        done.append("interpolating")
        total = int(round(total * interpolate_fps / int(fps)))
    scale = int(upscale or 1)
    if scale > 1:
        done.append("upscaling")
    names = [f.strip().lower() for f in str(formats or "mp4").split(",")] if not isinstance(formats, (list, tuple)) \
        else [str(f).lower() for f in formats]
    done += [name for name in ("gif", "webm", "png") if name in names]
    passes = 1 if guidance is not None and float(guidance) <= 1 else 2
    return Plan(width, height, frames, steps, segments, total, width * height * scale * scale, tuple(done), passes)


def plan_of_record(record: Mapping) -> Plan | None:
    """The work a finished video's record describes (its parameters and what it delivered); None if unreadable."""
    try:
        p = record["parameters"]
        plan = plan_of(int(p["width"]), int(p["height"]), int(p["num_frames"]), int(p["num_inference_steps"]),
                       segments=p.get("segments", 1), loop=p.get("loop", "none"),
                       interpolate_fps=p.get("interpolate_fps", 0), fps=p.get("fps", 8),
                       formats=p.get("formats", "mp4"), upscale=p.get("upscale", 1),
                       guidance=p.get("guidance_scale"))
        info = record.get("video_info") or {}
        if info.get("frames") and info.get("width") and info.get("height"):
            plan = replace(plan, output_frames=int(info["frames"]),
                           output_pixels=int(info["width"]) * int(info["height"]))
        return plan
    except (KeyError, TypeError, ValueError):
        return None


class LearnedTimes:
    """Seconds per unit of work measured on this machine, per device and model, kept in a small JSON file in
    the state folder (``LEARNED_FILE``) and updated after each job (``learn``): the model's seconds per
    denoising step and for decoding per 512x512x16 pixel-frames, each finishing step's seconds per
    512x512x16 output pixel-frames, and what else a job took (loading, writing files) in seconds.
    ``seconds`` is None until a job of this model ran on this device here."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def table(self, key: str) -> dict | None:
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) else None

    def learn(self, key: str, record: Mapping) -> None:
        """Take a finished job's times (its record's ``timings_s``) into the table of ``key``."""
        plan = plan_of_record(record)
        timings = record.get("timings_s") or {}
        if plan is None or not isinstance(timings, Mapping) or not timings.get("total"):
            return
        segments = plan.segments
        measured: dict[str, float] = {}
        if timings.get("denoise") is not None and plan.steps:
            # per step of two passes (with guidance): a job at guidance 1 did half the work a step
            measured["denoise"] = float(timings["denoise"]) / (plan.steps * plan.passes / 2 * segments * plan.unit())
        if timings.get("decode") is not None:
            measured["decode"] = float(timings["decode"]) / (segments * plan.unit())
        for stage in FINISHING_SECONDS_512_16:
            value = timings.get(stage if stage != "encoding" else "encode")
            if value is not None:
                measured[stage] = float(value) / max(plan.output_unit(), 1e-9)
        known = sum(float(timings.get(k) or 0) for k in ("denoise", "decode", "encode", *FINISHING_SECONDS_512_16))
        measured["other"] = max(0.0, float(timings["total"]) - known)
        with self._lock:
            data = self._read()
            entry = data.get(key) if isinstance(data.get(key), dict) else {}
            for name, value in measured.items():
                old = entry.get(name)
                entry[name] = round(value if old is None else (1 - LEARN_WEIGHT) * old + LEARN_WEIGHT * value, 6)
            entry["jobs"] = int(entry.get("jobs", 0)) + 1
            data[key] = entry
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                tmp.replace(self.path)
            except OSError:
                pass  # a read-only state folder: the estimates keep their figures

    def seconds(self, key: str, plan: Plan) -> float | None:
        """The learned time of ``plan`` on this machine, device and model; None before its first job."""
        entry = self.table(key)
        if not entry or "denoise" not in entry:
            return None
        return model_seconds(entry, plan) + finishing_seconds(plan, entry) + float(entry.get("other", 0.0))

    def jobs(self, key: str) -> int:
        return int((self.table(key) or {}).get("jobs", 0))


def model_seconds(entry: Mapping, plan: Plan) -> float:
    return plan.segments * plan.unit() * (plan.steps * plan.passes / 2 * float(entry["denoise"])
                                          + float(entry.get("decode", 0.0)))


def finishing_seconds(plan: Plan, learned: Mapping | None = None) -> float:
    """The finishing steps of ``plan``: learned per output pixel-frame where measured, else the figures
    measured at 512p/16 frames (``FINISHING_SECONDS_512_16``), scaled to the output frames x pixels."""
    learned = learned or {}
    return sum(float(learned.get(stage, FINISHING_SECONDS_512_16[stage])) * plan.output_unit()
               for stage in plan.finishing)
