import math
from types import SimpleNamespace

import pytest
from PIL import Image

from image_to_video.config import load_config
from image_to_video.errors import InvalidInput
from image_to_video.request import build_request, clean_prompt

CONFIG = load_config()
IMAGE = Image.new("RGB", (600, 400), (10, 20, 30))


def request(**params):
    params.setdefault("prompt", "the waves roll in slowly")
    return build_request(CONFIG, image=params.pop("image", IMAGE), **params)


def test_missing_values_take_the_configured_defaults():
    r = request()
    assert (r.resolution, r.num_frames, r.fps, r.num_inference_steps, r.guidance_scale, r.negative_prompt,
            r.family) == ("512p", 16, 8, 50, 9.0, "", "i2vgen-xl")
    # The 600x400 picture keeps its landscape shape, at about 512x512's pixels, sides multiples of 64
    assert r.width > r.height and r.width % 64 == 0 and r.height % 64 == 0
    assert abs(r.width * r.height - 512 * 512) < 0.1 * 512 * 512
    assert r.image.size == (r.width, r.height) and r.image.mode == "RGB"
    square = request(aspect="1:1")
    assert (square.width, square.height, square.aspect) == (512, 512, "1:1")


def test_random_seed_is_replaced_by_the_seed_really_used():
    seeds = {request(seed=-1).seed for _ in range(5)}
    assert all(0 <= s < 2**32 for s in seeds) and len(seeds) > 1
    assert request(seed=1234).seed == 1234
    assert request(seed="77").seed == 77


def test_numbers_from_sliders_arrive_as_floats():
    r = request(num_frames=24.0, fps="12", num_inference_steps=80.0, guidance_scale="10")
    assert (r.num_frames, r.fps, r.num_inference_steps, r.guidance_scale) == (24, 12, 80, 10.0)
    assert isinstance(r.num_frames, int)


@pytest.mark.parametrize("params, words", [
    ({"num_frames": 33}, ["Frames 33", "8 to 32"]),
    ({"num_frames": 7}, ["Frames 7", "8 to 32"]),
    ({"num_frames": 16.5}, ["Frames", "whole number"]),
    ({"fps": 30}, ["FPS 30", "4 to 24"]),
    ({"num_inference_steps": 1000}, ["Steps 1000", "10 to 100"]),
    ({"guidance_scale": 0.5}, ["Guidance scale 0.5", "1 to 20"]),
    ({"guidance_scale": math.nan}, ["Guidance scale", "finite"]),
    ({"guidance_scale": "inf"}, ["Guidance scale", "finite"]),
    ({"num_frames": "many"}, ["Frames", "number", "'many'"]),
    ({"num_frames": True}, ["Frames", "number"]),
    ({"num_frames": [16]}, ["Frames", "number"]),
    ({"resolution": "4k"}, ["Resolution '4k'", "256p, 512p, 768p, 1024p"]),
    ({"seed": -2}, ["Seed -2", "-1 to 4294967295"]),
    ({"seed": 2**40}, ["Seed", "out of range"]),
    ({"prompt": ""}, ["Please write a prompt"]),
    ({"prompt": "   \n\t "}, ["Please write a prompt"]),
    ({"prompt": None}, ["Please write a prompt"]),
    ({"prompt": 42}, ["must be text"]),
    ({"prompt": "x" * 1001}, ["1001 characters", "limit is 1000"]),
    ({"negative_prompt": "y" * 5000}, ["5000 characters"]),
])
def test_bad_parameters_get_a_message_naming_the_value(params, words):
    with pytest.raises(InvalidInput) as error:
        request(**params)
    for word in words:
        assert word in str(error.value)


def test_parameters_are_checked_before_the_image_is_decoded():
    # A broken image with a bad parameter reports the parameter: no decoding work was done.
    with pytest.raises(InvalidInput, match="Frames 99"):
        request(image=b"not an image", num_frames=99)


def test_prompt_cleaning_keeps_text_and_drops_control_characters():
    assert clean_prompt("  waves\x00 roll\u200b\n in \x1b[31m ", 100, required=True) == "waves roll in [31m"
    assert clean_prompt("<b>waves</b> & 'sun'", 100, required=True) == "<b>waves</b> & 'sun'"
    assert clean_prompt("海浪 slowly 🌊", 100, required=True) == "海浪 slowly 🌊"
    assert clean_prompt("e\u0301", 100, required=True) == "\u00e9"  # NFC


def test_parameters_record_everything_but_the_image():
    params = request(seed=5).parameters()
    assert "image" not in params
    assert params["seed"] == 5 and params["prompt"] == "the waves roll in slowly"


