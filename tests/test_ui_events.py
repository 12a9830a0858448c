"""The page's handlers, called as Gradio calls them, on a real queue and output folder (no server,
no model): each updates only the components its event declares, and the user sees the right thing."""

import ast
import contextlib
import json
import os
import threading
import time
import types
from pathlib import Path

import gradio as gr
import pytest

from image_to_video.config import load_config
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import CANCELLED, SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.outputs import OutputFolder
from image_to_video.ui import build_ui
from image_to_video.ui.events import PageOwners
from image_to_video.ui.layout import OWNER_KEY_FILE

from .helpers import FakeModel, own_video, wait_for

UI_DIR = Path(__file__).resolve().parent.parent / "image_to_video" / "ui"


@pytest.fixture
def app(tmp_path):
    config = load_config(overrides={"paths.output_dir": str(tmp_path / "outputs"),
                                    "paths.state_dir": str(tmp_path / "data")})
    queue = JobQueue(SQLiteJobStore(tmp_path / "jobs.db"), config, live=LiveJobs(), inputs_dir=tmp_path / "in")
    outputs = OutputFolder(tmp_path / "outputs", config.outputs)

    def make(model=None):
        demo = build_ui(config, queue, outputs, model or FakeModel())
        token = by_id(call(demo, "Live.page_owner", ""), "page-owner")
        owner = PageOwners(tmp_path / "data" / OWNER_KEY_FILE).owner(token)
        return types.SimpleNamespace(demo=demo, queue=queue, outputs=outputs, folder=tmp_path / "outputs",
                                     token=token, owner=owner)
    return make


def handler(demo, qualname):
    """The event of ``demo`` whose handler is ``qualname`` ("Class.method"): (handler, its outputs)."""
    found = [fn for fn in demo.fns.values() if getattr(fn.fn, "__qualname__", "") == qualname]
    assert found, qualname
    return found[0].fn, found[0].outputs


def call(demo, qualname, *args, **kwargs) -> dict:
    """Run the handler; check it updated only components its event declares; return {elem label: value}."""
    fn, outputs = handler(demo, qualname)
    result = fn(*args, **kwargs)
    assert isinstance(result, dict) and result, f"{qualname} returned {result!r}"
    assert all(any(component is out for out in outputs) for component in result), qualname
    return result


def by_id(result: dict, elem_id: str):
    return next(value for component, value in result.items() if component.elem_id == elem_id)


def save_video(folder: Path, name="video_20250304_050607_0a1b2c3d", seed=77, prompt="clouds drift") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.mp4").write_bytes(b"not really a video")
    (folder / f"{name}_input.png").write_bytes(b"png")
    (folder / f"{name}.json").write_text(json.dumps({
        "video": f"{name}.mp4", "created": "2025-03-04T05:06:07",
        "parameters": {"prompt": prompt, "negative_prompt": "blurry", "resolution": "512p", "num_frames": 8,
                       "fps": 8, "num_inference_steps": 30, "guidance_scale": 9.0, "seed": seed},
        "timings_s": {"total": 12.0}, "video_info": {"width": 512, "height": 512, "frames": 8, "fps": 8.0,
                                                      "duration_s": 1.0},
        "model": {"demo": True}}))
    return f"{name}.mp4"


def test_the_api_keeps_its_inputs_and_outputs_in_order(app):
    demo = app().demo
    generate = next(fn for fn in demo.fns.values() if fn.api_name == "generate")
    labels = [getattr(c, "label", None) for c in generate.inputs]
    assert labels[:9] == ["Image", "Prompt", "Negative prompt", "Resolution", "Frames", "FPS", "Steps",
                          "Guidance scale", "Seed"]
    # then the page id and language, then the steps after the model, in the API's order
    assert [getattr(c, "elem_id", None) for c in generate.inputs[12:]] == [
        "continue-from", "segments", "loop", "interpolate", "formats", "upscale", "aspect", "end-frame",
        "model-picker", "interpolate-method", "crf", "loras"]
    assert [type(c).__name__ for c in generate.outputs] == ["Video", "Markdown", "File", "State", "Button",
                                                            "Dataframe", "Image", "Button", "State", "State"]
    assert generate.trigger_mode == "once"
    assert any(fn.api_name == "cancel" for fn in demo.fns.values())


