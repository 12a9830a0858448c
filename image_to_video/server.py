"""The web server: the Gradio page mounted in a FastAPI app, run by uvicorn.

Besides the page it serves ``GET /api/status`` (the model's state, for the launcher's
readiness check and for monitoring) and ``GET /api/health`` (liveness). On SIGTERM
or Ctrl+C it stops taking jobs, lets the running one finish within a grace period
or cancels it, removes its PID file, and releases the port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI

from . import __version__
from .config import AppConfig
from .service import VideoService
from .ui import STATIC_DIR, build_ui

log = logging.getLogger(__name__)

#: Seconds a running job may go on after SIGTERM before it is cancelled.
SHUTDOWN_GRACE_S = 10.0


def create_app(config: AppConfig, service: VideoService, *, pid_file: Path | None = None) -> FastAPI:
    """The FastAPI app with the page at ``/``. Builds, but does not start, anything."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        _remove_pid_file(pid_file)

    app = FastAPI(title="Image-to-Video", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/status")
    def status() -> dict:
        model = service.engine.status
        return {
            "app": "Image-to-Video",
            "version": __version__,
            "model": {"state": model.state.value, "message": model.message, "device": model.device,
                      "demo": model.is_demo, "download_fraction": model.fraction},
            "busy": service.busy,
        }

    demo = build_ui(config, service)
    demo.queue(default_concurrency_limit=1, api_open=False)
    return gr.mount_gradio_app(
        app, demo, path="/",
        server_name=config.server.host,
        server_port=config.server.port,
        max_file_size=f"{config.server.max_upload_mb:g}mb",
        enable_monitoring=False,
        show_error=False,
        allowed_paths=[str(config.paths.output_dir)],
        favicon_path=str(STATIC_DIR / "logo.svg"),
        css_paths=[STATIC_DIR / "style.css"],
        theme=gr.themes.Soft(),
        footer_links=["gradio"],
    )


class _GracefulServer(uvicorn.Server):
    """uvicorn, but a stop signal first drains the GPU job (finish or cancel)."""

    def __init__(self, config: uvicorn.Config, service: VideoService, grace_s: float):
        super().__init__(config)
        self._service = service
        self._grace_s = grace_s
        self._draining = False

    def handle_exit(self, sig, frame) -> None:
        if self._draining:  # a second signal: stop now
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("Stopping: no new jobs; the running one gets %.0f s to finish", self._grace_s)
        threading.Thread(target=self._drain_then_exit, args=(sig, frame), daemon=True).start()

    def _drain_then_exit(self, sig, frame) -> None:
        self._service.shutdown(self._grace_s)
        super().handle_exit(sig, frame)


def run_server(config: AppConfig, service: VideoService, *, pid_file: Path | None = None,
               grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Serve until SIGTERM or Ctrl+C."""
    app = create_app(config, service, pid_file=pid_file)
    server_config = uvicorn.Config(app, host=config.server.host, port=config.server.port,
                                   log_level="warning", timeout_graceful_shutdown=5)
    server = _GracefulServer(server_config, service, grace_s)
    try:
        server.run()
    finally:
        _remove_pid_file(pid_file)


def _remove_pid_file(pid_file: Path | None) -> None:
    """Remove the launcher's PID file, but only if it still names this process."""
    if not pid_file:
        return
    try:
        recorded = Path(pid_file).read_text().split()
    except OSError:
        return
    if recorded and recorded[0] == str(os.getpid()):
        Path(pid_file).unlink(missing_ok=True)
        log.info("Removed %s", pid_file)
