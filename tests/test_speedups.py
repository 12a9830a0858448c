"""The speed switches: each takes effect, and the video stays the same (up to rounding)."""

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, ModelMixin
from diffusers.models.attention_processor import Attention

from image_to_video import gpu, speedups
from image_to_video.families.i2vgen_xl import shapes as model_shapes
from image_to_video.config import ModelSettings
from image_to_video.engine import Engine
from image_to_video.faults import FaultInjector

from .helpers import largest_difference, tiny_request


def load(demo_dir, models_dir=None, **switches) -> Engine:
    engine = Engine(ModelSettings(source=str(demo_dir), **switches), str(demo_dir), models_dir or demo_dir.parent)
    engine.load()
    assert engine.ready, engine.status.message
    return engine


def fused(engine) -> bool:
    attention = [m for m in engine.denoiser.modules() if isinstance(m, Attention)]
    return bool(attention) and all(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in attention)


def channels_last(engine) -> bool:
    """Every convolution of the UNet and the VAE with its weights stored channels-last."""
    convs = [m for m in [*engine.denoiser.modules(), *engine.pipeline.vae.modules()]
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) and m.weight[0, 0].numel() > 1]
    return bool(convs) and all(m.weight.is_contiguous(memory_format=torch.channels_last if m.weight.dim() == 4
                                                      else torch.channels_last_3d) for m in convs)


def kernels_in_the_unet(engine, photo) -> set[tuple[bool, bool, bool]]:
    """(flash, efficient, math) allowed while the UNet runs."""
    seen = set()
    hook = engine.denoiser.conv_in.register_forward_hook(lambda *_: seen.add((
        torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
        torch.backends.cuda.math_sdp_enabled())))
    try:
        engine.generate(tiny_request(photo, num_inference_steps=1))
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("switches, took_effect", [
    ({"fuse_qkv": True}, lambda engine, photo: fused(engine)),
    ({"channels_last": True}, lambda engine, photo: channels_last(engine)),
    ({"attention_backend": "math"}, lambda engine, photo: engine.attention_backend == "math"
     and kernels_in_the_unet(engine, photo) == {(False, False, True)}),
])
def test_speed_switches_take_effect_and_keep_the_video(demo_dir, loaded_engine, photo, switches, took_effect):
    engine = load(demo_dir, **switches)
    assert took_effect(engine, photo), switches
    assert not took_effect(loaded_engine, photo), "the check cannot tell the switch from its absence"
    request = tiny_request(photo)
    assert largest_difference(engine.generate(request).frames, loaded_engine.generate(request).frames) <= 2


def test_the_dpm_solver_switch_swaps_the_sampler_and_makes_a_video(demo_dir, loaded_engine, photo):
    engine = load(demo_dir, scheduler="dpmpp")
    assert isinstance(engine.pipeline.scheduler, DPMSolverMultistepScheduler)
    assert isinstance(loaded_engine.pipeline.scheduler, DDIMScheduler)  # the model's own sampler by default
    config = engine.pipeline.scheduler.config
    assert config.prediction_type == loaded_engine.pipeline.scheduler.config.prediction_type == "v_prediction"
    assert config.algorithm_type == "dpmsolver++" and config.timestep_spacing == "trailing"
    frames = engine.generate(tiny_request(photo, num_inference_steps=2)).frames
    assert frames.shape == (4, 64, 64, 3) and frames.std() > 1


def fake_attention(monkeypatch, *, refuse: str | None):
    """``scaled_dot_product_attention`` that fails, as a device lacking it does, when only the
    ``refuse`` kernel is allowed; otherwise PyTorch's own. Returns the calls made with that kernel only."""
    real, alone = torch.nn.functional.scaled_dot_product_attention, []
    enabled = {"cudnn": torch.backends.cuda.cudnn_sdp_enabled, "flash": torch.backends.cuda.flash_sdp_enabled,
               "efficient": torch.backends.cuda.mem_efficient_sdp_enabled, "math": torch.backends.cuda.math_sdp_enabled}

    def attention(query, *args, **kwargs):
        if refuse and [name for name, on in enabled.items() if on()] == [refuse]:
            alone.append(query.shape[-1])
            raise RuntimeError(f"No available kernel. Aborting execution.\n({refuse} refused by the test)")
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)
    return alone


