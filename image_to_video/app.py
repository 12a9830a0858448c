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
from .errors import AlreadyRunning
from .faults import FaultInjector
from .i18n import t
from .job_queue import JobQueue
from .job_store import SQLiteJobStore, set_aside_if_damaged
from .live import LiveJobs
from .outputs import OutputFolder
from .processes import FolderLock
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
    #: This process's hold on the data folder (one server, or one ``generate``, per folder).
    lock: FolderLock

    def start(self) -> None:
        """Load the model in the background and start the GPU worker."""
        self.engine.start_loading()
        self.queue.prune_inputs()
        self.worker.start()

    def shutdown(self, grace_s: float) -> None:
        """Take no new jobs; the running one gets ``grace_s`` to finish, else it is re-queued."""
        self.queue.close()
        self.worker.shutdown(grace_s)


def build(config: AppConfig, *, only_owner: str | None = None, on_fatal=None,
          faults: FaultInjector | None = None, command: str = "serve") -> App:
    """Every component, built once from ``config``. ``only_owner``: the worker runs only that
    owner's jobs (the command line's); ``on_fatal``: what to do when the GPU becomes unusable;
    ``command``: "serve" or "generate", for the message a second process shows.

    The data folder is taken first, before anything is cleaned or recovered: raises
    ``AlreadyRunning`` (naming the other process) when another server or ``generate`` has it.
    """
    for folder in (config.paths.output_dir, config.paths.log_dir, config.paths.models_dir,
                   config.paths.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    lock = claim_data_folder(config, command)
    if faults is None:
        faults = FaultInjector(os.environ.get(FAULTS_VARIABLE, ""))
    engine = Engine(config.model, config.model_path, config.paths.models_dir,
                    resolutions=config.generation.resolutions, warmup_shapes=warmup_shapes(config), faults=faults)
    outputs = OutputFolder(config.paths.output_dir, config.outputs)
    service = VideoService(engine, outputs, config.model)
    store = open_job_store(config.paths.state_dir / "jobs.sqlite3", config.paths.output_dir)
    live = LiveJobs()
    queue = JobQueue(store, config, live=live, inputs_dir=config.paths.state_dir / "inputs",
                     check_disk=outputs.check_free_space)
    worker = Worker(store, live, service.make_video, model_ready=lambda: engine.ready,
                    only_owner=only_owner, on_fatal=on_fatal, after_job=queue.prune_inputs)
    return App(config, engine, outputs, service, queue, worker, lock)


def claim_data_folder(config: AppConfig, command: str) -> FolderLock:
    """This process's exclusive hold on the data folder, for as long as it lives.

    One server per folder, not one per port: there is one GPU and one queue, and a
    second server (or ``generate``) on the same jobs would run a second job on that GPU
    at once and clean up the first one's half-written files at its start.
    """
    lock = FolderLock(config.paths.state_dir)
    server = config.server
    address = "localhost" if server.host in ("0.0.0.0", "::", "") else server.host
    holder = lock.acquire(command=command, port=server.port if command == "serve" else None,
                          url=f"http://{address}:{server.port}/" if command == "serve" else None)
    if holder is None:
        return lock
    folder, pid = config.paths.state_dir, holder.get("pid", "?")
    if holder.get("command") == "generate":
        raise AlreadyRunning(key="err_folder_has_generate", pid=pid, folder=folder)
    raise AlreadyRunning(key="err_folder_has_server", pid=pid, port=holder.get("port", "?"), folder=folder,
                         url=holder.get("url") or "the address it printed")


def open_job_store(path: Path, output_dir: Path) -> SQLiteJobStore:
    """The job database; a damaged one is set aside (renamed, never deleted) and a fresh one started."""
    damaged = set_aside_if_damaged(path)
    if damaged:
        aside, problem = damaged
        log.warning("The job database %s was damaged (%s). It was renamed to %s and a new, empty one was "
                    "started, so the job list starts empty. The videos in %s are untouched. To look into "
                    "it, open %s with sqlite3; otherwise it can be deleted.",
                    path, problem, aside, output_dir, aside.name)
    return SQLiteJobStore(path)


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
    try:
        app = build(config, on_fatal=restart_process)
    except AlreadyRunning as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 1
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
    asgi = create_app(config, app.queue, app.outputs, app.engine, credentials=credentials, pid_file=pid_file,
                      worker_healthy=lambda: app.worker.healthy)
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
