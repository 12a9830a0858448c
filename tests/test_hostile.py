"""A hostile client against the real server (demo model, loopback): the page's own event routes and
the HTTP API get bad paths, owners, ids, methods, sizes, slow bodies and headers, idle connections,
event bodies of many MB, long texts and made-up forwarded addresses, and must turn every one away
with words, answer their health check at once throughout, and leave everything as it was.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image, PngImagePlugin

from .app_process import AppProcess, free_port
from .hostile import METHODS, SERVER_FILES, Answer, HostileClient, file_data, junk, long_texts

MARKER = b"hostile-canary-" + uuid.uuid4().hex.encode()
#: The target's header deadline and connections per client: small, so that each is reached in a moment.
HEADER_TIMEOUT_S = 2
CONNECTIONS_PER_CLIENT = 16
PASSWORD = "hostile-correct-password"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """The real app, its state in a temp folder, plus files a caller must never get it to read."""
    root = tmp_path_factory.mktemp("hostile")
    port = free_port()
    app = AppProcess(root, port, env={"GRADIO_TEMP_DIR": str(root / "gradio"),
                                      "I2V_SERVER_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                                      "I2V_SERVER_MAX_CONNECTIONS_PER_CLIENT": str(CONNECTIONS_PER_CLIENT)}).start()
    secret = root / "private" / "secret.png"  # a real picture: read, it would make a video
    secret.parent.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("canary", MARKER.decode())
    Image.new("RGB", (96, 96), (200, 30, 30)).save(secret, pnginfo=info)
    link_dir = root / "gradio" / ("f" * 64)  # a symlink planted where uploads go, pointing out
    link_dir.mkdir(parents=True, exist_ok=True)
    (link_dir / "upload.png").symlink_to(secret)
    fifo = root / "private" / "fifo.png"
    os.mkfifo(fifo)
    paths = [*SERVER_FILES, str(secret), str(root / "data" / "jobs.sqlite3"), str(link_dir / "upload.png"),
             str(root / "gradio" / ".." / "private" / "secret.png"), str(fifo), "secret.png", "data/jobs.sqlite3"]
    try:
        yield {"app": app, "client": HostileClient(app.url), "root": root, "paths": paths}
    finally:
        app.stop()


@pytest.fixture(scope="module")
def login_target(tmp_path_factory, demo_dir):
    """The app with a login, served in this process as ``run_server`` serves it (its model not loaded:
    logins need none): its URL."""
    from image_to_video.app import build
    from image_to_video.auth import Credentials
    from image_to_video.config import load_config
    from image_to_video.server import connection_limits, create_app, uvicorn_config

    root = tmp_path_factory.mktemp("hostile-login")
    folders = {f"paths.{name}": str(root / name) for name in ("output_dir", "models_dir", "log_dir", "state_dir")}
    config = load_config(overrides={"server.login": "on", "server.host": "127.0.0.1", "server.port": free_port(),
                                    "model.source": str(demo_dir), **folders})
    built = build(config)
    asgi = create_app(config, built.queue, built.outputs, built.engine, credentials=Credentials("admin", PASSWORD))
    server = uvicorn.Server(uvicorn_config(asgi, config, connection_limits(config, 1024)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.server.port}/"
    finally:
        server.should_exit = True
        thread.join(10)
        built.lock.release()


def api_job(app: AppProcess, prompt: str) -> dict:
    picture = io.BytesIO()
    Image.new("RGB", (80, 64), (10, 90, 160)).save(picture, "PNG")
    boundary = uuid.uuid4().hex
    small = {"prompt": prompt, "resolution": "256p", "num_frames": 8, "num_inference_steps": 10}
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in small.items()).encode()
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'.encode()
    body += picture.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(app.url + "api/jobs", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def api_state(app: AppProcess, job_id: str) -> str:
    with urllib.request.urlopen(f"{app.url}api/jobs/{job_id}", timeout=10) as response:
        return json.loads(response.read())["state"]


def files_containing(folder: Path, needles: tuple[bytes, ...]) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(needle in data for needle in needles):
                found.append(path)
    return found


def refused_by_gradios_run_route(answer: Answer) -> bool:
    """The page's own refusal on ``run/predict``, which Gradio answers with a 500 whatever failed (gradio/routes.py,
    ``predict``: ``except BaseException`` -> status 500): told from a crash by gr.Error's payload, words and a title."""
    try:
        data = json.loads(answer.body)
    except ValueError:
        return False
    return (answer.status == 500 and answer.attack.startswith("fn_index") and not answer.streamed
            and isinstance(data, dict) and "title" in data and bool(answer.words))