def test_on_a_small_gpu_the_page_starts_from_the_largest_preset_that_fits(app, monkeypatch):
    monkeypatch.setattr("image_to_video.estimates.measured_table", lambda: None)  # the computed figures
    # Traced from the model's shapes (docs/memory-traced.json): Standard (512p, 16 frames) needs about
    # 8.4 GB all on the GPU, Quick preview (8 frames) 7.1 GB; 8% of the card stays free (7.4 of 8 GB).
    values = call(app(FakeModel(gpu_memory_gb=8)).demo, "Settings.fitting_defaults")
    assert list(values.values()) == ["512p", 8, 8, 30, 9.0, "Quick preview"]
    values = call(app(FakeModel(gpu_memory_gb=80)).demo, "Settings.fitting_defaults")
    assert list(values.values()) == ["512p", 16, 8, 50, 9.0, "Standard"]


def test_a_preset_sets_the_five_settings_and_changed_settings_clear_the_preset(app):
    demo = app().demo
    assert list(call(demo, "Settings.apply_preset", "Quick preview").values()) == ["512p", 8, 8, 30, 9.0]
    assert list(call(demo, "Settings.match_preset", "512p", 8, 8, 30, 9.0).values()) == ["Quick preview"]
    assert list(call(demo, "Settings.match_preset", "512p", 9, 8, 30, 9.0).values()) == [None]


def test_the_estimate_follows_the_language(app):
    text = by_id(call(app().demo, "Settings.estimate", "zh-CN", "512p", 16, 50), "estimate")
    assert text.startswith("**预估**") and "此处为演示模型" in text


def test_generate_waits_in_the_queue_then_cancel_says_cancelled(app, photo):
    page = app()
    seen = []
    fn, outputs = handler(page.demo, "Generation.generate")
    updates = fn(photo, "waves", "", "512p", 8, 8, 30, 9.0, 1, False, page.token, "en",
                 progress=lambda *args, desc=None: seen.append(desc))
    yielded = []
    follow = threading.Thread(target=lambda: yielded.extend(updates))
    follow.start()
    while not seen and follow.is_alive():
        follow.join(0.05)
    (job,) = page.queue.list(owner=page.owner)
    assert seen[0] == "Waiting in the queue: number 1"
    # At once: the old result gone, the video area following the new job.
    started = yielded[0]
    assert by_id(started, "result-video") is None and job.id in by_id(started, "result-info")
    assert {"job": job.id, "final": False, "own": True} in started.values()
    assert by_id(call(page.demo, "Generation.cancel", page.token, "en"), "result-info").startswith(
        "**Cancelled 1 job(s).**")
    follow.join(10)
    assert page.queue.get(job.id).state == CANCELLED
    last = yielded[-1]
    assert all(any(c is out for out in outputs) for update in yielded for c in update)
    assert by_id(last, "result-info").startswith("**Cancelled.**") and by_id(last, "result-video") is None
    assert by_id(last, "your-jobs")["data"][0][5] == "cancelled"


def test_a_refused_job_is_a_message_in_the_users_language(app, photo):
    page = app()
    fn, _ = handler(page.demo, "Generation.generate")
    with pytest.raises(gr.Error, match="帧数 99 超出范围"):
        next(fn(photo, "waves", "", "512p", 99, 8, 30, 9.0, 1, False, page.token, "zh-CN"))


def of_type(result: dict, type_name: str) -> list:
    return [value for component, value in result.items() if type(component).__name__ == type_name]


