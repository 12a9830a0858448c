"""A worker's engine in a child process (process_channel.py): a job, its progress and cancel across
the pipe, a killed child as a lost worker started afresh, a child that ends with its server."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from image_to_video.config import PROJECT_DIR, load_config
from image_to_video.errors import Cancelled, ModelUnavailable, WorkerLost, rebuilt_error
from image_to_video.model_status import ModelState
from image_to_video.process_channel import ProcessChannel
from image_to_video.remote_engine import RemoteEngine
from image_to_video.request import build_request

from .helpers import SMALL, wait_for


@pytest.fixture(scope="module")
def child(tmp_path_factory, demo_dir):
    """One engine host in a spawned child process (one torch thread), its model loaded."""
    root = tmp_path_factory.mktemp("child")
    config = load_config(overrides={**SMALL, "model.source": str(demo_dir), "paths.models_dir": str(root / "models"),
                                    "paths.output_dir": str(root / "outputs")})
    channel = ProcessChannel(config, device="cpu", name="cpu7", threads=1)
    engine = RemoteEngine(channel, name="cpu7")
    yield config, channel, engine
    channel.close()


def _ready(engine):
    engine.start_loading()
    wait_for(engine.check, timeout=180)


def test_a_job_round_trips_through_a_child_process_with_its_progress(child, photo):
    config, channel, engine = child
    with pytest.raises(ModelUnavailable) as not_yet:  # before loading: the host's own error, as itself
        engine.generate(build_request(config, image=photo, prompt="waves"))
    assert not_yet.value.key == "err_not_ready"
    _ready(engine)
    described = engine.describe()
    assert described["pid"] == channel.pid != os.getpid()
    assert (described["name"], described["device"], described["memory_mode"]) == ("cpu7", "cpu", "cpu")
    assert described["status"].ready and described["job"] is None
    reports = []
    request = build_request(config, image=photo, prompt="waves", num_frames=4, num_inference_steps=3, seed=1)
    frames = engine.generate(request, progress=reports.append)
    assert frames.frames.shape == (4, 64, 64, 3) and frames.frames.dtype.name == "uint8"
    assert "denoise_s" in frames.timings
    stages = [report.stage for report in reports]
    assert stages and stages == sorted(stages, key=("denoising", "decoding").index)


def test_cancel_reaches_a_job_in_the_child(child, photo):
    config, _channel, engine = child
    _ready(engine)
    cancel = threading.Event()
    seen = []

    def report(progress):
        seen.append(progress)
        if progress.done >= 1:
            cancel.set()

    request = build_request(config, image=photo, prompt="waves", num_frames=8, num_inference_steps=100)
    with pytest.raises(Cancelled) as stopped:
        engine.generate(request, progress=report, cancel=cancel)
    assert stopped.value.key == "err_cancelled"
    assert max(p.done for p in seen if p.stage == "denoising") < 100
    assert engine.describe()["job"] is None  # the host is free for the next job


def test_a_killed_child_is_a_lost_worker_and_restarts(child, photo):
    config, channel, engine = child
    _ready(engine)
    old_pid = channel.pid
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(WorkerLost):
        engine.generate(build_request(config, image=photo, prompt="waves", num_frames=4))
    assert engine.lost and engine.status.state is ModelState.ERROR
    engine.restart()
    assert channel.pid != old_pid and not engine.lost
    wait_for(engine.check, timeout=180)
    frames = engine.generate(build_request(config, image=photo, prompt="waves", num_frames=4, num_inference_steps=2))
    assert frames.frames.shape[0] == 4


def test_only_the_hosts_own_calls_are_sent_and_an_unknown_job_comes_back_lost(child):
    _config, channel, _engine = child
    pid = channel.pid
    with pytest.raises(ValueError, match="EngineHost has no call 'shutdown'"):  # refused here, nothing sent
        channel.call("shutdown")
    answer = channel.call("poll", "no-such-job")  # as after a restart: the new host never had that job
    assert answer["finished"] and answer["frames"] is None
    assert isinstance(rebuilt_error(answer["error"]), WorkerLost)
    assert channel.pid == pid  # the same child answered throughout


def test_the_child_ends_when_the_server_process_dies(tmp_path, demo_dir):
    script = ("import sys, time\n"
              "from image_to_video.config import load_config\n"
              "from image_to_video.process_channel import ProcessChannel\n"
              "if __name__ == '__main__':\n"
              f"    config = load_config(overrides={{'model.source': {str(demo_dir)!r}}})\n"
              "    channel = ProcessChannel(config, device='cpu', name='cpu0', threads=1)\n"
              "    channel.call('describe')\n"
              "    print(channel.pid, flush=True)\n"
              "    time.sleep(600)\n")
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)}, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.kill()
        parent.wait(30)
        wait_for(lambda: not _alive(child_pid), timeout=30)
    finally:
        parent.kill()
        parent.wait(30)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# -- a worker on one GPU of several (no GPU here: the child never touches CUDA until its model loads) --


def test_a_worker_for_gpu_1_sees_only_that_gpu_as_cuda_and_still_reports_cuda_1(small_config, monkeypatch):
    # Pinned before torch is imported in the child: its current device, peak-memory figures and any call
    # without a device are GPU 1's, and its weights may load straight onto "cuda" (gpu.loads_directly).
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    config = small_config()
    channel = ProcessChannel(config, device="cuda:1", name="gpu1", threads=1)
    try:
        described = channel.call("describe")  # nothing loaded: no CUDA is needed to answer
    finally:
        channel.close()
    assert described.get("cuda_visible_devices") == "1"
    assert described.get("model_device") == "cuda"
    assert described["device"] == "cuda:1"  # the board and a job's record name the physical GPU


def test_the_childs_gpu_is_picked_from_the_servers_own_visible_gpus():
    from image_to_video.process_channel import pin_gpu

    env = {}
    assert (pin_gpu("cuda:1", env), env) == ("cuda", {"CUDA_VISIBLE_DEVICES": "1"})
    env = {"CUDA_VISIBLE_DEVICES": "4,6"}  # the server was given GPUs 4 and 6: its cuda:1 is GPU 6
    assert (pin_gpu("cuda:1", env), env) == ("cuda", {"CUDA_VISIBLE_DEVICES": "6"})
    env = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa, GPU-bbbb"}
    assert (pin_gpu("cuda:0", env), env) == ("cuda", {"CUDA_VISIBLE_DEVICES": "GPU-aaaa"})
    for device in ("cpu", "cuda"):  # no GPU named: nothing to pin
        env = {}
        assert (pin_gpu(device, env), env) == (device, {})
