"""Every GPU measurement the project needs, in one call of under 9 minutes: what ``bench/gpu_run.sh`` runs.

    bash bench/gpu_run.sh --out $OUT/performance-gpu.json   # a lent H100/H200 (device tool, .whl/ carried)
    bash bench/gpu_run.sh --smoke [--out FILE]              # any CPU: CI-sized models, well under a minute
    bash bench/gpu_run.sh check                             # only the import check

No download and no network: random weights with the real models' shapes (I2VGen-XL:
families/i2vgen_xl/shapes.py; Wan 2.2 TI2V-5B: the shape builders of families/wan/memory.py), written
to a temporary folder and read back by the real loading code. Random weights cost the same time and
memory as trained ones. ``--smoke`` runs every part the same way on the CPU with the SMOKE shapes of
I2VGen-XL and the tiny TI2V-5B layout of families/wan/demo.py.

The parts, in the order they run (the JSON lists them by number). Each has a time budget on one
H100 (its sub-steps stop starting when it is spent) and a minimum: with less than that left of the
run's time limit (``--time-limit``, 530 s from the start of gpu_run.sh) it is skipped, with a note.
Each writes its numbers into the JSON as soon as it has them, so a run cut off keeps them; at the
limit a watchdog marks what was running as cut off, writes the JSON and ends the run (exit 4).

  1 speed               budget 130 s, min 50: 512x512, 16 frames, 50 steps, seconds per video, plain
                        diffusers against the app's engine (same DDIM scheduler, decode chunk 4, seed,
                        float16), after an untimed warm-up, torch.cuda.synchronize around each timing
  2 memory_modes        budget 90 s, min 30: peak memory allocated and reserved in gpu, model_offload,
                        group_offload and sequential_offload (the same engine, switched as the app does)
  3 cold_start          budget 60 s, min 25: a new process until the engine is ready, the weights evicted
                        from the page cache first (posix_fadvise, no root needed; checked with mincore),
                        then once more warm
  6 wan_ti2v_5b_720p    budget 200 s, min 100: 1 and 2 for Wan 2.2 TI2V-5B at 1280x704, 49 frames,
                        4 steps (modes: 2 steps) through the app's Wan family code, bfloat16, VAE float32
  5 two_workers         budget 150 s, min 100: jobs per minute with 2 app workers on 2 GPUs against 1;
                        skipped with fewer than two GPUs
  4 compile_step_down   the rest, min 90: model.compile on, warmed in gpu mode; a job that runs out of
                        memory (injected) steps down to model_offload: does the warmed shape compile
                        again inside the job? (dynamo's graph counter and its recompile log; a separate
                        process, stopped at the time limit with what it saw)

A part that fails records its error and the run goes on. Exit status: 0, or 1 when a part failed,
3 when something does not import, 4 when the time limit cut the run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

PROMPT = "the waves roll in slowly"
SEED = 42
#: Seconds kept free at the end of the run for the last write.
MARGIN_S = 8
#: What the benchmark imports, checked first (diffusers arrives --no-deps on the device machine, so its
#: own requirements must be there too): a clear message and exit 3 in seconds, not a traceback minutes in.
NEEDED = ("torch", "diffusers", "transformers", "accelerate", "importlib_metadata", "zipp", "safetensors",
          "huggingface_hub", "filelock", "regex", "requests", "numpy", "PIL", "yaml")


@dataclass(frozen=True)
class Part:
    number: int
    what: str
    budget_s: float | None  # on one H100; None: what is left of the run
    min_s: float  # skipped when the run has less left


PARTS = {
    "1_speed": Part(1, "seconds per video, plain diffusers against the app's engine, equal settings", 130, 50),
    "2_memory_modes": Part(2, "peak GPU memory allocated and reserved in each memory mode", 90, 30),
    "3_cold_start": Part(3, "a new process until the engine is ready, from a cold page cache", 60, 25),
    "4_compile_step_down": Part(4, "model.compile warmed in gpu mode, one job stepped down to model_offload: "
                                   "does the warmed shape compile again inside the job?", None, 90),
    "5_two_workers": Part(5, "jobs per minute with two app workers, one GPU each, against one", 150, 100),
    "6_wan_ti2v_5b_720p": Part(6, "parts 1 and 2 for Wan 2.2 TI2V-5B at 720p through the app's Wan family code",
                               200, 100),
}
ORDER = ("1_speed", "2_memory_modes", "3_cold_start", "6_wan_ti2v_5b_720p", "5_two_workers", "4_compile_step_down")
MEMORY_MODES = ("gpu", "model_offload", "group_offload", "sequential_offload")
#: The least time a video in each memory mode is given before it starts (on a GPU).
MODE_MIN_S = {"gpu": 5, "model_offload": 10, "group_offload": 15, "sequential_offload": 25}


@dataclass(frozen=True)
class Sizes:
    """The settings of every part: the real ones on a GPU, tiny ones for ``--smoke``."""

    shapes: str  # I2VGen-XL's (families/i2vgen_xl/shapes.py)
    side: int
    frames: int
    steps: int
    repeats: int
    warmup_steps: int
    mode_steps: int
    compile_steps: int
    wan_width: int
    wan_height: int
    wan_frames: int
    wan_steps: int
    wan_repeats: int
    wan_mode_steps: int
    wan_warmup_frames: int
    workers_jobs: int


GPU_SIZES = Sizes("real", 512, 16, 50, 2, 2, 3, 2, 1280, 704, 49, 4, 1, 2, 5, 4)
SMOKE_SIZES = Sizes("smoke", 64, 4, 2, 1, 1, 1, 1, 64, 64, 5, 2, 1, 2, 5, 2)


_STAND_IN = False  # accelerate's hooks let the CPU stand in for the GPU (the smoke run)


class Skip(Exception):
    """A part (or a step) that cannot run here: its reason is the result."""


class Stopped(Exception):
    """A part stopped at the end of its budget: what it measured before is in its entry."""


# -- the run: its JSON, its clock, its watchdog -----------------------------------------------------------

class Run:
    def __init__(self, args):
        self.out, self.smoke = Path(args.out), args.smoke
        self.started, self.limit_s = args.started, args.time_limit
        self.deadline = self.started + self.limit_s
        self.lock = threading.RLock()
        self.child: subprocess.Popen | None = None
        self.child_file: Path | None = None
        self.child_key: str | None = None
        self.report = {
            "title": "GPU benchmark, one call: bash bench/gpu_run.sh (bench/gpu_bench.py)",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "smoke": self.smoke, "state": "running", "time_limit_s": self.limit_s,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)), "elapsed_s": 0.0,
            "parts": {key: {"part": part.number, "what": part.what, "budget_s": part.budget_s,
                            "status": "pending"} for key, part in PARTS.items()},
        }

    def remaining(self) -> float:
        return self.deadline - time.time()

    def elapsed(self) -> float:
        return round(time.time() - self.started, 1)

    def save(self) -> None:
        """The report so far, written whole (a temporary file renamed into place)."""
        with self.lock:
            self.merge_child()
            self.report["elapsed_s"] = self.elapsed()
            text = None
            for _ in range(5):  # another thread may be adding to it
                try:
                    text = json.dumps(self.report, indent=1, default=str)
                    break
                except RuntimeError:
                    time.sleep(0.01)
            if text is None:
                return
            partial = self.out.with_name(self.out.name + ".partial")
            partial.write_text(text + "\n")
            partial.replace(self.out)

    def merge_child(self) -> None:
        """What the running child process has written so far into its part."""
        if self.child_file is None or not self.child_file.is_file():
            return
        try:
            written = json.loads(self.child_file.read_text())
        except ValueError:  # being replaced just now
            return
        self.report["parts"][self.child_key].update(written)

    def watch(self) -> None:
        """At the time limit: what runs is marked cut off, the rest skipped, the JSON written, exit 4."""
        def wait() -> None:
            while self.remaining() > 0:
                time.sleep(min(1.0, max(self.remaining(), 0.01)))
            with self.lock:
                if self.child is not None and self.child.poll() is None:
                    self.child.kill()
                for entry in self.report["parts"].values():
                    if entry["status"] == "running":
                        entry.update(status="cut off", reason=f"the run's time limit ({self.limit_s:.0f} s) came "
                                                              "during this part; what it measured before is here")
                    elif entry["status"] == "pending":
                        entry.update(status="skipped", reason="the run's time limit came before this part")
                self.report["state"] = f"cut off at the time limit ({self.limit_s:.0f} s)"
                self.save()
            print(f"gpu_bench: the time limit ({self.limit_s:.0f} s) is reached: {self.out} holds what was measured",
                  flush=True)
            os._exit(4)

        threading.Thread(target=wait, name="time-limit", daemon=True).start()

    def part(self, key: str, function, ctx) -> None:
        """Run one part, or skip it with the reason; its numbers are written as it goes."""
        part, entry = PARTS[key], self.report["parts"][key]
        left = self.remaining() - MARGIN_S
        minimum = 1 if self.smoke else part.min_s
        if left < minimum:
            entry.update(status="skipped", reason=f"needs at least {minimum:.0f} s; {max(left, 0):.0f} s were left "
                                                  f"of the run's {self.limit_s:.0f} s")
            print(f"part {part.number} ({key}): skipped, {entry['reason']}", flush=True)
            self.save()
            return
        budget = left if part.budget_s is None else min(part.budget_s, left)
        entry.update(status="running", started_at_s=self.elapsed(), budget_s=round(budget))
        self.save()
        print(f"\n== part {part.number} ({key}): {part.what}; {budget:.0f} s budget", flush=True)
        started = time.time()
        try:
            function(self, entry, started + budget, ctx)
            entry["status"] = "done"
        except Skip as reason:
            entry.update(status="skipped", reason=str(reason))
        except Stopped as reason:
            entry.update(status="cut off", reason=str(reason))
        except (Exception, SystemExit) as error:  # a part that fails is a result too; the others go on
            traceback.print_exc()
            entry.update(status="error", reason=f"{type(error).__name__}: {str(error)[:600]}")
        finally:
            entry["took_s"] = round(time.time() - started, 1)
            ctx.free()
            self.save()
        print(f"part {part.number} ({key}): {entry['status']} in {entry['took_s']} s"
              + (f" ({entry['reason']})" if entry.get("reason") else ""), flush=True)

    def run_child(self, key: str, command: list[str], deadline: float, *, in_process=None) -> int | None:
        """A part in its own process (``--child``), which writes its entry to a side file as it goes; that
        is merged into the JSON every second. Killed at ``deadline``: None then, else its exit status.
        ``in_process(side_file)`` instead: the same part called here (the smoke run: no second start-up)."""
        self.child_key = key
        self.child_file = self.out.with_name(self.out.name + f".{key}.json")
        self.child_file.unlink(missing_ok=True)
        try:
            if in_process is not None:
                in_process(self.child_file)
                return 0
            with self.lock:
                self.child = subprocess.Popen([*command, "--side-file", str(self.child_file),
                                               "--deadline", str(deadline)], cwd=ROOT)
            seen = None
            while self.child.poll() is None and time.time() < deadline:
                time.sleep(0.5)
                stamp = self.child_file.stat().st_mtime_ns if self.child_file.is_file() else None
                if stamp != seen:
                    seen = stamp
                    self.save()
            if self.child.poll() is None:
                self.child.kill()
                self.child.wait()
                return None
            return self.child.returncode
        finally:
            with self.lock:
                self.merge_child()
                self.child_file.unlink(missing_ok=True)
                self.child = self.child_file = self.child_key = None


def filesystem(path: Path) -> str:
    """The type of the file system ``path`` is on (/proc/mounts), e.g. ext4, overlay, tmpfs; "" if unknown."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    path = str(Path(path).resolve())
    best = max((point for point, _ in mounts if path == point or path.startswith(point.rstrip("/") + "/")),
               key=len, default="")
    return next((kind for point, kind in mounts if point == best), "")