def test_opening_a_queued_job_says_its_place_and_retry_needs_a_finished_one(app, photo):
    page = app()
    job = page.queue.submit(photo, "waves", owner=page.owner, num_frames=8)
    opened = call(page.demo, "JobActions.open", page.token, "en", types.SimpleNamespace(row_value=["...", job.id]))
    assert of_type(opened, "State") == [job.id]
    assert of_type(opened, "Markdown") == ["**queued (number 1)**"]
    assert of_type(opened, "Button")[0].visible is False  # nothing to retry yet
    assert not of_type(opened, "Video")  # the shown video stays
    retried = call(page.demo, "JobActions.retry", job.id, page.token, "en")
    assert of_type(retried, "Markdown") == [
        "Only a failed, cancelled or interrupted job can be retried; this one is queued."]
    assert of_type(call(page.demo, "JobActions.retry", None, page.token, "en"), "Markdown") == ["Select a job first."]
    other = by_id(call(page.demo, "Live.page_owner", ""), "page-owner")
    with pytest.raises(gr.Error):
        call(page.demo, "JobActions.open", other, "en", types.SimpleNamespace(row_value=["", job.id]))


def test_a_cancelled_job_can_be_retried_as_a_new_job(app, photo):
    page = app()
    job = page.queue.submit(photo, "waves", owner=page.owner, num_frames=8)
    page.queue.cancel(job.id, owner=page.owner)
    retried = call(page.demo, "JobActions.retry", job.id, page.token, "en")
    (table,) = of_type(retried, "Dataframe")
    assert [row[5] for row in table["data"]] == ["queued (number 1)", "cancelled"]
    assert of_type(retried, "Markdown")[0].startswith(f"Queued again as job `{table['data'][0][6]}`")


def test_a_past_video_opens_fills_the_form_and_is_deleted(app):
    page = app()
    name = save_video(page.folder)
    opened = call(page.demo, "HistoryActions.open", [name], "en", types.SimpleNamespace(index=0))
    info = by_id(opened, "result-info")
    assert "8 frames at 8 fps" in info and "seed **77**" in info
    # the video, its record, and (issue 24) one zip of everything it has
    assert [Path(f).name for f in of_type(opened, "File")[0]] == [name, name.replace(".mp4", ".json"),
                                                                   name.replace(".mp4", "_all.zip")]
    assert of_type(opened, "Row")[0].visible is True  # the actions for this video

    form = call(page.demo, "HistoryActions.reuse_settings", name, "en")
    values = {c.label: v for c, v in form.items() if getattr(c, "label", None)}
    assert values["Prompt"] == "clouds drift" and values["Negative prompt"] == "blurry"
    assert (values["Frames"], values["Steps"], values["Seed"], values["Random seed"]) == (8, 30, 77, False)
    assert values["Preset"]["value"] == "Quick preview"
    assert values["Image"].endswith("_input.png")
    same_seed = call(page.demo, "HistoryActions.same_seed", name, "en")
    assert by_id(same_seed, "prompt") == "" and 77 in same_seed.values()

    asked = call(page.demo, "HistoryActions.ask_delete", name, "en")  # Delete asks first
    assert f"Delete `{name}` and all its files for good?" in by_id(asked, "gallery-message")
    assert (page.folder / name).exists()
    deleted = call(page.demo, "HistoryActions.delete", name, "en", name)
    assert f"Deleted `{name}`." in deleted.values()
    assert not (page.folder / name).exists() and by_id(deleted, "gallery") == []
    assert by_id(deleted, "result-video") is None  # the player no longer plays it
    with pytest.raises(gr.Error, match="no longer in the output folder"):
        call(page.demo, "HistoryActions.open", [name], "en", types.SimpleNamespace(index=0))


def test_the_language_switch_relabels_the_page_and_the_shown_video(app):
    page = app()
    name = save_video(page.folder)
    updates = call(page.demo, "Live.relabel", "zh-CN", f"/tmp/gradio/abc/{name}")
    assert "完成" in by_id(updates, "result-info")
    assert "模型已就绪" in by_id(updates, "model-status")
    assert by_id(updates, "generate-button")["value"] == "生成视频"


