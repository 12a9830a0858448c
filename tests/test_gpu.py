"""GPU policy: device and dtype, memory modes and the switches between them, failure classification."""

import json
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from image_to_video import families, gpu
from image_to_video.config import ConfigError, ModelSettings
from image_to_video.engine import Engine
from image_to_video.estimates import TRACED_FILE
from image_to_video.errors import ModelUnavailable
from image_to_video.faults import FaultInjector
from image_to_video.i18n import localized
from image_to_video.model_status import ModelStatus

from .helpers import REAL_COUNTS, largest_difference, tiny_request, write_weight_headers


@pytest.fixture
def a_gpu(monkeypatch):
    """torch believes a 12 GiB RTX 3060 is there (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(
        name="NVIDIA GeForce RTX 3060", total_memory=12 * 2**30))


# -- device ------------------------------------------------------------------------------------------

def test_without_a_gpu_auto_is_the_cpu_in_float32_and_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.pick_device("auto", "float16", demo=True) == (torch.device("cpu"), torch.float32)
    for wanted in ("cuda", "cuda:1"):
        with pytest.raises(ModelUnavailable, match=wanted):
            gpu.pick_device(wanted, "auto")


@pytest.mark.parametrize("wanted, dtype, expected", [
    ("auto", "auto", ("cuda", torch.float16)), ("cuda:1", "bfloat16", ("cuda:1", torch.bfloat16)),
    ("cuda", "float32", ("cuda", torch.float32)), ("cpu", "float16", ("cpu", torch.float32)),
])
def test_the_device_and_dtype_follow_the_settings_on_a_gpu(a_gpu, wanted, dtype, expected):
    device, chosen = gpu.pick_device(wanted, dtype)
    assert (str(device), chosen) == expected


def test_the_device_line_names_the_gpu_and_an_offloading_mode_in_both_languages(a_gpu):
    key, params = gpu.describe_device(torch.device("cuda"), torch.float16, "model_offload")
    status = ModelStatus(device_key=key, device_params=params)
    assert status.device.startswith("NVIDIA GeForce RTX 3060 (12 GiB), float16, model offload")
    assert "模型分段加载" in status.device_text("zh-CN") and "RTX 3060" in status.device_text("zh-CN")
    plain = ModelStatus(device_key=gpu.describe_device(torch.device("cuda"), torch.float16, "gpu")[0])
    assert plain.device_key == "device_gpu"
    assert gpu.describe_device(torch.device("cpu"), torch.float32) == ("device_cpu", {})
    assert gpu.total_memory_gb(torch.device("cuda")) == 12 and gpu.gpu_name(torch.device("cpu")) is None


# -- memory modes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("free, expected", [(9.0, "gpu"), (7.0, "model_offload"), (5.5, "group_offload"),
                                            (4.0, "sequential_offload"), (2.0, "sequential_offload")])
def test_the_memory_mode_is_the_fastest_whose_need_fits_in_the_free_memory(free, expected):
    needs = {"gpu": 8.4, "model_offload": 6.5, "group_offload": 5.0, "sequential_offload": 3.7}
    mode, why = gpu.choose_memory_mode(free, needs)
    assert mode == expected and f"{free:.1f} GB free" in why


def traced_stage_gb(name: str, side: int, frames: int) -> float:
    """A figure straight from the committed trace (docs/memory-traced.json)."""
    report = json.loads(TRACED_FILE.read_text())
    if name == "denoise":
        return next(r["denoise_gb"]["2"] for r in report["rows"] if (r["side"], r["frames"]) == (side, frames))
    return report["decode_gb"][str(side)]["4"]


# A card's free memory once the CUDA context is made (about 0.4-0.5 GB less than its size).
@pytest.mark.parametrize("card_gb, free_gib, setting, expected", [
    (80, 79.2, "auto", "gpu"), (24, 23.2, "auto", "gpu"), (16, 15.4, "auto", "gpu"),
    (12, 11.5, "auto", "gpu"),  # the weights (4.6 GB) and a 512p/16 step (2.6 GB traced) fit with room
    (8, 7.4, "auto", "model_offload"), (6, 5.5, "auto", "group_offload"), (4, 3.6, "auto", "sequential_offload"),
    (24, 23.2, "sequential_offload", "sequential_offload"),  # a setting other than auto is obeyed
    (24, 23.2, "group_offload", "group_offload"),
])
def test_auto_memory_mode_gives_each_card_the_fastest_mode_the_traced_figures_fit(
        tmp_path, monkeypatch, card_gb, free_gib, setting, expected):
    # The GPU's free memory is faked; the weights' sizes come from real-sized weight file headers.
    folder = write_weight_headers(tmp_path, REAL_COUNTS)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_gib * 2**30, card_gb * 2**30))
    assert gpu.pick_memory_mode(setting, torch.device("cuda"), torch.float16, folder, "fp16") == expected
    assert gpu.pick_memory_mode(setting, torch.device("cpu"), torch.float32, folder, "fp16") == "cpu"


def test_a_12_gb_card_runs_the_default_video_with_everything_on_the_gpu(tmp_path, monkeypatch, caplog):
    # The traced figures themselves: weights + the 512p/16 step with guidance, then the decode, fit in 11.5 GB
    # with more than the margin to spare; the log says which mode and why.
    weights = sum(REAL_COUNTS.values()) * 2 / 2**30
    assert weights + traced_stage_gb("denoise", 512, 16) < 7.5 and traced_stage_gb("decode", 512, 16) < 2
    folder = write_weight_headers(tmp_path, REAL_COUNTS)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (11.5 * 2**30, 12 * 2**30))
    with caplog.at_level("INFO", logger="image_to_video.gpu"):
        assert gpu.pick_memory_mode("auto", torch.device("cuda"), torch.float16, folder, "fp16") == "gpu"
    assert "Memory mode gpu: 11.5 GB free >=" in caplog.text and "traced from the model's shapes" in caplog.text


@pytest.mark.parametrize("mode, device, expected", [
    ("gpu", "cuda", "cuda"), ("cpu", "cpu", "cpu"),  # one device for everything: straight there
    ("model_offload", "cuda", None), ("group_offload", "cuda", None), ("sequential_offload", "cuda", None),
    ("gpu", "cuda:1", None),
])
def test_weights_load_straight_to_the_device_only_where_all_stay_there(mode, device, expected):
    assert gpu.loads_directly(mode, torch.device(device)) == expected


class RecordingPipeline:
    """Stands in for a pipeline: records what the memory-mode switches ask of it."""

    components: dict = {}

    def __init__(self):
        self.calls = []

    def remove_all_hooks(self):
        self.calls.append("remove_hooks")

    def to(self, device):
        self.calls.append(f"to {device}")

    def enable_model_cpu_offload(self, device):
        self.calls.append("model_offload")

    def enable_sequential_cpu_offload(self, device):
        self.calls.append("sequential_offload")


@pytest.mark.parametrize("mode, lower, calls", [
    ("gpu", "model_offload", ["remove_hooks", "switch model_offload", "model_offload",
                              "remove_hooks", "switch gpu", "to cpu"]),
    ("model_offload", "group_offload", ["remove_hooks", "switch group_offload", "group_offload",
                                        "remove_hooks", "switch model_offload", "model_offload"]),
    ("group_offload", "sequential_offload", ["remove_hooks", "switch sequential_offload", "sequential_offload",
                                             "remove_hooks", "switch group_offload", "group_offload"]),
    ("sequential_offload", "sequential_offload", []),  # nothing lower
    ("cpu", "cpu", []),
])
def test_low_memory_mode_goes_one_step_down_and_back_even_after_a_failure(mode, lower, calls, monkeypatch):
    pipe = RecordingPipeline()
    monkeypatch.setattr(gpu, "enable_group_offload", lambda pipe, device: pipe.calls.append("group_offload"))
    with pytest.raises(ValueError), gpu.low_memory_mode(pipe, mode, torch.device("cpu"),
                                                       on_switch=lambda m: pipe.calls.append(f"switch {m}")) as used:
        assert used == lower
        raise ValueError("the job failed")
    assert pipe.calls == calls


def test_every_memory_mode_works_with_the_real_offload_hooks_and_keeps_the_video(demo_dir, photo,
                                                                                 offload_on_the_cpu):
    """The offload modes with accelerate's and diffusers' real hooks: every switch the engine makes
    (out-of-memory step down and back, from and to each mode) and the same video in each mode."""
    from accelerate.hooks import AlignDevicesHook, CpuOffload

    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent)
    engine.load()
    request = tiny_request(photo)
    reference = engine.generate(request).frames

    def hooks():
        return unet_hooks(engine.denoiser)

    model, group, sequential = {CpuOffload.__name__}, {"GroupOffloadingHook"}, {AlignDevicesHook.__name__}
    for mode, expected in [("model_offload", model), ("sequential_offload", sequential), ("model_offload", model),
                           ("gpu", set()), ("sequential_offload", sequential), ("group_offload", group),
                           ("model_offload", model), ("group_offload", group), ("sequential_offload", sequential),
                           ("group_offload", group), ("gpu", set())]:
        engine.switch_memory_mode(mode)
        assert hooks() == expected and engine.memory_mode == mode
        assert largest_difference(engine.generate(request).frames, reference) <= 1, mode

    # Out of memory in model-offload mode: one job in group offload (one step down), then model offload again.
    engine.switch_memory_mode("model_offload")
    engine.faults = FaultInjector("oom@denoise*1")
    seen = []
    engine.denoiser.register_forward_pre_hook(lambda *_: seen.append(hooks()))
    result = engine.generate(request)
    assert result.timings["low_memory_retry"] == 1.0
    assert group in seen and sequential not in seen  # the retry ran in group offload
    assert largest_difference(result.frames, reference) <= 1
    assert hooks() == {CpuOffload.__name__}
    assert largest_difference(engine.generate(request).frames, reference) <= 1


def unet_hooks(unet) -> set[str]:
    """The kinds of offload hook on ``unet`` and its layers: accelerate's and diffusers' group offload."""
    found = {type(module._hf_hook).__name__ for module in unet.modules() if hasattr(module, "_hf_hook")}
    for module in unet.modules():
        registry = getattr(module, "_diffusers_hook", None)
        found |= {type(hook).__name__ for hook in registry.hooks.values()} if registry else set()
    return found


def test_group_offload_moves_the_unet_block_by_block_and_the_rest_whole_then_comes_off_cleanly(
        demo_dir, photo, monkeypatch):
    """Group offload with diffusers' real hooks (the CPU standing in for the GPU): the UNet's blocks are
    loaded one group at a time during every step, the encoders and VAE carry accelerate's model-offload
    hook, the video is the same; back in gpu mode no hook is left and the UNet's forward is its own."""
    from accelerate.hooks import CpuOffload
    from diffusers.hooks.group_offloading import ModuleGroup

    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent)
    engine.load()
    request = tiny_request(photo)
    reference = engine.generate(request).frames
    unet = engine.denoiser
    names = {id(module): name for name, module in unet.named_modules()}
    loaded = []  # the UNet layer that loads each group, each time one is loaded
    onload = ModuleGroup.onload_
    monkeypatch.setattr(ModuleGroup, "onload_", lambda group: (loaded.append(names.get(id(group.onload_leader))),
                                                               onload(group))[1])

    engine.switch_memory_mode("group_offload")
    assert unet_hooks(unet) == {"GroupOffloadingHook"}
    assert {name: type(getattr(engine.pipeline, name)._hf_hook).__name__
            for name in ("text_encoder", "image_encoder", "vae")} == dict.fromkeys(
        ("text_encoder", "image_encoder", "vae"), CpuOffload.__name__)
    assert largest_difference(engine.generate(request).frames, reference) <= 1
    # Each of the UNet's down and up blocks, and the rest of the UNet (""), once per step: 3 steps with
    # guidance in one batch.
    blocks = [f"{kind}.{index}" for kind in ("down_blocks", "up_blocks") for index in range(len(unet.down_blocks))]
    assert all(loaded.count(name) == 3 for name in ["", *blocks]), loaded

    engine.switch_memory_mode("gpu")
    assert unet_hooks(unet) == set() and not any(hasattr(engine.pipeline.components[name], "_hf_hook")
                                                 for name in ("text_encoder", "image_encoder", "vae"))
    assert unet.forward == type(unet).forward.__get__(unet)  # no hook wraps it any more
    loaded.clear()
    assert largest_difference(engine.generate(request).frames, reference) <= 1 and loaded == []



