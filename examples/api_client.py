"""Make a video through the Image-to-Video HTTP API (standard library only).

    python examples/api_client.py photo.jpg "the waves roll in slowly" [--url http://localhost:7860] [--password PW]

The password is the one start_app.sh printed (also in data/credentials.txt); leave it
out for a server on 127.0.0.1.
"""

import argparse
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def request(url: str, password: str | None, data: bytes | None = None, content_type: str | None = None,
            method: str = "GET") -> bytes:
    headers = {"Authorization": f"Bearer {password}"} if password else {}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers)) as r:
            return r.read()
    except urllib.error.HTTPError as error:  # the server explains what went wrong
        raise SystemExit(f"HTTP {error.code}: {json.loads(error.read()).get('error')}") from None


def submit(base: str, password: str | None, image: Path, prompt: str, **params) -> str:
    boundary = uuid.uuid4().hex
    fields = {"prompt": prompt, **{k: str(v) for k, v in params.items()}}
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"\r\n\r\n'
             .encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    job = json.loads(request(f"{base}/api/jobs", password, body, f"multipart/form-data; boundary={boundary}",
                             "POST"))
    return job["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("prompt")
    parser.add_argument("--url", default="http://localhost:7860")
    parser.add_argument("--password")
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    base = args.url.rstrip("/")
    job_id = submit(base, args.password, args.image, args.prompt, num_frames=args.frames)
    print("job", job_id)
    while True:
        job = json.loads(request(f"{base}/api/jobs/{job_id}", args.password))
        progress = job["progress"]
        print(f"  {job['state']} {progress['stage'] or ''} {progress['done']}/{progress['total']}", flush=True)
        if job["state"] in ("done", "failed", "cancelled", "interrupted"):
            break
        time.sleep(2)
    if job["state"] != "done":
        raise SystemExit(f"{job['state']}: {job['message']}")
    Path(job["video"]).write_bytes(request(f"{base}/api/jobs/{job_id}/video", args.password))
    print("saved", job["video"])


if __name__ == "__main__":
    main()
