"""Jobs: the store, the queue that takes them in and the worker that runs them, wired as app.build does."""

import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from image_to_video.errors import InvalidInput, JobNotFound, ModelUnavailable, QueueFull
from image_to_video.faults import FaultInjector
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.outputs import OutputFolder
from image_to_video.processes import this_worker
from image_to_video.service import VideoService
from image_to_video.video import probe_video
from image_to_video.worker import Worker


class RecordingBoard(LiveJobs):
    """The live board, keeping every progress report the worker gives it."""

    def __init__(self):
        super().__init__()
        self.reports = []

    def report(self, job_id, progress):
        self.reports.append(progress)
        super().report(job_id, progress)


class Jobs:
    """A job queue and its worker over one store, on the session's engine; reads go to the queue."""

    def __init__(self, config, engine, folder, *, on_fatal=None):
        self.store = SQLiteJobStore(folder / "jobs.sqlite3")
        self.live = RecordingBoard()
        self.queue = JobQueue(self.store, config, live=self.live, inputs_dir=folder / "inputs")
        service = VideoService(engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
        self.worker = Worker(self.store, self.live, service.make_video, model_ready=lambda: engine.ready,
                             on_fatal=on_fatal)

    def __getattr__(self, name):
        return getattr(self.queue, name)

    def start(self):
        self.worker.start()

    def shutdown(self, grace_s):
        self.queue.close()
        self.worker.shutdown(grace_s)


@pytest.fixture
def make_queue(small_config, loaded_engine, tmp_path):
    queues = []

    def make(max_queued=20, start=True, **config):
        jobs = Jobs(small_config(**{"jobs.max_queued": max_queued, **config}), loaded_engine, tmp_path / "data")
        if start:
            jobs.start()
        queues.append(jobs)
        return jobs

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


def test_progress_is_reported_at_every_step_and_followers_see_it_advance(make_queue, photo):
    queue = make_queue()
    seen = []
    job = queue.submit(photo, "waves", owner="a", num_inference_steps=5, num_frames=4)
    queue.wait(job.id, on_update=lambda j: seen.append((j.state, j.stage, j.done, j.total)))
    reports = queue.live.reports
    assert [p.done for p in reports if p.stage == "denoising"] == [0, 1, 2, 3, 4, 5]
    assert [p.done for p in reports if p.stage == "decoding"][-1] == 4
    assert [p.stage for p in reports][-1] == "encoding"
    # What a follower saw: queued or running, never going back, then done.
    running = [(stage, done) for state, stage, done, _total in seen if state == RUNNING and stage]
    order = ("denoising", "decoding", "encoding")
    assert running == sorted(running, key=lambda s: (order.index(s[0]), s[1]))
    assert seen[-1][0] == DONE


def test_a_follower_is_woken_by_the_job_finishing_not_by_polling(make_queue, photo):
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", num_frames=2)
    began = time.monotonic()
    finished = queue.wait(job.id, poll_s=120, timeout=300)
    assert finished.state == DONE and time.monotonic() - began < 60  # far sooner than one 120 s poll


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
    queue = Jobs(small_config(), loaded_engine, tmp_path, on_fatal=lambda: restarts.append(True))
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


def test_a_done_jobs_input_picture_is_deleted_and_its_copy_stays_beside_the_video(make_queue, photo):
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", num_frames=2)
    done = queue.wait(job.id, timeout=60)
    assert done.state == DONE and not Path(job.image_path).exists()
    copy = Path(done.video_path).with_name(Path(done.video_path).stem + "_input.png")
    assert Image.open(copy).size == (64, 64)
