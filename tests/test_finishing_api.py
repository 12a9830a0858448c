"""The steps after the model through the real server's HTTP API (demo model): more segments, a
continued video, loops, smoother motion, GIF and WebM, upscale; each result decoded."""

import json

import numpy as np
import pytest

from image_to_video.finishing import decode_frames
from image_to_video.video import probe_video

from .app_process import AppProcess, free_port
from .helpers import FAST_ENV, PHOTO, call, submit, wait_done


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    process = AppProcess(tmp_path_factory.mktemp("finishing"), free_port(), env=FAST_ENV).start()
    yield process
    process.stop()


def download(app, tmp_path, job_id, query="", suffix=".mp4"):
    status, body = call(app, "GET", f"/api/jobs/{job_id}/video{query}")
    assert status == 200, body
    path = tmp_path / f"{job_id}{query.replace('?', '_').replace('=', '-')}{suffix}"
    path.write_bytes(body)
    return path


def done(app, **fields):
    status, job = submit(app, PHOTO, num_frames="8", fps="8", **fields)
    assert status == 202, job
    finished = wait_done(app, job["id"], timeout=300)
    assert finished["state"] == "done", finished
    return finished


def test_two_segments_make_15_frames_and_the_last_segment_is_downloadable_alone(app, tmp_path):
    job = done(app, segments="2", seed="5")
    joined = download(app, tmp_path, job["id"])
    assert probe_video(joined).frames == 15  # 8 + 8, the seam frame once
    segment = download(app, tmp_path, job["id"], "?part=segment")
    assert probe_video(segment).frames == 8
    # The joined video ends with the segment alone (the codec rounds a little).
    tail, alone = decode_frames(joined)[-7:].astype(int), decode_frames(segment)[-7:].astype(int)
    assert np.abs(tail - alone).mean() < 6
    kinds = {entry["kind"]: entry for entry in job["files"]}
    assert kinds["video"]["frames"] == 15 and kinds["segment"]["frames"] == 8
    assert kinds["segment"]["url"] == f"/api/jobs/{job['id']}/video?part=segment"


def test_continuing_a_finished_job_joins_onto_its_video(app, tmp_path):
    first = done(app, seed="9", prompt="waves")
    status, job = call(app, "POST", "/api/jobs", fields={"continue_from": first["id"], "prompt": "the waves go on"})
    assert status == 202, job
    # The first job's settings and seed are carried over; the prompt is the new one.
    assert job["params"]["seed"] == 9 and job["params"]["num_frames"] == 8 and job["params"]["resolution"] == "256p"
    assert job["params"]["continue_from"] == first["video"] and job["params"]["prompt"] == "the waves go on"
    finished = wait_done(app, job["id"], timeout=300)
    assert finished["state"] == "done", finished
    joined = decode_frames(download(app, tmp_path, job["id"]))
    original = decode_frames(download(app, tmp_path, first["id"]))
    assert len(joined) == 15
    assert np.abs(joined[:8].astype(int) - original.astype(int)).mean() < 6  # the first video, then the new part
    assert probe_video(download(app, tmp_path, job["id"], "?part=segment")).frames == 8


def test_boomerang_on_8_frames_gives_14_and_keeps_the_models_video(app, tmp_path):
    job = done(app, loop="boomerang")
    frames = decode_frames(download(app, tmp_path, job["id"]))
    assert len(frames) == 14
    # Forward then back: frame 8 + k mirrors frame 6 - k.
    assert np.abs(frames[8].astype(int) - frames[6].astype(int)).mean() < 4
    assert probe_video(download(app, tmp_path, job["id"], "?part=model")).frames == 8


def test_interpolating_8_frames_at_8_fps_to_24_gives_one_second_at_24_fps(app, tmp_path):
    job = done(app, interpolate_fps="24")
    info = probe_video(download(app, tmp_path, job["id"]))
    assert (info.frames, info.fps, info.duration) == (24, 24.0, 1.0)
    status, record = call(app, "GET", f"/api/jobs/{job['id']}/metadata")
    assert record["fps"] == {"model": 8, "output": 24}
    assert record["timings_s"]["interpolating"] > 0


def test_gif_and_webm_are_made_beside_the_mp4_and_decode(app, tmp_path):
    job = done(app, formats="gif,webm", loop="crossfade")
    mp4 = probe_video(download(app, tmp_path, job["id"]))
    assert mp4.frames == 6  # crossfade: 8 frames, the last 2 blended into the first 2
    gif = decode_frames(download(app, tmp_path, job["id"], "?format=gif", ".gif"))
    webm_path = download(app, tmp_path, job["id"], "?format=webm", ".webm")
    webm = probe_video(webm_path)
    assert len(gif) == 6 and gif.shape[1:3] == (256, 256)
    assert (webm.frames, webm.codec, webm.width) == (6, "vp9", 256)
    assert {entry["kind"] for entry in job["files"]} >= {"video", "gif", "webm", "model", "record"}


def test_upscale_doubles_the_size(app, tmp_path):
    job = done(app, upscale="2")
    info = probe_video(download(app, tmp_path, job["id"]))
    assert (info.width, info.height, info.frames) == (512, 512, 8)


@pytest.mark.parametrize("fields, words", [
    ({"segments": "9"}, "Segments 9 is out of range"),
    ({"segments": "two"}, "Segments"),
    ({"loop": "spiral"}, "Loop: 'spiral' is not available"),
    ({"interpolate_fps": "6"}, "not above the video's 8 fps"),
    ({"interpolate_fps": "500"}, "Smoother motion 500 is out of range"),
    ({"formats": "gif,avi"}, "Formats: 'avi' is not available"),
    ({"upscale": "3"}, "Upscale 3 is out of range"),
    ({"continue_from": "../../etc/passwd"}, "is not a job id or a video name"),
    ({"continue_from": "video_20200101_000000_deadbeef.mp4"}, "no finished video"),
    ({"segments": "8", "interpolate_fps": "48", "num_frames": "32"}, "at most 600 are allowed"),
])
def test_bad_values_get_a_clear_message_and_change_nothing(app, fields, words):
    before = call(app, "GET", "/api/jobs?limit=500")[1]["jobs"]
    status, body = submit(app, PHOTO, **{"num_frames": "8", **fields})
    assert status == 400 and words in body["error"], body
    assert call(app, "GET", "/api/jobs?limit=500")[1]["jobs"] == before


def test_a_continued_video_keeps_its_size_and_frame_rate(app):
    first = done(app, seed="2")
    status, body = call(app, "POST", "/api/jobs", fields={"continue_from": first["video"], "resolution": "512p"})
    assert status == 400 and "must stay 256p" in body["error"]


def test_asking_for_a_file_the_job_did_not_make_says_how_to_get_it(app):
    job = done(app)
    status, body = call(app, "GET", f"/api/jobs/{job['id']}/video?format=gif")
    assert status == 404 and "formats=gif" in body["error"]
    status, body = call(app, "GET", f"/api/jobs/{job['id']}/video?format=avi")
    assert status == 400 and "format=mp4" in body["error"]
    assert [entry["kind"] for entry in job["files"]] == ["video", "record"]
    assert json.dumps(job["files"]).count("/api/jobs/") == 2
