"""Soak test: many demo-model jobs through the HTTP API, watching for leaks.

    python bench/soak.py [--jobs 100] [--resolution 256p] [--frames 8] [--steps 10]

Starts `python main.py --demo` on a free loopback port with its state in a temp
folder, submits jobs one after another (a few bad uploads mixed in), and prints
the server's resident memory, open file descriptors and temporary files at the
start, every 20 jobs and at the end. Flat numbers mean no leak.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from tests.app_process import AppProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--resolution", default="256p")
    parser.add_argument("--frames", default="8")
    parser.add_argument("--steps", default="10")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        root = Path(tmp)
        app = AppProcess(root, port, env={"GRADIO_TEMP_DIR": str(root / "gradio")}).start()
        try:
            run(app, root, args)
        finally:
            app.stop()


def run(app: AppProcess, root: Path, args) -> None:
    photo = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(photo, "PNG")
    print(f"{'jobs':>5} {'rss MB':>8} {'fds':>5} {'tmp files':>9} {'videos':>6} {'s/job':>6}")
    sample(app, root, 0, None)
    started = time.monotonic()
    failed = 0
    for number in range(1, args.jobs + 1):
        if number % 10 == 0:  # a bad upload now and then: must change nothing
            status, _ = post(app, b"not an image", {"prompt": "waves"})
            assert status == 400, status
        status, job = post(app, photo.getvalue(), {"prompt": f"soak {number}", "resolution": args.resolution,
                                                   "num_frames": args.frames, "num_inference_steps": args.steps})
        assert status == 202, job
        state = wait(app, job["id"])
        failed += state != "done"
        if number % 20 == 0:
            sample(app, root, number, (time.monotonic() - started) / number)
    print(f"{args.jobs - failed} of {args.jobs} jobs done")


def sample(app: AppProcess, root: Path, jobs: int, per_job: float | None) -> None:
    pid = app.process.pid
    rss = next(int(line.split()[1]) / 1024 for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    tmp = sum(1 for p in (root / "gradio").rglob("*") if p.is_file()) if (root / "gradio").exists() else 0
    tmp += len(list((root / "outputs").glob(".*"))) if (root / "outputs").exists() else 0
    videos = len(list((root / "outputs").glob("*.mp4"))) if (root / "outputs").exists() else 0
    print(f"{jobs:>5} {rss:>8.0f} {fds:>5} {tmp:>9} {videos:>6} {per_job or 0:>6.2f}", flush=True)


def post(app: AppProcess, image: bytes, fields: dict) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'.encode()
             + image + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(app.url + "api/jobs", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait(app: AppProcess, job_id: str) -> str:
    while True:
        with urllib.request.urlopen(f"{app.url}api/jobs/{job_id}", timeout=30) as response:
            state = json.loads(response.read())["state"]
        if state in ("done", "failed", "cancelled", "interrupted"):
            return state
        time.sleep(0.1)


if __name__ == "__main__":
    main()
