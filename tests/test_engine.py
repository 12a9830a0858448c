import threading

import numpy as np
import pytest
import torch
from PIL import Image

from image_to_video.config import ModelSettings
from image_to_video.engine import Engine, ModelState, Progress
from image_to_video.errors import Cancelled, ModelUnavailable
from image_to_video.request import GenerationRequest


def tiny_request(photo: Image.Image, **changes) -> GenerationRequest:
    values = dict(image=photo.resize((64, 64)), prompt="the waves roll in slowly", negative_prompt="",
                  resolution="64p", width=64, height=64, num_frames=4, fps=8, num_inference_steps=3,
                  guidance_scale=9.0, seed=7)
    values.update(changes)
    return GenerationRequest(**values)


def test_generates_frames_of_the_requested_shape(loaded_engine, photo):
    result = loaded_engine.generate(tiny_request(photo, num_frames=6))
    assert result.frames.shape == (6, 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 1  # an image, not a blank
    assert set(result.timings) == {"denoise_s", "decode_s"}
    assert result.peak_gpu_memory_gb is None  # CPU: no GPU figure is invented


def test_reports_each_step_with_an_eta_then_each_decoded_chunk(loaded_engine, photo):
    reports: list[Progress] = []
    loaded_engine.generate(tiny_request(photo, num_frames=6, num_inference_steps=4), progress=reports.append)
    steps = [r for r in reports if r.stage == "denoising"]
    assert [r.done for r in steps] == [0, 1, 2, 3, 4] and all(r.total == 4 for r in steps)
    assert steps[0].eta is None and all(r.eta is not None and r.eta >= 0 for r in steps[1:])
    assert steps[-1].eta == 0
    decoding = [r for r in reports if r.stage == "decoding"]
    assert [r.done for r in decoding] == [4, 6] and decoding[-1].total == 6  # decode_chunk_size 4
    from image_to_video.ui import _describe_progress

    assert _describe_progress(steps[2], "en").startswith("Denoising 2/4 · about ")
    assert _describe_progress(steps[2], "zh-CN").startswith("去噪 2/4 · 约剩 ")


def test_same_seed_same_video_other_seed_other_video(loaded_engine, photo):
    first = loaded_engine.generate(tiny_request(photo, seed=11)).frames
    torch.manual_seed(999)  # whatever the global RNG was left at
    second = loaded_engine.generate(tiny_request(photo, seed=11)).frames
    other = loaded_engine.generate(tiny_request(photo, seed=12)).frames
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_prompt_changes_the_video(loaded_engine, photo):
    a = loaded_engine.generate(tiny_request(photo, prompt="waves")).frames
    b = loaded_engine.generate(tiny_request(photo, prompt="a cat jumps over the fence")).frames
    assert not np.array_equal(a, b)


def test_cancel_stops_at_the_next_step(loaded_engine, photo):
    cancel = threading.Event()
    calls = []

    def progress(report: Progress):
        if report.stage == "denoising" and report.done == 2:
            cancel.set()
        calls.append(report)

    with pytest.raises(Cancelled, match="Cancelled"):
        loaded_engine.generate(tiny_request(photo, num_inference_steps=20), progress=progress, cancel=cancel)
    assert max(r.done for r in calls if r.stage == "denoising") == 2
    assert not any(r.stage == "decoding" for r in calls)
    # The engine is still usable afterwards: the hooks were removed.
    assert loaded_engine.generate(tiny_request(photo)).frames.shape[0] == 4


def test_our_prompt_embeddings_equal_the_pipelines_clip_skip_path(loaded_engine):
    """The pipeline's default (clip_skip=1) crashes on transformers 5 (no .text_model):
    give it that attribute back and check that it computes what we compute."""
    pipe = loaded_engine._pipe
    encoder = pipe.text_encoder
    assert not hasattr(encoder, "text_model")
    encoder.text_model = encoder  # the old layout: text_model.final_layer_norm
    try:
        pipe._guidance_scale = 9.0
        theirs, theirs_negative = pipe.encode_prompt("the waves roll in", torch.device("cpu"), 1,
                                                     "blurry", clip_skip=1)
    finally:
        del encoder.text_model
    with torch.inference_mode():
        ours = loaded_engine.encode_prompt("the waves roll in")
        ours_negative = loaded_engine.encode_prompt("blurry")
    assert ours.shape == theirs.shape == (1, 77, 32)
    assert torch.equal(ours, theirs) and torch.equal(ours_negative, theirs_negative)


def test_generate_before_loading_says_to_wait(demo_dir, photo):
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent)
    with pytest.raises(ModelUnavailable, match="not ready yet"):
        engine.generate(tiny_request(photo))


def test_a_broken_model_folder_ends_in_an_error_state_with_a_remedy(tmp_path, photo):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model_index.json").write_text("{not json")
    engine = Engine(ModelSettings(source=str(folder)), str(folder), tmp_path)
    engine.load()
    status = engine.status
    assert status.state is ModelState.ERROR
    assert "failed" in status.message and "models/README.md" in status.message
    assert "加载模型失败" in status.text("zh-CN") and "models/README.md" in status.text("zh-CN")
    with pytest.raises(ModelUnavailable, match="not available"):
        engine.generate(tiny_request(photo))


def test_a_hub_model_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    engine = Engine(ModelSettings(), "ali-vilab/i2vgen-xl", tmp_path / "models")
    engine.load()
    assert engine.status.state is ModelState.ERROR
    assert "HF_HUB_OFFLINE" in engine.status.message and "i2vgen-xl" in engine.status.message
    chinese = engine.status.text("zh-CN")  # the page in Chinese says the same, in Chinese
    assert "HF_HUB_OFFLINE" in chinese and "无法下载" in chinese


def test_asking_for_cuda_without_a_gpu_is_explained(demo_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine = Engine(ModelSettings(source=str(demo_dir), device="cuda"), str(demo_dir), demo_dir.parent)
    engine.load()
    assert engine.status.state is ModelState.ERROR
    assert "no CUDA GPU" in engine.status.message and "model.device" in engine.status.message
    assert "找不到 CUDA GPU" in engine.status.text("zh-CN")


def test_demo_flag_builds_and_marks_the_demo_model(tmp_path):
    path = tmp_path / "models" / "demo-i2vgen-xl-tiny"
    engine = Engine(ModelSettings(demo=True), str(path), tmp_path / "models")
    engine.load()
    assert engine.ready and engine.status.is_demo
    assert "CPU" in engine.status.device
    assert engine.status.device_text("zh-CN").startswith("CPU，") and "很慢" in engine.status.device_text("zh-CN")
    assert "就绪" in engine.status.text("zh-CN")


def test_live_previews_come_every_few_steps_and_show_the_frames(loaded_engine, photo):
    previews = []
    loaded_engine.generate(tiny_request(photo, num_inference_steps=20, num_frames=6),
                           progress=lambda p: p.preview is not None and previews.append((p.done, p.preview)))
    assert [done for done, _ in previews] == [2, 4, 6, 8, 10, 12, 14, 16, 18]  # every 20 // 10 steps
    strip = previews[-1][1]
    assert strip.dtype == np.uint8 and strip.shape == (8 * 4, 4 * 8 * 4, 3)  # 4 frames of 8x8 latents, x4
    assert strip.std() > 0