def test_out_of_memory_steps_down_through_group_offload_with_the_real_hooks(demo_dir, photo, offload_on_the_cpu):
    """Out of memory three times from gpu mode: the job runs in model offload, group offload, then
    sequential offload, one step each, and the engine is back in gpu mode with no hook left."""
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent,
                    faults=FaultInjector("oom@denoise*3"))
    engine.load()
    engine.switch_memory_mode("gpu")
    seen = []
    engine.denoiser.register_forward_pre_hook(lambda module, _args: seen.append(frozenset(unet_hooks(module))))
    result = engine.generate(tiny_request(photo))
    assert result.frames.shape == (4, 64, 64, 3) and result.timings["low_memory_retry"] == 3.0
    assert list(dict.fromkeys(seen)) == [frozenset(), frozenset({"CpuOffload"}), frozenset({"GroupOffloadingHook"}),
                                         frozenset({"AlignDevicesHook"})]
    assert engine.memory_mode == "gpu" and unet_hooks(engine.denoiser) == set()


def test_group_offload_is_a_memory_mode_setting_and_the_device_line_says_it(a_gpu):
    assert ModelSettings(memory_mode="group_offload").memory_mode == "group_offload"
    with pytest.raises(ConfigError, match="group_offload"):  # the message lists it among the allowed values
        ModelSettings(memory_mode="groups")
    key, params = gpu.describe_device(torch.device("cuda"), torch.float16, "group_offload")
    status = ModelStatus(device_key=key, device_params=params)
    assert "group offload: the denoiser (UNet or transformer) block by block" in status.device and "分组加载" in status.device_text("zh-CN")