def default_work_dir() -> Path:
    """/tmp/i2v-gpu-bench, unless /tmp is in memory (tmpfs: no page cache to drop for the cold start,
    and 30 GB of weights in RAM): then bench-results/models in the working tree (ignored by git)."""
    tmp = Path(tempfile.gettempdir())
    return tmp / "i2v-gpu-bench" if filesystem(tmp) != "tmpfs" else ROOT / "bench-results" / "models"


class Context:
    """What the parts share: torch, the device, the sizes, the model folders, the app's engine kept
    from part 1 for part 2."""

    def __init__(self, args):
        import torch

        self.torch, self.smoke = torch, args.smoke
        self.device = args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
        self.cuda = self.device.startswith("cuda")
        self.sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
        self.dtype = "float16" if self.cuda else "float32"
        #: where the random-weight folders go; the smoke run's own temporary folder, removed at its end
        self.own_work = not args.work_dir and args.smoke
        self.work = (Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="i2v-gpu-bench-smoke-"))
                     if args.smoke else default_work_dir())
        self.work.mkdir(parents=True, exist_ok=True)
        own = self.work / f"i2v-{self.sizes.shapes}-{self.dtype}"
        self.i2v_folder = Path(args.model_dir) if args.model_dir else own
        #: part 4's torch.compile backend: inductor on a GPU; the smoke run passes it through ("none")
        self.compile_backend = args.compile_backend or ("none" if args.smoke else None)
        self.engine = None  # the app's I2VGen-XL engine, from part 1 to part 2

    # -- the device's clock and memory --------------------------------------------------------------------

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def free(self) -> None:
        """The memory of what is gone back to the GPU before the next measurement (on a CPU nothing is
        measured in memory: the collection, a third of a second each time, is left out)."""
        if self.cuda:
            gc.collect()
            self.torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def memory(self) -> dict:
        """Peak GB allocated and reserved since the last ``reset_peak``, and allocated now; None on a CPU."""
        if not self.cuda:
            return {"peak_allocated_gb": None, "peak_reserved_gb": None, "allocated_now_gb": None}
        cuda = self.torch.cuda
        return {"peak_allocated_gb": round(cuda.max_memory_allocated() / 2**30, 3),
                "peak_reserved_gb": round(cuda.max_memory_reserved() / 2**30, 3),
                "allocated_now_gb": round(cuda.memory_allocated() / 2**30, 3)}

    def cpu_stands_in_for_the_gpu(self) -> None:
        """On a CPU, let accelerate's offload hooks run with the CPU standing in for the GPU (the tests'
        ``offload_on_the_cpu``), so that every memory-mode switch runs in the smoke run too."""
        global _STAND_IN
        if self.cuda or _STAND_IN:
            return
        import accelerate.hooks

        move = accelerate.hooks.set_module_tensor_to_device
        accelerate.hooks.set_module_tensor_to_device = lambda module, name, device, *args, **kw: move(
            module, name, "cpu" if str(device) == "cpu:0" else device, *args, **kw)
        _STAND_IN = True

    # -- I2VGen-XL -----------------------------------------------------------------------------------------

    def i2v_request(self, steps: int | None = None, side: int | None = None, frames: int | None = None):
        import numpy as np
        from PIL import Image

        from image_to_video.request import GenerationRequest

        s = self.sizes
        side = side or s.side
        picture = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        return GenerationRequest(image=Image.fromarray(picture), prompt=PROMPT, negative_prompt="",
                                 resolution=f"{side}px", width=side, height=side, num_frames=frames or s.frames, fps=8,
                                 num_inference_steps=steps or s.steps, guidance_scale=9.0, seed=SEED)

    def i2v_engine(self, **options):
        from image_to_video.config import ModelSettings
        from image_to_video.engine import Engine

        models_dir = options.pop("models_dir", self.i2v_folder.parent)
        settings = ModelSettings(source=str(self.i2v_folder), device=self.device, dtype=self.dtype,
                                 memory_mode="gpu" if self.cuda else "auto", **options)
        engine = Engine(settings, str(self.i2v_folder), Path(models_dir),
                        warmup_shapes=((self.sizes.side, self.sizes.side, self.sizes.frames),))
        engine.load()
        if not engine.ready:
            raise RuntimeError(f"the engine did not load: {engine.status.message}")
        return engine


