"""A video of the creator's own to continue (brought.py, JobQueue.bring): checked on the server, kept for its
owner only, then continued as a video of this server is (its frame rate, its size, the segments joined)."""

from pathlib import Path

import pytest

from image_to_video.brought import BroughtVideos, Limits, brought_videos, parse_header
from image_to_video.errors import InvalidInput
from image_to_video.i18n import t
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import DONE, SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.outputs import OutputFolder
from image_to_video.service import VideoService
from image_to_video.video import probe_video
from image_to_video.worker import Worker

from .helpers import own_video as clip


def square(width: int, height: int):
    return "1:1", (128, 128)


def take(brought: BroughtVideos, path: Path, owner: str = "page:a"):
    return brought.take(path, owner, size_for=square, fps_range=(4, 24), parameters={"resolution": "128p"},
                        original_name=path.name)


def test_a_phone_video_is_kept_at_a_model_size_and_frame_rate_for_its_owner_only(tmp_path):
    brought = BroughtVideos(tmp_path / "brought")
    record = take(brought, clip(tmp_path / "holiday.mp4"))  # 30 frames at 30 fps: one second
    kept = probe_video(Path(record["video_path"]))
    assert (kept.frames, kept.fps, kept.width, kept.height) == (24, 24.0, 128, 128)  # 24 fps at most here
    assert record["parameters"] == {"resolution": "128p", "fps": 24, "aspect": "1:1", "width": 128, "height": 128}
    assert record["brought"] == "holiday.mp4" and record["model_frames"]["frames"] == 24
    assert brought.find(record["video"], "page:a")["video"] == record["video"]
    assert brought.find(record["video"], "page:b") is None  # another page: no such video
    assert brought.find("../" + record["video"], "page:a") is None


@pytest.mark.parametrize("content, key", [
    (b"this is not a video", "err_brought_not_video"),
    (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "err_brought_not_video"),  # a playlist: never followed
    (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200, "err_brought_not_video"),  # an MP4's start, then nothing
])
def test_a_file_that_is_no_video_is_refused_and_nothing_is_kept(tmp_path, content, key):
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(content)
    brought = BroughtVideos(tmp_path / "brought")
    with pytest.raises(InvalidInput) as refused:
        take(brought, fake)
    assert refused.value.key == key
    assert "MP4 (H.264) or WebM" in t(key, "en") and "MP4（H.264）或 WebM" in t(key, "zh-CN")
    assert not list((tmp_path / "brought").glob("*"))


def test_a_cut_off_video_is_refused(tmp_path):
    whole = clip(tmp_path / "whole.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(InvalidInput) as refused:
        take(BroughtVideos(tmp_path / "brought"), cut)
    assert refused.value.key == "err_brought_not_video"


@pytest.mark.parametrize("limits, video, key, words", [
    (Limits(max_frames=12), dict(frames=30, fps=24), "err_brought_too_long", "at most 12 (0.5 s)"),
    (Limits(max_mb=0.001), dict(), "err_brought_too_big", "at most 0.001 MB"),
    (Limits(), dict(size=(640, 64)), "err_brought_shape", "no longer than 4:1"),
])
def test_limits_are_kept_with_a_message_saying_what_to_do(tmp_path, limits, video, key, words):
    brought = BroughtVideos(tmp_path / "brought", limits)
    with pytest.raises(InvalidInput) as refused:
        take(brought, clip(tmp_path / "long.mp4", **video))
    assert refused.value.key == key and words in str(refused.value)
    assert not list((tmp_path / "brought").glob("brought_*"))


def test_a_quarter_turned_phone_video_is_seen_upright():
    said = ("Input #0, mov,mp4, from 'x.mp4':\n  Duration: 00:00:02.50, start: 0.0, bitrate: 1 kb/s\n"
            "  Stream #0:0[0x1](und): Video: h264 (High), yuv420p(tv), 1920x1080, 30 fps, 30 tbr\n"
            "      Side data:\n        displaymatrix: rotation of -90.00 degrees\n")
    header = parse_header(said)
    assert (header.width, header.height, header.fps, header.duration_s) == (1080, 1920, 30.0, 2.5)


def test_a_video_of_a_thousand_frames_a_second_is_read_as_that_not_as_one():
    """ffmpeg writes 1000 fps as "1k fps": read as 1 fps, a high-speed clip was kept at the model's slowest
    frame rate instead of the nearest (its fastest)."""
    said = ("Input #0, mov,mp4, from 'x.mp4':\n  Duration: 00:00:03.00, start: 0.0, bitrate: 1 kb/s\n"
            "  Stream #0:0[0x1](und): Video: h264 (High), yuv420p(progressive), 320x240, 1k fps, 1k tbr, 16k tbn\n")
    assert parse_header(said).fps == 1000.0
    assert parse_header(said.replace("1k fps, 1k tbr", "29.97 fps, 29.97 tbr")).fps == 29.97


def test_only_its_owner_continues_it_and_the_job_joins_onto_its_frames(small_config, loaded_engine, tmp_path):
    config = small_config()
    store, live = SQLiteJobStore(tmp_path / "data" / "jobs.sqlite3"), LiveJobs()
    outputs, brought = OutputFolder(config.paths.output_dir, config.outputs), brought_videos(config)
    queue = JobQueue(store, config, live=live, inputs_dir=tmp_path / "data" / "inputs", outputs=outputs,
                     brought=brought)
    service = VideoService(loaded_engine, outputs, config.model, brought=brought)
    worker = Worker(store, live, service.make_video, model_ready=lambda: loaded_engine.ready)
    worker.start()
    try:
        record = queue.bring(str(clip(tmp_path / "mine.mp4", frames=10, fps=8)), owner="page:a",
                             original_name="mine.mp4")
        name, fps = record["video"], record["parameters"]["fps"]
        assert fps == 8 and record["model_frames"]["frames"] == 10
        with pytest.raises(InvalidInput, match="no finished video"):  # another page cannot use it
            queue.submit(None, "the waves go on", owner="page:b", continue_from=name, num_frames=4)
        job = queue.submit(None, "the waves go on", owner="page:a", continue_from=name, num_frames=4,
                           num_inference_steps=2)
        with pytest.raises(InvalidInput, match="must stay"):  # its frame rate, as a server video's
            queue.submit(None, "waves", owner="page:a", continue_from=name, fps=12)
        done = queue.wait(job.id, timeout=300)
        assert done.state == DONE, done.message
        made = probe_video(Path(done.video_path))
        size = (record["parameters"]["width"], record["parameters"]["height"])
        assert (made.frames, made.fps, (made.width, made.height)) == (10 + 4 - 1, 8.0, size)
    finally:
        queue.close()
        worker.shutdown(0)


def test_an_owners_newest_are_kept_and_everyones_newest_too(tmp_path):
    brought = BroughtVideos(tmp_path / "brought", per_owner=2, most=3)
    source = clip(tmp_path / "short.mp4", frames=4, fps=8)
    mine = [take(brought, source, "page:a")["video"] for _ in range(3)]
    assert [brought.find(name, "page:a") is not None for name in mine] == [False, True, True]
    others = [take(brought, source, f"page:{n}")["video"] for n in "bc"]
    assert [brought.find(name, "page:a") is not None for name in mine] == [False, False, True]
    assert all(brought.find(name, owner) for name, owner in zip(others, ("page:b", "page:c")))
    assert len(list((tmp_path / "brought").glob("brought_*.mp4"))) == 3
