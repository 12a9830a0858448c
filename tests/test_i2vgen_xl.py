"""The I2VGen-XL family on its own: prompt embeddings, the step hooks, decoding and live previews."""

import contextlib
import threading

import numpy as np
import pytest
import torch

from image_to_video import gpu
from image_to_video.errors import Cancelled
from image_to_video.i2vgen_xl import I2VGenXL, latent_preview

from .test_engine import tiny_request


@pytest.fixture(scope="module")
def family(demo_dir) -> I2VGenXL:
    loaded = I2VGenXL.load(demo_dir, device=torch.device("cpu"), dtype=torch.float32, variant=None, device_map="cpu")
    gpu.inference_only(loaded.pipeline)  # as the engine does: weights without gradients take other CPU kernels
    return loaded


def test_our_prompt_embeddings_equal_the_pipelines_clip_skip_path(family):
    """The pipeline's default (clip_skip=1) crashes on transformers >= 5.6 (no .text_model):
    give it that attribute back and check that it computes what we compute."""
    pipe = family.pipeline
    encoder = pipe.text_encoder
    with torch.inference_mode():
        family.encode_prompt("")  # transformers hooks the encoder's layers at its first call: before the loop below
    assert not hasattr(encoder, "text_model")
    encoder.text_model = encoder  # the old layout: text_model.final_layer_norm
    try:
        pipe._guidance_scale = 9.0
        theirs, theirs_negative = pipe.encode_prompt("the waves roll in", torch.device("cpu"), 1,
                                                     "blurry", clip_skip=1)
    finally:
        del encoder.text_model
    with torch.inference_mode():
        ours = family.encode_prompt("the waves roll in")
        ours_negative = family.encode_prompt("blurry")
    assert ours.shape == theirs.shape == (1, 77, 32)
    assert torch.equal(ours, theirs) and torch.equal(ours_negative, theirs_negative)


def test_the_family_denoises_and_decodes_without_the_engine(family, loaded_engine, photo):
    """The interface the engine calls: a hook before each step, contexts around the loop, a report
    per step and per chunk, and the engine's video from the same calls."""
    request = tiny_request(photo, num_inference_steps=3, num_frames=6)
    steps, entered, reports = [], [], []

    @contextlib.contextmanager
    def around():
        entered.append("in")
        yield
        entered.append("out")

    with torch.inference_mode():
        latents = family.denoise(request, report=reports.append, cancel=threading.Event(),
                                 before_step=lambda: steps.append(1), within=[around()])
        frames = family.decode(latents, chunk=4, report=reports.append, cancel=threading.Event())
    assert latents.shape == (1, 4, 6, 8, 8)
    assert len(steps) == 3  # one UNet call per step (the guidance pair is one batch)
    assert entered == ["in", "out"]
    assert [(r.stage, r.done) for r in reports] == [("denoising", 0), ("denoising", 1), ("denoising", 2),
                                                    ("denoising", 3), ("decoding", 4), ("decoding", 6)]
    assert frames.dtype == np.uint8 and frames.shape == (6, 64, 64, 3)
    assert np.array_equal(frames, loaded_engine.generate(request).frames)  # same seed, same video


def test_a_cancel_stops_the_decoding_at_the_next_chunk(family, photo):
    cancel, reports = threading.Event(), []
    with torch.inference_mode():
        latents = family.denoise(tiny_request(photo, num_inference_steps=1), report=reports.append,
                                 cancel=threading.Event())

        def report(progress):
            reports.append(progress)
            cancel.set()

        with pytest.raises(Cancelled):
            family.decode(latents, chunk=1, report=report, cancel=cancel)
    assert [r.done for r in reports if r.stage == "decoding"] == [1]


def test_live_previews_come_every_few_steps_and_show_the_frames(loaded_engine, photo):
    previews = []
    loaded_engine.generate(tiny_request(photo, num_inference_steps=20, num_frames=6),
                           progress=lambda p: p.preview is not None and previews.append((p.done, p.preview)))
    assert [done for done, _ in previews] == [2, 4, 6, 8, 10, 12, 14, 16, 18]  # every 20 // 10 steps
    strip = previews[-1][1]
    assert strip.dtype == np.uint8 and strip.shape == (8 * 4, 4 * 8 * 4, 3)  # 4 frames of 8x8 latents, x4
    assert strip.std() > 0


def test_a_latent_preview_shows_the_first_of_the_guidance_pair_frame_by_frame():
    latents = torch.zeros(2, 4, 3, 2, 2)
    latents[1] = 5  # the other half of the guidance pair must not show
    latents[0, :, 2] = 0.5  # only the last frame has content
    strip = latent_preview(latents, frames=4, scale=2)
    assert strip.shape == (2 * 2, 3 * 2 * 2, 3)  # 3 frames (all there are) side by side, each pixel 2x2
    assert (strip[:, :8] == 127).all()  # zero latents: mid gray
    assert (strip[:, 8:] != 127).any()