# -- timing one video ----------------------------------------------------------------------------------------

class Clock:
    """One video's wall time, with ``torch.cuda.synchronize`` before and after, and each call of the
    denoiser(s) in it (CUDA events on a GPU, no synchronisation inside the run; the host clock on a CPU)."""

    def __init__(self, ctx: Context, modules):
        self.ctx, self.torch = ctx, ctx.torch
        self.calls: list = []
        self._open = None
        self.hooks = []
        for module in modules:
            self.hooks += [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _mark(self):
        if not self.ctx.cuda:
            return time.perf_counter()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _gap(self, a, b) -> float:
        return a.elapsed_time(b) / 1000 if self.ctx.cuda else b - a

    def _pre(self, *_):
        self._open = self._mark()

    def _post(self, *_):
        if self._open is not None:
            self.calls.append((self._open, self._mark()))
            self._open = None

    def start(self) -> None:
        self.ctx.sync()
        self.calls, self._open = [], None
        self.begin = self._mark()
        self.t0 = time.perf_counter()

    def stop(self, steps: int) -> dict:
        end = self._mark()
        self.ctx.sync()
        seconds = time.perf_counter() - self.t0
        durations = [self._gap(a, b) for a, b in self.calls]
        return {"seconds": seconds, "denoiser_calls": len(durations),
                "denoiser_s_per_step": sum(durations) / steps if durations else None,
                "denoiser_s_per_call": statistics.median(durations) if durations else None,
                "decode_s": self._gap(self.calls[-1][1], end) if self.calls else None}

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def redecodes(made) -> int:
    """The chunks a video of the app's engine decoded again in float32 (issue 23, defect 3)."""
    return int(made.timings.get("vae_fp32_redecodes", 0))


def non_finite(error: BaseException) -> bool:
    return getattr(error, "key", None) == "err_non_finite_video"


def measure(ctx: Context, name: str, modules, make_video, request, *, warmup, repeats: int, deadline: float) -> tuple:
    """(result, frames of the last run): an untimed warm-up video, then up to ``repeats`` timed ones (the
    next one only while ``deadline`` leaves room for it), the median of their times. A video the app
    refuses as NaN or inf (random weights can overflow) keeps its timing, said in ``finite``."""
    steps = request.num_inference_steps
    finite = []

    def check(_module, _args, output):
        sample = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        finite.append(bool(ctx.torch.isfinite(sample).all()))

    def video(req):
        try:
            return make_video(req)
        except Exception as error:
            if not non_finite(error):
                raise
            finite.append(False)
            return None

    hook = modules[0].register_forward_hook(check)
    print(f"{name}: warm-up ({warmup.width}x{warmup.height}, {warmup.num_frames} frames, "
          f"{warmup.num_inference_steps} steps)", flush=True)
    started = time.perf_counter()
    video(warmup)
    ctx.sync()
    warmup_s = time.perf_counter() - started
    hook.remove()
    clock, runs, frames, notes = Clock(ctx, modules), [], None, []
    try:
        for index in range(repeats):
            if index and time.time() + 1.2 * runs[-1]["seconds"] > deadline:
                notes.append(f"{repeats - index} of {repeats} timed runs left out: the part's budget")
                break
            ctx.reset_peak()  # the allocator's cache stays warm, as in a serving process
            clock.start()
            frames = video(request)
            runs.append({**clock.stop(steps), **ctx.memory()})
    finally:
        clock.remove()
    last = runs[-1]
    result = {"variant": name, "seconds": statistics.median(r["seconds"] for r in runs),
              "runs_s": [round(r["seconds"], 3) for r in runs], "steps": steps, "warmup_s": round(warmup_s, 2),
              **{key: last[key] for key in ("denoiser_calls", "denoiser_s_per_step", "denoiser_s_per_call")},
              "decode_s": statistics.median(r["decode_s"] for r in runs) if last["decode_s"] is not None else None,
              "peak_allocated_gb": last["peak_allocated_gb"], "peak_reserved_gb": last["peak_reserved_gb"],
              "finite": all(finite) and frames is not None}
    if not result["finite"]:
        notes.append("these random weights gave NaN or inf somewhere: timings stand, pixel differences do not")
    if notes:
        result["notes"] = notes
    print(f"{name}: {result['seconds']:.3f} s per video ({steps} steps), "
          f"{result['denoiser_s_per_step'] or 0:.4f} s per step, decode {result['decode_s'] or 0:.3f} s, "
          f"peak {result['peak_allocated_gb']} GB allocated / {result['peak_reserved_gb']} GB reserved", flush=True)
    return result, frames


def compare(result: dict, frames, plain: dict, plain_frames) -> None:
    """The app's run against plain diffusers': speed-up and the largest pixel difference (0-255)."""
    import numpy as np

    result["speedup_vs_plain"] = round(plain["seconds"] / result["seconds"], 4)
    if frames is not None and plain_frames is not None and frames.shape == plain_frames.shape:
        difference = np.abs(frames.astype(int) - plain_frames.astype(int))
        result["max_pixel_diff_vs_plain"] = int(difference.max())
        result["mean_pixel_diff_vs_plain"] = round(float(difference.mean()), 4)


def time_left(deadline: float, need_s: float, ctx: Context) -> bool:
    return ctx.smoke or time.time() + need_s < deadline


# -- the parts -------------------------------------------------------------------------------------------------

def part_speed(run: Run, entry: dict, deadline: float, ctx: Context) -> None:
    """Part 1: plain diffusers, then the app's engine (kept for part 2), on the same request and seed."""
    import numpy as np
    import speed
    from diffusers import I2VGenXLPipeline

    from image_to_video.config import ModelSettings
    from image_to_video.families.i2vgen_xl import shapes as model_shapes

    torch, s = ctx.torch, ctx.sizes
    chunk = ModelSettings().decode_chunk_size
    shapes = model_shapes.SHAPES[s.shapes]
    entry["settings"] = {
        "model": f"I2VGen-XL, random weights, {s.shapes} shapes", "dtype": ctx.dtype, "width": s.side,
        "height": s.side, "frames": s.frames, "steps": s.steps, "guidance": 9.0, "seed": SEED,
        "scheduler": "DDIM, the model folder's own (both)", "decode_chunk_size": chunk, "repeats": s.repeats,
        "warm_up": f"one untimed {s.warmup_steps}-step video of the same size first, each",
        "timing": "host clock with torch.cuda.synchronize before and after each video; denoiser steps and "
                  "decode from CUDA events", "memory_mode_app": "gpu" if ctx.cuda else "cpu"}
    if ctx.smoke:  # the count is the same code on any shapes (and tested on the real ones); 4 s of CPU here
        entry["flops"] = {"skipped": "the smoke run does not count FLOPs"}
    else:
        unet_tflop = model_shapes.count_unet_tflop(shapes, s.side, s.frames)
        decode_tflop = model_shapes.count_decode_tflop(shapes, s.side) * s.frames
        entry["flops"] = {"unet_call_tflop": unet_tflop, "decode_tflop": decode_tflop,
                          "video_tflop": s.steps * unet_tflop + decode_tflop, "counted": "on the meta device"}
    video_tflop = entry["flops"].get("video_tflop")
    request, warmup = ctx.i2v_request(), ctx.i2v_request(steps=s.warmup_steps)
    run.save()

    started = time.perf_counter()
    pipe = I2VGenXLPipeline.from_pretrained(ctx.i2v_folder, dtype=getattr(torch, ctx.dtype),
                                            variant="fp16" if ctx.dtype == "float16" else None)
    pipe.to(ctx.device)
    pipe.set_progress_bar_config(disable=True)
    plain_load_s = time.perf_counter() - started

    def plain_video(req) -> np.ndarray:  # what a user of diffusers writes (bench/speed.py's "plain")
        with torch.inference_mode():
            embeds = speed.plain_prompt_embeds(pipe, req.prompt)
            negative = speed.plain_prompt_embeds(pipe, req.negative_prompt)
            torch.manual_seed(req.seed)
            video = pipe(image=req.image, prompt_embeds=embeds, negative_prompt_embeds=negative, height=req.height,
                         width=req.width, num_frames=req.num_frames, target_fps=req.fps,
                         num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale,
                         output_type="np", decode_chunk_size=chunk,
                         generator=torch.Generator("cpu").manual_seed(req.seed)).frames[0]
        return (video * 255).round().astype(np.uint8)

    plain, plain_frames = measure(ctx, "plain diffusers", [pipe.unet], plain_video, request, warmup=warmup,
                                  repeats=s.repeats, deadline=deadline)
    plain.update(load_s=round(plain_load_s, 2), decode_chunk_size=chunk,
                 tflops=round(video_tflop / plain["seconds"], 2) if video_tflop else None)
    entry["plain"] = plain
    pipe = None
    ctx.free()
    run.save()

    if not time_left(deadline, 20 + 1.5 * plain["seconds"], ctx):
        raise Skip("plain diffusers measured; no time left in the part's budget for the app's engine")
    started = time.perf_counter()
    engine = ctx.i2v_engine()
    load_s = time.perf_counter() - started
    redone: list[int] = []  # chunks the app decoded again in float32 (NaN or inf in float16), per video

    def app_video(req):
        made = engine.generate(req)
        redone.append(redecodes(made))
        return made.frames

    app, frames = measure(ctx, "app engine", [engine.denoiser], app_video, request, warmup=warmup, repeats=s.repeats,
                          deadline=deadline)
    app.update(load_s=round(load_s, 2), memory_mode=engine.memory_mode,
               decode_chunk_size=engine.settings.decode_chunk_size, vae_fp32_redecodes=sum(redone[1:]),
               tflops=round(video_tflop / app["seconds"], 2) if video_tflop else None)
    if app["vae_fp32_redecodes"]:
        app.setdefault("notes", []).append(
            f"{app['vae_fp32_redecodes']} chunks of the timed videos decoded twice (NaN or inf in {ctx.dtype}, "
            "again in float32): their decode time is not the VAE's alone; plain diffusers never redoes")
    compare(app, frames, plain, plain_frames)
    entry["app"] = app
    ctx.engine = engine
    # The row docs/performance-gpu.json gives the page's estimates (image_to_video/estimates.py).
    run.report["scaling"] = [{"resolution": s.side, "frames": s.frames, "unet_s_per_step": app["denoiser_s_per_step"],
                              "decode_s": app["decode_s"],
                              "video_s_50_steps": 50 * app["denoiser_s_per_step"] + app["decode_s"],
                              "peak_gpu_gb": app["peak_allocated_gb"], "from": "part 1, the app's engine in gpu mode"}]
    print(f"app {app['seconds']:.3f} s against plain {plain['seconds']:.3f} s: {app['speedup_vs_plain']:.2f}x, "
          f"largest pixel difference {app.get('max_pixel_diff_vs_plain')}", flush=True)


def mode_videos(ctx: Context, engine, modes, request, entry: dict, deadline: float, run: Run, *,
                traced: dict | None = None) -> None:
    """One video in each memory mode, the engine switched as the app switches it; ``entry["modes"]``."""
    rows = entry.setdefault("modes", {})
    for mode in modes:
        need = 0 if ctx.smoke else MODE_MIN_S.get(mode, 5)
        if not time_left(deadline, need, ctx):
            rows[mode] = {"status": "skipped", "reason": f"needs about {need} s; the part's budget is spent"}
            run.save()
            continue
        started = time.perf_counter()
        engine.switch_memory_mode(mode)
        switch_s = time.perf_counter() - started
        ctx.free()
        weights = ctx.memory()["allocated_now_gb"]
        clock = Clock(ctx, engine.family.experts if hasattr(engine.family, "experts") else [engine.denoiser])
        ctx.reset_peak()
        clock.start()
        made, finite = None, True
        try:
            made = engine.generate(request)
        except Exception as error:
            if not non_finite(error):  # out of memory even at the floor, say: this mode's result; on to the next
                clock.remove()
                traceback.print_exc()
                rows[mode] = {"status": "error", "reason": f"{type(error).__name__}: {str(error)[:400]}",
                              **ctx.memory()}
                run.save()
                continue
            finite = False
        timed = clock.stop(request.num_inference_steps)
        clock.remove()
        row = {"status": "done", "seconds": round(timed["seconds"], 3), "steps": request.num_inference_steps,
               "denoiser_s_per_step": timed["denoiser_s_per_step"], "decode_s": timed["decode_s"],
               "switch_s": round(switch_s, 2), "weights_on_gpu_before_gb": weights,
               **{k: v for k, v in ctx.memory().items() if k != "allocated_now_gb"},
               "engine_peak_gb": made.peak_gpu_memory_gb if made else None, "finite": finite,
               "low_memory_retries": int(made.timings.get("low_memory_retry", 0)) if made else None,
               "vae_fp32_redecodes": redecodes(made) if made else None, "memory_mode_after": engine.memory_mode}
        if traced and mode in traced:
            row["app_computed_need_gb"] = traced[mode]
        if not ctx.cuda:
            row["note"] = "no CUDA: the CPU stands in for the GPU (accelerate's and diffusers' real hooks)"
        rows[mode] = row
        print(f"{mode}: {row['seconds']} s ({row['steps']} steps), peak {row['peak_allocated_gb']} GB allocated, "
              f"{row['peak_reserved_gb']} GB reserved", flush=True)
        run.save()


def part_memory_modes(run: Run, entry: dict, deadline: float, ctx: Context) -> None:
    """Part 2: the app's engine from part 1 (or a new one) in each memory mode, a few steps each."""
    from image_to_video.estimates import memory_needs_gb

    s = ctx.sizes
    engine, ctx.engine = ctx.engine, None
    if engine is None:
        engine = ctx.i2v_engine()
    ctx.cpu_stands_in_for_the_gpu()
    entry["settings"] = {"model": f"I2VGen-XL, random weights, {s.shapes} shapes", "dtype": ctx.dtype,
                         "width": s.side, "height": s.side, "frames": s.frames, "steps": s.mode_steps,
                         "guidance": 9.0, "decode_chunk_size": engine.settings.decode_chunk_size,
                         "how": "one engine, switched with Engine.switch_memory_mode; torch.cuda peak statistics "
                                "reset before each video (the cache emptied first); not warmed per mode, so the "
                                "seconds include each mode's first-call costs",
                         "app_computed_need_gb": "estimates.memory_needs_gb for the real model (traced on the meta "
                                                 "device, with the app's margin)"}
    traced = memory_needs_gb(s.side, s.frames, chunk=engine.settings.decode_chunk_size) if s.shapes == "real" else None
    mode_videos(ctx, engine, MEMORY_MODES, ctx.i2v_request(steps=s.mode_steps), entry, deadline, run, traced=traced)


def evict(paths: list[Path]) -> str:
    """Drop ``paths`` (and nothing else) from the page cache: posix_fadvise(DONTNEED) on each file, which
    needs no root and drops its clean pages that no process maps (fsync first makes them clean)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "fsync + posix_fadvise(POSIX_FADV_DONTNEED) on each weight file (no root needed)"


def resident_share(paths: list[Path]) -> float | None:
    """The share of ``paths``' pages in the page cache (mincore); None where it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
        page = os.sysconf("SC_PAGE_SIZE")
        resident = total = 0
        for path in paths:
            size = path.stat().st_size
            if not size:
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                address = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
                if address in (None, ctypes.c_void_p(-1).value):
                    return None
                pages = (size + page - 1) // page
                vector = (ctypes.c_ubyte * pages)()
                ok = libc.mincore(address, size, vector) == 0
                libc.munmap(address, size)
                if not ok:
                    return None
                resident += sum(v & 1 for v in vector)
                total += pages
            finally:
                os.close(fd)
        return round(resident / total, 4) if total else None
    except (OSError, AttributeError):
        return None


def part_cold_start(run: Run, entry: dict, deadline: float, ctx: Context) -> None:
    """Part 3: ``bench/speed.py --load-only`` in a new process (the app's engine, memory mode auto), from
    process start until ready: first with the weights evicted from the page cache, then warm."""
    weights = sorted(p for p in ctx.i2v_folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
    command = [sys.executable, str(BENCH / "speed.py"), "--load-only", "--device", ctx.device, "--dtype", ctx.dtype,
               "--model-dir", str(ctx.i2v_folder)]
    entry["settings"] = {"model": f"I2VGen-XL, random weights, {ctx.sizes.shapes} shapes", "dtype": ctx.dtype,
                         "weights_gb": round(sum(p.stat().st_size for p in weights) / 2**30, 3),
                         "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)),
                         "what": "process start (python, imports) until the engine says ready, memory mode auto; "
                                 "the Python libraries stay in the page cache (this benchmark's own process "
                                 "maps them)"}
    runs = entry.setdefault("runs", {})
    for kind in ("cold", "warm"):
        if kind == "warm" and ctx.smoke:
            runs[kind] = {"status": "skipped", "reason": "smoke run: the cold start only (the same code path)"}
            continue
        if kind == "warm" and not time_left(deadline, 1.2 * runs["cold"]["process_to_ready_s"], ctx):
            runs[kind] = {"status": "skipped", "reason": "the part's budget is spent"}
            continue
        row = {}
        if kind == "cold":
            row["resident_before_evicting"] = resident_share(weights)
            row["evicted_by"] = evict(weights)
            row["resident_after_evicting"] = resident_share(weights)
            if row["resident_after_evicting"] is None:
                row["note"] = "mincore could not be asked: whether the cache was cold is not known"
            elif row["resident_after_evicting"] > 0.05:
                row["note"] = "the page cache could not be dropped: this is not a cold start"
        else:
            row["resident_before"] = resident_share(weights)
        started, wait = time.perf_counter(), max(deadline - time.time(), 5)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=wait, cwd=ROOT)
        except subprocess.TimeoutExpired:
            runs[kind] = {**row, "status": "stopped", "reason": f"not ready within the part's {wait:.0f} s left: "
                                                                 "the start takes longer than that"}
            break
        row["process_to_ready_s"] = round(time.perf_counter() - started, 2)
        if done.returncode:
            raise RuntimeError(f"the {kind} start failed: {(done.stderr or done.stdout)[-600:]}")
        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        row.pop("import_s", None)  # speed.py has torch imported before it starts that clock: meaningless here
        row["python_and_imports_s"] = round(row["process_to_ready_s"] - row["load_s"], 2)
        row["status"] = "done"
        runs[kind] = row
        print(f"{kind} start: {row['process_to_ready_s']} s to ready ({row['load_s']:.2f} s loading)", flush=True)
        run.save()


def part_compile(run: Run, entry: dict, deadline: float, ctx: Context) -> None:
    """Part 4, in its own process on a GPU (a compile cannot be stopped half way: the process is, at the
    part's end); in the smoke run, called here with torch.compile passed through (``child_compile``)."""
    command = [sys.executable, str(Path(__file__)), "--child", "compile", "--model-dir", str(ctx.i2v_folder),
               "--device", ctx.device, "--work-dir", str(ctx.work)] + (["--smoke"] if ctx.smoke else [])
    in_process = None
    if ctx.smoke and ctx.compile_backend == "none":
        def in_process(side_file: Path) -> None:
            child_compile(argparse.Namespace(smoke=True, device=ctx.device, work_dir=str(ctx.work),
                                             model_dir=str(ctx.i2v_folder), side_file=str(side_file),
                                             compile_backend="none"))
    elif ctx.compile_backend:
        command += ["--compile-backend", ctx.compile_backend]
    status = run.run_child("4_compile_step_down", command, deadline, in_process=in_process)
    if status is None:
        raise Stopped(f"the probe's process was stopped at the part's budget ({entry.get('budget_s')} s), in stage "
                      f"{entry.get('stage')!r}: what it saw before is here")
    if status:
        raise RuntimeError(f"the probe's process ended with status {status}: {entry.get('error', 'see its log')}")


#: The probe's jobs whose compiles answer its questions.
ANSWERS = {"B_out_of_memory_step_down": "compiles_again_inside_the_job",
           "C_gpu_after_switching_back": "compiles_again_after_switching_back"}


def child_compile(args) -> None:
    """The compile probe: the app's engine with model.compile, warmed in gpu mode for the benchmark's
    shape; job A in gpu mode; job B runs out of memory (injected, as the tests do) at its first step and
    steps down to model_offload (the app's own retry), then back; job C in gpu mode again. For each:
    dynamo's new graphs (``counters["stats"]["unique_graphs"]``) and its recompile log lines, written to
    ``args.side_file`` as they come."""
    ctx = Context(args)
    torch = ctx.torch
    from torch._dynamo.utils import counters

    from image_to_video.faults import FaultInjector

    side_file, s = Path(args.side_file), ctx.sizes
    entry: dict = {"stage": "starting", "recompile_log": []}
    started = time.perf_counter()

    def write() -> None:
        partial = side_file.with_name(side_file.name + ".partial")
        partial.write_text(json.dumps(entry, default=str))
        partial.replace(side_file)

    class Recompiles(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "ecompil" in message:
                entry["recompile_log"].append({"stage": entry["stage"], "at_s": round(time.perf_counter() - started, 1),
                                               "message": message[:800]})
                if entry["stage"] in ANSWERS:  # the answer, even if the probe is stopped during this compile
                    entry[ANSWERS[entry["stage"]]] = True
                write()

    backend = ctx.compile_backend or "inductor"
    entry["settings"] = {
        "model": f"I2VGen-XL, random weights, {s.shapes} shapes", "dtype": ctx.dtype,
        "warmed_shape": [s.side, s.side, s.frames], "steps_per_job": s.compile_steps,
        "compile": "speedups.CompiledForward: torch.compile(unet.forward, fullgraph=True, dynamic=False), "
                   "a fresh inductor cache (a cold compile)", "backend": backend,
        "recompile_limit": getattr(torch._dynamo.config, "recompile_limit", None),
        "step_down": "FaultInjector('oom@denoise*1'): torch.cuda.OutOfMemoryError at the job's first step, "
                     "then gpu.step_down switches to model_offload, runs the job again (CompiledForward runs "
                     "eager what warm-up did not compile: another memory mode, weights made inference tensors by "
                     "the offload hook), switches back to gpu; expected: no new graph in any job (issue 23, "
                     "defect 1)"}
    if backend == "none":
        entry["settings"]["backend"] = (
            "none: torch.compile passed through, nothing traced (the smoke run: a dynamo trace of even the "
            "smallest UNet takes 8 s and more of CPU). The engine, the warm-up, the injected step-down and "
            "the counting run; the counts are the GPU run's answer")
    write()
    compile_ = torch.compile
    if backend == "none":
        torch.compile = lambda function, **options: function
    elif backend != "inductor":
        torch.compile = lambda function, **options: compile_(function, **{**options, "backend": backend})
    handler = Recompiles()
    torch._logging.set_logs(recompiles=True)
    logging.getLogger("torch._dynamo").addHandler(handler)
    ctx.cpu_stands_in_for_the_gpu()

    def graphs() -> int:
        return int(counters["stats"]["unique_graphs"])

    try:
        entry["stage"] = "load_and_compile"
        write()
        probe(ctx, entry, write, graphs, FaultInjector)
    except BaseException as error:
        entry["error"] = f"{type(error).__name__}: {str(error)[:600]}"
        write()
        raise
    finally:
        torch.compile = compile_
        logging.getLogger("torch._dynamo").removeHandler(handler)
        torch._logging.set_logs()
        ctx.free()


def probe(ctx: Context, entry: dict, write, graphs, FaultInjector) -> None:
    """``child_compile``'s jobs (its docstring)."""
    from image_to_video import gpu

    s, pick = ctx.sizes, gpu.pick_memory_mode
    with tempfile.TemporaryDirectory(prefix="compile-cache-", dir=ctx.work) as cache:
        load_started = time.perf_counter()
        before = graphs()
        if not ctx.cuda:  # the CPU standing in: loaded, warmed up and run in gpu mode, as on a GPU
            gpu.pick_memory_mode = lambda *args, **kwargs: "gpu"
        try:
            engine = ctx.i2v_engine(compile=True, models_dir=cache)
        finally:
            gpu.pick_memory_mode = pick
        ctx.sync()
        entry["load_and_compile_s"] = round(time.perf_counter() - load_started, 2)
        entry["graphs_compiled_at_load"] = graphs() - before
        write()
        request = ctx.i2v_request(steps=s.compile_steps)
        jobs = entry.setdefault("jobs", {})
        for name, faults in (("A_gpu_warmed", None), ("B_out_of_memory_step_down", "oom@denoise*1"),
                             ("C_gpu_after_switching_back", None)):
            entry["stage"] = name
            before, lines = graphs(), len(entry["recompile_log"])
            if faults:
                engine.faults = FaultInjector(faults)
            calls: list[float] = []
            marks: list[float] = []

            def call_starts(*_) -> None:  # a hook that returned something would replace the UNet's inputs
                ctx.sync()
                marks.append(time.perf_counter())

            def call_ends(*_) -> None:
                ctx.sync()
                calls.append(time.perf_counter() - marks[-1])

            hooks = [engine.denoiser.register_forward_pre_hook(call_starts),
                     engine.denoiser.register_forward_hook(call_ends)]
            write()
            job_started = time.perf_counter()
            made = None
            try:
                made = engine.generate(request)
            except Exception as error:
                if not non_finite(error):  # random weights that overflow: the compiles still count
                    raise
            finally:
                for hook in hooks:
                    hook.remove()
            jobs[name] = {"seconds": round(time.perf_counter() - job_started, 2),
                          "new_graphs_compiled": graphs() - before,
                          "recompile_log_lines": len(entry["recompile_log"]) - lines,
                          "low_memory_retries": int(made.timings.get("low_memory_retry", 0)) if made else None,
                          "vae_fp32_redecodes": redecodes(made) if made else None, "finite": made is not None,
                          "memory_mode_after": engine.memory_mode,
                          "unet_call_s": [round(c, 3) for c in calls]}
            print(f"compile probe, job {name}: {jobs[name]}", flush=True)
            write()
        del engine
    for stage, answer in ANSWERS.items():
        entry[answer] = bool(jobs[stage]["new_graphs_compiled"] or jobs[stage]["recompile_log_lines"])
    entry["stage"] = "done"
    write()


def part_two_workers(run: Run, entry: dict, deadline: float, ctx: Context) -> None:
    """Part 5: the app as the server builds it (``app.build``: store, queue, one worker process per
    GPU) on the real-shape folder; jobs per minute with 2 workers, then 1, from submit to the last video."""
    gpus = ctx.torch.cuda.device_count() if ctx.cuda else 0
    if gpus < 2:
        raise Skip(f"needs two CUDA GPUs; {gpus} visible" + (" (CPU smoke run)" if ctx.smoke else ""))
    import importlib.util

    missing = [name for name in ("imageio", "imageio_ffmpeg") if importlib.util.find_spec(name) is None]
    try:
        import workers
    except Exception as error:  # the app's server side, which the device image may lack
        missing.append(f"bench/workers.py ({type(error).__name__}: {error})")
    if missing:
        raise Skip("the app's job path (the video written to disk) cannot run here: " + ", ".join(missing))

    s = ctx.sizes
    options = argparse.Namespace(jobs=s.workers_jobs, resolution=f"{s.side}p", frames=s.frames, steps=s.steps,
                                 threads=4)
    entry["settings"] = {"model": "I2VGen-XL, random weights, real shapes", "jobs": options.jobs,
                         "resolution": options.resolution, "frames": s.frames, "steps": s.steps, "gpus": gpus,
                         "how": "bench/workers.py's run(): app.build with jobs.workers N, every worker loaded first, "
                                "then the jobs queued at once and timed from the first submit to the last video"}
    from image_to_video.examples import ensure_examples

    overrides = {"model.demo": False, "model.source": str(ctx.i2v_folder), "model.family": "i2vgen-xl"}
    with tempfile.TemporaryDirectory() as tmp:
        image = ensure_examples(Path(tmp) / "examples")[0][0]
        rates = entry.setdefault("jobs_per_minute", {})
        rates["2_workers"] = round(workers.run("2 workers", {**overrides, "jobs.workers": 2}, options, image), 3)
        run.save()
        if time_left(deadline, 60 * options.jobs / rates["2_workers"] * 2 + 30, ctx):
            rates["1_worker"] = round(workers.run("1 worker", {**overrides, "jobs.workers": 1}, options, image), 3)
            entry["speedup_2_vs_1"] = round(rates["2_workers"] / rates["1_worker"], 3)
        else:
            entry["note"] = "1 worker left out: the part's budget"


def wan_folder(ctx: Context, folder: Path) -> float:
    """A random-weight Wan 2.2 TI2V-5B pipeline written to ``folder`` (the real shapes, built on the GPU in
    the dtypes the app loads them in; the smoke run: the tiny layout of families/wan/demo.py). Seconds."""
    from diffusers import WanImageToVideoPipeline

    from image_to_video.families.wan import demo, memory

    def build():
        if ctx.smoke:
            return demo.build_pipeline(demo.TI2V_5B)
        torch, name = ctx.torch, "wan2.2-ti2v-5b"
        torch.manual_seed(0)
        with torch.device(ctx.device):
            return WanImageToVideoPipeline(
                transformer=memory.build_transformer(name),  # bfloat16, its _keep_in_fp32_modules in float32
                vae=memory.build_vae(name),  # float32, as the app loads it
                text_encoder=memory.build_text_encoder(),  # umT5-XXL's encoder, bfloat16
                tokenizer=demo.build_tokenizer(), scheduler=demo.build_scheduler(), image_processor=None,
                image_encoder=None, transformer_2=None, boundary_ratio=None, expand_timesteps=True)

    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    build().save_pretrained(folder)  # the built pipeline is gone when this line ends
    ctx.free()
    return time.perf_counter() - started


def part_wan(run: Run, entry: dict, deadline: float, ctx: Context) -> None:
    """Part 6: Wan 2.2 TI2V-5B at 720p: plain diffusers against the app's engine (parts 1's way), then the
    app's engine in each memory mode (part 2's way; gpu mode from the timed run)."""
    import numpy as np
    from diffusers import WanImageToVideoPipeline
    from diffusers.pipelines.wan import pipeline_wan_i2v
    from PIL import Image

    from image_to_video import families
    from image_to_video.config import ModelSettings
    from image_to_video.engine import Engine
    from image_to_video.families.wan import NEGATIVE_PROMPT
    from image_to_video.families.wan import memory as wan_memory
    from image_to_video.request import GenerationRequest

    torch, s = ctx.torch, ctx.sizes
    card = families.CARDS["wan2.2-ti2v-5b"]
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    entry["settings"] = {
        "model": "Wan 2.2 TI2V-5B, random weights, " + ("real shapes (families/wan/memory.py)" if not ctx.smoke
                                                        else "the tiny layout of families/wan/demo.py"),
        "dtype": str(dtype)[6:], "vae_dtype": "float32 (as Wan.load keeps it)", "width": s.wan_width,
        "height": s.wan_height, "frames": s.wan_frames, "steps": s.wan_steps, "mode_steps": s.wan_mode_steps,
        "guidance": 5.0, "seed": SEED, "fps": 24, "repeats": s.wan_repeats,
        "scheduler": "UniPC flow (the folder's, both)", "negative_prompt": "the card's (Wan's own)",
        "tokenizer": "families/wan/demo.py's (no hub); the prompt is padded to 512 tokens either way",
        "warm_up": f"one untimed 2-step video of {s.wan_warmup_frames} frames at the same size first, each",
        "decode": "the whole video at once (Wan's VAE is causal over time), float32",
        "memory_mode_app": "gpu" if ctx.cuda else "cpu"}
    if not hasattr(pipeline_wan_i2v, "ftfy"):  # requirements.txt has it; bench/gpu_wheels.sh does not fetch it
        pipeline_wan_i2v.ftfy = types.SimpleNamespace(fix_text=lambda text: text)
        entry["note"] = ("ftfy is not installed here: Wan's prompt cleaning (ftfy.fix_text) is the identity in this "
                         "run, for plain diffusers and the app alike (it changes no time or memory measured)")
    folder = ctx.work / ("wan-ti2v-5b-" + ("smoke" if ctx.smoke else "real"))
    entry["build_s"] = round(wan_folder(ctx, folder), 3)
    run.save()
    try:
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (s.wan_height, s.wan_width, 3),
                                                                    dtype=np.uint8))

        def request(steps: int, frames: int | None = None):
            return GenerationRequest(image=picture, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, resolution="720p",
                                     width=s.wan_width, height=s.wan_height, num_frames=frames or s.wan_frames,
                                     fps=24, num_inference_steps=steps, guidance_scale=5.0, seed=SEED, family="wan",
                                     model=card.name)

        timed, warmup = request(s.wan_steps), request(2, s.wan_warmup_frames)
        started = time.perf_counter()
        pipe = WanImageToVideoPipeline.from_pretrained(folder, dtype=dtype)
        pipe.vae.to(torch.float32)  # diffusers' Wan examples keep the VAE in float32, as the app does
        pipe.to(ctx.device)
        pipe.set_progress_bar_config(disable=True)
        plain_load_s = time.perf_counter() - started

        def plain_video(req):
            with torch.inference_mode():
                frames = pipe(image=req.image, prompt=req.prompt, negative_prompt=req.negative_prompt,
                              height=req.height, width=req.width, num_frames=req.num_frames,
                              num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale,
                              generator=torch.Generator("cpu").manual_seed(req.seed), output_type="np").frames[0]
            return (frames * 255).round().astype(np.uint8)

        plain, plain_frames = measure(ctx, "wan plain diffusers", [pipe.transformer], plain_video, timed,
                                      warmup=warmup, repeats=s.wan_repeats, deadline=deadline)
        plain["load_s"] = round(plain_load_s, 2)
        entry["plain"] = plain
        pipe = None
        ctx.free()
        run.save()
        if not time_left(deadline, 20 + 2 * plain["seconds"], ctx):
            raise Skip("plain diffusers measured; no time left in the part's budget for the app's engine")

        settings = ModelSettings(source=str(folder), device=ctx.device, memory_mode="gpu" if ctx.cuda else "auto")
        started = time.perf_counter()
        engine = Engine(settings, str(folder), folder.parent, card=card)
        engine.load()
        if not engine.ready:
            raise RuntimeError(f"the Wan engine did not load: {engine.status.message}")
        load_s = time.perf_counter() - started
        app, frames = measure(ctx, "wan app engine", engine.family.experts, lambda req: engine.generate(req).frames,
                              timed, warmup=warmup, repeats=s.wan_repeats, deadline=deadline)
        app.update(load_s=round(load_s, 2), memory_mode=engine.memory_mode, dtype=str(engine.dtype)[6:],
                   vae_dtype=str(engine.pipeline.vae.dtype)[6:])
        compare(app, frames, plain, plain_frames)
        for result in (plain, app):  # the settings' few steps, and what 50 would take (computed, said so)
            if result["denoiser_s_per_step"] is not None:
                rest = result["seconds"] - result["steps"] * result["denoiser_s_per_step"]
                result["video_s_50_steps_computed"] = round(50 * result["denoiser_s_per_step"] + rest, 2)
        entry["app"] = app
        run.save()

        traced = wan_memory.needs_gb(card.name, s.wan_width, s.wan_height, s.wan_frames)
        entry.setdefault("modes", {})[engine.memory_mode] = {  # gpu mode (cpu on a CPU): the timed run's figures
            "status": "done", "from": "the app's timed run above", "seconds": app["seconds"], "steps": app["steps"],
            "denoiser_s_per_step": app["denoiser_s_per_step"], "decode_s": app["decode_s"],
            "peak_allocated_gb": app["peak_allocated_gb"], "peak_reserved_gb": app["peak_reserved_gb"],
            "memory_mode_after": engine.memory_mode, "app_computed_need_gb": traced.get("gpu")}
        ctx.cpu_stands_in_for_the_gpu()
        entry["modes_how"] = ("one engine, switched with Engine.switch_memory_mode, the peak statistics reset before "
                              "each video; app_computed_need_gb: families/wan/memory.needs_gb (traced on the meta "
                              "device, with the app's margin)")
        mode_videos(ctx, engine, MEMORY_MODES[1:], request(s.wan_mode_steps), entry, deadline, run, traced=traced)
        engine = None
    finally:
        ctx.free()
        shutil.rmtree(folder, ignore_errors=True)


