from diffusers import I2VGenXLPipeline

from image_to_video.families.i2vgen_xl.demo import DEMO_VERSION, MARKER_FILE, build_demo_model, is_demo_model


def test_demo_model_loads_through_from_pretrained(demo_dir):
    pipe = I2VGenXLPipeline.from_pretrained(demo_dir)
    assert type(pipe).__name__ == "I2VGenXLPipeline"
    assert pipe.vae_scale_factor == 8  # latents are 1/8 of the image, as in the real model
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert is_demo_model(demo_dir)


def test_build_is_skipped_when_present_and_redone_when_outdated(demo_dir, tmp_path):
    before = (demo_dir / "unet" / "config.json").stat().st_mtime_ns
    build_demo_model(demo_dir)
    assert (demo_dir / "unet" / "config.json").stat().st_mtime_ns == before

    copy = build_demo_model(tmp_path / "demo")
    (copy / MARKER_FILE).write_text("version 0")
    assert not is_demo_model(copy)
    build_demo_model(copy)
    assert is_demo_model(copy) and f"(version {DEMO_VERSION})" in (copy / MARKER_FILE).read_text()
    assert not (tmp_path / "demo.partial").exists()


def test_same_seed_builds_the_same_weights(tmp_path):
    a = build_demo_model(tmp_path / "a")
    b = build_demo_model(tmp_path / "b")
    for part in ("unet", "vae", "text_encoder", "image_encoder"):
        files_a = sorted((a / part).glob("*.safetensors"))
        files_b = sorted((b / part).glob("*.safetensors"))
        assert [f.read_bytes() for f in files_a] == [f.read_bytes() for f in files_b]
