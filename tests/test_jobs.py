import threading
import time

import pytest
from PIL import Image

from image_to_video.engine import FaultInjector
from image_to_video.errors import InvalidInput, ModelUnavailable
from image_to_video.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    JobNotFound,
    JobQueue,
    QueueFull,
    SQLiteJobStore,
    this_worker,
    worker_alive,
)
from image_to_video.service import VideoService
from image_to_video.video import probe_video


@pytest.fixture
def make_queue(small_config, loaded_engine, tmp_path):
    queues = []

    def make(max_queued=20, start=True, **config):
        service = VideoService(small_config(**config), loaded_engine)
        store = SQLiteJobStore(tmp_path / "data" / "jobs.sqlite3")
        queue = JobQueue(store, service, inputs_dir=tmp_path / "data" / "inputs", max_queued=max_queued)
        if start:
            queue.start()
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.shutdown(grace_s=0)


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_job_runs_to_a_playable_video(make_queue, photo):
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="alice", num_frames=4, seed=3)
    assert job.state == QUEUED and job.params["seed"] == 3
    done = queue.wait(job.id, timeout=60)
    assert done.state == DONE and done.attempts == 1
    assert probe_video(done.video_path).frames == 4
    assert done.public()["video"].endswith(".mp4") and "video_path" not in done.public()


def test_progress_is_recorded_per_step(make_queue, photo):
    queue = make_queue()
    seen = []
    job = queue.submit(photo, "waves", owner="a", num_inference_steps=5)
    queue.wait(job.id, on_update=lambda j: seen.append((j.state, j.stage, j.done, j.total)), poll_s=0.01)
    assert (RUNNING, "denoising", 5, 5) in seen or any(s[1] == "decoding" for s in seen)
    assert seen[-1][0] == DONE


def test_bad_input_is_refused_and_nothing_is_stored(make_queue, tmp_path):
    queue = make_queue()
    with pytest.raises(InvalidInput, match="not an image"):
        queue.submit(b"hello", "waves", owner="a")
    with pytest.raises(InvalidInput, match="Frames 99"):
        queue.submit(Image.new("RGB", (100, 100)), "waves", owner="a", num_frames=99)
    assert queue.list() == [] and not list((tmp_path / "data" / "inputs").glob("*"))


def test_the_queue_bound_holds_under_20_simultaneous_submissions(make_queue, photo):
    queue = make_queue(max_queued=5, start=False)  # no worker: everything stays queued
    outcomes = []
    barrier = threading.Barrier(20)

    def submit():
        barrier.wait()
        try:
            outcomes.append(queue.submit(photo, "waves", owner="a").id)
        except QueueFull as error:
            outcomes.append(error)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, QueueFull)]
    assert len(accepted) == 5 and len(refused) == 15
    assert "queue is full (5 videos waiting)" in str(refused[0])
    assert [queue.position(job_id) for job_id in sorted(accepted, key=lambda i: queue.get(i).created)] == [1, 2, 3, 4, 5]


def test_cancel_a_queued_job_and_a_running_job(make_queue, photo):
    queue = make_queue()
    running = queue.submit(photo, "waves", owner="a", num_inference_steps=60)
    waiting = queue.submit(photo, "waves", owner="a")
    assert wait_for(lambda: queue.get(running.id).done >= 1)
    assert queue.cancel(waiting.id).state == CANCELLED
    queue.cancel(running.id)
    assert queue.wait(running.id, timeout=30).state == CANCELLED
    assert queue.get(running.id).done < 60


def test_jobs_of_others_are_not_visible(make_queue, photo):
    queue = make_queue(start=False)
    job = queue.submit(photo, "waves", owner="alice")
    with pytest.raises(JobNotFound):
        queue.get(job.id, owner="bob")
    with pytest.raises(JobNotFound):
        queue.cancel(job.id, owner="bob")
    assert queue.list(owner="bob") == [] and len(queue.list(owner="alice")) == 1


