"""What the families' pipeline code shares: how often a live preview comes, and how one is drawn.

A preview is a strip of a few frames, each latent pixel's colour a linear map of its channels (a
family's own factors), enlarged ``scale`` times: cheap enough to run every few steps, close enough to
cancel a bad job early.
"""

from __future__ import annotations

import numpy as np

#: Denoising steps between two live previews: a video shows about this many.
PREVIEWS_PER_VIDEO = 10


def nothing() -> None:
    """The default ``before_step`` / ``before_chunk``: no hook."""


def latent_strip(sample: np.ndarray, weights: np.ndarray, bias: np.ndarray | float = 0.0, *, frames: int,
                 scale: int) -> np.ndarray:
    """uint8 RGB, up to ``frames`` frames side by side, from one video's latents (channels, frames, h, w):
    ``weights`` (channels, 3) and ``bias`` map a pixel's channels to RGB in [-1, 1]."""
    picks = np.linspace(0, sample.shape[1] - 1, num=min(frames, sample.shape[1])).round().astype(int)
    rgb = np.einsum("cfhw,cr->fhwr", sample[:, picks], weights) + bias
    strip = np.concatenate(list(rgb), axis=1)
    strip = ((np.clip(strip, -1, 1) + 1) * 127.5).astype(np.uint8)
    return strip.repeat(scale, axis=0).repeat(scale, axis=1)
