"""Command line: serve the app, make videos without the page, or build the demo model.

    python main.py [serve] [--config FILE] [--host HOST] [--port PORT] [--demo] ...
    python main.py generate --image photo.jpg --prompt "the waves roll in slowly" [...]
    python main.py generate --batch jobs.jsonl [...]
    python main.py build-demo [--force]
    python main.py loras list | fetch --fast MODEL | fetch REPO FILE [--name NAME]

One parser with a subcommand each; the options every command shares (config file,
model, folders, log level) come from one parent parser. Without a subcommand the
app is served, as ``start_app.sh`` runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, cpu_threads
from .config import (DEFAULT_CONFIG_FILE, INTERPOLATE_METHODS, LOOPS, PARAMETERS, PROJECT_DIR, AppConfig,
                     env_var_name, load_config)
from .errors import AlreadyRunning, ConfigError
from .processes import claim_data_folder

COMMANDS = ("serve", "generate", "build-demo", "loras")

# Command-line flag -> config key. Every key can also be set as I2V_<SECTION>_<KEY>.
_FLAG_KEYS = {
    "host": "server.host",
    "port": "server.port",
    "model": "model.source",
    "family": "model.family",
    "device": "model.device",
    "dtype": "model.dtype",
    "output_dir": "paths.output_dir",
    "models_dir": "paths.models_dir",
}


def _shared_options() -> argparse.ArgumentParser:
    """The options of every command: which config, which model, which folders, how much to log."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--config", metavar="FILE", help=f"config file (default: {DEFAULT_CONFIG_FILE})")
    shared.add_argument("--demo", action="store_true",
                        help="use the built-in demo model (random weights, runs anywhere, videos are noise)")
    shared.add_argument("--model", metavar="SOURCE", help="model folder or hub repo id (config: model.source)")
    shared.add_argument("--family", metavar="NAME",
                        help="the model's family: auto (told from the folder or repo), i2vgen-xl, wan2.2-ti2v-5b or "
                             "wan2.2-i2v-a14b; with --demo, whose demo to serve (config: model.family)")
    shared.add_argument("--device", help="auto, cpu, cuda or cuda:N (config: model.device)")
    shared.add_argument("--dtype", help="auto, float16, bfloat16 or float32 (config: model.dtype)")
    shared.add_argument("--output-dir", metavar="DIR", help="where videos go (config: paths.output_dir)")
    shared.add_argument("--models-dir", metavar="DIR", help="where models go (config: paths.models_dir)")
    shared.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log (default: INFO when serving, WARNING for generate)")
    shared.add_argument("--version", action="version", version=f"Image-to-Video {__version__}")
    return shared


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's parser (which reports its own mistakes)."""
    shared = _shared_options()
    parser = argparse.ArgumentParser(prog="python main.py", description="Image-to-Video.")
    parser.add_argument("--version", action="version", version=f"Image-to-Video {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,generate,build-demo,loras}")
    serve = commands.add_parser(
        "serve", parents=[shared], prog="python main.py [serve]", help="serve the page and the HTTP API (default)",
        description="Image-to-Video: serve the web UI that turns an image and a prompt into a video.",
        epilog=("Other commands: 'python main.py generate --help' makes videos from the command line; "
                "'python main.py build-demo [--force]' writes the demo model into models/. Every setting "
                "in the config file can also be set with an environment variable, e.g. "
                f"{env_var_name('server.port')}=7861."))
    _add_serve(serve)
    generate = commands.add_parser("generate", parents=[shared], help="make videos without the page")
    _add_generate(generate)
    build_demo = commands.add_parser("build-demo", parents=[shared], help="write the demo model into models/",
                                     description="Write the demo model (tiny, random weights) into models/.")
    build_demo.add_argument("--force", action="store_true", help="rebuild even if it is already there")
    loras = commands.add_parser("loras", parents=[shared], help="list the LoRAs, or download one from the hub",
                                description="The LoRA files in loras/ inside the models folder: list them, or "
                                            "download one from the hub (HF_ENDPOINT honoured).")
    loras.add_argument("action", choices=["list", "fetch"])
    loras.add_argument("source", nargs="*", metavar="REPO FILE",
                       help="with fetch: a hub repo id and the path of a .safetensors LoRA file in it")
    loras.add_argument("--fast", metavar="MODEL", help="with fetch: the LoRAs of MODEL's Fast preset (wan2.2-ti2v-5b "
                                                       "or wan2.2-i2v-a14b)")
    loras.add_argument("--name", help="with fetch REPO FILE: keep it as loras/NAME.safetensors (default: its file name)")
    return parser, {"serve": serve, "generate": generate, "build-demo": build_demo, "loras": loras}


