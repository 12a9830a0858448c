"""The memory traced from the model's shapes: the count agrees with torch's own, attention is counted as
the memory-efficient kernels allocate it, and the committed table is what the script traces."""

import json
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from image_to_video import memory_trace
from image_to_video.families.i2vgen_xl import shapes as model_shapes
from image_to_video.config import GenerationSettings
from image_to_video.estimates import TRACED_FILE, TracedTable

from .helpers import counted_bytes, profiler_peak_bytes

SMOKE = model_shapes.SMOKE


@pytest.mark.parametrize("part", ["unet", "vae"])
def test_the_count_agrees_with_torchs_profiler_on_a_real_run(part):
    # Real tensors on the CPU, small models (the demo's UNet, the small copy's VAE with its attention):
    # the same operations the real shapes are traced with on the meta device.
    torch.manual_seed(0)
    with torch.inference_mode():
        if part == "unet":
            shapes = model_shapes.DEMO
            module = model_shapes.build_unet(shapes).eval()
            run = partial(memory_trace.denoise_step, module, shapes, 128, 8, 2, dtype=torch.float32)
        else:
            module = model_shapes.build_vae(SMOKE).eval()
            run = partial(memory_trace.decode_chunk, module, 128, 2, dtype=torch.float32)
        counted, profiled = counted_bytes(run), profiler_peak_bytes(run)
    assert profiled > 1e6
    # The count rounds each storage up to the CUDA allocator's 512-byte blocks; otherwise the same.
    assert counted == pytest.approx(profiled, rel=0.01)


def test_attention_is_counted_without_the_attention_matrix():
    # 2 x 5 heads x 4096 queries x 64 in float16: the output (5.2 MB) and a float32 logsumexp (0.16 MB);
    # the query x key matrix alone would be 2 x 5 x 4096 x 4096 x 2 bytes = 336 MB.
    with torch.device("meta"):
        query, key, value = (torch.empty(2, 5, 4096, 64, dtype=torch.float16) for _ in range(3))
        gb = memory_trace.traced_gb(lambda: F.scaled_dot_product_attention(query, key, value))
    assert gb * 2**30 == pytest.approx(2 * 5 * 4096 * 64 * 2 + 2 * 5 * 4096 * 4, rel=0.01)


def test_the_script_writes_a_table_the_app_reads(tmp_path):
    out = tmp_path / "traced.json"
    memory_trace.main(["--shapes", "smoke", "--out", str(out), "--sides", "64", "128", "--frames", "4", "8"])
    table = TracedTable.load(out)
    assert table.shapes == "smoke" and table.denoise_gb(128, 8, batch=2) > table.denoise_gb(64, 4, batch=2) > 0
    # Twice the frames, twice the guidance batch: about twice the memory each (activations grow with both).
    assert table.denoise_gb(128, 8, batch=2) == pytest.approx(2 * table.denoise_gb(128, 8, batch=1), rel=0.1)
    assert table.denoise_gb(128, 6, batch=2) == pytest.approx(
        (table.denoise_gb(128, 4, batch=2) + table.denoise_gb(128, 8, batch=2)) / 2)


def test_the_committed_table_covers_the_configured_sizes_and_is_what_the_script_traces():
    report = json.loads(TRACED_FILE.read_text())
    assert report["shapes"] == "real" and report["dtype"] == "float16"
    sides = sorted(GenerationSettings().resolutions.values())
    assert sorted({row["side"] for row in report["rows"]}) == sides
    allowed = GenerationSettings().num_frames
    frames = sorted({row["frames"] for row in report["rows"]})
    assert frames[0] <= allowed.min and frames[-1] >= allowed.max
    # The real model's parameter count (2.489 B, its weight files) in float16.
    assert sum(report["weights_gb"].values()) == pytest.approx(2_489_184_000 * 2 / 2**30, rel=0.01)
    # One point traced again now, on the real UNet: the same figure as committed.
    with torch.device("meta"):
        unet = memory_trace.on_meta(model_shapes.build_unet(model_shapes.REAL))
        again = memory_trace.traced_gb(partial(memory_trace.denoise_step, unet, model_shapes.REAL, 256, 8, 1))
    row = next(r for r in report["rows"] if (r["side"], r["frames"]) == (256, 8))
    assert row["denoise_gb"]["1"] == pytest.approx(again, abs=0.001)
