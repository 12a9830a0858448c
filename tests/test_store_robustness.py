"""The job store and its worker under faults: a locked or damaged database, a job that cannot be
read, two processes on one data folder, simultaneous retries, a full disk, old input pictures."""

import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from image_to_video.app import build
from image_to_video.config import PROJECT_DIR
from image_to_video.errors import AlreadyRunning, GenerationFailed, InvalidInput
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import DONE, FAILED, QUEUED, SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.outputs import OutputFolder
from image_to_video.server import create_app
from image_to_video.service import VideoService
from image_to_video.worker import Worker

from .test_jobs import wait_for


@contextmanager
def database_locked(path):
    """Another writer holding the job database's write lock (as a stuck process would)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("COMMIT")
        db.close()


class Parts:
    """Queue, worker and readiness check over one store that gives up on a lock after 0.2 s."""

    def __init__(self, config, engine, folder, make_video=None):
        self.store = SQLiteJobStore(folder / "jobs.sqlite3", timeout_s=0.2)
        self.live = LiveJobs()
        self.outputs = OutputFolder(config.paths.output_dir, config.outputs)
        self.queue = JobQueue(self.store, config, live=self.live, inputs_dir=folder / "inputs")
        self.service = VideoService(engine, self.outputs, config.model)
        self.worker = Worker(self.store, self.live, make_video or self.service.make_video,
                             model_ready=lambda: engine.ready)
        self.config, self.engine = config, engine

    def readiness(self):
        """GET /api/ready of the real server app over these parts, as a call giving (status, body)."""
        asgi = create_app(self.config, self.queue, self.outputs, self.engine,
                          worker_healthy=lambda: self.worker.healthy)
        endpoint = next(route.endpoint for route in asgi.routes if getattr(route, "path", "") == "/api/ready")

        def ready():
            response = endpoint()
            return response.status_code, json.loads(response.body)
        return ready


@pytest.fixture
def parts(small_config, loaded_engine, tmp_path):
    made = []

    def make(make_video=None):
        made.append(Parts(small_config(), loaded_engine, tmp_path / "data", make_video))
        return made[-1]

    yield make
    for part in made:
        part.queue.close()
        part.worker.shutdown(0)


@pytest.fixture
def built(small_config, tmp_path):
    """``app.build`` on this test's data folder; each app lets the folder go afterwards."""
    apps = []

    def make(**overrides):
        apps.append(build(small_config(**{"paths.state_dir": str(tmp_path / "data"), **overrides})))
        return apps[-1]

    yield make
    for app in apps:
        app.lock.release()


# -- 1. a locked store, an unreadable job, a failure while recording one ------------------------