# -- the whole run ------------------------------------------------------------------------------------------------

def check_imports() -> bool:
    import importlib

    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except Exception as error:  # an ImportError, or a module that fails while importing
            missing.append(f"{name} ({type(error).__name__}: {error})")
    if not missing:
        try:  # diffusers imports its pipelines lazily
            from diffusers import I2VGenXLPipeline, WanImageToVideoPipeline  # noqa: F401
        except Exception as error:
            missing.append(f"diffusers' pipelines ({type(error).__name__}: {error})")
    if missing:
        print("bench/gpu_run.sh: cannot run, these do not import: " + "; ".join(missing), file=sys.stderr)
        print("Fetch their wheels with bench/gpu_wheels.sh on a machine with PyPI and carry .whl/.", file=sys.stderr)
        return False
    print("imports: all there", flush=True)
    return True


def describe(ctx: Context) -> dict:
    import accelerate
    import diffusers
    import speed
    import transformers

    torch = ctx.torch
    info = {"machine": speed.describe_machine(torch, ctx.device), "shapes": ctx.sizes.shapes, "dtype": ctx.dtype,
            "device": ctx.device,
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                         "python": platform.python_version(), "cuda": torch.version.cuda},
            "cpu": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                       "count": torch.cuda.device_count(), "capability": f"{props.major}.{props.minor}",
                       "driver": speed.driver_version()}
    else:
        info["gpu"] = {"name": None, "count": 0, "note": "no CUDA GPU: the smoke run on the CPU"}
    info["settings"] = asdict(ctx.sizes)
    return info


