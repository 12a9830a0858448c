"""``python main.py generate``: make videos from the command line, through the job queue.

    python main.py generate --image photo.jpg --prompt "the waves roll in slowly" [--frames 16 ...]
    python main.py generate --batch jobs.jsonl
    python main.py generate --continue-from video_20260101_120000_1a2b3c4d.mp4 --segments 2

A batch file has one JSON object per line, with the same keys as the flags:
``{"image": "a.jpg", "prompt": "waves", "resolution": "512p", "num_frames": 16, "seed": 7}``, with
``"model": "wan2.2-ti2v-5b"`` (default: the one --model/--family names; each worker switches between
jobs), ``"aspect": "9:16"`` (default auto: the picture's) and, for Wan2.2-I2V-A14B, ``"last_image": "end.jpg"``,
for Wan, ``"loras": "style:0.8,motion:1"`` (files in loras/ inside the models folder, each name:strength),
and the steps after the model: ``"segments": 2, "loop": "boomerang", "interpolate_fps": 24,
"interpolate_method": "ffmpeg"`` (default rife), ``"formats": "gif,webm,png", "upscale": 2``, or
``"continue_from": "<video name>"`` instead of an image.
Every job is validated first (a bad one is reported and skipped), stored in the
same job database as the server's, and run by a worker in this process. Exit
status: 0 when every video was made, 1 when any job failed or it could not start,
2 for bad arguments. While a server runs on the same data folder this refuses to
start and names it (one GPU, one queue: two processes would run two jobs on the
GPU at once): stop the server first, or send the jobs to its HTTP API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .config import PARAMETER_NAMES, AppConfig
from .errors import AlreadyRunning, AppError
from .job_queue import JobQueue
from .processes import claim_data_folder
from .request import FINISHING_DEFAULTS

#: What a job may set besides its image and prompt: ``PARAMETERS``, the negative prompt, the seed,
#: its model, its LoRAs, and the steps after the model.
JOB_KEYS = ("negative_prompt", *PARAMETER_NAMES, "seed", "aspect", "last_image", "model", "loras",
            *FINISHING_DEFAULTS, "quality")
#: The keys the flags of ``generate`` set (``--model`` is the model's source: ``--family`` names the model).
FLAG_KEYS = tuple(key for key in JOB_KEYS if key != "model")


class BatchError(Exception):
    """A batch file that cannot be read; nothing was queued."""


def run_generate(args: argparse.Namespace, config: AppConfig) -> int:
    """Queue the jobs of ``args`` (cli.py's ``generate`` options), run them here, print each video's path.
    The jobs are read first, before torch and the model code are imported: a bad file is said at once."""
    try:
        specs = read_batch(Path(args.batch)) if args.batch else [_spec_from_flags(args)]
    except BatchError as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 2
    try:  # the data folder before the heavy imports too: a running server is said at once
        lock = claim_data_folder(config, "generate")
    except AlreadyRunning as error:
        print(f"[ERROR] {error}", file=sys.stderr)
        return 1
    from .app import build, setup_logging

    setup_logging(args.log_level or "WARNING")
    owner = f"cli-{os.getpid()}"
    app = build(config, only_owner=owner, command="generate", lock=lock)
    try:
        return _run_all(app, specs, owner)
    finally:
        app.lock.release()


def _run_all(app, specs: list[dict[str, Any]], owner: str) -> int:
    """Submit every job, load the model, run them in this process; the exit status."""
    if app.translator is not None:  # before the jobs are submitted: their prompts are translated then
        app.translator.load()
    jobs = _submit_all(app.queue, specs, owner)
    if not jobs:
        return 1
    app.engine.load()
    if not app.engine.ready:
        print(f"[ERROR] {app.engine.status.message}", file=sys.stderr)
        _cancel_all(app.queue, jobs)
        return 1
    app.worker.start()
    try:
        results = [_follow(app.queue, job_id, label) for label, job_id in jobs]
    except KeyboardInterrupt:
        print("\nCancelling...", file=sys.stderr)
        _cancel_all(app.queue, jobs)
        return 1
    finally:
        app.shutdown(grace_s=0)
    failed = len(specs) - sum(results)
    print(f"{sum(results)} video(s) made, {failed} failed.", file=sys.stderr)
    return 0 if failed == 0 else 1


def _spec_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    spec = {"image": args.image, "prompt": args.prompt} if args.image else {"prompt": args.prompt}
    spec.update({key: getattr(args, key) for key in FLAG_KEYS if getattr(args, key) is not None})
    return spec


def read_batch(path: Path) -> list[dict[str, Any]]:
    """The jobs of a JSON-lines file; image paths are relative to the file. Raises ``BatchError``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BatchError(f"Cannot read the batch file {path}: {error.strerror}.") from None
    specs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            spec = json.loads(line)
        except ValueError as error:
            raise BatchError(f"{path}, line {number}: not valid JSON ({error}).") from None
        if not isinstance(spec, dict) or ("image" not in spec and not spec.get("continue_from")):
            raise BatchError(f"{path}, line {number}: each line needs an object with at least "
                             '"image" (or "continue_from") and "prompt".')
        unknown = set(spec) - {"image", "prompt", *JOB_KEYS}
        if unknown:
            raise BatchError(f"{path}, line {number}: unknown key {sorted(unknown)[0]!r}. "
                             f"Allowed: image, prompt, {', '.join(JOB_KEYS)}.")
        for key in ("image", "last_image"):
            if key in spec:
                image = Path(str(spec[key])).expanduser()
                spec[key] = str(image if image.is_absolute() else path.parent / image)
        specs.append(spec)
    if not specs:
        raise BatchError(f"The batch file {path} holds no jobs.")
    return specs


def _submit_all(queue: JobQueue, specs: list[dict[str, Any]], owner: str) -> list[tuple[str, str]]:
    jobs = []
    for number, spec in enumerate(specs, 1):
        label = f"[{number}/{len(specs)}] {Path(str(spec.get('image') or spec.get('continue_from'))).name}"
        params = {key: spec[key] for key in JOB_KEYS if key in spec}
        try:
            job = queue.submit(spec.get("image"), spec.get("prompt"), owner=owner, source="cli", **params)
        except AppError as error:
            print(f"{label}: refused: {error}", file=sys.stderr)
            continue
        jobs.append((label, job.id))
    return jobs


def _follow(queue: JobQueue, job_id: str, label: str) -> bool:
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


def _cancel_all(queue: JobQueue, jobs: list[tuple[str, str]]) -> None:
    for _label, job_id in jobs:
        queue.cancel(job_id)
