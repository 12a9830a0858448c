"""The page's event routes against a hostile caller: the real `python main.py --demo` on loopback,
spoken to over plain HTTP as any client could (no gradio_client to tidy the payloads up)."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from .app_process import AppProcess, free_port

UPLOAD_AGAIN = "Upload the picture again"
FAST = {"resolution": "256p", "num_frames": 8, "steps": 10}


def http(app: AppProcess, method: str, path: str, body: bytes | None = None, headers=None, timeout=30):
    """(status, body bytes) of one request."""
    request = urllib.request.Request(app.url.rstrip("/") + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def upload(app: AppProcess, content: bytes, name="photo.png") -> str:
    """The path the page's upload route stored ``content`` under."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, answer = http(app, "POST", "/gradio_api/upload", body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, answer
    return json.loads(answer)[0]


def event(app: AppProcess, api_name: str, data: list, timeout=120) -> tuple[str, object]:
    """Call one of the page's events through ``/gradio_api/call``: (last event name, its data)."""
    status, answer = http(app, "POST", f"/gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200, answer
    event_id = json.loads(answer)["event_id"]
    status, stream = http(app, "GET", f"/gradio_api/call/{api_name}/{event_id}", timeout=timeout)
    last = ("", None)
    for block in stream.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            last = (lines["event"], json.loads(lines.get("data", "null")))
    return last


def instant_event(app: AppProcess, api_name: str, data: list) -> tuple[int, object]:
    """Run one of the page's instant events as the page itself does (``run/predict`` with its number)."""
    status, config = http(app, "GET", "/config")
    assert status == 200, config
    (index,) = [d["id"] for d in json.loads(config)["dependencies"] if d.get("api_name") == api_name]
    status, answer = http(app, "POST", "/gradio_api/run/predict",
                          json.dumps({"data": data, "fn_index": index, "session_hash": uuid.uuid4().hex}).encode(),
                          {"Content-Type": "application/json"})
    return status, json.loads(answer)


def file_data(path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def png_bytes(colour=(30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(buffer, "PNG")
    return buffer.getvalue()


def owner_token(app: AppProcess) -> str:
    """A page id as the server issues it to a new browser."""
    kind, data = event(app, "page_owner", [""])
    assert kind == "complete", data
    return data[0]


def generate_data(image, owner, prompt="the waves roll in slowly", seed=3, random_seed=False, **settings):
    s = {**FAST, **settings}
    # ... then the steps after the model, as the page sends them by default (none), the aspect, no end frame,
    # the model picked (the server's own), how smoother motion would add frames (RIFE), the MP4's quality and
    # the LoRAs (none)
    return [image, prompt, "", s["resolution"], s["num_frames"], 8, s["steps"], 9.0, seed, random_seed, owner, "en",
            "", 1, "none", 0, [], 1, "auto", None, "i2vgen-xl", "rife", 18, ""]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    port = free_port()
    app = AppProcess(root, port, env={"GRADIO_TEMP_DIR": str(root / "gradio")}).start()
    app.cache = root / "gradio"
    try:
        yield app
    finally:
        app.stop()


def cached_files(app) -> set[str]:
    return {p.name for p in app.cache.rglob("*") if p.is_file()}


def test_server_files_are_never_taken_as_the_picture(server, tmp_path):
    token = owner_token(server)
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes((200, 10, 10)))
    link_dir = server.cache / "planted"
    link_dir.mkdir(parents=True, exist_ok=True)
    (link_dir / "link.png").unlink(missing_ok=True)
    (link_dir / "link.png").symlink_to(secret)
    before = cached_files(server)
    hostile = ["/etc/passwd", str(server.root / "data" / "jobs.sqlite3"), str(secret), str(link_dir / "link.png"),
               str(server.cache / ".." / "data" / "jobs.sqlite3")]
    for path in hostile:
        kind, data = event(server, "generate", generate_data(file_data(path), token))
        assert kind == "error" and UPLOAD_AGAIN in str(data), (path, kind, data)
    assert cached_files(server) == before  # nothing was copied into the cache
    assert not list((server.root / "outputs").glob("*.mp4"))


def test_a_device_file_never_blocks_the_server(server):
    token = owner_token(server)
    answers = {}

    def attack():
        answers["zero"] = event(server, "generate", generate_data(file_data("/dev/zero"), token), timeout=30)

    caller = threading.Thread(target=attack, daemon=True)
    caller.start()
    time.sleep(0.5)
    started = time.monotonic()
    status, _ = http(server, "GET", "/api/health", timeout=5)
    assert status == 200 and time.monotonic() - started < 1.0
    caller.join(30)
    assert UPLOAD_AGAIN in str(answers["zero"][1])


def test_malformed_picture_payloads_get_the_clear_message(server):
    token = owner_token(server)
    for payload in ({"path": 5}, {"meta": {}}, [file_data("/etc/passwd")], "x" * 200_000,
                    {"path": "/etc/passwd"}, {"url": "http://127.0.0.1:1/a.png", "meta": {"_type": "gradio.FileData"}}):
        kind, data = event(server, "generate", generate_data(payload, token))
        assert kind == "error" and UPLOAD_AGAIN in str(data), (str(payload)[:80], kind, data)


def test_another_input_cannot_smuggle_a_server_file_either(server):
    """A file object in a text field or in the video box (the language switch sends the player's value)."""
    before = cached_files(server)
    status, answer = instant_event(server, "relabel", ["en", file_data("/etc/passwd"), "i2vgen-xl"])
    assert status >= 400 and UPLOAD_AGAIN in str(answer), (status, answer)
    status, answer = instant_event(server, "tick", [file_data(str(server.root / "data" / "jobs.sqlite3")), "en",
                                                    None, None, None])
    assert status >= 400 and UPLOAD_AGAIN in str(answer), (status, answer)
    assert cached_files(server) == before


def test_an_uploaded_picture_still_makes_a_video(server):
    token = owner_token(server)
    path = upload(server, png_bytes())
    kind, data = event(server, "generate", generate_data(file_data(path), token), timeout=300)
    assert kind == "complete", data
    assert data[0]["path"].endswith(".mp4")
    assert len(list((server.root / "outputs").glob("*.mp4"))) >= 1


def test_the_server_still_stops_on_sigterm_after_the_attacks(tmp_path, free_port):
    app = AppProcess(tmp_path, free_port, env={"GRADIO_TEMP_DIR": str(tmp_path / "gradio")}).start()
    try:
        token = owner_token(app)
        threading.Thread(target=lambda: event(app, "generate", generate_data(file_data("/dev/zero"), token),
                                              timeout=20), daemon=True).start()
        time.sleep(1)
        os.kill(app.process.pid, signal.SIGTERM)
        assert app.process.wait(30) is not None
    finally:
        if app.process.poll() is None:
            app.kill9()


def test_a_double_submit_through_the_event_route_makes_one_video(server):
    token = owner_token(server)
    path = upload(server, png_bytes((10, 200, 10)))
    before = set((server.root / "outputs").glob("*.mp4"))
    answers = []
    calls = [threading.Thread(target=lambda: answers.append(
        event(server, "generate", generate_data(file_data(path), token, seed=11), timeout=300))) for _ in range(2)]
    for call in calls:
        call.start()
    for call in calls:
        call.join(300)
    assert [kind for kind, _ in answers] == ["complete", "complete"], answers
    assert len({Path(data[0]["path"]).name for _, data in answers}) == 1
    made = set((server.root / "outputs").glob("*.mp4")) - before
    assert len(made) == 1
    kind, data = event(server, "generate", generate_data(file_data(path), token, seed=12), timeout=300)
    assert kind == "complete" and len(set((server.root / "outputs").glob("*.mp4")) - before) == 2


def test_gradios_cache_is_swept_on_schedule_in_the_mounted_page(tmp_path, monkeypatch, free_port):
    """The page mounted as the server mounts it: uploads and copies older than the age go, the
    examples stay."""
    import fastapi
    import gradio as gr
    import uvicorn

    from image_to_video.config import load_config
    from image_to_video.job_queue import JobQueue
    from image_to_video.job_store import SQLiteJobStore
    from image_to_video.live import LiveJobs
    from image_to_video.outputs import OutputFolder
    from image_to_video.ui import build_ui

    from .helpers import FakeModel

    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    config = load_config(overrides={"server.cache_max_age_min": 0.05,  # 3 s, swept every 0.75 s
                                    "paths.output_dir": str(tmp_path / "outputs"),
                                    "paths.state_dir": str(tmp_path / "data")})
    queue = JobQueue(SQLiteJobStore(tmp_path / "jobs.db"), config, live=LiveJobs(), inputs_dir=tmp_path / "in")
    demo = build_ui(config, queue, OutputFolder(tmp_path / "outputs", config.outputs), FakeModel())
    demo.queue(api_open=False)
    app = gr.mount_gradio_app(fastapi.FastAPI(), demo, path="/")
    examples = {p for p in cache.rglob("*") if p.is_file()}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    client = type("Client", (), {"url": f"http://127.0.0.1:{free_port}/"})()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        for n in range(20):
            assert Path(upload(client, png_bytes((n, n, n)), name=f"p{n}.png")).is_file()
        assert len({p for p in cache.rglob("*") if p.is_file()} - examples) > 0
        deadline = time.monotonic() + 15
        while {p for p in cache.rglob("*") if p.is_file()} != examples and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {p for p in cache.rglob("*") if p.is_file()}
        assert left == examples and examples  # every upload gone, every example kept
    finally:
        server.should_exit = True
        thread.join(10)
