"""Jobs from end to end in this process: the store, the queue that takes them in and the worker that
runs them on the session's demo engine, wired as app.build does (``make_queue`` in conftest.py). What
each of them does on its own is tested in test_job_store.py, test_job_queue.py and test_worker.py."""

from pathlib import Path

from PIL import Image

from image_to_video.faults import FaultInjector
from image_to_video.job_store import DONE, FAILED, QUEUED, RUNNING
from image_to_video.video import probe_video

from .helpers import wait_for


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


def test_out_of_memory_is_recovered_in_process_and_the_next_job_succeeds(make_queue, photo, loaded_engine,
                                                                        monkeypatch):
    queue = make_queue()
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("oom@denoise*2"))
    failed = queue.wait(queue.submit(photo, "waves", owner="a", resolution="128p").id, timeout=60)
    assert failed.state == FAILED and "Lower the resolution to 64p" in failed.message
    ok = queue.wait(queue.submit(photo, "waves", owner="a").id, timeout=60)
    assert ok.state == DONE


def test_a_failed_jobs_message_can_be_shown_in_chinese(make_queue, photo, loaded_engine, monkeypatch):
    queue = make_queue()
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("oom@denoise*2"))
    failed = queue.wait(queue.submit(photo, "waves", owner="a", resolution="128p").id, timeout=60)
    assert failed.localized_message("en") == failed.message and "Lower the resolution" in failed.message
    assert "显存不足" in failed.localized_message("zh-CN") and "64p" in failed.localized_message("zh-CN")


def test_a_done_jobs_input_picture_is_deleted_and_its_copy_stays_beside_the_video(make_queue, photo):
    queue = make_queue()
    job = queue.submit(photo, "waves", owner="a", num_frames=2)
    done = queue.wait(job.id, timeout=60)
    assert done.state == DONE
    # The worker removes it once the job is recorded done, a moment after the follower is woken.
    assert wait_for(lambda: not Path(job.image_path).exists(), timeout=30)
    copy = Path(done.video_path).with_name(Path(done.video_path).stem + "_input.png")
    assert Image.open(copy).size == (64, 64)
