"""Several workers: the engine host in a child process, the channel to it, and a server with two
workers (jobs.workers: 2 on this CPU, one torch thread each) through its HTTP API."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from image_to_video.config import PROJECT_DIR, load_config
from image_to_video.errors import (AppError, Cancelled, ConfigError, InvalidInput, ModelUnavailable, OutOfMemory,
                                   WorkerLost, plain_error, rebuilt_error)
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import DONE, FAILED, QUEUED, SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.model_status import ModelState, ModelStatus
from image_to_video.outputs import COMPANIONS, OutputFolder
from image_to_video.process_channel import ProcessChannel
from image_to_video.remote_engine import RemoteEngine, plain_request
from image_to_video.request import GenerationRequest, build_request
from image_to_video.service import VideoService
from image_to_video.video import probe_video
from image_to_video.worker import Worker
from image_to_video.workers import WorkerBoard, worker_devices

from .app_process import AppProcess, free_port
from .conftest import SMALL


def wait_for(predicate, timeout=120, every=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


# -- what crosses a process ------------------------------------------------------------


@pytest.mark.parametrize("error", [
    OutOfMemory(key="err_not_ready", state="loading"),
    ModelUnavailable(key="err_not_available", detail="no weights"),
    WorkerLost(key="err_worker_lost", worker="gpu1"),
    Cancelled(key="err_cancelled"),
    InvalidInput("A plain message without a key."),
])
def test_an_app_error_crosses_a_process_as_its_own_class_key_and_words(error):
    plain = pickle.loads(pickle.dumps(plain_error(error)))
    rebuilt = rebuilt_error(plain)
    assert type(rebuilt) is type(error)
    assert (rebuilt.key, rebuilt.params, str(rebuilt)) == (error.key, error.params, str(error))


def test_any_other_error_comes_back_as_a_runtime_error_naming_it():
    rebuilt = rebuilt_error(plain_error(ZeroDivisionError("division by zero")))
    assert isinstance(rebuilt, RuntimeError) and not isinstance(rebuilt, AppError)
    assert str(rebuilt) == "ZeroDivisionError: division by zero"


def test_the_config_and_a_request_reach_a_worker_process_intact(small_config, photo):
    config = small_config()
    assert pickle.loads(pickle.dumps(config)) == config
    request = build_request(config, image=photo, prompt="waves", num_frames=4, seed=7)
    again = GenerationRequest(**pickle.loads(pickle.dumps(plain_request(request))))
    assert again.parameters() == request.parameters()
    assert again.image.tobytes() == request.image.tobytes()


# -- settings --------------------------------------------------------------------------


def test_workers_settings_are_checked():
    assert load_config(overrides={"jobs.workers": "auto"}).jobs.worker_count(0) == 1
    assert load_config(overrides={"jobs.workers": "auto"}).jobs.worker_count(4) == 4
    assert load_config(overrides={"jobs.workers": 3}).jobs.worker_count(8) == 3
    for key, bad in (("jobs.workers", 0), ("jobs.workers", "two"), ("jobs.backend", "slurm"),
                     ("jobs.ray_address", "head"), ("jobs.max_attempts", 0), ("jobs.worker_threads", -1)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(overrides={key: bad})


def test_each_worker_gets_its_own_device():
    assert worker_devices("auto", 3, 4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices("cuda", 3, 2) == ["cuda:0", "cuda:1", "cuda:0"]  # more workers than GPUs: in turn
    assert worker_devices("auto", 2, 0) == ["cpu", "cpu"]
    assert worker_devices("cpu", 2, 4) == ["cpu", "cpu"]
    assert worker_devices("cuda:1", 1, 4) == ["cuda:1"]
    with pytest.raises(ConfigError, match="model.device"):
        worker_devices("cuda:1", 2, 4)


# -- the host in a child process -------------------------------------------------------


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


# -- the worker when its engine is lost (no processes: a channel that loses every job) --


class LosingChannel:
    """A host that is ready, takes each job, and is gone at the first poll; counts restarts."""

    name, device = "gpu3", "cuda:3"

    def __init__(self):
        self.restarts = 0

    def call(self, method, *args):
        if method == "describe":
            return {"status": ModelStatus(state=ModelState.READY), "host": "gpu-box", "pid": 4242,
                    "device": self.device, "memory_mode": "gpu", "model_path": "m", "model_revision": None}
        if method == "poll":
            raise WorkerLost(key="err_worker_lost", worker=self.name)
        return None

    def restart(self):
        self.restarts += 1


def test_a_job_whose_worker_is_lost_runs_again_then_fails_after_max_attempts(small_config, tmp_path, photo):
    config = small_config()
    store, live, board = SQLiteJobStore(tmp_path / "jobs.sqlite3"), LiveJobs(), WorkerBoard()
    channel = LosingChannel()
    engine = RemoteEngine(channel, name="gpu3", poll_s=0.01)
    board.add("gpu3", device="cuda:3", engine=engine)
    service = VideoService(engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
    queue = JobQueue(store, config, live=live, inputs_dir=tmp_path / "inputs")
    worker = Worker(store, live, service.make_video, model_ready=engine.check, name="gpu3", board=board,
                    max_attempts=2, engine_lost=lambda: engine.lost, restart=engine.restart)
    job = queue.submit(photo, "waves", owner="a")
    seen = []
    worker.start()
    try:
        final = queue.wait(job.id, timeout=60, poll_s=0.05, on_update=seen.append)
    finally:
        worker.shutdown(0)
    requeued = [j for j in seen if j.state == QUEUED and j.attempts == 1 and j.message]
    if requeued:  # a follower may miss the short queued moment; the store's final word is below
        assert requeued[0].message == "The worker running this job stopped; it is back in the queue (attempt 2)."
    assert final.state == FAILED and final.attempts == 2
    assert final.localized_message("en").startswith("The worker running this job stopped 2 times")
    assert final.public()["worker"] == {"name": "gpu3", "device": "cuda:3", "machine": "gpu-box"}
    assert channel.restarts == 2  # after each loss
    assert not list(Path(config.paths.output_dir).glob("*.mp4"))  # nothing written for a job without frames


# -- a server with two workers ---------------------------------------------------------


FAST = {"num_frames": "8", "num_inference_steps": "10", "resolution": "256p"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python main.py --demo` with jobs.workers: 2, each worker one torch thread; stopped afterwards."""
    root = tmp_path_factory.mktemp("two-workers")
    app = AppProcess(root, free_port(), env={"I2V_JOBS_WORKERS": "2", "I2V_JOBS_WORKER_THREADS": "1",
                                             "I2V_JOBS_MAX_QUEUED": "50"})
    app.start(timeout=300)
    wait_for(lambda: all(w["state"] == "ready" for w in _workers(app)), timeout=300)
    yield app
    app.stop()
    assert app.process.returncode is not None


