"""I2VGen-XL (``ali-vilab/i2vgen-xl``, 2023): the model our users' old app ran.

Its card's generation settings are the config's ``generation`` section (config/model_config.yaml),
whose figures come from the model card and the old app (docs/FAMILIES.md); its sizes are that
section's resolutions, square, and the other aspects at the same number of pixels.
"""

from __future__ import annotations

from ...config import GenerationSettings
from ..card import ASPECTS, Card

CARD = Card(
    name="i2vgen-xl", family="i2vgen-xl", title="I2VGen-XL", pipeline_class="I2VGenXLPipeline",
    pipeline="i2vgen_xl.pipeline:I2VGenXL", hub_repos=("ali-vilab/i2vgen-xl",), download_gb=5.2,
    licence="MIT (weights: see the model card; research use)",
    generation=GenerationSettings(),
    base_sizes={name: (side, side) for name, side in GenerationSettings().resolutions.items()},
    aspects=ASPECTS, size_multiple=64, frame_step=1, gpu_dtype="float16",
    denoisers=("unet",), prompt_languages=("en",), end_frame=False,
    demo_builder="i2vgen_xl.demo:build_demo_model",
    speed_switches=("attention_backend", "channels_last", "fuse_qkv", "compile", "scheduler", "deep_cache_interval"),
    sources={
        "sizes": "trained at 1280x704 (model card); multiples of 64 keep the UNet's three downsamplings whole",
        "defaults": "512p, 16 frames, 8 fps, 50 steps, guidance 9.0: the old app's (SEED_APP) and the model "
                    "card's example",
        "prompt_languages": "CLIP ViT-H text encoder: English",
        "loras": "none: diffusers' I2VGenXLPipeline has no LoRA loader (it is a deprecated pipeline, last "
                 "supported in 0.33.1, without StableDiffusionLoraLoaderMixin), and no LoRAs are published for it",
    },
)
