"""How far a generation is: the light type the engine reports and the jobs and the page read.

Free of torch, so the job queue, the page and their tests import it without the model's libraries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: The stages of one video, in order: loading the model it names (when a worker held another), the
#: model's (once per segment), then the finishing steps a job asked for, then the files.
STAGES = ("loading_model", "denoising", "decoding", "joining", "looping", "interpolating", "upscaling", "encoding", "gif", "webm",
          "png")


@dataclass(frozen=True)
class Progress:
    """One progress report: a stage, how far it is, and the estimated time left."""

    stage: str  # one of STAGES
    done: int
    total: int
    elapsed: float
    eta: float | None
    #: Every few denoising steps: a rough RGB picture of frames as they form (uint8, HxWx3).
    preview: np.ndarray | None = None
    #: Which segment the model is making (1-based) of how many; ``done`` and ``total`` then count
    #: the steps of all segments together.
    segment: int = 1
    segments: int = 1

    @property
    def eta_s(self) -> float | None:
        """The time left, to a tenth of a second, as jobs record and show it."""
        return None if self.eta is None else round(self.eta, 1)


ProgressFn = Callable[[Progress], None]


def ignore(_progress: Progress) -> None:
    """A ``ProgressFn`` for callers that do not follow progress."""
