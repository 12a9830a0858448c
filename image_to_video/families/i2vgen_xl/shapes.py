"""Random-weight I2VGen-XL pipelines built in code: the real model's shapes, a small copy, the demo.

One ``Shapes`` per architecture, one set of builders for all of them.

No weights can be downloaded where we build and benchmark, and a random-weight
pipeline with exactly the shapes of ``ali-vilab/i2vgen-xl`` costs the same GPU time
and memory as the real one (docs/DEPENDENCIES.md). ``REAL`` holds those shapes, from the model's
published config files; ``SMOKE`` is the same architecture (four UNet levels, cross
attention at three, two layers per block, attention in the VAE) narrowed so that a
CPU runs it in seconds, for checking the benchmark itself and ratios without a GPU.
``DEMO`` is the built-in demo model's (``demo_model.py``): shaped for speed on a small
CPU, with no spatial attention above the lowest UNet level and none in the VAE.

The FLOP counters here run the models on PyTorch's meta device: nothing is
allocated, so the real shapes can be counted on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# A 512-entry byte-level alphabet, as CLIP's tokenizer uses, with no merges.
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class Shapes:
    name: str
    unet_channels: tuple[int, ...]
    unet_head_dim: int
    unet_groups: int
    width: int  # cross-attention width = text hidden size = image projection
    text_layers: int
    text_heads: int
    text_intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    vae_channels: tuple[int, ...]
    vae_groups: int
    #: The UNet's levels, top to bottom: True where a level has cross attention (the up path mirrors it).
    unet_attention: tuple[bool, ...] = (True, True, True, False)
    layers_per_block: int = 2
    vae_layers: int = 2
    vae_mid_attention: bool = True
    vision_patch: int = 14
    #: The text encoder's vocabulary: CLIP's, or None for the byte-level tokenizer's.
    vocab_size: int | None = None


REAL = Shapes(name="real", unet_channels=(320, 640, 1280, 1280), unet_head_dim=64, unet_groups=32, width=1024,
              text_layers=24, text_heads=16, text_intermediate=4096, vision_hidden=1280, vision_layers=32,
              vision_heads=16, vision_intermediate=5120, vae_channels=(128, 256, 512, 512), vae_groups=32,
              vocab_size=49408)
SMOKE = Shapes(name="smoke", unet_channels=(16, 32, 32, 32), unet_head_dim=8, unet_groups=8, width=32,
               text_layers=2, text_heads=2, text_intermediate=64, vision_hidden=32, vision_layers=2,
               vision_heads=2, vision_intermediate=64, vae_channels=(16, 16, 32, 32), vae_groups=8)
# Three levels (64 -> 32 -> 16 latent pixels at 512p); attention only at the lowest, where a frame is
# 256 tokens instead of 4096. Four VAE blocks, so latents are 1/8 of the image as in the real model.
DEMO = Shapes(name="demo", unet_channels=(8, 16, 16), unet_head_dim=2, unet_groups=4, width=32, text_layers=2,
              text_heads=2, text_intermediate=64, vision_hidden=32, vision_layers=2, vision_heads=2,
              vision_intermediate=64, vae_channels=(8, 8, 8, 8), vae_groups=4,
              unet_attention=(False, False, True), layers_per_block=1, vae_layers=1, vae_mid_attention=False,
              vision_patch=32)
#: The shapes the benchmark can measure.
SHAPES = {shapes.name: shapes for shapes in (REAL, SMOKE)}


def build_unet(shapes: Shapes):
    from diffusers import I2VGenXLUNet

    down = tuple("CrossAttnDownBlock3D" if attention else "DownBlock3D" for attention in shapes.unet_attention)
    up = tuple("CrossAttnUpBlock3D" if attention else "UpBlock3D" for attention in reversed(shapes.unet_attention))
    return I2VGenXLUNet(
        in_channels=4, out_channels=4, down_block_types=down, up_block_types=up,
        block_out_channels=shapes.unet_channels, layers_per_block=shapes.layers_per_block,
        norm_num_groups=shapes.unet_groups, cross_attention_dim=shapes.width,
        attention_head_dim=shapes.unet_head_dim)


def build_vae(shapes: Shapes):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=shapes.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(shapes.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(shapes.vae_channels), layers_per_block=shapes.vae_layers,
        norm_num_groups=shapes.vae_groups, mid_block_add_attention=shapes.vae_mid_attention,
        scaling_factor=0.18125)


def build_text_encoder(shapes: Shapes):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=shapes.vocab_size or len(vocab()), hidden_size=shapes.width,
        intermediate_size=shapes.text_intermediate, num_hidden_layers=shapes.text_layers,
        num_attention_heads=shapes.text_heads, max_position_embeddings=77, projection_dim=shapes.width,
        hidden_act="gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1))


def build_image_encoder(shapes: Shapes):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=shapes.vision_hidden, intermediate_size=shapes.vision_intermediate,
        num_hidden_layers=shapes.vision_layers, num_attention_heads=shapes.vision_heads, image_size=224,
        patch_size=shapes.vision_patch, projection_dim=shapes.width, hidden_act="gelu"))


def build_pipeline(shapes: Shapes, *, seed: int = 0, device: str = "cpu"):
    """A random-weight ``I2VGenXLPipeline`` with ``shapes``, its weights made on ``device``.

    Making the 2.5 B random weights of ``REAL`` on a GPU takes seconds; on a CPU, minutes.
    The tokenizer is the demo model's byte-level one (its vocabulary is smaller than
    CLIP's, which changes nothing measured: the prompt is always 77 tokens).
    """
    import torch
    from diffusers import I2VGenXLPipeline

    torch.manual_seed(seed)
    with torch.device(device):
        parts = dict(unet=build_unet(shapes), vae=build_vae(shapes), text_encoder=build_text_encoder(shapes),
                     image_encoder=build_image_encoder(shapes))
    return I2VGenXLPipeline(**parts, tokenizer=build_tokenizer(), feature_extractor=build_feature_extractor(),
                            scheduler=build_scheduler())


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


def save_pipeline(shapes: Shapes, folder: Path, *, dtype: str = "float16", device: str = "cpu") -> Path:
    """Build and write a random ``shapes`` pipeline as ``from_pretrained`` reads it (fp16 files as the
    ``fp16`` variant, like the hub repo's), unless ``folder`` already holds one."""
    import torch

    folder = Path(folder)
    marker = folder / "SHAPES.txt"
    if marker.is_file() and marker.read_text() == f"{shapes.name} {dtype}":
        return folder
    pipe = build_pipeline(shapes, device=device).to(getattr(torch, dtype))
    pipe.save_pretrained(folder, variant="fp16" if dtype == "float16" else None)
    marker.write_text(f"{shapes.name} {dtype}")
    return folder


def unet_parameters(shapes: Shapes) -> int:
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build_unet(shapes).parameters())


def count_unet_tflop(shapes: Shapes, side: int, frames: int, *, batch: int = 2) -> float:
    """TFLOP of one UNet call at ``side`` x ``side`` pixels and ``frames`` frames (batch 2 = guidance)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = build_unet(shapes)
        size = side // 8
        latents = torch.randn(batch, 4, frames, size, size)
        inputs = dict(encoder_hidden_states=torch.randn(batch, 77, shapes.width),
                      fps=torch.full((batch,), 8), image_latents=torch.randn(batch, 4, frames, size, size),
                      image_embeddings=torch.randn(batch, 1, shapes.width))
        with FlopCounterMode(display=False) as counter:
            unet(latents, torch.full((batch,), 999), **inputs, return_dict=False)
    return counter.get_total_flops() / 1e12


def count_decode_tflop(shapes: Shapes, side: int) -> float:
    """TFLOP of decoding one frame of ``side`` x ``side`` pixels with the VAE."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        vae = build_vae(shapes)
        latents = torch.randn(1, 4, side // 8, side // 8)
        with FlopCounterMode(display=False) as counter:
            vae.decode(latents)
    return counter.get_total_flops() / 1e12
