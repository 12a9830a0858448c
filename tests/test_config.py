"""The settings (config.py): the shipped file, the environment and overrides, and bad values refused
naming the key. The command line's flags are tested in test_cli.py."""

import dataclasses

import pytest

from image_to_video.config import PROJECT_DIR, load_config
from image_to_video.errors import ConfigError


def test_shipped_file_gives_the_product_defaults():
    config = load_config()
    d = config.generation.defaults
    assert (d.resolution, d.num_frames, d.fps, d.num_inference_steps, d.guidance_scale) == ("512p", 16, 8, 50, 9.0)
    assert d.negative_prompt == "" and d.seed == -1
    assert dict(config.generation.resolutions) == {"256p": 256, "512p": 512, "768p": 768, "1024p": 1024}
    g = config.generation
    assert (g.num_frames.min, g.num_frames.max) == (8, 32)
    assert (g.fps.min, g.fps.max) == (4, 24)
    assert (g.num_inference_steps.min, g.num_inference_steps.max) == (10, 100)
    assert (g.guidance_scale.min, g.guidance_scale.max) == (1.0, 20.0)
    assert config.model.source == "ali-vilab/i2vgen-xl" and config.model.variant == "fp16"
    assert (config.server.host, config.server.port) == ("0.0.0.0", 7860)
    assert config.paths.output_dir == PROJECT_DIR / "outputs"


def test_shipped_presets_match_the_product():
    presets = load_config().generation.presets
    quick, standard, high = presets["Quick preview"], presets["Standard"], presets["High quality"]
    assert (quick.resolution, quick.num_frames, quick.num_inference_steps) == ("512p", 8, 30)
    assert (standard.resolution, standard.num_frames, standard.fps, standard.num_inference_steps,
            standard.guidance_scale) == ("512p", 16, 8, 50, 9.0)
    assert (high.resolution, high.num_frames, high.fps, high.num_inference_steps,
            high.guidance_scale) == ("768p", 24, 12, 80, 10.0)


def test_config_is_immutable():
    config = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1
    with pytest.raises(TypeError):
        config.generation.resolutions["2048p"] = 2048


def test_environment_overrides_file_and_flags_override_environment():
    env = {"I2V_SERVER_PORT": "7001", "I2V_GENERATION_DEFAULTS_FPS": "12", "I2V_MODEL_DEVICE": "cpu"}
    config = load_config(env=env)
    assert config.server.port == 7001 and config.generation.defaults.fps == 12 and config.model.device == "cpu"
    config = load_config(env=env, overrides={"server.port": 7002})
    assert config.server.port == 7002


def test_custom_config_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("server:\n  port: 8123\ngeneration:\n  defaults:\n    num_frames: 24\n")
    config = load_config(path)
    assert config.server.port == 8123 and config.generation.defaults.num_frames == 24
    assert config.generation.defaults.fps == 8  # untouched keys keep their defaults


