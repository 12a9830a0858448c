import ast
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import image_to_video
from image_to_video import gpu
from image_to_video.config import ModelSettings
from image_to_video.engine import Engine
from image_to_video.errors import Cancelled, GPUFailed, ModelUnavailable, OutOfMemory
from image_to_video.faults import FaultInjector
from image_to_video.model_status import ModelState
from image_to_video.progress import Progress

from .helpers import tiny_request


def test_generates_frames_of_the_requested_shape(loaded_engine, photo):
    result = loaded_engine.generate(tiny_request(photo, num_frames=6))
    assert result.frames.shape == (6, 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 1  # an image, not a blank
    assert set(result.timings) == {"denoise_s", "decode_s"}
    assert result.peak_gpu_memory_gb is None  # CPU: no GPU figure is invented


def test_reports_each_step_with_an_eta_then_each_decoded_chunk(loaded_engine, photo):
    reports: list[Progress] = []
    loaded_engine.generate(tiny_request(photo, num_frames=6, num_inference_steps=4), progress=reports.append)
    steps = [r for r in reports if r.stage == "denoising"]
    assert [r.done for r in steps] == [0, 1, 2, 3, 4] and all(r.total == 4 for r in steps)
    assert steps[0].eta is None and all(r.eta is not None and r.eta >= 0 for r in steps[1:])
    assert steps[-1].eta == 0
    decoding = [r for r in reports if r.stage == "decoding"]
    assert [r.done for r in decoding] == [4, 6] and decoding[-1].total == 6  # decode_chunk_size 4


def test_same_seed_same_video_other_seed_other_video(loaded_engine, photo):
    first = loaded_engine.generate(tiny_request(photo, seed=11)).frames
    torch.manual_seed(999)  # whatever the global RNG was left at
    second = loaded_engine.generate(tiny_request(photo, seed=11)).frames
    other = loaded_engine.generate(tiny_request(photo, seed=12)).frames
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_prompt_changes_the_video(loaded_engine, photo):
    a = loaded_engine.generate(tiny_request(photo, prompt="waves")).frames
    b = loaded_engine.generate(tiny_request(photo, prompt="a cat jumps over the fence")).frames
    assert not np.array_equal(a, b)


def test_cancel_stops_at_the_next_step(loaded_engine, photo):
    cancel = threading.Event()
    calls = []

    def progress(report: Progress):
        if report.stage == "denoising" and report.done == 2:
            cancel.set()
        calls.append(report)

    with pytest.raises(Cancelled, match="Cancelled"):
        loaded_engine.generate(tiny_request(photo, num_inference_steps=20), progress=progress, cancel=cancel)
    assert max(r.done for r in calls if r.stage == "denoising") == 2
    assert not any(r.stage == "decoding" for r in calls)
    # The engine is still usable afterwards: the hooks were removed.
    assert loaded_engine.generate(tiny_request(photo)).frames.shape[0] == 4


def test_generate_before_loading_says_to_wait(demo_dir, photo):
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent)
    with pytest.raises(ModelUnavailable, match="not ready yet"):
        engine.generate(tiny_request(photo))
    assert engine.pipeline is None and engine.device is None and engine.gpu_memory_gb is None