def prepare(run: Run, ctx: Context) -> None:
    """The I2VGen-XL random-weight folder (parts 1 to 5 read it), built on the device."""
    from image_to_video.families.i2vgen_xl import shapes as model_shapes

    started = time.perf_counter()
    model_shapes.save_pipeline(model_shapes.SHAPES[ctx.sizes.shapes], ctx.i2v_folder, dtype=ctx.dtype,
                               device=ctx.device)
    ctx.free()
    run.report["prepare"] = {"i2vgen_folder": str(ctx.i2v_folder), "filesystem": filesystem(ctx.i2v_folder.parent),
                             "i2vgen_folder_s": round(time.perf_counter() - started, 1), "at_s": run.elapsed()}
    run.save()
    print(f"random {ctx.sizes.shapes}-shape I2VGen-XL in {ctx.i2v_folder} "
          f"({run.report['prepare']['i2vgen_folder_s']} s)", flush=True)


FUNCTIONS = {"1_speed": part_speed, "2_memory_modes": part_memory_modes, "3_cold_start": part_cold_start,
             "4_compile_step_down": part_compile, "5_two_workers": part_two_workers, "6_wan_ti2v_5b_720p": part_wan}


def main() -> int:
    args = parse_args()
    if args.child:
        import speed

        speed.quiet()
        child_compile(args)
        return 0
    if not check_imports():
        return 3
    if args.check:
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run = Run(args)
    run.watch()
    import speed

    speed.quiet()
    ctx = Context(args)
    run.report.update(describe(ctx))
    run.save()
    print(run.report["machine"], flush=True)
    prepare(run, ctx)
    for key in ORDER:
        run.part(key, FUNCTIONS[key], ctx)
    with run.lock:
        failed = [key for key, entry in run.report["parts"].items() if entry["status"] == "error"]
        run.report["state"] = "finished" + (f"; failed: {', '.join(failed)}" if failed else "")
        run.save()
        print_summary(run.report)
        print(f"written: {run.out}", flush=True)
        if not args.keep_models:
            shutil.rmtree(ctx.work if ctx.own_work else ctx.i2v_folder, ignore_errors=True)
    return 1 if failed else 0


