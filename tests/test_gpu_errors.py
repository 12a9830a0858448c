"""Issue 13: what each GPU failure means, and that the out-of-memory retry always leaves the engine whole.

The failures below are the ones torch raises, each with its exception type and its words quoted from
PyTorch's source (the comment beside each names where; sizes and process numbers are examples): the
caching allocator's ``torch.OutOfMemoryError``, cuBLAS and cuDNN failing to allocate, a CUDA call
outside the allocator that finds no memory, and the CUDA errors that leave the GPU unusable.
"""

import contextlib
import gc
import weakref

import pytest
import torch

from image_to_video import gpu
from image_to_video.config import ModelSettings
from image_to_video.engine import Engine
from image_to_video.errors import GenerationFailed, GPUFailed, ModelUnavailable, OutOfMemory
from image_to_video.faults import FaultInjector
from image_to_video.i18n import localized

from .helpers import tiny_request

#: The lines torch's C10_CUDA_CHECK adds after "CUDA error: " + cudaGetErrorString(error)
#: (c10/cuda/CUDAException.cpp, c10_cuda_check_implementation; the help and suffix lines are
#: c10/cuda/CUDAMiscFunctions.cpp's, the last line c10/cuda/CUDADeviceAssertionHost.cpp's in a build
#: without TORCH_USE_CUDA_DSA, as the released wheels are). Before torch.AcceleratorError, a RuntimeError
#: with get_cuda_check_suffix() after the error's name:
_OLD_SUFFIX = ("\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
               "below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
               "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n")
#: PyTorch's main now: get_cuda_error_help(error) names the error, then get_cuda_async_error_suffix(error):
#: the asynchronous-report lines after a kernel's failure, the CUDA_LOG_FILE line after any other error.
_HELP = ("\nSearch for `{name}' in https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html "
         "for more information.")
_KERNEL_SUFFIX = _OLD_SUFFIX  # the same lines as before, now after a kernel's failure only
_OTHER_SUFFIX = ("\nFor more detailed error information, run with CUDA_LOG_FILE=stderr\n"
                 "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n")

