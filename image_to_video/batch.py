"""``python main.py generate``: make videos from the command line, through the job queue.

    python main.py generate --image photo.jpg --prompt "the waves roll in slowly" [--frames 16 ...]
    python main.py generate --batch jobs.jsonl

A batch file has one JSON object per line, with the same keys as the flags:
``{"image": "a.jpg", "prompt": "waves", "resolution": "512p", "num_frames": 16, "seed": 7}``.
Every job is validated first (a bad one is reported and skipped), stored in the
same job database as the server's, and run by a worker in this process. Exit
status: 0 when every video was made, 1 when any job failed, 2 for bad arguments.
Stop the server first on a one-GPU machine (or use the HTTP API while it runs):
two processes would each load the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import AppError, ConfigError

log = logging.getLogger(__name__)

_PARAMS = ("negative_prompt", "resolution", "num_frames", "fps", "num_inference_steps", "guidance_scale", "seed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python main.py generate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="the picture to animate")
    source.add_argument("--batch", metavar="FILE", help="a JSON-lines file of jobs")
    parser.add_argument("--prompt", help="what should move, in English (with --image)")
    parser.add_argument("--negative-prompt", dest="negative_prompt")
    parser.add_argument("--resolution", help="e.g. 512p")
    parser.add_argument("--frames", dest="num_frames")
    parser.add_argument("--fps")
    parser.add_argument("--steps", dest="num_inference_steps")
    parser.add_argument("--guidance", dest="guidance_scale")
    parser.add_argument("--seed", help="-1 for a random seed (default)")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--demo", action="store_true", help="use the demo model")
    parser.add_argument("--model", metavar="SOURCE")
    parser.add_argument("--device")
    parser.add_argument("--output-dir", metavar="DIR")
    parser.add_argument("--models-dir", metavar="DIR")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def run_generate(argv: Sequence[str]) -> int:
    from .cli import build_components, setup_logging
    from .config import load_config

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.image and not args.prompt:
        parser.error("--prompt is needed with --image")
    setup_logging(args.log_level)
    overrides = {"model.source": args.model, "model.device": args.device, "paths.output_dir": args.output_dir,
                 "paths.models_dir": args.models_dir, "model.demo": True if args.demo else None}
    try:
        config = load_config(args.config, overrides=overrides)
        specs = _read_batch(Path(args.batch)) if args.batch else [_spec_from_flags(args)]
    except (ConfigError, _BatchError) as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 2
    owner = f"cli-{os.getpid()}"
    engine, _service, queue = build_components(config, only_owner=owner)
    jobs = _submit_all(queue, specs, owner)
    if not jobs:
        return 1
    engine.load()
    if not engine.ready:
        print(f"[ERROR] {engine.status.message}", file=sys.stderr)
        _cancel_all(queue, jobs)
        return 1
    queue.start()
    try:
        results = [_follow(queue, job_id, label) for label, job_id in jobs]
    except KeyboardInterrupt:
        print("\nCancelling...", file=sys.stderr)
        _cancel_all(queue, jobs)
        return 1
    finally:
        queue.shutdown(grace_s=0)
    failed = len(specs) - sum(results)
    print(f"{sum(results)} video(s) made, {failed} failed.", file=sys.stderr)
    return 0 if failed == 0 else 1


class _BatchError(Exception):
    pass


def _spec_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    spec = {"image": args.image, "prompt": args.prompt}
    spec.update({key: getattr(args, key) for key in _PARAMS if getattr(args, key) is not None})
    return spec


def _read_batch(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise _BatchError(f"Cannot read the batch file {path}: {error.strerror}.") from None
    specs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            spec = json.loads(line)
        except ValueError as error:
            raise _BatchError(f"{path}, line {number}: not valid JSON ({error}).") from None
        if not isinstance(spec, dict) or "image" not in spec:
            raise _BatchError(f"{path}, line {number}: each line needs an object with at least "
                              '"image" and "prompt".')
        unknown = set(spec) - {"image", "prompt", *_PARAMS}
        if unknown:
            raise _BatchError(f"{path}, line {number}: unknown key {sorted(unknown)[0]!r}. "
                              f"Allowed: image, prompt, {', '.join(_PARAMS)}.")
        image = Path(str(spec["image"])).expanduser()
        spec["image"] = str(image if image.is_absolute() else path.parent / image)
        specs.append(spec)
    if not specs:
        raise _BatchError(f"The batch file {path} holds no jobs.")
    return specs


def _submit_all(queue, specs: list[dict[str, Any]], owner: str) -> list[tuple[str, str]]:
    jobs = []
    for number, spec in enumerate(specs, 1):
        label = f"[{number}/{len(specs)}] {Path(spec['image']).name}"
        params = {key: spec[key] for key in _PARAMS if key in spec}
        try:
            job = queue.submit(spec["image"], spec.get("prompt"), owner=owner, source="cli", **params)
        except AppError as error:
            print(f"{label}: refused: {error}", file=sys.stderr)
            continue
        jobs.append((label, job.id))
    return jobs


def _follow(queue, job_id: str, label: str) -> bool:
    shown = {"step": -1}

    def show(job) -> None:
        if job.total and (job.done * 10 // job.total) != shown["step"]:
            shown["step"] = job.done * 10 // job.total
            print(f"{label}: {job.stage} {job.done}/{job.total}", file=sys.stderr)

    job = queue.wait(job_id, on_update=show)
    if job.state == "done":
        print(job.video_path)
        return True
    print(f"{label}: {job.state}: {job.message}", file=sys.stderr)
    return False


def _cancel_all(queue, jobs: list[tuple[str, str]]) -> None:
    for _label, job_id in jobs:
        queue.cancel(job_id)