@pytest.mark.parametrize("answer", [
    Answer("call/cancel slot 0 = null", 200, '["Nothing to cancel."]', "complete", streamed=True),  # junk taken
    Answer("POST api/jobs", 202, '{"id": "abc", "state": "queued"}'),  # taken
    Answer("fn_index 0 slot 0 = -1", 200, '{"data": [1], "is_generating": false}'),  # taken
    Answer("POST api/jobs", 400, ""),  # empty
    Answer("POST api/jobs", 400, '{"error": ""}'),  # no words
    Answer("call/generate slot 0 = 5", 200, "null", "error", streamed=True),  # a bare error
    Answer("call/generate slot 0 = 5", 200, '{"error": null, "title": "Error"}', "error", streamed=True),
    Answer("call/generate slot 0 = 5", 200, '"Error"', "error", streamed=True),
    Answer("call/generate slot 0 = 5", 200, "", "", streamed=True),  # the stream ended without an outcome
    Answer("GET api/jobs/x", 500, '{"error": "Something went wrong on the server."}'),  # a server error, worded
    Answer("fn_index 0 slot 0 = null", 500, '{"error": "The page sent something it cannot have sent."}'),
])
def test_an_accepted_empty_or_server_error_answer_is_not_a_clean_refusal(answer):
    assert not answer.refused_cleanly, answer


@pytest.mark.parametrize("answer", [
    Answer("POST api/jobs", 400, '{"error": "The prompt is empty: write what should move."}'),
    Answer("GET api/jobs/x", 404, '{"detail": "Not Found"}'),
    Answer("call/apply_preset slot 0 = null", 404, '{"error": "The page has no action called \'apply_preset\'."}'),
    Answer("call/generate slot 0 = 5", 200, '{"error": "Upload the picture again.", "title": "Error"}', "error",
           streamed=True),  # Gradio's event stream: 200, and the refusal is its error event
    Answer("queue/join fn_index=23", 200, '"Upload the picture again."', "error", streamed=True),
])
def test_a_4xx_or_an_event_error_saying_what_is_wrong_is_a_clean_refusal(answer):
    assert answer.refused_cleanly, answer


def test_no_page_event_reads_a_server_file_or_hangs(target):
    client, root = target["client"], target["root"]
    videos_before = set((root / "outputs").glob("*.mp4"))
    refused = []
    for answer in client.page_event_attacks([file_data(p) for p in target["paths"]]):
        assert answer.refused_cleanly, answer
        assert client.healthy_within(2.0), f"the server stopped answering after {answer}"
        refused.append(answer)
    assert len(refused) > 50
    generate = [a for a in refused if a.attack.startswith("call/generate slot 0")]
    assert generate and all(a.outcome == "error" and "upload" in a.body.lower() for a in generate), generate[:3]
    assert set((root / "outputs").glob("*.mp4")) == videos_before, "a video was made from a server file"
    copied = files_containing(root / "gradio", (MARKER, b"SQLite format 3", b"root:x:0:0"))
    assert not copied, f"server files were copied into Gradio's cache: {copied}"
    assert "Traceback" not in target["app"].log()


def test_the_page_own_queue_route_and_the_run_route_refuse_server_files_too(target):
    client = target["client"]
    generate = next(e for e in client.page_events() if e["name"] == "generate")
    for path in target["paths"]:
        data = [None] * generate["inputs"]
        data[0] = file_data(path)
        joined = client.queue_join(generate["fn_index"], data, session=uuid.uuid4().hex)
        assert joined.refused_cleanly and joined.outcome != "complete", joined
        assert client.healthy_within(2.0), joined
        ran = client.post_json("gradio_api/run/generate", {"data": data, "fn_index": generate["fn_index"]})
        assert ran.status in (400, 403, 404, 405) and ran.message, ran
    assert not files_containing(target["root"] / "gradio", (MARKER, b"SQLite format 3", b"root:x:0:0"))


