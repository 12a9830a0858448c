"""The Ray backend (jobs.backend: ray) on a real two-node Ray cluster on loopback (tests/ray_cluster.py),
with actors on the demo model placed by a custom resource (i2v_slot) instead of GPUs: the channel to
one actor, then the real server through its HTTP API. One cluster for the whole module (it takes a
while to start); every Ray process it started is gone at the end."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from image_to_video.config import PROJECT_DIR, load_config
from image_to_video.families.i2vgen_xl.demo import build_demo_model
from image_to_video.errors import ConfigError, WorkerLost
from image_to_video.job_store import DONE
from image_to_video.outputs import COMPANIONS

from .app_process import AppProcess, free_port
# The shared HTTP helpers, under the names this file's tests use.
from .helpers import (FAST_JOB as FAST, fetch_json as _json, kill_a_worker_mid_job, submit_job as _submit,
                      video_frames as _frames_of, wait_done as _finished, wait_for, workers_of as _workers)
from .ray_cluster import RayCluster

try:
    import ray
except ImportError:
    ray = None
if ray is None:  # requirements-dev.txt installs it (requirements-ray.txt): CI must run these tests
    if os.environ.get("CI"):
        pytest.fail("CI must run the Ray backend tests, but Ray is not installed: "
                    "pip install -r requirements-dev.txt (it pulls requirements-ray.txt)", pytrace=False)
    pytest.skip("Ray is not installed (pip install -r requirements-ray.txt; CI installs it and fails without it)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes, one i2v_slot each: room for two actors."""
    cluster = RayCluster(nodes=2, resources={"i2v_slot": 1}).start()
    yield cluster
    assert cluster.stop() == []


def ray_config(root, address, **extra):
    """The server's config for the cluster at ``address``: the demo model, one torch thread per actor."""
    overrides = {"model.demo": True, "paths.output_dir": str(root / "outputs"), "paths.state_dir": str(root / "data"),
                 "paths.models_dir": str(root / "models"), "paths.log_dir": str(root / "logs"),
                 "jobs.backend": "ray", "jobs.ray_address": address, "jobs.ray_resource": "i2v_slot",
                 "jobs.workers": "auto", "model.cpu_threads": "1", **extra}
    return load_config(overrides=overrides)


# -- without a cluster -------------------------------------------------------------------------


def test_a_server_with_the_local_backend_never_imports_ray():
    code = "import sys\nimport image_to_video.app\nprint('ray' in sys.modules)"  # app imports ray_backend lazily
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_head_that_does_not_answer_is_said_in_seconds_not_minutes(tmp_path):
    from image_to_video import ray_backend

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ConfigError) as refused:
        ray_backend.start_actors(ray_config(tmp_path, address))
    assert f"Cannot join the Ray cluster at {address}" in str(refused.value)
    assert "ray start --head" in str(refused.value)


def test_an_ipv6_head_in_brackets_is_reached_at_that_address(tmp_path):
    from image_to_video import ray_backend

    address = f"[::1]:{free_port()}"  # nothing listens there: the head is asked, and refuses
    with pytest.raises(ConfigError) as refused:
        ray_backend.start_actors(ray_config(tmp_path, address))
    assert f"Cannot join the Ray cluster at {address}" in str(refused.value)
    assert "Connection refused" in str(refused.value)  # not "Name or service not known": the brackets are not a name


@pytest.mark.parametrize(("workers", "units", "expected"), [("auto", 3, 3), ("2", 3, 2), ("4", 3, 3), ("1", 1, 1)])
def test_one_actor_per_gpu_of_the_cluster_at_most_jobs_workers(tmp_path, workers, units, expected):
    from image_to_video.ray_backend import actor_count

    assert actor_count(ray_config(tmp_path, "auto", **{"jobs.workers": workers}), units=units) == expected


def test_a_cluster_without_any_gpu_is_refused_with_what_to_do(tmp_path):
    from image_to_video.ray_backend import actor_count

    with pytest.raises(ConfigError) as refused:
        actor_count(ray_config(tmp_path, "auto"), units=0)
    assert "has no i2v_slot" in str(refused.value) and "bash start_app.sh worker --head" in str(refused.value)


def _worker_machine(*args, env=None, **popen):
    """`bash start_app.sh worker ...` as typed on a worker machine, in this test's environment."""
    env = {**os.environ, "CONDA_ENV": "none", "I2V_VENV_DIR": sys.prefix, "NO_COLOR": "1", "LC_ALL": "",
           "LANG": "C.UTF-8", **(env or {})}
    return ["bash", str(PROJECT_DIR / "start_app.sh"), "worker", *args], env


def test_a_worker_machine_needs_the_heads_address():
    command, env = _worker_machine()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "bash start_app.sh worker --head HOST[:PORT]" in result.stderr and "6379" in result.stderr
    command, env = _worker_machine("--head", "head:99999")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--head must be HOST or HOST:PORT" in result.stderr


# -- one actor, driven from this process -------------------------------------------------------