# -- failures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, fatal", [
    ("CUDA error: an illegal memory access was encountered", True),
    ("CUDA error: device-side assert triggered", True),
    ("CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, ...)`", True),
    ("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR", True),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", False),  # recoverable: retried lower
    ("Expected all tensors to be on the same device", False),
])
def test_fatal_cuda_errors_are_told_from_recoverable_ones(text, fatal):
    assert gpu.is_fatal_cuda_error(RuntimeError(text)) is fatal


def request_at(photo, resolution: str, side: int, frames: int):
    return tiny_request(photo, resolution=resolution, width=side, height=side, num_frames=frames)


def test_out_of_memory_suggests_the_next_resolution_down_with_its_saving(photo):
    error = gpu.out_of_memory_error(request_at(photo, "768p", 768, 16), {"256p": 256, "512p": 512, "768p": 768})
    # 512² is 4/9 of 768²: about 56% less memory.
    assert "at 768p with 16 frames" in str(error)
    assert "Lower the resolution to 512p (about 56% less memory)" in str(error)
    assert "显存不足" in localized(error, "zh-CN") and "512p" in localized(error, "zh-CN")


def test_out_of_memory_at_the_smallest_resolution_suggests_half_the_frames(photo):
    assert "Lower the frames from 16 to 8" in str(gpu.out_of_memory_error(request_at(photo, "256p", 256, 16),
                                                                          {"256p": 256, "512p": 512}))
    assert "from 3 to 2" in str(gpu.out_of_memory_error(request_at(photo, "256p", 256, 3), {"256p": 256}))


