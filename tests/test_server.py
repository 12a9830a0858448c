"""The FastAPI app (server.py), in this process: readiness, the job routes' login and answers, JSON
errors, the PID file; and how the real server stops with a page open. The real server over HTTP is
tested in test_api.py and test_http_guard.py."""

import dataclasses
import io
import os
import signal
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from gradio_client import Client

from image_to_video import families
from image_to_video.config import load_config
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.model_status import ModelState, ModelStatus
from image_to_video.outputs import OutputFolder
from image_to_video.server import create_app, remove_pid_file
from image_to_video.workers import WorkerBoard

from .helpers import wait_for


def test_readiness_says_not_ready_when_the_worker_thread_is_gone(parts):
    jobs = parts()
    ready = jobs.readiness()
    jobs.worker.start()
    assert wait_for(lambda: ready()[0] == 200, 30)
    jobs.worker.shutdown(0)  # the thread ends
    status, body = ready()
    assert status == 503 and body["checks"]["worker"] is False


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


def test_the_models_offered_need_the_login_and_say_how_each_stands(tmp_path):
    from fastapi.testclient import TestClient

    from image_to_video.auth import Credentials
    from image_to_video.config import load_config as load

    class Engine:  # the engine holding I2VGen-XL, ready
        status, ready, memory_mode, gpu_memory_gb, gpu_name = ModelStatus(state=ModelState.READY), True, None, None, None
        card = families.CARDS["i2vgen-xl"]

        def device_answers(self):
            return True

    config = families.served_config(load(overrides={"paths.output_dir": str(tmp_path / "o"),
                                                     "paths.state_dir": str(tmp_path / "d"),
                                                     "paths.models_dir": str(tmp_path / "m")}))
    queue = JobQueue(SQLiteJobStore(tmp_path / "j.sqlite3"), config, live=LiveJobs(), inputs_dir=tmp_path / "i")
    app = create_app(config, queue, OutputFolder(tmp_path / "o", config.outputs), Engine(),
                     credentials=Credentials("admin", "secret"))
    client = TestClient(app)
    assert client.get("/api/models").status_code == 401  # its states may name a folder a load failed on
    answer = client.get("/api/models", headers={"Authorization": "Bearer secret"}).json()
    models = {model["name"]: model for model in answer["models"]}
    assert answer["default"] == "i2vgen-xl" and list(models) == ["i2vgen-xl", "wan2.2-ti2v-5b", "wan2.2-i2v-a14b"]
    assert models["i2vgen-xl"]["state"] == "ready"
    wan = models["wan2.2-ti2v-5b"]  # nothing of it in the empty models folder: its download size is said
    assert (wan["state"], wan["family"], wan["end_frame"]) == ("not_downloaded", "wan", False)
    assert wan["download_gb"] > 20 and wan["memory_gb"]["gpu"] > max(wan["memory_gb"]["sequential_offload"], 1)
    assert models["wan2.2-i2v-a14b"]["end_frame"] is True
    assert client.get("/api/status").json()["model"]["name"] == "i2vgen-xl"


# -- the API in this process, over a queue without a worker (its jobs stay queued) ----------------------


class Model:
    """What the app reads of the engine: its status, whether it is loaded, whether its device answers."""

    memory_mode, gpu_memory_gb, gpu_name = None, None, None

    def __init__(self):
        self.ready = False
        self.status = ModelStatus(state=ModelState.LOADING)

    def device_answers(self):
        return True


@pytest.fixture
def api(tmp_path, request):
    """The app served in this process (``api.client``) over a queue nobody works on (``api.queue``),
    with a model that is still loading (``api.model``) and a worker that runs (``api.worker_up``); the
    server of another model family when the test names one (``indirect`` parameter)."""
    config = load_config(overrides={"paths.output_dir": str(tmp_path / "o"), "paths.state_dir": str(tmp_path / "d"),
                                    "outputs.min_free_gb": 0})
    if getattr(request, "param", None):
        config = families.served_config(dataclasses.replace(
            config, model=dataclasses.replace(config.model, family=request.param)))
    queue = JobQueue(SQLiteJobStore(tmp_path / "j.sqlite3"), config, live=LiveJobs(), inputs_dir=tmp_path / "i")
    state = SimpleNamespace(queue=queue, model=Model(), worker_up=True)
    app = create_app(config, queue, OutputFolder(tmp_path / "o", config.outputs), state.model,
                     worker_healthy=lambda: state.worker_up)
    state.client = TestClient(app)
    return state


def test_ready_is_503_naming_what_is_missing_until_the_model_is_loaded_and_the_worker_runs(api):
    assert api.client.get("/api/health").json() == {"status": "ok"}  # alive all along
    answer = api.client.get("/api/ready")
    assert answer.status_code == 503 and answer.json()["ready"] is False
    assert [name for name, ok in answer.json()["checks"].items() if not ok] == ["model"]
    api.model.ready, api.worker_up = True, False
    answer = api.client.get("/api/ready")
    assert answer.status_code == 503 and [name for name, ok in answer.json()["checks"].items() if not ok] == ["worker"]
    api.worker_up = True
    answer = api.client.get("/api/ready")
    assert answer.status_code == 200 and answer.json()["ready"] is True and all(answer.json()["checks"].values())