def test_an_attention_kernel_the_device_lacks_falls_back_to_pytorchs_choice(demo_dir, photo, caplog, monkeypatch):
    refused = fake_attention(monkeypatch, refuse="cudnn")
    engine = load(demo_dir, attention_backend="cudnn")
    assert refused and engine.attention_backend == "auto"
    assert "model.attention_backend: cudnn cannot run here (No available kernel. Aborting execution.)" in caplog.text
    assert engine.generate(tiny_request(photo)).frames.shape == (4, 64, 64, 3)


def attention_calls_of_a_real_video(engine, photo, request) -> set:
    """The (query, key, value) shapes of every attention call the UNet makes in a real generation."""
    real, seen, inside = torch.nn.functional.scaled_dot_product_attention, set(), []

    def attention(query, key, value, *args, **kwargs):
        if inside:
            seen.add((tuple(query.shape), tuple(key.shape), tuple(value.shape)))
        return real(query, key, value, *args, **kwargs)

    hooks = [engine.denoiser.register_forward_pre_hook(lambda *_: inside.append(1)),
             engine.denoiser.register_forward_hook(lambda *_: inside.clear())]
    torch.nn.functional.scaled_dot_product_attention = attention
    try:
        engine.generate(request)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
        for hook in hooks:
            hook.remove()
    return seen


def test_an_attention_kernel_that_works_stays_chosen_after_trying_every_real_shape(loaded_engine, photo,
                                                                                  monkeypatch):
    """Every distinct shape the UNet's attention takes in a real 64x64, 4-frame video with guidance
    (a batch of 2): spatial self- and cross-attention, temporal attention over the frames."""
    unet = loaded_engine.denoiser
    real_shapes = attention_calls_of_a_real_video(loaded_engine, photo, tiny_request(photo, num_inference_steps=1))
    assert any(key[-2] > 77 for _, key, _ in real_shapes)  # cross-attention: the prompt's 77 tokens and the image's
    assert any(query[0] == 2 * 8 * 8 for query, _, _ in real_shapes)  # temporal: a batch of 2 x (H/8) x (W/8)
    tried, real = [], torch.nn.functional.scaled_dot_product_attention

    def attention(query, key, value, *args, **kwargs):  # a device that has the cuDNN kernel (this CPU has not)
        if query.device.type == "meta":
            return real(query, key, value, *args, **kwargs)
        tried.append(((tuple(query.shape), tuple(key.shape), tuple(value.shape)),
                      torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()))
        return torch.zeros(*query.shape[:-1], value.shape[-1])

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)
    cpu = torch.device("cpu")
    assert speedups.check_attention_backend("cudnn", unet, cpu, torch.float32, [(64, 64, 4, 2)]) == "cudnn"
    assert sorted(tried) == sorted((shape, True, False) for shape in real_shapes)  # each, cuDNN alone
    tried.clear()
    assert speedups.check_attention_backend("auto", unet, cpu, torch.float32, [(64, 64, 4, 2)]) == "auto"
    assert tried == []  # PyTorch's choice needs no check


def test_a_kernel_that_fails_only_at_the_unets_real_batch_is_caught_before_a_job_uses_it(demo_dir, photo, caplog,
                                                                                        monkeypatch):
    """Temporal attention runs over the frames with a batch of 2 x (H/8) x (W/8): a kernel that cannot
    take such a batch (as GPU kernels have grid limits) passes a check with toy shapes and fails every job."""
    real = torch.nn.functional.scaled_dot_product_attention
    refused = []

    def attention(query, key, value, *args, **kwargs):  # a device with the cuDNN kernel (this CPU has not)
        cudnn_alone = [torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled(),
                       torch.backends.cuda.flash_sdp_enabled()] == [True, False, False]
        if query.device.type == "meta" or not cudnn_alone:
            return real(query, key, value, *args, **kwargs)
        if query.shape[0] > 64:
            refused.append(query.shape)
            raise RuntimeError("No available kernel. Aborting execution.\n(batch refused by the test)")
        return torch.zeros(*query.shape[:-1], value.shape[-1])

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)
    engine = load(demo_dir, attention_backend="cudnn")
    assert engine.attention_backend == "auto"
    assert engine.generate(tiny_request(photo, num_inference_steps=1)).frames.shape == (4, 64, 64, 3)
    assert refused and "cudnn cannot run here (No available kernel. Aborting execution.)" in caplog.text


