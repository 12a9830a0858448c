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
from image_to_video.http_guard import event_body_limit

from .app_process import AppProcess, free_port

PASSWORD = "correct-horse-battery"
#: Connections one client address may hold in the module's server.
CONNECTIONS_PER_CLIENT = 8
#: A login (the server listens on the network address, reached here on loopback), a 1 MB upload
#: limit, a 2 s body deadline, a 1 s header deadline and 8 connections per client, so each limit is
#: reached in a moment.
ENV = {"I2V_SERVER_PASSWORD": PASSWORD, "I2V_SERVER_MAX_UPLOAD_MB": "1",
       "I2V_SERVER_BODY_TIMEOUT_S": "2", "I2V_SERVER_HEADER_TIMEOUT_S": "1",
       "I2V_SERVER_MAX_CONNECTIONS_PER_CLIENT": str(CONNECTIONS_PER_CLIENT)}


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


def _until_closed(sock: socket.socket, trickle: bytes = b"", every: float = 0.2, limit: float = 6.0) -> bytes:
    """What the server sends on ``sock`` until it closes it (or ``limit`` s pass), sending a byte of
    ``trickle`` every ``every`` s meanwhile."""
    answer, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        if select.select([sock], [], [], every)[0]:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        elif trickle:
            try:
                sock.sendall(trickle[:1])
            except OSError:
                break
            trickle = trickle[1:]
    return answer


@pytest.mark.parametrize("trickle", [b"", b"X-Slow: " + b"a" * 100], ids=["silent", "a header byte every 0.2 s"])
def test_a_request_whose_headers_never_end_is_closed_at_the_header_deadline(server, trickle):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        answer = _until_closed(sock, trickle)
    seconds = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.8 < seconds < 3, f"held for {seconds:.1f} s with a 1 s header deadline"
    assert "server.header_timeout_s" in _body_json(answer.decode())["error"]
    assert httpx.get(server.url + "api/health").status_code == 200


def test_one_client_holds_at_most_its_share_of_connections_while_others_are_served(server):
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(CONNECTIONS_PER_CLIENT)]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            refused = _until_closed(extra, limit=3)
        assert refused.startswith(b"HTTP/1.1 429"), refused
        assert "server.max_connections_per_client" in _body_json(refused.decode())["error"]
        with _client("127.0.0.2") as other:  # another address is served meanwhile
            assert other.get(server.url + "api/health").status_code == 200
        # The idle ones sent nothing: each is closed at the header deadline, without an answer.
        assert all(_until_closed(sock, limit=3) == b"" for sock in held)
    finally:
        for sock in held:
            sock.close()
    assert httpx.get(server.url + "api/health").status_code == 200  # the address is served again


