"""What every HTTP request passes before any route sees it: pure ASGI middleware.

``BodyGuard``      every response gets the anti-framing and no-sniffing headers; a request body
                   larger than the limit is refused with 413 as soon as that is known (from its
                   Content-Length, or once the bytes read pass the limit), and one that does not
                   arrive within the deadline gets 408, before any route, login check or
                   multipart parser has it.
``PageLoginGuard`` the page's login form (Gradio's ``POST /login``): an address with too many wrong
                   passwords is refused with 429 until its wait is over.
``PageEventGuard`` Gradio's event routes run only the page's own events, each by its own route:
                   an unknown name is 404, an ``fn_index`` that names no event, or another
                   event than the route's name, is 400, all as ``{"error": ...}``; a body larger
                   than any of the page's events needs is 413, before the rest of it is read.

Each refusal is an ``AppError`` with an i18n key, answered as JSON with ``Connection: close``.
They are plain ASGI (not Starlette's ``BaseHTTPMiddleware``) so that nothing buffers a body.

Below the ASGI app, ``GuardedH11Protocol`` (uvicorn's h11 protocol, built by ``guarded_protocol``)
holds each connection to ``ConnectionLimits``: its request's headers must arrive within
``server.header_timeout_s``, and one client address may hold at most
``server.max_connections_per_client`` connections (the server as a whole, what its open-file limit
leaves room for). uvicorn has a keep-alive timeout but none for headers, and no per-client bound:
without these, idle or trickling connections pile up until the process has no file left to open.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .auth import VIA, LoginThrottle
from .errors import (AppError, BodyTooLarge, BodyTooSlow, InvalidInput, LoginThrottled, NoSuchRoute, ServerFull,
                     TooManyConnections)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MB = 1024 * 1024
#: Room for the form's other fields and the multipart framing around an upload of the full size.
FORM_ALLOWANCE_BYTES = 256 * 1024
#: On every response: no other site may frame the page, no browser may guess a file's type.
SECURITY_HEADERS = [(b"x-frame-options", b"SAMEORIGIN"),
                    (b"content-security-policy", b"frame-ancestors 'self'"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin")]
#: Where Gradio serves the page's events (``gradio.route_utils.API_PREFIX``).
GRADIO_PREFIX = "/gradio_api/"
_DISCONNECT = {"type": "http.disconnect"}


def _error_response(error: AppError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """``error``'s JSON body and the headers it is sent with (the connection closes after it)."""
    body = json.dumps({"error": str(error)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *SECURITY_HEADERS,
               *[(k.lower().encode(), v.encode()) for k, v in error.headers.items()]]
    return body, headers


async def answer_error(send: Send, error: AppError) -> None:
    """Send ``error`` as ``{"error": ...}`` with its status and headers, and close the connection
    (whatever of the body is still coming is not read)."""
    body, headers = _error_response(error)
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client_address(scope: Scope) -> str:
    """The client's address as the login throttle counts it.

    The connection's address, or, from a proxy in ``server.trusted_proxies``, the client it names
    (uvicorn's proxy middleware has put it in ``scope["client"]``; from no one else is the header
    believed). A connection from this machine or a private network that says it forwards another
    client (``X-Forwarded-For``) is ``"<claimed> via <address>"``: behind a proxy nobody declared,
    each client is throttled on its own, so one who mistypes does not lock out everyone behind it,
    and ``LoginThrottle`` counts all of them against the proxy too, so made-up claims buy a few
    more guesses, never a way around the throttle or into someone else's lockout.
    """
    client = scope.get("client")
    address = client[0] if client else "unknown"
    claimed = _forwarded_client(scope)
    if claimed is None or claimed == address or not _is_local(address):
        return address
    return f"{claimed}{VIA}{address}"


def _forwarded_client(scope: Scope) -> str | None:
    """The last address in X-Forwarded-For (the one the nearest proxy added); "unknown" when that is
    not an IP address; None without the header."""
    values = [value for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"]
    if not values:
        return None
    last = b",".join(values).decode("latin-1").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return "unknown"


def _is_local(address: str) -> bool:
    """This machine or a private network: where a reverse proxy in front of the server is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyGuard:
    """The size and time limit on every request body, and the security headers on every response."""

    def __init__(self, app: ASGIApp, *, max_upload_mb: float, body_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.max_upload_mb = max_upload_mb
        self.max_bytes = int(max_upload_mb * MB) + FORM_ALLOWANCE_BYTES
        self.body_timeout_s = body_timeout_s
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await answer_error(send, self.too_large(declared))
            return
        has_body = bool(declared) or any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))
        await self.app(scope, *_Exchange(self, receive, send, has_body).channels())

    def too_large(self, size: int) -> BodyTooLarge:
        return BodyTooLarge(key="err_body_too_large", size=f"{size / MB:.1f}", limit=f"{self.max_upload_mb:g}")

    def too_slow(self) -> BodyTooSlow:
        return BodyTooSlow(key="err_body_too_slow", seconds=f"{self.body_timeout_s:g}")


class _Exchange:
    """One request's body count, deadline and response state, between the server and the app."""

    def __init__(self, guard: BodyGuard, receive: Receive, send: Send, has_body: bool):
        self.guard, self._receive, self._send = guard, receive, send
        self.read = 0
        self.deadline: float | None = None
        self.body_done = not has_body
        self.started = False  # the app has begun its response
        self.refused = False  # we answered instead of the app: what it sends now is dropped

    def channels(self) -> tuple[Receive, Send]:
        return self.receive, self.send

    async def receive(self) -> Message:
        if self.refused:
            return _DISCONNECT
        if self.body_done:  # after the body only a disconnect can come: no deadline
            return await self._receive()
        if self.deadline is None:
            self.deadline = self.guard._clock() + self.guard.body_timeout_s
        with anyio.move_on_after(max(0.0, self.deadline - self.guard._clock())):
            return await self._counted(await self._receive())
        return await self.refuse(self.guard.too_slow())

    async def _counted(self, message: Message) -> Message:
        if message["type"] != "http.request":
            return message
        self.read += len(message.get("body", b""))
        if self.read > self.guard.max_bytes:
            return await self.refuse(self.guard.too_large(self.read))
        self.body_done = not message.get("more_body", False)
        return message

    async def refuse(self, error: AppError) -> Message:
        """Answer ``error`` now (unless the app already began answering) and tell the app the
        client is gone, so it stops reading."""
        if not self.started:
            await answer_error(self._send, error)
        self.refused = True
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
            present = {name.lower() for name, _ in message.get("headers", ())}
            added = [h for h in SECURITY_HEADERS if h[0] not in present]
            if not self.body_done and b"connection" not in present:
                # Answered before the body was read (a 401, say): do not read the rest of it.
                added.append((b"connection", b"close"))
            message = {**message, "headers": [*message.get("headers", ()), *added]}
        await self._send(message)


class PageLoginGuard:
    """The page's login form, throttled per client address: refused with 429 while locked out;
    Gradio's answer (200 logged in, 400 wrong credentials) counts as a success or a failure."""

    def __init__(self, app: ASGIApp, throttle: LoginThrottle):
        self.app, self.throttle = app, throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/login":
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        wait = self.throttle.wait_s(address)
        if wait > 0:
            await answer_error(send, throttled(address, wait))
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    self.throttle.succeeded(address)
                elif message["status"] in (400, 401):
                    self.throttle.failed(address)
            await send(message)

        await self.app(scope, receive, counted)


def throttled(address: str, wait_s: float) -> LoginThrottled:
    """The refusal for a locked-out address, saying how long to wait."""
    return LoginThrottled(key="err_login_throttled", address=address, seconds=math.ceil(wait_s))


class PageEventGuard:
    """Gradio's event routes, held to the page's own events (``blocks.fns``) and their routes.

    The page runs its instant events by number on ``run/predict`` and its queued ones by number on
    ``queue/join``; API callers name an event that is not private (``run/<name>``, ``call/<name>``)
    or give its number on ``queue/join`` as ``gradio_client`` does. Anything else is refused here,
    so Gradio never runs an event a route does not name, nor raises on a name it cannot find.
    """

    def __init__(self, app: ASGIApp, blocks, max_body_bytes: int | None = None):
        """``max_body_bytes``: the largest event body taken (``event_body_limit``; its defaults when not given)."""
        self.app, self.blocks = app, blocks
        self.max_body_bytes = max_body_bytes or event_body_limit()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            body, replay = await self._read(scope, receive)
            self._check(*route, await _parse(body))
        except AppError as error:
            await answer_error(send, error)
            return
        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> tuple[bytes, Receive]:
        """The body, refused (413) as soon as its declared length or the bytes come so far pass the limit."""
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            raise self.too_large(declared)
        return await _read_all(receive, self.max_body_bytes, self.too_large)

    def too_large(self, size: int) -> BodyTooLarge:
        return BodyTooLarge(key="err_event_too_large", size=f"{size / 1024:.0f}",
                            limit=f"{self.max_body_bytes / 1024:.0f}")

    @staticmethod
    def _route(scope: Scope) -> tuple[str, str | None] | None:
        """(kind, event name) of a POST to an event route: ``run``, ``call`` or ``join``."""
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(GRADIO_PREFIX):
            return None
        parts = path[len(GRADIO_PREFIX):].strip("/").split("/")
        if parts == ["queue", "join"]:
            return "join", None
        if len(parts) == 2 and parts[0] in ("run", "api"):
            return "run", parts[1]
        if parts[0] == "call" and (len(parts) == 2 or (len(parts) == 3 and parts[1] == "v2")):
            return "call", parts[-1]
        return None

    def _check(self, kind: str, name: str | None, body: Any) -> None:
        index = body.get("fn_index") if isinstance(body, dict) else None
        if kind == "join":
            self._check_join(index, body)
        elif kind == "run" and name == "predict" and index is not None:
            self._check_run(self._by_index(index), body)  # the page's own instant call
        else:
            event = self._by_name(name)
            if kind == "run" and index is not None and self._by_index(index) is not event:
                raise InvalidInput(key="err_event_mismatch", index=index, name=name,
                                   actual=self._by_index(index).api_name)
            if kind == "run":
                self._check_run(event, body)

    def _check_run(self, event, body: Any) -> None:
        """``run/``: only instant events (the queue is closed to direct calls: ``api_open=False``)."""
        if event.queue:
            raise NoSuchRoute(key="err_event_queued", name=event.api_name)
        self._check_inputs(event, body)

    def _check_join(self, index: Any, body: Any) -> None:
        if index is None:
            return  # Gradio answers this itself, with words
        event = self._by_index(index)
        if not event.queue and event.api_visibility == "private":
            raise InvalidInput(key="err_event_not_queued", name=event.api_name)
        self._check_inputs(event, body)

    def _by_index(self, index: Any):
        event = self.blocks.fns.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
        if event is None or event.fn is None:  # a browser-only event (JavaScript) has nothing to run here
            raise InvalidInput(key="err_event_index", index=index)
        return event

    def _by_name(self, name: str | None):
        for event in self.blocks.fns.values():
            if event.api_name == name and event.api_visibility != "private":
                return event
        raise NoSuchRoute(key="err_no_event", name=name)

    @staticmethod
    def _check_inputs(event, body: Any) -> None:
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list) and len(data) < len(event.inputs):
            raise InvalidInput(key="err_event_inputs", name=event.api_name, needed=len(event.inputs), got=len(data))


#: What every event body may hold besides its texts and files: the small inputs (choices, numbers,
#: the page's id, the language), the table row a click sends, ``fn_index``, ``session_hash``.
EVENT_BASE_BYTES = 32 * 1024
#: The most JSON spends on one character a user typed (a control character is written \\u0001).
JSON_BYTES_PER_CHAR = 6
#: One file input's description (Gradio's ``FileData``: path, URL, original name, size, type).
FILE_DATA_BYTES = 2048
#: Files the Many-pictures action looks at beyond its limit, to say which were refused (``ui.many``).
FILES_BEYOND_LIMIT = 50
#: A body up to this size is parsed on the event loop: quicker than handing it to a thread.
PARSE_INLINE_BYTES = 32 * 1024


def event_body_limit(max_prompt_chars: int = 1000, max_pictures: int = 20) -> int:
    """The largest body one of the page's events can need (308 KB with the defaults).

    The largest is Many pictures: a prompt a line for each of up to ``max_pictures``
    (``jobs.max_queued``) pictures, the negative prompt, each at most ``max_prompt_chars``
    (``generation.max_prompt_chars``) characters, and a description of each file chosen (their bytes
    go through the upload route, not here). Generate's prompt, negative prompt and picture fit in it.
    """
    texts = (max_pictures + 2) * (max_prompt_chars + 1)
    files = max_pictures + FILES_BEYOND_LIMIT
    return EVENT_BASE_BYTES + JSON_BYTES_PER_CHAR * texts + FILE_DATA_BYTES * files


async def _parse(body: bytes) -> Any:
    """``body`` as JSON, a large one in a worker thread so that the event loop answers meanwhile."""
    if len(body) <= PARSE_INLINE_BYTES:
        return _json(body)
    return await anyio.to_thread.run_sync(_json, body)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        return None  # not JSON we can read: Gradio's own body check answers it


async def _read_all(receive: Receive, max_bytes: int,
                    too_large: Callable[[int], AppError]) -> tuple[bytes, Receive]:
    """The whole body and a ``receive`` that hands it on; ``too_large(size)`` is raised as soon as the
    bytes come so far pass ``max_bytes``, and nothing more is read."""
    chunks, more, size = [], True, 0
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _replay([message], receive)
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > max_bytes:
            raise too_large(size)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()
    return replayed


# -- connections, below the ASGI app: uvicorn's h11 protocol with a header deadline and per-client bound --


class ConnectionLimits:
    """The connection limits one server's connections share: the header deadline, the connections per
    client address (proxies in ``exempt`` are not held to it) and in all (``max_total``: what the
    process's open-file limit leaves room for, so that its job store can still open its database).

    Only the event loop's thread touches it (each connection's ``connection_made``/``lost``).
    """

    def __init__(self, *, header_timeout_s: float, max_per_client: int, max_total: int,
                 exempt: tuple[str, ...] = ()):
        self.header_timeout_s = header_timeout_s
        self.max_per_client, self.max_total = max_per_client, max_total
        self._exempt = [ipaddress.ip_network(item, strict=False) for item in exempt]
        self.open: Counter[str] = Counter()  # connections per client key
        self.total = 0

    def admit(self, address: str) -> tuple[str | None, AppError | None]:
        """Count a new connection from ``address``: (its key, to ``release``), or (None, the refusal)."""
        key = client_key(address)
        if self.total >= self.max_total:
            return None, ServerFull(key="err_server_full", limit=self.max_total)
        if self.open[key] >= self.max_per_client and not self._is_exempt(address):
            return None, TooManyConnections(key="err_too_many_connections", address=key, limit=self.max_per_client)
        self.open[key] += 1
        self.total += 1
        return key, None

    def release(self, key: str) -> None:
        self.total -= 1
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]

    def _is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def too_slow(self) -> BodyTooSlow:
        return BodyTooSlow(key="err_headers_too_slow", seconds=f"{self.header_timeout_s:g}")


