"""The test run's one real inductor compile, started in a process of its own when the run begins.

    python -m tests.compile_warmup MODELS_DIR

It builds the demo model into ``MODELS_DIR`` and loads it with ``model.compile`` on, through the engine's
own path, so the compiled kernels land in ``MODELS_DIR/.compile-cache``. The compile tests load the same
model with the same cache afterwards and find the kernels there: the run pays for one compile, on the
core the tests before them leave idle (conftest starts it; the ``compile_models`` fixture waits for it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from image_to_video.config import DEMO_MODEL_DIR, ModelSettings
from image_to_video.demo_model import build_demo_model
from image_to_video.engine import Engine

#: The shape the compile tests warm up (64x64, 4 frames).
WARMUP_SHAPES = ((64, 64, 4),)


def main(models: Path) -> int:
    demo = build_demo_model(models / DEMO_MODEL_DIR)
    engine = Engine(ModelSettings(source=str(demo), compile=True), str(demo), models, warmup_shapes=WARMUP_SHAPES)
    engine.load()
    print(engine.status.message, flush=True)
    return 0 if engine.ready else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