def test_out_of_memory_on_a_landscape_video_suggests_by_the_resolution_not_the_width(photo):
    # 512p at 16:9 is 704x384 for I2VGen-XL: the next size down is 256p, not "512p" because 512 < 704.
    request = tiny_request(photo, resolution="512p", width=704, height=384, num_frames=16)
    assert "Lower the resolution to 256p" in str(gpu.out_of_memory_error(request, {"256p": 256, "512p": 512}))


def test_out_of_memory_with_wans_4k_plus_1_frames_suggests_a_count_wan_can_make(photo):
    error = gpu.out_of_memory_error(request_at(photo, "480p", 480, 81), {"480p": 480})
    assert "from 81 to 37" in str(error)  # 4k+1, about half


def test_a_model_without_a_traced_memory_table_is_placed_by_its_weights(tmp_path, monkeypatch):
    # A family whose working memory is not traced (its needs empty): whole on the GPU when its weights and a
    # third more (plus 4 GB) fit in the free memory, else its denoisers block by block (group offload).
    folder = write_weight_headers(tmp_path / "wan", {"transformer": 5_000_000_000, "text_encoder": 1_000_000_000})
    weights_gb = 6_000_000_000 * 2 / 2**30  # bfloat16: 2 bytes a value
    for free_gb, expected in ((weights_gb * 4 / 3 + 4.5, "gpu"), (weights_gb, "group_offload")):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free_gb: (free * 2**30, 80 * 2**30))
        assert gpu.pick_memory_mode("auto", torch.device("cuda"), torch.bfloat16, folder, "fp16",
                                    needs={}) == expected