def test_the_own_video_drop_and_the_fast_download_take_no_server_file_through_the_page_own_route(target):
    """The drop box for a video of one's own and the Fast LoRAs' download button are private events (no
    ``/call`` name, so the sweeps above pass them by): through the page's own queue route, every slot given
    each server file (a FIFO among them) is refused or answered with nothing kept, the server never waits."""
    client, root = target["client"], target["root"]
    for elem_id, trigger in (("bring-video", "upload"), ("fast-download", "click")):
        event = client.event_on(elem_id, trigger)
        for slot in range(event["inputs"]):
            for path in target["paths"]:
                data = [None] * event["inputs"]
                data[slot] = file_data(path)
                answer = client.queue_join(event["fn_index"], data, session=uuid.uuid4().hex)
                assert answer.refused_cleanly or answer.accepted, (elem_id, slot, path, str(answer))
                assert client.healthy_within(2.0), (elem_id, slot, path)
    assert not list((root / "data" / "brought").glob("*.mp4"))  # no server file became a video to continue
    assert not files_containing(root / "gradio", (MARKER, b"SQLite format 3", b"root:x:0:0"))
    assert "Traceback" not in target["app"].log()


@pytest.mark.soak
def test_junk_in_every_slot_of_every_page_event_gets_words_not_a_crash(target):
    client = target["client"]
    accepted = set()
    for answer in client.page_event_attacks():
        assert answer.refused_cleanly or answer.accepted, answer  # words, or an answer: never a crash or a bare error
        if answer.accepted:
            accepted.add(answer.attack.split()[0])
        assert client.healthy_within(2.0), answer
    # Only events that take any value answer junk instead of refusing it: cancel (nothing of this caller's to
    # cancel) and page_owner (a new page id, as every visitor gets).
    assert accepted <= {"call/cancel", "call/page_owner"}, accepted
    assert "Traceback" not in target["app"].log()


@pytest.mark.soak
def test_junk_through_the_page_own_routes_to_every_event_gets_words_not_a_crash(target):
    client = target["client"]
    answers = list(client.page_route_attacks())
    slots = sum(len(event["inputs"]) for event in json.loads(client.request("GET", "config").body)["dependencies"])
    assert slots > 40 and len(answers) == slots * len(junk())  # every slot of every event got every value
    for answer in answers:  # refused, or (an instant event given junk it takes) answered: never a crash
        assert answer.refused_cleanly or answer.accepted or refused_by_gradios_run_route(answer), answer
    assert client.healthy_within(2.0)
    assert "Traceback" not in target["app"].log()


def test_page_callers_cannot_see_or_cancel_the_http_api_jobs(target):
    app, client = target["app"], target["client"]
    jobs = [api_job(app, f"api job {n}") for n in range(3)]
    owners = ["api", "cli", "", "anonymous", "ui", "*", "%", "api' OR '1'='1"]
    answers = list(client.page_event_attacks(owners, only={"cancel", "tick", "both_tables", "retry", "open", "delete"}))
    for answer in answers:  # refused, or answered (cancel: nothing of this caller's to cancel); the jobs stay whole
        assert answer.refused_cleanly or answer.accepted, answer
        for job in jobs:
            assert job["id"] not in answer.body, f"{answer} shows an API job"
    deadline = time.monotonic() + 300
    states = {}
    while time.monotonic() < deadline:
        states = {job["id"]: api_state(app, job["id"]) for job in jobs}
        if all(state in ("done", "failed", "cancelled", "interrupted") for state in states.values()):
            break
        time.sleep(0.5)
    assert set(states.values()) == {"done"}, states


@pytest.mark.soak
def test_every_api_route_with_every_method_and_bad_id_answers_json_words(target):
    client = target["client"]
    answers = list(client.api_attacks())
    assert len(answers) > 100 and {answer.attack.split()[0] for answer in answers} == set(METHODS)
    for answer in answers:
        assert answer.status < 500, answer
        method = answer.attack.split()[0]
        if answer.status >= 400 and method != "HEAD":
            assert answer.message and isinstance(json.loads(answer.body), dict), answer
            assert "error" in json.loads(answer.body), answer
    assert client.healthy_within(2.0)
    assert "Traceback" not in target["app"].log()


