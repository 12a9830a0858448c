"""Soak test: many demo-model jobs through the HTTP API and the page's own event route together,
watching for leaks.

    python bench/soak.py [--jobs 100] [--resolution 256p] [--frames 8] [--steps 10]

Starts `python main.py --demo` on a free loopback port with its state in a temp folder, then
submits jobs one after another, every other one through the page's route (an upload, then
`/gradio_api/call/generate`, as a browser does) and the rest through `POST /api/jobs`, with a bad
upload now and then. It prints, at the start, every 20 jobs and at the end: the server's resident
memory, open file descriptors, temporary files in the output folder, files in `data/inputs/`, and
files and megabytes in Gradio's cache. Flat numbers mean no leak.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from tests.app_process import AppProcess, free_port  # noqa: E402
from tests.hostile import HostileClient, file_data  # noqa: E402

FINISHED = ("done", "failed", "cancelled", "interrupted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--resolution", default="256p")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cache-max-age-min", type=float, default=2.0,
                        help="server.cache_max_age_min for the soak's server (60 by default in the app), so that "
                             "a soak of minutes shows Gradio's cache being swept")
    parser.add_argument("--cache-check-s", type=float, default=None,
                        help="also wait this long at the end and sample again (Gradio's cache cleanup)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        app = AppProcess(root, free_port(), env={"GRADIO_TEMP_DIR": str(root / "gradio"),
                                          "I2V_SERVER_CACHE_MAX_AGE_MIN": str(args.cache_max_age_min)}).start()
        try:
            run(app, root, args)
        finally:
            app.stop()


def run(app: AppProcess, root: Path, args) -> None:
    photo = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(photo, "PNG")
    page = HostileClient(app.url, timeout=600)
    print(f"{'jobs':>5} {'rss MB':>8} {'fds':>5} {'out tmp':>7} {'inputs':>6} {'cache files':>11} "
          f"{'cache MB':>8} {'videos':>6} {'s/job':>6}")
    sample(app, root, 0, None)
    started = time.monotonic()
    states: dict[str, int] = {}
    for number in range(1, args.jobs + 1):
        if number % 10 == 0:  # a bad upload now and then: must change nothing
            status, _ = post(app, b"not an image", {"prompt": "waves"})
            assert status == 400, status
        prompt = f"soak {number}"
        if number % 2:
            state = page_job(page, photo.getvalue(), prompt, args)
        else:
            status, job = post(app, photo.getvalue(), {"prompt": prompt, "resolution": args.resolution,
                                                       "num_frames": args.frames, "num_inference_steps": args.steps})
            assert status == 202, job
            state = wait(app, job["id"])
        states[state] = states.get(state, 0) + 1
        if number % 20 == 0:
            sample(app, root, number, (time.monotonic() - started) / number)
    if args.jobs % 20:
        sample(app, root, args.jobs, (time.monotonic() - started) / args.jobs)
    if args.cache_check_s:
        time.sleep(args.cache_check_s)
        sample(app, root, args.jobs, None)
    print(f"outcomes: {states}")


def page_job(page: HostileClient, image: bytes, prompt: str, args) -> str:
    """One job as the page makes it: upload the picture, call generate, read its stream to the end."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="p.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    uploaded = page.request("POST", "gradio_api/upload", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert uploaded.status == 200, uploaded
    path = json.loads(uploaded.body)[0]
    names = [p["parameter_name"] for p in json.loads(page.request("GET", "gradio_api/info").body)
             ["named_endpoints"]["/generate"]["parameters"]]
    owner = page.call_event("page_owner", [None])  # the signed page id a browser gets on load
    assert owner.outcome == "complete", owner
    values = {"image": file_data(path), "prompt": prompt, "owner": json.loads(owner.body)[0], "negative_prompt": "", "resolution": args.resolution,
              "num_frames": args.frames, "fps": 8, "steps": args.steps, "guidance": 9.0, "seed": 0,
              "random_seed": True, "lang": "en"}
    answer = page.call_event("generate", [values.get(name) for name in names])
    if answer.outcome != "complete":
        print(f"page job refused: {answer}", flush=True)
    return "done" if answer.outcome == "complete" else f"page {answer.outcome}"


def sample(app: AppProcess, root: Path, jobs: int, per_job: float | None) -> None:
    pid = app.process.pid
    rss = next(int(line.split()[1]) / 1024 for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    out_tmp = len(list((root / "outputs").glob(".*"))) if (root / "outputs").exists() else 0
    inputs = len(list((root / "data" / "inputs").glob("*"))) if (root / "data" / "inputs").exists() else 0
    cache = [p for p in (root / "gradio").rglob("*") if p.is_file()] if (root / "gradio").exists() else []
    cache_mb = sum(p.stat().st_size for p in cache) / 2**20
    videos = len(list((root / "outputs").glob("*.mp4"))) if (root / "outputs").exists() else 0
    print(f"{jobs:>5} {rss:>8.0f} {fds:>5} {out_tmp:>7} {inputs:>6} {len(cache):>11} {cache_mb:>8.1f} "
          f"{videos:>6} {per_job or 0:>6.2f}", flush=True)


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
        if state in FINISHED:
            return state
        time.sleep(0.1)


if __name__ == "__main__":
    main()