def _get(app, path):
    with urllib.request.urlopen(app.url + path.lstrip("/"), timeout=30) as response:
        return response.read()


def _json(app, path, method="GET"):
    request = urllib.request.Request(app.url + path.lstrip("/"), method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _workers(app):
    return _json(app, "api/workers")["workers"]


def _submit(app, **fields):
    buffer = BytesIO()
    Image.new("RGB", (96, 80), (40, 120, 200)).save(buffer, "PNG")
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
             "Content-Type: image/png\r\n\r\n".encode() + buffer.getvalue() + b"\r\n"]
    for name, value in {"prompt": "waves", **fields}.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(app.url + "api/jobs", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["id"]


def _finished(app, job_id, timeout=240):
    return wait_for(lambda: (job := _json(app, f"api/jobs/{job_id}"))["state"] in ("done", "failed", "cancelled",
                                                                                  "interrupted") and job,
                    timeout=timeout, every=0.3)


def _frames_of(app, job_id, tmp_path) -> int:
    path = tmp_path / f"{job_id}.mp4"
    path.write_bytes(_get(app, f"api/jobs/{job_id}/video"))
    return probe_video(path).frames


def test_four_jobs_finish_on_two_distinct_workers(server, tmp_path):
    before = {w["id"]: w["jobs_done"] for w in _workers(server)}
    ids = [_submit(server, seed=str(i), **FAST) for i in range(4)]
    jobs = [_finished(server, job_id) for job_id in ids]
    assert [job["state"] for job in jobs] == [DONE] * 4, jobs
    assert {job["worker"]["name"] for job in jobs} == {"cpu0", "cpu1"}
    assert all(job["worker"]["device"] == "cpu" and job["worker"]["machine"] for job in jobs)
    assert [_frames_of(server, job_id, tmp_path) for job_id in ids] == [8] * 4
    workers = _workers(server)
    assert sorted(w["id"] for w in workers) == ["cpu0", "cpu1"]
    assert sum(w["jobs_done"] - before[w["id"]] for w in workers) == 4
    assert all(w["jobs_done"] > before[w["id"]] for w in workers)
    assert len({w["pid"] for w in workers} | {server.process.pid}) == 3  # a process of its own each


def test_workers_need_the_login_like_the_other_job_routes(tmp_path):
    from image_to_video.config import load_config as load
    from image_to_video.server import create_app
    from image_to_video.auth import Credentials
    from fastapi.testclient import TestClient

    class Engine:
        status, ready, memory_mode, gpu_memory_gb, gpu_name = ModelStatus(), False, None, None, None

        def device_answers(self):
            return False

    config = load(overrides={"paths.output_dir": str(tmp_path / "o"), "paths.state_dir": str(tmp_path / "d")})
    board = WorkerBoard()
    board.add("gpu0", device="cuda:0", engine=Engine())
    queue = JobQueue(SQLiteJobStore(tmp_path / "j.sqlite3"), config, live=LiveJobs(), inputs_dir=tmp_path / "i")
    app = create_app(config, queue, OutputFolder(tmp_path / "o", config.outputs), Engine(),
                     credentials=Credentials("admin", "secret"), workers=board)
    client = TestClient(app)
    assert client.get("/api/workers").status_code == 401
    answer = client.get("/api/workers", headers={"Authorization": "Bearer secret"})
    assert answer.status_code == 200
    assert [(w["id"], w["device"], w["state"], w["jobs_done"]) for w in answer.json()["workers"]] == [
        ("gpu0", "cuda:0", "loading", 0)]


def test_progress_and_cancel_reach_a_job_in_a_worker_process(server):
    job_id = _submit(server, **{**FAST, "num_inference_steps": "100"})
    running = wait_for(lambda: (job := _json(server, f"api/jobs/{job_id}"))["progress"]["done"] >= 2 and job,
                       timeout=120, every=0.2)
    assert running["state"] == "running" and running["progress"]["stage"] == "denoising"
    assert running["worker"]["name"] in ("cpu0", "cpu1")
    _json(server, f"api/jobs/{job_id}/cancel", method="POST")
    job = _finished(server, job_id, timeout=60)
    assert job["state"] == "cancelled" and job["progress"]["done"] < 100


def kill_a_worker_mid_job(server, tmp_path, every=0.1) -> dict:
    """SIGKILL the process running a job: the job must come back and finish whole on a second attempt,
    and the killed worker come back ready in a new process (returned, as ``/api/workers`` lists it)."""
    job_id = _submit(server, **{**FAST, "num_inference_steps": "30"})
    running = wait_for(lambda: (job := _json(server, f"api/jobs/{job_id}"))["progress"]["done"] >= 2 and job,
                       timeout=120, every=0.2)
    victim = running["worker"]["name"]
    pid = next(w["pid"] for w in _workers(server) if w["id"] == victim)
    os.kill(pid, signal.SIGKILL)
    job = _finished(server, job_id)
    assert job["state"] == DONE and job["attempts"] == 2, job
    assert _frames_of(server, job_id, tmp_path) == 8
    assert f"Job {job_id} goes back in the queue" in server.log()
    back = wait_for(lambda: next((w for w in _workers(server) if w["id"] == victim and w["state"] == "ready"
                                  and w["pid"] not in (None, pid)), None), timeout=180, every=every)
    assert back["pid"] != pid
    return back


def test_a_killed_worker_process_puts_its_job_back_and_comes_back(server, tmp_path):
    kill_a_worker_mid_job(server, tmp_path)
    outputs = server.root / "outputs"
    assert not [p.name for p in outputs.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
    videos = [video for video in outputs.glob("video_*.mp4") if not any(video.name.endswith(end)
                                                                       for end in COMPANIONS.values())]
    assert videos and all(video.with_suffix(".json").is_file() for video in videos)


def test_start_app_status_lists_the_workers(server, capsys):
    from image_to_video import launcher

    workers = launcher.worker_list(server.port)
    assert sorted(w["id"] for w in workers) == ["cpu0", "cpu1"]
    launcher.say_workers(workers)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "out\t  Workers: 2"
    assert any(line.startswith("out\t    cpu0: ") and " on cpu (" in line and " done" in line for line in lines[1:])


def test_one_worker_runs_the_engine_in_the_server_process(small_config):
    from image_to_video import app as composition
    from image_to_video.engine import Engine

    app = composition.build(small_config(**{"model.device": "cpu"}))
    try:
        assert isinstance(app.engine, Engine) and len(app.workers) == 1
        (listed,) = app.board.list()
        assert (listed["id"], listed["pid"], listed["state"]) == ("cpu0", os.getpid(), "loading")
    finally:
        app.lock.release()


def test_the_workers_panel_shows_each_worker_in_the_readers_language():
    from image_to_video.ui.views import workers_markdown

    workers = [{"id": "gpu0", "machine": "box", "pid": 11, "device": "cuda:0", "memory_mode": "gpu", "state": "busy",
                "current_job": "abc123", "jobs_done": 3},
               {"id": "gpu1", "machine": "box", "pid": 12, "device": "cuda:1", "memory_mode": None, "state": "lost",
                "current_job": None, "jobs_done": 0}]
    english = workers_markdown(workers, "en")
    assert "1 busy, 0 ready of 2" in english
    assert "| gpu0 | box | cuda:0 | gpu | busy | abc123 | 3 |" in english
    assert "| gpu1 | box | cuda:1 | – | stopped | – | 0 |" in english
    chinese = workers_markdown(workers, "zh-CN")
    assert "忙碌" in chinese and "已停止" in chinese
    assert workers_markdown([], "en") == "No workers."
