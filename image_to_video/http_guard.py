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
                   event than the route's name, is 400, all as ``{"error": ...}``.

Each refusal is an ``AppError`` with an i18n key, answered as JSON with ``Connection: close``.
They are plain ASGI (not Starlette's ``BaseHTTPMiddleware``) so that nothing buffers a body.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from .auth import LoginThrottle
from .errors import AppError, BodyTooLarge, BodyTooSlow, InvalidInput, LoginThrottled, NoSuchRoute

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


async def answer_error(send: Send, error: AppError) -> None:
    """Send ``error`` as ``{"error": ...}`` with its status and headers, and close the connection
    (whatever of the body is still coming is not read)."""
    body = json.dumps({"error": str(error)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *SECURITY_HEADERS,
               *[(k.lower().encode(), v.encode()) for k, v in error.headers.items()]]
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client_address(scope: Scope) -> str:
    """The client's IP address as the connection shows it (a proxy's, behind a reverse proxy)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


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

    def __init__(self, app: ASGIApp, blocks):
        self.app, self.blocks = app, blocks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        body, replay = await _read_all(receive)
        try:
            self._check(*route, _json(body))
        except AppError as error:
            await answer_error(send, error)
            return
        await self.app(scope, replay, send)

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


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        return None  # not JSON we can read: Gradio's own body check answers it


async def _read_all(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (already size-limited by ``BodyGuard``), and a ``receive`` that hands it on."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _replay([message], receive)
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()
    return replayed
