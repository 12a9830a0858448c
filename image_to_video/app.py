"""The composition root: build the app's components once, set up logging, serve.

Every entry point (the server, ``python main.py generate``, the tests) builds its
objects here, so each module gets what it needs handed in and none reaches through
one object for another. Nothing runs at import time.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import AppConfig
from .engine import Engine
from .faults import FaultInjector
from .i18n import t
from .job_queue import JobQueue
from .job_store import SQLiteJobStore
from .live import LiveJobs
from .outputs import OutputFolder
from .service import VideoService
from .worker import Worker

log = logging.getLogger("image_to_video")

#: Test-only: raise injected GPU failures in the engine (see faults.py). Unset in normal use.
FAULTS_VARIABLE = "I2V_TEST_FAULTS"


@dataclass(frozen=True)
class App:
    """The app's components, wired together; nothing is started."""

    config: AppConfig
    engine: Engine
    outputs: OutputFolder
    service: VideoService
    queue: JobQueue
    worker: Worker

    def start(self) -> None:
        """Load the model in the background and start the GPU worker."""
        self.engine.start_loading()
        self.worker.start()

    def shutdown(self, grace_s: float) -> None:
        """Take no new jobs; the running one gets ``grace_s`` to finish, else it is re-queued."""
        self.queue.close()
        self.worker.shutdown(grace_s)


def build(config: AppConfig, *, only_owner: str | None = None, on_fatal=None,
          faults: FaultInjector | None = None) -> App:
    """Every component, built once from ``config``. ``only_owner``: the worker runs only that
    owner's jobs (the command line's); ``on_fatal``: what to do when the GPU becomes unusable."""
    for folder in (config.paths.output_dir, config.paths.log_dir, config.paths.models_dir,
                   config.paths.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if faults is None:
        faults = FaultInjector(os.environ.get(FAULTS_VARIABLE, ""))
    engine = Engine(config.model, config.model_path, config.paths.models_dir,
                    resolutions=config.generation.resolutions, warmup_shapes=warmup_shapes(config), faults=faults)
    outputs = OutputFolder(config.paths.output_dir, config.outputs)
    service = VideoService(engine, outputs, config.model)
    store = SQLiteJobStore(config.paths.state_dir / "jobs.sqlite3")
    live = LiveJobs()
    queue = JobQueue(store, config, live=live, inputs_dir=config.paths.state_dir / "inputs")
    worker = Worker(store, live, service.make_video, model_ready=lambda: engine.ready,
                    only_owner=only_owner, on_fatal=on_fatal)
    return App(config, engine, outputs, service, queue, worker)


def warmup_shapes(config: AppConfig) -> tuple[tuple[int, int, int], ...]:
    """(width, height, frames) of the default settings and every preset: compiled at start-up."""
    g = config.generation
    chosen = [(g.defaults.resolution, g.defaults.num_frames)]
    chosen += [(p.resolution, int(p.num_frames)) for p in g.presets.values()]
    shapes = []
    for resolution, frames in chosen:
        side = g.resolutions[resolution]
        if (side, side, frames) not in shapes:
            shapes.append((side, side, frames))
    return tuple(shapes)


def serve(config: AppConfig, pid_file: Path | None = None) -> int:
    """Start loading the model in the background and serve the page and API until stopped."""
    from .auth import credentials_path, resolve_credentials
    from .server import create_app, run_server

    if config.model.demo:
        log.warning("\n%s\n", demo_banner())
    app = build(config, on_fatal=restart_process)
    removed = app.outputs.clean_temporary_files()
    if removed:
        log.info("Removed %d half-written file(s) left by an earlier run", removed)
    app.outputs.apply_retention()
    credentials = resolve_credentials(config)
    if credentials:
        log.info("Login required: user %r, password in %s (or server.password)", credentials.username,
                 credentials_path(config))
    app.start()
    log.info("Serving on http://%s:%d (local: http://localhost:%d)",
             config.server.host, config.server.port, config.server.port)
    asgi = create_app(config, app.queue, app.outputs, app.engine, credentials=credentials, pid_file=pid_file)
    run_server(asgi, config, drain=app.shutdown, pid_file=pid_file)
    log.info("Stopped")
    return 0


def demo_banner(lang: str = "en") -> str:
    """The demo model's warning, as plain text (the page shows the same text as Markdown)."""
    return t("demo_banner", lang).replace("**", "").replace("`", "")


def restart_process() -> None:
    """Replace this process with a fresh copy of itself (same PID, same arguments).

    Used after a CUDA error that leaves the GPU context unusable: the new process
    gets a clean GPU, re-reads the queue and carries on.
    """
    log.critical("Restarting the server process to recover the GPU")
    logging.shutdown()
    os.environ.pop(FAULTS_VARIABLE, None)  # an injected fault fires once per server, not once per restart
    os.execv(sys.executable, [sys.executable, *sys.argv])


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    # The libraries' own chatter (deprecation notices, per-file progress bars) is noise in our log.
    for name in ("diffusers", "transformers", "httpx", "huggingface_hub"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
