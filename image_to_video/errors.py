"""The app's error hierarchy: every failure a user can be shown, each with its HTTP status.

Every error here carries a message written for the person using the app: it says
what went wrong and what to do. The page, the API and the command line show it as
is (in the reader's language when it carries an i18n key); anything that is not an
``AppError`` is logged with its traceback and shown as a generic message, never as
a traceback. ``http_status`` is what the HTTP API answers with it.
"""

#: How much of a value a message quotes; a longer one is cut there and its length said.
QUOTED_CHARS = 40


def shown(value: object) -> str:
    """``value`` as every message quotes it: a number (or text that reads as one) as given, anything
    else as its ``repr``; a value longer than ``QUOTED_CHARS`` is cut there, with "…" and its length.

    A number is never rounded into an in-range-looking one (20.0000001 stays 20.0000001), and a
    1 MB value costs a short line.
    """
    if isinstance(value, str):
        text = value.strip() if _reads_as_number(value) else repr(value[:QUOTED_CHARS + 1])
        length = len(value)
    else:
        text = exact(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        length = len(text)
    return text if length <= QUOTED_CHARS else f"{text[:QUOTED_CHARS]}… ({length} characters)"


def exact(number: float) -> str:
    """A number as short as it can be written without changing it: 20, 0.5, 20.0000001 (never "%g"'s 20)."""
    if isinstance(number, int):
        try:
            return str(number)
        except ValueError:  # Python writes out no int past sys.get_int_max_str_digits() (4300)
            return f"a {number.bit_length()}-bit number"
    short = f"{number:g}"
    return short if float(short) == number else repr(number)


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class AppError(Exception):
    """Base class: an expected failure with a message a user can act on.

    Raised with ``key=`` (a text in ``i18n.TEXT``) and its parameters, the message can
    also be shown in the user's language (``i18n.localized``); ``str()`` is English.
    """

    http_status = 422

    def __init__(self, message: str | None = None, *, key: str | None = None, **params):
        if key is not None:
            from .i18n import t

            message = t(key, "en", **params)
        super().__init__(message)
        self.key = key
        self.params = params

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the API sends with this error (none but for a few)."""
        return {}


class ConfigError(AppError):
    """A setting in the config file, environment or command line is invalid.

    Seen by whoever starts the app; start-up stops with this message.
    """


class InvalidInput(AppError):
    """A generation request (image, prompt or parameter) is not acceptable.

    Seen by the user who submitted it; nothing else changes.
    """

    http_status = 400


class ModelUnavailable(AppError):
    """The model is not loaded (still loading, or it failed to load), or the server is stopping.

    Seen by a user who clicks Generate before the model is ready.
    """

    http_status = 503


class QueueFull(AppError):
    """The queue is at its configured bound; the job was not accepted. Try again later."""

    http_status = 429


class LoginThrottled(AppError):
    """Too many wrong passwords from one address: it must wait ``wait_s`` before the next try.

    Seen by whoever is guessing (or mistyping) the password, on the page's login or the API.
    """

    http_status = 429

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.params["seconds"])}


class BodyTooLarge(AppError):
    """A request's body is larger than the server takes; it was cut off before anything used it.

    Seen by a client that uploads more than ``server.max_upload_mb``.
    """

    http_status = 413


class BodyTooSlow(AppError):
    """A request's body did not arrive within ``server.body_timeout_s``; nothing of it was used.

    Seen by a client on a very slow link, or one that trickles its body to hold the server.
    """

    http_status = 408


class TooManyConnections(AppError):
    """One client address holds ``server.max_connections_per_client`` connections already; one more is refused.

    Seen by a client that opens connections without end (or many users behind one router's address).
    """

    http_status = 429


class ServerFull(AppError):
    """The server holds as many connections as its open-file limit leaves room for; one more is refused."""

    http_status = 503


class NoSuchRoute(AppError):
    """No API route or page action by that name; the message says where the routes are listed."""

    http_status = 404


class WrongMethod(AppError):
    """The API route exists but does not take that HTTP method; ``allowed`` lists those it takes."""

    http_status = 405

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": self.params["allowed"]}


class JobNotFound(AppError):
    """No job with that id (or not one of the caller's)."""

    http_status = 404


class Cancelled(AppError):
    """The user cancelled the job; the GPU work stopped at the next step."""


class GenerationFailed(AppError):
    """The pipeline or the video encoder failed for a reason the user cannot fix by input."""


class OutOfMemory(GenerationFailed):
    """The GPU ran out of memory even in low-memory mode; the message says what to lower."""


class GPUFailed(GenerationFailed):
    """A CUDA error left the GPU context unusable: the job failed and the server restarts itself."""


class AlreadyRunning(AppError):
    """Another process (a server, or ``main.py generate``) already uses this data folder.

    Seen by whoever starts a second one; it stops with this message, naming the first.
    """

    http_status = 409


class WorkerLost(AppError):
    """The process (or Ray actor) holding a worker's engine is gone: killed, crashed or unreachable.

    The worker puts its job back in the queue (up to ``jobs.max_attempts`` runs) and starts a fresh one.
    """

    http_status = 503


def plain_error(error: BaseException) -> dict:
    """``error`` as plain values that cross a process or a Ray actor: an ``AppError`` with keyword-only
    parameters does not unpickle as itself, so it travels as its class name, key, parameters and message."""
    return {"kind": type(error).__name__, "key": getattr(error, "key", None),
            "params": dict(getattr(error, "params", None) or {}), "message": str(error)}


def rebuilt_error(plain: dict) -> Exception:
    """The error ``plain_error`` described: the same ``AppError`` subclass with its key and parameters
    (so its message is shown in the reader's language), or a ``RuntimeError`` naming any other kind."""
    kind = {cls.__name__: cls for cls in _subclasses(AppError)}.get(plain["kind"])
    if kind is None:
        return RuntimeError(f"{plain['kind']}: {plain['message']}")
    if plain["key"]:
        return kind(key=plain["key"], **plain["params"])
    return kind(plain["message"])


def _subclasses(cls: type) -> list[type]:
    """``cls`` and every class below it (looked up when needed: classes added later count too)."""
    return [cls, *(sub for child in cls.__subclasses__() for sub in _subclasses(child))]
