"""The composition root: build the app's components once, set up logging, serve.

Every entry point (the server, ``python main.py generate``, the tests) builds its
objects here, so each module gets what it needs handed in and none reaches through
one object for another. Nothing runs at import time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import cpu_threads, families
from .brought import brought_videos
from .config import AppConfig
from .engine import Engine
from .engine_host import engine_for, takes_jobs
from .errors import AlreadyRunning, ConfigError, WorkerLost
from .faults import FaultInjector
from .i18n import t
from .job_queue import JobQueue
from .job_store import SQLiteJobStore, end_frame_path, set_aside_if_damaged
from .live import LiveJobs
from .model_status import ModelState
from .outputs import OutputFolder
from .process_channel import ProcessChannel
from .processes import FolderLock, claim_data_folder
from .remote_engine import Channel, RemoteEngine
from .estimates import LEARNED_FILE, LearnedTimes
from .service import VideoService
from .translate import Translator
from .worker import Worker
from .workers import EngineGroup, WorkerBoard, loaded_model, memory_shares, worker_devices, worker_name

log = logging.getLogger("image_to_video")

#: Test-only: raise injected GPU failures in the engine (see faults.py). Unset in normal use.
FAULTS_VARIABLE = "I2V_TEST_FAULTS"
#: An input picture no job refers to is removed at start once it is this old (a submit killed mid-way).
UNREFERENCED_AGE_S = 300


@dataclass(frozen=True)
class App:
    """The app's components, wired together; nothing is started.

    One worker (``jobs.workers: 1``): ``engine`` is the ``Engine`` in this process. Several: each
    worker has its own engine in a process of its own (or a Ray actor), and ``engine`` is their
    ``EngineGroup`` as the page and the readiness check see it.
    """

    config: AppConfig
    engine: Engine | EngineGroup
    outputs: OutputFolder
    services: tuple[VideoService, ...]
    queue: JobQueue
    workers: tuple[Worker, ...]
    #: This process's hold on the data folder (one server, or one ``generate``, per folder).
    lock: FolderLock
    #: What each worker is doing (``GET /api/workers``).
    board: WorkerBoard
    #: Each worker's engine, in the workers' order.
    engines: tuple = ()
    #: Turns prompts that are not English into the English the model reads (``translation.*``).
    translator: Translator | None = None

    service = property(lambda self: self.services[0])
    worker = property(lambda self: self.workers[0])

    def start(self) -> None:
        """Load the model(s) in the background and start the workers."""
        if len(self.engines) == 1 and not isinstance(self.engines[0], RemoteEngine):
            self.engines[0].start_loading()
        else:
            threading.Thread(target=_load_in_turn, args=(self.engines,), name="worker-loader", daemon=True).start()
        if self.translator is not None:
            self.translator.start_loading()
        self.queue.prune_inputs()
        for worker in self.workers:
            worker.start()

    @property
    def healthy(self) -> bool:
        """At least one worker runs and reaches the job store (readiness)."""
        return any(worker.healthy for worker in self.workers)

    def shutdown(self, grace_s: float) -> None:
        """Take no new jobs; the running ones get ``grace_s`` to finish, else they are re-queued;
        then the workers' processes are stopped."""
        self.queue.close()
        for worker in self.workers:
            worker.stop_claiming()
        for worker in self.workers:
            worker.shutdown(grace_s)
        for engine in self.engines:
            if isinstance(engine, RemoteEngine):
                engine.close()


