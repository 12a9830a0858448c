"""Wan 2.2 (families/wan/) on tiny random pipelines in both layouts, built in code with diffusers' own dummy
configs, saved with ``save_pretrained`` and loaded back through the app's own loading code: its frames
equal plain diffusers', progress and preview come each step, Cancel stops it, A14B ends on a chosen
picture, Chinese reaches umT5 as written; and a server started on a Wan folder serves it through the API."""

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image

from image_to_video import families, gpu
from image_to_video.config import load_config
from image_to_video.engine_host import engine_for
from image_to_video.errors import Cancelled
from image_to_video.request import build_request

from .helpers import call, largest_difference, png, served_wan, submit, wait_done

#: The cheapest video the cards allow: 5 frames (4k+1), 2 steps, 480p.
CHEAP = dict(resolution="480p", num_frames=5, num_inference_steps=2)


def small(request, width=256, height=160):
    """``request`` at a size the cards do not offer but the models take (sides multiples of 32), so that
    the engine's own tests stay cheap; the cards' sizes are tested in test_families.py and through the API."""
    fit = {"image": request.image.resize((width, height))}
    if request.last_image is not None:
        fit["last_image"] = request.last_image.resize((width, height))
    return dataclasses.replace(request, width=width, height=height, **fit)


def picture(width, height, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def plain_diffusers(folder, request, **extra):
    """What diffusers alone makes of the same folder, seed and settings, as uint8 frames."""
    pipe = WanImageToVideoPipeline.from_pretrained(folder, dtype=torch.float32)
    frames = pipe(image=request.image, prompt=request.prompt, negative_prompt=request.negative_prompt,
                  height=request.height, width=request.width, num_frames=request.num_frames,
                  num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                  generator=torch.Generator("cpu").manual_seed(request.seed), output_type="np", **extra).frames[0]
    return (frames * 255).round().astype(np.uint8)


def test_5b_makes_plain_diffusers_frames_with_progress_and_a_preview(wan_5b, tmp_path):
    config, engine = served_wan(wan_5b, tmp_path / "models")
    assert engine.card.name == "wan2.2-ti2v-5b"
    request = small(build_request(config, image=picture(600, 340), prompt="the waves roll in slowly", seed=11,
                                  **CHEAP))
    reports = []
    made = engine.generate(request, progress=reports.append)
    assert made.frames.shape == (5, 160, 256, 3)
    assert largest_difference(made.frames, plain_diffusers(wan_5b, request)) <= 1
    steps = [(p.done, p.total) for p in reports if p.stage == "denoising"]
    assert steps == [(0, 2), (1, 2), (2, 2)]
    previews = [p.preview for p in reports if p.preview is not None]
    assert previews and previews[0].dtype == np.uint8 and previews[0].shape[2] == 3
    assert any(p.stage == "decoding" and p.done == p.total for p in reports)


def test_cancel_stops_wan_at_the_next_step(wan_5b, tmp_path):
    config, engine = served_wan(wan_5b, tmp_path / "models")
    request = small(build_request(config, image=picture(600, 340), prompt="waves", seed=1,
                                  **dict(CHEAP, num_inference_steps=4)))
    cancel = threading.Event()
    reports = []

    def report(progress):
        reports.append(progress)
        if progress.stage == "denoising" and progress.done == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.generate(request, progress=report, cancel=cancel)
    assert max(p.done for p in reports if p.stage == "denoising") == 1


def test_a_chinese_prompt_reaches_umt5_as_written(wan_5b, tmp_path):
    config, engine = served_wan(wan_5b, tmp_path / "models")
    read = []
    tokenizer = engine.pipeline.tokenizer
    original = type(tokenizer).__call__
    engine.pipeline.tokenizer = type("Spy", (type(tokenizer),), {
        "__call__": lambda self, text, *a, **k: (read.append(text), original(self, text, *a, **k))[1]})(
        tokenizer_object=tokenizer.backend_tokenizer)
    request = build_request(config, image=picture(340, 600), prompt="海浪缓缓涌来", seed=3, **CHEAP)
    assert request.model_prompt == "海浪缓缓涌来" and (request.width, request.height) == (480, 832)
    engine.generate(small(request))
    assert ["海浪缓缓涌来"] in read


def test_a14b_ends_on_the_chosen_picture_as_plain_diffusers_does(wan_a14b, tmp_path):
    config, engine = served_wan(wan_a14b, tmp_path / "models")
    assert engine.card.name == "wan2.2-i2v-a14b" and len(engine.family.experts) == 2
    request = small(build_request(config, image=picture(600, 340, seed=1), prompt="waves", seed=5,
                                  last_image=picture(600, 340, seed=2), **CHEAP))
    made = engine.generate(request)
    expected = plain_diffusers(wan_a14b, request, last_image=request.last_image)
    assert largest_difference(made.frames, expected) <= 1


def test_wans_group_offload_moves_both_kinds_of_parts_and_keeps_the_frames(wan_5b, tmp_path, offload_on_the_cpu):
    config, engine = served_wan(wan_5b, tmp_path / "models")
    request = small(build_request(config, image=picture(600, 340), prompt="waves", seed=2, **CHEAP))
    before = engine.generate(request).frames
    gpu.enable_group_offload(engine.pipeline, torch.device("cpu"))
    assert getattr(engine.pipeline.transformer, "_diffusers_hook", None) is not None  # block by block
    assert hasattr(engine.pipeline.vae, "_hf_hook")  # whole, in the pipeline's offload order
    assert largest_difference(engine.generate(request).frames, before) <= 1


def test_a_server_on_a_wan_folder_serves_it_through_the_api(wan_5b, tmp_path, app_process):
    server = app_process("--model", str(wan_5b), demo=False).start(timeout=240)
    status, ready = call(server, "GET", "/api/ready")
    assert status == 200, ready
    form = call(server, "GET", "/openapi.json")[1]["components"]["schemas"]
    fields = next(schema["properties"] for name, schema in form.items() if "aspect" in schema.get("properties", {}))
    assert "One of: 480p (832x480), 720p (1280x704)" in fields["resolution"]["description"]
    assert "5 to 121" in fields["num_frames"]["description"]
    shapes = {}
    for name, (width, height) in {"landscape": (600, 340), "portrait": (340, 600)}.items():
        status, job = submit(server, png(picture(width, height)), prompt="海浪缓缓涌来", formats="png", seed="4",
                             **{k: str(v) for k, v in CHEAP.items()})
        assert status == 202, job
        done = wait_done(server, job["id"], timeout=240)
        assert done["state"] == "done", done
        shapes[name] = (done["width"], done["height"])
        assert done["family"] == "wan" and done["num_frames"] == 5 and done["seed"] == 4
        assert done["negative_prompt"] == families.wan.NEGATIVE_PROMPT  # the card's, as none was given
        video = tmp_path / "outputs" / done["video"]
        record = json.loads(video.with_suffix(".json").read_text())
        assert record["family"] == "wan" and record["model_read"]["prompt"] == "海浪缓缓涌来"
        assert (record["width"], record["height"]) == shapes[name]
        assert video.with_name(video.stem + "_input.png").is_file()
    assert shapes == {"landscape": (832, 480), "portrait": (480, 832)}


def test_a_wan_folder_that_cannot_load_is_an_error_state_that_says_why(tmp_path):
    folder = tmp_path / "broken-wan"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline",
                                                         "expand_timesteps": True}))
    config = families.served_config(load_config(overrides={
        "model.source": str(folder), "paths.models_dir": str(tmp_path / "models"), "model.device": "cpu"}))
    engine = engine_for(config)
    engine.load()
    assert engine.status.state.value == "error"
    message = engine.status.text("en")
    assert str(folder) in message and "complete Wan2.2-TI2V-5B pipeline" in message
