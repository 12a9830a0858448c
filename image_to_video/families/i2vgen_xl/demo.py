"""Build the built-in demo model: a tiny, randomly initialised I2VGen-XL.

The demo model has the real pipeline's components and file layout (it is written
with ``save_pretrained`` and read back by the same ``from_pretrained`` code as the
real weights), so the whole app runs on any machine, CI included. Its weights are
random: it produces coloured noise, never a meaningful video.

It is shaped for speed on a small CPU (``model_shapes.DEMO``): no spatial attention
above the lowest UNet level, no attention in the VAE, a handful of channels. At the app's default
settings (512x512, 16 frames, 50 steps) one video takes well under a minute on
two CPU cores; ``bench/demo_speed.py`` measures it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import shapes as model_shapes

log = logging.getLogger(__name__)

#: Written into the model folder; the engine reads it to tell the UI this is the demo.
MARKER_FILE = "DEMO_MODEL.txt"
#: Bump when the architecture below changes, so old demo folders are rebuilt.
DEMO_VERSION = "1"

_MARKER_TEXT = (
    "This folder holds the Image-to-Video demo model (version {version}).\n"
    "Its weights are random: its videos are noise. It exists so the app runs\n"
    "anywhere without downloading the real I2VGen-XL weights (about 5 GB).\n"
)

def is_demo_model(path: Path) -> bool:
    """True when ``path`` is a demo model folder of the current version."""
    marker = Path(path) / MARKER_FILE
    return marker.is_file() and f"(version {DEMO_VERSION})" in marker.read_text(errors="replace")


def build_demo_model(path: Path, *, force: bool = False, seed: int = 0) -> Path:
    """Write the demo pipeline to ``path`` (no downloads) and return ``path``.

    Does nothing when an up-to-date demo model is already there, unless ``force``.
    The weights are the same for the same ``seed``, so two builds give the same videos.
    """
    path = Path(path)
    if is_demo_model(path) and not force:
        return path
    import torch  # heavy imports stay out of module import time

    log.info("Building the demo model in %s", path)
    state = torch.random.get_rng_state()  # building seeds the global RNG: give the caller's back
    try:
        pipe = model_shapes.build_pipeline(model_shapes.DEMO, seed=seed)
    finally:
        torch.random.set_rng_state(state)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    (tmp / MARKER_FILE).write_text(_MARKER_TEXT.format(version=DEMO_VERSION))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path
