"""Time each finishing step (image_to_video/finishing.py) on synthetic moving frames.

    python bench/finishing.py                 # 512x512, 16 frames, 8 fps; median of 3 runs per step
    python bench/finishing.py --modes         # also measure the choices finishing.py makes
    python bench/finishing.py --size 256 --frames 8 --repeats 5

The frames: a smooth random texture panning left with a bright disc moving across it. --modes
measures, on the same kind of clip: minterpolate's modes (RIFE against minterpolate:
bench/interpolation.py) against the true in-between frames
(the clip is drawn at three times the frame rate and every third frame is the input; PSNR of the
in-between frames, higher is better), the GIF's dithers (size, PSNR against the frames) and VP9's
speed settings (time, size, PSNR). Prints numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_to_video import finishing  # noqa: E402
from image_to_video.video import write_video  # noqa: E402


def moving_frames(count: int, size: int, *, pan: float = 6.0, speed: float = 16.0, grain: int = 32,
                  seed: int = 0) -> np.ndarray:
    """``count`` frames of ``size`` x ``size``: a smooth texture (random colours ``grain`` px apart,
    bicubic) panning ``pan`` px a frame, and a disc moving ``speed`` px a frame. Three times the
    frames at a third of the motion draws the same clip with the true frames in between."""
    rng = np.random.default_rng(seed)
    wide = size + int(np.ceil(pan * count)) + 1
    cells = rng.integers(0, 256, (max(2, size // grain), max(2, wide // grain), 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(cells).resize((wide, size), Image.BICUBIC))
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(count):
        offset = int(round(i * pan))
        frame = texture[:, offset:offset + size].copy()
        cx, cy = size * 0.15 + i * speed, size * 0.5 + size * 0.1 * np.sin(i * speed / size * 4)
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (size * 0.12) ** 2] = (250, 240, 60)
        frames.append(frame)
    return np.stack(frames)


def median_seconds(step: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255 ** 2 / error)


@contextlib.contextmanager
def setting(name: str, value: object) -> Iterator[None]:
    """finishing.<name> set to ``value`` for the block (the steps read these constants at each call)."""
    old = getattr(finishing, name)
    setattr(finishing, name, value)
    try:
        yield
    finally:
        setattr(finishing, name, old)


def time_steps(frames: np.ndarray, fps: int, repeats: int, folder: Path) -> None:
    steps = {
        "minterpolate to 16 fps": lambda: finishing.interpolate(frames, fps, 16, method="ffmpeg"),
        "minterpolate to 24 fps": lambda: finishing.interpolate(frames, fps, 24, method="ffmpeg"),
        "RIFE to 24 fps": lambda: finishing.interpolate(frames, fps, 24, method="rife"),
        "boomerang": lambda: finishing.boomerang(frames),
        "crossfade": lambda: finishing.crossfade(frames),
        "upscale 2x": lambda: finishing.upscale(frames, 2),
        "gif (max 50 MB)": lambda: finishing.write_gif(frames, fps, folder / "v.gif", max_mb=50),
        "webm": lambda: finishing.write_webm(frames, fps, folder / "v.webm"),
        "mp4 (reference)": lambda: write_video(frames, folder / "v.mp4", fps),
    }
    for name, step in steps.items():
        print(f"  {name:24s} {median_seconds(step, repeats):7.3f} s")
    for name in ("v.gif", "v.webm", "v.mp4"):
        print(f"  size of {name:16s} {(folder / name).stat().st_size / 1e3:8.1f} kB")


def interpolation_modes(size: int, frames: int) -> None:
    print("minterpolate 8 -> 24 fps: PSNR of the in-between frames against the true ones (dB), seconds")
    variants = {"dup (repeat)": "minterpolate=fps={fps}:mi_mode=dup",
                "blend": "minterpolate=fps={fps}:mi_mode=blend"}
    for mc in ("obmc", "aobmc"):
        for me in ("bidir", "bilat"):
            for vsbmc in (0, 1):
                variants[f"mci {mc} {me} vsbmc={vsbmc}"] = (
                    f"minterpolate=fps={{fps}}:mi_mode=mci:mc_mode={mc}:me_mode={me}:vsbmc={vsbmc}:scd=none")
    variants["chosen, but scd=fdiff"] = finishing.MINTERPOLATE.replace("scd=none", "scd=fdiff")
    scenes = {"smooth pan + disc": dict(pan=6.0, speed=20.0, grain=32),
              "slow pan + slow disc": dict(pan=2.0, speed=8.0, grain=16),
              "fast pan, fine texture": dict(pan=8.0, speed=4.0, grain=8)}
    print(f"  {'':28s}" + "".join(f"{name:>24s}" for name in scenes))
    clips = {name: moving_frames(frames * 3, size, pan=p["pan"] / 3, speed=p["speed"] / 3, grain=p["grain"])
             for name, p in scenes.items()}
    middles = [i for i in range((frames - 1) * 3) if i % 3]
    for label, graph in variants.items():
        cells = []
        for truth in clips.values():
            with setting("MINTERPOLATE", graph):
                started = time.perf_counter()
                out = finishing.interpolate(truth[::3], 8, 24, method="ffmpeg")
                seconds = time.perf_counter() - started
            cells.append(f"{np.mean([psnr(out[i], truth[i]) for i in middles]):6.2f} dB {seconds:5.2f} s")
        print(f"  {label:28s}" + "".join(f"{cell:>24s}" for cell in cells))


def gif_dithers(frames: np.ndarray, fps: int, folder: Path) -> None:
    print("GIF dither: size, PSNR against the frames, seconds")
    chosen = finishing.GIF_GRAPH
    for dither in ("bayer:bayer_scale=3", "bayer:bayer_scale=2", "sierra2_4a", "floyd_steinberg", "none"):
        graph = chosen.replace("dither=bayer:bayer_scale=3", f"dither={dither}")
        with setting("GIF_GRAPH", graph):
            started = time.perf_counter()
            result = finishing.write_gif(frames, fps, folder / "d.gif", max_mb=1000)
            seconds = time.perf_counter() - started
        decoded = finishing.decode_frames(folder / "d.gif")
        print(f"  {dither:22s} {result.size_mb * 1024:8.1f} KiB {psnr(decoded, frames):6.2f} dB {seconds:6.2f} s")


def vp9_speeds(frames: np.ndarray, fps: int, folder: Path) -> None:
    print("VP9 at -crf 32: seconds, size, PSNR against the frames")
    chosen = finishing.WEBM_OPTIONS
    at = chosen.index("-cpu-used")
    for deadline, cpu_used in (("good", "1"), ("good", "2"), ("good", "4"), ("good", "5"), ("realtime", "8")):
        options = [*chosen[:at - 1], deadline, "-cpu-used", cpu_used, *chosen[at + 2:]]
        with setting("WEBM_OPTIONS", options):
            started = time.perf_counter()
            finishing.write_webm(frames, fps, folder / "s.webm")
            seconds = time.perf_counter() - started
        decoded = finishing.decode_frames(folder / "s.webm")
        size = (folder / "s.webm").stat().st_size / 1e3
        print(f"  -deadline {deadline:8s} -cpu-used {cpu_used}  {seconds:6.2f} s {size:8.1f} kB "
              f"{psnr(decoded, frames):6.2f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", action="store_true", help="also measure the choices finishing.py makes")
    args = parser.parse_args()
    frames = moving_frames(args.frames, args.size)
    print(f"{args.size}x{args.size}, {args.frames} frames at {args.fps} fps; {os.cpu_count()} cores; "
          f"median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        time_steps(frames, args.fps, args.repeats, Path(tmp))
        if args.modes:
            interpolation_modes(args.size, args.frames)
            gif_dithers(frames, args.fps, Path(tmp))
            vp9_speeds(frames, args.fps, Path(tmp))


if __name__ == "__main__":
    main()