def test_the_channel_to_an_actor_calls_restarts_and_closes_it(cluster, tmp_path, photo):
    from image_to_video import ray_backend
    from image_to_video.remote_engine import plain_request
    from image_to_video.request import build_request

    config = ray_config(tmp_path, cluster.address, **{"jobs.workers": "1"})
    build_demo_model(tmp_path / "models" / "demo-i2vgen-xl-tiny")
    try:
        [channel] = ray_backend.start_actors(config)
        assert (channel.name, channel.device) == ("ray0", config.model.device)
        assert channel.call("describe")["device"] == "cpu"  # model.device auto, on a node without a GPU
        channel.call("start_loading")
        first = wait_for(lambda: (d := channel.call("describe"))["ready"] and d, timeout=180, every=0.5)
        assert first["name"] == "ray0" and first["device"] == "cpu" and first["job"] is None
        assert cluster.node_of(first["pid"]) is not None  # an actor of this cluster

        request = plain_request(build_request(config, image=photo, prompt="waves", resolution="256p", num_frames=8,
                                             num_inference_steps=100))
        channel.call("start", "job-1", request)
        with pytest.raises(RuntimeError, match="already running job job-1"):  # the host's own error, as itself
            channel.call("start", "job-2", request)
        assert channel.call("describe")["job"] == "job-1"

        channel.restart()  # a live actor is replaced (after a fatal GPU error it must be)
        fresh = channel.call("describe")
        assert fresh["pid"] != first["pid"] and fresh["job"] is None
        wait_for(lambda: cluster.node_of(first["pid"]) is None, timeout=30, every=0.5)

        channel.close()
        wait_for(lambda: _lost(channel), timeout=30, every=0.5)
    finally:
        ray.shutdown()


def _lost(channel) -> bool:
    try:
        channel.call("describe")
    except WorkerLost:
        return True
    return False


# -- the server, with two actors ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    """`python main.py --demo` with jobs.backend: ray on the cluster, an actor per i2v_slot."""
    root = tmp_path_factory.mktemp("ray-server")
    build_demo_model(root / "models" / "demo-i2vgen-xl-tiny")
    app = AppProcess(root, free_port(), env={
        "I2V_JOBS_BACKEND": "ray", "I2V_JOBS_RAY_ADDRESS": cluster.address, "I2V_JOBS_RAY_RESOURCE": "i2v_slot",
        "I2V_JOBS_WORKERS": "auto", "I2V_JOBS_WORKER_THREADS": "1", "I2V_JOBS_MAX_QUEUED": "50",
        "HF_HUB_OFFLINE": "1"})
    app.start(timeout=300)
    wait_for(lambda: len(w := _workers(app)) == 2 and all(x["state"] == "ready" for x in w), timeout=300, every=0.5)
    yield app
    app.stop()


def test_four_jobs_finish_on_two_actors_one_on_each_node(server, cluster, tmp_path):
    ids = [_submit(server, seed=str(i), **FAST) for i in range(4)]
    jobs = [_finished(server, job_id) for job_id in ids]
    assert [job["state"] for job in jobs] == [DONE] * 4, jobs
    assert {job["worker"]["name"] for job in jobs} == {"ray0", "ray1"}
    assert all(job["worker"]["device"] == "cpu" and job["worker"]["machine"] for job in jobs)
    assert [_frames_of(server, job_id, tmp_path) for job_id in ids] == [8] * 4
    workers = _workers(server)
    assert sorted(w["id"] for w in workers) == ["ray0", "ray1"]
    assert sum(w["jobs_done"] for w in workers) == 4 and all(w["jobs_done"] for w in workers)
    assert sorted(cluster.node_of(w["pid"]) for w in workers) == [0, 1]


def test_progress_and_cancel_reach_the_actor_on_each_node(server, cluster):
    ids = [_submit(server, **{**FAST, "num_inference_steps": "100"}) for _ in range(2)]
    for job_id in ids:
        running = wait_for(lambda: (job := _json(server, f"api/jobs/{job_id}"))["progress"]["done"] >= 2 and job,
                           timeout=120, every=0.2)
        assert running["state"] == "running" and running["progress"]["stage"] == "denoising"
    busy = {w["current_job"]: w["pid"] for w in _workers(server)}
    assert sorted(cluster.node_of(busy[job_id]) for job_id in ids) == [0, 1]
    for job_id in ids:
        _json(server, f"api/jobs/{job_id}/cancel", method="POST")
    for job_id in ids:
        job = _finished(server, job_id, timeout=60)
        assert job["state"] == "cancelled" and job["progress"]["done"] < 100