def _add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (config: server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (config: server.port)")
    parser.add_argument("--no-login", action="store_true",
                        help="serve a network address without a login (prints a warning; config: server.login)")
    parser.add_argument("--pid-file", metavar="FILE",
                        help="remove FILE on exit if it holds this process's id (used by start_app.sh)")


def _add_generate(parser: argparse.ArgumentParser) -> None:
    from .batch import __doc__ as batch_doc

    parser.description = batch_doc.split("\n\n")[0]
    parser.epilog = batch_doc.split("\n\n", 1)[1]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="the picture to animate")
    source.add_argument("--batch", metavar="FILE", help="a JSON-lines file of jobs")
    source.add_argument("--continue-from", dest="continue_from", metavar="VIDEO",
                        help="continue a video (its name in the output folder): its last frame is the picture, "
                             "its prompt, settings and seed the defaults")
    parser.add_argument("--prompt", help="what should move (with --image): in English for I2VGen-XL (other languages "
                                         "are translated), in Chinese or English for Wan")
    parser.add_argument("--negative-prompt", dest="negative_prompt")
    for parameter in PARAMETERS:
        parser.add_argument(parameter.flag, dest=parameter.name, metavar=parameter.kind.__name__.upper(),
                            help=f"generation.defaults.{parameter.name} when not given")
    parser.add_argument("--seed", help="-1 for a random seed (default)")
    parser.add_argument("--aspect", help="the video's shape: auto (default: the picture's nearest) or 16:9, 4:3, 1:1, "
                                         "3:4, 9:16")
    parser.add_argument("--end-frame", dest="last_image", metavar="IMAGE",
                        help="a picture the video ends on (Wan2.2-I2V-A14B only; others refuse it)")
    parser.add_argument("--loras", metavar="LIST", help="LoRAs to apply (Wan only): a comma-separated list of "
                                                       "name:strength, e.g. style:0.8,motion:1; each name is a "
                                                       ".safetensors file in loras/ inside the models folder "
                                                       "(python main.py loras list); name@high or name@low puts "
                                                       "it into one expert of Wan2.2-I2V-A14B")
    finishing = parser.add_argument_group("after the model (each adds time; see the README)")
    finishing.add_argument("--segments", metavar="N", help="segments to make, each from the last frame of the one "
                                                          "before (default 1)")
    finishing.add_argument("--loop", metavar="KIND", help=f"{', '.join(LOOPS)} (default none)")
    finishing.add_argument("--interpolate-fps", dest="interpolate_fps", metavar="FPS",
                           help="add frames by motion interpolation up to this frame rate, same duration (default 0: off)")
    finishing.add_argument("--interpolate-method", dest="interpolate_method", metavar="METHOD",
                           help=f"how --interpolate-fps adds frames: {' or '.join(INTERPOLATE_METHODS)} (default rife: "
                                "learned, RIFE; ffmpeg: minterpolate, quicker on a CPU, smears fast motion)")
    finishing.add_argument("--formats", metavar="LIST", help="also write these beside the MP4: gif, webm, png (a zip "
                                                            "of every frame as a PNG) (comma-separated)")
    finishing.add_argument("--upscale", metavar="N", help="1 (default) or 2: twice the width and height")
    finishing.add_argument("--crf", metavar="N", help="the MP4's quality: H.264's constant rate factor, 1 (best, "
                                                     "largest) to 51 (default: finishing.crf, 18)")
    finishing.add_argument("--quality", metavar="WORD", help="another name for --crf: best, high, medium, low, "
                                                            "or a number")


