"""Random-weight Wan 2.2 image-to-video pipelines built in code, in both of its layouts.

For the tests and for the app's built-in Wan demo models: a ``WanImageToVideoPipeline``
with every component of the real one, written with ``save_pretrained`` and read back by
the same ``from_pretrained`` code as the real weights, so the Wan code paths run on any
machine, CI included, with nothing downloaded. Its weights are random: it produces
coloured noise, never a meaningful video.

Wan 2.2 ships two image-to-video layouts, and the pipeline behaves differently for each:

- ``"ti2v-5b"`` (Wan2.2-TI2V-5B): one transformer, a 48-channel VAE that compresses 16x
  in space, and ``expand_timesteps`` (the image is the first latent frame, kept clean).
- ``"i2v-a14b"`` (Wan2.2-I2V-A14B): two transformers (high noise, then low noise from
  ``boundary_ratio``), a 16-channel VAE that compresses 8x, and the image (and an optional
  last image) fed as extra input channels with a mask.

The VAE, transformer and scheduler settings are diffusers' own dummy components from its
test ``tests/pipelines/wan/test_wan_22_image_to_video.py``. That test downloads its text
encoder and tokenizer; here they are made in code: a two-layer UMT5 encoder of width 32
(the transformers' ``text_dim``) and a T5 tokenizer whose Unigram vocabulary is the
printable ASCII characters, so English prompts become real ids and anything else
(Chinese, say) becomes ``<unk>``. The one change to the test's models is ``rope_max_seq_len``
(see ``build_transformer``), so that they run at the real sizes: 9 frames, 2 steps at 832x480
take about 2 s (5B) and 13 s (A14B) on one CPU core, nearly all of it in the VAE (A14B's
works at full resolution and encodes every frame of the condition video, 5B's only the image).
"""

from __future__ import annotations

import logging
import math
import shutil
import string
from pathlib import Path

from ..i2vgen_xl.demo import DEMO_VERSION, MARKER_FILE

log = logging.getLogger(__name__)

TI2V_5B = "ti2v-5b"
I2V_A14B = "i2v-a14b"
LAYOUTS = (TI2V_5B, I2V_A14B)

#: Bump when anything built below changes, so old Wan demo folders are rebuilt.
WAN_DEMO_VERSION = "1"
#: The text encoder's width: the transformers' ``text_dim``.
TEXT_DIM = 32
#: Room for the tokenizer's ids (it has 98) in the text encoder's embedding table.
VOCAB_SIZE = 128

# The marker has the I2VGen-XL demo's file name and "(version N)" wording, so its
# is_demo_model (the engine's check) tells the UI this is a demo too; the last line is Wan's own.
_MARKER_TEXT = (
    "This folder holds the Image-to-Video Wan 2.2 demo model (version {version}).\n"
    "Its weights are random: its videos are noise. It exists so the app runs\n"
    "anywhere without downloading the real Wan 2.2 weights.\n"
    "{wan_line}\n"
)


def _check(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown Wan layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def build_vae(layout: str):
    from diffusers import AutoencoderKLWan

    _check(layout)
    if layout == TI2V_5B:
        return AutoencoderKLWan(
            base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
            latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True])
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def build_transformer(layout: str):
    from diffusers import WanTransformer3DModel

    _check(layout)
    # 5B: noisy latents only (48 channels). A14B: 16 noisy + 4 mask + 16 image-condition channels.
    channels = dict(in_channels=48, out_channels=48) if layout == TI2V_5B else dict(in_channels=36, out_channels=16)
    # The test's rope_max_seq_len is 32 patches a side: 1024 pixels for 5B, 512 for A14B, too few for
    # 720p (5B) or 832 wide (A14B). 1024 is the real models': a longer table of fixed (unsaved) RoPE
    # frequencies, no weights, the same values for the first 32 positions.
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, **channels, text_dim=TEXT_DIM,
        freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024)


def build_scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def build_text_encoder():
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(
        vocab_size=VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))


def build_tokenizer():
    """A T5 tokenizer (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) over ``▁`` and printable ASCII, no sentinels.

    The pipeline pads to 512 tokens; ``</s>`` is appended to every prompt as UMT5's is.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = ["▁"] + [char for char in string.printable if not char.isspace()]
    score = -math.log(len(pieces))  # all pieces equally likely: one token a character
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(piece, score) for piece in pieces]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    assert tokenizer.get_vocab_size() <= VOCAB_SIZE
    return T5TokenizerFast(tokenizer_object=tokenizer, extra_ids=0, model_max_length=512,
                           pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_pipeline(layout: str, *, seed: int = 0):
    """A random-weight ``WanImageToVideoPipeline`` in ``layout`` (``"ti2v-5b"`` or ``"i2v-a14b"``).

    The weights are the same for the same ``seed``; torch's global RNG is left as it was.
    """
    import torch
    from diffusers import WanImageToVideoPipeline

    _check(layout)
    state = torch.random.get_rng_state()  # building seeds the global RNG: give the caller's back
    try:
        torch.manual_seed(seed)
        vae, transformer, text_encoder = build_vae(layout), build_transformer(layout), build_text_encoder()
        transformer_2 = build_transformer(layout) if layout == I2V_A14B else None
    finally:
        torch.random.set_rng_state(state)
    for model in (vae, transformer, transformer_2, text_encoder):
        if model is not None:
            model.eval()  # as from_pretrained leaves them
    return WanImageToVideoPipeline(
        tokenizer=build_tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=build_scheduler(),
        image_processor=None, image_encoder=None, transformer=transformer, transformer_2=transformer_2,
        boundary_ratio=0.875 if layout == I2V_A14B else None, expand_timesteps=layout == TI2V_5B)


def _wan_line(layout: str) -> str:
    return f"Wan layout: {layout} (Wan demo version {WAN_DEMO_VERSION})."


def is_demo_model(path: Path, layout: str) -> bool:
    """True when ``path`` is a Wan demo model folder in ``layout``, of the current versions."""
    marker = Path(path) / MARKER_FILE
    if not marker.is_file():
        return False
    text = marker.read_text(errors="replace")
    return f"(version {DEMO_VERSION})" in text and _wan_line(layout) in text


def build_demo_model(path: Path, layout: str, *, force: bool = False, seed: int = 0) -> Path:
    """Write the Wan demo pipeline in ``layout`` to ``path`` (no downloads) and return ``path``.

    Does nothing when an up-to-date demo model of that layout is already there, unless ``force``.
    The weights are the same for the same ``seed``, so two builds give the same videos.
    """
    path = Path(path)
    _check(layout)
    if is_demo_model(path, layout) and not force:
        return path
    log.info("Building the Wan %s demo model in %s", layout, path)
    pipe = build_pipeline(layout, seed=seed)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    (tmp / MARKER_FILE).write_text(_MARKER_TEXT.format(version=DEMO_VERSION, wan_line=_wan_line(layout)))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path