def test_a_killed_actor_puts_its_job_back_and_ray_restarts_it(server, cluster, tmp_path):
    back = kill_a_worker_mid_job(server, tmp_path, every=0.5)
    assert cluster.node_of(back["pid"]) is not None  # Ray's new actor, in the same cluster
    outputs = server.root / "outputs"
    assert not [p.name for p in outputs.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
    videos = [video for video in outputs.glob("video_*.mp4") if not any(video.name.endswith(end)
                                                                       for end in COMPANIONS.values())]
    assert videos and all(video.with_suffix(".json").is_file() for video in videos)


def test_start_app_worker_joins_the_cluster_and_a_term_stops_it(cluster, tmp_path):
    command, env = _worker_machine("--head", cluster.address, env={
        "I2V_JOBS_RAY_RESOURCE": "i2v_slot", "RAY_TMPDIR": str(cluster.temp_dir), "RAY_USAGE_STATS_ENABLED": "0"})
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        machine = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "block forever" in log.read_text() or machine.poll() is not None, timeout=180, every=0.5)
        text = log.read_text()
        assert machine.poll() is None, text
        assert f"Joining the Ray cluster at {cluster.address}: 1 unit(s) of i2v_slot" in text
        assert "Ctrl+C (or a TERM signal) stops this worker machine" in text
        below = psutil.Process(machine.pid).children(recursive=True)
        assert any(p.name() == "raylet" for p in below)  # a node of its own, registered with the head
    finally:
        machine.terminate()  # the script exec'd `ray start`: this PID is it
        machine.wait(90)
    _, alive = psutil.wait_procs(below, timeout=30)
    assert alive == []


def test_stopping_the_server_ends_its_actors_and_the_cluster_leaves_no_process(server, cluster):
    actors = [w["pid"] for w in _workers(server)]
    server.stop()
    assert server.process.returncode is not None
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in actors), timeout=60, every=0.5)
    processes = cluster.processes()
    assert processes and cluster.stop() == []
    assert not [p for p in processes if p.is_running()]


# -- which GPU an actor runs on (no cluster: Ray's answers are faked) ----------------------------


def test_an_actor_placed_by_num_gpus_runs_on_the_gpu_ray_gave_it(tmp_path):
    from image_to_video.ray_backend import pin_actor_gpu

    env = {"CUDA_VISIBLE_DEVICES": "3"}  # what Ray sets for an actor given GPU 3 of its node
    assert pin_actor_gpu("cuda", "", gpu_ids=["3"], env=env, claims_dir=tmp_path) == ("cuda", "cuda:3", None)
    assert env == {"CUDA_VISIBLE_DEVICES": "3"}
    env = {}  # Ray told not to set it (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES): set here, before CUDA starts
    assert pin_actor_gpu("cuda", "", gpu_ids=["1"], env=env, claims_dir=tmp_path)[:2] == ("cuda", "cuda:1")
    assert env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_actors_placed_by_a_custom_resource_each_claim_a_gpu_of_their_machine(tmp_path):
    from image_to_video.ray_backend import pin_actor_gpu

    def place(device="auto", machine="4,6"):  # the node's own GPUs: 4 and 6 (its CUDA_VISIBLE_DEVICES)
        env = {"CUDA_VISIBLE_DEVICES": machine}
        device, shown, claim = pin_actor_gpu(device, "i2v_gpu", gpu_ids=[], env=env, claims_dir=tmp_path)
        return device, shown, env["CUDA_VISIBLE_DEVICES"], claim

    first, second, third = place(), place("cuda"), place()
    assert [placed[:3] for placed in (first, second, third)] == [
        ("cuda", "cuda:4", "4"), ("cuda", "cuda:6", "6"), ("cuda", "cuda:4", "4")]  # each GPU once, then in turn
    os.close(first[3])  # its process died: Ray's new actor takes the GPU it left
    assert place()[:3] == ("cuda", "cuda:4", "4")
    assert place(machine="")[:3] == ("auto", None, "")  # a node without a GPU: its CPU, as before
    assert place("cpu")[:3] == ("cpu", None, "4,6")  # model.device cpu: no GPU claimed
    for placed in (second, third):
        os.close(placed[3])


def test_each_actor_is_asked_for_one_gpu_or_one_unit_and_told_how_it_was_placed(tmp_path, monkeypatch):
    from image_to_video import ray_backend

    made = []

    class ActorClass:
        def options(self, **options):
            made.append(options)
            return self

        def remote(self, *args, **kwargs):
            made.append(kwargs)
            return object()

    monkeypatch.setattr(ray_backend, "connect", lambda address: None)
    monkeypatch.setattr(ray_backend.ray, "cluster_resources", lambda: {"GPU": 2, "i2v_gpu": 2})
    monkeypatch.setattr(ray_backend.ray, "remote", lambda cls: ActorClass())
    channels = ray_backend.start_actors(ray_config(tmp_path, "auto", **{"jobs.ray_resource": ""}))
    assert [c.device for c in channels] == ["cuda", "cuda"] and made[0]["num_gpus"] == 1
    assert [(m["device"], m["resource"]) for m in made[1:]] == [("cuda", "")] * 2
    made.clear()
    channels = ray_backend.start_actors(ray_config(tmp_path, "auto", **{"jobs.ray_resource": "i2v_gpu"}))
    assert made[0]["resources"] == {"i2v_gpu": 1} and "num_gpus" not in made[0]
    assert [(m["device"], m["resource"]) for m in made[1:]] == [("auto", "i2v_gpu")] * 2