def test_a_queued_job_is_listed_its_files_are_409_until_done_and_it_can_be_cancelled(api, photo):
    job = api.queue.submit(photo, "waves", owner="api", source="api")
    assert [listed["id"] for listed in api.client.get("/api/jobs").json()["jobs"]] == [job.id]
    shown = api.client.get(f"/api/jobs/{job.id}").json()
    assert (shown["state"], shown["queue_position"], shown["files"]) == ("queued", 1, [])
    for path in ("video", "metadata"):
        refused = api.client.get(f"/api/jobs/{job.id}/{path}")
        assert refused.status_code == 409 and "queued" in refused.json()["error"], path
    assert api.client.get(f"/api/jobs/{job.id}/video?format=avi").status_code == 400  # no such file, whatever the job
    cancelled = api.client.post(f"/api/jobs/{job.id}/cancel")
    assert cancelled.status_code == 200
    assert (cancelled.json()["state"], cancelled.json()["queue_position"]) == ("cancelled", None)


def test_errors_are_json_with_a_message_never_a_traceback(api):
    for method, path, status in [("GET", "/api/jobs/nope", 404), ("POST", "/api/jobs/nope/retry", 404),
                                 ("GET", "/api/nothing", 404), ("DELETE", "/api/jobs", 405),
                                 ("GET", "/api/jobs?limit=many", 400)]:
        answer = api.client.request(method, path)
        assert answer.status_code == status, (method, path, answer.text)
        assert set(answer.json()) == {"error"} and answer.json()["error"], (method, path)
        assert "Traceback" not in answer.text


def test_the_pid_file_is_removed_only_while_it_names_this_process(tmp_path):
    mine, other = tmp_path / "mine.pid", tmp_path / "other.pid"
    mine.write_text(f"{os.getpid()}\n")
    other.write_text(f"{os.getpid() + 1}\n")  # a new server's, written after this one started
    for pid_file in (mine, other, tmp_path / "gone.pid", None):
        remove_pid_file(pid_file)
    assert not mine.exists() and other.read_text() == f"{os.getpid() + 1}\n"


def test_a_stop_with_a_page_open_ends_its_stream_instead_of_waiting_it_out(app_process):
    # An open page (here gradio's own client) holds a heartbeat stream that never ends by itself; the
    # server used to wait out uvicorn's whole graceful timeout for it on every stop, then cancel it.
    app = app_process().start()
    client = Client(app.url, verbose=False)
    wait_for(lambda: "/heartbeat/" in app.log() or client.session_hash, 30)
    app.process.send_signal(signal.SIGTERM)
    assert app.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
    log = app.log()
    assert "Stopping: no new jobs" in log
    assert "timeout graceful shutdown exceeded" not in log, log[-2000:]


def png(size=(640, 480)) -> bytes:
    from PIL import Image

    data = io.BytesIO()
    Image.new("RGB", size, "teal").save(data, "PNG")
    return data.getvalue()


@pytest.mark.parametrize("api, end, said", [
    ("i2vgen-xl", png(), "I2VGen-XL cannot end a video on a chosen picture. Remove the end frame"),
    ("wan2.2-i2v-a14b", b"\0junk" * 50, "End frame: This file is not an image we can read"),
    ("wan2.2-i2v-a14b", b"hello", "End frame: This file is not an image we can read"),
], indirect=["api"], ids=["i2vgen-xl takes none", "a14b: junk bytes", "a14b: text"])
def test_an_end_frame_the_server_cannot_use_is_a_400_naming_it_and_nothing_is_stored(api, end, said):
    answer = api.client.post("/api/jobs", data={"prompt": "waves", "num_frames": "9", "aspect": "16:9"},
                             files={"image": ("a.png", png(), "image/png"),
                                    "last_image": ("end.png", end, "image/png")})
    assert answer.status_code == 400 and said in answer.json()["error"], answer.text
    assert api.queue.list() == [] and not list(api.queue.inputs_dir.glob("*"))


@pytest.mark.parametrize("api", ["wan2.2-i2v-a14b"], indirect=True)
def test_the_api_takes_an_aspect_and_an_end_frame_and_ignores_fields_it_does_not_declare(api):
    # family and end_frame are keys of a record's parameters, not fields of the form: ignored like any other.
    answer = api.client.post("/api/jobs", data={"prompt": "waves", "num_frames": "5", "aspect": " 9X16 ",
                                                "model": "wan2.2-i2v-a14b", "family": "junk", "end_frame": "no"},
                             files={"image": ("a.png", png(), "image/png"),
                                    "last_image": ("end.png", png((480, 640)), "image/png")})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert (job["aspect"], job["width"], job["height"], job["model"]) == ("9:16", 480, 832, "wan2.2-i2v-a14b")
    assert sorted(p.name for p in api.queue.inputs_dir.glob("*")) == [f"{job['id']}.png", f"{job['id']}_end.png"]
    for aspect in ("16:10", "0:0", "-16:9", "x" * 100_000):
        refused = api.client.post("/api/jobs", data={"prompt": "waves", "num_frames": "5", "aspect": aspect},
                                  files={"image": ("a.png", png(), "image/png")})
        assert refused.status_code == 400 and "Choose one of: auto, 16:9" in refused.json()["error"], aspect
    refused = api.client.post("/api/jobs", data={"prompt": "waves", "num_frames": "5", "model": "junk"},
                              files={"image": ("a.png", png(), "image/png")})  # the form's model: an offered one
    assert refused.status_code == 400 and "does not offer the model 'junk'" in refused.json()["error"]
    assert len(api.queue.list()) == 1
