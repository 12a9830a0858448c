"""Issue 13: what each GPU failure means, and that the out-of-memory retry always leaves the engine whole.

The messages below are the ones torch raises (docs/DEPENDENCIES.md, "What torch says when the GPU
runs out of memory"): the caching allocator's ``torch.cuda.OutOfMemoryError``, cuBLAS and cuDNN
failing to allocate their workspace, and a CUDA call outside the allocator that finds no memory.
"""

import contextlib
import gc
import weakref

import pytest
import torch

from image_to_video import gpu
from image_to_video.config import ModelSettings
from image_to_video.engine import Engine
from image_to_video.errors import GPUFailed, ModelUnavailable, OutOfMemory
from image_to_video.faults import FaultInjector

from .test_engine import tiny_request
from .test_gpu import offload_on_the_cpu  # noqa: F401 (a fixture)

#: Out of memory, as torch words it outside its caching allocator (each retried one memory mode lower).
OUT_OF_MEMORY = [
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",  # cuDNN 8's name
    "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",  # cuDNN 9's
    "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    "Unable to find a valid cuDNN algorithm to run convolution",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1",
]


@pytest.mark.parametrize("text", OUT_OF_MEMORY)
def test_cublas_cudnn_and_cuda_allocation_failures_are_out_of_memory_not_fatal(text):
    error = RuntimeError(text)
    assert gpu.is_out_of_memory(error) and not gpu.is_fatal_cuda_error(error)


def test_the_allocators_error_is_out_of_memory_and_the_real_fatal_ones_stay_fatal():
    assert gpu.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    for text in ("CUDA error: an illegal memory access was encountered", "CUDA error: device-side assert triggered",
                 "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, ...)`"):
        assert gpu.is_fatal_cuda_error(RuntimeError(text)) and not gpu.is_out_of_memory(RuntimeError(text))
    assert not gpu.is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))


def engine_in(demo_dir, mode: str, faults: str = "") -> Engine:
    """The demo model in ``mode``, with accelerate's real offload hooks (the CPU standing in for the GPU)."""
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent,
                    faults=FaultInjector(faults))
    engine.load()
    engine.switch_memory_mode(mode)
    return engine


def fail_once_with(engine: Engine, text: str):
    """The UNet's first call raises ``RuntimeError(text)``, as cuBLAS or cuDNN would."""
    calls = []

    def hook(*_):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(text)

    return engine.denoiser.register_forward_pre_hook(hook)


@pytest.mark.parametrize("text", [OUT_OF_MEMORY[0], OUT_OF_MEMORY[2], OUT_OF_MEMORY[-1]])
def test_a_cublas_or_cudnn_allocation_failure_is_retried_lower_not_restarted(demo_dir, photo, offload_on_the_cpu,
                                                                            text):
    engine = engine_in(demo_dir, "gpu")
    fail_once_with(engine, text)
    result = engine.generate(tiny_request(photo))
    assert result.timings["low_memory_retry"] == 1.0 and result.frames.shape == (4, 64, 64, 3)
    assert engine.ready and engine.memory_mode == "gpu"


def test_each_further_out_of_memory_steps_one_mode_lower_down_to_the_floor(demo_dir, photo, offload_on_the_cpu,
                                                                          monkeypatch):
    modes = [gpu.lower_modes("gpu")]
    assert modes[0] and modes[0][-1] == "sequential_offload" and modes[0][0] == "model_offload"
    engine = engine_in(demo_dir, "gpu", f"oom@denoise*{len(modes[0])}")
    entered, enter = [], gpu.enter_memory_mode
    monkeypatch.setattr(gpu, "enter_memory_mode", lambda pipe, mode, *a, **k: entered.append(mode) or
                        enter(pipe, mode, *a, **k))
    result = engine.generate(tiny_request(photo))  # out of memory in every mode but the floor
    assert result.frames.shape == (4, 64, 64, 3) and result.timings["low_memory_retry"] == len(modes[0])
    assert entered == [*modes[0], "gpu"] and engine.memory_mode == "gpu"


