"""Jobs per minute with 1 and 2 workers (jobs.workers), and with the Ray backend, on the demo model.

    python bench/workers.py [--jobs 8] [--resolution 256p] [--frames 8] [--steps 10] [--threads 1]
    python bench/workers.py --backend ray [--ray-address HOST:PORT] [--ray-resource NAME] [--actors 2]

Builds the app as the server does (``app.build``: the same store, queue, workers and, with several,
one process per worker), waits until every worker's model is loaded, then queues ``--jobs`` jobs at
once and times them from the first submit to the last video on disk. Every worker gets ``--threads``
torch threads (one worker runs in this process, so this process gets them). Prints a table with the
ratio to one worker; the machine's load average is printed too, since other work on it changes the
numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_to_video import app as composition  # noqa: E402
from image_to_video.config import load_config  # noqa: E402
from image_to_video.examples import ensure_examples  # noqa: E402
from image_to_video.job_store import DONE  # noqa: E402


def machine_threads(per_worker: int, overrides: dict) -> int:
    """``model.cpu_threads`` for ``per_worker`` threads each: local workers share the machine's threads,
    a Ray actor takes the number as its own."""
    if overrides.get("jobs.backend", "local") == "ray":
        return per_worker
    return per_worker * int(overrides.get("jobs.workers", 1))


def run(label: str, overrides: dict, args: argparse.Namespace, image) -> float:
    """Jobs per minute of one set-up (``overrides`` on top of the demo model in a fresh temp folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(overrides={
            "model.demo": True, "paths.models_dir": f"{tmp}/models", "paths.output_dir": f"{tmp}/outputs",
            "paths.state_dir": f"{tmp}/data", "paths.log_dir": f"{tmp}/logs", "jobs.max_queued": max(20, args.jobs),
            "model.cpu_threads": machine_threads(args.threads, overrides), "translation.enabled": "off",  # no hub
            **overrides})
        app = composition.build(config)
        try:
            app.start()
            deadline = time.monotonic() + 600
            while not all(engine.ready for engine in app.engines):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label}: the workers did not load within 10 minutes")
                time.sleep(0.2)
            started = time.perf_counter()
            jobs = [app.queue.submit(image, "the waves roll in slowly", owner="bench", resolution=args.resolution,
                                     num_frames=args.frames, num_inference_steps=args.steps, seed=i)
                    for i in range(args.jobs)]
            finished = [app.queue.wait(job.id, timeout=3600) for job in jobs]
            seconds = time.perf_counter() - started
        finally:
            app.shutdown(grace_s=0)
            app.lock.release()
        failed = [job.id for job in finished if job.state != DONE]
        if failed:
            raise SystemExit(f"{label}: {len(failed)} job(s) did not finish: {failed}")
        workers = sorted({job.worker_name for job in finished})
        rate = 60 * args.jobs / seconds
        print(f"| {label:<22} | {len(workers):>7} | {args.jobs:>4} | {seconds:>7.1f} | {rate:>8.2f} |", flush=True)
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--resolution", default="256p")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="ray: also time the Ray backend (a cluster must run: ray start --head)")
    parser.add_argument("--ray-address", default="auto")
    parser.add_argument("--ray-resource", default="", help="custom resource each actor needs (else one GPU)")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors (jobs.workers)")
    args = parser.parse_args()
    composition.setup_logging("WARNING")
    import torch

    torch.set_num_threads(args.threads)  # the one in-process worker's threads
    print(f"{os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; demo model, "
          f"{args.resolution}, {args.frames} frames, {args.steps} steps, {args.threads} torch thread(s) per worker")
    with tempfile.TemporaryDirectory() as tmp:
        image = ensure_examples(Path(tmp) / "examples")[0][0]
        print("| set-up                 | workers | jobs |   time s | jobs/min |")
        print("|------------------------|---------|------|----------|----------|")
        one = run("1 local worker", {"jobs.workers": 1}, args, image)
        rates = {"2 local workers": run("2 local workers", {"jobs.workers": 2}, args, image)}
        if args.backend == "ray":
            rates[f"ray, {args.actors} actors"] = run(f"ray, {args.actors} actors", {
                "jobs.backend": "ray", "jobs.ray_address": args.ray_address, "jobs.ray_resource": args.ray_resource,
                "jobs.workers": args.actors}, args, image)
    for label, rate in rates.items():
        print(f"{label}: {rate / one:.2f}x one worker")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