#: Out of memory, as torch raises it: (exception type, message). Each is retried one memory mode lower.
OUT_OF_MEMORY = [
    # The caching allocator (c10/cuda/CUDACachingAllocator.cpp, DeviceCachingAllocator::malloc; the process
    # line is reportProcessMemoryInfo's, from NVML).
    (torch.OutOfMemoryError,
     "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.31 GiB is "
     "free. Including non-PyTorch memory, this process has 77.87 GiB memory in use. Of the allocated memory "
     "75.20 GiB is allocated by PyTorch, and 1.97 GiB is reserved by PyTorch but unallocated. If reserved but "
     "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
     "fragmentation.  See documentation for Memory Management  "
     "(https://docs.pytorch.org/docs/stable/notes/cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf)"),
    # A cuDNN workspace no GPU holds (ATen/native/cudnn/Conv_v7.cpp, allocate_workspace).
    (torch.OutOfMemoryError, "Not enough memory for workspace!"),
    # cuBLAS creating its handle (ATen/cuda/CublasHandlePool.cpp, createCublasHandle), worded by
    # TORCH_CUDABLAS_CHECK (ATen/cuda/Exceptions.h): "CUDA error: " + the status + " when calling `EXPR`".
    (RuntimeError, "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    # cuDNN, worded by AT_CUDNN_CHECK (ATen/cuda/Exceptions.h): "cuDNN error: " + cudnnGetErrorString(status).
    (RuntimeError, "cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),  # cuDNN 8's name
    (RuntimeError, "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),  # cuDNN 9's (4004)
    (RuntimeError, "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED"),  # cuDNN 9's (4003)
    # A CUDA call outside the allocator that finds no memory (cudaErrorMemoryAllocation, through C10_CUDA_CHECK).
    (RuntimeError, "CUDA error: out of memory" + _OLD_SUFFIX),
    (torch.AcceleratorError, "CUDA error: out of memory" + _HELP.format(name="cudaErrorMemoryAllocation")
     + _OTHER_SUFFIX),
]
ALLOCATOR, CUBLAS_ALLOC, CUDNN9_DEVICE_ALLOC = OUT_OF_MEMORY[0], OUT_OF_MEMORY[2], OUT_OF_MEMORY[4]
CUDA_OUT_OF_MEMORY = OUT_OF_MEMORY[-1]

#: CUDA errors after which the process's GPU context is unusable (each restarts the process).
FATAL = [
    # Sticky errors, through C10_CUDA_CHECK (as above): a kernel read or wrote outside its memory, a
    # device-side assert (an index out of range in a kernel), a kernel that failed.
    (RuntimeError, "CUDA error: an illegal memory access was encountered" + _OLD_SUFFIX),
    (torch.AcceleratorError, "CUDA error: an illegal memory access was encountered"
     + _HELP.format(name="cudaErrorIllegalAddress") + _KERNEL_SUFFIX),
    (RuntimeError, "CUDA error: device-side assert triggered" + _OLD_SUFFIX),
    (torch.AcceleratorError, "CUDA error: device-side assert triggered" + _HELP.format(name="cudaErrorAssert")
     + _KERNEL_SUFFIX),
    (torch.AcceleratorError, "CUDA error: unspecified launch failure" + _HELP.format(name="cudaErrorLaunchFailure")
     + _KERNEL_SUFFIX),
    # cuBLAS failing to run a matrix product (TORCH_CUDABLAS_CHECK in ATen/cuda/CUDABlas.cpp), as public
    # tracebacks of F.linear in half precision show it.
    (RuntimeError, "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k, "
     "&falpha, a, CUDA_R_16F, lda, b, CUDA_R_16F, ldb, &fbeta, c, CUDA_R_16F, ldc, CUDA_R_32F, "
     "CUBLAS_GEMM_DEFAULT_TENSOR_OP)`"),
    # cuDNN that cannot create its handle (ATen/cudnn/Handle.cpp, createCuDNNHandle; AT_CUDNN_CHECK): not an
    # allocation failure by its name, so fatal like every other cuDNN error (docs/DEPENDENCIES.md).
    (RuntimeError, "cuDNN error: CUDNN_STATUS_NOT_INITIALIZED"),
    # A cuDNN kernel that failed while it ran, and cuDNN's own internal failure (AT_CUDNN_CHECK, as above).
    (RuntimeError, "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
    (RuntimeError, "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
]

#: cuDNN that has no kernel for this shape, layout or dtype: neither out of memory (running lower would
#: fail the same way) nor a broken GPU (a restart would too). The job fails saying what to change.
#: AT_CUDNN_CHECK (ATen/cuda/Exceptions.h) adds the "non-contiguous input" sentence to CUDNN_STATUS_NOT_SUPPORTED
#: (3000) only, and AT_CUDNN_CHECK_WITH_SHAPES a newline and the convolution's arguments (operator<< of
#: ConvolutionArgs in ATen/native/cudnn/Conv_v7.cpp: repro_from_args, ConvShared.cpp's, first; cut short here);
#: cuDNN 9's sub-codes (CUDNN_STATUS_NOT_SUPPORTED_SHAPE, ...) come without the sentence.
_SHAPES = ("\nYou can try to repro this exception using the following code snippet. If that doesn't trigger the "
           "error, please include your original repro script when reporting this issue.\n\nimport torch\n"
           "torch.backends.cuda.matmul.allow_tf32 = False\ntorch.backends.cudnn.benchmark = False\n")
UNSUPPORTED = [
    (RuntimeError, "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a "
                   "non-contiguous input." + _SHAPES),
    (RuntimeError, "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED_SHAPE"),  # cuDNN 9 (3002)
    (RuntimeError, "cuDNN error: CUDNN_STATUS_BAD_PARAM" + _SHAPES),
    (RuntimeError, "cuDNN error: CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND"),  # cuDNN 9 (2005)
    # No convolution engine ran: torch's v8 path (ATen/native/cudnn/Conv_v8.cpp, run_single_conv without
    # benchmark; try_plans with model.cudnn_benchmark) and its v7 path (Conv_v7.cpp, AlgoIterator::try_all),
    # each after trying every candidate (catching CuDNNError and OutOfMemoryError alike).
    (RuntimeError, "GET was unable to find an engine to execute this computation"),
    (RuntimeError, "FIND was unable to find an engine to execute this computation"),
    (RuntimeError, "Unable to find a valid cuDNN algorithm to run convolution"),
]
CUDNN_NOT_SUPPORTED, CUDNN_NO_ENGINE, CUDNN_NO_ALGORITHM = UNSUPPORTED[0], UNSUPPORTED[4], UNSUPPORTED[-1]


@pytest.mark.parametrize("kind, text", OUT_OF_MEMORY)
def test_the_allocator_cublas_cudnn_and_cuda_allocation_failures_are_out_of_memory_not_fatal(kind, text):
    error = kind(text)
    assert gpu.is_out_of_memory(error) and not gpu.is_fatal_cuda_error(error)


@pytest.mark.parametrize("kind, text", FATAL)
def test_the_errors_that_leave_the_gpu_unusable_are_fatal_not_out_of_memory(kind, text):
    error = kind(text)
    assert gpu.is_fatal_cuda_error(error) and not gpu.is_out_of_memory(error)


@pytest.mark.parametrize("kind, text", UNSUPPORTED)
def test_a_cudnn_kernel_or_shape_limit_is_neither_out_of_memory_nor_fatal(kind, text):
    error = kind(text)
    assert not gpu.is_out_of_memory(error) and not gpu.is_fatal_cuda_error(error)
    assert gpu.is_unsupported_by_cudnn(error)


@pytest.mark.parametrize("kind, text", OUT_OF_MEMORY + FATAL)
def test_out_of_memory_and_fatal_errors_are_no_kernel_limit(kind, text):
    assert not gpu.is_unsupported_by_cudnn(kind(text))


def test_an_error_that_is_not_the_gpus_is_neither():
    # The operators' device check (aten/src/ATen/core/op_registration/adaption.cpp, common_device_check_failure).
    error = RuntimeError("Expected all tensors to be on the same device, but got mat1 is on cpu, different from "
                         "other tensors on cuda:0 (when checking argument in method wrapper_CUDA_addmm)")
    assert not gpu.is_out_of_memory(error) and not gpu.is_fatal_cuda_error(error)


def engine_in(demo_dir, mode: str, faults: str = "") -> Engine:
    """The demo model in ``mode``, with accelerate's real offload hooks (the CPU standing in for the GPU)."""
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent,
                    faults=FaultInjector(faults))
    engine.load()
    engine.switch_memory_mode(mode)
    return engine


def fail_once_with(engine: Engine, failure: tuple[type[Exception], str]):
    """The UNet's first call raises ``failure`` (an exception type and its message), as torch would."""
    calls = []
    kind, text = failure

    def hook(*_):
        calls.append(1)
        if len(calls) == 1:
            raise kind(text)

    return engine.denoiser.register_forward_pre_hook(hook)


@pytest.mark.parametrize("failure", [CUBLAS_ALLOC, CUDNN9_DEVICE_ALLOC, CUDA_OUT_OF_MEMORY])
def test_a_cublas_or_cudnn_allocation_failure_is_retried_lower_not_restarted(demo_dir, photo, offload_on_the_cpu,
                                                                            failure):
    engine = engine_in(demo_dir, "gpu")
    fail_once_with(engine, failure)
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
            raise ALLOCATOR[0](ALLOCATOR[1])

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

    from .helpers import Jobs

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
    fail_once_with(engine, CUDA_OUT_OF_MEMORY)
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


@pytest.mark.parametrize("failure", [CUDNN_NOT_SUPPORTED, CUDNN_NO_ENGINE, CUDNN_NO_ALGORITHM])
def test_a_cudnn_kernel_limit_fails_the_job_once_saying_what_to_change_and_the_engine_serves_on(
        demo_dir, photo, offload_on_the_cpu, failure):
    """Not retried lower (it would fail the same way), not a restart: the job's own message, the engine whole."""
    engine = engine_in(demo_dir, "gpu")
    calls = []
    engine.denoiser.register_forward_pre_hook(lambda *_: calls.append(1))
    fail_once_with(engine, failure)
    with pytest.raises(GenerationFailed) as error:
        engine.generate(tiny_request(photo))
    assert not isinstance(error.value, (GPUFailed, OutOfMemory)) and error.value.key == "err_cudnn_unsupported"
    assert len(calls) == 1  # no low-memory retry
    text = str(error.value)
    assert "64x64" in text and "another resolution" in text and "model.cudnn_benchmark" in text
    assert "model.channels_last" in text and "The server is fine" in text
    assert "cuDNN" in localized(error.value, "zh-CN") and "分辨率" in localized(error.value, "zh-CN")
    assert engine.ready and engine.memory_mode == "gpu"
    assert engine.generate(tiny_request(photo)).frames.shape == (4, 64, 64, 3)


def test_a_cudnn_kernel_limit_through_the_queue_fails_that_job_and_the_server_carries_on(small_config, photo,
                                                                                       tmp_path):
    from image_to_video.job_store import DONE, FAILED

    from .helpers import Jobs

    config = small_config()
    engine = Engine(config.model, config.model_path, config.paths.models_dir)
    engine.load()
    fail_once_with(engine, CUDNN_NOT_SUPPORTED)
    restarts = []
    queue = Jobs(config, engine, tmp_path, on_fatal=lambda: restarts.append(True))
    queue.start()
    try:
        failed = queue.wait(queue.submit(photo, "waves", owner="a").id, timeout=120)
        served = queue.wait(queue.submit(photo, "waves", owner="a").id, timeout=120)
    finally:
        queue.shutdown(grace_s=0)
    assert failed.state == FAILED and "cuDNN" in failed.message and restarts == []
    assert served.state == DONE and engine.ready
