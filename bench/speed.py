"""Speed and memory of I2VGen-XL: plain diffusers against the app's engine, on the real model's shapes.

    python bench/speed.py                         # a CUDA GPU: real shapes, 512x512, 16 frames, 50 steps
    python bench/speed.py --smoke                 # any machine: small shapes on the CPU, in seconds
    python bench/speed.py --app fuse_qkv=true --app compile=true   # more engine variants, each measured
    python bench/speed.py --scaling               # also the resolution x frames table (engine only)
    python bench/speed.py --cold-start            # also process start -> model ready, weights on disk

No download: a random-weight pipeline with exactly the shapes of ali-vilab/i2vgen-xl
(image_to_video/model_shapes.py) is written to --model-dir once and loaded with the
real loading code. Random weights cost the same time and memory as the real ones.

Variants, run in one process on the same inputs and seed:
  plain  what a user of diffusers would write: from_pretrained(dtype=float16).to("cuda"),
         prompt embeddings as the pipeline computes them (written in this file, not the app's),
         the pipeline's own decoding (output_type="np") with the app's default decode chunk size
         (diffusers' default is 1 frame at a time: that is the variant --app decode_chunk_size=1);
  app    the app's Engine as the server runs it, with its config's defaults, then one more
         engine per --app option set.
Per variant: seconds per video (median of --repeats, after a warm-up), UNet seconds per step,
decode seconds (last UNet step -> frames), peak GPU memory, achieved TFLOP/s against the
FLOPs counted on the meta device, speed-up over plain, and the largest pixel difference from
plain (0-255). Last, a table; --out writes everything as JSON, again after each variant (a run
cut off by a time limit keeps what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from image_to_video.families.i2vgen_xl import shapes as model_shapes  # noqa: E402
from image_to_video.config import ModelSettings  # noqa: E402
from image_to_video.engine import Engine  # noqa: E402
from image_to_video.request import GenerationRequest  # noqa: E402

PROMPT = "the waves roll in slowly"


def plain_prompt_embeds(pipe, text: str):
    """What the pipeline's default (clip_skip=1) computes, written here from diffusers' own
    ``encode_prompt``, not taken from the app: its text encoder's second-to-last hidden state through
    the final layer norm, 77 tokens (the pipeline's own path crashes with transformers >= 5.6)."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(pipe.device)
    encoder = pipe.text_encoder
    states = encoder(ids, output_hidden_states=True).hidden_states
    model = getattr(encoder, "text_model", encoder)
    return model.final_layer_norm(states[-2]).to(pipe.dtype)


def main() -> None:
    args = parse_args()
    quiet()
    import torch

    device, shapes = args.device, model_shapes.SHAPES[args.shapes]
    dtype = args.dtype or ("float16" if device.startswith("cuda") else "float32")
    model_dir = Path(args.model_dir or Path(tempfile.gettempdir()) / f"i2v-random-{shapes.name}-{dtype}")
    print(describe_machine(torch, device), flush=True)
    started = time.perf_counter()
    model_shapes.save_pipeline(shapes, model_dir, dtype=dtype, device=device)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the building copy's memory must not count as used for the variants
    print(f"random {shapes.name}-shape pipeline in {model_dir} ({time.perf_counter() - started:.0f} s)", flush=True)

    unet_tflop = model_shapes.count_unet_tflop(shapes, args.resolution, args.frames)
    decode_tflop = model_shapes.count_decode_tflop(shapes, args.resolution) * args.frames
    bench = Bench(args, device, dtype, model_dir, unet_tflop, decode_tflop)
    video_tflop = bench.video_tflop(args.steps)
    print(f"FLOPs (meta-device count): UNet call {unet_tflop:.4g} TFLOP, decode {decode_tflop:.4g} TFLOP, "
          f"video {video_tflop:.4g} TFLOP", flush=True)
    report = {"machine": describe_machine(torch, device), "shapes": shapes.name, "dtype": dtype,
              "settings": {"resolution": args.resolution, "frames": args.frames, "steps": args.steps,
                           "guidance": args.guidance, "repeats": args.repeats},
              "flops": {"unet_call_tflop": unet_tflop, "decode_tflop": decode_tflop, "video_tflop": video_tflop},
              "variants": [], "command": " ".join([Path(sys.executable).name, *sys.argv])}
    frames = {}  # variant -> its last video, for the pixel differences from plain
    for options in [None, {}, *args.app]:
        report["variants"].append(run_variant(bench, options, frames))
        save(report, args.out)  # after each variant: a run cut off by a time limit keeps what it measured
    if args.scaling:
        report["scaling"] = bench.scaling(shapes)
        save(report, args.out)
    if args.cold_start:
        report["cold_start"] = cold_start(args, device, dtype, model_dir)
    print_tables(report)
    if args.out:
        save(report, args.out)
        print(f"written: {args.out}")


def run_variant(bench, options: dict | None, frames: dict) -> dict:
    """plain (``options`` None) or one engine variant, compared with plain; a variant that cannot
    run here is a result too (its error), and the others go on."""
    if options is None:
        result = bench.run_plain()
        frames["plain"], frames["plain_seconds"] = result.pop("_frames"), result["seconds"]
        return result
    try:
        result = bench.run_app(options)
    except Exception as error:
        name = variant_name(options)
        print(f"{name}: failed: {type(error).__name__}: {error}", flush=True)
        return {"variant": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    plain = frames.get("plain")
    video = result.pop("_frames")
    if plain is not None and "seconds" in result:
        result["speedup_vs_plain"] = frames["plain_seconds"] / result["seconds"]
        difference = np.abs(video.astype(int) - plain.astype(int))
        result["max_pixel_diff_vs_plain"] = int(difference.max())
        result["mean_pixel_diff_vs_plain"] = float(difference.mean())
    return result


def save(report: dict, out: str | None) -> None:
    """The report so far, written whole (a temporary file renamed into place)."""
    if out:
        partial = Path(f"{out}.partial")
        partial.write_text(json.dumps(report, indent=2))
        partial.replace(out)


def quiet() -> None:
    """Only the measurements on screen: no progress bars, deprecation notices or CPU warnings."""
    import logging

    import diffusers
    import transformers

    logging.basicConfig(level=logging.ERROR)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small shapes on the CPU: 64x64, 4 frames, 3 steps")
    parser.add_argument("--shapes", choices=sorted(model_shapes.SHAPES))
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when there is one)")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--resolution", type=int, help="side in pixels (default 512; smoke 64)")
    parser.add_argument("--frames", type=int, help="default 16; smoke 4")
    parser.add_argument("--steps", type=int, help="default 50; smoke 3")
    parser.add_argument("--guidance", type=float, default=9.0)
    parser.add_argument("--repeats", type=int, help="timed videos per variant, the median is shown (default 3; smoke 2)")
    parser.add_argument("--app", action="append", default=[], type=parse_options, metavar="KEY=VALUE[,...]",
                        help="one more engine variant with these model settings, e.g. fuse_qkv=true")
    parser.add_argument("--scaling", action="store_true", help="also time the engine over resolution x frames")
    parser.add_argument("--scaling-steps", type=int, default=3, help="steps per scaling point (default 3)")
    parser.add_argument("--cold-start", action="store_true", help="also time a new process until ready")
    parser.add_argument("--model-dir", help="where the random pipeline is written (reused when there)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.device = args.device or "cpu"
    if not args.device:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.shapes = args.shapes or ("smoke" if args.smoke or args.device == "cpu" else "real")
    small = args.shapes == "smoke"
    args.resolution = args.resolution or (64 if small else 512)
    args.frames = args.frames or (4 if small else 16)
    args.steps = args.steps or (3 if small else 50)
    args.repeats = args.repeats or (2 if small else 3)
    return args


def parse_options(text: str) -> dict:
    """'fuse_qkv=true,attention_backend=flash' -> model settings; 'steps=25' sets this variant's steps."""
    fields = ModelSettings.__dataclass_fields__
    options = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key == "steps":
            options[key] = int(value)
            continue
        if key not in fields:
            raise argparse.ArgumentTypeError(f"{key} is not a model setting ({', '.join(fields)})")
        kind = type(getattr(ModelSettings(), key))
        options[key] = value.lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)
    return options


