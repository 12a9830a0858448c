"""A hostile client, reusable against any running instance of the app: bad paths, owners, sizes,
methods, slow bodies and slow headers, idle connections, event bodies of many MB, long texts in
every text slot and form field, and made-up X-Forwarded-For addresses, thrown at the page's own
event routes and at the HTTP API alike.

Every attack is a plain HTTP request on loopback (no gradio_client: a hostile caller does not use
it). After each one the server must still answer its health check at once; what each attack must
not achieve is checked by the tests in ``test_hostile.py``:

    client = HostileClient(app.url)
    for answer in client.page_event_attacks():   # every event of the page, every input slot
        # refused (a 4xx, or an event's error, saying what is wrong) or taken: never a crash or a bare error
        assert answer.refused_cleanly or answer.accepted, answer

The page's events are read from the page's own ``/config`` (name and number of inputs), and the
API's routes and form fields from its ``/openapi.json``, so a new event, route or field is attacked
as soon as it exists.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Server files a caller must never get the page to read, hash or copy (the tests add their own).
SERVER_FILES = ("/etc/passwd", "/etc/hostname", "/proc/self/environ", "/dev/zero", "/dev/urandom")

#: Values that are not what any input expects.
JUNK = [None, 5, -1, 1e308, True, [], {}, [1, [2, [3]]], "x" * 100_000, "\x00", "../../etc/passwd",
        "api", "cli", {"path": 5}, {"meta": {}}, {"path": None, "meta": {"_type": "gradio.FileData"}},
        {"url": "file:///etc/passwd", "meta": {"_type": "gradio.FileData"}},
        {"url": "http://127.0.0.1:1/x.png", "path": "x.png", "meta": {"_type": "gradio.FileData"}}]

#: Long texts for every text slot and form field: just past the prompt limit (generation.max_prompt_chars,
#: 1000) in Latin and Chinese letters, 100,000 characters, 50,000 lines, and control characters that JSON
#: writes six bytes each.
LONG_TEXTS = ["x" * 1001, "海" * 1001, "y" * 100_000, "a\n" * 50_000, "\x01" * 40_000]

#: Ids and names a hostile caller puts in a URL path.
BAD_IDS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%00", "a" * 5000, "video_20260101_000000_abcdef12/../x",
           "' OR '1'='1", "\u202e\u0000", "*", "."]

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")

#: ``I2V_SOAK=full`` (read once, at import): the sweeps try every junk value, server file and id above.
#: Otherwise (CI) each sweep tries the fixed subset below, one of each kind, in the same order every run.
FULL_SOAK = os.environ.get("I2V_SOAK", "").strip().lower() == "full"
#: None, a number, a nested list, 100,000 characters, a path out, a FileData without a path, a file:// URL.
JUNK_SUBSET = (0, 1, 7, 8, 10, 15, 16)
#: /etc/passwd (a secret) and /dev/zero (never ends).
SERVER_FILE_SUBSET = (0, 3)
#: A path out, the same encoded, a NUL, 5,000 characters.
BAD_ID_SUBSET = (0, 1, 2, 3)
#: 1,001 Chinese characters (just past the limit).
LONG_TEXT_SUBSET = (1,)


def soak(values, subset: tuple[int, ...]) -> list:
    """``values`` whole under ``I2V_SOAK=full``, else the items at the fixed indexes ``subset``."""
    return list(values) if FULL_SOAK else [values[i] for i in subset]


def junk() -> list:
    """The junk values a sweep gives each input slot."""
    return soak(JUNK, JUNK_SUBSET)


def long_texts() -> list[str]:
    """The long texts a sweep gives each text slot and form field."""
    return soak(LONG_TEXTS, LONG_TEXT_SUBSET)


def file_data(path: str) -> dict:
    """A page file input as Gradio's client sends it, naming ``path`` on the server."""
    return {"path": path, "orig_name": Path(path).name or "x.png", "meta": {"_type": "gradio.FileData"}}


