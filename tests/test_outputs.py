"""The output folder: names, companions, history, find, delete, retention, clean-up, disk space.

These tests make the folder's files themselves (no model): what matters is what the
folder does with them.
"""

import json
import os
import re
import time
from datetime import datetime

import pytest
from PIL import Image

from image_to_video.config import OutputSettings
from image_to_video.errors import GenerationFailed, InvalidInput
from image_to_video.outputs import OutputFolder, new_video_name


@pytest.fixture
def folder(tmp_path):
    return OutputFolder(tmp_path / "outputs", OutputSettings())


def make_video(folder: OutputFolder, prompt: str, *, name: str | None = None, written: float | None = None,
               size: int = 1000):
    """A video as the service leaves it: the MP4, its record and its input picture."""
    files = folder.files(name) if name else folder.new_video()
    folder.folder.mkdir(parents=True, exist_ok=True)
    files.video.write_bytes(b"\0" * size)
    folder.save_record({"video": files.video.name, "parameters": {"prompt": prompt}}, files)
    folder.save_input_image(Image.new("RGB", (8, 8), "red"), files)
    if written is not None:
        for path in files.existing():
            os.utime(path, (written, written))
    return files


def test_names_sort_by_time_and_do_not_collide_within_a_second():
    moment = datetime(2026, 12, 1, 7, 30, 5)
    names = {new_video_name(moment) for _ in range(200)}
    assert len(names) == 200
    assert all(re.fullmatch(r"video_20261201_073005_[0-9a-f]{8}", name) for name in names)


def test_a_videos_companions_share_its_name(folder):
    files = folder.new_video()
    assert files.record.name == files.video.stem + ".json"
    assert files.input_image.name == files.video.stem + "_input.png"
    assert folder.files(files.record.name) == folder.files(files.input_image.name) == files


def test_history_lists_newest_first_even_within_one_second(folder):
    now = time.time()
    # The same second in the name: the random part sorts "older" after "newer".
    make_video(folder, "oldest", name="video_20261201_073005_ffffffff", written=now - 30)
    make_video(folder, "older", name="video_20261201_073005_00000000", written=now - 20)
    make_video(folder, "newest", written=now - 10)
    assert [r["parameters"]["prompt"] for r in folder.history()] == ["newest", "older", "oldest"]
    assert [r["parameters"]["prompt"] for r in folder.history(limit=2)] == ["newest", "older"]


def test_a_video_without_its_record_is_still_listed_and_can_be_deleted(folder):
    good = make_video(folder, "good", written=time.time() - 30)
    broken = make_video(folder, "broken", written=time.time() - 20)
    broken.record.write_text("{broken")
    lonely = make_video(folder, "lonely", written=time.time() - 10)
    lonely.record.unlink()
    history = folder.history()
    assert [r["video_path"] for r in history] == [str(lonely.video), str(broken.video), str(good.video)]
    assert [r.get("record_missing", False) for r in history] == [True, True, False]
    assert history[0]["video"] == lonely.video.name and history[0]["image_path"] == str(lonely.input_image)
    assert history[2]["record_path"] == str(good.record) and history[2]["image_path"] == str(good.input_image)
    assert folder.delete(lonely.video.name) and lonely.existing() == []


def test_companions_without_their_video_are_leftovers_removed_at_start(folder):
    kept = make_video(folder, "kept")
    orphan = make_video(folder, "orphan")
    orphan.video.unlink()  # killed before the video's rename, its commit point
    half = folder.new_video()
    half.input_image.write_bytes(b"")  # an older version's 0-byte picture
    assert folder.clean_temporary_files() == 3
    assert kept.existing() == [kept.video, kept.record, kept.input_image]
    assert orphan.existing() == [] and half.existing() == []


def test_retention_keeps_the_video_it_is_told_to_keep_whatever_its_mtime(tmp_path):
    capped = OutputFolder(tmp_path / "outputs", OutputSettings(max_total_gb=1e-9))
    just_made = make_video(capped, "just made", written=time.time())
    odd = make_video(capped, "older, future mtime", name="video_20200101_000000_0a0a0a0a",
                     written=time.time() + 86400)
    assert capped.apply_retention(keep=just_made) == 1
    assert just_made.video.exists() and odd.existing() == []


def test_find_and_delete_take_only_our_names(folder, tmp_path):
    files = make_video(folder, "waves")
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"secret": True}))
    assert folder.find(files.video.name)["parameters"]["prompt"] == "waves"
    for name in ("../secret.json", "/etc/passwd", "../../outputs/" + files.video.name + "/../../secret", ""):
        assert folder.find(name) is None
        with pytest.raises(InvalidInput, match="no longer in the output folder"):
            folder.delete(name)
    assert outside.exists()
    assert folder.delete(files.video.name)
    assert not files.video.exists() and not files.record.exists() and not files.input_image.exists()
    assert not folder.delete(files.video.name)  # already gone


def test_retention_removes_the_oldest_videos_with_their_files(tmp_path):
    now = time.time()
    aged = OutputFolder(tmp_path / "outputs", OutputSettings(max_age_days=7))
    old = make_video(aged, "old", written=now - 10 * 86400)
    old.companion("png_frames").write_bytes(b"frames")  # a zip of its PNG frames goes with it
    new = make_video(aged, "new", written=now)
    assert aged.apply_retention() == 1
    assert old.existing() == [] and new.video.exists()

    size = sum(p.stat().st_size for p in new.existing())
    capped = OutputFolder(tmp_path / "outputs", OutputSettings(max_total_gb=1.5 * size / 1e9))
    newer = make_video(capped, "newer", written=now + 1)
    assert capped.apply_retention() == 1
    assert new.existing() == [] and newer.video.exists()


