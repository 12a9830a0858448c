"""A prompt in Chinese, from submit to the video's record: translated with a tiny random Marian
model built in code (tests/helpers.py, build_tiny_marian), or warned about before the job starts."""

import json

import pytest

from image_to_video.families.i2vgen_xl.pipeline import I2VGenXL
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.outputs import OutputFolder
from image_to_video.service import VideoService
from image_to_video.translate import Translator
from image_to_video.ui import views
from image_to_video.worker import Worker

from .helpers import translation_settings as settings

CHINESE = "海浪缓缓涌来"


def queue_with(config, tmp_path, translator):
    return JobQueue(SQLiteJobStore(tmp_path / "jobs.sqlite3"), config, live=LiveJobs(), inputs_dir=tmp_path / "in",
                    outputs=OutputFolder(config.paths.output_dir, config.outputs), translator=translator)


def test_a_chinese_prompt_is_translated_the_model_reads_the_english_and_the_record_keeps_both(
        small_config, loaded_engine, marian_dir, photo, tmp_path, monkeypatch):  # noqa: F811
    config = small_config()
    translator = Translator(settings(source=str(marian_dir)), tmp_path / "models")
    translator.load()
    queue = queue_with(config, tmp_path, translator)
    job = queue.submit(photo, CHINESE, owner="a", negative_prompt="模糊", num_frames=2)
    english = job.params["prompt_en"]
    assert english and english != CHINESE and english == translator.translate(CHINESE)
    assert job.params["prompt"] == CHINESE and job.params["negative_prompt_en"]

    read = []
    encode = I2VGenXL.encode_prompt
    monkeypatch.setattr(I2VGenXL, "encode_prompt", lambda self, text: read.append(text) or encode(self, text))
    service = VideoService(loaded_engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
    worker = Worker(queue.store, queue.live, service.make_video, model_ready=lambda: True)
    worker.start()
    try:
        done = queue.wait(job.id, timeout=120)
    finally:
        worker.shutdown(0)
    assert done.state == "done", done.message
    assert read[:2] == [english, job.params["negative_prompt_en"]]  # never the Chinese text
    record = json.loads(open(done.metadata_path, encoding="utf-8").read())
    assert record["parameters"]["prompt"] == CHINESE and record["parameters"]["prompt_en"] == english
    assert english in views.result_text({**record, "record_path": done.metadata_path}, "en")


def test_english_prompts_are_not_translated(small_config, marian_dir, photo, tmp_path):  # noqa: F811
    translator = Translator(settings(source=str(marian_dir)), tmp_path / "models")
    job = queue_with(small_config(), tmp_path, translator).submit(photo, "the waves roll in", owner="a")
    assert job.params["prompt_en"] == ""


def test_without_a_translator_the_page_says_so_before_the_job_and_the_job_still_runs(small_config, photo, tmp_path):
    translator = Translator(settings(source=str(tmp_path / "no-such-folder")), tmp_path / "models")
    translator.load()
    queue = queue_with(small_config(), tmp_path, translator)
    note_en = views.prompt_note(CHINESE, queue.translation_status(), "en")
    note_zh = views.prompt_note(CHINESE, queue.translation_status(), "zh-CN")
    assert "English" in note_en and "英文" in note_zh
    assert views.prompt_note("the waves roll in", queue.translation_status(), "en") == ""
    job = queue.submit(photo, CHINESE, owner="a")
    assert job.params["prompt"] == CHINESE and job.params["prompt_en"] == ""


def test_while_the_translator_loads_a_chinese_prompt_is_refused_with_try_again(small_config, marian_dir, photo,
                                                                              tmp_path, monkeypatch):  # noqa: F811
    """The real translator held inside its real load (MarianMTModel.from_pretrained waits at a gate): a Chinese
    prompt is refused saying to try again; once the gate opens and the load ends, the same prompt is taken."""
    import threading

    from transformers import MarianMTModel

    from image_to_video.errors import ModelUnavailable
    from image_to_video.translate import LOADING, READY

    entered, gate = threading.Event(), threading.Event()
    load = MarianMTModel.from_pretrained.__func__

    def held(cls, *args, **kwargs):
        entered.set()
        assert gate.wait(60), "the test never opened the gate"
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(MarianMTModel, "from_pretrained", classmethod(held))
    translator = Translator(settings(source=str(marian_dir)), tmp_path / "models")
    queue = queue_with(small_config(), tmp_path, translator)
    loading = translator.start_loading()
    try:
        assert entered.wait(60), "the translator never reached its model's load"
        assert translator.status.state == LOADING
        with pytest.raises(ModelUnavailable, match="Try again in a minute"):
            queue.submit(photo, CHINESE, owner="a")
        assert queue.list() == []  # nothing stored
    finally:
        gate.set()
        loading.join(60)
    assert translator.status.state == READY, translator.status.message()
    job = queue.submit(photo, CHINESE, owner="a")
    assert job.params["prompt"] == CHINESE and job.params["prompt_en"] == translator.translate(CHINESE)
    assert [stored.id for stored in queue.list()] == [job.id]

