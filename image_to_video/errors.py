"""The app's error hierarchy: every failure a user can be shown, each with its HTTP status.

Every error here carries a message written for the person using the app: it says
what went wrong and what to do. The page, the API and the command line show it as
is (in the reader's language when it carries an i18n key); anything that is not an
``AppError`` is logged with its traceback and shown as a generic message, never as
a traceback. ``http_status`` is what the HTTP API answers with it.
"""


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