def test_the_attention_kernel_is_chosen_for_the_unet_only_and_always_put_back(demo_dir, photo):
    """model.attention_backend restricts PyTorch's attention kernels inside the UNet only: the image
    encoder and the VAE (one 512-wide head on the real model, more than the flash and cuDNN kernels
    take) keep every kernel, and so does everything after a job, even one that failed in the UNet."""
    engine = load(demo_dir, attention_backend="math")
    pipe, seen = engine.pipeline, {}

    def record(name):
        return lambda *_: seen.setdefault(name, set()).add(torch.backends.cuda.flash_sdp_enabled())

    for name, module in [("unet", pipe.unet.conv_in), ("vae", pipe.vae.encoder), ("image_encoder", pipe.image_encoder),
                         ("decoder", pipe.vae.decoder)]:
        module.register_forward_hook(record(name))
    assert torch.backends.cuda.flash_sdp_enabled()
    engine.generate(tiny_request(photo))
    assert seen == {"unet": {False}, "vae": {True}, "image_encoder": {True}, "decoder": {True}}
    assert torch.backends.cuda.flash_sdp_enabled()

    def fail(*_):
        raise RuntimeError("a failure inside the UNet")

    pipe.unet.conv_in.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="inside the UNet"):
        engine.generate(tiny_request(photo))
    assert torch.backends.cuda.flash_sdp_enabled()


#: The compile tests' model: the demo's shapes with one UNet level instead of three. What they check is
#: the app's compile path (warm-up before "ready", the kept kernel cache, offload hooks outside the graph,
#: the same video), not the demo's layers; fewer kernels make the run's one real inductor compile (the
#: slowest step of the suite) about a third shorter.
ONE_LEVEL = dataclasses.replace(model_shapes.DEMO, name="one-level", unet_channels=(8,), unet_attention=(False,))


@pytest.fixture(scope="module")
def compile_models(tmp_path_factory) -> Path:
    """A models folder holding the one-level model (``one-level``), saved as ``save_pretrained`` writes
    it; its ``.compile-cache`` (inductor's kernels) is shared by the compile tests."""
    folder = tmp_path_factory.mktemp("compile-models")
    with torch.random.fork_rng():  # building seeds torch's global generator
        model_shapes.build_pipeline(ONE_LEVEL).save_pretrained(folder / "one-level")
    return folder


def test_compiled_unet_warms_up_before_ready_and_keeps_the_video(photo, compile_models, monkeypatch, caplog,
                                                                   offload_on_the_cpu):
    """torch.compile(fullgraph=True) of the UNet, on the CPU here (a minute of compiling on 2 cores),
    started in model offload (as on a GPU with too little free memory for everything): the hooks stay
    outside the compiled graph; sequential offload, whose hooks are inside the UNet, runs it uncompiled."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(gpu, "pick_memory_mode", lambda *_, **__: "model_offload")
    caplog.set_level(logging.INFO)
    model = compile_models / "one-level"
    engine = Engine(ModelSettings(source=str(model), compile=True), str(model), compile_models,
                    warmup_shapes=((64, 64, 4),))
    engine.load()
    assert engine.ready and engine.memory_mode == "model_offload", engine.status.message
    log = caplog.text
    assert "Compiling the model for 64x64, 4 frames" in log and "Compiled the UNet for 64x64, 4 frames" in log
    assert log.index("Compiled the UNet for 64x64") < log.index("Model ready")  # compiled before "ready"
    cache = compile_models / ".compile-cache"  # kept beside the models for the next start
    assert cache.is_dir() and any(path.is_file() for path in cache.rglob("*"))
    request = tiny_request(photo)
    plain = load(model, compile_models)
    reference = plain.generate(request).frames
    assert largest_difference(engine.generate(request).frames, reference) <= 2
    assert plain.compiled is None and engine.compiled.eager is not engine.compiled.compiled
    for mode, forward in [("sequential_offload", engine.compiled.eager), ("gpu", engine.compiled.compiled)]:
        engine.switch_memory_mode(mode)
        unet = engine.denoiser
        assert getattr(unet, "_old_forward", unet.forward) is forward, mode  # inside any offload hook
        assert largest_difference(engine.generate(request).frames, reference) <= 2, mode


def dynamo_compiles() -> int:
    """The compiles dynamo has started in this process: each graph it traced, and each it refused
    (the recompile limit's refusal is one of ``unimplemented``'s)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"] + sum(counters["unimplemented"].values())