def print_summary(report: dict) -> None:
    print(f"\n{report['machine']}\n{'part':<24} {'status':<8} {'took s':>7}  result")
    for key, entry in report["parts"].items():
        result = entry.get("reason", "")
        if key in ("1_speed", "6_wan_ti2v_5b_720p") and "app" in entry:
            result = (f"plain {entry['plain']['seconds']:.2f} s, app {entry['app']['seconds']:.2f} s per video "
                      f"({entry['app'].get('speedup_vs_plain', 0):.2f}x), max px diff "
                      f"{entry['app'].get('max_pixel_diff_vs_plain')}, float32 re-decodes "
                      f"{entry['app'].get('vae_fp32_redecodes', '-')}")
        elif "modes" in entry and key == "2_memory_modes":
            result = ", ".join(f"{mode} {row.get('peak_allocated_gb')}/{row.get('peak_reserved_gb')} GB"
                               for mode, row in entry["modes"].items())
        elif key == "3_cold_start" and "cold" in entry.get("runs", {}):
            result = f"cold {entry['runs']['cold']['process_to_ready_s']} s to ready"
        elif key == "4_compile_step_down" and "compiles_again_inside_the_job" in entry:
            result = (f"compile {entry['load_and_compile_s']} s; compiles again inside the step-down job: "
                      f"{entry['compiles_again_inside_the_job']}")
        print(f"{key:<24} {entry['status']:<8} {entry.get('took_s', ''):>7}  {result}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--smoke", action="store_true", help="the CPU, CI-sized models, well under a minute")
    parser.add_argument("--out", type=Path, help="the JSON (default $OUT/performance-gpu.json, else "
                                                 "bench-results/performance-gpu.json)")
    parser.add_argument("--time-limit", type=float, default=530.0,
                        help="seconds from --started for the whole run (default 530: the device tool's 560 s "
                             "timeout, less a margin)")
    parser.add_argument("--started", type=float, help="the run's start, seconds since the epoch (gpu_run.sh's)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when there is one; --smoke: cpu)")
    parser.add_argument("--work-dir", help="where the random-weight folders are written (default: a temp folder)")
    parser.add_argument("--model-dir", help="the I2VGen-XL random-weight folder (default: in --work-dir)")
    parser.add_argument("--keep-models", action="store_true", help="leave the random-weight folders on disk")
    parser.add_argument("--check", action="store_true", help="only the import check")
    parser.add_argument("--compile-backend", help="part 4's torch.compile backend (default inductor; --smoke: none, "
                                                 "passed through; eager: dynamo traces without code generation)")
    parser.add_argument("--child", choices=["compile"], help=argparse.SUPPRESS)
    parser.add_argument("--side-file", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.started = args.started or time.time()
    if args.out is None:
        args.out = Path(os.environ.get("OUT") or ROOT / "bench-results") / "performance-gpu.json"
    return args


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
