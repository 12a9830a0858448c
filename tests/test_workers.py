"""Several workers (workers.py): what crosses to a worker's process, the settings and devices, a job
whose worker is lost, and a server with two workers (jobs.workers: 2 on this CPU, one torch thread
each) through its HTTP API. The child process itself is tested in test_process_channel.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from image_to_video.config import load_config
from image_to_video.errors import (AppError, Cancelled, ConfigError, InvalidInput, ModelUnavailable, OutOfMemory,
                                   WorkerLost, plain_error, rebuilt_error)
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import DONE, FAILED, QUEUED, SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.model_status import ModelState, ModelStatus
from image_to_video.outputs import COMPANIONS, OutputFolder
from image_to_video.remote_engine import RemoteEngine, plain_request
from image_to_video.request import GenerationRequest, build_request
from image_to_video.service import VideoService
from image_to_video.worker import Worker
from image_to_video.workers import WorkerBoard, worker_devices

from .app_process import AppProcess, free_port
# The shared HTTP helpers, under the names this file's tests use.
from .helpers import (FAST_JOB as FAST, fetch_json as _json, kill_a_worker_mid_job, submit_job as _submit,
                      video_frames as _frames_of, wait_done as _finished, wait_for, workers_of as _workers)


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
                     ("jobs.ray_address", "head"), ("jobs.max_attempts", 0), ("model.cpu_threads", "0")):
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


# -- the worker when its engine is lost (no processes: a channel that loses every job) --


class LosingChannel:
    """A host that is ready, takes each job, and is gone at the first poll; counts restarts, and calls
    ``on_restart(count)`` at each (in the worker's thread, before the worker claims its next job)."""

    name, device = "gpu3", "cuda:3"

    def __init__(self, on_restart=None):
        self.restarts = 0
        self.on_restart = on_restart

    def call(self, method, *args):
        if method == "describe":
            return {"status": ModelStatus(state=ModelState.READY), "host": "gpu-box", "pid": 4242,
                    "device": self.device, "memory_mode": "gpu", "model_path": "m", "model_revision": None}
        if method == "poll":
            raise WorkerLost(key="err_worker_lost", worker=self.name)
        return None

    def restart(self):
        self.restarts += 1
        if self.on_restart:
            self.on_restart(self.restarts)


def test_a_job_whose_worker_is_lost_runs_again_then_fails_after_max_attempts(small_config, tmp_path, photo):
    config = small_config()
    store, live, board = SQLiteJobStore(tmp_path / "jobs.sqlite3"), LiveJobs(), WorkerBoard()
    seen = []

    def requeued():
        return [j for j in seen if j.state == QUEUED and j.attempts == 1]

    def first_restart_waits_for_the_requeue_to_be_seen(count):
        # The worker restarts its engine right after storing the lost job's requeue and before it claims the
        # job again: held here, the queued moment lasts until the follower below has seen it.
        if count == 1:
            wait_for(requeued, timeout=30, every=0.01)

    channel = LosingChannel(on_restart=first_restart_waits_for_the_requeue_to_be_seen)
    engine = RemoteEngine(channel, name="gpu3", poll_s=0.01)
    board.add("gpu3", device="cuda:3", engine=engine)
    service = VideoService(engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
    queue = JobQueue(store, config, live=live, inputs_dir=tmp_path / "inputs")
    worker = Worker(store, live, service.make_video, model_ready=engine.check, name="gpu3", board=board,
                    max_attempts=2, engine_lost=lambda: engine.lost, restart=engine.restart)
    job = queue.submit(photo, "waves", owner="a")
    worker.start()
    try:
        final = queue.wait(job.id, timeout=60, poll_s=0.05, on_update=seen.append)
    finally:
        worker.shutdown(0)
    assert requeued(), [(j.state, j.attempts) for j in seen]  # the first run lost: back in the queue
    assert requeued()[0].localized_message("en") == ("The worker running this job stopped; it is back in the queue "
                                                     "(attempt 2).")
    assert final.state == FAILED and final.attempts == 2
    assert final.localized_message("en").startswith("The worker running this job stopped 2 times")
    assert final.public()["worker"] == {"name": "gpu3", "device": "cuda:3", "machine": "gpu-box"}
    assert channel.restarts == 2  # after each loss
    assert not list(Path(config.paths.output_dir).glob("*.mp4"))  # nothing written for a job without frames


# -- a server with two workers ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python main.py --demo` with jobs.workers: 2, each worker one torch thread; stopped afterwards."""
    root = tmp_path_factory.mktemp("two-workers")
    app = AppProcess(root, free_port(), env={"I2V_JOBS_WORKERS": "2", "I2V_MODEL_CPU_THREADS": "2",
                                             "I2V_JOBS_MAX_QUEUED": "50"})
    app.start(timeout=300)
    wait_for(lambda: all(w["state"] == "ready" for w in _workers(app)), timeout=300)
    yield app
    app.stop()
    assert app.process.returncode is not None


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


def test_progress_and_cancel_reach_a_job_in_a_worker_process(server):
    job_id = _submit(server, **{**FAST, "num_inference_steps": "100"})
    running = wait_for(lambda: (job := _json(server, f"api/jobs/{job_id}"))["progress"]["done"] >= 2 and job,
                       timeout=120, every=0.2)
    assert running["state"] == "running" and running["progress"]["stage"] == "denoising"
    assert running["worker"]["name"] in ("cpu0", "cpu1")
    _json(server, f"api/jobs/{job_id}/cancel", method="POST")
    job = _finished(server, job_id, timeout=60)
    assert job["state"] == "cancelled" and job["progress"]["done"] < 100


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


# -- workers sharing a GPU (jobs.workers larger than the GPUs) ---------------------------


def test_workers_sharing_a_gpu_each_get_their_share_of_its_memory():
    from image_to_video.workers import memory_shares

    assert memory_shares(["cuda:0", "cuda:1", "cuda:0"]) == [0.5, 1.0, 0.5]
    assert memory_shares(worker_devices("auto", 4, 2)) == [0.5] * 4
    assert memory_shares(worker_devices("auto", 3, 4)) == [1.0] * 3
    assert memory_shares(["cpu", "cpu"]) == [1.0, 1.0]  # the CPU's memory is not divided up front


def test_a_workers_memory_share_reaches_its_engine_in_the_child(small_config, monkeypatch):
    from types import SimpleNamespace

    from image_to_video import process_channel
    from image_to_video.engine_host import EngineHost

    host = EngineHost(small_config(), device="cpu", name="cpu0", memory_share=0.5)  # in the child, as serve makes it
    assert host.engine.memory_share == 0.5 and host.describe()["memory_share"] == 0.5
    started = []

    class Context:  # multiprocessing's spawn context, without the process
        def Pipe(self):
            return SimpleNamespace(close=lambda: None), SimpleNamespace(close=lambda: None)

        def Process(self, **kwargs):
            started.append(kwargs)
            return SimpleNamespace(start=lambda: None, pid=1, join=lambda timeout=None: None,
                                   is_alive=lambda: False, exitcode=0)

    monkeypatch.setattr(process_channel.multiprocessing, "get_context", lambda method: Context())
    channel = process_channel.ProcessChannel(small_config(), device="cuda:0", name="gpu2", memory_share=0.5)
    channel.close()
    assert started[0]["target"] is process_channel.serve and started[0]["args"][-1] == 0.5
