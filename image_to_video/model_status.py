"""What the page, the API and the launcher show about the model: its state, message and device.

Free of torch. The engine holds one ``ModelStatus`` and replaces it as it loads; readers get a
frozen snapshot. Messages are kept as i18n keys with parameters, so each reader renders them in
its own language.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass, field, replace

from .i18n import t

log = logging.getLogger(__name__)


class ModelState(enum.Enum):
    NOT_LOADED = "starting"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"


@dataclass(frozen=True)
class ModelStatus:
    """One snapshot of the model's state."""

    state: ModelState = ModelState.NOT_LOADED
    is_demo: bool = False
    #: 0..1 while downloading, else None.
    fraction: float | None = None
    #: The message and the device line as i18n keys with their parameters.
    key: str = "status_starting"
    params: dict = field(default_factory=dict)
    device_key: str = ""
    device_params: dict = field(default_factory=dict)

    def text(self, lang: str | None) -> str:
        return t(self.key, lang, **self.params)

    def device_text(self, lang: str | None) -> str:
        return t(self.device_key, lang, **self.device_params) if self.device_key else ""

    @property
    def message(self) -> str:
        """In English, for the log and the API."""
        return self.text("en")

    @property
    def device(self) -> str:
        return self.device_text("en")

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY


class StatusBoard:
    """The model's current status, replaced whole under a lock: readers on other threads (the page,
    the API) always see one consistent snapshot, and every change is logged."""

    def __init__(self, status: ModelStatus):
        self._status = status
        self._lock = threading.Lock()

    @property
    def current(self) -> ModelStatus:
        with self._lock:
            return self._status

    def update(self, say: tuple[str, dict] | None = None, device: tuple[str, dict] | None = None,
               **changes) -> None:
        """Change the status; ``say`` and ``device`` are (i18n key, parameters)."""
        if say is not None:
            changes.update(key=say[0], params=say[1])
        if device is not None:
            changes.update(device_key=device[0], device_params=device[1])
        with self._lock:
            self._status = status = replace(self._status, **changes)
        log.info("Model %s: %s", status.state.value, status.message)
