"""Model families' cards (families/): which card a folder or repo is, the sizes each makes for a picture,
frame-count rules, and the config each server then validates against. No model is loaded here."""

import json

import pytest
from PIL import Image

from image_to_video import families
from image_to_video.config import load_config
from image_to_video.errors import ConfigError, InvalidInput
from image_to_video.request import build_request


def folder_with_index(tmp_path, **index):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("index, expected", [
    ({"_class_name": "I2VGenXLPipeline"}, "i2vgen-xl"),
    # diffusers' own model_index.json of the two Wan 2.2 repos: 5B has one expert and expand_timesteps
    ({"_class_name": "WanImageToVideoPipeline", "expand_timesteps": True, "boundary_ratio": None,
      "transformer_2": [None, None]}, "wan2.2-ti2v-5b"),
    ({"_class_name": "WanImageToVideoPipeline", "expand_timesteps": False, "boundary_ratio": 0.9,
      "transformer_2": ["diffusers", "WanTransformer3DModel"]}, "wan2.2-i2v-a14b"),
    # Wan 2.1's I2V layout (one expert, no expand_timesteps) conditions like A14B: its card, not 5B's
    ({"_class_name": "WanImageToVideoPipeline", "transformer_2": [None, None]}, "wan2.2-i2v-a14b"),
    ({"_class_name": "StableDiffusionPipeline"}, None),
])
def test_a_folder_says_its_family_in_its_model_index(tmp_path, index, expected):
    assert families.detect(str(folder_with_index(tmp_path, **index))) == expected


def test_the_real_hub_repos_are_known_by_name():
    assert families.detect("Wan-AI/Wan2.2-TI2V-5B-Diffusers") == "wan2.2-ti2v-5b"
    assert families.detect("wan-ai/wan2.2-i2v-a14b-diffusers") == "wan2.2-i2v-a14b"
    assert families.detect("ali-vilab/i2vgen-xl") == "i2vgen-xl"
    assert families.detect("someone/unknown-model") is None


def test_a_wan_folder_makes_the_server_validate_against_wans_card(tmp_path):
    folder = folder_with_index(tmp_path, _class_name="WanImageToVideoPipeline", expand_timesteps=True)
    config = families.served_config(load_config(overrides={"model.source": str(folder)}))
    assert config.model.family == "wan2.2-ti2v-5b"
    # The Wan 2.2 model card's figures: 720p at 24 fps, up to 121 frames
    assert config.generation.defaults.fps == 24
    assert config.generation.num_frames.max == 121
    assert set(config.generation.resolutions) == {"480p", "720p"}


def test_an_unknown_family_name_is_refused_with_the_names_allowed():
    with pytest.raises(ConfigError, match="wan2.2-ti2v-5b"):
        families.served_config(load_config(overrides={"model.family": "wan9"}))


def landscape():
    return Image.new("RGB", (1200, 700), "navy")


def portrait():
    return Image.new("RGB", (700, 1200), "navy")


@pytest.mark.parametrize("family", ["i2vgen-xl", "wan2.2-ti2v-5b", "wan2.2-i2v-a14b"])
def test_the_video_keeps_the_pictures_shape(family):
    config = families.served_config(load_config(overrides={"model.family": family}))
    wide = build_request(config, image=landscape(), prompt="waves", num_frames=config.generation.num_frames.min)
    tall = build_request(config, image=portrait(), prompt="waves", num_frames=config.generation.num_frames.min)
    assert wide.width > wide.height and wide.aspect == "16:9"
    assert tall.height > tall.width and tall.aspect == "9:16"
    assert (wide.width, wide.height) == (tall.height, tall.width)
    assert wide.image.size == (wide.width, wide.height)


def test_wans_720p_is_its_published_size_and_i2vgens_sides_are_multiples_of_64():
    wan = families.served_config(load_config(overrides={"model.family": "wan2.2-ti2v-5b"}))
    request = build_request(wan, image=landscape(), prompt="waves", resolution="720p", num_frames=5)
    assert (request.width, request.height) == (1280, 704)  # the Wan2.2 repository's 5B size
    i2vgen = families.served_config(load_config())
    for aspect in families.ASPECTS:
        request = build_request(i2vgen, image=landscape(), prompt="waves", aspect=aspect)
        assert request.width % 64 == 0 and request.height % 64 == 0


def test_a_named_aspect_crops_as_little_as_it_can():
    config = families.served_config(load_config())
    # A 2:1 picture of two halves: made square, the centre stays and both halves are still there.
    picture = Image.new("RGB", (1000, 500), "red")
    picture.paste(Image.new("RGB", (500, 500), "blue"), (500, 0))
    request = build_request(config, image=picture, prompt="waves", aspect="1:1")
    left, right = request.image.getpixel((5, 250)), request.image.getpixel((request.width - 5, 250))
    assert left[0] > 200 and right[2] > 200
    with pytest.raises(InvalidInput, match="auto, 16:9"):
        build_request(config, image=picture, prompt="waves", aspect="21:9")


def test_wan_takes_only_4k_plus_1_frames_and_says_the_nearest():
    config = families.served_config(load_config(overrides={"model.family": "wan2.2-ti2v-5b"}))
    assert build_request(config, image=landscape(), prompt="waves", num_frames=17).num_frames == 17
    with pytest.raises(InvalidInput) as refused:
        build_request(config, image=landscape(), prompt="waves", num_frames=16)
    assert "13 / 17" in str(refused.value) and "4k+1" in str(refused.value)


@pytest.mark.parametrize("family", ["i2vgen-xl", "wan2.2-ti2v-5b"])
def test_an_end_frame_is_refused_by_a_model_that_cannot_use_it(family):
    config = families.served_config(load_config(overrides={"model.family": family}))
    with pytest.raises(InvalidInput, match="Wan2.2-I2V-A14B") as refused:
        build_request(config, image=landscape(), prompt="waves", num_frames=config.generation.num_frames.min,
                      last_image=portrait())
    assert refused.value.key == "err_end_frame_unsupported"


def test_a14b_fits_the_end_frame_to_the_videos_size():
    config = families.served_config(load_config(overrides={"model.family": "wan2.2-i2v-a14b"}))
    request = build_request(config, image=landscape(), prompt="waves", num_frames=5, last_image=portrait())
    assert request.last_image.size == (request.width, request.height) == (832, 480)
    assert request.parameters()["end_frame"] is True and "last_image" not in request.parameters()


def test_each_card_says_where_its_figures_come_from():
    for card in families.CARDS.values():
        assert {"sizes", "defaults", "prompt_languages"} <= set(card.sources), card.name
        assert card.generation.defaults.resolution in card.base_sizes
        assert card.frames_allowed(card.generation.defaults.num_frames)
