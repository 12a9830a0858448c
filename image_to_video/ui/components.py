"""The page's parts: the page's Blocks and three Gradio components checked by the app, the dataclasses that name every
component of the page, and the registry of what changes with the language.

``layout`` fills the dataclasses; ``events`` reads them to know what each handler updates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from ..errors import shown
from ..i18n import normalise_language, t

log = logging.getLogger(__name__)

#: Longer than any path the upload route makes; a longer "path" is refused unread.
_MAX_PATH_CHARS = 4096

#: A text key, a list of them, or a function of the language.
TextKey = str | list[str] | Callable[[str], Any]


def uploaded_file(path: Any) -> str | None:
    """``path`` resolved, if it names a regular file that this server's upload route stored in
    Gradio's upload folder; None for anything else (another file of the server, a symlink or a
    ``..`` leading out of the folder, a device, a FIFO, a URL, not a string at all).

    Only names are looked at (resolve and ``lstat``): nothing is opened, so a special file
    can never block the caller.
    """
    if not isinstance(path, str) or not path or len(path) > _MAX_PATH_CHARS or "\0" in path:
        return None
    folder = os.path.realpath(get_upload_folder())
    resolved = os.path.realpath(path)
    if os.path.commonpath([folder, resolved]) != folder or resolved == folder:
        return None
    try:
        return resolved if stat.S_ISREG(os.lstat(resolved).st_mode) else None
    except (OSError, ValueError):
        return None


def _file_objects(value: Any) -> Iterator[dict]:
    """Every dict in ``value`` (at any depth) that Gradio would take for a file: one with a ``path``."""
    if isinstance(value, dict):
        if "path" in value:
            yield value
        for item in value.values():
            yield from _file_objects(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _file_objects(item)


class UploadRefused(gr.Error):
    """A file in an event's payload that this server's upload route did not store."""

    def __init__(self, lang: str):
        super().__init__(t("err_upload_again", lang), print_exception=False)


class PageBlocks(gr.Blocks):
    """``gr.Blocks`` that checks every file an event's caller names before Gradio touches it.

    Gradio copies (and hashes) a caller's file into its cache on the event loop before any
    component's ``preprocess``, and its own upload-folder check is off for an app mounted with
    ``gr.mount_gradio_app`` (docs/DEPENDENCIES.md, "Gradio: files in event payloads"). So the
    check runs here, first: every file object in every input must be an upload of this server
    (``uploaded_file``), and a component may refuse a payload of the wrong shape
    (``check_payload``). A refusal names what to do, in the page's language.
    """

    #: The language radio, whose value (when an event sends it) picks the message's language.
    lang_component: Any = None

    async def process_api(self, block_fn, inputs, *args, **kwargs):
        """Run one event; a payload the page cannot have sent (a value of the wrong kind, which
        breaks a handler or a component) gets words and one log line, never a traceback."""
        try:
            return await super().process_api(block_fn, inputs, *args, **kwargs)
        except Exception as error:
            if isinstance(error, gr.Error) and not error.print_exception:
                raise  # the app's own message, already in words
            name = getattr(block_fn, "api_name", None) or getattr(block_fn, "name", "?")
            log.warning("Refused a call of page event %s: %s: %s", name, type(error).__name__, shown(str(error)))
            raise gr.Error(t("err_page_call", self._language(block_fn.inputs, inputs)), print_exception=False) from None

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        if not explicit_call:
            self.check_files(block_fn.inputs, inputs)
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)

    def check_files(self, components: list, inputs: list) -> None:
        """Raise ``UploadRefused`` unless every file in ``inputs`` is this server's upload."""
        lang = self._language(components, inputs)
        for component, value in zip(components, inputs):
            check = getattr(component, "check_payload", None)
            if check is not None and not check(value):
                raise UploadRefused(lang)
            if any(uploaded_file(item.get("path")) is None for item in _file_objects(value)):
                raise UploadRefused(lang)

    def _language(self, components: list, inputs: list) -> str:
        for component, value in zip(components, inputs):
            if component is self.lang_component and isinstance(value, str):
                return normalise_language(value)
        return "en"


class UploadedImage(gr.Image):
    """``gr.Image`` that hands over the uploaded file's path untouched.

    The stock component opens the file with Pillow first and fails with a bare error on
    anything unreadable; the app's own normaliser gives a clear message. The payload must
    be nothing or one file this server's upload route stored (``PageBlocks`` checks it
    before Gradio reads anything; ``preprocess`` checks again in case of another caller).
    """

    is_template = True  # rendered by the frontend's ordinary Image component

    @staticmethod
    def check_payload(payload: Any) -> bool:
        """True for no picture or for an upload of this server, as Gradio sends them."""
        return payload is None or (isinstance(payload, dict) and uploaded_file(payload.get("path")) is not None)

    def preprocess(self, payload):
        if payload is None:
            return None
        path = uploaded_file(getattr(payload, "path", None))
        if path is None:
            raise UploadRefused("en")
        return path


