"""The job queue (job_queue.py): what it takes in and refuses, its bound, cancel, retry, followers,
and the input pictures it keeps; with the worker running the jobs on the session's demo engine."""

import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from image_to_video import finishing
from image_to_video.errors import GenerationFailed, InvalidInput, JobNotFound, QueueFull
from image_to_video.i18n import t
from image_to_video.job_store import CANCELLED, DONE, FAILED, QUEUED

from .helpers import wait_for


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


def ffmpeg_children() -> list[int]:
    """The ffmpeg processes this test process started that still run (or were never waited for)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if "ffmpeg" in name and int(rest[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def test_cancel_after_the_model_stops_the_interpolation_at_once(make_queue, photo, monkeypatch):
    # Interpolation as on a long clip: the real filter, its input let through at 1/40 of real time (30 s).
    monkeypatch.setattr(finishing, "MINTERPOLATE", "setpts=40*PTS,realtime=limit=100,setpts=PTS/40,"
                        + finishing.MINTERPOLATE)
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", interpolate_fps=24, formats="mp4,gif")
    assert wait_for(lambda: queue.get(job.id).stage == "interpolating", 60)  # the model is done
    began = time.monotonic()
    queue.cancel(job.id, owner="a")
    ended = queue.wait(job.id, timeout=10)
    assert ended.state == CANCELLED and time.monotonic() - began < 3, (ended.state, time.monotonic() - began)
    assert ended.message == t("err_cancelled", "en")
    assert ffmpeg_children() == []
    outputs = queue.config.paths.output_dir
    assert sorted(path.name for path in outputs.glob("*")) == []  # no video, companion or temporary file


def test_jobs_of_others_are_not_visible(make_queue, photo):
    queue = make_queue(start=False)
    job = queue.submit(photo, "waves", owner="alice")
    with pytest.raises(JobNotFound):
        queue.get(job.id, owner="bob")
    with pytest.raises(JobNotFound):
        queue.cancel(job.id, owner="bob")
    assert queue.list(owner="bob") == [] and len(queue.list(owner="alice")) == 1


def test_only_finished_jobs_can_be_retried(make_queue, photo):
    queue = make_queue(start=False)
    job = queue.submit(photo, "waves", owner="a")
    with pytest.raises(InvalidInput, match="this one is queued"):
        queue.retry(job.id)


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


def test_too_little_disk_refuses_the_job_at_submit_and_stores_nothing(built, tmp_path, photo):
    app = built(**{"outputs.min_free_gb": 10 ** 9})
    with pytest.raises(GenerationFailed) as refused:
        app.queue.submit(photo, "waves", owner="a")
    assert "GB of disk is free" in str(refused.value) and "Delete old" in str(refused.value)
    assert app.queue.list() == [] and not list((tmp_path / "data" / "inputs").glob("*"))


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


# -- the end frame (Wan2.2-I2V-A14B): stored beside the picture, or neither is ----------------------------------


def queue_for(tmp_path, family: str):
    """A queue nobody works on, for a server of ``family`` (no model is loaded: submitting only checks and stores)."""
    from image_to_video import families
    from image_to_video.config import load_config
    from image_to_video.job_queue import JobQueue
    from image_to_video.job_store import SQLiteJobStore
    from image_to_video.live import LiveJobs

    config = families.served_config(load_config(overrides={"model.family": family,
                                                           "paths.output_dir": str(tmp_path / "outputs"),
                                                           "paths.state_dir": str(tmp_path / "data")}))
    return JobQueue(SQLiteJobStore(tmp_path / "jobs.db"), config, live=LiveJobs(), inputs_dir=tmp_path / "inputs")


def test_an_end_frame_is_refused_by_i2vgen_xl_and_a_bad_one_by_a14b_and_nothing_is_stored(tmp_path, photo):
    i2vgen, a14b = queue_for(tmp_path / "i2vgen", "i2vgen-xl"), queue_for(tmp_path / "a14b", "wan2.2-i2v-a14b")
    with pytest.raises(InvalidInput, match="I2VGen-XL cannot end a video on a chosen picture"):
        i2vgen.submit(photo, "waves", owner="a", last_image=photo)
    with pytest.raises(InvalidInput, match="End frame: This file is not an image"):
        a14b.submit(photo, "waves", owner="a", num_frames=5, last_image=b"\0junk")
    for queue in (i2vgen, a14b):
        assert queue.list() == [] and not list(queue.inputs_dir.glob("*"))
    job = a14b.submit(photo, "waves", owner="a", num_frames=5, last_image=photo)
    assert sorted(p.name for p in a14b.inputs_dir.glob("*")) == [f"{job.id}.png", f"{job.id}_end.png"]


@pytest.mark.parametrize("failing", ["the end frame", "the picture"])
def test_a_submit_that_fails_while_storing_its_pictures_leaves_neither(tmp_path, photo, monkeypatch, failing):
    # Saving the end frame (or the picture: the disk filled up after check_disk) failed after the picture was
    # saved: the picture stayed in data/inputs with no job to remove it.
    queue = queue_for(tmp_path, "wan2.2-i2v-a14b")
    save = Image.Image.save

    def full_disk(image, path, *args, **kwargs):
        if str(path).endswith("_end.png") == (failing == "the end frame"):
            Path(path).write_bytes(b"\x89PNG half")  # what a write cut short leaves
            raise OSError(28, "No space left on device")
        return save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        queue.submit(photo, "waves", owner="a", num_frames=5, last_image=photo)
    assert queue.list() == [] and not list(queue.inputs_dir.glob("*"))
