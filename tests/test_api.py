"""The HTTP API and the job guarantees, against the real `python main.py --demo` in a subprocess."""

import io
import struct
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
from PIL import Image

from image_to_video.video import probe_video

from .app_process import AppProcess
from .helpers import FAST_ENV, PHOTO, call, png, submit, wait_done


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = AppProcess(tmp_path_factory.mktemp("api"), port, env=FAST_ENV).start()
    yield process
    process.stop()


def test_submit_poll_download(app, tmp_path):
    status, job = submit(app, PHOTO, num_frames="8", fps="4", seed="42")
    assert status == 202 and job["state"] == "queued" and job["params"]["seed"] == 42
    done = wait_done(app, job["id"])
    assert done["state"] == "done" and done["video"].endswith(".mp4")
    status, video = call(app, "GET", f"/api/jobs/{job['id']}/video")
    assert status == 200
    (tmp_path / "v.mp4").write_bytes(video)
    info = probe_video(tmp_path / "v.mp4")
    assert (info.frames, info.fps, info.width, info.height, info.codec) == (8, 4.0, done["width"], done["height"], "h264")
    assert info.width > info.height  # the 320x240 picture keeps its landscape shape
    status, record = call(app, "GET", f"/api/jobs/{job['id']}/metadata")
    assert status == 200 and record["parameters"]["seed"] == 42
    status, listing = call(app, "GET", "/api/jobs")
    assert status == 200 and job["id"] in [j["id"] for j in listing["jobs"]]


