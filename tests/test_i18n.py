import re
import string

import pytest

from image_to_video.errors import InvalidInput
from image_to_video.i18n import LANGUAGES, TEXT, localized, normalise_language, t


@pytest.mark.parametrize("key", sorted(TEXT))
def test_every_text_exists_in_every_language_with_the_same_placeholders(key):
    texts = TEXT[key]
    assert set(texts) == set(LANGUAGES), f"{key} is missing a language"
    fields = {lang: {f[1] for f in string.Formatter().parse(text) if f[1]} for lang, text in texts.items()}
    assert fields["en"] == fields["zh-CN"], key
    words = re.sub(r"\{[^}]*\}", "", texts["zh-CN"])
    assert re.search(r"[\u4e00-\u9fff]", words) or not re.search(r"[A-Za-z]", words), f"{key} is not translated"


@pytest.mark.parametrize("value, expected", [
    ("zh", "zh-CN"), ("zh-CN", "zh-CN"), ("zh-TW", "zh-CN"), ("简体中文", "zh-CN"), ("en-US", "en"),
    ("fr", "en"), ("", "en"), (None, "en"),
])
def test_languages_are_recognised(value, expected):
    assert normalise_language(value) == expected


def test_errors_render_in_the_users_language_and_english_by_default():
    error = InvalidInput(key="err_out_of_range", name_key="param_frames", value=99, low=8, high=32)
    assert str(error) == "Frames 99 is out of range. Allowed: 8 to 32."
    assert localized(error, "zh-CN") == "帧数 99 超出范围。允许范围：8 到 32。"
    assert localized(error, "en") == str(error)
    plain = InvalidInput("Only English here.")
    assert localized(plain, "zh-CN") == "Only English here."


def test_parameters_are_filled_in():
    assert t("waiting", "zh-CN", position=3) == "排队等待中：第 3 位"
    assert t("waiting", "fr", position=3) == "Waiting in the queue: number 3"


def test_every_generation_setting_has_its_label_help_and_message_name_in_both_languages():
    from image_to_video.config import PARAMETERS

    for parameter in PARAMETERS:
        keys = [parameter.text, f"{parameter.text}_help"]
        if parameter.limits is not None:  # numbers are named in range messages
            keys.append(parameter.message_name_key)
        for key in keys:
            assert TEXT[key]["en"] and TEXT[key]["zh-CN"], key


def test_no_text_key_is_written_twice():
    """A second entry with the same key silently replaces the first (a dict literal keeps the last)."""
    import ast
    import collections

    from image_to_video import i18n

    tree = ast.parse(open(i18n.__file__, encoding="utf-8").read())
    table = next(node.value for node in ast.walk(tree)
                 if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "TEXT")
    counts = collections.Counter(key.value for key in table.keys)
    assert [key for key, count in counts.items() if count > 1] == []