def test_a_broken_model_folder_ends_in_an_error_state_with_a_remedy(tmp_path, photo):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model_index.json").write_text("{not json")
    engine = Engine(ModelSettings(source=str(folder)), str(folder), tmp_path)
    engine.load()
    status = engine.status
    assert status.state is ModelState.ERROR
    assert "failed" in status.message and "models/README.md" in status.message
    assert "加载模型失败" in status.text("zh-CN") and "models/README.md" in status.text("zh-CN")
    with pytest.raises(ModelUnavailable, match="not available"):
        engine.generate(tiny_request(photo))


def test_a_hub_model_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    engine = Engine(ModelSettings(), "ali-vilab/i2vgen-xl", tmp_path / "models")
    engine.load()
    assert engine.status.state is ModelState.ERROR
    assert "HF_HUB_OFFLINE" in engine.status.message and "i2vgen-xl" in engine.status.message
    chinese = engine.status.text("zh-CN")  # the page in Chinese says the same, in Chinese
    assert "HF_HUB_OFFLINE" in chinese and "无法下载" in chinese


def test_asking_for_cuda_without_a_gpu_is_explained(demo_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine = Engine(ModelSettings(source=str(demo_dir), device="cuda"), str(demo_dir), demo_dir.parent)
    engine.load()
    assert engine.status.state is ModelState.ERROR
    assert "no CUDA GPU" in engine.status.message and "model.device" in engine.status.message
    assert "找不到 CUDA GPU" in engine.status.text("zh-CN")


def test_demo_flag_builds_and_marks_the_demo_model(tmp_path):
    path = tmp_path / "models" / "demo-i2vgen-xl-tiny"
    engine = Engine(ModelSettings(demo=True), str(path), tmp_path / "models")
    engine.load()
    assert engine.ready and engine.status.is_demo
    assert "CPU" in engine.status.device
    assert engine.status.device_text("zh-CN").startswith("CPU，") and "很慢" in engine.status.device_text("zh-CN")
    assert "就绪" in engine.status.text("zh-CN")
    assert engine.device_answers() and engine.device == torch.device("cpu") and engine.dtype == torch.float32


# -- out of memory and fatal CUDA errors ---------------------------------------------------------------

@pytest.mark.parametrize("mode, calls", [
    ("gpu", ["remove_hooks", "model_offload", "remove_hooks"]),
    ("model_offload", ["remove_hooks", "group_offload", "remove_hooks", "model_offload"]),
    ("sequential_offload", []),  # nothing lower: only the frame-by-frame decoding changes
])
def test_out_of_memory_retries_one_memory_mode_lower_then_returns(demo_dir, photo, monkeypatch, mode, calls):
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent,
                    faults=FaultInjector("oom@denoise*1"))
    engine.load()
    seen, chunks = [], []
    # Here the offload calls only record what the engine asked for (the real hooks run in
    # test_gpu.py's test_every_memory_mode_works_with_the_real_offload_hooks_and_keeps_the_video).
    monkeypatch.setattr(engine.pipeline, "enable_model_cpu_offload", lambda device: seen.append("model_offload"))
    monkeypatch.setattr(engine.pipeline, "enable_sequential_cpu_offload",
                        lambda device: seen.append("sequential_offload"))
    monkeypatch.setattr(engine.pipeline, "remove_all_hooks", lambda: seen.append("remove_hooks"))
    monkeypatch.setattr(gpu, "enable_group_offload", lambda pipe, device: seen.append("group_offload"))
    engine.switch_memory_mode(mode)
    seen.clear()
    result = engine.generate(tiny_request(photo), progress=lambda p: p.stage == "decoding" and chunks.append(p.done))
    assert result.timings["low_memory_retry"] == 1.0 and result.frames.shape == (4, 64, 64, 3)
    assert seen == calls and engine.memory_mode == mode
    assert chunks == [1, 2, 3, 4]  # the retry decodes one frame at a time


def test_out_of_memory_twice_says_what_to_lower_from_the_engines_resolutions(demo_dir, photo, caplog):
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent,
                    resolutions={"64p": 64, "128p": 128}, faults=FaultInjector("oom@decode*2"))
    engine.load()
    with pytest.raises(OutOfMemory) as error:
        engine.generate(tiny_request(photo, resolution="128p", width=128, height=128))
    # 64² is a quarter of 128²: about 75% less memory.
    assert "ran out of memory at 128p with 4 frames" in str(error.value)
    assert "Lower the resolution to 64p (about 75% less memory)" in str(error.value)
    assert "retrying in low-memory mode" in caplog.text and "in low-memory mode too" in caplog.text
    assert engine.generate(tiny_request(photo)).frames.shape[0] == 4  # ready for the next video
    default = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent,
                     faults=FaultInjector("oom@denoise*2"))
    default.load()
    with pytest.raises(OutOfMemory, match="Lower the frames from 4 to 2"):  # 64p: nothing smaller by default
        default.generate(tiny_request(photo))


def test_a_fatal_cuda_error_becomes_gpu_failed_logged_once_with_the_cause(demo_dir, photo, caplog):
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent,
                    faults=FaultInjector("fatal@decode*1"))
    engine.load()
    with pytest.raises(GPUFailed) as error:
        engine.generate(tiny_request(photo))
    assert error.value.key == "err_gpu_fatal" and "restarted itself" in str(error.value)
    assert "illegal memory access" in str(error.value.__cause__)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].levelno == logging.ERROR
    assert "illegal memory access" in caplog.text and "64p/4 frames" in tracebacks[0].getMessage()


def test_other_errors_pass_through_unchanged(loaded_engine, photo, monkeypatch):
    def fail(*_):
        raise RuntimeError("Expected all tensors to be on the same device")

    hook = loaded_engine.denoiser.conv_in.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="same device"):
            loaded_engine.generate(tiny_request(photo))
    finally:
        hook.remove()


