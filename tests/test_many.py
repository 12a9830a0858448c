"""Many pictures at once ("Queue all", ui/many.py): real image files and zips built here, uploaded
into a stand-in for Gradio's upload folder, queued on a real queue (no worker, no model)."""

import io
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from image_to_video.config import load_config
from image_to_video.errors import InvalidInput
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.ui.events import PageOwners
from image_to_video.ui.many import ManyPictures, pictures_from_uploads, prompts_for

MB = 1024 * 1024


def picture(seed: int, size=(160, 120)) -> Image.Image:
    """A picture with structure of its own (random pixels), so two pictures never match."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def patched(archive: bytes, *, at_local: int, at_central: int, fmt: str, change) -> bytes:
    """``archive`` with one field of its (single) member's local header and central directory
    entry changed: the zip format stores the sizes and flags twice."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", at_local), (b"PK\x01\x02", at_central)):
        where = data.index(signature) + offset
        struct.pack_into(fmt, data, where, change(struct.unpack_from(fmt, data, where)[0]))
    return bytes(data)


@pytest.fixture
def upload(tmp_path, monkeypatch):
    """Put a file into the upload folder as Gradio's upload route does (a folder per file); its path."""
    folder = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    count = [0]

    def put(name: str, data: bytes) -> str:
        count[0] += 1
        path = folder / f"{count[0]:040x}" / name
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        return str(path)
    return put


def make_queue(folder, max_queued=20) -> JobQueue:
    config = load_config(overrides={"paths.output_dir": str(folder / "outputs"),
                                    "paths.state_dir": str(folder / "data"), "jobs.max_queued": max_queued})
    return JobQueue(SQLiteJobStore(folder / "jobs.db"), config, live=LiveJobs(), inputs_dir=folder / "in")


@pytest.fixture
def page(tmp_path):
    """A page's "Queue all" on a fresh queue: its ManyPictures, the queue, and the page's token."""
    def make(max_queued=20, max_upload_bytes=30 * MB):
        queue = make_queue(tmp_path / "queue", max_queued)
        owners = PageOwners(tmp_path / "owner.key")
        many = ManyPictures(queue, owners, max_pictures=max_queued, max_upload_bytes=max_upload_bytes)
        return many, queue, owners.issue(), owners
    return make


def stored_pixels(job) -> np.ndarray:
    with Image.open(job.image_path) as image:
        return np.asarray(image.convert("RGB"))


def alone(tmp_path, data: bytes, **settings) -> np.ndarray:
    """The picture the queue keeps when ``data`` is submitted on its own, as the single Generate does."""
    queue = make_queue(tmp_path / "alone")
    return stored_pixels(queue.submit(data, "alone", owner="page:alone", **settings))


def test_several_pictures_make_one_job_each_with_the_picture_a_single_upload_gets(page, upload, tmp_path):
    files = {"beach.png": encoded(picture(1), "PNG"), "forest.jpg": encoded(picture(2), "JPEG"),
             "city.bmp": encoded(picture(3, (200, 90)), "BMP")}
    many, queue, token, owners = page()
    result = many.queue_all([upload(name, data) for name, data in files.items()], "waves roll in", token, "en",
                            negative_prompt="blurry", num_frames=8)
    assert len(result.queued) == 3 and result.refused == () and result.stopped is None
    jobs = [queue.get(job_id, owner=owners.owner(token)) for job_id in result.queued]
    for job, data in zip(jobs, files.values()):
        assert job.params["prompt"] == "waves roll in"
        assert job.params["negative_prompt"] == "blurry" and job.params["num_frames"] == 8
        assert np.array_equal(stored_pixels(job), alone(tmp_path, data))
    assert result.text("en").startswith("**Queued: 3 video(s).**")
    assert result.text("zh-CN").startswith("**已排队：3 个视频。**")