def test_the_ui_modules_are_layers_without_cycles():
    def imports(module, level):
        tree = ast.parse((UI_DIR / f"{module}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == level:
                found |= {node.module} if node.module else {alias.name for alias in node.names}
        return found, tree
    assert imports("views", 1)[0] == set()
    assert imports("components", 1)[0] == set()
    assert imports("events", 1)[0] == {"views", "components"}
    assert imports("many", 1)[0] == {"components"}
    assert imports("lora_picker", 1)[0] == set()
    assert imports("layout", 1)[0] == {"events", "views", "components", "many", "lora_picker"}
    for module in ("views", "components", "events", "many", "lora_picker", "layout", "__init__"):
        modules, tree = imports(module, 2)
        assert not modules & {"engine", "service", "server", "cli"}, module  # the model is handed in
        reached = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert not reached & {"engine", "service", "with_suffix"}, module
        assert "DEMO_BANNER" not in {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def test_the_page_id_is_the_servers_own_and_a_forged_one_reaches_nobodys_jobs(app, photo):
    page = app()
    api_job = page.queue.submit(photo, "from the API", owner="api", num_frames=8)
    mine = page.queue.submit(photo, "mine", owner=page.owner, num_frames=8)
    assert page.owner.startswith("page:") and page.owner not in ("api", "cli")
    # A reload sends the kept token back and gets the same one, with the same jobs.
    assert by_id(call(page.demo, "Live.page_owner", page.token), "page-owner") == page.token
    assert [row[6] for row in by_id(call(page.demo, "Live.tick", page.token, "en"), "your-jobs")["data"]] == [mine.id]
    tampered = page.token[:-1] + ("1" if page.token.endswith("0") else "0")  # one signature digit changed
    for forged in ("api", "cli", "browser-0123", tampered, "", None):
        assert by_id(call(page.demo, "Live.page_owner", forged), "page-owner") != forged
        assert by_id(call(page.demo, "Live.tick", forged, "en"), "your-jobs")["data"] == []
        assert by_id(call(page.demo, "Generation.cancel", forged, "en"), "result-info").startswith("Nothing to cancel")
        if forged:  # a page id the server did not issue is refused (a missing one: the test below)
            fn, _ = handler(page.demo, "Generation.generate")
            with pytest.raises(gr.Error, match="Reload the page"):
                next(fn(photo, "waves", "", "512p", 8, 8, 30, 9.0, 1, False, forged, "en"))
    assert page.queue.get(api_job.id).state == "queued" and page.queue.get(mine.id).state == "queued"


def test_a_generate_call_without_a_page_id_gets_one_of_its_own(app, photo):
    # gradio_client's documented one-liner sends no page id: its job is its own, nobody else's.
    page = app()
    mine = page.queue.submit(photo, "mine", owner=page.owner, num_frames=8)
    fn, _ = handler(page.demo, "Generation.generate")
    # No worker runs here: each call queues its job and follows it until it is cancelled below.
    calls = [threading.Thread(target=lambda m=missing: next(fn(photo, "waves", "", "512p", 8, 8, 30, 9.0, 1, False,
                                                                m, "en")), daemon=True) for missing in ("", None)]
    for thread in calls:
        thread.start()
    assert wait_for(lambda: len(page.queue.list(limit=10)) == 3, 30)
    theirs = [job for job in page.queue.list(limit=10) if job.id != mine.id]
    assert all(job.owner.startswith("page:") for job in theirs)
    assert len({job.owner for job in theirs} | {page.owner}) == 3  # each call its own id, not this page's
    assert [row[6] for row in by_id(call(page.demo, "Live.tick", page.token, "en"), "your-jobs")["data"]] == [mine.id]
    for job in theirs:
        page.queue.cancel(job.id, owner=job.owner)
    for thread in calls:
        thread.join(30)
        assert not thread.is_alive()


def test_cancel_with_nothing_running_says_so_in_both_languages(app):
    page = app()
    assert by_id(call(page.demo, "Generation.cancel", page.token, "en"), "result-info").startswith(
        "Nothing to cancel")
    assert by_id(call(page.demo, "Generation.cancel", page.token, "zh-CN"), "result-info").startswith("没有可取消")


def test_generate_twice_at_once_makes_one_job_but_a_changed_setting_makes_another(app, photo, tmp_path):
    page = app()
    picture = tmp_path / "upload.png"
    photo.save(picture)
    fn, _ = handler(page.demo, "Generation.generate")
    started = []

    def press(frames):
        updates = fn(str(picture), "waves", "", "512p", frames, 8, 30, 9.0, 1, False, page.token, "en",
                     progress=lambda *args, desc=None: None)
        started.append(updates)
        next(updates, None)  # follows until the job finishes (cancelled below)

    clicks = [threading.Thread(target=press, args=(8,), daemon=True) for _ in range(2)]
    for click in clicks:
        click.start()
    deadline = time.monotonic() + 10
    while len(page.queue.list(owner=page.owner)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(page.queue.list(owner=page.owner)) == 1
    other = threading.Thread(target=press, args=(16,), daemon=True)
    other.start()
    while len(page.queue.list(owner=page.owner)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(job.params["num_frames"] for job in page.queue.list(owner=page.owner)) == [8, 16]
    call(page.demo, "Generation.cancel", page.token, "en")
    for thread in (*clicks, other):
        thread.join(10)
    assert not any(thread.is_alive() for thread in (*clicks, other))


def test_a_video_without_its_record_is_listed_and_can_be_deleted_from_the_page(app):
    page = app()
    name = save_video(page.folder)
    (page.folder / name.replace(".mp4", ".json")).unlink()
    table = call(page.demo, "Live.both_tables", page.token, "en")
    assert by_id(table, "gallery")[0][1] == "(record missing)"
    opened = call(page.demo, "HistoryActions.open", [name], "en", types.SimpleNamespace(index=0))
    assert "record of this video is missing" in by_id(opened, "result-info")
    with pytest.raises(gr.Error, match="record of this video is missing"):
        call(page.demo, "HistoryActions.reuse_settings", name, "en")
    deleted = call(page.demo, "HistoryActions.delete", name, "en", None)
    assert not (page.folder / name).exists() and by_id(deleted, "gallery") == []


def test_the_prompt_note_refuses_a_prompt_past_the_servers_limit_before_any_work(app, monkeypatch):
    # The browser's max_length is not the server's: a 10 MB prompt sent straight to the note's event used
    # to be read whole for its language (11 s and ~0.9 GB in the hostile review).
    from image_to_video import request
    from image_to_video.ui import views

    def no_work(*_args, **_kwargs):
        raise AssertionError("the note looked at the prompt's text")

    monkeypatch.setattr(views, "needs_translation", no_work)
    # request's own reference to unicodedata, not the module every other caller (pytest too) uses
    monkeypatch.setattr(request, "unicodedata", types.SimpleNamespace(normalize=no_work, category=no_work))
    huge = "海浪缓缓涌来" * 2_000_000  # 12 million characters
    note = by_id(call(app().demo, "Settings.prompt_note", huge, "en"), "prompt-note")
    assert "12000000 characters long; the limit is 1000" in note and "Shorten it" in note


# -- the crop note under the picture (Settings.crop_note): a hint, never an error, never a wait -------------------


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """This page's upload folder (Gradio's, as ``GRADIO_TEMP_DIR`` names it) with a 1200x700 picture in it."""
    from PIL import Image

    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    (folder / "0a1b").mkdir(parents=True)
    Image.new("RGB", (1200, 700), "navy").save(folder / "0a1b" / "picture.png")
    return folder


def crop_note(page, image, aspect="auto", resolution="512p", lang="en") -> str:
    """The note, from a thread given 5 s: a handler that waits on a FIFO would hang the page's event."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(
        note=by_id(call(page.demo, "Settings.crop_note", image, aspect, resolution, lang), "crop-note")), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), f"the crop note waited on {image!r}"
    assert "note" in answer, f"the crop note raised on {image!r}, {aspect!r}, {resolution!r}"
    return answer["note"]


def test_the_crop_note_without_a_picture_is_empty_not_an_error(app):
    # The picture's, the aspect's, the resolution's and the language's change all run it; with no picture
    # yet (or the picture removed) it raised, and the page said "The page sent something it cannot have sent".
    page = app()
    for aspect, resolution, lang in (("auto", "512p", "en"), ("16:9", "512p", "en"), ("auto", "768p", "zh-CN")):
        assert crop_note(page, None, aspect, resolution, lang) == ""


def test_the_crop_note_reads_only_this_pages_uploads_and_never_waits_on_a_special_file(app, uploads, tmp_path):
    page = app()
    picture = str(uploads / "0a1b" / "picture.png")
    assert "**704x384** (16:9)" in crop_note(page, picture)
    assert "**512x512** (1:1)" in crop_note(page, picture, aspect="1:1")
    elsewhere = tmp_path / "elsewhere.png"  # a picture the server has, not uploaded by the page: its size is not told
    (uploads / "0a1b" / "picture.png").rename(elsewhere)
    os.mkfifo(uploads / "fifo.png")
    os.mkfifo(tmp_path / "fifo.png")
    (uploads / "0a1b" / "link.png").symlink_to(elsewhere)
    try:
        for path in (elsewhere, "/etc/passwd", tmp_path / "nothing.png", uploads, uploads / "0a1b",
                     uploads / "fifo.png", tmp_path / "fifo.png", uploads / "0a1b" / "link.png",
                     uploads / "0a1b" / ".." / ".." / "elsewhere.png", "/dev/zero", [picture], {"path": picture}, 5,
                     b"\x89PNG"):
            assert crop_note(page, str(path) if isinstance(path, Path) else path) == "", path
    finally:
        for fifo in (uploads / "fifo.png", tmp_path / "fifo.png"):  # lets a reader that waits on one go
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_the_crop_note_says_nothing_for_settings_it_cannot_use(app, uploads):
    page = app()
    picture = str(uploads / "0a1b" / "picture.png")
    for aspect in ([], {}, ["16:9"], 16, True, "0:0", "1:0", "-16:9", "x" * 1_000_000):
        assert crop_note(page, picture, aspect=aspect) == "", aspect
    for resolution in ([], {}, None, 512, "9" * 100_000):
        assert crop_note(page, picture, resolution=resolution) == "", resolution
    assert "**704x384**" in crop_note(page, picture, lang=["zh-CN"])  # any language value: English


def test_the_tick_follows_this_pages_latest_job_whatever_started_it(app, photo):
    # A Retry, Many pictures or a page loaded while a job runs: no Generate follows the job, the tick does.
    page = app()
    name = save_video(page.folder)
    first = page.queue.submit(photo, "waves", owner=page.owner, num_frames=8)
    second = page.queue.submit(photo, "clouds", owner=page.owner, num_frames=8)
    ticked = call(page.demo, "Live.tick", page.token, "en", None, None)
    assert first.id in by_id(ticked, "result-info") and "queued (number 1)" in by_id(ticked, "result-info")
    assert by_id(ticked, "result-video") is None  # the old result is gone at once
    following = {"job": first.id, "final": False}
    assert following in ticked.values()
    assert by_id(ticked, "cancel-all").value == "Cancel all (2)"
    assert [caption for _thumb, caption in by_id(ticked, "gallery")] == [
        "512×512 · 8 frames · 8 fps · seed 77"]  # the delivered video, from its record
    # Cancel: only the job the video area shows; the other stays queued.
    said = by_id(call(page.demo, "Generation.cancel_shown", following, page.token, "en"), "result-info")
    assert said.startswith(f"**Cancelled** job `{first.id}`") and said.endswith(": 1.")
    assert page.queue.get(second.id).state == "queued"
    ticked = call(page.demo, "Live.tick", page.token, "en", following, [name])
    assert second.id in by_id(ticked, "result-info") and {"job": second.id, "final": False} in ticked.values()
    assert not any(type(c).__name__ == "Gallery" for c in ticked)  # unchanged: not sent again
    # A video made meanwhile (here: its job marked done) replaces the progress with the video.
    page.queue.cancel(second.id, owner=page.owner)
    ticked = call(page.demo, "Live.tick", page.token, "en", {"job": second.id, "final": False}, [name])
    assert by_id(ticked, "result-info").startswith("**cancelled**")
    assert {"job": second.id, "final": True} in ticked.values()
    quiet = call(page.demo, "Live.tick", page.token, "en", {"job": second.id, "final": True}, [name])
    assert not any(c.elem_id == "result-info" for c in quiet)  # nothing new: the video area stays as it is


def test_cancel_this_job_in_your_jobs_leaves_the_others_queued(app, photo):
    page = app()
    jobs = [page.queue.submit(photo, "waves", owner=page.owner, num_frames=8) for _ in range(3)]
    done = call(page.demo, "JobActions.cancel", jobs[1].id, page.token, "en")
    assert by_id(done, "job-message").startswith(f"**Cancelled** job `{jobs[1].id}`")
    assert [page.queue.get(job.id).state for job in jobs] == ["queued", "cancelled", "queued"]
    other = by_id(call(page.demo, "Live.page_owner", ""), "page-owner")  # another page cannot cancel them
    call(page.demo, "JobActions.cancel", jobs[0].id, other, "en")
    assert page.queue.get(jobs[0].id).state == "queued"
    assert by_id(call(page.demo, "Generation.cancel", page.token, "en"), "result-info").startswith(
        "**Cancelled 2 job(s).**")


def test_the_summary_names_every_option_and_plain_video_drops_them(app):
    page = app()
    summary = call(page.demo, "Settings.summary", "en", 42, False, 8, "16:9", "video_x.mp4", 2, "boomerang", 16,
                   ["gif", "webm"], 2, "i2vgen-xl", "rife")
    text = by_id(summary, "options-summary")
    for part in ("seed 42 (locked)", "8 fps", "shape 16:9", "continues `video_x.mp4`", "2 segments",
                 "loop: Boomerang", "smoother motion to 16 fps", "also GIF, WebM", "upscaled 2×"):
        assert part in text, (part, text)
    assert by_id(summary, "plain-video").visible is True
    smaller = call(page.demo, "Settings.summary", "en", 42, True, 8, "auto", "", 1, "none", 0, [], 1, None, "rife", 28)
    assert "MP4 quality: Small file (CRF 28)" in by_id(smaller, "options-summary")  # not the server's default
    plain = call(page.demo, "Settings.summary", "zh-CN", 42, True, 8, "auto", "", 1, "none", 0, [], 1)
    assert "随机种子" in by_id(plain, "options-summary") and "无后期处理" in by_id(plain, "options-summary")
    assert by_id(plain, "plain-video").visible is False
    after = call(page.demo, "Settings.after_continuing", "video_x.mp4", "en")  # Generate read the form already
    assert by_id(after, "continue-from") == "" and True in after.values()  # the seed is random again
    reset = call(page.demo, "Settings.plain_video", "en")
    assert by_id(reset, "continue-from") == "" and by_id(reset, "loop") == "none" and by_id(reset, "formats") == []
    assert by_id(reset, "upscale") == 1 and by_id(reset, "interpolate") == 0 and by_id(reset, "segments") == 1


def test_reuse_restores_every_field_of_the_record(app):
    page = app()
    name = save_video(page.folder)
    record_path = page.folder / name.replace(".mp4", ".json")
    record = json.loads(record_path.read_text())
    record["parameters"].update(loop="boomerang", formats="mp4,gif,webm", upscale=2, interpolate_fps=16,
                                interpolate_method="ffmpeg", segments=2, aspect="16:9", loras=[
                                    {"name": "style", "strength": 0.8, "sha256": "ab" * 32},
                                    {"name": "fast", "strength": 1.0, "sha256": "cd" * 32, "expert": "low"}])
    record_path.write_text(json.dumps(record))
    form = call(page.demo, "HistoryActions.reuse_settings", name, "en")
    assert (by_id(form, "loop"), by_id(form, "formats"), by_id(form, "upscale"), by_id(form, "interpolate"),
            by_id(form, "interpolate-method"), by_id(form, "segments"), by_id(form, "aspect"), by_id(form, "loras")) == (
        "boomerang", ["gif", "webm"], 2, 16, "ffmpeg", 2, "16:9", "style:0.8,fast@low:1")
    record["parameters"]["loras"] = [{"strength": "edited"}]  # an edited record's that do not read: none
    record_path.write_text(json.dumps(record))
    assert by_id(call(page.demo, "HistoryActions.reuse_settings", name, "en"), "loras") == ""


def test_the_player_empties_when_its_video_is_deleted_elsewhere(app):
    page = app()
    name = save_video(page.folder)
    ticked = call(page.demo, "Live.tick", page.token, "en", None, [name], name)
    assert not any(c.elem_id == "result-video" for c in ticked)
    (page.folder / name).unlink()  # another tab, or the API, deleted it
    ticked = call(page.demo, "Live.tick", page.token, "en", None, [name], name)
    assert by_id(ticked, "result-video") is None and "no longer in the output folder" in by_id(ticked, "result-info")


def test_the_estimate_learns_from_this_machines_jobs_and_counts_the_finishing_steps(app, tmp_path):
    # Issue 24 (4): the page's "about N s" comes from the times measured here once a job ran, finishing included.
    from image_to_video.estimates import LEARNED_FILE, LearnedTimes, machine_key

    demo = app().demo
    plain = by_id(call(demo, "Settings.estimate", "en", "512p", 16, 50), "estimate")
    assert "GPU memory" not in plain and "learned" not in plain  # a CPU: time only; nothing measured yet
    LearnedTimes(tmp_path / "data" / LEARNED_FILE).learn(machine_key("i2vgen-xl", demo=True, gpu_name=None), {
        "parameters": {"width": 512, "height": 512, "num_frames": 16, "num_inference_steps": 50},
        "video_info": {"frames": 16, "width": 512, "height": 512},
        "timings_s": {"denoise": 500.0, "decode": 20.0, "encode": 5.0, "total": 530.0}})
    learned = by_id(call(demo, "Settings.estimate", "en", "512p", 16, 50), "estimate")
    assert "learned from 1 video(s) made on this machine" in learned and "**8 min 50 s**" in learned, learned
    with_gif = by_id(call(demo, "Settings.estimate", "en", "512p", 16, 50, None, 8, "", 1, "none", 0, ["gif"], 2),
                     "estimate")
    assert "finishing steps for 16 frames included" in with_gif and with_gif != learned


def test_a_video_to_continue_is_read_only_from_this_pages_uploads(app, tmp_path):
    # Issue 24: a dropped video is read only where the page's own uploads are, never at a path a caller names.
    page = app()
    elsewhere = own_video(tmp_path / "mine.mp4")
    for path in (str(elsewhere), "/etc/passwd", "../../mine.mp4", None, 42):
        with pytest.warns(UserWarning, match="Drop the video again"):  # the page's toast
            result = call(page.demo, "Bringing.bring", path, page.token, "en")
        assert list(result.values()) == [None] and by_id(result, "bring-video") is None  # the box emptied, no more
    assert not (tmp_path / "data" / "brought").exists()  # nothing kept
