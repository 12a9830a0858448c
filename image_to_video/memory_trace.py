"""GPU memory of the real model, traced from its shapes: ``python -m image_to_video.memory_trace``.

Writes docs/memory-traced.json, which ``estimates`` reads at run time (nothing is traced then).

How (docs/PERFORMANCE.md, "Memory traced from the model's shapes"): the real UNet, VAE and
encoders (``model_shapes.REAL``) are built on PyTorch's meta device in float16, so no memory is
allocated, and run in inference mode under ``LiveBytes``, a ``TorchDispatchMode`` that adds up the
bytes of every storage an operation creates and subtracts them when the storage is freed, keeping
the peak. Attention is counted as the memory-efficient CUDA kernels do: ``EfficientAttention``
answers ``scaled_dot_product_attention`` with its output and a float32 logsumexp, never the
query x key matrix. Weights are not in the traced figures: they are added from the weight files.
Two figures beside the table: one frame decoded with the VAE in float32 (the redo of a chunk that the
half-precision VAE decoded to NaN or inf), and the weights fused QKV projections add to the UNet.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import weakref
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .families.i2vgen_xl import shapes as model_shapes
from .config import GenerationSettings, ModelSettings
from .estimates import TRACED_FILE

#: The frame counts traced; estimates draws a straight line between them.
FRAMES = (8, 16, 24, 32)
#: Decode chunks traced (the low-memory retry decodes one frame at a time); estimates draws a line.
CHUNKS = (1, 4)
#: The CUDA caching allocator hands out blocks in multiples of 512 bytes.
_BLOCK = 512
_GB = 2**30


class LiveBytes(TorchDispatchMode):
    """The bytes of tensor storage alive now (``live``) and at most (``peak``) while it is entered.

    Each storage an operation returns is counted once (views share it) until it is freed; storages
    made before entering (the weights) are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._alive: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._count(tensor.untyped_storage())
        return out

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self._alive:
            return
        size = -(-storage.nbytes() // _BLOCK) * _BLOCK
        self._alive[key] = weakref.ref(storage, partial(self._freed, key, size))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _freed(self, key: int, size: int, _ref) -> None:
        self._alive.pop(key, None)
        self.live -= size


class EfficientAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` as the memory-efficient and flash kernels allocate it: the output
    and a float32 logsumexp per query (batch, heads, queries), no attention matrix. Only shapes are made."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return attention_output(*args, **kwargs)
        return func(*args, **kwargs)


def attention_output(query, key, value, *_args, **_kwargs):
    logsumexp = query.new_empty(query.shape[:-1], dtype=torch.float32)
    output = query.new_empty((*query.shape[:-1], value.shape[-1]))
    del logsumexp
    return output


def traced_gb(run) -> float:
    """The peak GB of what ``run()`` allocates, counted as above."""
    with torch.inference_mode(), EfficientAttention(), LiveBytes() as counter:
        run()
    return counter.peak / _GB


def on_meta(module: torch.nn.Module) -> torch.nn.Module:
    return module.to(torch.float16).eval()


def denoise_step(unet, shapes, side: int, frames: int, batch: int, *, dtype=torch.float16) -> None:
    """One UNet call as the pipeline makes it (its inputs made inside the trace: they are on the GPU)."""
    size = side // 8
    latents = torch.randn(batch, 4, frames, size, size, dtype=dtype)
    unet(latents, torch.full((batch,), 999), encoder_hidden_states=torch.randn(batch, 77, shapes.width, dtype=dtype),
         fps=torch.full((batch,), 8), image_latents=torch.randn(batch, 4, frames, size, size, dtype=dtype),
         image_embeddings=torch.randn(batch, 1, shapes.width, dtype=dtype), return_dict=False)


def decode_chunk(vae, side: int, chunk: int, *, dtype=torch.float16) -> None:
    """I2VGen-XL's ``decode_latents`` of ``chunk`` frames: the VAE decode, then float32 frames."""
    latents = torch.randn(chunk, 4, side // 8, side // 8, dtype=dtype)
    vae.decode(latents / vae.config.scaling_factor).sample.float()


def encode_image(vae, side: int) -> None:
    """The conditioning picture through the VAE encoder (``prepare_image_latents``)."""
    vae.encode(torch.randn(1, 3, side, side, dtype=torch.float16)).latent_dist.sample()


def encode_prompt(text_encoder) -> None:
    text_encoder(torch.zeros(1, 77, dtype=torch.long), output_hidden_states=True)


def encode_picture(image_encoder) -> None:
    image_encoder(torch.randn(1, 3, 224, 224, dtype=torch.float16))


def fused_qkv_share(unet: torch.nn.Module) -> float:
    """The weights ``fuse_qkv_projections`` adds to ``unet`` (each attention's ``to_qkv`` or ``to_kv``;
    diffusers keeps ``to_q/k/v`` beside them), as a share of its weights. Fuses ``unet``."""
    before = parameters_gb(unet)
    unet.fuse_qkv_projections()
    return (parameters_gb(unet) - before) / before


def parameters_gb(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) * 2 / _GB


def group_offload_resident(unet: torch.nn.Module) -> float:
    """The share of the UNet's weights on the GPU at once under block-level group offload (one block
    per group): what is in no ``ModuleList`` or ``Sequential`` child (the mid block, the time
    embedding: there for the whole call) plus the largest of their elements (a down or up block)."""
    total = sum(p.numel() for p in unet.parameters())
    blocks = [sum(p.numel() for p in block.parameters()) for child in unet.children()
              if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)) for block in child]
    return (total - sum(blocks) + max(blocks)) / total


def trace(shapes: model_shapes.Shapes = model_shapes.REAL, sides=None, frames=FRAMES, chunks=CHUNKS) -> dict:
    """The traced table for ``shapes`` at each side x frame count (and decode chunk)."""
    sides = sides or sorted(GenerationSettings().resolutions.values())
    started = time.perf_counter()
    with torch.device("meta"):
        unet, vae = on_meta(model_shapes.build_unet(shapes)), on_meta(model_shapes.build_vae(shapes))
        text, image = (on_meta(model_shapes.build_text_encoder(shapes)),
                       on_meta(model_shapes.build_image_encoder(shapes)))
        rows = [{"side": side, "frames": count,
                 "denoise_gb": {str(batch): round(traced_gb(partial(denoise_step, unet, shapes, side, count, batch)), 3)
                                for batch in (1, 2)}}
                for side in sides for count in frames]
        decode = {str(side): {str(chunk): round(traced_gb(partial(decode_chunk, vae, side, chunk)), 3)
                              for chunk in chunks} for side in sides}
        encode = {str(side): round(traced_gb(partial(encode_image, vae, side)), 3) for side in sides}
        decode_fp32 = float32_redo(vae, sides)
        encoders = {"text_encoder": round(traced_gb(partial(encode_prompt, text)), 3),
                    "image_encoder": round(traced_gb(partial(encode_picture, image)), 3)}
        weights = {name: round(parameters_gb(part), 3) for name, part in
                   (("unet", unet), ("text_encoder", text), ("image_encoder", image), ("vae", vae))}
        resident = round(group_offload_resident(unet), 3)
        fused = round(fused_qkv_share(unet), 4)
    return {"shapes": shapes.name, "dtype": "float16", "attention": "memory-efficient (output + logsumexp)",
            "torch": torch.__version__, "diffusers": _version("diffusers"), "machine": platform.machine(),
            "traced_s": round(time.perf_counter() - started, 1), "frames": list(frames), "chunks": list(chunks),
            "default_decode_chunk": ModelSettings().decode_chunk_size,
            "weights_gb": weights, "unet_group_offload_share": resident, "unet_fused_qkv_share": fused, "rows": rows,
            "decode_gb": decode, "decode_fp32_gb": decode_fp32, "encode_image_gb": encode, "encoders_gb": encoders}


def float32_redo(vae: torch.nn.Module, sides) -> dict[str, float]:
    """GB of one frame decoded at each side with ``vae`` in float32 (the redo's chunk); ``vae`` ends in float32."""
    vae.float()
    return {str(side): round(traced_gb(partial(decode_chunk, vae, side, 1, dtype=torch.float32)), 3) for side in sides}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", choices=sorted(model_shapes.SHAPES), default="real")
    parser.add_argument("--out", type=Path, default=TRACED_FILE)
    parser.add_argument("--sides", type=int, nargs="+", help="default: the configured resolutions")
    parser.add_argument("--frames", type=int, nargs="+", default=FRAMES)
    args = parser.parse_args(argv)
    table = trace(model_shapes.SHAPES[args.shapes], sides=args.sides, frames=args.frames)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"Traced {args.shapes} in {table['traced_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
