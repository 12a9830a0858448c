"""The video service: one validated request becomes a playable video, its record and its input picture."""

import io
import json
import os
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from image_to_video.engine import Engine
from image_to_video.errors import Cancelled, GenerationFailed, InvalidInput, ModelUnavailable, OutOfMemory
from image_to_video.faults import FaultInjector
from image_to_video.outputs import OutputFolder
from image_to_video.request import build_request
from image_to_video.service import VideoService
from image_to_video.video import probe_video


class Generator:
    """The service with its config: ``generate`` validates like every caller does, then makes the video."""

    def __init__(self, config, engine):
        self.config = config
        self.engine = engine
        self.outputs = OutputFolder(config.paths.output_dir, config.outputs)
        self.output_dir = config.paths.output_dir
        self.service = VideoService(engine, self.outputs, config.model)

    def generate(self, image, prompt, *, progress=None, cancel=None, **params):
        request = build_request(self.config, image=image, prompt=prompt, **params)
        return self.service.make_video(request, progress=progress, cancel=cancel)


@pytest.fixture
def service(small_config, loaded_engine):
    return Generator(small_config(), loaded_engine)


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
        "height": 64, "num_frames": 6, "fps": 6, "num_inference_steps": 3, "guidance_scale": 9.0, "seed": 21,
        # nothing finished after the model, nothing translated
        "continue_from": "", "segments": 1, "loop": "none", "interpolate_fps": 0, "formats": "mp4", "upscale": 1,
        "interpolate_method": "rife", "crf": 18, "prompt_en": "", "negative_prompt_en": "",
        # the picture's nearest aspect (64p is 64x64 in each), the model, no end frame
        "aspect": "4:3", "family": "i2vgen-xl", "model": "i2vgen-xl", "end_frame": False, "loras": []}
    assert record["files"] == [{"kind": "video", "format": "mp4", "name": result.video_path.name, "frames": 6,
                                "fps": 6.0, "width": 64, "height": 64}]
    assert record["fps"] == {"model": 6, "output": 6}
    folder = os.path.dirname(service.engine.model_path)  # the server's own folders: in neither file
    assert record["model"]["source"] == os.path.basename(service.engine.model_path)
    assert folder not in result.metadata_path.read_text() and folder.encode() not in result.video_path.read_bytes()
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


def test_model_not_ready_is_a_clear_message(small_config, demo_dir, photo):
    config = small_config()
    engine = Engine(config.model, config.model_path, config.paths.models_dir)
    with pytest.raises(ModelUnavailable, match="not ready yet"):
        Generator(config, engine).generate(photo, "waves")


def test_a_cancelled_job_leaves_nothing(service, photo):
    cancel = threading.Event()

    def progress(report):
        if report.stage == "denoising" and report.done == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        service.generate(photo, "waves", num_inference_steps=10, progress=progress, cancel=cancel)
    assert not service.output_dir.exists() or not list(service.output_dir.iterdir())


def test_out_of_memory_twice_names_what_to_lower(small_config, loaded_engine, photo, monkeypatch):
    service = Generator(small_config(), loaded_engine)
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("oom@denoise*2"))
    with pytest.raises(OutOfMemory) as error:
        service.generate(photo, "waves", resolution="128p", num_frames=6)
    message = str(error.value)
    assert "ran out of memory at 128p with 6 frames" in message
    assert "Lower the resolution to 64p (about 75% less memory)" in message
    assert "ready for the next video" in message
    assert service.generate(photo, "waves", num_frames=2).video_path.is_file()  # the next job works


def test_out_of_memory_at_the_smallest_size_suggests_fewer_frames(small_config, loaded_engine, photo, monkeypatch):
    service = Generator(small_config(), loaded_engine)
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("oom@decode*2"))
    with pytest.raises(OutOfMemory, match="Lower the frames from 8 to 4"):
        service.generate(photo, "waves", resolution="64p", num_frames=8)


def test_out_of_memory_once_is_retried_in_low_memory_mode(small_config, loaded_engine, photo, monkeypatch):
    service = Generator(small_config(), loaded_engine)
    monkeypatch.setattr(loaded_engine, "faults", FaultInjector("oom@decode*1"))
    result = service.generate(photo, "waves", num_frames=4)
    assert probe_video(result.video_path).frames == 4
    assert result.metadata["timings_s"]["low_memory_retry"] == 1.0


