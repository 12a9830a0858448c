"""Torch's CPU threads chosen on purpose: model.cpu_threads and model.cpu_wait_policy."""

import subprocess
import sys

import pytest

from image_to_video import cpu_threads
from image_to_video.config import PROJECT_DIR, load_config
from image_to_video.errors import ConfigError


@pytest.mark.parametrize(("setting", "workers", "cores", "env", "threads"), [
    ("auto", 1, 2, {}, 2),                        # every core of the machine
    ("auto", 2, 2, {}, 1),                        # two workers share two cores
    ("auto", 3, 2, {}, 1),                        # never fewer than one each
    ("auto", 2, 16, {}, 8),
    ("auto", 1, 8, {"OMP_NUM_THREADS": "3"}, 3),  # whoever set OMP_NUM_THREADS meant it
    ("auto", 1, 8, {"OMP_NUM_THREADS": "many"}, 8),
    ("auto", 1, 8, {"OMP_NUM_THREADS": "0"}, 8),
    ("1", 1, 8, {"OMP_NUM_THREADS": "4"}, 1),     # a number in the config wins
    ("6", 2, 2, {}, 3),                           # the machine's threads, shared by its workers
])
def test_the_threads_each_worker_gets(setting, workers, cores, env, threads):
    assert cpu_threads.plan(setting, workers=workers, cores=cores, env=env).threads == threads


def test_the_plan_says_where_its_number_came_from():
    assert "2 core" in cpu_threads.plan("auto", cores=2, env={}).why
    assert "OMP_NUM_THREADS=3" in cpu_threads.plan("auto", cores=2, env={"OMP_NUM_THREADS": "3"}).why
    assert "shared by 2 workers" in cpu_threads.plan("4", workers=2, cores=2, env={}).why


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("model.cpu_threads", "0", "auto or a whole number from 1 to 1024"),
    ("model.cpu_threads", "-2", "auto or a whole number from 1 to 1024"),
    ("model.cpu_threads", "lots", "auto or a whole number from 1 to 1024"),
    ("model.cpu_threads", "2000", "auto or a whole number from 1 to 1024"),
    ("model.cpu_wait_policy", "sleepy", "passive, active, default"),
])
def test_a_bad_setting_is_refused_naming_it_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as error:
        load_config(env={}, overrides={key: value})
    assert key in str(error.value) and value in str(error.value) and allowed in str(error.value)


def test_the_wait_policy_goes_into_the_environment_unless_already_set():
    env = {}
    assert cpu_threads.prepare_environment("passive", env) == "passive" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert cpu_threads.prepare_environment("passive", mine) == "active" and mine == {"OMP_WAIT_POLICY": "ACTIVE"}
    untouched = {}
    assert cpu_threads.prepare_environment("default", untouched) == "default" and untouched == {}


def test_the_command_line_sets_the_wait_policy_before_torch_loads(monkeypatch):
    """The wait policy only counts when it is in the environment before torch is imported: the command
    line reads the config without importing torch, then sets it."""
    script = ("import sys; from image_to_video import cli; cli.parse_config(['--demo']);"
              "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "False"


def test_each_spawned_worker_gets_its_share_of_the_threads_and_the_wait_policy(small_config, monkeypatch):
    from image_to_video.app import worker_channels
    from image_to_video.remote_engine import RemoteEngine

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what the command line sets before torch loads
    config = small_config(**{"jobs.workers": "2", "model.cpu_threads": "2", "model.device": "cpu"})
    engines = [RemoteEngine(channel, name=channel.name) for channel in worker_channels(config, "serve")]
    try:
        described = [engine.describe() for engine in engines]
    finally:
        for engine in engines:
            engine.close()
    assert len({d["pid"] for d in described}) == 2
    assert [(d["cpu_threads"], d["cpu_wait_policy"]) for d in described] == [(1, "passive"), (1, "passive")]


def test_a_server_takes_the_apps_own_setting_not_the_test_runners(app_process, monkeypatch):
    """tests/run.sh gives the test process one thread; a server it starts uses model.cpu_threads (auto:
    every core) and says so in its log."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    server = app_process().start()
    cores = cpu_threads.machine_cores()
    assert f"CPU threads for this process: {cores} (auto: {cores} core(s)); OpenMP wait policy: passive" in server.log()