def test_the_failed_attempts_memory_is_free_before_every_switch(demo_dir, photo, offload_on_the_cpu, monkeypatch):
    """Out of memory twice (gpu, then model offload): before each switch, nothing the failed attempt made
    is still held (the failed attempt's traceback kept its tensors alive through the switch back)."""
    engine = engine_in(demo_dir, "gpu")
    inputs = []  # the UNet's input latents at each call: the failed attempt's frames hold them

    def second_step_runs_out(_module, args):  # each of the first two attempts fails at its second step
        inputs.append(weakref.ref(args[0]))
        if len(inputs) in (2, 4):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    engine.denoiser.register_forward_pre_hook(second_step_runs_out)
    held_at_switch, enter = [], gpu.enter_memory_mode

    def enter_and_check(pipe, mode, *args, **kwargs):
        gc.collect()
        held_at_switch.append((mode, sum(ref() is not None for ref in inputs)))
        return enter(pipe, mode, *args, **kwargs)

    monkeypatch.setattr(gpu, "enter_memory_mode", enter_and_check)
    with contextlib.suppress(OutOfMemory):  # with fewer modes below gpu, out of memory in all of them
        engine.generate(tiny_request(photo, num_inference_steps=3))
    assert len(held_at_switch) >= 2 and held_at_switch[-1][0] == "gpu"
    assert [held for _mode, held in held_at_switch] == [0] * len(held_at_switch), held_at_switch


def test_out_of_memory_while_switching_back_marks_the_engine_broken_and_asks_for_a_restart(demo_dir, photo,
                                                                                         offload_on_the_cpu):
    engine = engine_in(demo_dir, "gpu", "oom@denoise*1,oom@switch_back*1")
    with pytest.raises(GPUFailed) as error:
        engine.generate(tiny_request(photo))
    assert "restart" in str(error.value)
    assert not engine.ready  # never a half-moved pipeline serving the next job
    with pytest.raises(ModelUnavailable) as refused:
        engine.generate(tiny_request(photo))
    assert "restarting" in str(refused.value)
    assert "重启" in engine.status.text("zh-CN")


def test_out_of_memory_while_switching_back_restarts_the_server_which_then_serves(small_config,
                                                                                 photo, tmp_path,
                                                                                 offload_on_the_cpu):
    """Through the real queue and worker: the job fails saying the server restarts, and on_fatal (the
    server's restart) is called."""
    from image_to_video.job_store import FAILED

    from .test_jobs import Jobs

    config = small_config()
    engine = Engine(config.model, config.model_path, config.paths.models_dir,
                    faults=FaultInjector("oom@denoise*1,oom@switch_back*1"))
    engine.load()
    engine.switch_memory_mode("gpu")
    restarts = []
    queue = Jobs(config, engine, tmp_path, on_fatal=lambda: restarts.append(True))
    queue.start()
    try:
        job = queue.wait(queue.submit(photo, "waves", owner="a").id, timeout=120)
    finally:
        queue.shutdown(grace_s=0)
    assert job.state == FAILED and "restart" in job.message and restarts == [True]


def test_a_cuda_out_of_memory_on_a_device_that_no_longer_answers_is_fatal(demo_dir, photo, monkeypatch):
    engine = engine_in(demo_dir, "cpu")
    fail_once_with(engine, OUT_OF_MEMORY[-1])
    monkeypatch.setattr(gpu, "device_answers", lambda device: False)
    with pytest.raises(GPUFailed):
        engine.generate(tiny_request(photo))


def test_out_of_memory_in_every_mode_still_says_what_to_lower_and_the_engine_stays_ready(demo_dir, photo,
                                                                                        offload_on_the_cpu):
    engine = engine_in(demo_dir, "gpu", f"oom@decode*{1 + len(gpu.lower_modes('gpu'))}")
    with pytest.raises(OutOfMemory, match="Lower the frames"):
        engine.generate(tiny_request(photo))
    assert engine.ready and engine.memory_mode == "gpu"
    assert engine.generate(tiny_request(photo)).frames.shape == (4, 64, 64, 3)