@pytest.mark.parametrize("path", ["api/jobs", "gradio_api/upload", "gradio_api/call/generate", "login"])
def test_an_oversized_body_is_refused_before_it_is_read(target, path):
    client, root = target["client"], target["root"]
    status, seconds, sent = client.oversized_body(path, declared_mb=200, send_mb=200)
    assert status == 413, (status, seconds, sent)
    assert sent < 20 * 2**20, f"{sent / 2**20:.0f} MB were taken in before the answer"
    status, _seconds, sent = client.chunked_body(path, send_mb=120)
    assert status in (0, 400, 413), status  # 400: a multipart parser refused the junk before the limit
    assert sent < 80 * 2**20, f"{sent / 2**20:.0f} MB of a chunked body were taken in"
    big = [p for p in (root / "gradio").rglob("*") if p.is_file() and p.stat().st_size > 10 * 2**20]
    assert not big, big
    assert client.healthy_within(2.0)


def test_a_slow_body_does_not_hold_the_server(target):
    client = target["client"]
    with ThreadPoolExecutor(1) as pool:
        trickle = pool.submit(client.slow_body, "api/jobs", 90)
        while not trickle.done():
            assert client.healthy_within(2.0), "a trickled body blocked the server"
            time.sleep(1)
        status, seconds, _sent = trickle.result()
    assert status in (0, 400, 408), status
    assert seconds < 75, f"a trickled body held a connection for {seconds:.0f} s"


def test_slow_headers_and_idle_connections_do_not_hold_the_server(target):
    client = target["client"]
    status, seconds = client.slow_headers(pause=0.3, limit=20)
    assert status == 408 and seconds < HEADER_TIMEOUT_S + 2, f"slow headers held a connection for {seconds:.0f} s"
    held, refused = client.idle_connections(CONNECTIONS_PER_CLIENT + 4, wait=0.5)
    try:
        assert len(held) <= CONNECTIONS_PER_CLIENT and refused and set(refused) == {429}, (len(held), refused)
    finally:
        for sock in held:
            sock.close()
    assert client.healthy_within(2.0)


@pytest.mark.soak
def test_event_bodies_of_many_mb_are_refused_before_they_are_read(target):
    client = target["client"]
    for attack, status, seconds, sent in client.event_body_attacks(send_mb=30):
        assert status == 413 and seconds < 5, (attack, status, seconds)
        assert sent < 10 * 2**20, f"{attack}: {sent / 2**20:.0f} MB were taken in before the answer"
        assert client.healthy_within(2.0), attack


@pytest.mark.soak
def test_long_texts_in_every_slot_of_every_page_event_and_every_api_field_get_words(target):
    client = target["client"]
    for answer in client.page_event_attacks(long_texts()):
        assert answer.refused_cleanly or answer.accepted, answer
        assert client.healthy_within(2.0), answer
    picture = io.BytesIO()
    Image.new("RGB", (80, 64), (10, 90, 160)).save(picture, "PNG")
    harmless = {"prompt": "waves", "resolution": "256p", "num_frames": "8", "num_inference_steps": "10"}
    # Control characters only are an empty text once cleaned (request.clean_prompt), which the negative prompt
    # may be: every other long text must be refused.
    visible = [text for text in long_texts() if text.replace("\x01", "").strip()]
    answers = list(client.api_form_attacks(visible, picture=picture.getvalue(), harmless=harmless))
    assert len(answers) >= 10 * len(visible)  # every field of the form
    for answer in answers:  # no long text is taken: each field says what is wrong with it
        assert answer.refused_cleanly, answer
    assert client.healthy_within(2.0)
    assert "Traceback" not in target["app"].log()


def test_made_up_forwarded_addresses_neither_dodge_the_throttle_nor_lock_out_their_owner(login_target):
    client = HostileClient(login_target)
    statuses = client.forwarded_login_attempts(30)
    assert 429 in statuses and statuses.index(429) <= 20, statuses  # the proxy's share: 20 wrong passwords
    HostileClient(login_target).forwarded_login_attempts(5, claimed=lambda _n: "127.0.0.2")
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as victim:
        answer = victim.get(login_target + "api/jobs", headers={"Authorization": f"Bearer {PASSWORD}"})
    assert answer.status_code == 200, "the owner of a claimed address was locked out"
