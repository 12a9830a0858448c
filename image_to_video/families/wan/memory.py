"""GPU memory of Wan 2.2, traced from its shapes: ``python -m image_to_video.families.wan.memory``.

Writes docs/memory-traced-wan.json. Nothing is traced while the app runs: ``needs_gb`` reads that file.

How: the same way ``image_to_video.memory_trace`` traces I2VGen-XL, with its counter (``traced_gb``):
each model is built with its real shapes (``SHAPES``, from the published config files, cited below)
on PyTorch's meta device, so nothing is allocated, in the dtypes ``from_pretrained`` gives them
(``as_loaded``); each stage runs in inference mode under ``LiveBytes``, which adds up the bytes of
every storage an operation makes and subtracts them when it is freed, keeping the peak. The inputs
are made inside the trace (on a GPU they are there too). Attention: diffusers' default backend
calls ``torch.nn.functional.scaled_dot_product_attention`` (umT5 too, through transformers' "sdpa");
it is counted as the flash and memory-efficient CUDA kernels allocate it, the output and a float32
logsumexp, never the query x key matrix (so attention memory is linear in tokens). Weights are
counted from the built modules' parameters and buffers, in their loaded dtypes.

The stages of one video, as ``WanImageToVideoPipeline`` (diffusers 0.42.1) and ``wan.pipeline.Wan``
run them:

* ``text_encode``: umT5 on 512 tokens (the prompt, then the negative prompt; the peak is one call's).
* ``vae_encode``: the condition through the VAE encoder: 5B the first frame only; A14B the whole
  ``num_frames`` video (the picture, then zeros; an end frame changes no size).
* ``denoise``: one step with guidance: the cond call, then the uncond call while the cond output is
  kept, then the guidance sum; its peak is one call's plus a latent-sized tensor. The scheduler's
  state (a few latent-sized float32 tensors, < 0.03 GB at the largest size) is not traced.
* ``vae_decode``: the whole video decoded at once (Wan's VAE runs frame by frame with a feature
  cache, but concatenates the frames into one float32 video), then ``Wan.decode``'s conversion to
  uint8 on the GPU. The float32 video and its temporaries grow with the frames.

Per memory mode (``gpu.enter_memory_mode``), the weights on the GPU in each stage plus its working
memory with ``estimates``' margin; the peak is the largest stage:

* ``gpu``: every weight.
* ``model_offload`` (diffusers' ``enable_model_cpu_offload``, chain text_encoder -> transformer ->
  transformer_2 -> vae; a component is moved off only when the next one in the chain starts): text
  encoding with the VAE (left there by the last video's decode), the VAE encode with the text encoder
  (not moved off until the transformer starts), each denoising step with one expert and the VAE (A14B:
  the two experts are separate components, one on the GPU at a time), the decode with the VAE only.
* ``group_offload`` (``gpu.enable_group_offload``): the experts block by block (the weights outside
  ``blocks`` plus the largest block: ``memory_trace.group_offload_resident``), the text encoder and
  VAE whole while they run (chain text_encoder -> vae: the VAE encode moves the text encoder off).
* ``sequential_offload``: each leaf module's weights while it runs: the largest one of the stage's
  component (umT5's 256384 x 4096 token embedding, 1.96 GB, is the largest of all).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch

from ...estimates import HEADROOM, MARGIN_GB, MARGIN_SHARE, MEASURED_FILE, MEMORY_MODES, _line, with_margin
from ...memory_trace import group_offload_resident, traced_gb
from . import I2V_A14B, TI2V_5B

#: Where the table is written and read.
TRACED_FILE = MEASURED_FILE.with_name("memory-traced-wan.json")
_GB = 2**30
_STAGES = ("text_encode", "vae_encode", "denoise", "vae_decode")
#: The frame counts traced per model (4k + 1); ``needs_gb`` draws a straight line between them.
FRAMES = {TI2V_5B.name: (5, 17, 33, 49, 81, 121), I2V_A14B.name: (5, 17, 33, 49, 81)}
#: The text encoder's sequence: the pipeline pads every prompt to ``max_sequence_length`` 512.
TEXT_TOKENS = 512
#: The card sizes of the note's table (GB as the cards are sold: GiB of memory).
CARDS_GB = (12, 16, 24, 80)

# -- the real shapes ------------------------------------------------------------------------------
#
# Wan-AI/Wan2.2-TI2V-5B-Diffusers and Wan-AI/Wan2.2-I2V-A14B-Diffusers on the Hugging Face hub
# (transformer/, transformer_2/, vae/, text_encoder/ config.json). Those files could not be opened
# here (no network); every figure below was checked against these sources instead:
#  [D] diffusers' scripts/convert_wan_to_diffusers.py (huggingface/diffusers, commit 58eb52c0), the
#      script that wrote those hub folders: get_transformer_config("Wan2.2-TI2V-5B" and
#      "Wan2.2-I2V-14B-720p"), vae22_diffusers_config (Wan 2.2 VAE), convert_vae() =
#      AutoencoderKLWan() defaults (Wan 2.1 VAE), and the text encoder
#      UMT5EncoderModel.from_pretrained("google/umt5-xxl");
#  [W] the Wan2.2 repository (Wan-Video/Wan2.2, commit 42bf4cfa): wan/configs/wan_ti2v_5B.py,
#      wan_i2v_A14B.py (dim, ffn_dim, heads, layers, patch), wan/modules/vae2_2.py (Wan2_2_VAE:
#      z_dim 48, c_dim 160, dec_dim 256, dim_mult [1, 2, 4, 4], temperal_downsample [F, T, T]),
#      vae2_1.py (dim 96, num_res_blocks 2), t5.py umt5_xxl (vocab 256384, dim 4096, dim_attn 4096,
#      dim_ffn 10240, 64 heads, 24 encoder layers, 32 buckets);
#  [C] third-party copies of the hub files' contents: "Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json"
#      quoted verbatim in several repositories (decoder_base_dim 256 included), and google/umt5-xxl's
#      config.json (d_kv 64, feed_forward_proj gated-gelu, max_distance 128, tie_word_embeddings false).
# ``latents_mean``/``latents_std`` are left at neutral values: they scale the latents, no size.

_TRANSFORMER_COMMON = dict(patch_size=(1, 2, 2), attention_head_dim=128, text_dim=4096, freq_dim=256,
                           cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                           image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024)

SHAPES = {
    TI2V_5B.name: {
        # [D] "Wan2.2-TI2V-5B"; [W] wan_ti2v_5B.py: dim 3072 = 24 x 128, ffn 14336, 30 layers.
        "transformer": dict(_TRANSFORMER_COMMON, num_attention_heads=24, in_channels=48, out_channels=48,
                            ffn_dim=14336, num_layers=30),
        # [D] vae22_diffusers_config; [W] vae2_2.py; [C] the hub's vae/config.json.
        "vae": dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                    attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0, is_residual=True,
                    in_channels=12, out_channels=12, patch_size=2, scale_factor_temporal=4,
                    scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48),
    },
    I2V_A14B.name: {
        # [D] "Wan2.2-I2V-14B-720p" (both experts, high_noise_model and low_noise_model); [W]
        # wan_i2v_A14B.py: dim 5120 = 40 x 128, ffn 13824, 40 layers. No image encoder (image_dim None).
        "transformer": dict(_TRANSFORMER_COMMON, num_attention_heads=40, in_channels=36, out_channels=16,
                            ffn_dim=13824, num_layers=40),
        # [D] convert_vae(): AutoencoderKLWan() defaults, written out; [W] vae2_1.py.
        "vae": dict(base_dim=96, decoder_base_dim=None, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                    attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0, is_residual=False,
                    in_channels=3, out_channels=3, patch_size=None, scale_factor_temporal=4,
                    scale_factor_spatial=8, latents_mean=[0.0] * 16, latents_std=[1.0] * 16),
    },
}
#: umT5-XXL's encoder, the same in both ([D] google/umt5-xxl; [W] t5.py umt5_xxl; [C] its config.json).
TEXT_ENCODER = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", dropout_rate=0.1, layer_norm_epsilon=1e-6,
                    tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
#: The app's dtypes on a GPU: the card's bfloat16, and the VAE cast to float32 (``Wan.load``).
DTYPES = {"transformer": "bfloat16 (its _keep_in_fp32_modules in float32, as from_pretrained keeps them)",
          "text_encoder": "bfloat16", "vae": "float32"}
CARDS = {TI2V_5B.name: TI2V_5B, I2V_A14B.name: I2V_A14B}


# -- the models on the meta device ------------------------------------------------------------------

def as_loaded(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` in the dtypes diffusers' ``from_pretrained(torch_dtype=dtype)`` gives it: each parameter
    in ``dtype``, but those under a module named in ``_keep_in_fp32_modules`` in float32; buffers as
    built (they are not in the weight files: Wan's RoPE tables stay float32)."""
    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    for name, parameter in module.named_parameters():
        wanted = torch.float32 if any(part in keep for part in name.split(".")) else dtype
        parameter.data = parameter.data.to(wanted)
    return module.eval()