# -- layering ------------------------------------------------------------------------------------------

def package_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (from its import lines)."""
    folder = Path(image_to_video.__file__).parent
    names = {path.stem for path in folder.glob("*.py")} | {"families"}
    graph = {}
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module} if node.module else {alias.name for alias in node.names}
        graph[path.stem] = {name.split(".")[0] for name in imported} & names
    return graph


def test_the_engines_layers_never_import_it_or_each_other_upwards():
    graph = package_imports()
    layers = [["engine"], ["speedups"], ["gpu", "faults", "deep_cache"]]
    for level, modules in enumerate(layers):
        for module in modules:
            above_or_beside = set().union(*layers[:level + 1]) - {module}
            assert not graph[module] & above_or_beside, (module, graph[module])
    assert {"gpu", "speedups", "families", "faults", "deep_cache"} <= graph["engine"]

    def reachable(start):
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        return seen

    assert [module for module in graph if module in reachable(module)] == []  # no import cycle (of the top level)
    # The families' code (families/, a package) sits beside speedups: it imports none of the engine's layers.
    folder = Path(image_to_video.__file__).parent / "families"
    for path in folder.rglob("*.py"):
        imported = {node.module.split(".")[0] for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                    if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module}
        assert not imported & {"engine", "speedups", "gpu", "faults", "deep_cache"}, (path.name, imported)


def test_the_status_board_gives_one_consistent_snapshot_and_logs_each_change(caplog):
    from image_to_video.model_status import ModelState, ModelStatus, StatusBoard

    board = StatusBoard(ModelStatus())
    before = board.current
    with caplog.at_level("INFO", logger="image_to_video.model_status"):
        board.update(("status_ready", {"seconds": "1.5"}), device=("device_cpu", {}), state=ModelState.READY)
    assert before.state is ModelState.NOT_LOADED  # a snapshot taken earlier does not change under its reader
    now = board.current
    assert now.ready and now.message == "Ready: model loaded in 1.5 s." and now.device.startswith("CPU")
    assert "Model ready: Ready: model loaded in 1.5 s." in caplog.text


# -- what a job's record counts (issue 23) -------------------------------------------------------------

def test_the_denoise_decode_split_is_read_once_the_device_is_done(loaded_engine, photo, monkeypatch):
    """Issue 23, defect 8: each reading of the split waits for the device's queued work (``gpu.clock``
    synchronizes a GPU: test_gpu.py), so the denoising's last kernels are not counted as decoding."""
    family, events, times = loaded_engine.family, [], iter([100.0, 103.0, 110.0])

    def clock(device):
        events.append(("clock", device))
        return next(times)

    def calls(name, method):
        return lambda *args, **kwargs: events.append(name) or method(*args, **kwargs)

    monkeypatch.setattr(gpu, "clock", clock)
    monkeypatch.setattr(family, "denoise", calls("denoise", family.denoise))
    monkeypatch.setattr(family, "decode", calls("decode", family.decode))
    timings = loaded_engine.generate(tiny_request(photo, num_inference_steps=1)).timings
    cpu = ("clock", loaded_engine.device)
    assert events == [cpu, "denoise", cpu, "decode", cpu]
    assert timings["denoise_s"] == 3.0 and timings["decode_s"] == 7.0


def test_a_chunk_decoded_to_nan_is_decoded_again_one_frame_at_a_time_and_counted(loaded_engine, photo):
    """Issue 23, defect 3: the float32 redo is counted in the job's timings (its record), and decodes one
    frame at a time (float32 doubles the decode's memory; estimates count one frame of it)."""
    batches = []

    def nan_first(_module, args, output):  # the VAE's decoder, frames as its batch
        batches.append(args[0].shape[0])
        return output * float("nan") if len(batches) == 1 else None

    hook = loaded_engine.pipeline.vae.decoder.register_forward_hook(nan_first)
    try:
        made = loaded_engine.generate(tiny_request(photo, num_inference_steps=1))
        again = loaded_engine.generate(tiny_request(photo, num_inference_steps=1))
    finally:
        hook.remove()
    assert batches == [4, 1, 1, 1, 1, 4]  # the chunk of 4 frames, again one by one; the next job's chunk
    assert made.timings["vae_fp32_redecodes"] == 1.0 and "vae_fp32_redecodes" not in again.timings
    assert np.isfinite(made.frames).all() and np.abs(made.frames.astype(int) - again.frames.astype(int)).max() <= 1