@pytest.fixture
def recompile_limit_1():
    """torch's recompile limit (8) lowered to 1, through torch's own config patch."""
    with torch._dynamo.config.patch(recompile_limit=1):
        yield


def test_compile_on_never_fails_a_job_whatever_the_shape_and_never_compiles_inside_one(photo, compile_models, caplog,
                                                                                     monkeypatch, recompile_limit_1):
    """One shape warmed up at load (model.compile on, the Engine's warm-up shapes), then its job and
    jobs of nine other shapes, and its job again: the warmed shape runs its warm-up's graph (called
    once a step, no new trace), the others run eager, and no job starts a compile (``dynamo_compiles``,
    one the recompile limit refuses included). torch's recompile limit (8; lowered to 1 here) would
    raise FailOnRecompileLimitHit under fullgraph=True at the second shape that compiled. dynamo's eager
    backend: a real trace with real guards, in seconds (the real inductor compile is the test above)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda function, **options: compile_(function, **options, backend="eager"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    caplog.set_level(logging.INFO)
    torch._dynamo.reset()  # no graph of the test above's UNet counts towards this one's recompile limit
    model = compile_models / "one-level"
    engine = Engine(ModelSettings(source=str(model), compile=True), str(model), compile_models,
                    warmup_shapes=((64, 64, 2),))
    compiles = dynamo_compiles()
    engine.load()
    assert engine.ready and engine.compiled is not None, engine.status.message
    assert "Compiled the UNet for 64x64, 2 frames" in caplog.text
    assert dynamo_compiles() == compiles + 1 and len(engine.compiled.warmed) == 1  # traced at load, once
    compiles = dynamo_compiles()
    graph, graph_calls = engine.compiled.graph, []
    engine.compiled.graph = lambda *args, **kwargs: graph_calls.append(1) or graph(*args, **kwargs)
    warmed = (64, 2, 9.0)
    shapes = [(64, frames, 9.0) for frames in (3, 4, 5)] + [(64, 2, 1.0), (64, 3, 1.0)]
    shapes += [(side, 2, 9.0) for side in (72, 80, 96, 128)]
    assert len(set(shapes)) == 9 and warmed not in shapes
    for side, frames, guidance in [warmed, *shapes, warmed]:  # guidance 1.0: a batch of 1 instead of 2
        request = tiny_request(photo, resolution=f"{side}p", width=side, height=side, num_frames=frames,
                               num_inference_steps=1, guidance_scale=guidance)
        before = len(graph_calls)
        assert engine.generate(request).frames.shape == (frames, side, side, 3)
        assert dynamo_compiles() == compiles, (side, frames, guidance)  # no compile inside the job
        assert len(graph_calls) - before == ((side, frames, guidance) == warmed), (side, frames, guidance)
    assert len(engine.compiled.warmed) == 1
    assert "recompile limit" not in caplog.text


def test_warm_up_past_the_recompile_limit_stops_compiling_and_those_shapes_run_uncompiled(tmp_path, monkeypatch,
                                                                                         caplog, recompile_limit_1):
    """More warm-up shapes than torch's recompile limit (presets in the config): warm-up stops at the
    limit, says so, and the app still becomes ready; the shapes past it run eager. A tiny module here."""
    from torch._dynamo.utils import counters

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    torch._dynamo.reset()
    layer = torch.nn.Linear(4, 4)
    compiled = speedups.CompiledForward(layer, tmp_path / "cache")
    compiled.choose("gpu")
    statuses = []
    speedups.warm_up(compiled, [(8, 8, 1), (8, 8, 2), (8, 8, 3)], set_status=statuses.append,
                     denoise=lambda request: layer(torch.ones(request.num_frames, 4)))
    assert [status[1]["frames"] for status in statuses] == [1, 2]  # stopped at the second
    assert "Stopped compiling at 8x8, 2 frames: torch's recompile limit" in caplog.text
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        for frames in (1, 2, 3, 1):
            assert torch.allclose(layer(torch.ones(frames, 4)), compiled.eager(torch.ones(frames, 4)))
    assert counters["stats"]["unique_graphs"] == graphs


class TinyNet(ModelMixin):
    """A one-layer stand-in for the UNet: what the memory modes move is its weights, whatever their number."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.proj(x)


