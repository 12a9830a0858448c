"""Random-weight I2VGen-XL pipelines with the real model's shapes, for measuring speed and memory.

No weights can be downloaded where we build and benchmark, and a random-weight
pipeline with exactly the shapes of ``ali-vilab/i2vgen-xl`` costs the same GPU time
and memory as the real one (STACK.md). ``REAL`` holds those shapes, from the model's
published config files; ``SMOKE`` is the same architecture (four UNet levels, cross
attention at three, two layers per block, attention in the VAE) narrowed so that a
CPU runs it in seconds, for checking the benchmark itself and ratios without a GPU.

The FLOP counters here run the models on PyTorch's meta device: nothing is
allocated, so the real shapes can be counted on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import demo_model


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


REAL = Shapes(name="real", unet_channels=(320, 640, 1280, 1280), unet_head_dim=64, unet_groups=32, width=1024,
              text_layers=24, text_heads=16, text_intermediate=4096, vision_hidden=1280, vision_layers=32,
              vision_heads=16, vision_intermediate=5120, vae_channels=(128, 256, 512, 512), vae_groups=32)
SMOKE = Shapes(name="smoke", unet_channels=(16, 32, 32, 32), unet_head_dim=8, unet_groups=8, width=32,
               text_layers=2, text_heads=2, text_intermediate=64, vision_hidden=32, vision_layers=2,
               vision_heads=2, vision_intermediate=64, vae_channels=(16, 16, 32, 32), vae_groups=8)
SHAPES = {shapes.name: shapes for shapes in (REAL, SMOKE)}


def build_unet(shapes: Shapes):
    from diffusers import I2VGenXLUNet

    return I2VGenXLUNet(
        in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        block_out_channels=shapes.unet_channels, layers_per_block=2, norm_num_groups=shapes.unet_groups,
        cross_attention_dim=shapes.width, attention_head_dim=shapes.unet_head_dim)


def build_vae(shapes: Shapes):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=shapes.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=shapes.vae_groups, scaling_factor=0.18125)


def build_text_encoder(shapes: Shapes):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408 if shapes is REAL else len(demo_model.vocab()), hidden_size=shapes.width,
        intermediate_size=shapes.text_intermediate, num_hidden_layers=shapes.text_layers,
        num_attention_heads=shapes.text_heads, max_position_embeddings=77, projection_dim=shapes.width,
        hidden_act="gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1))


def build_image_encoder(shapes: Shapes):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=shapes.vision_hidden, intermediate_size=shapes.vision_intermediate,
        num_hidden_layers=shapes.vision_layers, num_attention_heads=shapes.vision_heads, image_size=224,
        patch_size=14, projection_dim=shapes.width, hidden_act="gelu"))


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
    return I2VGenXLPipeline(**parts, tokenizer=demo_model.build_tokenizer(),
                            feature_extractor=demo_model.build_feature_extractor(),
                            scheduler=demo_model.build_scheduler())


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
