"""How long the server takes to make a video on a CPU for each thread setting, quiet and beside busy
processes, with the page open: the measurement behind ``model.cpu_threads`` and ``model.cpu_wait_policy``.

    python bench/cpu_threads.py [--settings 2:default,2:passive,1:passive] [--busy 0,1,2]
                                [--resolution 512p] [--frames 16] [--steps 50] [--timeout 600] [--no-page]

Each setting is THREADS:POLICY (``model.cpu_threads`` : ``model.cpu_wait_policy``); ``2:default`` is what
torch does unless told (one thread per core, OpenMP's own wait), i.e. the app before it chose. For each
setting a real server starts (``python main.py --demo``, the demo model built once in a temp folder, its
own job folder), a headless Chromium opens its page (as a user has it open while waiting; ``--no-page``
or no Chromium/Playwright: the page is not opened), and for each ``--busy`` count that many processes spin
a core each (``while True: pass``, like a compile, ffmpeg or another app on the machine) while one video
is made through ``POST /api/jobs``. Prints one Markdown row per run: the job's time from submit to done,
and how long the server took to answer ``GET /api/status`` meanwhile (the page's responsiveness). A run
that has not finished in ``--timeout`` seconds is cancelled and shown as "> N".

The machine's other work changes every number: run it on a quiet machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
            timeout: float = 60) -> dict:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def submit(base: str, image: bytes, fields: dict) -> dict:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return request(base + "api/jobs", "POST", b"".join(parts),
                   {"Content-Type": f"multipart/form-data; boundary={boundary}"})


class Server:
    """``python main.py --demo`` with one thread setting, in its own process group and temp folders."""

    def __init__(self, root: Path, models: Path, threads: str, policy: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY") and not k.startswith("I2V_")}
        env.update({"HF_HUB_OFFLINE": "1", "I2V_MODEL_CPU_THREADS": threads, "I2V_MODEL_CPU_WAIT_POLICY": policy,
                    "I2V_TRANSLATION_ENABLED": "off", "I2V_PATHS_MODELS_DIR": str(models),
                    "I2V_PATHS_OUTPUT_DIR": str(root / "outputs"), "I2V_PATHS_STATE_DIR": str(root / "data"),
                    "I2V_PATHS_LOG_DIR": str(root / "logs"), "I2V_JOBS_MAX_QUEUED": "5"})
        self.log = root / "server.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "main.py", "--demo", "--host", "127.0.0.1", "--port",
                                             str(self.port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server stopped:\n{self.log.read_text()[-3000:]}")
            try:
                if request(self.url + "api/status", timeout=5)["model"]["state"] == "ready":
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise SystemExit("the server did not become ready")

    def threads_line(self) -> str:
        return next((line.split(": ", 2)[-1] for line in self.log.read_text().splitlines()
                     if "CPU threads for" in line), "(no CPU threads line in the log)")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def open_page(url: str):
    """The page open in headless Chromium (as a waiting user has it), or None without Playwright/Chromium."""
    if not Path(CHROMIUM).exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page()
    page.goto(url, timeout=120_000)
    return playwright, browser


def close_page(handle) -> None:
    if handle:
        playwright, browser = handle
        browser.close()
        playwright.stop()


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(count)]


def stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def make_one(server: Server, image: bytes, args: argparse.Namespace) -> tuple[float | None, list[float]]:
    """One video: its seconds from submit to done (None past the timeout: cancelled), and the
    ``/api/status`` answer times meanwhile."""
    started = time.perf_counter()
    job = submit(server.url, image, {"prompt": "the waves roll in slowly", "resolution": args.resolution,
                                     "num_frames": args.frames, "num_inference_steps": args.steps, "seed": 1})
    latencies = []
    while time.perf_counter() - started < args.timeout:
        asked = time.perf_counter()
        request(server.url + "api/status", timeout=120)
        latencies.append(time.perf_counter() - asked)
        state = request(server.url + f"api/jobs/{job['id']}", timeout=120)["state"]
        if state == "done":
            return time.perf_counter() - started, latencies
        if state in ("failed", "cancelled", "interrupted"):
            raise SystemExit(f"the job ended {state}:\n{server.log.read_text()[-3000:]}")
        time.sleep(1.0)
    request(server.url + f"api/jobs/{job['id']}/cancel", "POST")
    deadline = time.monotonic() + 600  # the next run starts once this one has really stopped
    while request(server.url + f"api/jobs/{job['id']}", timeout=120)["state"] not in ("cancelled", "done", "failed"):
        if time.monotonic() > deadline:
            raise SystemExit("a cancelled job did not stop within 10 minutes")
        time.sleep(1.0)
    return None, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="2:default,2:passive,1:passive",
                        help="THREADS:POLICY, comma-separated (default %(default)s)")
    parser.add_argument("--busy", default="0,1,2", help="busy processes beside the server, comma-separated")
    parser.add_argument("--resolution", default="512p")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a run is cancelled")
    parser.add_argument("--no-page", action="store_true", help="do not open the page in Chromium")
    args = parser.parse_args()
    import io

    from PIL import Image

    from image_to_video.families.i2vgen_xl.demo import build_demo_model

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(buffer, "PNG")
    image = buffer.getvalue()
    print(f"machine: {os.cpu_count()} cores; {args.resolution}, {args.frames} frames, {args.steps} steps; "
          f"page {'not ' if args.no_page else ''}open")
    print("| threads:policy | busy processes | video (s) | /api/status median / max (s) | load avg |")
    print("|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = build_demo_model(Path(tmp) / "models" / "demo-i2vgen-xl-tiny").parent
        for setting in args.settings.split(","):
            threads, policy = setting.split(":")
            root = Path(tempfile.mkdtemp(dir=tmp))
            server = Server(root, models, threads, policy)
            page = None
            try:
                server.wait_ready()
                page = None if args.no_page else open_page(server.url)
                for busy in (int(n) for n in args.busy.split(",")):
                    spinners = busy_processes(busy)
                    try:
                        time.sleep(1)
                        seconds, latencies = make_one(server, image, args)
                    finally:
                        stop_all(spinners)
                    shown = f"{seconds:.1f}" if seconds is not None else f"> {args.timeout:.0f} (cancelled)"
                    print(f"| {setting} | {busy} | {shown} | {statistics.median(latencies):.3f} / "
                          f"{max(latencies):.3f} | {os.getloadavg()[0]:.1f} |", flush=True)
                print(f"  server log: {server.threads_line()}", flush=True)
            finally:
                close_page(page)
                server.stop()


if __name__ == "__main__":
    main()