@dataclass
class Answer:
    """What the server answered to one attack."""

    attack: str
    status: int
    body: str
    #: For a page event: "complete", "error" or "" (no event stream came back).
    outcome: str = ""
    seconds: float = 0.0
    #: True when the answer is a page event's stream (Gradio answers those 200; the outcome says how it ended).
    streamed: bool = False

    @property
    def message(self) -> str:
        try:
            data = json.loads(self.body)
        except ValueError:
            return self.body
        return data.get("error", "") if isinstance(data, dict) else self.body

    @property
    def words(self) -> str:
        """What the answer says: its JSON ``error`` (else FastAPI's ``detail``), a JSON string, or a body that is
        not JSON; "" when it says nothing (an empty body, null, a bare "Error", JSON with neither field)."""
        try:
            data = json.loads(self.body)
        except ValueError:
            data = self.body
        if isinstance(data, dict):
            data = data.get("error") or data.get("detail") or ""
        text = data if isinstance(data, str) else json.dumps(data) if data else ""
        return "" if text.strip().lower() in ("", "null", "none", "error") else text.strip()

    @property
    def accepted(self) -> bool:
        """The server took the call: a page event that completed, or any other 2xx answer."""
        return self.outcome == "complete" if self.streamed else 200 <= self.status < 300

    @property
    def refused_cleanly(self) -> bool:
        """A real refusal, saying what is wrong: a 4xx with words, or (Gradio's event streams answer 200 and
        end a refused call with their "error" event) an event's error with words. Junk that was accepted (a
        2xx, a completed event), a server error (a 5xx) and an answer without words are not."""
        if not self.words:
            return False
        return 400 <= self.status < 500 or (self.streamed and self.status == 200 and self.outcome == "error")

    def __str__(self) -> str:
        return f"{self.attack}: {self.status} {self.outcome} {self.body[:300]!r} ({self.seconds:.1f} s)"


