import math

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
    assert (r.resolution, r.width, r.height, r.num_frames, r.fps, r.num_inference_steps,
            r.guidance_scale, r.negative_prompt) == ("512p", 512, 512, 16, 8, 50, 9.0, "")
    assert r.image.size == (512, 512) and r.image.mode == "RGB"


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
