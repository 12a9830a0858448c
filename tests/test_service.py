import io
import json
import threading
import time

import pytest
from PIL import Image

from image_to_video.engine import Engine
from image_to_video.errors import Cancelled, InvalidInput, ModelUnavailable
from image_to_video.service import VideoService
from image_to_video.video import probe_video


@pytest.fixture
def service(small_config, loaded_engine):
    return VideoService(small_config(), loaded_engine)


def test_a_job_writes_a_playable_video_its_record_and_its_input(service, photo):
    result = service.generate(photo, "the waves roll in slowly", num_frames=6, fps=6, seed=21)
    info = probe_video(result.video_path)
    assert (info.frames, info.fps, info.width, info.height) == (6, 6.0, 64, 64)
    assert (info.codec, info.pixel_format) == ("h264", "yuv420p")
    assert result.video_path.parent == service.output_dir
    assert result.image_path.is_file() and Image.open(result.image_path).size == (64, 64)

    record = json.loads(result.metadata_path.read_text())
    assert record["video"] == result.video_path.name
    assert record["parameters"] == {
        "prompt": "the waves roll in slowly", "negative_prompt": "", "resolution": "64p", "width": 64,
        "height": 64, "num_frames": 6, "fps": 6, "num_inference_steps": 3, "guidance_scale": 9.0, "seed": 21}
    assert record["model"]["source"] == service.engine.model_path
    assert {"torch", "diffusers", "transformers", "python"} <= set(record["versions"])
    assert {"denoise", "decode", "encode", "total"} == set(record["timings_s"])
    assert record["video_info"]["duration_s"] == 1.0
    assert record["peak_process_memory_gb"] > 0
    assert list(service.output_dir.glob(".*")) == []  # no temporary files left


def test_recorded_parameters_reproduce_the_video(service, photo):
    first = service.generate(photo, "waves", seed=-1)
    params = json.loads(first.metadata_path.read_text())["parameters"]
    for key in ("width", "height"):
        params.pop(key)
    prompt = params.pop("prompt")
    again = service.generate(Image.open(first.image_path), prompt, **params)
    assert again.seed == first.seed
    assert _frames(again.video_path) == _frames(first.video_path)


def _frames(path) -> list[bytes]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    return list(reader)


def test_two_jobs_in_the_same_second_do_not_collide(service, photo):
    a = service.generate(photo, "waves", num_frames=2, num_inference_steps=1)
    b = service.generate(photo, "waves", num_frames=2, num_inference_steps=1)
    assert a.video_path != b.video_path and a.video_path.is_file() and b.video_path.is_file()


def test_bad_input_changes_nothing(service, photo):
    with pytest.raises(InvalidInput, match="not an image"):
        service.generate(io.BytesIO(b"text").getvalue(), "waves")
    with pytest.raises(InvalidInput, match="Frames 99"):
        service.generate(photo, "waves", num_frames=99)
    assert not service.output_dir.exists() or not list(service.output_dir.iterdir())


def test_one_job_per_user_at_a_time_and_cancel_reaches_the_right_one(service, photo):
    started, release = threading.Event(), threading.Event()
    outcome = {}

    def progress(report):
        if report.stage == "denoising" and report.done == 1:
            started.set()
            release.wait(10)

    def run():
        try:
            service.generate(photo, "waves", owner="alice", num_inference_steps=10, progress=progress)
        except Cancelled as error:
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(30)
    with pytest.raises(InvalidInput, match="already being made"):
        service.generate(photo, "waves", owner="alice")
    assert not service.cancel("bob")  # bob has nothing running; alice's job is untouched
    assert service.cancel("alice")
    release.set()
    worker.join(30)
    assert isinstance(outcome.get("error"), Cancelled)
    assert not service.output_dir.exists() or not list(service.output_dir.glob("*.mp4"))
    # After the cancel alice can start again.
    assert service.generate(photo, "waves", owner="alice", num_frames=2).video_path.is_file()


def test_history_lists_newest_first_and_skips_damaged_records(service, photo):
    first = service.generate(photo, "first", num_frames=2)
    second = service.generate(photo, "second", num_frames=2)
    (service.output_dir / "video_99999999_999999_deadbeef.json").write_text("{broken")
    history = service.history()
    prompts = [entry["parameters"]["prompt"] for entry in history]
    assert sorted(prompts) == ["first", "second"]
    assert {entry["video_path"] for entry in history} == {str(first.video_path), str(second.video_path)}


def test_model_not_ready_is_a_clear_message(small_config, demo_dir, photo):
    config = small_config()
    engine = Engine(config.model, config.model_path, config.paths.models_dir)
    with pytest.raises(ModelUnavailable, match="not ready yet"):
        VideoService(config, engine).generate(photo, "waves")


def test_shutdown_refuses_new_jobs_and_cancels_a_job_that_outlasts_the_grace(service, photo):
    started = threading.Event()
    outcome = {}

    def progress(report):
        if report.stage == "denoising" and report.done >= 1:
            started.set()
            time.sleep(0.05)  # a slow GPU

    def run():
        try:
            service.generate(photo, "waves", owner="alice", num_inference_steps=100, progress=progress)
        except Cancelled as error:
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(30)
    began = time.monotonic()
    service.shutdown(grace_s=0.5)
    assert 0.5 <= time.monotonic() - began < 20
    worker.join(30)
    assert isinstance(outcome.get("error"), Cancelled) and not service.busy
    with pytest.raises(ModelUnavailable, match="shutting down"):
        service.generate(photo, "waves")


def test_shutdown_lets_a_short_job_finish(service, photo):
    results = []
    worker = threading.Thread(target=lambda: results.append(service.generate(photo, "waves", num_frames=2)))
    worker.start()
    time.sleep(0.2)
    service.shutdown(grace_s=60)
    worker.join(30)
    assert results and results[0].video_path.is_file()
