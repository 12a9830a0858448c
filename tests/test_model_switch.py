"""Several models on one server: a job names its model, the worker switches between jobs (unloading
first, a stage with its time), the catalogue and the workers say which model is where."""

from __future__ import annotations

import dataclasses
import os

import pytest

from image_to_video import app as composition
from image_to_video import catalogue, families
from image_to_video.config import load_config
from image_to_video.errors import InvalidInput
from image_to_video.model_switch import ModelSwitch
from image_to_video.request import build_request

from .helpers import SMALL, wait_for

WAN = "wan2.2-ti2v-5b"
#: A Wan job that is quick on the tiny demo: Wan's smallest size, its fewest frames, two steps.
WAN_JOB = {"model": WAN, "resolution": "480p", "num_frames": "5", "num_inference_steps": "2"}


def offering(tmp_path, demo_dir, offer: str, **extra):
    """A served config offering ``offer`` as demos: I2VGen-XL's the session's, Wan's built on first use."""
    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    os.symlink(demo_dir, models / demo_dir.name)
    return families.served_config(load_config(overrides={
        **SMALL, "model.demo": True, "model.device": "cpu", "model.offer": offer,
        "paths.models_dir": str(models), "paths.output_dir": str(tmp_path / "outputs"),
        "paths.log_dir": str(tmp_path / "logs"), "paths.state_dir": str(tmp_path / "data"), **extra}))


@pytest.fixture
def two_models(tmp_path, demo_dir):
    app = composition.build(offering(tmp_path, demo_dir, f"i2vgen-xl, {WAN}"))
    app.start()
    try:
        yield app
    finally:
        app.shutdown(5)
        app.lock.release()


def test_a_server_offers_every_model_by_default_and_refuses_one_it_does_not(tmp_path, demo_dir, photo):
    config = offering(tmp_path, demo_dir, "all")
    assert list(config.offered) == ["i2vgen-xl", "wan2.2-ti2v-5b", "wan2.2-i2v-a14b"]
    assert families.served_config(config) is config  # a second call changes nothing
    only = offering(tmp_path / "other", demo_dir, "i2vgen-xl")
    with pytest.raises(InvalidInput) as refused:  # refused as the request is checked, before any model loads
        build_request(only, image=photo, prompt="waves", model=WAN)
    assert "does not offer the model 'wan2.2-ti2v-5b'" in str(refused.value) and "i2vgen-xl" in str(refused.value)
    assert build_request(config, image=photo, prompt="waves", model=" Wan2.2-TI2V-5B ", num_frames=5).model == WAN


def test_one_worker_switches_models_between_jobs_and_back(two_models, photo):
    app = two_models
    assert isinstance(app.engine, ModelSwitch)
    wait_for(lambda: app.engine.ready, timeout=120)
    landscape = photo.resize((480, 270))
    wan_job = app.queue.submit(landscape, "the waves roll in slowly", owner="t", **WAN_JOB)
    wait_for(lambda: app.queue.get(wan_job.id).state in ("done", "failed"), timeout=240)
    done = app.queue.get(wan_job.id)
    assert done.state == "done", done.message
    assert (done.params["model"], done.params["family"]) == (WAN, "wan")
    assert done.params["width"] > done.params["height"]  # a landscape picture, a landscape video
    record = app.outputs.find(os.path.basename(done.video_path))
    assert record["timings_s"]["model_switch"] > 0  # the switch is a stage of the job, with its time
    (worker,) = app.board.list()
    assert worker["model"] == WAN
    states = {entry["name"]: entry["state"] for entry in catalogue.model_list(app.config, [app.engine])}
    assert states == {"i2vgen-xl": "on_disk", WAN: "ready"}

    back = app.queue.submit(photo, "a cat runs on the grass", owner="t", num_frames="8", num_inference_steps="2")
    wait_for(lambda: app.queue.get(back.id).state in ("done", "failed"), timeout=240)
    done = app.queue.get(back.id)
    assert done.state == "done", done.message
    assert done.params["model"] == "i2vgen-xl" and app.board.list()[0]["model"] == "i2vgen-xl"


def test_a_model_that_cannot_load_fails_its_job_and_the_worker_goes_on(tmp_path, demo_dir, photo):
    config = offering(tmp_path, demo_dir, f"i2vgen-xl, {WAN}")
    broken = config.offered[WAN]
    # Its folder holds a model_index.json and nothing else: loading fails, as a half-copied model would.
    folder = tmp_path / "broken-wan"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "WanImageToVideoPipeline"}')
    broken = dataclasses.replace(broken, model=dataclasses.replace(broken.model, demo=False, source=str(folder)))
    config = dataclasses.replace(config, offered={**config.offered, WAN: broken})
    app = composition.build(config)
    app.start()
    try:
        wait_for(lambda: app.engine.ready, timeout=120)
        failed = app.queue.submit(photo, "waves", owner="t", **WAN_JOB)
        wait_for(lambda: app.queue.get(failed.id).state in ("done", "failed"), timeout=120)
        job = app.queue.get(failed.id)
        assert job.state == "failed" and "Wan2.2-TI2V-5B" in job.message, job.message
        listed = {entry["name"]: entry for entry in catalogue.model_list(app.config, [app.engine])}
        assert listed[WAN]["state"] == "error" and listed[WAN]["message"]
        after = app.queue.submit(photo, "a cat", owner="t", num_frames="8", num_inference_steps="2")
        wait_for(lambda: app.queue.get(after.id).state in ("done", "failed"), timeout=120)
        assert app.queue.get(after.id).state == "done", app.queue.get(after.id).message
    finally:
        app.shutdown(5)
        app.lock.release()