def test_workers_sharing_a_gpu_each_choose_their_memory_mode_from_their_share_of_it(tmp_path, monkeypatch):
    # Two workers on one 16 GB card: alone, either would take everything onto the GPU (8.4 GB for the default
    # video); both doing so would need 16.7 GB of the 15.4 free, and one would run out of memory. Each gets
    # half the card (8 GB): model offload. A worker restarted while the other holds its half sees about
    # that half free, and chooses as it did at the start.
    folder = write_weight_headers(tmp_path, REAL_COUNTS)

    def mode(free_gib, share=1.0):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_gib * 2**30, 16 * 2**30))
        return gpu.pick_memory_mode("auto", torch.device("cuda"), torch.float16, folder, "fp16", share=share)

    assert mode(15.4) == "gpu"
    assert mode(15.4, share=0.5) == mode(8.0) == "model_offload"
    assert mode(8.4, share=0.5) == "model_offload"  # restarted beside the other: its half, not half of what is left
    assert mode(15.4, share=1 / 3) == "group_offload"  # three on the card: 5.3 GB each
    wan = write_weight_headers(tmp_path / "wan", {"transformer": 2_000_000_000})  # 3.7 GB: gpu needs 8.97 GB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (15.4 * 2**30, 16 * 2**30))
    assert gpu.pick_memory_mode("auto", torch.device("cuda"), torch.bfloat16, wan, "fp16", needs={}) == "gpu"
    assert gpu.pick_memory_mode("auto", torch.device("cuda"), torch.bfloat16, wan, "fp16", needs={},
                                share=0.5) == "group_offload"


def test_the_engine_chooses_its_memory_mode_from_its_memory_share(demo_dir, monkeypatch):
    # The worker's host sets engine.memory_share (engine_host.EngineHost); loading hands it to pick_memory_mode.
    seen = {}

    def pick(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here: the choice is all this test wants")

    monkeypatch.setattr(gpu, "pick_device", lambda *args, **kwargs: (torch.device("cuda"), torch.float16))
    monkeypatch.setattr(gpu, "describe_device", lambda *args: ("device_cpu", {}))
    monkeypatch.setattr(gpu, "pick_memory_mode", pick)
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent)
    assert engine.memory_share == 1.0  # alone on its device
    engine.memory_share = 0.5
    engine.load()
    assert seen.get("share") == 0.5


# -- peak memory -------------------------------------------------------------------------------------

class FakeCudaMemory:
    """torch.cuda's allocator statistics, as torch keeps them: ``max_memory_allocated`` is the most allocated
    since the last ``reset_peak_memory_stats``, which sets it to what is allocated now."""

    def __init__(self, monkeypatch):
        self.allocated = self.peak = 0
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: setattr(self, "peak",
                                                                                                 self.allocated))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    def hold(self, gib: float) -> None:
        self.allocated = int(gib * 2**30)
        self.peak = max(self.peak, self.allocated)


def test_freeing_memory_keeps_the_peak_and_only_the_jobs_reset_clears_it(monkeypatch):
    cuda, memory = torch.device("cuda"), FakeCudaMemory(monkeypatch)
    memory.hold(9)
    memory.hold(1)  # a failed attempt's 9 GiB is gone
    gpu.free_memory(cuda)  # as after the failure, and after each memory-mode switch
    assert gpu.peak_memory_gb(cuda) == 9
    gpu.reset_peak_memory(cuda)  # the next job starts
    assert gpu.peak_memory_gb(cuda) == 1


def test_a_retried_jobs_peak_covers_its_failed_attempt(demo_dir, photo, monkeypatch):
    """Out of memory at 9 GiB, then done at 3 GiB one step lower: the job's recorded peak is 9 GiB. (The demo
    model runs on the CPU; torch believes the engine's device is a GPU, with the statistics above.)"""
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent)
    engine.load()
    memory = FakeCudaMemory(monkeypatch)
    engine._device = torch.device("cuda")
    monkeypatch.setattr(gpu, "device_answers", lambda device: True)
    calls = []

    def use_memory(*_):
        calls.append(1)
        if len(calls) == 1:
            memory.hold(9)
            memory.hold(1)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        memory.hold(3)

    engine.denoiser.register_forward_pre_hook(use_memory)
    result = engine.generate(tiny_request(photo))
    assert result.timings["low_memory_retry"] == 1.0
    assert result.peak_gpu_memory_gb == 9


