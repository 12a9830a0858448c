"""The page's parts: three Gradio components checked by the app, the dataclasses that name every
component of the page, and the registry of what changes with the language.

``layout`` fills the dataclasses; ``events`` reads them to know what each handler updates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ..i18n import t

#: A text key, a list of them, or a function of the language.
TextKey = str | list[str] | Callable[[str], Any]


class UploadedImage(gr.Image):
    """``gr.Image`` that hands over the uploaded file untouched.

    The stock component opens the file with Pillow first and fails with a bare
    error on anything unreadable; the app's own normaliser gives a clear message.
    """

    is_template = True  # rendered by the frontend's ordinary Image component

    def preprocess(self, payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)


class Slider(gr.Slider):
    """``gr.Slider`` whose value is checked by the app, so an API caller's out-of-range
    value gets the same message naming the parameter as everyone else."""

    is_template = True

    def preprocess(self, payload):
        return payload


class SeedNumber(gr.Number):
    """``gr.Number`` checked by the app, like ``Slider``."""

    is_template = True

    def preprocess(self, payload):
        return payload


class Translations:
    """Every component property that follows the page's language, with its text key."""

    def __init__(self) -> None:
        self._texts: list[tuple[Any, dict[str, TextKey]]] = []

    def say(self, component, **keys: TextKey):
        """Register ``component``'s translatable properties; returns the component."""
        self._texts.append((component, keys))
        return component

    @property
    def components(self) -> list:
        return [component for component, _keys in self._texts]

    def updates(self, lang: str) -> dict:
        """``{component: update}`` setting every registered property in ``lang``."""
        return {component: gr.update(**{prop: _in_language(key, lang) for prop, key in keys.items()})
                for component, keys in self._texts}


def _in_language(key: TextKey, lang: str):
    if callable(key):
        return key(lang)
    return [t(k, lang) for k in key] if isinstance(key, list) else t(key, lang)


@dataclass
class Inputs:
    """The form: picture, prompts, preset, buttons, the generation settings and the seed."""

    image: Any
    prompt: Any
    negative_prompt: Any
    preset: Any
    generate: Any
    cancel: Any
    #: One control per ``config.PARAMETERS`` entry, in that order.
    parameters: tuple
    estimate: Any
    random_seed: Any
    seed: Any


@dataclass
class Outputs:
    """The result: the video, its live preview, description, files, and its seed to reuse."""

    video: Any
    preview: Any
    info: Any
    files: Any
    reuse_seed: Any
    last_seed: Any


@dataclass
class JobsTab:
    """"Your jobs": this browser's jobs, and retrying one."""

    table: Any
    selected: Any
    message: Any
    retry: Any


@dataclass
class HistoryTab:
    """"All videos": every video in the output folder, and what can be done with one."""

    table: Any
    picked: Any
    actions: Any
    reuse: Any
    same_seed: Any
    delete: Any
    message: Any


@dataclass
class Page:
    """Every component the events read or update."""

    lang: Any
    #: This browser's id, kept in its local storage.
    owner: Any
    subtitle: Any
    status: Any
    timer: Any
    manual: Any
    inputs: Inputs
    outputs: Outputs
    jobs: JobsTab
    history: HistoryTab
    translations: Translations = field(default_factory=Translations)