def test_a_zip_gives_its_pictures_in_name_order_from_any_folder_and_skips_the_junk(page, upload, tmp_path):
    members = {"trip/day1/10.png": encoded(picture(10), "PNG"), "trip/1.jpg": encoded(picture(11), "JPEG"),
               "trip/day1/2.png": encoded(picture(12), "PNG"), "notes.txt": b"what we did",
               "__MACOSX/trip/._1.jpg": b"\0\5\26\7 resource fork", ".DS_Store": b"\0\0\0\1Bud1",
               "trip/.thumb.png": encoded(picture(13), "PNG")}
    many, queue, token, _owners = page()
    result = many.queue_all([upload("album.zip", zipped(members))], "one\n\ntwo\nthree\n", token, "en")
    assert [refusal[:2] for refusal in result.refused] == [("album.zip/notes.txt", "many_not_image")]
    jobs = [queue.get(job_id) for job_id in result.queued]
    assert [job.params["prompt"] for job in jobs] == ["one", "two", "three"]
    for job, member in zip(jobs, ["trip/1.jpg", "trip/day1/2.png", "trip/day1/10.png"]):
        assert np.array_equal(stored_pixels(job), alone(tmp_path, members[member]))
    text = result.text("en")
    assert "**Queued: 3 video(s).**" in text and "notes\\.txt**: not a picture we can read" in text


def unpacked_with_peak(upload, name: str, data: bytes):
    """``pictures_from_uploads`` of one zip at 1 MB a picture and 4 MB a call: (pictures, refused, the
    peak of memory Python allocated meanwhile)."""
    tracemalloc.start()
    try:
        pictures, refused = pictures_from_uploads([upload(name, data)], max_pictures=20, max_bytes=MB,
                                                  max_total_bytes=4 * MB)
        return pictures, refused, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_member_that_unpacks_past_the_limit_is_refused_after_reading_no_more_than_the_limit(upload):
    huge = encoded(picture(20), "PNG")[:64] + bytes(60 * MB)  # a PNG's start, then 60 MB of zeros
    bomb = zipped({"huge.png": huge, "fine.png": encoded(picture(21), "PNG")})
    assert len(bomb) < MB / 4  # deflate packs the zeros a thousand to one
    pictures, refused, peak = unpacked_with_peak(upload, "bomb.zip", bomb)
    assert [p.name for p in pictures] == ["bomb.zip/fine.png"]
    assert [(r.name, r.key, r.params) for r in refused] == [("bomb.zip/huge.png", "many_file_too_large",
                                                              {"limit_mb": "1"})]
    assert peak < 8 * MB  # the 60 MB were never unpacked


def test_a_member_that_declares_a_small_size_but_inflates_hugely_is_refused(upload):
    honest = zipped({"small.png": encoded(picture(22), "PNG")[:64] + bytes(40 * MB)})
    lying = patched(honest, at_local=22, at_central=24, fmt="<I", change=lambda size: 1000)
    assert zipfile.ZipFile(io.BytesIO(lying)).getinfo("small.png").file_size == 1000
    pictures, refused = pictures_from_uploads([upload("liar.zip", lying)], max_pictures=20, max_bytes=MB,
                                              max_total_bytes=4 * MB)
    assert pictures == []
    assert [(r.name, r.key) for r in refused] == [("liar.zip/small.png", "many_zip_member_damaged")]


def test_members_refused_as_too_large_still_count_against_the_total_and_the_call_stops_there(upload):
    head = encoded(picture(23), "PNG")[:64]
    members = {f"big{i}.png": head + bytes(2 * MB) for i in range(8)}
    fine = encoded(picture(24), "PNG")
    bomb = zipped({**members, "fine.png": fine}, zipfile.ZIP_BZIP2)
    assert len(bomb) < len(fine) + 4096  # bzip2 packs 16 MB of zeros into a few hundred bytes
    pictures, refused = pictures_from_uploads([upload("bzip.zip", bomb)], max_pictures=20, max_bytes=MB,
                                              max_total_bytes=4 * MB)
    # Each refusal unpacked a megabyte: after the fourth the call's 4 MB are spent, and nothing more is read.
    assert pictures == [] and len(refused) <= 4
    assert [r.key for r in refused] == ["many_file_too_large"] * (len(refused) - 1) + ["many_total_too_large"]


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_bzip2_or_lzma_member_is_unpacked_no_further_than_the_limit(upload, method):
    huge = encoded(picture(25), "PNG")[:64] + bytes(40 * MB)
    bomb = zipped({"huge.png": huge, "fine.png": encoded(picture(26), "PNG")}, method)
    pictures, refused, peak = unpacked_with_peak(upload, "bomb.zip", bomb)
    assert [p.name for p in pictures] == ["bomb.zip/fine.png"]
    assert pictures[0].data == encoded(picture(26), "PNG")
    assert [(r.name, r.key) for r in refused] == [("bomb.zip/huge.png", "many_file_too_large")]
    assert peak < 16 * MB  # the 40 MB were never unpacked (LZMA's 8 MB dictionary is the most of it)


