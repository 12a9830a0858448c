"""The HTTP server's edges, against the real `python main.py --demo` on loopback: body size and time
limits before any route reads a byte, the page's event routes, JSON errors, headers; and the login
throttle in-process with a clock the test moves."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest
import uvicorn

from image_to_video.auth import Credentials, LoginThrottle

from .app_process import AppProcess, free_port

PASSWORD = "correct-horse-battery"
#: A login (the server listens on the network address, reached here on loopback), a 1 MB upload
#: limit and a 2 s body deadline, so each limit is reached in a moment.
ENV = {"I2V_SERVER_PASSWORD": PASSWORD, "I2V_SERVER_MAX_UPLOAD_MB": "1",
       "I2V_SERVER_BODY_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    port = free_port()
    gradio_tmp, tmp = root / "gradio", root / "tmp"
    gradio_tmp.mkdir()
    tmp.mkdir()
    app = AppProcess(root, port, env={**ENV, "GRADIO_TEMP_DIR": str(gradio_tmp), "TMPDIR": str(tmp)},
                     host="0.0.0.0").start()
    app.temp_dirs = (gradio_tmp, tmp)
    app.temp_before = _temp_files(app)  # the page's example pictures, copied there at start
    yield app
    app.stop()


@pytest.fixture(scope="module")
def cookie(server) -> str:
    """The page's login cookie, got the way the page's login form gets it."""
    response = httpx.post(server.url + "login", data={"username": "admin", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return "; ".join(f"{name}={value}" for name, value in response.cookies.items())


def raw_request(port: int, head: str, chunks, *, pause: float = 0.0, timeout: float = 15.0):
    """Send ``head`` then the byte strings of ``chunks`` (stopping as soon as an answer comes);
    returns (status, the answer's text, bytes of body sent, seconds until the answer)."""
    sent, started = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], pause)[0]:
                break  # the server answered: stop sending
            try:
                sock.sendall(chunk)
            except OSError:  # it closed the connection on us: read what it said
                break
            sent += len(chunk)
        answer = b""
        sock.settimeout(max(0.1, timeout - (time.monotonic() - started)))
        try:
            while b"\r\n\r\n" not in answer or not _complete(answer):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (TimeoutError, ConnectionResetError):
            pass
    seconds = time.monotonic() - started
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    return status, answer.decode(errors="replace"), sent, seconds


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def _head(path: str, length: int | None, cookie: str = "") -> str:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    cookie = f"Cookie: {cookie}\r\n" if cookie else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
            f"{cookie}{framing}\r\n\r\n")


