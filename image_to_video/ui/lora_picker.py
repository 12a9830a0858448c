"""The page's LoRAs: pick several of the LoRA files on disk, each with its strength, and the Fast preset's.

The form's ``loras`` box holds what the job gets, as the API takes it (``name:strength,...``; ``@high`` or
``@low`` puts a file into one expert of Wan2.2-I2V-A14B); the picker beside it adds a LoRA at strength 1 or
drops one, keeping the strengths typed. The box is shown only for a model that takes LoRAs, and the server
checks every name and strength when the job is submitted (``loras.check``), as for the API.

Picking the Fast preset puts its LoRAs into the box (another preset takes them out). Where they are not on
disk yet, the note under the box says so, with a button that downloads them (``loras.Fetches``, as
``POST /api/loras`` does) and shows the progress until they are there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .. import catalogue, families, loras
from ..errors import AppError
from ..i18n import localized, t

#: How often the download button's note shows the progress, and how long it follows a download at most.
PROGRESS_EVERY_S, FOLLOW_AT_MOST_S = 1.0, 6 * 3600


@dataclass
class LoraBox:
    """The LoRA controls of the form: the picker and the box (in the settings), and the note with the
    Fast download under the presets (where a creator who picked Fast sees it)."""

    box: Any
    picker: Any
    text: Any
    note: Any
    download: Any


def build_note() -> tuple[Any, Any]:
    """The note and the download button, hidden until the box names a Fast LoRA that is not on disk."""
    note = gr.Markdown("", elem_id="lora-note")
    download = gr.Button(t("fast_download", size="?"), size="sm", visible=False, elem_id="fast-download")
    return note, download


def build(say: Callable, card: families.Card, models_dir: Path, note: Any, download: Any) -> LoraBox:
    """The picker and the box, for the server's own model (``card``); shown only when it takes LoRAs."""
    with gr.Group(visible=card.loras, elem_id="lora-box") as box:
        picker = say(gr.Dropdown(choices=list(loras.available(models_dir)), value=[], multiselect=True,
                                 label=t("lora_picker"), info=t("lora_picker_help"), elem_id="lora-picker"),
                     label="lora_picker", info="lora_picker_help")
        text = say(gr.Textbox("", label=t("param_loras"), info=t("loras_help"), elem_id="loras", max_lines=2),
                   label="param_loras", info="loras_help")
    return LoraBox(box, picker, text, note, download)


