"""Process identity: a PID plus its start time tells a live process from a reused PID."""

import os
import subprocess
import sys
import time

import pytest

from image_to_video.processes import GONE, is_running, is_same_process, start_ticks, this_worker, worker_alive


def test_a_running_process_is_itself_and_a_finished_one_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ticks = start_ticks(child.pid)
        assert ticks != GONE and ticks.isdigit()
        assert is_same_process(child.pid, ticks)
        assert not is_same_process(child.pid, str(int(ticks) + 1))  # the same PID, started at another time
    finally:
        child.kill()
        child.wait()
    assert start_ticks(child.pid) == GONE and not is_same_process(child.pid, ticks)


def test_worker_ids_name_this_host_and_process():
    host, pid, ticks = this_worker().rsplit(":", 2)
    assert int(pid) == os.getpid() and ticks == start_ticks(os.getpid())
    assert worker_alive(this_worker())
    assert not worker_alive(f"{host}:{os.getpid()}:1")  # this PID, but not this process's start
    assert not worker_alive(f"{host}:999999999:1")
    assert worker_alive("another-machine:1:1")  # not ours to judge
    assert not worker_alive("garbage")


def test_a_zombie_is_not_running_though_its_pid_is_still_taken():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while is_running(child.pid) and time.monotonic() < deadline:  # exited, not yet reaped
        time.sleep(0.05)
    try:
        assert not is_running(child.pid) and start_ticks(child.pid) != GONE
    finally:
        child.wait()
    assert not is_running(child.pid) and start_ticks(child.pid) == GONE


def test_a_folder_lock_is_held_by_one_process_and_dropped_when_it_is_killed(tmp_path):
    from image_to_video.processes import FolderLock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from image_to_video.processes import FolderLock; "
         f"lock = FolderLock({str(tmp_path)!r}); assert lock.acquire(command='serve', port=7860) is None; "
         "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FolderLock(tmp_path)
        assert lock.acquire(command="serve", port=7861) == {"pid": holder.pid, "command": "serve", "port": 7860}
    finally:
        holder.kill()  # kill -9: no clean-up runs, the kernel drops the lock
        holder.wait()
    assert lock.acquire(command="serve", port=7861) is None
    assert FolderLock(tmp_path).acquire() == {"pid": os.getpid(), "command": "serve", "port": 7861}
    lock.release()


def test_a_second_server_with_its_own_data_folder_but_the_same_output_folder_is_refused(tmp_path):
    """Each start removes the output folder's half-written files: a second server writing to the same
    output folder would remove the first one's videos in progress, so it must not start."""
    from image_to_video.config import load_config
    from image_to_video.errors import AlreadyRunning
    from image_to_video.i18n import localized
    from image_to_video.processes import claim_data_folder

    def config(data: str, outputs: str = "outputs"):
        return load_config(overrides={"paths.state_dir": str(tmp_path / data),
                                      "paths.output_dir": str(tmp_path / outputs)})

    first = claim_data_folder(config("data1"), "serve")
    try:
        with pytest.raises(AlreadyRunning) as refused:
            claim_data_folder(config("data2"), "serve")
        said = str(refused.value)
        assert f"(PID {os.getpid()})" in said and f"output folder {tmp_path / 'outputs'}." in said
        assert "--output-dir" in said and "输出文件夹" in localized(refused.value, "zh-CN")
        own = claim_data_folder(config("data2", "outputs2"), "serve")  # its data folder was let go
        own.release()
    finally:
        first.release()
    again = claim_data_folder(config("data2"), "serve")  # both folders free once the first is gone
    again.release()
    same = claim_data_folder(config("one", "one"), "serve")  # one folder for both: one lock
    same.release()