def client_key(address: str) -> str:
    """What one client's connections are counted under: its IPv4 address, or its IPv6 address's /64
    (one machine gets a whole /64, and picks any address in it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def raw_answer(error: AppError) -> bytes:
    """``error`` as a whole HTTP/1.1 response that closes the connection, for a connection whose request
    was never handed to the app (so ``answer_error`` cannot send it)."""
    body, headers = _error_response(error)
    phrase = http.HTTPStatus(error.http_status).phrase
    head = f"HTTP/1.1 {error.http_status} {phrase}\r\n".encode()
    return head + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, each connection held to ``limits`` (set by ``guarded_protocol``).

    A connection past its client's (or the server's) bound gets 429 (503) and is closed at once.
    The header deadline runs from connecting, and again from the first byte of each next request on
    a kept-alive connection, until the request's headers are whole; a connection that sent nothing
    by then is closed, one that sent part of a request gets 408 first. (After a response uvicorn's
    own keep-alive timeout closes an idle connection; once the headers are in, ``BodyGuard``'s body
    deadline takes over.)
    """

    limits: ConnectionLimits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._slot, refusal = self.limits.admit(self.client[0] if self.client else "unknown")
        if refusal is not None:
            log.debug("Refused a connection from %s: %s", self.client, refusal)
            transport.write(raw_answer(refusal))
            transport.close()
            return
        self._start_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._slot is None:  # refused: closing
            return
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._start_header_deadline()  # the first byte of a next request
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._stop_header_deadline()  # the request's headers are in

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._let_go()  # the WebSocket protocol owns the connection now
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._let_go()
        super().connection_lost(exc)

    def _let_go(self) -> None:
        self._stop_header_deadline()
        if self._slot is not None:
            self.limits.release(self._slot)
            self._slot = None

    def _start_header_deadline(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_too_slow)

    def _stop_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a request came: say why it ends
            self.transport.write(raw_answer(self.limits.too_slow()))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, its connections held to ``limits``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
