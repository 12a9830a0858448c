"""The composition root (app.py): what build wires and refuses (a second process on one data folder,
a damaged job database), how many workers run where, the demo banner."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from image_to_video.app import demo_banner, worker_channels
from image_to_video.config import PROJECT_DIR
from image_to_video.errors import AlreadyRunning


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


def test_an_old_input_picture_no_job_refers_to_is_removed_at_start(built, tmp_path, photo):
    """A submit killed after it saved its picture and before its job was stored leaves a picture
    that no job refers to; the next start removes it (a recent one only once it is a few minutes old)."""
    app = built()
    job = app.queue.submit(photo, "waves", owner="a")
    app.lock.release()
    inputs = tmp_path / "data" / "inputs"
    orphan, recent = inputs / "0123456789ab.png", inputs / "ba9876543210.png"
    orphan.write_bytes(b"a picture")
    recent.write_bytes(b"a picture")
    an_hour_ago = time.time() - 3600
    for path in (orphan, Path(job.image_path)):
        os.utime(path, (an_hour_ago, an_hour_ago))
    built()
    assert sorted(path.name for path in inputs.iterdir()) == sorted([Path(job.image_path).name, recent.name])


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


def test_one_worker_runs_the_engine_in_the_server_process(small_config):
    from image_to_video import app as composition
    from image_to_video.engine import Engine

    app = composition.build(small_config(**{"model.device": "cpu"}))
    try:
        assert isinstance(app.engine, Engine) and len(app.workers) == 1
        (listed,) = app.board.list()
        assert (listed["id"], listed["pid"], listed["state"]) == ("cpu0", os.getpid(), "loading")
    finally:
        app.lock.release()


def test_generate_runs_its_one_worker_in_this_process_whatever_jobs_workers_says(small_config):
    # No child process is started for `python main.py generate`, nor for a server with one worker.
    assert worker_channels(small_config(**{"jobs.workers": 4}), "generate") is None
    assert worker_channels(small_config(**{"jobs.workers": 1}), "serve") is None


def test_the_demo_banner_is_plain_text_in_both_languages():
    english, chinese = demo_banner("en"), demo_banner("zh-CN")
    assert english.startswith("Demo mode: this is not the real model.") and "bash start_app.sh" in english
    assert chinese.startswith("演示模式") and "bash start_app.sh" in chinese
    assert not [mark for text in (english, chinese) for mark in ("**", "`") if mark in text]  # no Markdown left
