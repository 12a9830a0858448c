"""The I2VGen-XL family on its own: prompt embeddings, the step hooks, decoding and live previews."""

import contextlib
import threading

import numpy as np
import pytest
import torch

from image_to_video import gpu
from image_to_video.errors import Cancelled
from image_to_video.families.i2vgen_xl.pipeline import I2VGenXL, latent_preview

from .helpers import tiny_request


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


# -- a non-finite video (issue 13) ---------------------------------------------------------------------

def nan_in(vae, *, when=lambda dtype: True):
    """The VAE decoder's output turned to NaN where ``when(input dtype)``; returns the dtypes it saw."""
    seen = []

    def hook(_module, args, output):
        seen.append(args[0].dtype)
        return output * float("nan") if when(args[0].dtype) else None

    return seen, vae.decoder.register_forward_hook(hook)


def test_nan_frames_from_the_half_precision_vae_are_decoded_again_in_float32(demo_dir, family):
    half = I2VGenXL.load(demo_dir, device=torch.device("cpu"), dtype=torch.float16, variant=None, device_map="cpu")
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    seen, hook = nan_in(half.pipeline.vae, when=lambda dtype: dtype == torch.float16)
    with torch.inference_mode():
        frames = half.decode(latents.half(), chunk=2, report=lambda _: None, cancel=threading.Event())
        reference = family.decode(latents, chunk=2, report=lambda _: None, cancel=threading.Event())
    hook.remove()
    assert seen == [torch.float16, torch.float32, torch.float32]  # NaN in float16, then each frame in float32
    assert np.abs(frames.astype(int) - reference.astype(int)).max() <= 1  # the float32 video, not noise
    assert half.pipeline.vae.dtype == torch.float16  # back in its own dtype for the next video


def test_a_video_that_stays_nan_fails_clearly_and_nothing_is_saved(small_config, loaded_engine, photo):
    from image_to_video.errors import GenerationFailed
    from image_to_video.i18n import localized
    from image_to_video.outputs import OutputFolder
    from image_to_video.service import VideoService

    config = small_config()
    service = VideoService(loaded_engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
    seen, hook = nan_in(loaded_engine.pipeline.vae)
    try:
        with pytest.raises(GenerationFailed) as error:
            service.make_video(tiny_request(photo))
    finally:
        hook.remove()
    assert "invalid video (NaN or infinite pixels)" in str(error.value) and "nothing was saved" in str(error.value)
    assert "无效" in localized(error.value, "zh-CN")
    assert seen and seen[-1] == torch.float32
    assert not config.paths.output_dir.exists() or list(config.paths.output_dir.iterdir()) == []