def parse_config(argv: Sequence[str]) -> tuple[argparse.Namespace, AppConfig]:
    """Parse ``argv`` (a subcommand first, or none to serve) and build the config; raises ``ConfigError``."""
    argv = list(argv)
    if (argv[0] if argv else "") not in COMMANDS:
        argv = ["serve", *argv]  # `python main.py --port 7861` serves; `--help` shows serve's options
    parser, commands = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command = commands[args.command]
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "generate" and args.image and not args.prompt:
        command.error("--prompt is needed with --image")
    if args.command == "loras" and args.action == "fetch" and not args.fast and len(args.source) != 2:
        command.error("fetch takes --fast MODEL, or a repo id and a file path")
    overrides = config_overrides(args)
    if args.command == "build-demo":
        overrides["model.demo"] = True
    from . import families

    return args, families.served_config(load_config(args.config, overrides=overrides))


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The config keys that command-line options set (None where an option was not given); the
    launcher forwards the same options and reads the config through this too."""
    overrides: dict[str, object] = {key: getattr(args, flag, None) for flag, key in _FLAG_KEYS.items()}
    if getattr(args, "demo", False):
        overrides["model.demo"] = True
    if getattr(args, "no_login", False):
        overrides["server.login"] = "off"
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, config = parse_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 2
    # Gradio's upload cache is the app's own folder (the page sweeps old files from it), as start_app.sh
    # sets it; never the /tmp/gradio that other Gradio apps on the machine share.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(PROJECT_DIR / ".gradio" / "tmp"))
    # Before torch is imported: OpenMP reads its wait policy once, when torch loads it.
    cpu_threads.prepare_environment(config.model.cpu_wait_policy)
    if args.command == "generate":  # reads its jobs before the heavy imports: a bad batch file is said at once
        from .batch import run_generate

        return run_generate(args, config)
    if args.command == "build-demo":
        from .app import setup_logging
        from . import families

        setup_logging(args.log_level or "INFO")
        path = families.build_demo(families.served_card(config), Path(config.model_path), force=args.force)
        print(f"Demo model ready in {path}")
        return 0
    if args.command == "loras":
        return run_loras(args, config)
    try:  # the data folder before the heavy imports: a second server is told at once
        lock = claim_data_folder(config, "serve")
    except AlreadyRunning as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 1
    from . import app

    app.setup_logging(args.log_level or "INFO")
    return app.serve(config, pid_file=Path(args.pid_file) if args.pid_file else None, lock=lock)


def run_loras(args: argparse.Namespace, config: AppConfig) -> int:
    """``main.py loras list`` prints the LoRAs on disk; ``fetch`` downloads a Fast preset's or one file."""
    from . import loras
    from .errors import AppError

    models_dir = config.paths.models_dir
    if args.action == "list":
        found = loras.listing(models_dir)
        for entry in found:
            print(f"{entry['name']}  ({entry['size_mb']:g} MB)")
        print(f"{len(found)} LoRA(s) in {loras.folder(models_dir)}")
        return 0
    from .catalogue import lora_sources

    try:
        sources = lora_sources(args.fast, *(args.source or [None, None]), args.name)
        for repo, file, name in sources:
            print(f"Downloading {repo}/{file} as {name} ...", flush=True)
            path = loras.fetch(repo, file, name, models_dir, progress=_print_progress())
            print(f"{name}: {path}")
    except AppError as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 1
    return 0


def _print_progress():
    """A progress callback that prints a line at most every 10 %."""
    shown = {"tenth": -1}

    def progress(done: int, total: int) -> None:
        tenth = done * 10 // total
        if tenth > shown["tenth"]:
            shown["tenth"] = tenth
            print(f"  {done / 1e6:.0f} of {total / 1e6:.0f} MB", flush=True)

    return progress