def build(config: AppConfig, *, only_owner: str | None = None, on_fatal=None,
          faults: FaultInjector | None = None, command: str = "serve", lock: FolderLock | None = None) -> App:
    """Every component, built once from ``config``. ``only_owner``: the worker runs only that
    owner's jobs (the command line's); ``on_fatal``: what to do when the GPU becomes unusable;
    ``command``: "serve" or "generate", for the message a second process shows; ``lock``: the data
    folder's lock when the caller took it already (the command line does, before the heavy imports).

    The data folder is taken first, before anything is cleaned or recovered: raises
    ``AlreadyRunning`` (naming the other process) when another server or ``generate`` has it.
    """
    for folder in (config.paths.output_dir, config.paths.log_dir, config.paths.models_dir,
                   config.paths.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    lock = lock or claim_data_folder(config, command)
    outputs = OutputFolder(config.paths.output_dir, config.outputs)
    store = open_job_store(config.paths.state_dir / "jobs.sqlite3", config.paths.output_dir)
    remove_unreferenced_inputs(store, config.paths.state_dir / "inputs")
    live = LiveJobs()
    # A model that reads Chinese (Wan's umT5) needs no translator: none is downloaded or loaded where every
    # model offered reads it.
    reads_chinese = all("zh" in families.CARDS[name].prompt_languages for name in config.offered or
                        (families.served_card(config).name,))
    translator = None if reads_chinese else Translator(config.translation, config.paths.models_dir)
    brought = brought_videos(config)
    queue = JobQueue(store, config, live=live, inputs_dir=config.paths.state_dir / "inputs",
                     check_disk=outputs.check_free_space, outputs=outputs, translator=translator, brought=brought)
    board = WorkerBoard()
    services, workers = [], []
    common = dict(only_owner=only_owner, after_job=queue.prune_inputs, board=board,
                  max_attempts=config.jobs.max_attempts)
    channels = worker_channels(config, command)
    learned = LearnedTimes(config.paths.state_dir / LEARNED_FILE)  # each job's times, for the page's estimates
    if channels is None:  # one worker: the engine in this process, as always
        cpu_threads.apply(cpu_threads.plan(config.model.cpu_threads))
        engine = engine_for(config, faults=faults or FaultInjector(os.environ.get(FAULTS_VARIABLE, "")))
        engines = [engine]
        name = worker_name(worker_devices(config.model.device, 1, _cuda_devices())[0], 0)
        board.add(name, device=config.model.device, engine=engine)
        services.append(VideoService(engine, outputs, config.model, gif_max_mb=config.finishing.gif_max_mb,
                                     learned=learned, brought=brought))
        workers.append(Worker(store, live, services[0].make_video, model_ready=lambda: takes_jobs(engine),
                              on_fatal=on_fatal, name=name, loaded_model=lambda: loaded_model(engine), **common))
    else:
        engines = [RemoteEngine(channel, name=channel.name) for channel in channels]
        for engine, channel in zip(engines, channels):
            board.add(channel.name, device=channel.device, engine=engine)
            # The steps after the model run here, in the server: RIFE on its CPU, not on a worker's GPU.
            services.append(VideoService(engine, outputs, config.model, gif_max_mb=config.finishing.gif_max_mb,
                                         interpolation_device="cpu", learned=learned, brought=brought))
            workers.append(Worker(store, live, services[-1].make_video, model_ready=engine.check,
                                  on_fatal=engine.restart, name=channel.name, engine_lost=lambda e=engine: e.lost,
                                  restart=engine.restart, loaded_model=lambda e=engine: loaded_model(e), **common))
    group = engines[0] if len(engines) == 1 and channels is None else EngineGroup(engines)
    return App(config, group, outputs, tuple(services), queue, tuple(workers), lock, board, tuple(engines),
               translator)


def _load_in_turn(engines: list[RemoteEngine]) -> None:
    """Start the first worker loading, and the others once it has its model on disk (downloaded, or
    the demo model built): several processes writing the same model folder at once would spoil it.
    In a thread: each host answers its first call only once its process has started."""
    for index, engine in enumerate(engines):
        try:
            engine.start_loading()
            while index == 0 and engine.describe()["status"].state in (ModelState.NOT_LOADED, ModelState.DOWNLOADING):
                time.sleep(0.5)
        except WorkerLost:  # its worker restarts it
            log.warning("Worker %s was lost before its model loaded; it starts again", engine.name)


def worker_channels(config: AppConfig, command: str) -> list[Channel] | None:
    """The channels to each worker's engine host: Ray actors (``jobs.backend: ray``), or one child
    process per worker when there are several; None for one local worker (its engine runs in this
    process). ``python main.py generate`` runs one worker here, whatever ``jobs.workers`` says."""
    if command == "generate":
        return None
    if config.jobs.backend == "ray":
        from . import ray_backend  # only now: a server without Ray never imports it

        return ray_backend.start_actors(config)
    count = config.jobs.worker_count(_cuda_devices() if config.jobs.workers == "auto" else 0)
    if count == 1:
        return None
    devices = worker_devices(config.model.device, count, _cuda_devices())
    threads = cpu_threads.plan(config.model.cpu_threads, workers=count)
    log.info("Starting %d workers (%s), %d CPU thread(s) each (%s)", count, ", ".join(devices), threads.threads,
             threads.why)
    return [ProcessChannel(config, device=device, name=worker_name(device, index), threads=threads.threads,
                           memory_share=share)
            for index, (device, share) in enumerate(zip(devices, memory_shares(devices)))]


def _cuda_devices() -> int:
    """How many CUDA devices this process sees (without starting CUDA here: the workers do)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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


def remove_unreferenced_inputs(store: SQLiteJobStore, folder: Path, older_than_s: float = UNREFERENCED_AGE_S) -> int:
    """Delete the input pictures no job refers to: a submit killed after it saved the picture and
    before its job was stored leaves one, which nothing else would ever remove. Only pictures older
    than ``older_than_s`` go, and only with the data folder held, so no submit can be mid-way."""
    if not folder.is_dir():
        return 0
    referenced = {name for path in store.image_paths() for name in (Path(path).name, end_frame_path(path).name)}
    cutoff = time.time() - older_than_s
    removed = 0
    for path in folder.glob("*.png"):
        try:
            if path.name not in referenced and path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to remove: left as it is
            continue
    if removed:
        log.info("Removed %d input picture(s) no job refers to from %s", removed, folder)
    return removed


def serve(config: AppConfig, pid_file: Path | None = None, lock: FolderLock | None = None) -> int:
    """Start loading the model in the background and serve the page and API until stopped."""
    from .auth import credentials_path, resolve_credentials
    from .server import create_app, run_server

    if config.model.demo:
        log.warning("\n%s\n", demo_banner(card=families.served_card(config)))
    try:
        app = build(config, on_fatal=restart_process, lock=lock)
    except (AlreadyRunning, ConfigError) as error:  # another server; a Ray cluster it cannot join
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
                      worker_healthy=lambda: app.healthy, workers=app.board)
    run_server(asgi, config, drain=app.shutdown, pid_file=pid_file)
    log.info("Stopped")
    return 0


def demo_banner(lang: str = "en", card: families.Card | None = None) -> str:
    """The demo model's warning, as plain text (the page shows the same text as Markdown): the real model
    of ``card``'s family (I2VGen-XL unless told) is what a GPU would load."""
    card = card or families.CARDS[families.DEFAULT]
    return t("demo_banner", lang, model=card.title, size=f"{card.download_gb:g}").replace("**", "").replace("`", "")


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
