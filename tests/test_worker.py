"""The worker (worker.py): it recovers what a crash left, shuts down within its grace, asks for a
restart after a fatal GPU error and outlives a store it cannot reach or a job it cannot record."""

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from image_to_video import finishing
from image_to_video.errors import ModelUnavailable
from image_to_video.faults import FaultInjector
from image_to_video.job_store import DONE, FAILED, INTERRUPTED, QUEUED, RUNNING
from image_to_video.processes import this_worker
from image_to_video.video import probe_video

from .helpers import Jobs, database_locked, wait_for


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


def test_a_new_start_leaves_a_live_workers_running_job_alone(make_queue, photo):
    queue = make_queue(start=False)
    alive = queue.submit(photo, "still running elsewhere", owner="a")
    dead = queue.submit(photo, "its worker is gone", owner="a")
    queue.store.claim_next(this_worker())  # claimed by a worker that is alive: this process
    queue.store.claim_next("placeholder")
    queue.store.update(dead.id, worker=f"{this_worker().rsplit(':', 2)[0]}:999999:1")
    again = make_queue()  # a second worker starts over the same store and recovers it
    assert again.get(dead.id).state == INTERRUPTED
    time.sleep(1.5)  # the new worker has looked at the queue more than once by now
    job = again.get(alive.id)
    assert job.state == RUNNING and job.worker == this_worker()


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


def test_shutdown_during_a_step_after_the_model_stops_it_at_once_and_requeues_it(make_queue, photo, monkeypatch,
                                                                                 caplog):
    # Interpolation as on a long clip: the real filter, its input let through at 1/40 of real time (30 s).
    monkeypatch.setattr(finishing, "MINTERPOLATE", "setpts=40*PTS,realtime=limit=100,setpts=PTS/40,"
                        + finishing.MINTERPOLATE)
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", interpolate_fps=24, interpolate_method="ffmpeg")
    assert wait_for(lambda: queue.get(job.id).stage == "interpolating", 60)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="image_to_video.worker"):
        queue.shutdown(grace_s=0.3)
    assert time.monotonic() - began < 3 and not queue.busy  # start_app.sh would KILL it after 20 s
    stopped = queue.get(job.id)
    assert stopped.state == QUEUED and stopped.message == "Waiting: the server restarted."
    assert f"Job {job.id} stopped for the shutdown; it is back in the queue" in caplog.text  # the log's word, kept


def test_a_gif_that_cannot_be_made_keeps_the_video_and_says_which_file_is_missing(make_queue, photo, monkeypatch):
    monkeypatch.setattr(finishing, "GIF_GRAPH", "no_such_filter")  # ffmpeg refuses the GIF
    queue = make_queue()
    job = queue.wait(queue.submit(photo, "waves", owner="a", formats="mp4,gif").id, timeout=60)
    assert job.state == DONE, job.message
    video = Path(job.video_path)
    assert probe_video(video).frames == 4  # the model's work is kept
    gif = video.with_suffix(".gif")
    assert job.message.startswith(f"The video is done, but {gif.name} could not be made") and "ffmpeg" in job.message
    record = json.loads(Path(job.metadata_path).read_text(encoding="utf-8"))
    assert [entry["name"] for entry in record["not_made"]] == [gif.name]
    assert "gif" not in {entry["kind"] for entry in record["files"]}
    assert sorted(path.name for path in video.parent.iterdir()) == sorted(
        [video.name, video.stem + ".json", video.stem + "_input.png"])  # no GIF, nor half of one


def test_shutdown_lets_a_short_job_finish(make_queue, photo):
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", num_frames=2)
    assert wait_for(lambda: queue.get(job.id).state == RUNNING)
    queue.shutdown(grace_s=60)
    assert queue.get(job.id).state == DONE


def test_a_fatal_gpu_error_fails_the_job_and_asks_for_a_restart(small_config, loaded_engine, photo, tmp_path,
                                                                monkeypatch):
    restarts = []
    queue = Jobs(small_config(), loaded_engine, tmp_path, on_fatal=lambda: restarts.append(True))
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("fatal@denoise*1"))
    queue.start()
    try:
        job = queue.wait(queue.submit(photo, "waves", owner="a").id, timeout=60)
    finally:
        queue.shutdown(grace_s=0)
    assert job.state == FAILED and "restarted itself" in job.message and restarts == [True]


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