class CacheSweeper:
    """Keeps Gradio's upload folder from growing for the life of the server.

    Gradio keeps a copy of every upload, preview and result there; its own ``delete_cache``
    misses the copies made through a session's updated components (docs/DEPENDENCIES.md,
    "Gradio's cache"). So every ``every_s`` seconds this removes each file older than
    ``older_than_s`` (by its last change) except those ``keep()`` names (the examples), and the
    folders left empty. The folder is the app's own (``start_app.sh`` sets ``GRADIO_TEMP_DIR``).
    """

    def __init__(self, folder: str | os.PathLike, every_s: float, older_than_s: float,
                 keep: Callable[[], set[str]] = set):
        self.folder, self.every_s, self.older_than_s, self.keep = Path(folder), every_s, older_than_s, keep
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Start sweeping in a background thread (once; Gradio awaits this at startup)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gradio-cache-sweeper", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.every_s)
            try:
                self.sweep()
            except OSError as error:  # a full or read-only disk: try again next time
                log.warning("Cleaning Gradio's cache %s failed: %s", self.folder, error)

    def sweep(self) -> int:
        """Remove the old files now; returns how many."""
        cutoff, kept = time.time() - self.older_than_s, {os.path.realpath(p) for p in self.keep()}
        removed = 0
        for root, dirs, files in os.walk(self.folder, topdown=False):
            for name in files:
                removed += _remove_if_old(os.path.join(root, name), cutoff, kept)
            if root != str(self.folder):
                with contextlib.suppress(OSError):
                    os.rmdir(root)  # only when empty
        if removed:
            log.info("Removed %d old file(s) from Gradio's cache %s", removed, self.folder)
        return removed


def _remove_if_old(path: str, cutoff: float, kept: set[str]) -> int:
    try:
        info = os.lstat(path)
        if max(info.st_mtime, info.st_ctime) >= cutoff or os.path.realpath(path) in kept:
            return 0
        os.unlink(path)
        return 1
    except OSError:
        return 0  # gone meanwhile


class Slider(gr.Slider):
    """``gr.Slider`` whose value is checked by the app, so an API caller's out-of-range
    value gets the same message naming the parameter as everyone else."""

    is_template = True

    def preprocess(self, payload):
        return payload


class Choice(gr.Radio):
    """``gr.Radio`` whose value is checked by the app (the resolution: ``build_request`` names the
    setting and the allowed values), not by Gradio, which logs a traceback and echoes any value whole."""

    is_template = True

    def preprocess(self, payload):
        return payload


class Choices(gr.CheckboxGroup):
    """``gr.CheckboxGroup`` whose values are checked by the app (the formats), like ``Choice``."""

    is_template = True

    def preprocess(self, payload):
        return payload


class Language(gr.Radio):
    """The page's language switch: any value a caller sends becomes one of the page's languages."""

    is_template = True

    def preprocess(self, payload):
        return normalise_language(payload)


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
    #: Under the prompt: what happens to a prompt that is not English.
    prompt_note: Any = None
    #: The steps after the model, in ``request.FINISHING_DEFAULTS`` order (``continue_from`` first:
    #: a hidden box with the name of the video being continued).
    finishing: tuple = ()
    finishing_box: Any = None
    #: Says which video is being continued, with a button to stop continuing it.
    continuing: Any = None
    stop_continuing: Any = None
    #: The video's shape (auto or a ratio), the picture it ends on (only shown for a model that can),
    #: and under the picture, the size and crop it will get.
    aspect: Any = None
    last_image: Any = None
    crop_note: Any = None
    #: Which of the server's models makes the video (hidden where it offers one), and how it stands here.
    model: Any = None
    model_note: Any = None
    #: How "smoother motion" adds its frames (``interpolate_method``: RIFE or ffmpeg), in the finishing box.
    interpolate_method: Any = None
    #: The MP4's quality (its CRF), in the finishing box.
    crf: Any = None
    #: Beside Generate: one line naming every option the next video gets (``views.options_summary``), and
    #: the button that sets them all back to a plain video.
    summary: Any = None
    plain: Any = None
    #: "Cancel all (N)": every unfinished job of this page (``cancel``: only the job the video area shows).
    cancel_all: Any = None
    #: The LoRAs (``lora_picker.LoraBox``): the picker, the ``loras`` box, the Fast preset's note and download.
    loras: Any = None
    #: In the finishing box: a video of the creator's own to continue (MP4 or WebM), checked by the server.
    bring: Any = None


@dataclass
class Outputs:
    """The result: the video, its live preview, description, files, and its seed to reuse."""

    video: Any
    preview: Any
    info: Any
    files: Any
    reuse_seed: Any
    last_seed: Any
    #: "Continue this video" under the result, and the name of the video shown (for it).
    continue_video: Any = None
    shown: Any = None
    #: The job the video area follows (a ``gr.State``, never the browser's word): ``{"job": id,
    #: "final": whether its end is shown, "quiet": its progress is shown by Generate itself}``.
    following: Any = None


@dataclass
class JobsTab:
    """"Your jobs": this browser's jobs, and retrying one."""

    table: Any
    selected: Any
    message: Any
    retry: Any
    #: Cancel the selected job only.
    cancel: Any = None


@dataclass
class HistoryTab:
    """"All videos": a gallery of the finished videos, newest first, and what can be done with one."""

    gallery: Any
    picked: Any
    actions: Any
    reuse: Any
    same_seed: Any
    delete: Any
    message: Any
    continue_video: Any = None
    #: The names the gallery shows, in its order (a ``gr.State``: a click's index is looked up here).
    names: Any = None
    #: Delete asks first: the question and its two answers.
    confirm: Any = None
    confirm_delete: Any = None
    keep: Any = None


@dataclass
class ManyTab:
    """Many pictures at once: the files, their prompts, the button, what was queued."""

    files: Any
    prompts: Any
    queue_all: Any
    summary: Any


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
    many: ManyTab | None = None
    #: The Workers panel (each worker's device, state, current job).
    workers: Any = None