def test_model_source_folder_is_resolved(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    assert load_config(overrides={"model.source": str(folder)}).model_path == str(folder)
    assert load_config().model_path == "ali-vilab/i2vgen-xl"


@pytest.mark.parametrize("key, value, words", [
    ("server.port", 0, ["server.port", "0", "1 to 65535"]),
    ("server.port", "http", ["server.port", "'http'", "whole number"]),
    ("server.port", True, ["server.port", "True", "whole number"]),
    ("server.host", "", ["server.host"]),
    ("server.max_upload_mb", -1, ["server.max_upload_mb", "-1"]),
    ("model.device", "tpu", ["model.device", "'tpu'", "auto, cpu, cuda"]),
    ("model.dtype", "int8", ["model.dtype", "'int8'", "float16"]),
    ("model.decode_chunk_size", 0, ["model.decode_chunk_size", "1 to 32"]),
    ("model.demo", "yes", ["model.demo", "true or false"]),
    ("generation.defaults.resolution", "480p", ["generation.defaults.resolution", "'480p'", "512p"]),
    ("generation.defaults.num_frames", 64, ["generation.defaults.num_frames", "64", "8 to 32"]),
    ("generation.defaults.fps", 2, ["generation.defaults.fps", "4 to 24"]),
    ("generation.defaults.num_inference_steps", 5, ["num_inference_steps", "10 to 100"]),
    ("generation.defaults.guidance_scale", 25, ["guidance_scale", "1 to 20"]),
    ("generation.defaults.guidance_scale", "high", ["guidance_scale", "a number"]),
    ("generation.defaults.seed", -5, ["generation.defaults.seed", "-1 (random)"]),
    ("generation.num_frames", {"min": 40, "max": 10}, ["generation.num_frames", "min <= max"]),
    ("generation.resolutions", {"500p": 500}, ["generation.resolutions.500p", "multiple of 64"]),
    ("generation.resolutions", [], ["generation.resolutions", "mapping"]),
    ("generation.presets", {"Fast": {"resolution": "512p"}}, ["Missing setting", "generation.presets.Fast"]),
    ("generation.presets", {"Big": {"resolution": "512p", "num_frames": 99, "fps": 8,
                                    "num_inference_steps": 50, "guidance_scale": 9}},
     ["generation.presets.Big.num_frames", "99"]),
    ("images.max_aspect_ratio", 0.5, ["images.max_aspect_ratio", "1 or more"]),
    ("paths.output_dir", "", ["paths.output_dir", "folder"]),
    ("server.colour", "blue", ["Unknown setting server.colour", "host, login, max_connections_per_client"]),
    ("server.header_timeout_s", 0, ["server.header_timeout_s", "0.5 to 600"]),
    ("server.trusted_proxies", "nginx", ["server.trusted_proxies", "'nginx'", "10.0.0.0/8"]),
    ("server.login", "maybe", ["server.login", "'maybe'", "auto, on, off"]),
    ("jobs.max_queued", 0, ["jobs.max_queued", "1 to 10000"]),
    ("outputs.max_age_days", -1, ["outputs.max_age_days", "0 or more"]),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(key, value, words):
    with pytest.raises(ConfigError) as error:
        load_config(overrides={key: value})
    for word in words:
        assert word in str(error.value)


def test_bad_environment_value_is_reported():
    with pytest.raises(ConfigError, match="server.port: 'abc'"):
        load_config(env={"I2V_SERVER_PORT": "abc"})


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read the config file"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [port: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold sections"):
        load_config(listed)


@pytest.mark.parametrize("host, login, required", [
    ("0.0.0.0", "auto", True), ("127.0.0.1", "auto", False), ("localhost", "auto", False),
    ("192.168.1.5", "auto", True), ("127.0.0.1", "on", True), ("0.0.0.0", "off", False),
])
def test_a_login_is_required_beyond_loopback(host, login, required):
    config = load_config(overrides={"server.host": host, "server.login": login})
    assert config.server.login_required is required


def test_the_generation_settings_are_one_table_read_by_presets_and_defaults():
    from image_to_video.config import PARAMETERS

    g = load_config().generation
    assert [p.name for p in PARAMETERS] == ["resolution", "num_frames", "fps", "num_inference_steps",
                                            "guidance_scale"]
    assert g.defaults.values() == ("512p", 16, 8, 50, 9.0)
    assert g.presets["Standard"].values() == ("512p", 16, 8, 50, 9.0)
    assert g.preset_for(("512p", 16, 8, 50, 9.0)) == "Standard"
    assert g.preset_for(("512p", 16, 8, 50, 9.5)) is None
    assert str(g.limits("num_frames")) == "8 to 32"


def test_a_config_file_can_narrow_a_range_and_a_preset_outside_it_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("generation:\n  num_frames: {min: 8, max: 16}\n")
    with pytest.raises(ConfigError, match=r"generation.presets.High quality.num_frames: 24. Allowed: 8 to 16"):
        load_config(config)


def test_a_range_message_quotes_the_value_and_the_limits_unrounded(tmp_path):
    # With a maximum of 20.0000001 a default of 20.00000015 used to be refused with "Allowed: 1 to 20".
    config = tmp_path / "c.yaml"
    config.write_text("generation:\n  guidance_scale: {min: 1, max: 20.0000001}\n"
                      "  defaults: {guidance_scale: 20.00000015}\n")
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert str(error.value) == ("Invalid setting generation.defaults.guidance_scale: 20.00000015. "
                                "Allowed: 1 to 20.0000001.")


@pytest.mark.parametrize("key, value", [
    ("model.dtype", "f" * 10_000),
    ("server.login", "x" * 5_000),
    ("jobs.max_queued", "many" * 3_000),
    ("model.demo", "y" * 2_000),
])
def test_a_long_value_is_quoted_shortened_with_its_length(key, value):
    with pytest.raises(ConfigError) as error:
        load_config(overrides={key: value})
    message = str(error.value)
    assert key in message and len(message) < 250, message[:300]
    assert f"… ({len(value)} characters)" in message


@pytest.mark.parametrize("written, meant", [("on", "on"), ("off", "off"), ("yes", "on"), ("auto", "auto")])
def test_login_on_or_off_unquoted_in_the_environment_is_understood(written, meant):
    config = load_config(env={"I2V_SERVER_LOGIN": written})
    assert config.server.login == meant