class LoraEvents:
    """The handlers: the picker and the box, the preset's LoRAs, the Fast download and the note."""

    def __init__(self, page_box: LoraBox, models_dir: Path, cards: Callable[[Any], families.Card],
                 fetches: loras.Fetches | None, presets: Callable[[Any], Mapping]):
        """``cards(model)``: the picked model's card (the server's own for one it does not offer);
        ``presets(model)``: its generation presets by name."""
        self.ui, self.models_dir, self.cards, self.presets = page_box, Path(models_dir), cards, presets
        self.fetches = fetches or loras.Fetches(models_dir)

    # -- the picker and the box --------------------------------------------------------------------------
    def picked(self, names, text) -> dict:
        """The box after the picker changed: the picked LoRAs kept with their strengths, new ones at 1,
        unpicked ones dropped (a name typed with an expert counts as that LoRA)."""
        names = [str(name) for name in names or [] if isinstance(name, str)]
        kept = [(name, strength) for name, strength in _entries(text) if _file_of(name) in names]
        have = {_file_of(name) for name, _ in kept}
        kept += [(name, "1") for name in names if name not in have]
        return {self.ui.text: ",".join(f"{name}:{strength}" for name, strength in kept)}

    def switched(self, model, lang) -> dict:
        """Another model was picked: its settings start from its defaults, so the box starts empty."""
        return {self.ui.text: "", **self.for_model(model, lang, "")}

    def for_model(self, model, lang, text="") -> dict:
        """The box for the picked model: shown when it takes LoRAs, the files on disk to pick from, the
        note (the Fast preset's state)."""
        card = self.cards(model)
        on_disk = list(loras.available(self.models_dir))
        chosen = [name for name in dict.fromkeys(_file_of(name) for name, _ in _entries(text)) if name in on_disk]
        return {self.ui.box: gr.update(visible=card.loras), self.ui.picker: gr.update(choices=on_disk, value=chosen),
                **self.note(model, lang, text, on_disk)}

    def preset(self, name, model, text, lang) -> dict:
        """The box after a preset was picked: the Fast preset adds its LoRAs at full strength (keeping the
        others), any other takes them out."""
        card = self.cards(model)
        if card.fast is None or not isinstance(name, str) or name not in self.presets(model):
            return {self.ui.text: gr.update()}
        fast = set(card.fast.names())
        others = [(entry, strength) for entry, strength in _entries(text) if _file_of(entry) not in fast]
        if name == card.fast.preset:
            others = [*_entries(card.fast.loras_text()), *others]
        text = ",".join(f"{entry}:{strength}" for entry, strength in others)
        return {self.ui.text: text, **self.for_model(model, lang, text)}

    def note(self, model, lang, text="", on_disk=None) -> dict:
        """Under the box: the Fast preset's LoRAs when the box names them and they are not downloaded yet,
        with the button that fetches them (``on_disk``: the LoRA names there, when just read)."""
        card = self.cards(model)
        missing = _missing_fast(card, text, loras.available(self.models_dir) if on_disk is None else on_disk)
        if not missing:
            return {self.ui.note: "", self.ui.download: gr.update(visible=False)}
        size = f"{card.fast.size_gb():.1f}"
        return {self.ui.note: t("fast_missing", lang, names=", ".join(missing), size=size, model=card.name),
                self.ui.download: gr.update(visible=True, value=t("fast_download", lang, size=size))}

    def download(self, model, lang, text="") -> Iterator[dict]:
        """Fetch the picked model's Fast LoRAs (the server's ``loras.Fetches``), showing the progress until
        each is on disk or failed."""
        card = self.cards(model)
        try:  # a model without a Fast preset is said so there
            self.fetches.start(catalogue.lora_sources(card.name, None, None, None))
        except AppError as error:
            yield {self.ui.note: "⚠️ " + localized(error, lang)}
            return
        names, started, failed = set(card.fast.names()), time.monotonic(), []
        yield {self.ui.download: gr.update(interactive=False)}
        while time.monotonic() - started < FOLLOW_AT_MOST_S:
            items = [item for item in self.fetches.state(lang) if item["name"] in names][-len(names):]
            running = [item for item in items if item["state"] in ("waiting", "downloading")]
            failed = [item for item in items if item["state"] == "failed"]
            if not running:
                break
            yield {self.ui.note: "⏬ " + "; ".join(_progress(item, lang) for item in items)}
            time.sleep(PROGRESS_EVERY_S)
        if failed:  # the first one's reason in full (the others' is most often the same), the others named
            first, others = failed[0], [item["name"] for item in failed[1:]]
            text = f"⚠️ {first['name']}: {first['error']}"
            yield {self.ui.note: text + (" " + t("fast_failed_too", lang, names=", ".join(others)) if others else ""),
                   self.ui.download: gr.update(interactive=True)}
            return
        yield {**self.for_model(model, lang, text), self.ui.download: gr.update(visible=False, interactive=True),
               self.ui.note: t("fast_ready", lang)}


def _entries(text) -> list[tuple[str, str]]:
    """The box's ``name:strength`` entries as typed, in order (a name alone: strength 1); what does not
    parse is left for the server to refuse with words when the job is submitted."""
    entries = []
    for item in str(text or "").split(","):
        name, colon, strength = item.strip().rpartition(":")
        name, strength = (name.strip(), strength.strip()) if colon else (strength.strip(), "1")
        if name:
            entries.append((name, strength or "1"))
    return entries


def _file_of(entry: str) -> str:
    """``"style@low"`` -> ``"style"``: the LoRA file an entry names."""
    return loras.split_expert(entry)[0]


def _missing_fast(card: families.Card, text, on_disk) -> list[str]:
    """The Fast preset's LoRAs the box names that are not ``on_disk``."""
    if card.fast is None:
        return []
    named = {_file_of(entry) for entry, _ in _entries(text)}
    return [name for name in card.fast.names() if name in named and name not in on_disk]


def _progress(item: Mapping[str, Any], lang: str) -> str:
    if item["state"] == "waiting":
        return t("fast_waiting", lang, name=item["name"])
    if item["total_mb"]:
        return t("fast_progress", lang, name=item["name"], done=f"{item['done_mb']:.0f}",
                 total=f"{item['total_mb']:.0f}")
    return t("fast_starting", lang, name=item["name"])