def test_compile_warms_only_the_shapes_whose_jobs_fit_in_the_chosen_mode(tmp_path, monkeypatch, caplog):
    # Issue 23, defect 2: a 12 GB card in gpu mode, the real weights (4.6 GB) loaded: 512p/16 fits, 768p/24
    # (about 8.7 GB of work beside the weights) does not, and is left out with a log line. What this process
    # holds already (its weights) counts as usable, at most its share of the card.
    folder, cuda = write_weight_headers(tmp_path, REAL_COUNTS), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6.5 * 2**30, 12 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * 2**30)
    shapes = [(512, 512, 16), (768, 768, 24), (256, 256, 8)]
    fitting = gpu.fitting(shapes, "gpu", cuda, torch.float16, folder, "fp16")
    with caplog.at_level("WARNING", logger="image_to_video.gpu"):
        assert list(fitting) == [(512, 512, 16), (256, 256, 8)]
    assert "Not compiled for 768x768, 24 frames: its jobs need 1" in caplog.text and "11.5 GB usable" in caplog.text
    assert list(gpu.fitting(shapes, "model_offload", cuda, torch.float16, folder, "fp16", share=0.6)) == [
        (512, 512, 16), (256, 256, 8)]  # 7.2 GB: model offload's 512p/16 fits (6.5 GB), its 768p/24 does not
    assert list(gpu.fitting(shapes, "gpu", torch.device("cpu"), torch.float32, folder, None)) == shapes


def test_the_clock_waits_for_the_gpus_queued_work_before_it_reads_the_time(monkeypatch):
    # Issue 23, defect 8: CUDA runs a call's kernels after it returns; the split read without synchronizing
    # gives the denoising's last kernels to the decode.
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(("synchronize", device)))
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: events.append(("clock", None)) or 12.5)
    assert gpu.clock(torch.device("cuda:1")) == 12.5
    assert events == [("synchronize", torch.device("cuda:1")), ("clock", None)]
    events.clear()
    assert gpu.clock(torch.device("cpu")) == 12.5 and events == [("clock", None)]  # nothing queued on a CPU


def test_fused_qkv_projections_count_in_the_memory_mode_choice(tmp_path, monkeypatch):
    # Issue 23, defect 8: fused QKV keeps to_q/k/v beside to_qkv (about 0.26 GB more of UNet in float16): a
    # card with just room for the default video all on the GPU then takes model offload.
    folder, cuda = write_weight_headers(tmp_path, REAL_COUNTS), torch.device("cuda")
    unfused = gpu.traced_needs_gb(512, 512, 16, torch.float16, gpu.model_store.component_sizes_gb(folder, "fp16",
                                                                                       bytes_per_value=2))
    free = unfused["gpu"] + 0.1
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free * 2**30, 16 * 2**30))
    assert gpu.pick_memory_mode("auto", cuda, torch.float16, folder, "fp16") == "gpu"
    assert gpu.pick_memory_mode("auto", cuda, torch.float16, folder, "fp16", fused_qkv=True) == "model_offload"


def test_wans_memory_mode_comes_from_its_traced_table(monkeypatch):
    # Wan2.2-TI2V-5B's default video (720p, 121 frames) as docs/memory-traced-wan.json traces it: on an 80 GB
    # card everything on the GPU; on a 40 GB one a slower mode; the engine hands the table's needs over.
    card = families.CARDS["wan2.2-ti2v-5b"]
    needs = families.memory_needs(card)
    assert list(needs) == ["gpu", "model_offload", "group_offload", "sequential_offload"]
    for free_gib, fits in ((79.0, "gpu"), (needs["gpu"] - 1, "model_offload")):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free_gib: (free * 2**30, 80 * 2**30))
        chosen = gpu.pick_memory_mode("auto", torch.device("cuda"), torch.bfloat16, Path("."), None, needs=needs)
        assert chosen == fits if fits == "gpu" else chosen != "gpu"
    assert families.memory_needs(families.CARDS["i2vgen-xl"]) is None  # traced by estimates itself