def describe_machine(torch, device: str) -> str:
    import diffusers
    import transformers

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        where = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
                 f"driver {driver_version()}")
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return (f"{where}; torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"transformers {transformers.__version__}, python {platform.python_version()}")


def driver_version() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def variant_name(options: dict) -> str:
    return "app" + "".join(f" {k}={v}" for k, v in options.items())


class StepClock:
    """Times each UNet call and the stretch from the last one to the end, with CUDA events on a GPU
    (no synchronisation inside the run) or the host clock on a CPU."""

    def __init__(self, torch, unet, device: str):
        self.torch, self.cuda = torch, device.startswith("cuda")
        self.marks: list = []
        self.hooks = [unet.register_forward_pre_hook(lambda *_: self.marks.append(self._mark())),
                      unet.register_forward_hook(lambda *_: self.marks.append(self._mark()))]

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self):
        self.marks = []
        self.begin = self._mark()

    def stop(self) -> dict:
        end = self._mark()
        if self.cuda:
            self.torch.cuda.synchronize()
            gap = lambda a, b: a.elapsed_time(b) / 1000  # noqa: E731
        else:
            gap = lambda a, b: b - a  # noqa: E731
        steps = [gap(a, b) for a, b in zip(self.marks[0::2], self.marks[1::2])]
        return {"seconds": gap(self.begin, end), "unet_s_per_step": statistics.median(steps) if steps else None,
                "decode_s": gap(self.marks[-1], end) if self.marks else None}

    def remove(self):
        for hook in self.hooks:
            hook.remove()


