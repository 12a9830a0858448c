"""Prompts not in English, translated to English on the server before the model reads them.

I2VGen-XL's text encoder (CLIP) reads English: a Chinese prompt would be accepted and mostly
ignored. ``needs_translation`` tells such a prompt from an English one without any model;
``Translator`` turns it into English with a MarianMT model (Helsinki-NLP/opus-mt-zh-en by default),
downloaded once into ``models_dir`` through ``model_store`` like the main weights, and run on the CPU.

The translator downloads only in ``load()`` (or ``start_loading()``), which the app calls once at
start; used before that, it loads a folder that is already on disk and never reaches the network.
Whatever goes wrong (no network, offline, a missing or broken folder) ends in the state
"unavailable" with a message saying why and what to do, never in a traceback.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import model_store
from .model_store import plain_network_error
from .config import PROJECT_DIR, TranslationSettings
from .errors import AppError, ModelUnavailable
from .i18n import t

log = logging.getLogger(__name__)

OFF, LOADING, READY, UNAVAILABLE = "off", "loading", "ready", "unavailable"

#: Beams searched per sentence (1 would be greedy search): a small beam.
BEAMS = 4
#: Characters of an error quoted in a status message; the log has the whole error.
_ERROR_CHARS = 200
#: A non-Latin, non-CJK script is "not English" from this share of a prompt's letters on.
_FOREIGN_SHARE = 0.2
#: Unicode character names of the scripts whose single letters are whole words (Han, kana, hangul).
_CJK_NAMES = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA", "HANGUL",
              "BOPOMOFO")
#: Where a prompt is cut into sentences: after Chinese or Latin sentence ends and line breaks.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;\n])|(?<=\.)(?=\s)")
#: model_store's download failures, said as the translator's own (with the translator's remedy).
_REASONS = {"err_model_offline": "translator_offline", "err_model_download": "translator_download_failed",
            "err_model_folder_missing": "translator_folder_missing"}


def needs_translation(text: str) -> bool:
    """True when the prompt is not English and the model would not understand it.

    The rule, on the prompt's letters (``str.isalpha``; digits, punctuation and spaces do not count):
    any Han character, kana or hangul makes it True (one such character is a whole word: "a cat 在跑");
    otherwise it is True when letters of non-Latin scripts (Cyrillic, Greek, Arabic, ...) are at least
    a fifth of its letters, so one "π" or "café au lait" (accented Latin) stays English. Text with no
    letters (digits, punctuation) is False: there is nothing to translate.
    """
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return False
    names = [unicodedata.name(char, "") for char in letters]
    if any(name.startswith(_CJK_NAMES) for name in names):
        return True
    foreign = sum("LATIN" not in name.split() for name in names)
    return foreign >= _FOREIGN_SHARE * len(letters)


@dataclass(frozen=True)
class TranslatorStatus:
    """Where the translator stands, for the page to say before a job starts.

    ``state`` is off, loading, ready or unavailable; ``key`` and ``params`` are the i18n message
    saying so (for unavailable: why, and what to do); ``source`` is the configured folder or repo id.
    """

    state: str
    key: str
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def message(self, lang: str | None = None) -> str:
        """The status in ``lang`` (English by default)."""
        return t(self.key, lang, **self.params)


class Translator:
    """MarianMT from a folder or a hub repo id, on the CPU in float32, loaded once; thread-safe.

    One lock guards the loaded model and each translation (the tokenizer keeps state between its
    calls, so two translations never run at once); a second lock is held by the one load in progress.
    """

    def __init__(self, settings: TranslationSettings, models_dir: Path):
        self.settings = settings
        self.models_dir = Path(models_dir)
        self.source = _resolve(settings.source)
        self._name = settings.source.rstrip("/").split("/")[-1]
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self._tokenizer = self._model = None
        if settings.enabled == OFF:
            self._status = TranslatorStatus(OFF, "translator_off", source=settings.source)
        else:
            self._status = TranslatorStatus(LOADING, "translator_loading", {"name": self._name}, settings.source)

    @property
    def status(self) -> TranslatorStatus:
        return self._status

    def load(self) -> None:
        """Download the translator if it is not on disk (once), then load it; the outcome is in
        ``status``. Does nothing when translation is off or the translator is loaded already."""
        if self.settings.enabled == OFF:
            return
        with self._loading:
            if self._model is None:
                self._load(download=True)

    def start_loading(self) -> threading.Thread:
        """``load()`` in a background thread (started, returned), so that the app starts at once."""
        thread = threading.Thread(target=self.load, name="translator-load", daemon=True)
        thread.start()
        return thread

    def translate(self, text: str) -> str:
        """``text`` in English: unchanged (and nothing loaded) when it needs no translation; else each
        sentence that needs it translated, the others kept as written.

        Loads the translator on first use when it is on disk (never downloading). Raises
        ``ModelUnavailable`` saying why and what to do when there is no translator, and
        ``err_translator_loading`` while ``load()`` is still at work.
        """
        if not needs_translation(text):
            return text
        self._ensure_loaded()
        sentences = [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]
        # Each sentence once: "猫。" a thousand times is one translation, not a thousand.
        foreign = list(dict.fromkeys(sentence for sentence in sentences if needs_translation(sentence)))
        with self._lock:
            english = dict(zip(foreign, self._generate(foreign)))
        parts = []
        for sentence in sentences:
            translated = english.get(sentence, sentence).strip()
            if not translated:
                log.warning("The translator gave nothing for %r; it is kept as written", sentence)
            parts.append(translated or sentence)
        return " ".join(parts)

    # -- loading ------------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        """Load on first use (no download); raise while another load runs or when there is none."""
        if self._model is not None:
            return
        if self.settings.enabled == OFF:
            raise ModelUnavailable(key="translator_off")
        if not self._loading.acquire(blocking=False):
            raise ModelUnavailable(key="err_translator_loading")
        try:
            if self._model is None and self._status.state != UNAVAILABLE:
                self._load(download=False)
        finally:
            self._loading.release()
        if self._model is None:
            raise ModelUnavailable(key=self._status.key, **self._status.params)

    def _load(self, *, download: bool) -> None:
        """Find (or download) the folder and load it; every failure becomes the unavailable state."""
        self._set(LOADING, "translator_loading", name=self._name)
        folder = None
        try:
            folder = self._folder(download)
            tokenizer, model = _load_marian(folder)
        except AppError as error:
            self._fail(error.key, error.params, error)
        except Exception as error:  # a broken folder fails in many ways: sentencepiece, json, safetensors, torch
            self._fail("translator_load_failed", {"folder": str(folder or self.source),
                                                  "error": _short(f"{type(error).__name__}: {error}")},
                       error, traceback=True)
        else:
            with self._lock:
                self._tokenizer, self._model = tokenizer, model
            self._set(READY, "translator_ready", name=self._name)
            log.info("Prompt translator ready: %s (%s)", self.settings.source, folder)

    def _folder(self, download: bool) -> Path:
        """The translator's folder; downloaded first (once) when ``download`` is set."""
        source = self.source
        if not download and not model_store.is_local(source) and model_store.is_repo_id(source):
            record = model_store.download_record(model_store.local_folder(source, self.models_dir))
            if not record or record.get("repo_id") != source:
                raise ModelUnavailable(key="translator_not_downloaded", repo=source)
        try:
            folder, _ = model_store.ensure_local(source, self.models_dir, variant="", revision=self.settings.revision,
                                                 progress=self._on_download, extra_patterns=("*.spm",))
        except ModelUnavailable as error:
            params = {**error.params, "source": source}
            if "error" in params:
                params["error"] = plain_network_error(params["error"])
            params.setdefault("folder", str(model_store.local_folder(source, self.models_dir)))
            raise ModelUnavailable(key=_REASONS[error.key], **params) from error
        return folder

    def _on_download(self, done: int, total: int) -> None:
        self._set(LOADING, "translator_downloading", name=self._name, done=f"{done / 1e6:.0f}",
                  total=f"{total / 1e6:.0f}")

    def _set(self, state: str, key: str, **params: Any) -> None:
        self._status = TranslatorStatus(state, key, params, self.settings.source)

    def _fail(self, key: str, params: Mapping[str, Any], error: BaseException, traceback: bool = False) -> None:
        """Unavailable, with why; logged as an error when translation is ``on``, else as a warning."""
        self._set(UNAVAILABLE, key, **params)
        level = logging.ERROR if self.settings.enabled == "on" else logging.WARNING
        log.log(level, "Prompt translator unavailable: %s", self._status.message(),
                exc_info=error if traceback else None)

    # -- translating --------------------------------------------------------------------------------
    def _generate(self, sentences: list[str]) -> list[str]:
        """English for each of ``sentences``, in one batch (the caller holds the lock)."""
        import torch

        tokenizer, model = self._tokenizer, self._model
        positions = model.config.max_position_embeddings
        with torch.inference_mode():
            batch = tokenizer(sentences, return_tensors="pt", padding=True, truncation=True,
                              max_length=min(tokenizer.model_max_length, positions))
            # The decoder's positions end at max_position_embeddings: no sentence may grow past them.
            ids = model.generate(**batch, num_beams=BEAMS, do_sample=False,
                                 max_new_tokens=min(self.settings.max_new_tokens, positions - 1))
        # Decode with the target (English) SentencePiece model; this transformers decodes a shared
        # vocabulary with the source one unless told.
        return tokenizer.batch_decode(ids, skip_special_tokens=True, use_source_tokenizer=False)


def _load_marian(folder: Path):
    """The tokenizer and the model in ``folder``, on the CPU in float32, ready for inference."""
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    tokenizer = MarianTokenizer.from_pretrained(folder)
    model = MarianMTModel.from_pretrained(folder, dtype=torch.float32).to("cpu").eval()
    # The published translators set max_length 512; each call's max_new_tokens bounds the length instead
    # (with both set, transformers warns on every call).
    model.generation_config.max_length = None
    return tokenizer, model


def _resolve(source: str) -> str:
    """A folder relative to the project as an absolute path; anything else (a repo id) as given."""
    path = Path(source).expanduser()
    if not path.is_absolute() and (PROJECT_DIR / path).is_dir():
        return str((PROJECT_DIR / path).resolve())
    return str(path) if path.is_absolute() or path.is_dir() else source


def _short(error: str) -> str:
    """The first line of an error's text, cut to ``_ERROR_CHARS`` for a status message."""
    text = (str(error).strip().splitlines() or [""])[0]
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "…"
