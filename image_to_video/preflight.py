"""Checks the launcher runs before starting the app, printed as KEY=VALUE lines.

    python -m image_to_video.preflight [--port N] [--host H] [--model SOURCE]

``start_app.sh`` reads these lines so the config file stays the one source of
truth for ports and folders, and so what will go wrong later (no GPU, no ffmpeg,
a full disk, a broken install) is said before the app starts. Exit status 0 means
the app can start; 2 means it cannot, and ERROR= says why.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from .auth import credentials_path
from .config import ModelSettings, load_config
from .errors import ConfigError

#: Below this much free space in the output folder the launcher warns.
LOW_DISK_GB = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_to_video.preflight")
    parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    parser.add_argument("--model")
    parser.add_argument("--no-login", action="store_true")
    args = parser.parse_args(argv)
    out: dict[str, object] = {"PYTHON": sys.version.split()[0]}
    try:
        config = load_config(overrides={"server.port": args.port, "server.host": args.host,
                                        "model.source": args.model,
                                        "server.login": "off" if args.no_login else None})
    except ConfigError as error:
        return _emit({**out, "ERROR": str(error)}, 2)
    out.update(PORT=config.server.port, HOST=config.server.host, MODEL_SOURCE=config.model.source,
               MODEL_EXPLICIT=int(config.model.source != ModelSettings.source),
               OUTPUT_DIR=config.paths.output_dir, LOG_DIR=config.paths.log_dir,
               MODELS_DIR=config.paths.models_dir, LOGIN_REQUIRED=int(config.server.login_required),
               LOGIN_USER=config.server.username, PASSWORD_CONFIGURED=int(bool(config.server.password)),
               CREDENTIALS_FILE=credentials_path(config))
    try:
        out.update(_libraries())
    except ImportError as error:
        return _emit({**out, "ERROR": f"A package is missing or broken: {error}"}, 2)
    out.update(_disk(config.paths.output_dir))
    return _emit(out, 0)


def _libraries() -> dict[str, object]:
    # Importing gradio and diffusers costs seconds on every start; finding them is
    # enough here (a broken one shows in the app's log, which the launcher reads).
    import importlib.util
    from importlib import metadata

    for name in ("diffusers", "transformers", "gradio", "accelerate", "yaml", "PIL"):
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"No module named {name!r}")
    import imageio_ffmpeg
    import torch

    info: dict[str, object] = {"TORCH": torch.__version__, "GRADIO": metadata.version("gradio"),
                               "CUDA": int(torch.cuda.is_available()), "TORCH_CUDA": torch.version.cuda or ""}
    if info["CUDA"]:
        props = torch.cuda.get_device_properties(0)
        info["GPU"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    try:
        info["FFMPEG"] = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        info["FFMPEG"] = ""
    return info


def _disk(folder) -> dict[str, object]:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    return {"DISK_FREE_GB": f"{free_gb:.1f}", "DISK_LOW": int(free_gb < LOW_DISK_GB)}


def _emit(values: dict[str, object], code: int) -> int:
    for key, value in values.items():
        print(f"{key}={str(value).replace(chr(10), ' ')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