class Bench:
    def __init__(self, args, device: str, dtype: str, model_dir: Path, unet_tflop: float, decode_tflop: float):
        import torch
        from PIL import Image

        self.torch, self.args, self.device, self.dtype, self.model_dir = torch, args, device, dtype, model_dir
        self.unet_tflop, self.decode_tflop = unet_tflop, decode_tflop
        #: Plain diffusers decodes as many frames at once as the app does by default (diffusers' own
        #: default is 1); other chunk sizes are variants of their own (--app decode_chunk_size=N).
        self.decode_chunk = ModelSettings().decode_chunk_size
        rng = np.random.default_rng(0)
        picture = rng.integers(0, 256, (args.resolution, args.resolution, 3), dtype=np.uint8)
        self.image = Image.fromarray(picture)  # exactly the output size, as the app's requests are

    def request(self, steps: int | None = None, side: int | None = None, frames: int | None = None):
        a = self.args
        side = side or a.resolution
        image = self.image if side == a.resolution else self.image.resize((side, side))
        return GenerationRequest(image=image, prompt=PROMPT, negative_prompt="", resolution=f"{side}px",
                                 width=side, height=side, num_frames=frames or a.frames, fps=8,
                                 num_inference_steps=steps or a.steps, guidance_scale=a.guidance, seed=42)

    def _measure(self, name: str, unet, make_video, steps: int | None = None) -> dict:
        torch, cuda = self.torch, self.device.startswith("cuda")
        print(f"{name}: warm-up", flush=True)
        finite = []  # random weights must not overflow: every UNet output of the warm-up is checked

        def check(_module, _args, output):
            sample = output[0] if isinstance(output, tuple) else output.sample
            finite.append(torch.isfinite(sample).all())

        hook = unet.register_forward_hook(check)
        make_video(self.request(steps=2))
        hook.remove()
        if not all(bool(ok) for ok in finite):
            print(f"WARNING {name}: the UNet gave NaN or inf with these random weights; timings stand, "
                  "pixel differences do not", flush=True)
        clock = StepClock(torch, unet, self.device)
        runs, frames = [], None
        for _ in range(self.args.repeats):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            clock.start()
            frames = make_video(self.request(steps=steps))
            runs.append(clock.stop())
        clock.remove()
        seconds = statistics.median(run["seconds"] for run in runs)
        result = {"variant": name, "seconds": seconds,
                  "unet_s_per_step": statistics.median(run["unet_s_per_step"] for run in runs),
                  "decode_s": statistics.median(run["decode_s"] for run in runs),
                  "runs_s": [round(run["seconds"], 3) for run in runs],
                  "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                  "steps": steps or self.args.steps, "_frames": frames, "finite": all(bool(ok) for ok in finite),
                  "tflops": self.video_tflop(steps or self.args.steps) / seconds}
        print(f"{name}: {seconds:.2f} s per video, {result['unet_s_per_step']:.3f} s per UNet step", flush=True)
        return result

    def video_tflop(self, steps: int) -> float:
        return steps * self.unet_tflop + self.decode_tflop

    def run_plain(self) -> dict:
        torch = self.torch
        from diffusers import I2VGenXLPipeline

        variant = "fp16" if self.dtype == "float16" else None
        pipe = I2VGenXLPipeline.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype), variant=variant)
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)

        def make_video(request: GenerationRequest) -> np.ndarray:
            with torch.inference_mode():
                embeds = plain_prompt_embeds(pipe, request.prompt)
                negative = plain_prompt_embeds(pipe, request.negative_prompt)
                torch.manual_seed(request.seed)  # the engine seeds the same way: equal inputs, equal noise
                video = pipe(image=request.image, prompt_embeds=embeds, negative_prompt_embeds=negative,
                             height=request.height, width=request.width, num_frames=request.num_frames,
                             target_fps=request.fps, num_inference_steps=request.num_inference_steps,
                             guidance_scale=request.guidance_scale, output_type="np",
                             decode_chunk_size=self.decode_chunk,
                             generator=torch.Generator("cpu").manual_seed(request.seed)).frames[0]
            return (video * 255).round().astype(np.uint8)

        try:
            return {**self._measure("plain", pipe.unet, make_video), "decode_chunk_size": self.decode_chunk}
        finally:
            pipe = None  # the weights go before the next variant loads
            self._free()

    def engine(self, options: dict) -> Engine:
        settings = replace(ModelSettings(source=str(self.model_dir), device=self.device, dtype=self.dtype),
                           **options)
        side, frames = self.args.resolution, self.args.frames
        engine = Engine(settings, str(self.model_dir), self.model_dir.parent, warmup_shapes=((side, side, frames),))
        engine.load()
        if not engine.ready:
            raise RuntimeError(f"the engine did not load: {engine.status.message}")
        return engine

    def run_app(self, options: dict) -> dict:
        name = variant_name(options)
        options = dict(options)
        steps = options.pop("steps", None)
        started = time.perf_counter()
        engine = self.engine(options)
        load_s = time.perf_counter() - started
        try:
            result = self._measure(name, engine.denoiser, lambda request: engine.generate(request).frames, steps)
            result.update(load_s=load_s, memory_mode=engine.memory_mode, attention_backend=engine.attention_backend,
                          decode_chunk_size=engine.settings.decode_chunk_size)
            if engine.attention_backend != engine.settings.attention_backend:
                print(f"{name}: the {engine.settings.attention_backend} attention kernel cannot run here; "
                      "measured with PyTorch's choice", flush=True)
            return result
        finally:
            engine = None  # the weights go before the next variant loads
            self._free()

    def scaling(self, shapes) -> list[dict]:
        """The engine over resolution x frames, a few steps each: UNet s/step, decode s, peak GPU memory."""
        torch, cuda = self.torch, self.device.startswith("cuda")
        small = shapes.name == "smoke"
        sides = (64, 128) if small else (256, 512, 768, 1024)
        counts = (4, 8) if small else (8, 16, 24, 32)
        engine, rows = self.engine({}), []
        clock = StepClock(torch, engine.denoiser, self.device)
        for side in sides:
            for frames in counts:
                row = {"resolution": side, "frames": frames}
                try:
                    engine.generate(self.request(steps=1, side=side, frames=frames))  # cuDNN picks, allocator
                    if cuda:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    clock.start()
                    engine.generate(self.request(steps=self.args.scaling_steps, side=side, frames=frames))
                    timed = clock.stop()
                    row.update(unet_s_per_step=timed["unet_s_per_step"], decode_s=timed["decode_s"],
                               video_s_50_steps=50 * timed["unet_s_per_step"] + timed["decode_s"],
                               peak_gpu_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
                except Exception as error:  # out of memory at the largest sizes is a result too
                    row["error"] = f"{type(error).__name__}: {str(error)[:120]}"
                    engine.free_memory()
                print(f"scaling {side}px x {frames}: {row}", flush=True)
                rows.append(row)
        clock.remove()
        del engine
        self._free()
        return rows

    def _free(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()


def cold_start(args, device: str, dtype: str, model_dir: Path) -> dict:
    """A new Python process, from start to the engine ready, with the weights on local disk."""
    command = [sys.executable, __file__, "--load-only", "--device", device, "--dtype", dtype,
               "--model-dir", str(model_dir)]
    started = time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    total = time.perf_counter() - started
    inner = json.loads(output.strip().splitlines()[-1])
    print(f"cold start: {total:.1f} s to ready ({inner['load_s']:.1f} s of it loading)", flush=True)
    return {"process_to_ready_s": total, **inner}


def load_only(args) -> None:
    started = time.perf_counter()
    import torch

    imported = time.perf_counter() - started
    settings = ModelSettings(source=args.model_dir, device=args.device, dtype=args.dtype)
    engine = Engine(settings, args.model_dir, Path(args.model_dir).parent)
    began = time.perf_counter()
    engine.load()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    print(json.dumps({"import_s": imported, "load_s": time.perf_counter() - began, "ready": engine.ready,
                      "memory_mode": engine.memory_mode}))


def print_tables(report: dict) -> None:
    s = report["settings"]
    print(f"\n{report['machine']}")
    print(f"{report['shapes']} shapes, {report['dtype']}, {s['resolution']}x{s['resolution']}, {s['frames']} frames, "
          f"{s['steps']} steps, guidance {s['guidance']}; median of {s['repeats']}")
    print(f"{'variant':<40} {'steps':>5} {'s/video':>8} {'UNet s/step':>11} {'decode s':>8} {'peak GB':>8} "
          f"{'TFLOP/s':>8} {'x plain':>7} {'max px diff':>11} {'mean px diff':>12}")
    for v in report["variants"]:
        if "error" in v:
            print(f"{v['variant']:<40} failed: {v['error']}")
            continue
        peak = f"{v['peak_gpu_gb']:.2f}" if v["peak_gpu_gb"] is not None else "n/a"
        print(f"{v['variant']:<40} {v['steps']:>5} {v['seconds']:>8.2f} {v['unet_s_per_step']:>11.4f} "
              f"{v['decode_s']:>8.3f} {peak:>8} {v['tflops']:>8.2f} {v.get('speedup_vs_plain', 1.0):>7.2f} "
              f"{v.get('max_pixel_diff_vs_plain', 0):>11} {v.get('mean_pixel_diff_vs_plain', 0.0):>12.2f}")
    for row in report.get("scaling", []):
        if "error" in row:
            print(f"scaling {row['resolution']:>5}px {row['frames']:>3} frames: {row['error']}")
        else:
            peak = f"{row['peak_gpu_gb']:.2f} GB" if row["peak_gpu_gb"] is not None else "n/a"
            print(f"scaling {row['resolution']:>5}px {row['frames']:>3} frames: {row['unet_s_per_step']:.4f} s/step, "
                  f"decode {row['decode_s']:.3f} s, 50-step video ~{row['video_s_50_steps']:.1f} s, peak {peak}")
    if "cold_start" in report:
        print(f"cold start: {report['cold_start']['process_to_ready_s']:.1f} s from process start to ready")


if __name__ == "__main__":
    if "--load-only" in sys.argv:
        quiet()
        load_only(parse_args())
    else:
        main()