def build_transformer(model: str) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    return as_loaded(WanTransformer3DModel(**SHAPES[model]["transformer"]), torch.bfloat16)


def build_vae(model: str) -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(**SHAPES[model]["vae"]).to(torch.float32).eval()


def build_text_encoder() -> torch.nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(**TEXT_ENCODER)).to(torch.bfloat16).eval()


def weights_gb(module: torch.nn.Module) -> float:
    """The bytes of its parameters and buffers (all go to the GPU), in their dtypes."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / _GB


def largest_layer_gb(module: torch.nn.Module) -> float:
    """The largest weights one module holds itself (what sequential offload puts on the GPU at once)."""
    return max(sum(t.numel() * t.element_size() for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))
               for m in module.modules()) / _GB


# -- the stages, as the pipeline runs them (inputs made inside the trace: they are on the GPU) --------

def _latent_grid(model: str, width: int, height: int, frames: int) -> tuple[int, int, int, int]:
    vae = SHAPES[model]["vae"]
    spatial = vae["scale_factor_spatial"]
    return vae["z_dim"], (frames - 1) // vae["scale_factor_temporal"] + 1, height // spatial, width // spatial


def encode_text(text_encoder) -> None:
    """``_get_t5_prompt_embeds``: umT5 on the 512 padded tokens. Without their padding mask: transformers
    reads its values to choose the attention path, which a meta tensor has none of (the mask it would
    make is 512 x 512 booleans, 0.25 MB)."""
    text_encoder(torch.zeros(1, TEXT_TOKENS, dtype=torch.long)).last_hidden_state


def encode_condition(vae, model: str, width: int, height: int, frames: int) -> None:
    """``prepare_latents``' VAE encode: 5B (``expand_timesteps``) the picture as one frame; A14B the
    picture followed by ``frames - 1`` zero frames, made with ``torch.cat`` as the pipeline does."""
    image = torch.randn(1, 3, height, width).unsqueeze(2)
    if model == TI2V_5B.name:
        video = image
    else:
        video = torch.cat([image, image.new_zeros(1, 3, frames - 1, height, width)], dim=2)
    del image
    vae.encode(video).latent_dist.mode()


def denoise_step(transformer, model: str, width: int, height: int, frames: int, *, guidance: bool = True) -> None:
    """One step of ``__call__``'s loop: the latents and condition in float32, the prompts in bfloat16,
    the cond call, then (with guidance) the uncond call and the guidance sum."""
    channels, latent_frames, rows, cols = _latent_grid(model, width, height, frames)
    latents = torch.randn(1, channels, latent_frames, rows, cols)
    prompt, negative = (torch.randn(1, TEXT_TOKENS, 4096, dtype=torch.bfloat16) for _ in range(2))
    t = torch.tensor(999.0)
    if model == TI2V_5B.name:
        condition = torch.randn(1, channels, 1, rows, cols)
        mask = torch.ones(1, 1, latent_frames, rows, cols)
        mask[:, :, 0] = 0
        model_input = ((1 - mask) * condition + mask * latents).to(torch.bfloat16)
        timestep = (mask[0][0][:, ::2, ::2] * t).flatten().unsqueeze(0).expand(1, -1)
    else:
        condition = torch.randn(1, 4 + channels, latent_frames, rows, cols)  # the 4 mask channels + the latents
        model_input = torch.cat([latents, condition], dim=1).to(torch.bfloat16)
        timestep = t.expand(1)
    call = partial(transformer, hidden_states=model_input, timestep=timestep, return_dict=False)
    noise = call(encoder_hidden_states=prompt)[0]
    if guidance:
        uncond = call(encoder_hidden_states=negative)[0]
        noise = uncond + 5.0 * (noise - uncond)


def decode_video(vae, model: str, width: int, height: int, frames: int) -> None:
    """``Wan._decode`` (diffusers' own lines) and ``Wan.decode``'s checks and uint8 conversion on the GPU."""
    channels, latent_frames, rows, cols = _latent_grid(model, width, height, frames)
    latents = torch.randn(1, channels, latent_frames, rows, cols)
    mean, std = torch.zeros(1, channels, 1, 1, 1), torch.ones(1, channels, 1, 1, 1)
    video = vae.decode(latents / std + mean, return_dict=False)[0]
    torch.isfinite(video).all()
    ((video[0] / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0)


# -- the table ----------------------------------------------------------------------------------------

#: Stage -> mode -> the components whose whole weights are on the GPU then (the module's docstring);
#: ``transformer`` is one expert, of which group offload keeps its resident share only; ``runs``: the one
#: that runs (sequential offload keeps its largest layer there).
STAGE_WEIGHTS = {
    "text_encode": {"model_offload": ("vae", "text_encoder"), "group_offload": ("vae", "text_encoder"),
                    "runs": "text_encoder"},
    "vae_encode": {"model_offload": ("text_encoder", "vae"), "group_offload": ("vae",), "runs": "vae"},
    "denoise": {"model_offload": ("vae", "transformer"), "group_offload": ("vae", "transformer"),
                "runs": "transformer"},
    "vae_decode": {"model_offload": ("vae",), "group_offload": ("vae",), "runs": "vae"},
}


def mode_needs_gb(entry: Mapping, work_gb: Mapping[str, float]) -> dict[str, float]:
    """GB each memory mode needs at its peak (fastest first), from a model's ``entry`` in the table and
    each stage's traced working memory: per stage, the weights the mode keeps on the GPU plus the work
    with ``estimates.with_margin``; the largest stage. ``transformer`` is one expert."""
    weights, largest, share = entry["weights_gb"], entry["largest_layer_gb"], entry["transformer_group_offload_share"]
    everything = sum(weights.values())

    def on_gpu(mode: str, parts: Mapping) -> float:
        if mode == "gpu":
            return everything
        if mode == "sequential_offload":
            return largest[parts["runs"]]
        return sum(weights[name] * (share if mode == "group_offload" and name == "transformer" else 1.0)
                   for name in parts[mode])

    return {mode: round(max(on_gpu(mode, STAGE_WEIGHTS[stage]) + with_margin(work_gb[stage]) for stage in _STAGES),
                        3) for mode in MEMORY_MODES}


def trace_model(model: str, sizes: Mapping[str, tuple[int, int]] | None = None,
                frames: tuple[int, ...] | None = None) -> dict:
    """The traced entry of ``model`` (a card name) at each size (resolution -> (width, height), default
    the card's landscape sizes) and frame count."""
    sizes = dict(sizes or CARDS[model].base_sizes)
    frames = tuple(frames or FRAMES[model])
    with torch.device("meta"):
        transformer, vae, text = build_transformer(model), build_vae(model), build_text_encoder()
        experts = 2 if model == I2V_A14B.name else 1
        weights = {"text_encoder": weights_gb(text), "vae": weights_gb(vae), "transformer": weights_gb(transformer)}
        entry = {
            "model": model, "experts": experts,
            "shapes": {"transformer": SHAPES[model]["transformer"],
                       "vae": {k: v for k, v in SHAPES[model]["vae"].items() if not k.startswith("latents_")},
                       "text_encoder": TEXT_ENCODER},
            "dtypes": DTYPES,
            "parameters": {"transformer": sum(p.numel() for p in transformer.parameters()),
                           "vae": sum(p.numel() for p in vae.parameters()),
                           "text_encoder": sum(p.numel() for p in text.parameters())},
            "weights_gb": {**{k: round(v, 3) for k, v in weights.items()},
                           **({"transformer_2": round(weights["transformer"], 3)} if experts == 2 else {})},
            "largest_layer_gb": {"text_encoder": round(largest_layer_gb(text), 3),
                                 "vae": round(largest_layer_gb(vae), 3),
                                 "transformer": round(largest_layer_gb(transformer), 3)},
            "transformer_group_offload_share": round(group_offload_resident(transformer), 3),
            "weights_per_stage": STAGE_WEIGHTS, "text_tokens": TEXT_TOKENS,
            "sizes": {name: list(size) for name, size in sizes.items()},
            "frames": list(frames),
            "text_encode_gb": round(traced_gb(partial(encode_text, text)), 3),
        }
        entry["rows"] = []
        for name, (width, height) in sizes.items():
            for count in frames:
                work = {"text_encode": entry["text_encode_gb"],
                        "vae_encode": traced_gb(partial(encode_condition, vae, model, width, height, count)),
                        "denoise": traced_gb(partial(denoise_step, transformer, model, width, height, count)),
                        "vae_decode": traced_gb(partial(decode_video, vae, model, width, height, count))}
                work = {stage: round(gb, 3) for stage, gb in work.items()}
                entry["rows"].append({"size": name, "width": width, "height": height, "frames": count,
                                      "work_gb": work})
    # the modes' needs from the rounded figures, so that the app (``needs_gb``) computes the same ones
    for row in entry["rows"]:
        row["needs_gb"] = mode_needs_gb(entry, row["work_gb"])
    return entry


def trace(models=tuple(CARDS), frames: Mapping[str, tuple[int, ...]] | None = None) -> dict:
    started = time.perf_counter()
    table = {m: trace_model(m, frames=(frames or {}).get(m)) for m in models}
    return {"traced_by": "python -m image_to_video.families.wan.memory", "how": _paragraph("How:"),
            "stages": _paragraph("The stages"), "modes": _paragraph("Per memory mode"),
            "attention": "flash / memory-efficient SDPA (output + logsumexp; memory linear in tokens)",
            "margin": {"share": MARGIN_SHARE, "gb": MARGIN_GB}, "headroom": HEADROOM,
            "torch": torch.__version__, "diffusers": _version("diffusers"),
            "transformers": _version("transformers"), "machine": platform.machine(),
            "traced_s": round(time.perf_counter() - started, 1), "models": table}


def _paragraph(start: str) -> str:
    """The module docstring's paragraph (with its list) that begins with ``start``, on one line."""
    text = __doc__.split(start, 1)[1].split("\n\n")
    body = text[0] + ("\n\n" + text[1] if text[1].startswith("* ") else "")
    return " ".join((start + body).split())


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# -- reading it ---------------------------------------------------------------------------------------

@functools.cache
def traced_table(path: Path = TRACED_FILE) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise RuntimeError(f"Cannot read the traced Wan memory table {path} ({error}): "
                           "run python -m image_to_video.families.wan.memory to write it again.") from error


def needs_gb(model: str, width: int, height: int, frames: int, *, table: Mapping | None = None) -> dict[str, float]:
    """GB each memory mode needs for one ``model`` video of ``width`` x ``height`` and ``frames`` frames,
    fastest mode first (the shape of ``estimates.memory_needs_gb``, for ``gpu.choose_memory_mode``): each
    stage's working memory on a straight line through the two nearest traced frame counts at each traced
    size, then through the two sizes in pixels (tokens grow with them; another aspect keeps the area)."""
    entry = (table or traced_table())["models"][model]
    by_size: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for row in entry["rows"]:
        points = by_size.setdefault(row["width"] * row["height"], {stage: [] for stage in _STAGES})
        for stage in _STAGES:
            points[stage].append((row["frames"], row["work_gb"][stage]))
    work = {stage: _line([(pixels, _line(points[stage], frames)) for pixels, points in by_size.items()],
                         width * height) for stage in _STAGES}
    return mode_needs_gb(entry, work)


def fastest_fitting(needs: Mapping[str, float], card_gb: float) -> str | None:
    """The fastest mode whose need fits in ``card_gb`` x ``HEADROOM`` (as ``estimates.Estimate.fits``); None."""
    return next((mode for mode, gb in needs.items() if gb <= card_gb * HEADROOM), None)


def cards_table(table: Mapping, cards=CARDS_GB) -> list[str]:
    """Markdown rows: each model, size and frame count, and the fastest mode that fits each card."""
    lines = ["| model | size | frames | " + " | ".join(f"{gb} GB" for gb in cards) + " |",
             "|---|---|---|" + "---|" * len(cards)]
    for model, entry in table["models"].items():
        for row in entry["rows"]:
            fits = [fastest_fitting(row["needs_gb"], gb) or "no" for gb in cards]
            lines.append(f"| {model} | {row['width']}x{row['height']} | {row['frames']} | " + " | ".join(fits) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TRACED_FILE)
    parser.add_argument("--models", nargs="+", choices=sorted(CARDS), default=list(CARDS))
    parser.add_argument("--table", action="store_true", help="print the cards table of the written file")
    args = parser.parse_args(argv)
    report = trace(tuple(args.models))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"Traced {', '.join(args.models)} in {report['traced_s']} s -> {args.out}")
    if args.table:
        print("\n".join(cards_table(report)))


if __name__ == "__main__":
    main()