def test_half_written_files_are_cleaned_but_videos_kept(folder):
    files = make_video(folder, "waves")
    for name in (".video_x.abc123.tmp.mp4", ".video_x.json.abc123.tmp", ".video_x_input.png.abc123.tmp"):
        (folder.folder / name).write_bytes(b"partial")
    assert folder.clean_temporary_files() == 3
    assert files.video.is_file() and files.record.is_file() and not list(folder.folder.glob(".*"))


def test_too_little_disk_refuses_with_what_to_do(tmp_path):
    full = OutputFolder(tmp_path / "not-yet-made", OutputSettings(min_free_gb=1e9))
    assert not full.has_free_space()
    with pytest.raises(GenerationFailed, match="GB of disk is free.*Delete old videos"):
        full.check_free_space()
    OutputFolder(tmp_path, OutputSettings(min_free_gb=0)).check_free_space()  # does not raise


def test_a_videos_derived_files_are_its_companions(folder):
    files = make_video(folder, "waves")
    for kind in ("model_video", "segment_video", "gif", "webm", "png_frames"):
        files.companion(kind).write_bytes(b"x")
    assert files.companion("png_frames").name == f"{files.name}_frames.zip"
    # Any of its files' names leads to the video; none is listed as a video of its own.
    for path in files.existing():
        assert folder.files(path.name) == files
    assert [record["video"] for record in folder.history()] == [files.video.name]
    assert folder.model_frames_file(files.video.name) == files.companion("model_video")
    assert folder.delete(files.video.name) and list(folder.folder.iterdir()) == []


def test_derived_files_without_their_video_are_removed_at_start(folder):
    files = make_video(folder, "waves")
    kept = make_video(folder, "kept")
    for kind in ("model_video", "segment_video", "gif", "webm", "png_frames"):
        files.companion(kind).write_bytes(b"x")
        kept.companion(kind).write_bytes(b"x")
    (folder.folder / f".{files.name}.abc123.tmp.gif").write_bytes(b"half")
    (folder.folder / f".{files.name}.abc123.tmp.webm").write_bytes(b"half")
    (folder.folder / f".{files.name}_frames.abc123.tmp.zip").write_bytes(b"half")
    files.video.unlink()  # a crash before the video's rename
    assert folder.clean_temporary_files() == 10
    assert sorted(p.name for p in folder.folder.iterdir()) == sorted(p.name for p in kept.existing())
    assert folder.model_frames_file(files.video.name) is None
    assert folder.model_frames_file(kept.video.name) == kept.companion("model_video")


def test_a_record_names_the_model_by_its_hub_id_or_its_folder_s_last_part(tmp_path, monkeypatch):
    from image_to_video.outputs import model_name

    (tmp_path / "models" / "i2vgen-xl").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert model_name("ali-vilab/i2vgen-xl") == "ali-vilab/i2vgen-xl"
    assert model_name(str(tmp_path / "models" / "i2vgen-xl")) == "i2vgen-xl"
    assert model_name("models/i2vgen-xl/") == "i2vgen-xl"  # a folder, though it reads like a hub id
    assert model_name("./models/i2vgen-xl") == "i2vgen-xl"
    assert model_name("~/weights/my-model") == "my-model"


def test_names_carry_the_seed_and_a_safe_start_of_the_prompt_and_every_file_is_still_found(tmp_path):
    # Issue 24 (10): file names with the seed and the prompt's start; finding, companions and delete still work.
    from image_to_video.outputs import prompt_slug

    assert prompt_slug("A cat runs, on the GRASS! ../../etc/passwd") == "a-cat-runs-on-the-grass-etc-passwd"
    assert prompt_slug("Café Über 猫 naïve") == "cafe-uber-naive" and prompt_slug("一只猫") == ""
    assert len(prompt_slug("word " * 50)) <= 40 and prompt_slug("x" * 90) == "x" * 40
    folder = OutputFolder(tmp_path, OutputSettings())
    files = folder.new_video(seed=1234, prompt="the model input_png  _model")
    assert re.fullmatch(r"video_[0-9]{8}_[0-9]{6}_[0-9a-f]{8}-s1234-the-model-input-png-model", files.name)
    for path in files.all():
        path.write_bytes(b"x")
        assert folder.files(path.name) == files  # every companion leads back to its video
    assert folder.find(files.video.name)["video"] == files.video.name
    assert folder.delete(files.video.name) and not files.existing()
    chinese = folder.new_video(seed=7, prompt="一只猫")
    assert chinese.name.endswith("-s7") and folder.files(chinese.video.name) == chinese
    with pytest.raises(InvalidInput):
        folder.files(files.name + "_evil")


def test_one_zip_holds_everything_a_video_has_and_goes_with_it(tmp_path):
    # Issue 24 (10): one zip of everything a job made, deleted with the video, never inside itself.
    import zipfile

    from image_to_video.outputs import everything_zip

    folder = OutputFolder(tmp_path, OutputSettings())
    files = folder.new_video(seed=3, prompt="a cat")
    for kind in ("record", "input_image", "gif"):
        files.companion(kind).write_bytes(kind.encode())
    files.video.write_bytes(b"mp4")
    path = everything_zip(files)
    assert path == files.companion("everything") and everything_zip(files) == path
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in (files.video, files.record, files.input_image,
                                                                     files.companion("gif")))
        assert archive.read(files.video.name) == b"mp4"
    assert folder.files(path.name) == files and not list(tmp_path.glob(".*.tmp.zip"))
    assert folder.delete(files.video.name) and not path.exists()
    assert everything_zip(files) is None  # the video is gone
