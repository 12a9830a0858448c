"""Prompt translation: a tiny random MarianMT model (``marian_dir``, built by helpers.build_tiny_marian),
loaded from a folder and from a fake hub."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import threading

import pytest

from image_to_video import translate
from image_to_video.config import TranslationSettings, load_config
from image_to_video.errors import ConfigError, ModelUnavailable
from image_to_video.i18n import localized
from image_to_video.translate import Translator, TranslatorStatus, needs_translation

from .helpers import CHINESE, point_hub_at
from .helpers import translation_settings as settings
from .hub_server import HubServer

# The tokenizer warns once that sacremoses (a punctuation normaliser) is not installed: docs/DEPENDENCIES.md.
pytestmark = pytest.mark.filterwarnings("ignore:Recommended:UserWarning")

REPO = "Helsinki-NLP/opus-mt-zh-en"
#: 20 characters of Chinese, two sentences.
PROMPT = "一只猫在草地上奔跑。海浪缓缓涌来，风吹动树叶。"


def _status_texts(status: TranslatorStatus) -> tuple[str, str]:
    return status.message("en"), status.message("zh-CN")


# -- telling English from the rest --------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("a cat 在跑", True),
    ("一只猫在草地上奔跑", True),
    ("ねこがはしる", True),  # kana
    ("고양이가 달린다", True),  # hangul
    ("Москва ночью, snow falling", True),  # Cyrillic, a real share of the letters
    ("café au lait on a table", False),  # accented Latin is Latin
    ("ＡＢＣ fullwidth letters", False),  # full-width Latin too
    ("the area of a circle is π r squared", False),  # one Greek letter among English
    ("a cat runs on the grass", False),
    ("12345, 6.7 !!! ???", False),
    ("。！？……", False),
    ("", False),
])
def test_needs_translation(text, expected):
    assert needs_translation(text) is expected


# -- from a folder ------------------------------------------------------------------------------------
def test_a_chinese_prompt_comes_back_in_another_text_the_same_each_time(marian_dir, tmp_path):
    translator = Translator(settings(source=str(marian_dir)), tmp_path / "models")
    assert translator.status.state == "loading"
    english = translator.translate(PROMPT)
    assert isinstance(english, str) and english.strip() and english != PROMPT
    assert translator.translate(PROMPT) == english
    status = translator.status
    assert status.state == "ready" and status.source == str(marian_dir)
    en, zh = _status_texts(status)
    assert "Chinese prompts are translated to English" in en and marian_dir.name in en
    assert "中文提示词会先翻译成英文" in zh and marian_dir.name in zh
    # A new translator on the same folder (a restart) says the same.
    assert Translator(settings(source=str(marian_dir)), tmp_path / "models").translate(PROMPT) == english


def test_sentences_in_english_are_kept_and_the_length_is_bounded(marian_dir, tmp_path):
    short = Translator(settings(source=str(marian_dir), max_new_tokens=8), tmp_path)
    long = Translator(settings(source=str(marian_dir), max_new_tokens=40), tmp_path)
    assert len(short.translate(CHINESE[0])) < len(long.translate(CHINESE[0]))
    mixed = short.translate("A cat runs on the grass. 海浪缓缓涌来。")
    assert mixed.startswith("A cat runs on the grass. ")
    assert mixed.removeprefix("A cat runs on the grass. ") == short.translate("海浪缓缓涌来。")


def test_english_passes_through_without_loading_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(translate, "_load_marian", lambda folder: pytest.fail("nothing may be loaded"))
    translator = Translator(settings(source=str(tmp_path / "no-such-folder")), tmp_path)
    for text in ("a cat runs on the grass", "café au lait", "12345", ""):
        assert translator.translate(text) == text
    assert translator.status.state == "loading"  # never tried


def test_two_threads_translating_at_once_get_what_one_thread_gets(marian_dir, tmp_path):
    translator = Translator(settings(source=str(marian_dir)), tmp_path)
    expected = {text: translator.translate(text) for text in CHINESE}
    results: dict[str, list[str]] = {text: [] for text in CHINESE}
    errors = []
    start = threading.Barrier(2)

    def work(texts):
        start.wait()
        try:
            for _ in range(3):
                for text in texts:
                    results[text].append(translator.translate(text))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(CHINESE[:3],)), threading.Thread(target=work, args=(CHINESE[3:],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {text: [english] * 3 for text, english in expected.items()}


def test_two_threads_on_a_fresh_translator_load_it_once(marian_dir, tmp_path, monkeypatch):
    loads = []
    real = translate._load_marian
    monkeypatch.setattr(translate, "_load_marian", lambda folder: loads.append(folder) or real(folder))
    expected = Translator(settings(source=str(marian_dir)), tmp_path).translate(CHINESE[1])
    translator = Translator(settings(source=str(marian_dir)), tmp_path)
    outcomes = []
    start = threading.Barrier(2)

    def work():
        start.wait()
        try:
            outcomes.append(translator.translate(CHINESE[1]))
        except ModelUnavailable as error:  # the other thread was loading it
            outcomes.append(error.key)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 2  # the first translator's and this one's: one load each
    assert expected in outcomes and set(outcomes) <= {expected, "err_translator_loading"}
    assert translator.translate(CHINESE[1]) == expected


def test_a_translation_asked_while_loading_is_refused_with_a_message(marian_dir, tmp_path, monkeypatch):
    release = threading.Event()
    real = translate._load_marian

    def slow(folder):
        release.wait(30)
        return real(folder)

    monkeypatch.setattr(translate, "_load_marian", slow)
    translator = Translator(settings(source=str(marian_dir)), tmp_path)
    thread = translator.start_loading()
    with pytest.raises(ModelUnavailable, match="still loading") as refused:
        translator.translate(PROMPT)
    assert translator.status.state == "loading"
    assert "仍在加载" in localized(refused.value, "zh-CN")
    release.set()
    thread.join(30)
    assert translator.status.state == "ready" and translator.translate(PROMPT).strip()


# -- off and unavailable ------------------------------------------------------------------------------
def test_off_never_translates_and_says_how_to_turn_it_on(marian_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(translate, "_load_marian", lambda folder: pytest.fail("nothing may be loaded"))
    translator = Translator(settings(enabled="off", source=str(marian_dir)), tmp_path)
    translator.load()
    assert translator.status.state == "off"
    en, zh = _status_texts(translator.status)
    assert "translation.enabled" in en and "auto" in en and "300 MB" in en
    assert "translation.enabled" in zh and "英文" in zh
    assert translator.translate("a cat runs") == "a cat runs"
    with pytest.raises(ModelUnavailable) as refused:
        translator.translate(PROMPT)
    assert str(refused.value) == en and localized(refused.value, "zh-CN") == zh


@pytest.mark.parametrize("damage", ["empty", "no spm", "cut weights", "bad config"])
def test_a_broken_folder_is_unavailable_with_the_reason_not_a_traceback(marian_dir, tmp_path, damage, caplog):
    folder = tmp_path / "broken"
    if damage == "empty":
        folder.mkdir()
    else:
        shutil.copytree(marian_dir, folder)
    if damage == "no spm":
        (folder / "source.spm").unlink()
    elif damage == "cut weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "bad config":
        (folder / "config.json").write_text("{not json")
    translator = Translator(settings(enabled="on", source=str(folder)), tmp_path)
    with caplog.at_level(logging.WARNING, logger="image_to_video.translate"):
        translator.load()
    status = translator.status
    assert status.state == "unavailable" and status.key == "translator_load_failed"
    en, zh = _status_texts(status)
    assert en.startswith(f"No translator is available: loading {folder} failed (")
    assert "write the prompt in English" in en and "source.spm" in en and "Traceback" not in en
    assert zh.startswith(f"没有可用的翻译模型：加载 {folder} 失败")
    # "on": the failure is an error in the log, with its traceback there (not in the message).
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    with pytest.raises(ModelUnavailable) as refused:
        translator.translate(PROMPT)
    assert str(refused.value) == en


def test_a_missing_folder_names_the_setting(tmp_path, caplog):
    missing = str(tmp_path / "nowhere" / "opus")
    translator = Translator(settings(source=missing), tmp_path)
    with caplog.at_level(logging.WARNING, logger="image_to_video.translate"):
        translator.load()
    assert translator.status.key == "translator_folder_missing"
    en, zh = _status_texts(translator.status)
    assert missing in en and "translation.source" in en and "translation.source" in zh
    # "auto": a warning, not an error.
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_used_before_load_it_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr("image_to_video.model_store._download", lambda *a, **k: pytest.fail("no download"))
    translator = Translator(settings(), tmp_path / "models")
    with pytest.raises(ModelUnavailable, match=f"{REPO} is not downloaded yet") as refused:
        translator.translate(PROMPT)
    assert translator.status.state == "unavailable" and translator.status.key == "translator_not_downloaded"
    assert "尚未下载" in localized(refused.value, "zh-CN")
    assert translator.translate("a cat") == "a cat"


def test_offline_it_is_unavailable_at_once(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    translator = Translator(settings(), tmp_path / "models")
    translator.load()
    assert translator.status.key == "translator_offline"
    en, zh = _status_texts(translator.status)
    assert "HF_HUB_OFFLINE" in en and str(tmp_path / "models" / "opus-mt-zh-en") in en and "HF_HUB_OFFLINE" in zh


# -- through the hub ----------------------------------------------------------------------------------
@pytest.fixture
def online(monkeypatch, tmp_path):
    """Point huggingface_hub at ``url`` (the fake hub, or a dead address), online, for this test."""
    from huggingface_hub.utils import _http

    def point(url: str):
        point_hub_at(monkeypatch, tmp_path, url)

    yield point
    _http.close_session()


def _repo(marian_dir, *, weights_as_bin=False) -> dict[str, bytes]:
    files = {path.name: path.read_bytes() for path in marian_dir.iterdir() if path.is_file()}
    files["README.md"] = b"# not fetched"
    files["tf_model.h5"] = b"not fetched either"
    if weights_as_bin:  # an older repo: PyTorch's pickle and no safetensors
        import io

        import torch
        from safetensors.torch import load_file

        buffer = io.BytesIO()
        torch.save(load_file(marian_dir / "model.safetensors"), buffer)
        del files["model.safetensors"]
        files["pytorch_model.bin"] = buffer.getvalue()
    return files


@pytest.mark.parametrize("weights_as_bin", [False, True], ids=["safetensors", "bin only"])
def test_it_downloads_once_into_models_and_translates_as_from_the_folder(marian_dir, tmp_path, online,
                                                                          weights_as_bin):
    expected = Translator(settings(source=str(marian_dir)), tmp_path).translate(PROMPT)
    models = tmp_path / "models"
    files = _repo(marian_dir, weights_as_bin=weights_as_bin)
    seen = []
    with HubServer(REPO, files) as hub:
        online(hub.url)
        translator = Translator(settings(), models)
        real_set = translator._set
        translator._set = lambda state, key, **params: seen.append(key) or real_set(state, key, **params)
        translator.start_loading().join(60)
        assert translator.status.state == "ready", translator.status.message()
        fetched = {h.path for h in hub.take_hits() if h.method == "GET" and not h.path.startswith("/api/")}
    wanted = {name for name in files if name not in ("README.md", "tf_model.h5")}
    assert fetched == wanted
    folder = models / "opus-mt-zh-en"
    assert all((folder / name).read_bytes() == files[name] for name in wanted)
    assert "translator_downloading" in seen and seen[-1] == "translator_ready"
    assert translator.translate(PROMPT) == expected
    # The hub is gone: a restart loads what was downloaded, with no network at all.
    again = Translator(settings(), models)
    assert again.translate(PROMPT) == expected and again.status.state == "ready"


def test_a_hub_that_is_down_gives_unavailable_with_the_reason(tmp_path, online):
    with HubServer(REPO, {}) as hub:
        url = hub.url
    online(url)  # nothing listens there any more: the connection is refused
    translator = Translator(settings(), tmp_path / "models")
    translator.start_loading().join(60)
    status = translator.status
    assert status.state == "unavailable" and status.key == "translator_download_failed"
    en, zh = _status_texts(status)
    assert en.startswith(f"No translator is available: downloading {REPO} failed (") and "HF_ENDPOINT" in en
    assert "HF_ENDPOINT" in zh and "英文" in zh


def test_a_hub_that_never_answers_gives_unavailable_after_the_timeout(tmp_path, online, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    with contextlib.closing(socket.socket()) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # takes connections, never answers
        online(f"http://127.0.0.1:{silent.getsockname()[1]}")
        translator = Translator(settings(), tmp_path / "models")
        thread = translator.start_loading()
        thread.join(60)
        assert not thread.is_alive(), "the download start hung"
    assert translator.status.key == "translator_download_failed"
    assert "timed out" in translator.status.message()


# -- settings -----------------------------------------------------------------------------------------
def test_the_shipped_settings_and_the_environment():
    shipped = load_config(env={}).translation
    assert shipped == TranslationSettings()
    assert (shipped.enabled, shipped.source, shipped.revision) == ("auto", REPO, "main")
    assert load_config(env={"I2V_TRANSLATION_ENABLED": "off"}).translation.enabled == "off"
    assert load_config(env={"I2V_TRANSLATION_ENABLED": "on"}).translation.enabled == "on"
    assert load_config(env={"I2V_TRANSLATION_MAX_NEW_TOKENS": "64"}).translation.max_new_tokens == 64


@pytest.mark.parametrize("key, value, allowed", [
    ("translation.enabled", "maybe", "auto, on, off"),
    ("translation.max_new_tokens", 0, "8 to 512"),
    ("translation.max_new_tokens", 4096, "8 to 512"),
    ("translation.source", " ", "a folder or a hub repo id"),
])
def test_bad_settings_are_refused_naming_the_key(key, value, allowed):
    with pytest.raises(ConfigError, match=f"{key}.*Allowed: {allowed}"):
        load_config(env={}, overrides={key: value})


def test_a_download_without_network_is_said_in_plain_words_with_what_to_do():
    # Issue 24 (8): never a raw "[Errno -2]"; what to do in both languages.
    from image_to_video.i18n import t
    from image_to_video.translate import plain_network_error

    words = plain_network_error("HTTPSConnectionPool(host='huggingface.co'): [Errno -2] Name or service not known")
    assert "Errno" not in words and "no network" in words
    assert plain_network_error("disk quota exceeded") == "disk quota exceeded"
    en = t("translator_download_failed", "en", repo=REPO, error=words, folder="models/opus-mt-zh-en")
    zh = t("translator_download_failed", "zh-CN", repo=REPO, error=words, folder="models/opus-mt-zh-en")
    assert "write the prompt in English" in en and "untranslated" in en and "models/opus-mt-zh-en" in en
    assert "英文" in zh and "未经翻译" in zh and "HF_ENDPOINT" in zh
