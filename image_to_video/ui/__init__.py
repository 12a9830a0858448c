"""The Gradio page: upload, prompt, settings, Generate/Cancel, progress, result, your jobs, history.

Generate submits a job to the job queue and follows it; the job belongs to this
browser (an id the server issued and signed, kept in its local storage), so a reload
or a closed tab loses nothing: "Your jobs" shows it again, with its queue position
and progress. The page takes only files its own upload route stored.

The page speaks English and Simplified Chinese: it follows the browser's language
(remembered once switched), and every label, help text, status and message
follows the switch. Texts live in ``i18n.py``.

Layers, each importing only those below it: ``views`` (pure texts and tables),
``components`` (the custom components and the dataclasses naming the page's parts),
``events`` (the handlers), ``layout`` (builds the page and wires the events).
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from ..config import AppConfig
from ..job_queue import JobQueue
from ..outputs import OutputFolder
from .events import ModelInfo
from .layout import build_page

__all__ = ["ModelInfo", "build_ui"]


def build_ui(config: AppConfig, queue: JobQueue, outputs: OutputFolder, model: ModelInfo,
             workers: Callable[[], list] | None = None, fetches=None) -> gr.Blocks:
    """The page, with ``model`` (anything with ``status``, ``gpu_memory_gb`` and ``gpu_name``: the
    engine) for its status line and estimates, ``workers`` (what ``GET /api/workers`` lists) for its
    Workers panel, and ``fetches`` (``loras.Fetches``) for the LoRA downloads it starts. Nothing is
    started or loaded here; ``server`` mounts the result with the queue and server settings the app needs."""
    return build_page(config, queue, outputs, model, workers=workers, fetches=fetches)