def test_a_full_disk_refuses_the_job_before_the_gpu_runs(small_config, loaded_engine, photo):
    service = Generator(small_config(**{"outputs.min_free_gb": 1e9}), loaded_engine)
    with pytest.raises(GenerationFailed, match="GB of disk is free.*Delete old videos"):
        service.generate(photo, "waves")


def test_a_finished_video_is_found_by_name_with_its_companions(service, photo):
    result = service.generate(photo, "waves", num_frames=2, seed=9)
    record = service.outputs.find(result.video_path.name)
    assert record["parameters"]["seed"] == 9
    assert (record["image_path"], record["record_path"]) == (str(result.image_path), str(result.metadata_path))
    assert service.outputs.history()[0]["video"] == result.video_path.name


def test_png_frames_are_the_models_own_frames_when_nothing_else_was_asked(service, photo, monkeypatch):
    made, generate, stages = [], service.engine.generate, []

    def keep_the_models_frames(request, **kwargs):
        result = generate(request, **kwargs)
        made.append(np.array(result.frames))
        return result

    monkeypatch.setattr(service.engine, "generate", keep_the_models_frames)
    result = service.generate(photo, "waves", num_frames=6, fps=6, seed=5, formats="png",
                              progress=lambda report: stages.append(report.stage))
    frames = result.video_path.with_name(result.video_path.stem + "_frames.zip")
    with zipfile.ZipFile(frames) as archive:
        names = archive.namelist()
        assert names == [f"frame_{number:05d}.png" for number in range(1, 7)]
        pictures = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(name)))) for name in names])
    assert len(made) == 1 and pictures.shape == made[0].shape == (6, 64, 64, 3)
    assert np.array_equal(pictures, made[0])  # exactly the model's frames, first to last
    assert probe_video(result.video_path).frames == 6
    assert "png" in stages and "png" in result.metadata["timings_s"]
    assert result.metadata["files"][-1] == {"kind": "png", "format": "png", "name": frames.name, "frames": 6,
                                            "fps": 6.0, "width": 64, "height": 64}
    assert list(service.output_dir.glob(".*")) == []  # no temporary zip left
    assert service.outputs.delete(result.video_path.name) and not frames.exists()


