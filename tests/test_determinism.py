"""Issue 13: the record says whether the same seed gives the identical video, and model.deterministic makes
it so on a GPU (deterministic kernels), off by default."""

import json
import os
from types import SimpleNamespace

import numpy as np
import torch

from image_to_video import speedups
from image_to_video.config import ModelSettings, load_config
from image_to_video.outputs import OutputFolder
from image_to_video.request import build_request
from image_to_video.service import VideoService, determinism


def test_the_record_says_the_same_seed_gives_the_same_video_on_this_cpu_and_it_does(small_config, loaded_engine,
                                                                                   photo):
    config = small_config()
    service = VideoService(loaded_engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
    request = build_request(config, image=photo, prompt="waves", seed=5)
    first = service.make_video(request)
    record = json.loads(first.metadata_path.read_text())
    assert record["deterministic"]["setting"] is False and record["deterministic"]["same_seed_same_video"] == "yes"
    again = loaded_engine.generate(build_request(config, image=photo, prompt="waves", seed=5)).frames
    assert np.array_equal(again, loaded_engine.generate(request).frames)  # what the record claims, measured


def test_on_a_gpu_the_record_claims_nothing_that_was_not_measured():
    cuda = SimpleNamespace(type="cuda")
    off = determinism(ModelSettings(), cuda)
    assert off["same_seed_same_video"] == "not guaranteed" and "model.deterministic: true" in off["basis"]
    on = determinism(ModelSettings(deterministic=True), cuda)
    assert on["same_seed_same_video"].startswith("expected") and "not measured on a GPU" in on["basis"]


def test_model_deterministic_asks_torch_for_deterministic_kernels_only_on_a_gpu(loaded_engine, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    pipe, unet = loaded_engine.pipeline, loaded_engine.denoiser
    assert load_config(overrides={"model.deterministic": True}).model.deterministic
    assert not ModelSettings().deterministic  # off by default: slower
    try:
        speedups.apply_speed_switches(pipe, unet, ModelSettings(deterministic=True, cudnn_benchmark=True),
                                      torch.device("cuda"))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
