"""The steps after the model through the real server's HTTP API (demo model): more segments, a
continued video, loops, smoother motion, GIF, WebM and PNG frames, upscale; each result decoded."""

import io
import json
import urllib.request
import zipfile

import numpy as np
import pytest
from PIL import Image

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
    assert (record["parameters"]["interpolate_method"], record["interpolation"]["method"]) == ("rife", "rife")
    form = call(app, "GET", "/openapi.json")[1]["components"]["schemas"]
    described = [fields["interpolate_method"]["description"] for fields in
                 (schema.get("properties", {}) for schema in form.values()) if "interpolate_method" in fields]
    assert described and "rife or ffmpeg (default rife)" in described[0]


def test_gif_and_webm_are_made_beside_the_mp4_and_decode(app, tmp_path):
    job = done(app, formats="gif,webm", loop="crossfade", quality="low", prompt="A boat, at sea!")
    mp4 = probe_video(download(app, tmp_path, job["id"]))
    assert mp4.frames == 6  # crossfade: 8 frames, the last 2 blended into the first 2
    gif = decode_frames(download(app, tmp_path, job["id"], "?format=gif", ".gif"))
    webm_path = download(app, tmp_path, job["id"], "?format=webm", ".webm")
    webm = probe_video(webm_path)
    assert len(gif) == 6 and gif.shape[1:3] == (mp4.height, mp4.width) == (job["height"], job["width"])
    assert (webm.frames, webm.codec, webm.width) == (6, "vp9", mp4.width)
    assert {entry["kind"] for entry in job["files"]} >= {"video", "gif", "webm", "model", "record"}
    # Issue 24 (10): the quality asked for is recorded, the name carries the seed and the prompt's start, and
    # one zip holds everything the job made.
    video_name = next(entry["name"] for entry in job["files"] if entry["kind"] == "video")
    assert video_name.endswith(f"-s{job['seed']}-a-boat-at-sea.mp4")
    status, body = call(app, "GET", job["files_zip"])
    assert status == 200, body
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert set(archive.namelist()) == ({entry["name"] for entry in job["files"]}
                                           | {video_name.replace(".mp4", "_input.png")})
        assert json.loads(archive.read(video_name.replace(".mp4", ".json")))["parameters"]["crf"] == 28
    assert call(app, "GET", f"/api/jobs/{job['id']}/video?format=zip")[0] == 200


def test_png_frames_come_as_a_zip_of_every_frame_of_the_video(app, tmp_path):
    job = done(app, formats="png", seed="4")
    with urllib.request.urlopen(app.url + f"api/jobs/{job['id']}/video?format=png", timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/zip"
        body = response.read()
    video = decode_frames(download(app, tmp_path, job["id"]))
    height, width = video.shape[1:3]
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = archive.namelist()
        assert names == sorted(names) and names[0] == "frame_00001.png" and len(names) == len(video) == 8
        pictures = []
        for name in names:
            data = archive.read(name)
            assert data[12:16] == b"IHDR" and (data[24], data[25]) == (8, 2)  # 8 bits a channel, RGB
            with Image.open(io.BytesIO(data)) as picture:
                assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (width, height))
                pictures.append(np.asarray(picture))
    # The video's frames in its order: each PNG is nearest the MP4's frame of its number (the MP4, a lossy
    # copy of the same frames, blurs the demo model's noise).
    difference = [[np.abs(picture.astype(int) - frame.astype(int)).mean() for frame in video] for picture in pictures]
    assert [int(np.argmin(row)) for row in difference] == list(range(8)), np.round(difference, 1)
    assert max(difference[i][i] for i in range(8)) < 20
    entry = {entry["kind"]: entry for entry in job["files"]}["png"]
    assert entry["url"] == f"/api/jobs/{job['id']}/video?format=png"
    assert entry["name"] == job["video"].removesuffix(".mp4") + "_frames.zip"
    assert (entry["format"], entry["frames"], entry["width"], entry["height"]) == ("png", 8, width, height)
    assert call(app, "GET", f"/api/jobs/{job['id']}/metadata")[1]["timings_s"]["png"] > 0


def test_upscale_doubles_the_size(app, tmp_path):
    job = done(app, upscale="2")
    info = probe_video(download(app, tmp_path, job["id"]))
    assert (info.width, info.height, info.frames) == (2 * job["width"], 2 * job["height"], 8)


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
    # the shape too: asked for another aspect it is refused at once (before, the job failed in the worker)
    other = "9:16" if first["aspect"] != "9:16" else "16:9"
    status, body = call(app, "POST", "/api/jobs", fields={"continue_from": first["video"], "aspect": other})
    assert status == 400 and f"must stay {first['aspect']}" in body["error"], body


def test_asking_for_a_file_the_job_did_not_make_says_how_to_get_it(app):
    job = done(app)
    status, body = call(app, "GET", f"/api/jobs/{job['id']}/video?format=gif")
    assert status == 404 and "formats=gif" in body["error"]
    status, body = call(app, "GET", f"/api/jobs/{job['id']}/video?format=png")
    assert status == 404 and "formats=gif,webm,png" in body["error"]
    for unknown in ("avi", "mov", "png&part=model"):  # (format=zip: every file in one zip, issue 24)
        status, body = call(app, "GET", f"/api/jobs/{job['id']}/video?format={unknown}")
        assert status == 400 and "format=mp4" in body["error"] and "webm or png" in body["error"], body
    assert [entry["kind"] for entry in job["files"]] == ["video", "record"]
    assert json.dumps(job["files"]).count("/api/jobs/") == 2
