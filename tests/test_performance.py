"""Issue 6: the benchmark (the one-call GPU run's CPU smoke mode), the real-shape model it measures, loading,
and DeepCache. The memory modes are tested in test_gpu.py, the speed switches in test_speedups.py."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from image_to_video.families.i2vgen_xl import shapes as model_shapes
from image_to_video.config import PROJECT_DIR, ModelSettings
from image_to_video.engine import Engine
from image_to_video.model_store import component_sizes_gb

from .helpers import REAL_COUNTS, tiny_request, write_weight_headers


def test_the_benchmark_model_has_exactly_the_real_shapes():
    # The parameter count of ali-vilab/i2vgen-xl's UNet, as its published weight file holds it
    # (docs/DEPENDENCIES.md, "The real model's shapes").
    assert model_shapes.unet_parameters(model_shapes.REAL) == REAL_COUNTS["unet"]
    # The FLOP counter sees the attention: spatial self-attention grows with the square of the
    # positions and temporal attention with the square of the frames, everything else linearly.
    base = model_shapes.count_unet_tflop(model_shapes.REAL, 512, 16)
    assert model_shapes.count_unet_tflop(model_shapes.REAL, 768, 16) > 1.01 * (768 / 512) ** 2 * base
    assert model_shapes.count_unet_tflop(model_shapes.REAL, 512, 32) > 2 * base
    assert model_shapes.count_decode_tflop(model_shapes.REAL, 1024) >= (1024 / 512) ** 2 * \
        model_shapes.count_decode_tflop(model_shapes.REAL, 512)


def test_the_one_call_gpu_run_goes_end_to_end_on_the_cpu_and_every_part_has_numbers_or_a_reason(tmp_path):
    """``bash bench/gpu_run.sh --smoke``: the whole one-call GPU run (bench/gpu_bench.py) on the CPU with
    CI-sized models, so that the first run on a lent GPU does not fail on a mistake a CPU can find."""
    out = tmp_path / "run" / "performance-gpu.json"
    command = ["bash", "bench/gpu_run.sh", "--smoke", "--out", str(out), "--work-dir", str(tmp_path / "work")]
    run = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["smoke"] and report["state"] == "finished" and report["shapes"] == "smoke"
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["diffusers"]
    assert report["gpu"]["count"] == 0 and report["settings"]["side"] == 64 and report["time_limit_s"] == 530
    parts = report["parts"]
    assert list(parts) == ["1_speed", "2_memory_modes", "3_cold_start", "4_compile_step_down", "5_two_workers",
                           "6_wan_ti2v_5b_720p"]
    for key, part in parts.items():  # numbers, or an explicit reason
        assert part["status"] in ("done", "skipped"), (key, part)
        assert part["status"] == "done" or part["reason"], key
        assert part["took_s"] >= 0 and part["budget_s"] > 0, key
    assert parts["5_two_workers"]["status"] == "skipped" and "two CUDA GPUs" in parts["5_two_workers"]["reason"]

    for key in ("1_speed", "6_wan_ti2v_5b_720p"):  # plain diffusers against the app, equal settings
        plain, app = parts[key]["plain"], parts[key]["app"]
        for result in (plain, app):
            assert result["seconds"] > 0 and result["finite"] and result["denoiser_calls"] > 0, key
            assert 0 < result["denoiser_s_per_step"] < result["seconds"] and result["decode_s"] > 0, key
            assert result["peak_allocated_gb"] is None and result["warmup_s"] > 0, key  # no CUDA, no figure
        assert app["speedup_vs_plain"] == pytest.approx(plain["seconds"] / app["seconds"], rel=1e-3)
        assert app["max_pixel_diff_vs_plain"] <= 1, key  # the app makes plain diffusers' video
    speed = parts["1_speed"]
    assert speed["plain"]["decode_chunk_size"] == speed["app"]["decode_chunk_size"] == ModelSettings().decode_chunk_size
    assert speed["settings"]["seed"] == 42 and speed["flops"]["skipped"] and speed["app"]["tflops"] is None
    assert speed["app"]["vae_fp32_redecodes"] == 0  # counted (float32 VAE here: never a redo)
    assert report["scaling"][0]["resolution"] == 64 and report["scaling"][0]["unet_s_per_step"] > 0
    wan = parts["6_wan_ti2v_5b_720p"]
    assert wan["app"]["memory_mode"] == "cpu" and wan["settings"]["frames"] == 5 and wan["build_s"] > 0
    # Every memory mode ran, switched as the app switches (the CPU standing in for the GPU).
    for key, first in (("2_memory_modes", "gpu"), ("6_wan_ti2v_5b_720p", "cpu")):  # Wan's first: its timed run
        modes = parts[key]["modes"]
        assert list(modes) == [first, "model_offload", "group_offload", "sequential_offload"], key
        for mode, row in modes.items():
            assert row["status"] == "done" and row["seconds"] > 0 and row["peak_reserved_gb"] is None, (key, mode)
            assert row.get("memory_mode_after", mode) == mode, (key, mode)

    cold = parts["3_cold_start"]["runs"]
    assert cold["cold"]["ready"] and cold["cold"]["process_to_ready_s"] > cold["cold"]["load_s"] > 0
    assert "posix_fadvise" in cold["cold"]["evicted_by"] and cold["warm"]["reason"]
    probe = parts["4_compile_step_down"]
    assert probe["stage"] == "done" and probe["load_and_compile_s"] > 0
    assert probe["jobs"]["B_out_of_memory_step_down"]["low_memory_retries"] == 1  # the app's step-down ran
    assert all(job["memory_mode_after"] == "gpu" and job["unet_call_s"] for job in probe["jobs"].values())
    assert isinstance(probe["compiles_again_inside_the_job"], bool) and "passed through" in probe["settings"]["backend"]
    assert "written:" in run.stdout and (out.parent / "performance-gpu.log").read_text().count("== part") == 6
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # the weights are gone

    # A run its time limit cuts: the running part is marked cut off and keeps what it wrote, the rest are
    # skipped, the JSON is whole, the exit status 4 (bench/gpu_bench.py's watchdog; no torch needed).
    cut = tmp_path / "cut.json"
    script = ("import sys, time, types; sys.path.insert(0, 'bench'); import gpu_bench as g; g.MARGIN_S = 0; "
              f"run = g.Run(types.SimpleNamespace(out=g.Path({str(cut)!r}), smoke=True, started=time.time(), "
              "time_limit=1.2)); run.watch(); run.part('1_speed', lambda run, entry, deadline, ctx: "
              "(entry.update(seconds=1.5), run.save(), time.sleep(60)), types.SimpleNamespace(free=lambda: None))")
    stopped = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True,
                             timeout=60)
    cut_parts = json.loads(cut.read_text())["parts"]
    assert stopped.returncode == 4 and cut_parts["1_speed"]["status"] == "cut off", stopped.stdout + stopped.stderr
    assert cut_parts["1_speed"]["seconds"] == 1.5 and "time limit" in cut_parts["1_speed"]["reason"]
    assert {part["status"] for key, part in cut_parts.items() if key != "1_speed"} == {"skipped"}


def test_component_sizes_are_read_from_the_weight_files(demo_dir):
    import torch
    from diffusers import I2VGenXLPipeline

    sizes = component_sizes_gb(demo_dir, None, bytes_per_value=2)
    pipe = I2VGenXLPipeline.from_pretrained(demo_dir)
    for name in ("unet", "vae", "text_encoder", "image_encoder"):
        count = sum(t.numel() for t in getattr(pipe, name).state_dict().values() if t.is_floating_point())
        assert sizes[name] == pytest.approx(count * 2 / 2**30, rel=0.02), name
    assert isinstance(pipe.unet, torch.nn.Module)


def test_on_a_cpu_the_engine_loads_straight_to_the_device_in_cpu_mode(demo_dir, monkeypatch):
    """The weights are read straight onto the device in their final dtype (``device_map``), not
    loaded first and moved after: on a GPU, the moved way holds a second copy on the CPU."""
    from diffusers import I2VGenXLPipeline

    loads, load = [], I2VGenXLPipeline.from_pretrained
    monkeypatch.setattr(I2VGenXLPipeline, "from_pretrained", lambda *args, **kw: loads.append(kw) or load(*args, **kw))
    engine = Engine(ModelSettings(source=str(demo_dir), device="cpu"), str(demo_dir), demo_dir.parent)
    engine.load()
    assert engine.ready and engine.memory_mode == "cpu"
    assert [(kw.get("device_map"), kw.get("dtype")) for kw in loads] == [("cpu", torch.float32)]
    assert {(p.device.type, p.dtype) for p in engine.denoiser.parameters()} == {("cpu", torch.float32)}


def test_component_sizes_of_the_real_model_from_its_headers(tmp_path):
    sizes = component_sizes_gb(write_weight_headers(tmp_path, REAL_COUNTS), "fp16", bytes_per_value=2)
    assert sizes["unet"] == pytest.approx(2.65, abs=0.01) and sum(sizes.values()) == pytest.approx(4.64, abs=0.02)
    assert component_sizes_gb(tmp_path, None, bytes_per_value=2) == {}  # other variants are not counted


def test_deep_cache_runs_the_deep_blocks_only_every_nth_step(demo_dir, loaded_engine, photo):
    from image_to_video.deep_cache import DeepCache

    engine = Engine(ModelSettings(source=str(demo_dir), deep_cache_interval=3), str(demo_dir), demo_dir.parent)
    engine.load()
    deep_runs, shallow_runs = [], []
    unet = engine.denoiser
    hooks = [unet.mid_block.resnets[0].register_forward_hook(lambda *_: deep_runs.append(1)),
             unet.up_blocks[-1].resnets[0].register_forward_hook(lambda *_: shallow_runs.append(1))]
    request = tiny_request(photo, num_inference_steps=7)
    frames = engine.generate(request).frames
    for hook in hooks:
        hook.remove()
    assert len(shallow_runs) == 7 and len(deep_runs) == 3  # steps 0, 3 and 6 run whole
    assert frames.shape == (4, 64, 64, 3) and frames.std() > 1
    assert not any("forward" in block.__dict__ for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks])
    # Off, the same request runs every block at every step.
    deep_runs.clear()
    hook = loaded_engine.denoiser.mid_block.resnets[0].register_forward_hook(lambda *_: deep_runs.append(1))
    loaded_engine.generate(request)
    hook.remove()
    assert len(deep_runs) == 7
    with DeepCache(unet, 2) as cache:  # on its own: the first step always runs whole
        assert cache.kept is None and cache.step == 0


def test_deep_cache_and_compile_cannot_be_combined():
    from image_to_video.errors import ConfigError

    with pytest.raises(ConfigError, match="model.deep_cache_interval"):
        ModelSettings(deep_cache_interval=2, compile=True)
    with pytest.raises(ConfigError, match="0 \\(off\\) or 2 to 10"):
        ModelSettings(deep_cache_interval=1)


def test_the_benchmark_writes_its_json_after_each_variant_so_a_cut_off_run_keeps_its_measurements(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.Popen(
        # The third variant is long (a thousand steps) so it is still running when the test stops it; the
        # plumbing needs no compile (the one real compile of a run is test_speedups').
        [sys.executable, "bench/speed.py", "--smoke", "--repeats", "1", "--steps", "1", "--app", "steps=1000",
         "--model-dir", str(tmp_path / "model"), "--out", str(out)],
        cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (out.exists() and len(json.loads(out.read_text())["variants"]) >= 2):
            assert run.poll() is None, "the run ended before writing any variant: " + run.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        still_running = run.poll() is None  # the long variant is still being measured
    finally:
        run.kill()
        run.wait()
    assert still_running
    report = json.loads(out.read_text())  # as a time limit would leave it: whole, with what was measured
    plain, app = report["variants"][:2]
    assert plain["variant"] == "plain" and app["variant"] == "app" and plain["seconds"] > 0 and app["seconds"] > 0
    assert "max_pixel_diff_vs_plain" in app


def test_the_gpu_script_checks_every_import_before_the_long_run(tmp_path):
    broken = tmp_path / "site"
    broken.mkdir()
    (broken / "importlib_metadata.py").write_text("raise ImportError('No module named importlib_metadata')\n")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    started = time.monotonic()
    failed = subprocess.run(["bash", "bench/gpu_run.sh"], cwd=PROJECT_DIR, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": str(broken)}, timeout=300)
    assert failed.returncode == 3 and time.monotonic() - started < 120  # fails fast, before any measurement
    said = failed.stdout + failed.stderr  # the run's output goes to its log too (performance-gpu.log)
    assert "cannot run, these do not import: importlib_metadata" in said
    assert "bench/gpu_wheels.sh" in said and not (tmp_path / "out" / "performance-gpu.json").exists()
    fine = subprocess.run(["bash", "bench/gpu_run.sh", "check"], cwd=PROJECT_DIR, capture_output=True, text=True,
                          env=env, timeout=300)
    assert fine.returncode == 0 and "imports: all there" in fine.stdout, fine.stderr


def test_the_plain_benchmark_computes_its_prompt_embeddings_without_the_apps_function(loaded_engine):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_speed", PROJECT_DIR / "bench" / "speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    assert "encode_prompt" not in vars(speed) and "i2vgen_xl.pipeline" not in (PROJECT_DIR / "bench" / "speed.py").read_text()
    with torch.inference_mode():  # both ways compute what the pipeline's clip_skip=1 path does
        ours = speed.plain_prompt_embeds(loaded_engine.pipeline, "the waves roll in slowly")
        apps = loaded_engine.family.encode_prompt("the waves roll in slowly")
    assert torch.equal(ours, apps)
