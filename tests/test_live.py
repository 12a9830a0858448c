"""The in-memory board of running jobs: cancel switches, progress, previews, and waking followers."""

import threading
import time

import numpy as np

from image_to_video.live import LiveJobs
from image_to_video.progress import Progress


def test_a_shutdown_does_not_requeue_a_job_its_owner_cancelled():
    live = LiveJobs()
    running = live.start("a")
    assert live.cancel("a")
    assert not live.requeue_unless_cancelled("a")
    assert running.cancel.is_set() and not running.requeue  # stays cancelled: it does not run again


def test_an_owners_cancel_after_a_shutdown_keeps_the_job_requeued():
    live = LiveJobs()
    running = live.start("a")
    assert live.requeue_unless_cancelled("a")
    live.cancel("a")
    assert running.cancel.is_set() and running.requeue


def test_jobs_not_running_here_cannot_be_cancelled_or_reported():
    live = LiveJobs()
    assert not live.cancel("nope") and not live.requeue_unless_cancelled("nope")
    live.report("nope", Progress("denoising", 1, 5, 0.1, 0.4))
    assert live.get("nope") is None and live.ids() == []


def test_progress_and_the_latest_preview_are_kept_until_the_job_finishes():
    live = LiveJobs()
    live.start("a")
    strip = np.zeros((4, 16, 3), dtype=np.uint8)
    live.report("a", Progress("denoising", 5, 50, 1.0, 9.0, preview=strip))
    live.report("a", Progress("denoising", 6, 50, 1.2, 8.8))
    running = live.get("a")
    assert running.progress.done == 6 and running.preview is strip  # a step without a preview keeps the last
    live.finish("a")
    assert live.get("a") is None


def test_a_waiter_wakes_at_the_change_not_at_its_timeout():
    live = LiveJobs()
    live.start("a")
    version = live.version
    timer = threading.Timer(0.2, lambda: live.report("a", Progress("denoising", 1, 5, 0.1, 0.4)))
    timer.start()
    began = time.monotonic()
    assert live.wait_for_change(version, timeout=30) != version
    assert time.monotonic() - began < 10
    timer.join()


def test_waiting_until_idle_ends_when_the_last_job_finishes():
    live = LiveJobs()
    live.start("a")
    assert not live.wait_until_idle(0.05)  # still running: the wait times out
    timer = threading.Timer(0.2, live.finish, args=("a",))
    timer.start()
    began = time.monotonic()
    assert live.wait_until_idle(30) and time.monotonic() - began < 10
    timer.join()
