"""Time the two interpolation methods (finishing.interpolate: RIFE and ffmpeg's minterpolate) and say
how well each places what moves.

    OMP_WAIT_POLICY=passive python bench/interpolation.py   # 512x512, 16 frames at 8 -> 24 fps, median of 3
    python bench/interpolation.py --size 256 --speed 30 --repeats 1

The clip is bench/finishing.py's: a smooth texture panning ``--pan`` px a frame and a bright disc moving
``--speed`` px a frame, drawn at three times the frame rate so that the true in-between frames are known.
For each method: seconds (median of ``--repeats``; RIFE's one-off weight loading is timed apart), the
PSNR of the in-between frames against the true ones, and how far the disc's centre is from where it should
be in them while it is wholly in the picture (mean and largest, pixels). Prints numbers only; nothing is
asserted. Torch uses its default threads (one per core) unless OMP_NUM_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from finishing import moving_frames, psnr  # noqa: E402  (bench/finishing.py)

from image_to_video import finishing  # noqa: E402


def disc_pixels(frame: np.ndarray) -> np.ndarray:
    return (frame[..., 0] > 220) & (frame[..., 1] > 200) & (frame[..., 2] < 110)


def disc_centre(frame: np.ndarray) -> tuple[float, float] | None:
    """The bright disc's centre (x, y): the mean of its pixels; None when none shows."""
    ys, xs = np.nonzero(disc_pixels(frame))
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--target-fps", type=int, default=24)
    parser.add_argument("--pan", type=float, default=6.0)
    parser.add_argument("--speed", type=float, default=16.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.target_fps != 3 * args.fps:
        parser.error("--target-fps must be three times --fps (the true in-between frames are drawn at 3x)")
    truth = moving_frames(args.frames * 3 - 2, args.size, pan=args.pan / 3, speed=args.speed / 3)
    frames = np.ascontiguousarray(truth[::3])
    import torch

    from image_to_video import rife

    print(f"{args.size}x{args.size}, {len(frames)} frames at {args.fps} fps -> {args.target_fps} fps; "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads (OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; the app sets passive); median of {args.repeats}")
    started = time.perf_counter()
    model = rife.load()
    print(f"  RIFE weights loaded in {time.perf_counter() - started:.2f} s on {model.device}")
    for method in finishing.INTERPOLATE_METHODS:
        seconds, out = [], None
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = finishing.interpolate_frames(frames, args.fps, args.target_fps, method=method)
            seconds.append(time.perf_counter() - started)
            out = result.frames
        assert result.method == method, result.fallback
        middles = [i for i in range(len(truth)) if i % 3]
        whole = max(int(disc_pixels(frame).sum()) for frame in truth)
        inside = [i for i in middles if disc_pixels(truth[i]).sum() >= 0.98 * whole]  # not cut by the edge
        errors = []
        for i in inside:
            found, true = disc_centre(out[i]), disc_centre(truth[i])
            errors.append(float("inf") if found is None else float(np.hypot(found[0] - true[0], found[1] - true[1])))
        print(f"  {method:7s} {statistics.median(seconds):7.2f} s  {len(out)} frames  "
              f"PSNR {np.mean([psnr(out[i], truth[i]) for i in middles]):6.2f} dB  "
              f"disc centre off by {np.mean(errors):5.2f} px on average, {max(errors):5.2f} px at most")


if __name__ == "__main__":
    main()