def test_a_locked_database_raises_its_own_error_not_a_rollback_error(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3", timeout_s=0.1)
    with database_locked(store.path), pytest.raises(sqlite3.OperationalError) as raised:
        store.update("abc", state=FAILED)
    assert "database is locked" in str(raised.value)


def test_reads_go_on_while_another_process_holds_the_write_lock(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3", timeout_s=0.1)
    with database_locked(store.path):
        assert store.get("abc") is None and store.list() == [] and store.position("abc") is None


def test_the_worker_outlives_a_locked_database_and_readiness_says_so(parts, photo):
    jobs = parts()
    ready = jobs.readiness()
    jobs.worker.start()
    assert wait_for(lambda: ready()[0] == 200, 30), ready()
    with database_locked(jobs.store.path):
        assert wait_for(lambda: ready()[0] == 503, 30)
        status, body = ready()
        assert body["checks"]["worker"] is False and body["ready"] is False
    job = jobs.queue.submit(photo, "waves", owner="a")  # accepted once the lock is gone
    assert jobs.queue.wait(job.id, timeout=60).state == DONE  # the worker carried on
    assert wait_for(lambda: ready()[0] == 200, 30) and ready()[1]["checks"]["worker"] is True


def test_readiness_says_not_ready_when_the_worker_thread_is_gone(parts):
    jobs = parts()
    ready = jobs.readiness()
    jobs.worker.start()
    assert wait_for(lambda: ready()[0] == 200, 30)
    jobs.worker.shutdown(0)  # the thread ends
    status, body = ready()
    assert status == 503 and body["checks"]["worker"] is False


def test_a_failure_while_recording_a_failure_does_not_stop_the_worker(parts, photo):
    def make_video(request, progress, cancel):
        if request.prompt == "first":  # fails while another writer holds the store for 1.5 s
            db = sqlite3.connect(jobs.store.path, isolation_level=None, check_same_thread=False)
            db.execute("BEGIN IMMEDIATE")
            threading.Timer(1.5, lambda: (db.execute("COMMIT"), db.close())).start()
            raise RuntimeError("the encoder crashed")
        return jobs.service.make_video(request, progress=progress, cancel=cancel)

    jobs = parts(make_video)
    first = jobs.queue.submit(photo, "first", owner="a")
    second = jobs.queue.submit(photo, "second", owner="a")
    jobs.worker.start()
    failed = jobs.queue.wait(first.id, timeout=60)
    assert failed.state == FAILED and "Something went wrong" in failed.message
    assert jobs.queue.wait(second.id, timeout=60).state == DONE


def test_a_job_that_cannot_be_read_fails_and_the_next_one_runs(parts, photo):
    jobs = parts()
    good = jobs.queue.submit(photo, "waves", owner="a")
    db = sqlite3.connect(jobs.store.path)
    db.execute("INSERT INTO jobs (id, owner, state, params, image_path, created) VALUES (?, ?, ?, ?, ?, ?)",
               ("broken", "a", QUEUED, "{not json", "/nowhere.png", good.created - 10))
    db.commit()
    db.close()
    jobs.worker.start()
    assert jobs.queue.wait(good.id, timeout=60).state == DONE
    assert jobs.store.get("broken").state == FAILED


# -- 2. a damaged job database -------------------------------------------------------------------

def test_a_database_of_garbage_is_set_aside_and_a_fresh_one_starts(built, tmp_path, photo, caplog):
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    data.mkdir()
    outputs.mkdir()
    garbage = b"this is not a database \x00\xff" * 200
    (data / "jobs.sqlite3").write_bytes(garbage)
    (outputs / "video_20240101_120000_0123abcd.mp4").write_bytes(b"a video")
    with caplog.at_level(logging.WARNING):
        app = built()
    [aside] = data.glob("jobs.sqlite3.damaged-*")
    assert aside.read_bytes() == garbage  # kept as it was, not deleted
    assert (outputs / "video_20240101_120000_0123abcd.mp4").read_bytes() == b"a video"
    warning = caplog.text
    assert str(data / "jobs.sqlite3") in warning and str(aside) in warning
    assert "untouched" in warning and str(outputs) in warning
    job = app.queue.submit(photo, "waves", owner="a")  # the new database works
    assert [j.id for j in app.queue.list()] == [job.id]


def test_a_truncated_database_is_set_aside_too(built, tmp_path, photo):
    data = tmp_path / "data"
    app = built(**{"jobs.max_queued": 100})
    for _ in range(40):
        app.queue.submit(photo, "waves " * 150, owner="a")
    app.lock.release()
    path = data / "jobs.sqlite3"
    assert not (data / "jobs.sqlite3-wal").exists()  # all of it is in the main file now
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    again = built()
    assert len(list(data.glob("jobs.sqlite3.damaged-*"))) == 1
    assert again.queue.list() == []


# -- 3. one process per data folder --------------------------------------------------------------

def test_a_second_build_on_the_same_data_folder_is_refused_with_who_has_it(built, tmp_path):
    import os

    built(**{"server.port": 7901})
    with pytest.raises(AlreadyRunning) as refused:
        built(**{"server.port": 7902})
    message = str(refused.value)
    assert f"PID {os.getpid()}" in message and "port 7901" in message and "http://localhost:7901/" in message
    assert "bash start_app.sh stop" in message and str(tmp_path / "data") in message


def test_a_second_server_on_the_same_folder_exits_and_leaves_the_first_alone(app_process, tmp_path, photo):
    first = app_process().start()
    pending = tmp_path / "outputs" / ".video_20240101_120000_0123abcd.tmp.mp4"  # the first one is writing it
    pending.write_bytes(b"half a video")
    second = app_process()
    result = subprocess.run([sys.executable, "main.py", "--demo", "--port", str(second.port)], cwd=PROJECT_DIR,
                            env=second.env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "[ERROR]" in result.stderr and f"PID {first.process.pid}" in result.stderr
    assert f"port {first.port}" in result.stderr and "bash start_app.sh stop" in result.stderr
    assert pending.exists() and first.status()["model"]["state"] == "ready"
    # `generate` refuses too, rather than run a second job on the GPU.
    photo.save(tmp_path / "photo.png")
    generate = subprocess.run([sys.executable, "main.py", "generate", "--demo", "--image", str(tmp_path / "photo.png"),
                               "--prompt", "waves"], cwd=PROJECT_DIR, env=second.env, capture_output=True,
                              text=True, timeout=180)
    assert generate.returncode == 1 and f"PID {first.process.pid}" in generate.stderr
    assert "bash start_app.sh stop" in generate.stderr
    first.kill9()  # the kernel lets the lock go with the process
    app_process(port=second.port).start()


# -- 4. retry is idempotent ----------------------------------------------------------------------

def test_five_simultaneous_retries_of_one_failed_job_make_one_new_job(parts, photo):
    jobs = parts()
    failed = jobs.queue.submit(photo, "waves", owner="a")
    jobs.store.update(failed.id, state=FAILED, finished=time.time(), message="it failed")
    answers, barrier = [], threading.Barrier(5)

    def retry():
        barrier.wait()
        answers.append(jobs.queue.retry(failed.id).id)

    threads = [threading.Thread(target=retry) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 5 and len(set(answers)) == 1
    assert len(jobs.queue.list()) == 2 and answers[0] != failed.id
    assert jobs.queue.retry(failed.id).id == answers[0]  # a later retry answers with the same job
    assert jobs.queue.get(failed.id).public()["retried_as"] == answers[0]
    assert len(list((jobs.queue.inputs_dir).glob("*.png"))) == 2  # the losers' pictures are not kept


def test_an_older_database_gains_the_retried_as_column(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, params TEXT "
               "NOT NULL, image_path TEXT NOT NULL, created REAL NOT NULL, source TEXT, started REAL, finished REAL, "
               "stage TEXT, done INTEGER, total INTEGER, eta REAL, message TEXT, video_path TEXT, "
               "metadata_path TEXT, attempts INTEGER, worker TEXT, message_key TEXT)")
    db.execute("INSERT INTO jobs (id, owner, state, params, image_path, created) VALUES "
               "('old', 'a', 'failed', '{\"prompt\": \"waves\"}', '/gone.png', 1)")
    db.commit()
    db.close()
    store = SQLiteJobStore(path)
    assert store.get("old").retried_as is None and store.get("old").params == {"prompt": "waves"}


# -- 5. a full disk refuses the job at once ------------------------------------------------------

def test_too_little_disk_refuses_the_job_at_submit_and_stores_nothing(built, tmp_path, photo):
    app = built(**{"outputs.min_free_gb": 10 ** 9})
    with pytest.raises(GenerationFailed) as refused:
        app.queue.submit(photo, "waves", owner="a")
    assert "GB of disk is free" in str(refused.value) and "Delete old" in str(refused.value)
    assert app.queue.list() == [] and not list((tmp_path / "data" / "inputs").glob("*"))


# -- 6. input pictures do not pile up ------------------------------------------------------------

def test_old_finished_jobs_lose_their_input_and_retry_says_so(built, photo):
    app = built(**{"jobs.keep_inputs_days": 7})
    old, recent, queued = (app.queue.submit(photo, prompt, owner="a") for prompt in ("old", "recent", "queued"))
    app.queue.store.update(old.id, state=FAILED, finished=time.time() - 8 * 86400)
    app.queue.store.update(recent.id, state=FAILED, finished=time.time() - 3600)
    assert app.queue.prune_inputs() == 1
    assert not (app.queue.inputs_dir / f"{old.id}.png").exists()
    assert (app.queue.inputs_dir / f"{recent.id}.png").exists() and (app.queue.inputs_dir / f"{queued.id}.png").exists()
    with pytest.raises(InvalidInput, match="input image of that job is gone"):
        app.queue.retry(old.id)
    assert app.queue.retry(recent.id).state == QUEUED