def test_head_on_the_video_and_metadata_gives_their_headers_without_a_body(app):
    status, job = submit(app, PHOTO, num_frames="8", seed="3")
    assert wait_done(app, job["id"])["state"] == "done"
    for path, kind in [("video", "video/mp4"), ("metadata", "application/json")]:
        request = urllib.request.Request(app.url + f"api/jobs/{job['id']}/{path}", method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith(kind)
            assert int(response.headers["Content-Length"]) > 0 and response.read() == b""
        assert call(app, "GET", f"/api/jobs/{job['id']}/{path}")[0] == 200


def test_a_video_deleted_by_hand_is_410_with_a_true_message(app):
    status, job = submit(app, PHOTO, num_frames="8", seed="4")
    done = wait_done(app, job["id"])
    video = app.root / "outputs" / done["video"]
    assert video.is_file()
    video.unlink()
    status, body = call(app, "GET", f"/api/jobs/{job['id']}/video")
    assert status == 410
    message = body["error"]
    assert "removed from the output folder" in message and "by hand" in message
    assert "retention" not in message  # retention is off in this server: it did not remove it
    assert f"/api/jobs/{job['id']}/retry" in message


def test_unknown_and_unfinished_jobs(app):
    assert call(app, "GET", "/api/jobs/nope")[0] == 404
    assert "no job" in call(app, "GET", "/api/jobs/nope")[1]["error"]
    status, job = submit(app, PHOTO, num_inference_steps="100", num_frames="32")
    assert call(app, "GET", f"/api/jobs/{job['id']}/video")[0] == 409
    status, cancelled = call(app, "POST", f"/api/jobs/{job['id']}/cancel")
    assert status == 200
    assert wait_done(app, job["id"])["state"] == "cancelled"


def test_health_ready_docs_and_closed_routes(app):
    assert call(app, "GET", "/api/health") == (200, {"status": "ok"})
    status, ready = call(app, "GET", "/api/ready")
    assert status == 200 and ready["checks"] == {"model": True, "device": True, "disk": True, "worker": True}
    assert call(app, "GET", "/docs")[0] == 200
    status, spec = call(app, "GET", "/openapi.json")
    assert "/api/jobs" in spec["paths"] and "/api/jobs/{job_id}/video" in spec["paths"]
    bypass = urllib.request.Request(app.url + "gradio_api/run/generate", data=b'{"data": []}', method="POST",
                                    headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(bypass, timeout=10)
    assert error.value.code == 404  # the route that skips the queue
    assert call(app, "GET", "/monitoring/summary")[0] in (403, 404)


def _png_header(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _noise(size=(300, 300)):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def _gif():
    frames = [Image.new("RGB", (100, 100), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 6
    return png(Image.new("RGB", (200, 100)), "JPEG", exif=exif.tobytes())


def _palette_transparent():
    image = Image.new("P", (100, 100), 0)
    image.info["transparency"] = 0
    return png(image)


# (name, image bytes, file name, extra fields, expected status, words in the message)
BAD_AND_ODD = [
    ("empty file", b"", "a.png", {}, 400, "not an image"),
    ("text named png", b"hello world\n" * 50, "a.png", {}, 400, "not an image"),
    ("html named jpg", b"<html><script>alert(1)</script></html>", "a.jpg", {}, 400, "not an image"),
    ("pdf", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n" + b"0" * 200, "a.png", {}, 400, "not an image"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"/>', "a.svg", {}, 400, "not an image"),
    ("zip", b"PK\x03\x04" + b"\x00" * 100, "a.png", {}, 400, "not an image"),
    ("png magic then garbage", b"\x89PNG\r\n\x1a\n" + b"\xff" * 100, "a.png", {}, 400, "not an image"),
    ("truncated png", png(_noise())[:2000], "a.png", {}, 400, "damaged or incomplete"),
    ("truncated jpeg", png(_noise(), "JPEG")[:3000], "a.jpg", {}, 400, "damaged or incomplete"),
    ("bomb past pillow's limit", _png_header(30000, 30000), "a.png", {}, 400, "limit of 50 megapixels"),
    ("64 megapixel header", _png_header(8000, 8000), "a.png", {}, 400, "64 megapixels"),
    ("extreme panorama", png(Image.new("RGB", (4000, 100))), "a.png", {}, 400, "times longer"),
    ("extreme tower", png(Image.new("RGB", (100, 1000))), "a.png", {}, 400, "times longer"),
    ("tiny", png(Image.new("RGB", (16, 16))), "a.png", {}, 400, "only 16x16"),
    ("one pixel", png(Image.new("RGB", (1, 1))), "a.png", {}, 400, "only 1x1"),
    ("just over the upload cap", png(_noise((600, 600))), "a.png", {}, 400, "larger than 1 MB"),
    ("empty prompt", PHOTO, "a.png", {"prompt": ""}, 400, "Please write a prompt"),
    ("control characters only", PHOTO, "a.png", {"prompt": "\x00\x1b\t \u200b"}, 400, "Please write a prompt"),
    ("very long prompt", PHOTO, "a.png", {"prompt": "waves " * 1000}, 400, "characters long"),
    ("long negative prompt", PHOTO, "a.png", {"negative_prompt": "x" * 2000}, 400, "characters long"),
    ("frames not a number", PHOTO, "a.png", {"num_frames": "abc"}, 400, "Frames must be a number"),
    ("frames huge", PHOTO, "a.png", {"num_frames": "1000"}, 400, "Frames 1000 is out of range"),
    ("fps negative", PHOTO, "a.png", {"fps": "-5"}, 400, "FPS -5 is out of range"),
    ("steps zero", PHOTO, "a.png", {"num_inference_steps": "0"}, 400, "Steps 0 is out of range"),
    ("guidance nan", PHOTO, "a.png", {"guidance_scale": "nan"}, 400, "finite"),
    ("guidance overflow", PHOTO, "a.png", {"guidance_scale": "1e309"}, 400, "finite"),
    ("seed negative", PHOTO, "a.png", {"seed": "-7"}, 400, "Seed -7 is out of range"),
    ("seed fractional", PHOTO, "a.png", {"seed": "1.5"}, 400, "whole number"),
    ("unknown resolution", PHOTO, "a.png", {"resolution": "4k"}, 400, "Resolution '4k' is not available"),
    ("missing prompt field", PHOTO, "a.png", None, 400, "Please write a prompt"),
    ("missing image field", None, "a.png", {}, 400, "Please upload an image first"),  # or continue_from a video
    # Odd but fine: normalised and accepted.
    ("animated gif", _gif(), "a.gif", {}, 202, None),
    ("png named gif", png(Image.new("RGBA", (100, 100), (0, 200, 0, 255))), "a.gif", {}, 202, None),
    ("rgba", png(Image.new("RGBA", (200, 200), (0, 0, 0, 0))), "a.png", {}, 202, None),
    ("16-bit grey", png(Image.fromarray(np.full((100, 100), 40000, dtype=np.uint16))), "a.png", {}, 202, None),
    ("cmyk jpeg", png(Image.new("CMYK", (100, 100), (0, 255, 255, 0)), "JPEG"), "a.jpg", {}, 202, None),
    ("exif rotated", _exif_rotated(), "a.jpg", {}, 202, None),
    ("palette transparency", _palette_transparent(), "a.png", {}, 202, None),
    ("html in prompt", PHOTO, "a.png", {"prompt": "<b>waves</b><script>x</script>"}, 202, None),
    ("unicode prompt", PHOTO, "a.png", {"prompt": "海浪 roll in 🌊 slowly"}, 202, None),
    ("webp", png(Image.new("RGB", (200, 150), (9, 9, 9)), "WEBP"), "a.webp", {}, 202, None),
]


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_bad_input_corpus_gets_clear_messages_and_the_server_stays_up(app):
    assert len(BAD_AND_ODD) >= 30
    before = None
    for round_number in range(2):
        for name, data, filename, fields, expected, words in BAD_AND_ODD:
            if fields is None:  # the prompt field left out entirely
                status, body = call(app, "POST", "/api/jobs", fields={}, files={"image": (filename, data)})
            elif data is None:  # no image at all
                status, body = call(app, "POST", "/api/jobs", fields={"prompt": "waves"})
            else:
                status, body = submit(app, data, filename, **fields)
            assert status == expected, (name, body)
            if words:
                assert words in body["error"], (name, body)
                assert "Traceback" not in body["error"]
            else:
                call(app, "POST", f"/api/jobs/{body['id']}/cancel")
        if round_number == 0:
            before = _rss_mb(app.process.pid)
    assert call(app, "GET", "/api/health")[0] == 200
    assert _rss_mb(app.process.pid) - before < 150, "memory grew over a second pass of the corpus"
    assert "Traceback" not in app.log()


def test_a_network_bound_server_requires_the_generated_password(app_process, tmp_path):
    server = app_process(env=FAST_ENV, host="0.0.0.0").start()
    credentials = tmp_path / "data" / "credentials.txt"
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"
    username, password = credentials.read_text().strip().split(":", 1)
    assert username == "admin" and len(password) >= 20
    assert call(server, "GET", "/api/jobs")[0] == 401
    assert call(server, "GET", "/api/jobs", token="wrong")[0] == 401
    assert submit(server, PHOTO)[0] == 401
    assert call(server, "GET", "/api/jobs", token=password)[0] == 200
    assert call(server, "GET", "/config")[0] == 401  # the page needs the login too
    assert call(server, "GET", "/api/health")[0] == 200
    status, job = submit(server, PHOTO, token=password)
    assert status == 202 and wait_done(server, job["id"], token=password)["state"] == "done"


def test_login_off_on_a_network_address_takes_a_flag_and_warns(app_process):
    server = app_process("--no-login", env=FAST_ENV, host="0.0.0.0").start()
    assert call(server, "GET", "/api/jobs")[0] == 200
    assert "Login is OFF" in server.log()


def test_a_queued_job_survives_kill_9_and_the_interrupted_one_can_be_retried(app_process, tmp_path):
    """One long job, killed with the server at its first step; the short ones queued behind it."""
    server = app_process(env=FAST_ENV).start()
    ids = [submit(server, PHOTO, prompt="job 0", num_inference_steps="20")[1]["id"]]
    ids += [submit(server, PHOTO, prompt=f"job {n}")[1]["id"] for n in (1, 2)]
    deadline = time.monotonic() + 60
    while call(server, "GET", f"/api/jobs/{ids[0]}")[1]["progress"]["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.kill9()

    again = AppProcess(tmp_path, server.port, env=FAST_ENV).start()
    try:
        first = call(again, "GET", f"/api/jobs/{ids[0]}")[1]
        assert first["state"] == "interrupted" and "Retry" in first["message"]
        assert [wait_done(again, job_id)["state"] for job_id in ids[1:]] == ["done", "done"]
        status, retried = call(again, "POST", f"/api/jobs/{ids[0]}/retry")
        assert status == 202 and wait_done(again, retried["id"])["state"] == "done"
        assert not list((tmp_path / "outputs").glob(".*tmp*"))  # no half-written file survived
    finally:
        again.stop()


def test_an_injected_out_of_memory_is_recovered_without_a_restart(app_process):
    server = app_process(env={**FAST_ENV, "I2V_TEST_FAULTS": "oom@denoise*2"}).start()
    pid = server.process.pid
    status, job = submit(server, PHOTO, resolution="512p")
    failed = wait_done(server, job["id"])
    assert failed["state"] == "failed"
    assert "ran out of memory at 512p" in failed["message"] and "Lower the resolution to 256p" in failed["message"]
    status, job = submit(server, PHOTO)
    assert wait_done(server, job["id"])["state"] == "done"
    assert server.process.pid == pid and server.process.poll() is None


def test_a_fatal_gpu_error_restarts_the_process_and_it_serves_again(app_process):
    server = app_process(env={**FAST_ENV, "I2V_TEST_FAULTS": "fatal@denoise*1"}).start()
    status, job = submit(server, PHOTO)
    failed = None
    deadline = time.monotonic() + 120
    while True:  # the process replaces itself: the API may not answer for a few seconds
        try:
            status, body = call(server, "GET", f"/api/jobs/{job['id']}")
        except OSError:
            status, body = None, None
        if status == 200 and body["state"] == "failed":
            failed = body
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert "restarted itself" in failed["message"]
    server.wait_ready()
    assert "Restarting the server process" in server.log()
    status, job = submit(server, PHOTO)
    assert wait_done(server, job["id"])["state"] == "done"
    assert server.process.poll() is None  # the same process, replaced in place


def test_gradio_clients_one_liner_with_only_a_picture_and_a_prompt_makes_a_video(app, tmp_path):
    # Gradio's documented way to call any Gradio app, every other parameter left out (no page id among
    # them): the server's defaults (here 256p, 8 frames at 8 fps), a page id of its own.
    from gradio_client import Client, handle_file

    picture = tmp_path / "photo.png"
    picture.write_bytes(PHOTO)
    video, info, *_ = Client(app.url, verbose=False).predict(handle_file(str(picture)), "the waves roll in slowly",
                                                             api_name="/generate")
    decoded = probe_video(video["video"] if isinstance(video, dict) else video)
    assert (decoded.frames, decoded.fps, decoded.codec) == (8, 8.0, "h264")
    assert "Done" in info