class HostileClient:
    """Attacks on one server at ``base_url`` (``http://127.0.0.1:PORT/``)."""

    def __init__(self, base_url: str, *, token: str | None = None, cookie: str | None = None, timeout: float = 30):
        self.base_url = base_url.rstrip("/") + "/"
        parts = urllib.parse.urlsplit(self.base_url)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if cookie:
            self.headers["Cookie"] = cookie
        self.timeout = timeout

    # -- plain requests ----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                attack: str = "") -> Answer:
        started = time.monotonic()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, "/" + path.lstrip("/"), body=body, headers={**self.headers, **(headers or {})})
            response = connection.getresponse()
            data = response.read().decode("utf-8", "replace")
            return Answer(attack or f"{method} {path[:80]}", response.status, data,
                          seconds=time.monotonic() - started)
        finally:
            connection.close()

    def post_json(self, path: str, payload, attack: str = "") -> Answer:
        return self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}, attack)

    def healthy_within(self, seconds: float = 2.0) -> bool:
        """The health check answers within ``seconds`` (the event loop is not blocked)."""
        try:
            with urllib.request.urlopen(self.base_url + "api/health", timeout=seconds) as response:
                return response.status == 200
        except OSError:
            return False

    # -- the page's events -------------------------------------------------------------------------

    def page_events(self) -> list[dict]:
        """The page's events that have an API name: ``{"name", "inputs", "fn_index"}``, from ``/config``."""
        config = json.loads(self.request("GET", "config").body)
        return [{"name": d["api_name"], "inputs": len(d["inputs"]), "fn_index": d["id"]}
                for d in config["dependencies"] if d.get("api_name")]

    def call_event(self, name: str, data: list, attack: str = "") -> Answer:
        """One call through ``/gradio_api/call/<name>``: submit, then read its event stream to the end."""
        started = time.monotonic()
        submitted = self.post_json(f"gradio_api/call/{name}", {"data": data}, attack or f"call/{name}")
        if submitted.status != 200:
            return submitted
        event_id = json.loads(submitted.body)["event_id"]
        stream = self.request("GET", f"gradio_api/call/{name}/{event_id}", attack=submitted.attack)
        outcome, body = "", stream.body
        for block in stream.body.split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
            if lines.get("event") in ("complete", "error"):
                outcome, body = lines["event"], lines.get("data", "")
        return Answer(submitted.attack, stream.status, body, outcome, time.monotonic() - started, streamed=True)

    def page_event_attacks(self, values: list | None = None, *, only: set[str] | None = None) -> Iterator[Answer]:
        """Every page event, each input slot in turn given each of ``values`` (default: ``JUNK``
        and server files as file inputs: ``soak``'s subset in CI), the other slots a harmless value."""
        values = values if values is not None else [*junk(), *(file_data(p) for p in soak(SERVER_FILES,
                                                                                             SERVER_FILE_SUBSET))]
        for event in self.page_events():
            if only and event["name"] not in only:
                continue
            for slot in range(event["inputs"]):
                for value in values:
                    data = [None] * event["inputs"]
                    data[slot] = value
                    yield self.call_event(event["name"], data,
                                          f"call/{event['name']} slot {slot} = {json.dumps(value)[:60]}")

    def page_route_attacks(self, values: list | None = None) -> Iterator[Answer]:
        """Every event of the page, private ones included, by number through the page's own routes
        (``run/predict`` for instant events, ``queue/join`` for queued ones), each input slot given
        each of ``values`` (default: ``junk()``)."""
        config = json.loads(self.request("GET", "config").body)
        for event in config["dependencies"]:
            for slot in range(len(event["inputs"])):
                for value in junk() if values is None else values:
                    data = [None] * len(event["inputs"])
                    data[slot] = value
                    attack = f"fn_index {event['id']} ({event.get('api_name')}) slot {slot} = {json.dumps(value)[:60]}"
                    if event.get("queue"):
                        answer = self.queue_join(event["id"], data, session=uuid.uuid4().hex)
                    else:
                        answer = self.post_json("gradio_api/run/predict", {"data": data, "fn_index": event["id"],
                                                                          "session_hash": uuid.uuid4().hex})
                    answer.attack = attack
                    yield answer

    def event_on(self, elem_id: str, trigger: str) -> dict:
        """The page's event (private ones too) that ``trigger`` (``"upload"``, ``"click"``) of the component
        with ``elem_id`` runs: ``{"name", "inputs", "fn_index"}``, from ``/config``."""
        config = json.loads(self.request("GET", "config").body)
        (component,) = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]
        (event,) = [d for d in config["dependencies"] if [component, trigger] in [list(t) for t in d["targets"]]]
        return {"name": event.get("api_name"), "inputs": len(event["inputs"]), "fn_index": event["id"]}

    def queue_join(self, fn_index: int, data: list, session: str = "hostile") -> Answer:
        """The page's own route: ``/gradio_api/queue/join`` with an event number, then its stream."""
        joined = self.post_json("gradio_api/queue/join", {"data": data, "fn_index": fn_index, "session_hash": session,
                                                          "event_data": None, "trigger_id": None},
                                f"queue/join fn_index={fn_index}")
        if joined.status != 200:
            return joined
        stream = self.request("GET", f"gradio_api/queue/data?session_hash={session}", attack=joined.attack)
        outcome, body = "", stream.body
        for block in stream.body.split("\n\n"):
            for line in block.splitlines():
                if not line.startswith("data: "):
                    continue
                message = json.loads(line[6:])
                if message.get("msg") == "process_completed":
                    success = message.get("success", False)
                    outcome = "complete" if success else "error"
                    output = message.get("output", {})
                    body = json.dumps(output.get("data") if success else output.get("error"))
        return Answer(joined.attack, stream.status, body, outcome, streamed=True)

    # -- the HTTP API ------------------------------------------------------------------------------

    def api_routes(self) -> list[tuple[str, str]]:
        """``(method, path template)`` of every API route, from the server's own OpenAPI."""
        spec = json.loads(self.request("GET", "openapi.json").body)
        return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]

    def api_attacks(self) -> Iterator[Answer]:
        """Every API path with every method, and every ``{id}`` replaced by each of ``BAD_IDS`` (``soak``'s
        subset in CI)."""
        templates = sorted({path for _method, path in self.api_routes()})
        for template in templates:
            ids = [urllib.parse.quote(i, safe="%") for i in soak(BAD_IDS, BAD_ID_SUBSET)] if "{" in template else [None]
            for bad in ids:
                path = template if bad is None else _fill(template, bad)
                for method in METHODS:
                    yield self.request(method, path, b"{}" if method in ("POST", "PUT", "PATCH") else None,
                                       {"Content-Type": "application/json"}, f"{method} {path[:90]}")

    def api_form_fields(self, path: str = "/api/jobs") -> list[str]:
        """The text fields of the multipart form ``POST path`` takes, from the server's own OpenAPI."""
        spec = json.loads(self.request("GET", "openapi.json").body)
        content = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        schema = spec["components"]["schemas"][content["$ref"].rsplit("/", 1)[1]] if "$ref" in content else content
        files = ("binary", "contentMediaType")  # how OpenAPI 3.0 and 3.1 mark a file
        return [name for name, field in schema["properties"].items() if not any(f in json.dumps(field) for f in files)]

    def api_form_attacks(self, values: list | None = None, path: str = "/api/jobs",
                         picture: bytes = b"", harmless: dict | None = None) -> Iterator[Answer]:
        """``POST path`` with each form field in turn given each of ``values`` (default: ``long_texts()``),
        the other fields ``harmless`` and the image ``picture``."""
        for name in self.api_form_fields(path):
            for value in long_texts() if values is None else values:
                fields = {**(harmless or {}), name: value}
                body, content_type = _multipart(fields, picture)
                yield self.request("POST", path, body, {"Content-Type": content_type},
                                   f"POST {path} {name} = {json.dumps(value)[:40]} ({len(value)} characters)")

    def forwarded_login_attempts(self, tries: int, claimed=None, path="api/jobs") -> list[int]:
        """``tries`` wrong bearer tokens, each claiming (``X-Forwarded-For``) the address ``claimed(n)`` (default:
        a new 10.x.y.z each time): the statuses. A server that believes the header never throttles them, and
        lets anyone lock a victim out by claiming the victim's address."""
        claimed = claimed or (lambda n: f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")
        return [self.request("GET", path, headers={"Authorization": "Bearer wrong-guess",
                                                   "X-Forwarded-For": claimed(n)}).status for n in range(tries)]

    # -- connections: slow headers, idle connections --------------------------------------------------

    def slow_headers(self, pause: float = 0.5, limit: float = 60.0) -> tuple[int | None, float]:
        """A request line, then one header byte every ``pause`` s: (the status the server answered, 0 if it
        closed without one, None if it still held the connection after ``limit`` s; seconds held)."""
        started = time.monotonic()
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: {self.host}\r\n".encode())
            sock.settimeout(pause)
            while time.monotonic() - started < limit:
                status = _status_if_answered(sock)
                if status is not None:
                    return status, time.monotonic() - started
                try:
                    sock.sendall(b"x")
                except OSError:
                    return 0, time.monotonic() - started
            return None, time.monotonic() - started

    def idle_connections(self, count: int, wait: float = 1.0) -> tuple[list[socket.socket], list[int]]:
        """Open ``count`` connections that send nothing: (those still open after ``wait`` s, for the caller to
        close; the statuses of those the server refused or closed meanwhile, 0 for a close without one)."""
        sockets = [socket.create_connection((self.host, self.port), timeout=self.timeout) for _ in range(count)]
        time.sleep(wait)
        still, refused = [], []
        for sock in sockets:
            sock.settimeout(0.01)
            status = _status_if_answered(sock)
            if status is None:
                still.append(sock)
            else:
                refused.append(status)
                sock.close()
        return still, refused

    def event_body_attacks(self, send_mb: float = 30.0) -> Iterator[tuple[str, int | None, float, int]]:
        """Every page event's routes (``call/<name>``, ``run/<name>``, ``queue/join``) given a body of
        ``send_mb`` MB of ``{"data": [{}, {}, ...]}``, declared and then chunked: (attack, status, seconds,
        bytes sent before the answer)."""
        events = self.page_events()
        paths = ["gradio_api/queue/join", "gradio_api/run/predict",
                 *[f"gradio_api/{kind}/{e['name']}" for e in events for kind in ("call", "run")]]
        for path in paths:
            for declared in (send_mb, None):
                status, seconds, sent = self._stream_body(path, declared_mb=declared, send_mb=send_mb, pause=0.0,
                                                          content_type="application/json", piece=b"{},")
                yield f"POST {path} ({'declared' if declared else 'chunked'})", status, seconds, sent

    # -- sizes and slow bodies ---------------------------------------------------------------------

    def oversized_body(self, path: str, declared_mb: float, send_mb: float = 1.0) -> tuple[int | None, float, int]:
        """Declare a ``declared_mb`` body and start sending it; returns (status or None, seconds to
        the answer, bytes sent before the server answered or closed)."""
        return self._stream_body(path, declared_mb=declared_mb, send_mb=send_mb, pause=0.0)

    def chunked_body(self, path: str, send_mb: float) -> tuple[int | None, float, int]:
        """Send ``send_mb`` MB with ``Transfer-Encoding: chunked`` (no length declared)."""
        return self._stream_body(path, declared_mb=None, send_mb=send_mb, pause=0.0)

    def slow_body(self, path: str, seconds: float) -> tuple[int | None, float, int]:
        """Trickle a body at one byte every half second for up to ``seconds``."""
        return self._stream_body(path, declared_mb=1.0, send_mb=seconds * 2 / 2**20, pause=0.5, chunk=1)

    def _stream_body(self, path: str, *, declared_mb: float | None, send_mb: float, pause: float,
                     chunk: int = 64 * 1024, content_type: str = "multipart/form-data; boundary=x",
                     piece: bytes | None = None) -> tuple[int | None, float, int]:
        headers = {**self.headers, "Content-Type": content_type}
        if declared_mb is None:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(int(declared_mb * 2**20))
        started = time.monotonic()
        sent = 0
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            head = f"POST /{path.lstrip('/')} HTTP/1.1\r\nHost: {self.host}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            sock.sendall(head.encode())
            sock.settimeout(0.01 if pause == 0 else pause)
            if piece is not None:  # that piece repeated, after the opening of a JSON event body
                sock.sendall(b'{"data": [' if declared_mb is not None else b'a\r\n{"data": [\r\n')
                piece = piece * (chunk // len(piece))
            else:
                piece = b"--x\r\n" + b"a" * max(0, chunk - 5) if chunk > 5 else b"a" * chunk
            while sent < send_mb * 2**20:
                try:
                    data = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if declared_mb is None else piece
                    sock.sendall(data)
                    sent += len(piece)
                except OSError:  # the server closed the connection
                    break
                status = _status_if_answered(sock)
                if status is not None:
                    return status, time.monotonic() - started, sent
            sock.settimeout(self.timeout)
            return _status_if_answered(sock), time.monotonic() - started, sent


def _multipart(fields: dict, picture: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()).encode()
    if picture:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'.encode()
        body += picture + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _fill(template: str, value: str) -> str:
    start, end = template.index("{"), template.index("}")
    return template[:start] + value + template[end + 1:]


def _status_if_answered(sock: socket.socket) -> int | None:
    """The status of the answer already sent on ``sock``; None if none yet; 0 if it closed without one."""
    try:
        first = sock.recv(64)
    except (TimeoutError, BlockingIOError, socket.timeout):
        return None
    except OSError:
        return 0
    if not first:  # closed without an answer
        return 0
    try:
        return int(first.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0
