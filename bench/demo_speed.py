"""Time the demo model at the app's default settings (512x512, 16 frames, 50 steps).

    python bench/demo_speed.py [--runs 2] [--resolution 512p] [--frames 16] [--steps 50]

Builds the demo model in a temp folder, loads it through the app's engine, and makes
videos through the same service the page uses; prints the time of each stage.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_to_video import app as composition  # noqa: E402
from image_to_video.config import load_config  # noqa: E402
from image_to_video.examples import ensure_examples  # noqa: E402
from image_to_video.request import build_request  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--resolution", default="512p")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    composition.setup_logging("WARNING")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(overrides={"model.demo": True, "paths.models_dir": f"{tmp}/models",
                                        "paths.output_dir": f"{tmp}/outputs", "paths.state_dir": f"{tmp}/data",
                                        "paths.log_dir": f"{tmp}/logs"})
        started = time.perf_counter()
        app = composition.build(config)
        engine = app.engine
        engine.load()
        print(f"build + load demo model: {time.perf_counter() - started:.1f} s")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        image = ensure_examples(Path(tmp) / "examples")[0][0]
        print(f"settings: {args.resolution}, {args.frames} frames, {args.steps} steps")
        for run in range(1, args.runs + 1):
            request = build_request(config, image=image, prompt="the waves roll in slowly",
                                    resolution=args.resolution, num_frames=args.frames,
                                    num_inference_steps=args.steps, seed=run)
            result = app.service.make_video(request)
            t = result.metadata["timings_s"]
            print(f"run {run}: total {t['total']:.1f} s = denoise {t['denoise']:.1f} s "
                  f"({t['denoise'] / args.steps:.3f} s/step) + decode {t['decode']:.1f} s "
                  f"+ encode {t['encode']:.1f} s; peak process memory "
                  f"{result.metadata['peak_process_memory_gb']:.2f} GB")


if __name__ == "__main__":
    main()