def test_an_event_body_larger_than_any_page_event_needs_is_refused_before_the_login(server):
    limit = event_body_limit()
    body = b'{"data": [' + b"{}," * (2**20 // 3 - 10)
    head = _head("/gradio_api/queue/join", 2**20).replace("multipart/form-data; boundary=xyz", "application/json")
    status, answer, _sent, seconds = raw_request(server.port, head, [body, b"{}" * ((2**20 - len(body)) // 2)])
    assert status == 413, answer
    assert seconds < 5
    message = _body_json(answer)["error"]
    assert "1024 KB" in message and f"{limit // 1024} KB" in message and "upload" in message


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
    assert answer.status_code == 400 and "3" in answer.json()["error"]  # needs 3 inputs, got 0
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
def serve_locally(small_config):
    """Serve the real app (not started: no model needed for logins) with uvicorn in a thread, configured
    as ``run_server`` configures it, with ``overrides`` to the config: (its URL, the throttle's clock)."""
    from image_to_video.app import build
    from image_to_video.server import connection_limits, create_app, uvicorn_config

    servers, threads, builds = [], [], []

    def serve(**overrides) -> tuple[str, Clock]:
        clock = Clock()
        config = small_config(**{"server.login": "on", "server.port": free_port(), **overrides})
        builds.append(build(config))
        asgi = create_app(config, builds[-1].queue, builds[-1].outputs, builds[-1].engine,
                          credentials=Credentials("admin", PASSWORD), throttle=LoginThrottle(clock=clock))
        servers.append(uvicorn.Server(uvicorn_config(asgi, config, connection_limits(config, 1024))))
        threads.append(threading.Thread(target=servers[-1].run, daemon=True))
        threads[-1].start()
        deadline = time.monotonic() + 60
        while not servers[-1].started:
            assert time.monotonic() < deadline and threads[-1].is_alive()
            time.sleep(0.05)
        return f"http://127.0.0.1:{config.server.port}/", clock

    yield serve
    for server, thread in zip(servers, threads):
        server.should_exit = True
        thread.join(10)
    for built in builds:
        built.lock.release()


@pytest.fixture
def local_server(serve_locally):
    """The real app, login on, served in a thread: (its URL, the throttle's clock)."""
    return serve_locally()


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


def _wrong_token(client: httpx.Client, url: str, claimed: str | None = None, token: str = "guess") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if claimed:
        headers["X-Forwarded-For"] = claimed
    return client.get(url + "api/jobs", headers=headers)


def test_a_claimed_address_neither_dodges_the_throttle_nor_locks_out_its_owner(local_server):
    url, _clock = local_server
    attacker, victim = _client("127.0.0.1"), _client("127.0.0.2")
    for _ in range(5):  # wrong passwords in the victim's name
        _wrong_token(attacker, url, claimed="127.0.0.2")
    assert _wrong_token(victim, url, token=PASSWORD).status_code == 200, "the victim was locked out"
    # Rotating made-up addresses: throttled all the same (here after 20 in all, the proxy's share).
    answers = [_wrong_token(attacker, url, claimed=f"10.9.{n // 250}.{n % 250}").status_code for n in range(60)]
    assert 429 in answers and answers.index(429) <= 20, answers


def test_behind_an_undeclared_proxy_one_wrong_client_locks_out_only_itself(local_server):
    url, _clock = local_server
    proxy = _client("127.0.0.1")  # every client's connection comes from the proxy
    statuses = [_wrong_token(proxy, url, claimed="203.0.113.5").status_code for _ in range(6)]
    assert statuses[-1] == 429
    refused = _wrong_token(proxy, url, claimed="203.0.113.5", token=PASSWORD)
    assert refused.status_code == 429 and "203.0.113.5 via 127.0.0.1" in refused.json()["error"]
    assert _wrong_token(proxy, url, claimed="203.0.113.6", token=PASSWORD).status_code == 200


def test_a_declared_proxy_names_the_client_the_throttle_counts(serve_locally):
    url, _clock = serve_locally(**{"server.trusted_proxies": "127.0.0.1"})
    proxy = _client("127.0.0.1")
    for _ in range(5):
        _wrong_token(proxy, url, claimed="203.0.113.5")
    refused = _wrong_token(proxy, url, claimed="203.0.113.5", token=PASSWORD)
    assert refused.status_code == 429 and "(203.0.113.5)" in refused.json()["error"]
    assert _wrong_token(proxy, url, claimed="203.0.113.6", token=PASSWORD).status_code == 200
    assert _wrong_token(proxy, url, token=PASSWORD).status_code == 200  # the proxy itself is not locked out


def test_thousands_of_nested_brackets_are_not_json_we_read_not_a_crash():
    from image_to_video.http_guard import _json

    assert _json(b"[" * 5000 + b"]" * 5000) is None
    assert _json(b'{"data": [1]}') == {"data": [1]}


# -- the page's event routes in-process: the body cap counts bytes as they come ----------------------


def _event_guard(inputs: int = 17):
    """A ``PageEventGuard`` before a stand-in for Gradio that records the bodies it gets."""
    from types import SimpleNamespace

    from image_to_video.http_guard import PageEventGuard

    event = SimpleNamespace(fn=print, queue=True, api_visibility="public", api_name="queue_many", inputs=[0] * inputs)
    reached = []

    async def gradio(_scope, receive, send):
        reached.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return PageEventGuard(gradio, SimpleNamespace(fns={0: event})), reached


def _post(guard, chunks: list[bytes], declared: int | None = None) -> tuple[int, dict | None, int]:
    """Post ``chunks`` to ``queue/join`` through ``guard``: (status, JSON answer, chunks it pulled)."""
    import asyncio

    headers = [(b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": headers}
    pending, sent = list(chunks), []

    async def receive():
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if body else None, len(chunks) - len(pending)


def test_a_chunked_event_body_is_refused_as_soon_as_it_passes_the_cap_and_no_more_is_read():
    guard, reached = _event_guard()
    chunk = b" " * 65536
    status, answer, pulled = _post(guard, [b'{"data": [', *[chunk] * 480, b"]}"])  # 30 MB, no length declared
    assert status == 413 and "page action" in answer["error"], answer
    assert pulled == event_body_limit() // len(chunk) + 2, f"{pulled} chunks of 64 KB were read"
    assert not reached


def test_the_largest_body_the_page_sends_still_passes():
    """Many pictures at their limit: 20 prompts of 1000 Chinese characters, the negative prompt, and a
    description of each of the 70 files the action looks at (their bytes went through the upload)."""
    guard, reached = _event_guard()
    prompt = "海浪缓缓涌来" * 167  # 1002 characters: a little over the limit, as a user may paste
    files = [{"path": f"/tmp/gradio/{'f' * 64}/{'照片' * 60}-{n}.png", "url": f"http://127.0.0.1:7860/gradio_api/file="
              f"/tmp/gradio/{'f' * 64}/{'照片' * 60}-{n}.png", "size": 31457280, "orig_name": f"{'照片' * 60}-{n}.png",
              "mime_type": "image/png", "is_stream": False, "meta": {"_type": "gradio.FileData"}} for n in range(70)]
    data = [files, "\n".join([prompt] * 20), prompt, "512p", 16, 8, 50, 9.0, -1, True, "a" * 100, "zh-CN", 1,
            "none", "off", [], "1"]
    body = json.dumps({"data": data, "fn_index": 0, "session_hash": "s" * 11, "event_data": None,
                       "trigger_id": 123}, ensure_ascii=False).encode()
    status, _answer, _pulled = _post(guard, [body], declared=len(body))
    assert status == 200 and reached == [body]
    assert len(body) < event_body_limit() * 0.8, f"the page's largest body, {len(body)} bytes, is near the cap"
