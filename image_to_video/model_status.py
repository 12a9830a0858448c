"""What the page, the API and the launcher show about the model: its state, message and device.

Free of torch. The engine holds one ``ModelStatus`` and replaces it as it loads; readers get a
frozen snapshot. Messages are kept as i18n keys with parameters, so each reader renders them in
its own language.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .i18n import t


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