class TinyPipeline(DiffusionPipeline):
    """A pipeline the memory modes act on as on I2VGen-XL's (diffusers' and accelerate's own hooks)."""

    model_cpu_offload_seq = "unet->vae"

    def __init__(self, unet, vae):
        super().__init__()
        self.register_modules(unet=unet, vae=vae)


def test_a_warmed_shape_never_compiles_again_after_a_step_down_moved_the_weights_in_inference_mode(
        tmp_path, monkeypatch, offload_on_the_cpu):
    """Issue 23, defect 1: warmed in gpu mode, then stepped down to model offload as gpu.step_down does:
    accelerate's hook moves the weights inside the job's inference mode (inference tensors then), and the
    warmed graph's guards fail. That job must run eager, not compile again; back in gpu mode, once the
    weights are moved outside inference mode (pipe.to on a GPU), the warmed graph runs again, uncompiled
    anew. dynamo's eager backend: a real trace with real guards, in a second."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda function, **options: compile_(function, **options, backend="eager"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.manual_seed(0)
    pipe, cpu = TinyPipeline(TinyNet(), TinyNet()), torch.device("cpu")
    gpu.inference_only(pipe)
    compiled = speedups.CompiledForward(pipe.unet, tmp_path / "cache")
    graph, graph_calls = compiled.graph, []
    compiled.graph = lambda *args, **kwargs: graph_calls.append(1) or graph(*args, **kwargs)
    gpu.enter_memory_mode(pipe, "gpu", cpu, on_switch=compiled.choose)
    speedups.warm_up(compiled, [(8, 8, 2)], set_status=lambda _: None,
                     denoise=lambda request: pipe.unet(torch.ones(request.num_frames, 4)))
    graphs, expected = counters["stats"]["unique_graphs"], compiled.eager(torch.ones(2, 4))

    def job(mode: str) -> int:
        """The graph's calls in one job in ``mode`` (its output checked)."""
        gpu.enter_memory_mode(pipe, mode, cpu, on_switch=compiled.choose)
        before = len(graph_calls)
        with torch.inference_mode():  # as the engine runs a job: its inputs are inference tensors too
            assert torch.allclose(pipe.unet(torch.ones(2, 4)), expected)
        return len(graph_calls) - before

    assert job("gpu") == 1  # warmed: compiled
    assert job("model_offload") == 0 and pipe.unet.proj.weight.is_inference()  # moved by the hook, in inference mode
    assert job("gpu") == 0  # still inference tensors here (on a GPU, pipe.to moved them outside inference mode)
    pipe.unet.to(torch.float64).to(torch.float32)  # the move the switch back makes on a GPU
    assert job("gpu") == 1
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled after the warm-up


def test_a_warm_up_shape_that_runs_out_of_memory_is_skipped_and_the_engine_becomes_ready(demo_dir, tmp_path, photo,
                                                                                           monkeypatch, caplog):
    """Issue 23, defect 2: the first preset's warm-up runs out of GPU memory (injected at its step, as
    a 768p/24 preset would on a 12 GB card); it is skipped with a log line, the next is compiled, and
    the model becomes ready. torch.compile passed through: the warm-up's path is what is tested here."""
    monkeypatch.setattr(torch, "compile", lambda function, **options: function)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    caplog.set_level(logging.INFO)
    engine = Engine(ModelSettings(source=str(demo_dir), compile=True), str(demo_dir), demo_dir.parent,
                    warmup_shapes=((64, 64, 2), (64, 64, 4)), faults=FaultInjector("oom@denoise*1"))
    engine.load()
    assert engine.ready, engine.status.message
    assert "Not compiled for 64x64, 2 frames: out of GPU memory in cpu mode" in caplog.text
    assert "Compiled the UNet for 64x64, 4 frames" in caplog.text
    assert {key[2][0][0][2] for key in engine.compiled.warmed} == {4}  # the latents' frames: only the second shape
    assert engine.generate(tiny_request(photo, num_frames=2, num_inference_steps=1)).frames.shape == (2, 64, 64, 3)
