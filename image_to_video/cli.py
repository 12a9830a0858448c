"""Command line: serve the app, make videos without the page, or build the demo model.

    python main.py [--config FILE] [--host HOST] [--port PORT] [--demo] ...
    python main.py generate --image photo.jpg --prompt "the waves roll in slowly" [...]
    python main.py generate --batch jobs.jsonl [...]
    python main.py build-demo [--force]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .config import DEFAULT_CONFIG_FILE, AppConfig, env_var_name, load_config
from .errors import ConfigError

log = logging.getLogger("image_to_video")

# Command-line flag -> config key. Every key can also be set as I2V_<SECTION>_<KEY>.
_FLAG_KEYS = {
    "host": "server.host",
    "port": "server.port",
    "model": "model.source",
    "device": "model.device",
    "dtype": "model.dtype",
    "output_dir": "paths.output_dir",
    "models_dir": "paths.models_dir",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="Image-to-Video: serve the web UI that turns an image and a prompt into a video.",
        epilog=("Other commands: 'python main.py generate --help' makes videos from the command line; "
                "'python main.py build-demo [--force]' writes the demo model into models/. Every setting "
                "in the config file can also be set with an environment variable, e.g. "
                f"{env_var_name('server.port')}=7861."),
    )
    parser.add_argument("--config", metavar="FILE", help=f"config file (default: {DEFAULT_CONFIG_FILE})")
    parser.add_argument("--host", help="address to listen on (config: server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (config: server.port)")
    parser.add_argument("--demo", action="store_true",
                        help="serve the built-in demo model (random weights, runs anywhere, videos are noise)")
    parser.add_argument("--model", metavar="SOURCE",
                        help="model folder or hub repo id (config: model.source)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (config: model.device)")
    parser.add_argument("--dtype", help="auto, float16, bfloat16 or float32 (config: model.dtype)")
    parser.add_argument("--output-dir", metavar="DIR", help="where videos go (config: paths.output_dir)")
    parser.add_argument("--models-dir", metavar="DIR", help="where models go (config: paths.models_dir)")
    parser.add_argument("--no-login", action="store_true",
                        help="serve a network address without a login (prints a warning; config: server.login)")
    parser.add_argument("--pid-file", metavar="FILE",
                        help="remove FILE on exit if it holds this process's id (used by start_app.sh)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log (default: INFO)")
    parser.add_argument("--version", action="version", version=f"Image-to-Video {__version__}")
    return parser


def parse_config(argv: Sequence[str]) -> tuple[argparse.Namespace, AppConfig]:
    """Parse ``argv`` and build the config; raises ``ConfigError``."""
    args = build_parser().parse_args(argv)
    overrides = {key: getattr(args, flag) for flag, key in _FLAG_KEYS.items()}
    if args.demo:
        overrides["model.demo"] = True
    if getattr(args, "no_login", False):
        overrides["server.login"] = "off"
    return args, load_config(args.config, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build-demo"]:
        return _build_demo(argv[1:])
    if argv[:1] == ["generate"]:
        from .batch import run_generate

        return run_generate(argv[1:])
    try:
        args, config = parse_config(argv)
    except ConfigError as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    return serve(config, pid_file=args.pid_file)


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


def build_components(config: AppConfig, *, only_owner: str | None = None, on_fatal=None):
    """The engine, the video service and the job queue, wired together (nothing started)."""
    from .engine import Engine
    from .jobs import JobQueue, SQLiteJobStore
    from .service import VideoService

    for folder in (config.paths.output_dir, config.paths.log_dir, config.paths.models_dir,
                   config.paths.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    engine = Engine(config.model, config.model_path, config.paths.models_dir, warmup_shapes=warmup_shapes(config))
    service = VideoService(config, engine)
    store = SQLiteJobStore(config.paths.state_dir / "jobs.sqlite3")
    queue = JobQueue(store, service, inputs_dir=config.paths.state_dir / "inputs",
                     max_queued=config.jobs.max_queued, only_owner=only_owner, on_fatal=on_fatal)
    return engine, service, queue


def serve(config: AppConfig, pid_file: str | None = None) -> int:
    """Start loading the model in the background and serve the page and API until stopped."""
    from pathlib import Path

    from .auth import credentials_path, resolve_credentials
    from .server import restart_process, run_server
    from .ui import DEMO_BANNER

    if config.model.demo:
        log.warning("\n%s\n", DEMO_BANNER.replace("**", "").replace("`", ""))
    engine, service, queue = build_components(config, on_fatal=restart_process)
    removed = service.clean_temporary_files()
    if removed:
        log.info("Removed %d half-written file(s) left by an earlier run", removed)
    service.apply_retention()
    credentials = resolve_credentials(config)
    if credentials:
        log.info("Login required: user %r, password in %s (or server.password)", credentials.username,
                 credentials_path(config))
    engine.start_loading()
    queue.start()
    log.info("Serving on http://%s:%d (local: http://localhost:%d)",
             config.server.host, config.server.port, config.server.port)
    run_server(config, queue, credentials=credentials, pid_file=Path(pid_file) if pid_file else None)
    log.info("Stopped")
    return 0


def _build_demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python main.py build-demo",
                                     description="Write the demo model (tiny, random weights) into models/.")
    parser.add_argument("--force", action="store_true", help="rebuild even if it is already there")
    parser.add_argument("--config", metavar="FILE", help="config file (for paths.models_dir)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    try:
        config = load_config(args.config, overrides={"model.demo": True})
    except ConfigError as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 2
    from pathlib import Path

    from .demo_model import build_demo_model

    path = build_demo_model(Path(config.model_path), force=args.force)
    print(f"Demo model ready in {path}")
    return 0


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