def test_pictures_that_together_unpack_past_the_total_stop_there(upload):
    bmps = {f"scan{i}.bmp": encoded(picture(30 + i, (256, 256)), "BMP") for i in range(1, 6)}
    assert all(190_000 < len(data) < 200_000 for data in bmps.values())  # four fit in 800 000 bytes, five do not
    paths = [upload("scans.zip", zipped(bmps)), upload("later.png", encoded(picture(36), "PNG"))]
    pictures, refused = pictures_from_uploads(paths, max_pictures=20, max_bytes=200_000, max_total_bytes=800_000)
    assert [p.name for p in pictures] == [f"scans.zip/scan{i}.bmp" for i in range(1, 5)]
    assert [p.data for p in pictures] == [bmps[f"scan{i}.bmp"] for i in range(1, 5)]
    assert [(r.name, r.key) for r in refused] == [("scans.zip/scan5.bmp", "many_total_too_large")]


def test_at_most_max_pictures_are_taken(upload):
    paths = [upload(f"p{i}.png", encoded(picture(40 + i), "PNG")) for i in range(4)]
    pictures, refused = pictures_from_uploads(paths, max_pictures=2, max_bytes=MB, max_total_bytes=4 * MB)
    assert [p.name for p in pictures] == ["p0.png", "p1.png"]
    assert [(r.name, r.key, r.params) for r in refused] == [("p2.png", "many_too_many", {"limit": 2})]


