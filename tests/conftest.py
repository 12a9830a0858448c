"""Shared fixtures: every test's state lives in a temp dir; one tiny model per session. (The plain
helpers several test files use are in helpers.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from image_to_video.config import load_config
from image_to_video.families.i2vgen_xl.demo import build_demo_model

from .app_process import AppProcess
from .app_process import free_port as loopback_port
from .helpers import SMALL, Jobs, Parts, build_tiny_marian


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """No test reads the developer's I2V_* variables or reaches a model hub."""
    for name in list(os.environ):
        if name.startswith("I2V_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo model, built once, as ``save_pretrained`` wrote it."""
    return build_demo_model(tmp_path_factory.mktemp("models") / "demo-i2vgen-xl-tiny")


@pytest.fixture(scope="session", autouse=True)
def _servers_share_the_demo_model(demo_dir):
    """Every server a test starts loads the session's one demo model instead of building its own."""
    from . import app_process

    app_process.SHARED_MODELS_DIR = demo_dir.parent
    yield
    app_process.SHARED_MODELS_DIR = None


#: The test files that take longest (CI's log lists the slowest tests), started first: with the suite spread
#: over two processes (tests/run.sh), a long file started last would run on alone at the end.
LONGEST_FIRST = ("test_start_app.py", "test_browser.py", "test_api.py", "test_ray_backend.py", "test_speedups.py",
                 "test_performance.py", "test_hostile.py", "test_ui.py", "test_wan.py", "test_loras.py",
                 "test_model_switch.py", "test_rife.py")


def pytest_collection_modifyitems(session, config, items):
    """The longest files first, the rest in their usual order (the same order in every process)."""
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="module")
def wan_5b(tmp_path_factory):
    """A tiny random Wan2.2-TI2V-5B folder (diffusers' dummy shapes), saved with ``save_pretrained``."""
    from image_to_video.families.wan import demo

    return demo.build_demo_model(tmp_path_factory.mktemp("wan") / "ti2v-5b", "ti2v-5b")


@pytest.fixture(scope="module")
def wan_a14b(tmp_path_factory):
    """The same for Wan2.2-I2V-A14B's two-expert layout."""
    from image_to_video.families.wan import demo

    return demo.build_demo_model(tmp_path_factory.mktemp("wan") / "i2v-a14b", "i2v-a14b")


@pytest.fixture
def small_config(tmp_path, demo_dir):
    """A config with small sizes, pointing at the session's demo model and temp folders."""
    def make(**extra):
        overrides = {
            **SMALL,
            "model.source": str(demo_dir),
            "paths.output_dir": str(tmp_path / "outputs"),
            "paths.models_dir": str(tmp_path / "models"),
            "paths.log_dir": str(tmp_path / "logs"),
            "paths.state_dir": str(tmp_path / "data"),  # the job database and the folder lock too
            **extra,
        }
        return load_config(overrides=overrides)
    return make


@pytest.fixture(scope="session")
def loaded_engine(demo_dir):
    """An engine with the demo model loaded through the real loading code."""
    from image_to_video.config import ModelSettings
    from image_to_video.engine import Engine

    engine = Engine(ModelSettings(source=str(demo_dir), device="cpu"), str(demo_dir), demo_dir.parent,
                    resolutions=SMALL["generation.resolutions"])
    engine.load()
    assert engine.ready, engine.status.message
    return engine


@pytest.fixture
def photo() -> Image.Image:
    """A 320x240 picture with structure in it (not a flat colour)."""
    image = Image.new("RGB", (320, 240))
    image.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(240) for x in range(320)])
    return image


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on right now."""
    return loopback_port()


@pytest.fixture
def app_process(tmp_path):
    """Start `python main.py --demo` processes (``demo=False``: without --demo) on free ports; all are
    stopped afterwards."""
    started = []

    def make(*args, env=None, host="127.0.0.1", root=None, port=None, demo=True):
        app = AppProcess(root or tmp_path, port or loopback_port(), *args, env=env, host=host, demo=demo)
        started.append(app)
        return app

    yield make
    for app in started:
        app.stop()


@pytest.fixture
def make_queue(small_config, loaded_engine, tmp_path):
    """Make a job queue with its worker (``helpers.Jobs``) on the session's engine; all are shut down afterwards."""
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


@pytest.fixture
def parts(small_config, loaded_engine, tmp_path):
    """Make ``helpers.Parts`` (a store that gives up on a lock after 0.2 s), optionally with another
    ``make_video``; each queue is closed and each worker stopped afterwards."""
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
    from image_to_video.app import build

    apps = []

    def make(**overrides):
        apps.append(build(small_config(**{"paths.state_dir": str(tmp_path / "data"), **overrides})))
        return apps[-1]

    yield make
    for app in apps:
        app.lock.release()


@pytest.fixture
def offload_on_the_cpu(monkeypatch):
    """Lets accelerate's offload hooks run with the CPU standing in for the GPU."""
    import accelerate.hooks

    move = accelerate.hooks.set_module_tensor_to_device
    # diffusers names the execution device "cpu:0"; a weight on "cpu" is then copied to it and loses its
    # Parameter type. On a GPU, "cuda:0" is the very device the weight is on and nothing is copied.
    monkeypatch.setattr(accelerate.hooks, "set_module_tensor_to_device", lambda module, name, device, *args, **kw:
                        move(module, name, "cpu" if str(device) == "cpu:0" else device, *args, **kw))


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    """A tiny random MarianMT translator (``helpers.build_tiny_marian``), built once per test module."""
    return build_tiny_marian(tmp_path_factory)
