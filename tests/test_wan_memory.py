"""Wan 2.2's memory traced from its shapes (families/wan/memory.py): the count agrees with torch's own on
Wan's modules, the shapes give the models' published sizes, and the committed table is what the script
traces and behaves as memory must."""

import json
from functools import partial

import pytest
import torch

from image_to_video import memory_trace
from image_to_video.estimates import MEMORY_MODES
from image_to_video.families.wan import I2V_A14B, TI2V_5B
from image_to_video.families.wan import memory as wan_memory

from .helpers import counted_bytes, profiler_peak_bytes

FIVE_B, A14B = TI2V_5B.name, I2V_A14B.name


@pytest.fixture(scope="module")
def report():
    return json.loads(wan_memory.TRACED_FILE.read_text())


def _narrowed(model: str, part: str, **changes) -> dict:
    return {**wan_memory.SHAPES[model][part], **changes}


def test_the_count_agrees_with_torchs_profiler_on_wans_modules(monkeypatch):
    # Real tensors on the CPU, the real layouts narrowed (the 5B transformer with its per-token timesteps,
    # the Wan 2.2 VAE with its residual blocks and feature cache): the same operations as traced on meta.
    # LiveBytes also counts a view of a weight as new memory (the RoPE tables, which the model slices and
    # expands: 1 MB in the real model): the tables are cut to the 64 positions this size uses.
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    torch.manual_seed(0)
    monkeypatch.setattr(wan_memory, "TEXT_TOKENS", 16)
    transformer = wan_memory.as_loaded(WanTransformer3DModel(**_narrowed(
        FIVE_B, "transformer", num_attention_heads=2, attention_head_dim=64, ffn_dim=256, num_layers=2,
        rope_max_seq_len=64)),
        torch.bfloat16)
    vae = AutoencoderKLWan(**_narrowed(FIVE_B, "vae", base_dim=8, decoder_base_dim=16)).eval()
    vae_21 = AutoencoderKLWan(**_narrowed(A14B, "vae", base_dim=8)).eval()
    runs = [partial(wan_memory.denoise_step, transformer, FIVE_B, 512, 256, 17),
            partial(wan_memory.decode_video, vae, FIVE_B, 256, 128, 9),
            partial(wan_memory.encode_condition, vae_21, A14B, 128, 64, 9)]
    with torch.inference_mode():
        for run in runs:
            # Tensors only: a CPU 3-D convolution's im2col columns (0.2 GB here) are the kernel's own, as a GPU's
            # cuDNN and cuBLAS workspaces are, which the trace does not see either (estimates.MARGIN_*).
            counted, profiled = counted_bytes(run), profiler_peak_bytes(run, tensors_only=True)
            assert profiled > 5e6
            # The count rounds each storage up to the CUDA allocator's 512-byte blocks; otherwise the same.
            assert counted == pytest.approx(profiled, rel=0.02)


def test_the_shapes_give_the_published_model_sizes(report):
    # Figures from outside this code: the models' names (5B; A14B = two experts of about 14B), umT5-XXL's
    # encoder (the 11.4 GB bf16 file of the Wan repositories: 5.7B), and the hub downloads the cards quote
    # (34 GB and 126 GB: transformers and VAE in float32, the text encoder in bfloat16).
    five, a14b = report["models"][FIVE_B], report["models"][A14B]
    assert five["parameters"]["transformer"] == pytest.approx(5e9, rel=0.02)
    assert a14b["parameters"]["transformer"] == pytest.approx(1.4e10, rel=0.03)
    assert five["parameters"]["text_encoder"] == a14b["parameters"]["text_encoder"] == pytest.approx(5.7e9, rel=0.01)
    for entry, card in ((five, TI2V_5B), (a14b, I2V_A14B)):
        counts = entry["parameters"]
        download = (counts["transformer"] * entry["experts"] + counts["vae"]) * 4 + counts["text_encoder"] * 2
        assert download / 1e9 == pytest.approx(card.download_gb, rel=0.02)
        assert entry["weights_gb"]["transformer"] == pytest.approx(counts["transformer"] * 2 / 2**30, rel=0.01)


def test_the_committed_table_is_what_the_script_traces(report):
    # One small point traced again now, on the real 5B shapes: the same row, weights and needs as committed.
    assert set(report["models"]) == {FIVE_B, A14B}
    again = wan_memory.trace_model(FIVE_B, sizes={"480p": (832, 480)}, frames=(5,))
    committed = report["models"][FIVE_B]
    for key in ("parameters", "weights_gb", "largest_layer_gb", "transformer_group_offload_share",
                "text_encode_gb", "shapes"):
        assert json.loads(json.dumps(again[key])) == committed[key], key
    row = next(r for r in committed["rows"] if (r["width"], r["height"], r["frames"]) == (832, 480, 5))
    assert again["rows"][0]["work_gb"] == row["work_gb"] and again["rows"][0]["needs_gb"] == row["needs_gb"]