def test_damaged_zips_other_files_and_files_from_elsewhere_are_refused_with_a_reason(upload, tmp_path):
    good = zipped({"a.png": encoded(picture(50), "PNG"), "b.png": encoded(picture(51), "PNG")})
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(encoded(picture(52), "PNG"))
    paths = [upload("junk.zip", b"PK\3\4 this is no zip at all"), upload("half.zip", good[: len(good) // 2]),
             upload("notes.txt", b"hello"), upload("fake.png", b"<html>not a picture</html>"),
             str(outside), upload("real.png", encoded(picture(53), "PNG"))]
    pictures, refused = pictures_from_uploads(paths, max_pictures=20, max_bytes=MB, max_total_bytes=4 * MB)
    assert [p.name for p in pictures] == ["real.png"]
    assert [(r.name, r.key) for r in refused] == [
        ("junk.zip", "many_zip_damaged"), ("half.zip", "many_zip_damaged"), ("notes.txt", "many_not_image"),
        ("fake.png", "many_not_image"), ("elsewhere.png", "err_upload_again")]


def test_an_encrypted_member_is_refused(upload):
    plain = zipped({"secret.png": encoded(picture(60), "PNG")})
    encrypted = patched(plain, at_local=6, at_central=8, fmt="<H", change=lambda flags: flags | 0x1)
    assert zipfile.ZipFile(io.BytesIO(encrypted)).getinfo("secret.png").flag_bits & 0x1
    pictures, refused = pictures_from_uploads([upload("locked.zip", encrypted)], max_pictures=20, max_bytes=MB,
                                              max_total_bytes=4 * MB)
    assert pictures == [] and [(r.name, r.key) for r in refused] == [("locked.zip/secret.png",
                                                                      "many_zip_encrypted")]


def test_one_prompt_for_all_or_one_per_line():
    assert prompts_for("  the sea  \n\n", 3) == ["the sea"] * 3
    assert prompts_for("a\n\n b \nc\n", 3) == ["a", "b", "c"]
    assert prompts_for("a\r\nb\rc", 3) == ["a", "b", "c"]
    with pytest.raises(InvalidInput) as refused:
        prompts_for("a\nb", 3)
    assert str(refused.value).startswith("The prompt has 2 lines for 3 pictures, so nothing was queued.")
    # Characters Python counts as line breaks but a user never sees as one stay inside the prompt.
    one_line = "waves\u2028roll\x85in\vslowly\fat\x1cdusk\x1dand\x1enight"
    assert prompts_for(one_line, 2) == [one_line] * 2
    with pytest.raises(InvalidInput) as refused:
        prompts_for(" \n ", 2)
    assert refused.value.key == "err_prompt_missing"


def test_prompts_that_do_not_match_queue_nothing(page, upload):
    many, queue, token, owners = page()
    paths = [upload(f"p{i}.png", encoded(picture(70 + i), "PNG")) for i in range(3)]
    with pytest.raises(InvalidInput) as refused:
        many.queue_all(paths, "first\nsecond", token, "zh-CN")
    assert refused.value.params == {"lines": 2, "pictures": 3}
    assert queue.list(owner=owners.owner(token)) == []


def test_a_queue_that_fills_stops_partway_and_says_how_many_were_not_queued(page, upload):
    many, queue, token, owners = page(max_queued=3)
    paths = [upload(f"p{i}.png", encoded(picture(80 + i), "PNG")) for i in range(3)]
    queue.submit(encoded(picture(90), "PNG"), "someone else's", owner="page:other")
    result = many.queue_all(paths, "the sea", token, "en")
    assert len(result.queued) == 2 and result.left == 1
    assert (result.stopped.name, result.stopped.key) == ("p2.png", "err_queue_full")
    assert len(queue.list(owner=owners.owner(token))) == 2
    text = result.text("en")
    assert "**Queued: 2 video(s).**" in text
    assert "after 2: the other 1 picture(s) were not queued. The queue is full (3 videos waiting)" in text
    assert "其余 1 张图片没有排队。队列已满（3 个视频在等待）" in result.text("zh-CN")


def test_a_picture_the_queue_refuses_is_listed_and_the_others_keep_their_prompts(page, upload):
    many, queue, token, _owners = page()
    paths = [upload("big_one.png", encoded(picture(100), "PNG")),
             upload("tiny_[1].png", encoded(picture(101, (32, 32)), "PNG")),
             upload("last.png", encoded(picture(102), "PNG"))]
    result = many.queue_all(paths, "first\nsecond\nthird", token, "en")
    assert [queue.get(job_id).params["prompt"] for job_id in result.queued] == ["first", "third"]
    assert [(r.name, r.key) for r in result.refused] == [("tiny_[1].png", "err_too_small")]
    assert "- **tiny\\_\\[1\\]\\.png**: The image is only 32x32 pixels" in result.text("en")


def test_a_forged_page_id_or_no_files_queue_nothing(page, upload):
    many, queue, token, _owners = page()
    path = upload("p.png", encoded(picture(110), "PNG"))
    with pytest.raises(InvalidInput) as refused:
        many.queue_all([path], "the sea", token[:-1] + ("0" if token[-1] != "0" else "1"), "en")
    assert refused.value.key == "err_page_id"
    with pytest.raises(InvalidInput) as refused:
        many.queue_all(None, "the sea", token, "en")
    assert refused.value.key == "many_no_files"
    assert queue.list() == []


def test_when_no_upload_is_a_picture_nothing_is_queued_and_each_reason_is_shown(page, upload):
    many, queue, token, _owners = page()
    result = many.queue_all([upload("a.txt", b"x"), upload("b.zip", b"nope")], "", token, "zh-CN")
    assert result.queued == () and queue.list() == []
    text = result.text()  # in the language the page asked in
    assert text.startswith("**没有排队任何视频。**") and "未排队（2 个）" in text


def test_a_zip_of_countless_junk_members_or_a_file_listed_again_and_again_stops_early(upload):
    from image_to_video.ui import many

    junk = upload("junk.zip", zipped({f"{number}.png": b"" for number in range(3000)}))  # empty: no bytes counted
    pictures, refused = many.pictures_from_uploads([junk] * 500, max_pictures=20, max_bytes=2**20,
                                                   max_total_bytes=2**22)
    # The upload is read once, and then only until 20 + MAX_EXTRA_EXAMINED files were looked at.
    assert pictures == [] and len(refused) == 20 + many.MAX_EXTRA_EXAMINED + 1
    assert refused[-1].key == "many_too_many"
    assert {r.key for r in refused[:-1]} == {"many_not_image"}


def test_a_zip_with_too_many_entries_is_refused_whole(upload, monkeypatch):
    from image_to_video.ui import many

    monkeypatch.setattr(many, "MAX_ZIP_ENTRIES", 5)
    big = upload("big.zip", zipped({f"{number}.png": encoded(picture(number), "PNG") for number in range(6)}))
    pictures, refused = many.pictures_from_uploads([big], max_pictures=20, max_bytes=2**20, max_total_bytes=2**22)
    assert pictures == [] and [(r.name, r.key) for r in refused] == [("big.zip", "many_too_many")]
