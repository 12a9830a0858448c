"""Build the built-in demo model: a tiny, randomly initialised I2VGen-XL.

The demo model has the real pipeline's components and file layout (it is written
with ``save_pretrained`` and read back by the same ``from_pretrained`` code as the
real weights), so the whole app runs on any machine, CI included. Its weights are
random: it produces coloured noise, never a meaningful video.

It is shaped for speed on a small CPU: no spatial attention above the lowest
UNet level, no attention in the VAE, a handful of channels. At the app's default
settings (512x512, 16 frames, 50 steps) one video takes well under a minute on
two CPU cores; ``bench/demo_speed.py`` measures it.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

#: Written into the model folder; the engine reads it to tell the UI this is the demo.
MARKER_FILE = "DEMO_MODEL.txt"
#: Bump when the architecture below changes, so old demo folders are rebuilt.
DEMO_VERSION = "1"

_MARKER_TEXT = (
    "This folder holds the Image-to-Video demo model (version {version}).\n"
    "Its weights are random: its videos are noise. It exists so the app runs\n"
    "anywhere without downloading the real I2VGen-XL weights (about 5 GB).\n"
)

# A 512-entry byte-level alphabet, as CLIP's tokenizer uses, with no merges.
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_WIDTH = 32  # every hidden size of the demo model


def is_demo_model(path: Path) -> bool:
    """True when ``path`` is a demo model folder of the current version."""
    marker = Path(path) / MARKER_FILE
    return marker.is_file() and f"(version {DEMO_VERSION})" in marker.read_text(errors="replace")


def build_demo_model(path: Path, *, force: bool = False, seed: int = 0) -> Path:
    """Write the demo pipeline to ``path`` (no downloads) and return ``path``.

    Does nothing when an up-to-date demo model is already there, unless ``force``.
    The weights are the same for the same ``seed``, so two builds give the same videos.
    """
    path = Path(path)
    if is_demo_model(path) and not force:
        return path
    import torch  # heavy imports stay out of module import time

    log.info("Building the demo model in %s", path)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        pipe = _build_pipeline()
    finally:
        torch.random.set_rng_state(state)
    tmp = path.with_name(path.name + ".partial")
    _remove_tree(tmp)
    pipe.save_pretrained(tmp)
    (tmp / MARKER_FILE).write_text(_MARKER_TEXT.format(version=DEMO_VERSION))
    _remove_tree(path)
    tmp.rename(path)
    return path


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)


def _build_pipeline():
    from diffusers import I2VGenXLPipeline

    return I2VGenXLPipeline(
        vae=_build_vae(),
        text_encoder=_build_text_encoder(),
        tokenizer=build_tokenizer(),
        image_encoder=_build_image_encoder(),
        feature_extractor=build_feature_extractor(),
        unet=_build_unet(),
        scheduler=build_scheduler(),
    )


def _build_unet():
    from diffusers import I2VGenXLUNet

    # Three levels (64 -> 32 -> 16 latent pixels at 512p); attention only at the
    # lowest level, where a frame is 256 tokens instead of 4096.
    return I2VGenXLUNet(
        down_block_types=("DownBlock3D", "DownBlock3D", "CrossAttnDownBlock3D"),
        up_block_types=("CrossAttnUpBlock3D", "UpBlock3D", "UpBlock3D"),
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=_WIDTH,
        attention_head_dim=2,
    )


def _build_vae():
    from diffusers import AutoencoderKL

    # Four blocks so latents are 1/8 of the image, as in the real model.
    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        mid_block_add_attention=False,
        scaling_factor=0.18125,
    )


def _build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(vocab()),
        hidden_size=_WIDTH,
        intermediate_size=2 * _WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=_WIDTH,
        hidden_act="gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def _build_image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=_WIDTH,
        intermediate_size=2 * _WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=32,
        projection_dim=_WIDTH,
        hidden_act="gelu",
    )
    return CLIPVisionModelWithProjection(config)


def build_feature_extractor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        crop_size={"height": 224, "width": 224},
        size={"shortest_edge": 224},
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def vocab() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # CLIP's special ids are fixed by the text encoder's config: bos 0, pad 1, eos 2.
    tokens = [_BOS, "<|pad|>", _EOS]
    for char in bytes_to_unicode().values():
        tokens += [char, char + "</w>"]
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        vocab=vocab(),
        merges=[],
        model_max_length=77,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_EOS,
        unk_token=_EOS,
    )


def build_scheduler():
    from diffusers import DDIMScheduler

    # The real model's scheduler settings, so the demo runs the same loop.
    return DDIMScheduler(
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
        clip_sample=False,
    )