def test_the_table_covers_each_cards_sizes_and_frames(report):
    for card in (TI2V_5B, I2V_A14B):
        entry = report["models"][card.name]
        assert {tuple(size) for size in entry["sizes"].values()} == set(card.base_sizes.values())
        frames = sorted({row["frames"] for row in entry["rows"]})
        allowed = card.generation.num_frames
        assert frames[0] <= allowed.min and frames[-1] >= allowed.max
        assert len(entry["rows"]) == len(entry["sizes"]) * len(frames)


def test_more_frames_or_pixels_never_need_less_and_the_modes_are_ordered(report):
    for entry in report["models"].values():
        rows = entry["rows"]
        for size in entry["sizes"].values():
            along = sorted((r for r in rows if [r["width"], r["height"]] == size), key=lambda r: r["frames"])
            for fewer, more in zip(along, along[1:]):
                assert all(more["work_gb"][s] >= fewer["work_gb"][s] for s in fewer["work_gb"])
                assert all(more["needs_gb"][m] >= fewer["needs_gb"][m] for m in MEMORY_MODES)
        by_size = sorted(entry["sizes"].values(), key=lambda s: s[0] * s[1])
        for count in entry["frames"]:
            small, large = (next(r for r in rows if [r["width"], r["height"]] == s and r["frames"] == count)
                            for s in (by_size[0], by_size[-1]))
            assert all(large["needs_gb"][m] > small["needs_gb"][m] for m in MEMORY_MODES)
        for row in rows:
            needs = row["needs_gb"]
            assert list(needs) == list(MEMORY_MODES)
            # Group offload moves less than model offload, which moves less than nothing: never more memory.
            # (Equal where text encoding or decoding, the same in both, is the peak: the 5B at 720p.)
            assert needs["sequential_offload"] <= needs["group_offload"] <= needs["model_offload"] < needs["gpu"]
    # Where denoising sets the peak (an A14B expert is 26.7 GB), block by block needs far less.
    for row in report["models"][A14B]["rows"]:
        assert row["needs_gb"]["group_offload"] < row["needs_gb"]["model_offload"] - 5


def test_the_vae_decodes_with_a_feature_cache_so_frames_add_little(report):
    # Frame by frame: 7x the frames cost the decode under a quarter more (the float32 video it returns).
    for entry in report["models"].values():
        for size in entry["sizes"].values():
            along = sorted((r for r in entry["rows"] if [r["width"], r["height"]] == size), key=lambda r: r["frames"])
            first = next(r for r in along if r["frames"] == 17)["work_gb"]["vae_decode"]
            assert first < along[-1]["work_gb"]["vae_decode"] < 1.25 * first


def test_needs_between_traced_points_lie_between_them(report):
    table = wan_memory.traced_table()
    assert table == report
    at = wan_memory.needs_gb(FIVE_B, 1280, 704, 49)
    row = next(r for r in report["models"][FIVE_B]["rows"] if (r["width"], r["frames"]) == (1280, 49))
    assert at == pytest.approx(row["needs_gb"], abs=0.002)
    low, high = (wan_memory.needs_gb(A14B, 832, 480, count) for count in (33, 49))
    middle = wan_memory.needs_gb(A14B, 832, 480, 41)
    assert all(low[m] <= middle[m] <= high[m] for m in MEMORY_MODES)
    # Another aspect of the same area needs what the landscape size needs.
    assert wan_memory.needs_gb(A14B, 480, 832, 81) == pytest.approx(wan_memory.needs_gb(A14B, 832, 480, 81), abs=0.01)


def test_the_fastest_mode_that_fits():
    needs = {"gpu": 30.0, "model_offload": 20.0, "group_offload": 12.0, "sequential_offload": 9.0}
    assert wan_memory.fastest_fitting(needs, 80) == "gpu"
    assert wan_memory.fastest_fitting(needs, 24) == "model_offload"
    assert wan_memory.fastest_fitting(needs, 12) == "sequential_offload"  # 12 x 0.92 < 12
    assert wan_memory.fastest_fitting(needs, 8) is None


def test_the_group_offload_share_is_one_block_and_what_is_outside_the_blocks():
    with torch.device("meta"):
        transformer = wan_memory.build_transformer(A14B)
    blocks = transformer.blocks
    share = memory_trace.group_offload_resident(transformer)
    one = sum(p.numel() for p in blocks[0].parameters()) / sum(p.numel() for p in transformer.parameters())
    assert one < share < 2 * one  # the patch, time and text embeddings and the head are smaller than a block