def test_a_crash_marks_the_running_job_interrupted_and_keeps_the_queue(make_queue, photo, tmp_path):
    queue = make_queue(start=False)
    running = queue.submit(photo, "first", owner="a")
    waiting = queue.submit(photo, "second", owner="a")
    # A worker that died: its process id is gone.
    queue.store.claim_next("this-host-not:424242:1")
    queue.store.update(running.id, worker=f"{this_worker().rsplit(':', 2)[0]}:999999:1")
    again = make_queue()  # a new start on the same database
    assert again.get(running.id).state == INTERRUPTED and "Retry" in again.get(running.id).message
    assert again.wait(waiting.id, timeout=60).state == DONE
    retried = again.retry(running.id)
    assert retried.id != running.id and retried.params == running.params
    assert again.wait(retried.id, timeout=60).state == DONE


def test_a_live_workers_job_is_left_alone():
    assert worker_alive(this_worker())
    assert not worker_alive(f"{this_worker().rsplit(':', 2)[0]}:999999:1")
    assert worker_alive("another-machine:1:1")


def test_only_finished_jobs_can_be_retried(make_queue, photo):
    queue = make_queue(start=False)
    job = queue.submit(photo, "waves", owner="a")
    with pytest.raises(InvalidInput, match="this one is queued"):
        queue.retry(job.id)


def test_shutdown_requeues_a_job_that_outlasts_the_grace(make_queue, photo):
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", num_inference_steps=100, num_frames=16)
    assert wait_for(lambda: queue.get(job.id).done >= 1)
    began = time.monotonic()
    queue.shutdown(grace_s=0.3)
    assert time.monotonic() - began < 30 and not queue.busy
    assert queue.get(job.id).state == QUEUED  # runs again after the restart
    with pytest.raises(ModelUnavailable, match="shutting down"):
        queue.submit(photo, "waves", owner="a")


def test_shutdown_lets_a_short_job_finish(make_queue, photo):
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", num_frames=2)
    assert wait_for(lambda: queue.get(job.id).state == RUNNING)
    queue.shutdown(grace_s=60)
    assert queue.get(job.id).state == DONE


def test_out_of_memory_is_recovered_in_process_and_the_next_job_succeeds(make_queue, photo, loaded_engine,
                                                                        monkeypatch):
    queue = make_queue()
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("oom@denoise*2"))
    failed = queue.wait(queue.submit(photo, "waves", owner="a", resolution="128p").id, timeout=60)
    assert failed.state == FAILED and "Lower the resolution to 64p" in failed.message
    ok = queue.wait(queue.submit(photo, "waves", owner="a").id, timeout=60)
    assert ok.state == DONE


def test_a_fatal_gpu_error_fails_the_job_and_asks_for_a_restart(small_config, loaded_engine, photo, tmp_path,
                                                                monkeypatch):
    restarts = []
    service = VideoService(small_config(), loaded_engine)
    queue = JobQueue(SQLiteJobStore(tmp_path / "jobs.sqlite3"), service, inputs_dir=tmp_path / "in",
                     max_queued=5, on_fatal=lambda: restarts.append(True))
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("fatal@denoise*1"))
    queue.start()
    try:
        job = queue.wait(queue.submit(photo, "waves", owner="a").id, timeout=60)
    finally:
        queue.shutdown(grace_s=0)
    assert job.state == FAILED and "restarted itself" in job.message and restarts == [True]


def test_a_failed_jobs_message_can_be_shown_in_chinese(make_queue, photo, loaded_engine, monkeypatch):
    queue = make_queue()
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("oom@denoise*2"))
    failed = queue.wait(queue.submit(photo, "waves", owner="a", resolution="128p").id, timeout=60)
    assert failed.localized_message("en") == failed.message and "Lower the resolution" in failed.message
    assert "显存不足" in failed.localized_message("zh-CN") and "64p" in failed.localized_message("zh-CN")


def test_an_older_database_gains_the_message_key_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, params TEXT "
               "NOT NULL, image_path TEXT NOT NULL, created REAL NOT NULL, source TEXT, started REAL, finished REAL, "
               "stage TEXT, done INTEGER, total INTEGER, eta REAL, message TEXT, video_path TEXT, "
               "metadata_path TEXT, attempts INTEGER, worker TEXT)")
    db.commit()
    db.close()
    store = SQLiteJobStore(path)
    assert store.list() == []
