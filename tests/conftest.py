"""Shared fixtures: every test's state lives in a temp dir; one tiny model per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from image_to_video.config import load_config
from image_to_video.demo_model import build_demo_model

from .app_process import AppProcess
from .app_process import free_port as loopback_port

# Small limits so the real pipeline runs in seconds on two CPU cores.
SMALL = {
    "generation.resolutions": {"64p": 64, "128p": 128, "512p": 512},
    "generation.defaults.resolution": "64p",
    "generation.defaults.num_frames": 4,
    "generation.defaults.num_inference_steps": 3,
    "generation.num_frames": {"min": 2, "max": 32},
    "generation.num_inference_steps": {"min": 1, "max": 100},
    "generation.presets": {"Tiny": {"resolution": "64p", "num_frames": 4, "fps": 8,
                                    "num_inference_steps": 3, "guidance_scale": 9.0}},
}


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """No test reads the developer's I2V_* variables or reaches a model hub."""
    import os

    for name in list(os.environ):
        if name.startswith("I2V_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo model, built once, as ``save_pretrained`` wrote it."""
    return build_demo_model(tmp_path_factory.mktemp("models") / "demo-i2vgen-xl-tiny")


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
    """Start `python main.py --demo` processes on free ports; all are stopped afterwards."""
    started = []

    def make(*args, env=None, host="127.0.0.1", root=None, port=None):
        app = AppProcess(root or tmp_path, port or loopback_port(), *args, env=env, host=host)
        started.append(app)
        return app

    yield make
    for app in started:
        app.stop()