def test_the_negative_prompt_length_error_names_the_negative_prompt():
    with pytest.raises(InvalidInput) as error:
        request(negative_prompt="y" * 5000)
    assert str(error.value).startswith("The negative prompt is 5000 characters long")
    with pytest.raises(InvalidInput) as error:
        request(negative_prompt=5)
    assert str(error.value).startswith("The negative prompt must be text")
    with pytest.raises(InvalidInput) as error:
        request(prompt="x" * 1001)
    assert str(error.value).startswith("The prompt is 1001 characters long")


@pytest.mark.parametrize("params, said", [
    ({"guidance_scale": 20.0000001}, "Guidance scale 20.0000001 is out of range. Allowed: 1 to 20."),
    ({"guidance_scale": "0.99999999"}, "Guidance scale 0.99999999 is out of range. Allowed: 1 to 20."),
    ({"num_frames": "99999999999999999999"}, "Frames 99999999999999999999 is out of range. Allowed: 8 to 32."),
    ({"num_frames": 32.0000000001}, "Frames must be a whole number, not 32.0000000001."),
    ({"seed": "4294967296"}, "Seed 4294967296 is out of range. Allowed: -1 to 4294967295."),
])
def test_a_range_message_quotes_the_value_as_given(params, said):
    # 20.0000001 used to be said as "Guidance scale 20 is out of range. Allowed: 1 to 20".
    with pytest.raises(InvalidInput) as error:
        request(**params)
    assert str(error.value) == said


@pytest.mark.parametrize("params, length", [
    ({"resolution": "r" * 10_000}, 10_000),
    ({"seed": "s" * 5_000}, 5_000),
    ({"num_frames": "f" * 100_000}, 100_000),
    ({"guidance_scale": "9" * 400}, 400),
    ({"num_inference_steps": ["x" * 50] * 200}, None),
])
def test_a_long_value_is_quoted_shortened_with_its_length(params, length):
    with pytest.raises(InvalidInput) as error:
        request(**params)
    message = str(error.value)
    assert len(message) < 200, message[:300]
    assert "…" in message
    if length:
        assert f"({length} characters)" in message



def test_a_whole_number_too_large_for_a_float_is_refused_with_a_message():
    # An int past float's range (a JSON body can carry one) used to escape as OverflowError.
    with pytest.raises(InvalidInput) as error:
        request(num_frames=10**4000)
    assert str(error.value) == f"Frames {'1' + '0' * 39}… (4001 characters) is out of range. Allowed: 8 to 32."
    with pytest.raises(InvalidInput, match="Guidance scale a 33220-bit number is out of range"):
        request(guidance_scale=10**10000)


# -- the steps after the model -------------------------------------------------------------------

def test_no_step_after_the_model_unless_asked():
    r = request()
    assert (r.continue_from, r.segments, r.loop, r.interpolate_fps, r.formats, r.upscale) == ("", 1, "none", 0, "mp4", 1)
    assert r.output_fps == 8 and r.format_list == ("mp4",)


def test_finishing_values_as_any_caller_sends_them():
    r = request(resolution="256p", segments="3", loop=" Boomerang ", interpolate_fps="24", formats="webm, gif",
                upscale=2.0)
    assert (r.segments, r.loop, r.interpolate_fps, r.formats, r.upscale) == (3, "boomerang", 24, "mp4,gif,webm", 2)
    assert r.output_fps == 24
    assert request(formats=["gif"]).formats == "mp4,gif"  # a list, as the page's checkboxes send it
    assert request(formats=[]).formats == "mp4"


@pytest.mark.parametrize("params, words", [
    ({"segments": 0}, "Segments 0 is out of range. Allowed: 1 to 8."),
    ({"segments": 1.5}, "Segments must be a whole number"),
    ({"loop": "backwards"}, "Loop: 'backwards' is not available. Choose one of: none, boomerang, crossfade."),
    ({"loop": 3}, "Loop: 3 is not available"),
    ({"interpolate_fps": 8}, "Smoother motion: 8 fps is not above the video's 8 fps. Choose 0 (off) or 9 to 48."),
    ({"interpolate_fps": 49}, "Smoother motion 49 is out of range. Allowed: 0 to 48."),
    ({"formats": "gif;webm"}, "Formats: 'gif;webm' is not available"),
    ({"formats": {"gif": 1}}, "Formats:"),
    ({"upscale": 4}, "Upscale 4 is out of range. Allowed: 1 to 2."),
    ({"continue_from": 5}, "Continue from: 5 is not a job id or a video name"),
    ({"num_frames": 32, "segments": 8, "interpolate_fps": 24}, "would have 747 frames; at most 600"),
    ({"resolution": "1024p", "aspect": "1:1", "num_frames": 32, "segments": 8, "interpolate_fps": 19, "upscale": 2},
     "591 frames of 2048x2048 (2479 million pixels); at most 160 million"),
])
def test_bad_finishing_values_are_refused_naming_the_setting(params, words):
    with pytest.raises(InvalidInput) as refused:
        request(**params)
    assert words in str(refused.value)