def test_png_frames_that_cannot_be_written_keep_the_video_and_say_so(service, photo, monkeypatch):
    def disk_full(archive, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    result = service.generate(photo, "waves", num_frames=4, formats="gif,png")
    frames = result.video_path.with_name(result.video_path.stem + "_frames.zip")
    assert probe_video(result.video_path).frames == 4 and result.video_path.with_suffix(".gif").is_file()
    assert not frames.exists() and list(service.output_dir.glob(".*")) == []
    assert [entry["name"] for entry in result.metadata["not_made"]] == [frames.name]
    assert "png" not in {entry["kind"] for entry in result.metadata["files"]}
    assert str(result.note).startswith(f"The video is done, but {frames.name} could not be made")
    assert "No space left on device" in str(result.note)


def test_a_fault_before_the_commit_leaves_no_video_and_start_up_clears_the_rest(small_config, loaded_engine, photo):
    """The video's rename is the last step: a failure (or a kill) before it never leaves an MP4
    without its record; what it leaves is cleared when the app starts."""
    config = small_config()
    outputs = OutputFolder(config.paths.output_dir, config.outputs)
    service = VideoService(loaded_engine, outputs, config.model, faults=FaultInjector("fatal@commit*1"))
    request = build_request(config, image=photo, prompt="waves", num_frames=2, num_inference_steps=1)
    with pytest.raises(RuntimeError, match="injected"):
        service.make_video(request)
    assert not list(config.paths.output_dir.glob("*.mp4"))
    outputs.clean_temporary_files()
    assert sorted(p.name for p in config.paths.output_dir.iterdir()) == []
    result = service.make_video(request)  # the fault is spent: the next one is whole
    assert result.video_path.is_file() and result.metadata_path.is_file() and result.image_path.is_file()


def test_retention_never_removes_the_video_just_made(small_config, loaded_engine, photo):
    """Only one video fits; the other one has a future mtime (a clock set back, a copied file)."""
    config = small_config(**{"outputs.max_total_gb": 1e-9})
    outputs = OutputFolder(config.paths.output_dir, config.outputs)
    older = outputs.files("video_20200101_000000_0a0a0a0a")
    config.paths.output_dir.mkdir(parents=True, exist_ok=True)
    older.video.write_bytes(b"\0" * 1000)
    future = time.time() + 86400
    os.utime(older.video, (future, future))
    service = VideoService(loaded_engine, outputs, config.model)
    result = service.make_video(build_request(config, image=photo, prompt="waves", num_frames=2,
                                              num_inference_steps=1))
    assert result.video_path.is_file() and result.metadata_path.is_file()
    assert not older.video.exists()


def test_after_one_job_the_estimate_is_within_30_percent_of_the_next_jobs_time(small_config, loaded_engine,
                                                                                 photo, tmp_path):
    # Issue 24 (4): the estimate learns the seconds per step measured on this machine (no fixed figure).
    from image_to_video.estimates import LearnedTimes, estimate, machine_key, plan_of

    config = small_config()
    outputs = OutputFolder(config.paths.output_dir, config.outputs)
    settings = dict(num_frames=8, fps=8, num_inference_steps=12, formats="gif", seed=3)
    request = build_request(config, image=photo, prompt="a boat", **settings)
    key = machine_key(request.model, demo=loaded_engine.status.is_demo, gpu_name=loaded_engine.gpu_name)
    plan = plan_of(request.width, request.height, 8, 12, fps=8, formats="gif")
    # A process's first call at new shapes warms kernels up (the server does so at start): not a job's time.
    VideoService(loaded_engine, outputs, config.model).make_video(request)

    def one_try(number: int) -> tuple[float, float]:
        """A fresh table, one job learned, then the estimate and the time the following job takes."""
        learned = LearnedTimes(tmp_path / f"learned-{number}.json")
        service = VideoService(loaded_engine, outputs, config.model, learned=learned)
        service.make_video(build_request(config, image=photo, prompt="a boat", **settings))
        guess = estimate(64, 8, 12, gpu_gb=None, demo=True, plan=plan, learned=learned, key=key)
        assert learned.jobs(key) == 1 and guess.learned_jobs == 1
        started = time.perf_counter()
        service.make_video(build_request(config, image=photo, prompt="a boat", **settings))
        return guess.seconds, time.perf_counter() - started

    # A shared 2-core machine (the other test process) can slow one job of a pair: a few tries, each after
    # exactly one job; one within 30% shows the estimate follows this machine, where the fixed figure is off.
    tries = []
    for number in range(3):
        tries.append(one_try(number))
        if abs(tries[-1][0] - tries[-1][1]) <= 0.3 * tries[-1][1]:
            break
    else:
        pytest.fail(f"(estimate, took) of each try: {tries}")
    fixed = estimate(64, 8, 12, gpu_gb=None, demo=True, plan=plan).seconds
    assert abs(fixed - tries[-1][1]) > 0.3 * tries[-1][1], "the fixed figure was already right: nothing learned"


def test_the_finishing_steps_report_the_frames_they_have_done(service, photo):
    # Issue 24 (4): no "0/1 · 0%" for minutes: encoding, GIF and WebM count frames through the writer.
    seen = []
    result = service.generate(photo, "a boat", num_frames=6, fps=6, formats="gif,webm", crf=30,
                              progress=seen.append)
    for stage in ("encoding", "gif", "webm"):
        counts = [(p.done, p.total) for p in seen if p.stage == stage]
        assert (6, 6) in counts, (stage, counts)
    assert result.metadata["parameters"]["crf"] == 30


def test_a_chinese_prompt_without_a_translator_is_recorded_and_said_untranslated(service, photo):
    # Issue 24 (8): the result and the record say the prompt went to the model untranslated.
    from image_to_video.ui.views import result_text

    result = service.generate(photo, "一只猫在草地上奔跑", num_frames=6, fps=6)
    assert result.metadata["untranslated"] == ["prompt"]
    assert result.note is not None and result.note.key == "msg_untranslated"
    record = json.loads(result.metadata_path.read_text())
    assert record["untranslated"] == ["prompt"]
    shown = {"record_path": str(result.metadata_path), **record}
    assert "untranslated" in result_text(shown, "en") and "未经翻译" in result_text(shown, "zh-CN")
    english = service.generate(photo, "a cat runs", num_frames=6, fps=6)
    assert "untranslated" not in english.metadata and english.note is None