#: The start of a real multipart upload: the parser takes what follows as the file's bytes.
PREAMBLE = (b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _body_json(answer: str) -> dict:
    return json.loads(answer.partition("\r\n\r\n")[2])


def _temp_files(server) -> set:
    return {p for folder in server.temp_dirs for p in folder.rglob("*") if p.is_file()}


def _new_temp_files(server) -> set:
    return _temp_files(server) - server.temp_before


@pytest.mark.parametrize("path", ["/api/jobs", "/gradio_api/upload", "/login"])
def test_a_declared_200_mb_body_is_refused_at_once_before_the_login(server, path):
    body = [PREAMBLE, *[b"x" * 65536] * 3200]
    status, answer, sent, seconds = raw_request(server.port, _head(path, 200 * 2**20), body)
    assert status == 413, answer
    assert sent < 20 * 2**20 and seconds < 5  # what the kernel buffers took before the answer came
    message = _body_json(answer)["error"]
    assert "200.0 MB" in message and "server.max_upload_mb" in message and "smaller" in message
    assert not _new_temp_files(server)


@pytest.mark.parametrize("path", ["/api/jobs", "/gradio_api/upload"])
def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(server, cookie, path):
    body = [_chunked(PREAMBLE), *[_chunked(b"x" * 65536)] * 1600]
    # Logged in (the page's cookie), so that the upload route reads the body rather than refusing at once.
    status, answer, sent, _seconds = raw_request(server.port, _head(path, None, cookie), body, pause=0.002)
    assert status == 413, answer
    assert sent < 20 * 2**20, f"{sent / 2**20:.0f} MB were taken in before the answer"
    if path == "/api/jobs":
        assert "larger than" in _body_json(answer)["error"]
    else:  # Gradio's own check on the file part (max_file_size, the same limit) comes first here
        assert "1048576 bytes" in answer
    assert not _new_temp_files(server)
    assert httpx.get(server.url + "api/health").status_code == 200


def test_a_trickled_body_gets_408_when_its_deadline_passes(server):
    trickle = [PREAMBLE, *[b"x"] * 60]  # a byte every 0.2 s: 12 s for the whole body
    status, answer, _sent, seconds = raw_request(server.port, _head("/api/jobs", 1000), trickle, pause=0.2)
    assert status == 408, answer
    assert 1.5 < seconds < 6
    message = _body_json(answer)["error"]
    assert "2 s" in message and "server.body_timeout_s" in message


def test_a_body_within_the_limit_still_reaches_the_login_check(server):
    response = httpx.post(server.url + "api/jobs", files={"image": ("a.png", b"x" * 1000)})
    assert response.status_code == 401 and "Bearer" in response.json()["error"]


def test_every_response_carries_the_framing_and_sniffing_headers(server, cookie):
    for path, headers in [("", {"Cookie": cookie}), ("api/health", {}), ("api/nothing", {}), ("config", {})]:
        response = httpx.get(server.url + path, headers=headers)
        assert response.headers["x-frame-options"] == "SAMEORIGIN", path
        assert response.headers["content-security-policy"] == "frame-ancestors 'self'", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path


def test_unknown_api_routes_and_methods_answer_json_error(server):
    for method, path, expected in [("GET", "api/nothing", 404), ("PUT", "api/jobs", 405),
                                   ("DELETE", "api/health", 405), ("POST", "api/jobs/x/y/z", 404)]:
        response = httpx.request(method, server.url + path)
        assert response.status_code == expected, (method, path, response.text)
        body = response.json()
        assert set(body) == {"error"}, body
        assert path.split("/")[1] in body["error"] or method in body["error"], body
    assert set(httpx.put(server.url + "api/jobs").headers["allow"].split(", ")) >= {"GET", "POST"}


def _page_events(server, cookie) -> dict:
    config = httpx.get(server.url + "config", headers={"Cookie": cookie}).json()
    return {d["api_name"]: d for d in config["dependencies"]}


def test_the_run_route_runs_only_the_named_event(server, cookie):
    events = _page_events(server, cookie)
    post = lambda path, body: httpx.post(server.url + "gradio_api/" + path, json=body,  # noqa: E731
                                         headers={"Cookie": cookie})
    delete = events["delete"]["id"]
    answer = post("run/whatever", {"data": ["x", "en"], "fn_index": delete})
    assert answer.status_code == 404 and "whatever" in answer.json()["error"]
    answer = post("run/cancel", {"data": ["x", "en"], "fn_index": delete})
    assert answer.status_code == 400 and "fn_index" in answer.json()["error"]
    answer = post("run/nosuch", {"data": []})
    assert answer.status_code == 404 and "nosuch" in answer.json()["error"]
    answer = post("run/delete", {"data": ["x", "en"]})  # a page helper, not part of the API
    assert answer.status_code == 404
    answer = post("call/nosuch", {"data": []})
    assert answer.status_code == 404 and "nosuch" in answer.json()["error"]
    answer = post("queue/join", {"data": [], "fn_index": 999, "session_hash": "abc"})
    assert answer.status_code == 400 and "999" in answer.json()["error"]
    answer = post("run/predict", {"data": [], "fn_index": delete, "session_hash": "abc"})
    assert answer.status_code == 400 and "2" in answer.json()["error"]  # needs 2 inputs, got 0
    # The page's own way to call its helpers, and the API's public name, still work.
    answer = post("run/predict", {"data": ["nobody", "en"], "fn_index": events["cancel"]["id"],
                                  "session_hash": "abc"})
    assert answer.status_code == 200 and "cancel" in answer.json()["data"][0].lower()  # the handler's words
    answer = post("run/cancel", {"data": ["nobody", "en"]})
    assert answer.status_code == 200 and "cancel" in answer.json()["data"][0].lower()
    assert "Traceback" not in server.log()


# -- the login throttle, in-process with a clock the test moves ------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def local_server(small_config):
    """The real app (not started: no model needed for logins) served by uvicorn in a thread."""
    from image_to_video.app import build
    from image_to_video.server import create_app

    clock = Clock()
    config = small_config(**{"server.login": "on"})
    built = build(config)
    asgi = create_app(config, built.queue, built.outputs, built.engine,
                      credentials=Credentials("admin", PASSWORD), throttle=LoginThrottle(clock=clock))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", clock
    server.should_exit = True
    thread.join(10)


def _client(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_wrong_bearer_tokens_lock_out_that_address_until_the_wait_passes(local_server):
    url, clock = local_server
    attacker, other = _client("127.0.0.1"), _client("127.0.0.2")
    answers = [attacker.get(url + "api/jobs", headers={"Authorization": "Bearer guess"}).status_code
               for _ in range(100)]
    assert answers[0] == 401 and answers[-1] == 429
    right = {"Authorization": f"Bearer {PASSWORD}"}
    refused = attacker.get(url + "api/jobs", headers=right)
    assert refused.status_code == 429
    wait = int(refused.headers["retry-after"])
    assert wait > 0 and f"{wait} s" in refused.json()["error"]
    assert other.get(url + "api/jobs", headers=right).status_code == 200  # another address is not locked out
    clock.now += wait
    assert attacker.get(url + "api/jobs", headers=right).status_code == 200


def test_wrong_page_logins_lock_out_that_address_until_the_wait_passes(local_server):
    url, clock = local_server
    attacker, other = _client("127.0.0.1"), _client("127.0.0.2")
    answers = [attacker.post(url + "login", data={"username": "admin", "password": "guess"}).status_code
               for _ in range(100)]
    assert answers[0] == 400 and answers[-1] == 429
    right = {"username": "admin", "password": PASSWORD}
    refused = attacker.post(url + "login", data=right)
    assert refused.status_code == 429 and "wait" in refused.json()["error"].lower()
    wait = int(refused.headers["retry-after"])
    assert other.post(url + "login", data=right).status_code == 200
    clock.now += wait
    assert attacker.post(url + "login", data=right).status_code == 200


def test_thousands_of_nested_brackets_are_not_json_we_read_not_a_crash():
    from image_to_video.http_guard import _json

    assert _json(b"[" * 5000 + b"]" * 5000) is None
    assert _json(b'{"data": [1]}') == {"data": [1]}
