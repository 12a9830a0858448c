"""Wan 2.2 (Wan-AI, Apache-2.0) through ``diffusers.WanImageToVideoPipeline``: two models.

* ``wan2.2-ti2v-5b``: the 5B dense model for 12-24 GB cards; 720p (1280x704 / 704x1280), 24 fps, up to
  121 frames; its VAE compresses 16x16 pixels and 4 frames, its transformer's patch is 2x2.
* ``wan2.2-i2v-a14b``: two 14B experts (``transformer`` for the noisy steps, ``transformer_2`` after
  ``boundary_ratio``); 480p and 720p, 16 fps, 81 frames, an optional end frame (``last_image``).

Each figure's source is in the card's ``sources`` (docs/FAMILIES.md has the details).
"""

from __future__ import annotations

import types

from ...config import GenerationDefaults, GenerationSettings, Preset, Range
from ..card import ASPECTS, Card, Fast, HubLora

#: Wan's own negative prompt: the one its repository and diffusers' examples use (Chinese: umT5 reads it).
NEGATIVE_PROMPT = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
                   "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
                   "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")

_SOURCES = {
    "sizes": "Wan2.2 repository, SUPPORTED_SIZES (ti2v-5B: 1280*704, 704*1280; i2v-A14B: 1280*720, 720*1280, "
             "832*480, 480*832); diffusers' Wan docs fit other aspects to the same area, each side a multiple "
             "of the VAE's spatial factor times the patch (16x2 for 5B, 8x2 for A14B)",
    "frames": "4k+1: the VAE's temporal factor is 4 (diffusers rounds other counts down); 121 (5B) and 81 "
              "(A14B) from the model cards; 9 is diffusers' own test length, the cheapest short video",
    "defaults": "diffusers' Wan 2.2 examples: 5B 121 frames, 50 steps, guidance 5.0, 24 fps; A14B 81 frames, "
                "40 steps, guidance 3.5, 16 fps",
    "negative_prompt": "the Wan2.2 repository's sample_neg_prompt, used by diffusers' examples",
    "prompt_languages": "umT5 text encoder, multilingual (the model card's prompts are Chinese and English)",
    "download_gb": "the hub repos' file sizes (5B: about 34 GB in float32 safetensors; A14B: about 126 GB)",
    "licence": "Apache-2.0 (model cards)",
    "loras": "diffusers' WanLoraLoaderMixin (0.42.1): load_lora_weights reads diffusers' LoRA files and converts "
             "the original Wan, lightx2v and musubi formats; a file's transformer_2.* weights go into A14B's "
             "second expert (what load_into_transformer_2 does)",
    "fast": "A14B: lightx2v's Wan2.2-Lightning (github.com/ModelTC/Wan2.2-Lightning README; hub lightx2v/"
            "Wan2.2-Lightning, folder Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1): 4 steps 'without the need of "
            "CFG' (guidance 1), high_noise_model into the high-noise expert, low_noise_model into the low-noise "
            "one; its training timesteps [1000, 937.5, 833.3, 625] are 4 even steps at a flow shift of 5. "
            "5B: Lightning has no TI2V-5B LoRA (its README's to-do list); FastVideo's FastWan2.2-TI2V-5B-FullAttn "
            "(hub FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers: 'efficient 3-step inference', DMD-distilled, "
            "guidance 1) as a rank-128 LoRA extracted by Kijai (hub Kijai/WanVideo_comfy, "
            "FastWan/Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors, 661 MB). Sizes of the lightx2v "
            "files: about 1.2 GB each (rank 64, float32, as hub mirrors list them). Not yet judged on real "
            "weights: diffusers runs its UniPC solver where Lightning's and FastVideo's code run their own",
}

_LIMITS = dict(fps=Range(4, 30), num_inference_steps=Range(2, 100), guidance_scale=Range(1.0, 20.0),
               max_prompt_chars=1000)


def _generation(defaults: GenerationDefaults, presets: dict, resolutions: dict, frames: Range) -> GenerationSettings:
    return GenerationSettings(defaults=defaults, presets=types.MappingProxyType(presets),
                              resolutions=types.MappingProxyType(resolutions), num_frames=frames, **_LIMITS)


TI2V_5B = Card(
    name="wan2.2-ti2v-5b", family="wan", title="Wan2.2-TI2V-5B", pipeline_class="WanImageToVideoPipeline",
    pipeline="wan.pipeline:Wan", hub_repos=("Wan-AI/Wan2.2-TI2V-5B-Diffusers",), download_gb=34.0,
    licence="Apache-2.0",
    generation=_generation(
        GenerationDefaults(resolution="720p", num_frames=121, fps=24, num_inference_steps=50, guidance_scale=5.0,
                           negative_prompt=NEGATIVE_PROMPT),
        {"Quick preview": Preset("480p", 33, 24, 30, 5.0), "Standard": Preset("720p", 121, 24, 50, 5.0),
         "Short 720p": Preset("720p", 49, 24, 50, 5.0), "Fast": Preset("720p", 121, 24, 3, 1.0)},
        {"480p": 480, "720p": 704}, Range(5, 121)),
    base_sizes={"480p": (832, 480), "720p": (1280, 704)}, aspects=ASPECTS, size_multiple=32, frame_step=4,
    gpu_dtype="bfloat16", denoisers=("transformer",), prompt_languages=("en", "zh"), end_frame=False,
    demo_builder="wan.demo:build_demo_model", sources=_SOURCES,
    download_patterns=("*.model",), loras=True,
    fast=Fast("Fast", (HubLora("fastwan-ti2v-5b", "Kijai/WanVideo_comfy",
                               "FastWan/Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors", None, 661),)),
)

I2V_A14B = Card(
    name="wan2.2-i2v-a14b", family="wan", title="Wan2.2-I2V-A14B", pipeline_class="WanImageToVideoPipeline",
    pipeline="wan.pipeline:Wan", hub_repos=("Wan-AI/Wan2.2-I2V-A14B-Diffusers",), download_gb=126.0,
    licence="Apache-2.0",
    generation=_generation(
        GenerationDefaults(resolution="480p", num_frames=81, fps=16, num_inference_steps=40, guidance_scale=3.5,
                           negative_prompt=NEGATIVE_PROMPT),
        {"Quick preview": Preset("480p", 33, 16, 20, 3.5), "Standard": Preset("480p", 81, 16, 40, 3.5),
         "High quality": Preset("720p", 81, 16, 40, 3.5), "Fast": Preset("480p", 81, 16, 4, 1.0)},
        {"480p": 480, "720p": 720}, Range(5, 81)),
    base_sizes={"480p": (832, 480), "720p": (1280, 720)}, aspects=ASPECTS, size_multiple=16, frame_step=4,
    gpu_dtype="bfloat16", denoisers=("transformer", "transformer_2"), prompt_languages=("en", "zh"), end_frame=True,
    demo_builder="wan.demo:build_demo_model", sources=_SOURCES,
    download_patterns=("*.model",), loras=True,
    fast=Fast("Fast", tuple(
        HubLora(f"lightning-i2v-a14b-{expert}", "lightx2v/Wan2.2-Lightning",
                f"Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/{expert}_noise_model.safetensors", expert, 1230)
        for expert in ("high", "low"))),
)

CARDS = (TI2V_5B, I2V_A14B)