def test_the_finished_length_counts_the_seams_the_loop_and_the_interpolation():
    from image_to_video.request import finished_frames

    assert finished_frames(8, 2, "none") == 15
    assert finished_frames(8, 1, "none", continued_frames=8) == 15
    assert finished_frames(8, 1, "boomerang") == 14
    assert finished_frames(8, 1, "crossfade") == 6
    assert finished_frames(16, 3, "none", continued_frames=31) == 76


def test_a_continued_videos_settings_compare_any_value_a_caller_sends():
    from image_to_video.job_queue import _same

    assert not _same(10**400, 8)  # too large for a float: compared as text, not a crash
    assert _same("8", 8) and _same(8.0, 8) and _same("512p", "512p") and not _same("768p", "512p")


def test_a_prompt_megabytes_long_is_refused_before_it_is_cleaned(monkeypatch):
    # Every route and event takes the prompt through clean_prompt; cleaning 10 MB character by character
    # cost seconds of CPU and a lot of memory before its length was checked.
    from image_to_video import request as request_module

    def no_cleaning(*_args):
        raise AssertionError("the text was cleaned")

    # request's own reference to unicodedata, not the module every other caller (pytest too) uses
    monkeypatch.setattr(request_module, "unicodedata", SimpleNamespace(normalize=no_cleaning, category=no_cleaning))
    with pytest.raises(InvalidInput, match="10000000 characters long; the limit is 1000"):
        request_module.clean_prompt("a" * 10_000_000, 1000, required=True)
    # Spaces that cleaning collapses still fit: a prompt with room to spare is cleaned, not refused unread.
    monkeypatch.undo()
    assert request_module.clean_prompt("waves " + " " * 2500 + "roll", 1000, required=True) == "waves roll"


# -- the end frame (Wan2.2-I2V-A14B's last_image): a picture of its own, refused as such -------------------------


def a14b_request(**params):
    from image_to_video import families

    config = families.served_config(load_config(overrides={"model.family": "wan2.2-i2v-a14b"}))
    params.setdefault("prompt", "the waves roll in slowly")
    return build_request(config, image=params.pop("image", IMAGE), num_frames=5, **params)


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` (its pixels never come): a decompression bomb's header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("end, problem, problem_zh", [
    (b"\0junk" * 50, "not an image we can read", "无法识别这个文件为图片"),
    (b"hello, a text file\n", "not an image we can read", "无法识别这个文件为图片"),
    (png_header(100_000, 100_000), "far more pixels than the limit", "像素远超"),
    (Image.new("RGB", (10, 10)), "only 10x10 pixels", "只有 10x10 像素"),
], ids=["junk bytes", "a text file", "a bomb's header", "too small"])
def test_a_bad_end_frame_is_refused_naming_the_end_frame_in_the_users_language(end, problem, problem_zh):
    # With two pictures sent, "This file is not an image we can read" did not say which one to fix.
    from image_to_video.i18n import localized

    with pytest.raises(InvalidInput) as refused:
        a14b_request(last_image=end)
    assert "end frame" in str(refused.value) and problem in str(refused.value)
    chinese = localized(refused.value, "zh-CN")
    assert "结束帧" in chinese and problem_zh in chinese and problem not in chinese


@pytest.mark.parametrize("name", ["image", "last_image"])
@pytest.mark.parametrize("value", [[1, 2], {"path": "/etc/passwd"}, 5, True, object()])
def test_a_picture_of_a_kind_no_caller_sends_is_refused_in_words_not_a_type_error(name, value):
    with pytest.raises(InvalidInput, match="not an image we can read"):
        a14b_request(**{name: value})


def test_the_mp4_quality_is_a_crf_or_a_word_with_the_servers_default():
    # Issue 24 (10): an output quality setting, recorded with the job's parameters.
    assert request().crf == CONFIG.finishing.crf == 18
    assert request(crf=28).crf == 28 and request(crf="0").crf == 18
    assert request(quality="low").crf == 28 and request(quality="best").parameters()["crf"] == 14
    assert request(quality=30).crf == 30
    with pytest.raises(InvalidInput, match="51"):
        request(crf=60)
