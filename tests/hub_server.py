"""A files server on 127.0.0.1 that speaks the part of the Hugging Face hub HTTP API
huggingface_hub (2.4.0) uses for ``HfApi().model_info`` and ``snapshot_download``.

Routes (read from huggingface_hub's hf_api.py, _snapshot_download.py and file_download.py):

* ``GET /api/models/{repo}/revision/{rev}``: the model info JSON (``id``, ``sha``, ``siblings``).
* ``GET /api/models/{repo}/tree/{rev}?recursive=...``: the file listing ``snapshot_download`` filters
  with ``allow_patterns`` (``type``, ``path``, ``size``, ``oid`` and, for LFS files, ``lfs``).
* ``HEAD /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1) or, for LFS
  files, ``X-Linked-Etag``/``X-Linked-Size`` (sha256 and size), ``Content-Length``.
* ``GET`` of the same: the bytes, honouring ``Range: bytes=START-[END]`` with ``206`` and
  ``Content-Range``.

Unknown repos, revisions and files get the hub's 404s with its ``X-Error-Code``. Every request is
recorded (method, path, Range header, status, body bytes sent) so a test can say what was fetched.
A fault can be planned for one file: send some bytes and drop the connection, then answer an error;
``claimed`` makes HEAD announce another size than the bytes a GET sends (a hub that lies).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")


@dataclass
class Hit:
    method: str
    path: str  # the file's path in the repo for resolve requests, else the URL path
    range: str | None
    status: int
    sent: int  # body bytes written


@dataclass
class Fault:
    after: int  # body bytes sent before the connection is dropped (first GET only)
    then_status: int | None  # answer to every later GET of the file, or None to serve it
    dropped: bool = False


class HubServer:
    """One model repo at one commit, served on 127.0.0.1 on a free port. Use as a context manager."""

    def __init__(self, repo_id: str, files: dict[str, bytes], sha: str = "5ab1e" * 8):
        self.repo_id, self.files, self.sha = repo_id, dict(files), sha
        self.hits: list[Hit] = []
        self.faults: dict[str, Fault] = {}
        self.on_request = None  # optional callable(method, path, headers), called before answering
        self.claimed: dict[str, int] = {}  # path -> the size HEAD announces instead of the true one (a lying hub)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- what a test uses ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def interrupt(self, path: str, *, after: int, then_status: int | None = 503) -> None:
        """Drop the connection after ``after`` bytes of the first GET of ``path``; later GETs get
        ``then_status`` (the hub stays down for it) or, with None, the file."""
        self.faults[path] = Fault(after, then_status)

    def heal(self) -> None:
        self.faults.clear()

    def take_hits(self) -> list[Hit]:
        """The requests seen since the last call, oldest first."""
        with self._lock:
            hits, self.hits = self.hits, []
        return hits

    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the hub would say ------------------------------------------------------------------
    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    @staticmethod
    def git_oid(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def tree(self, recursive: bool) -> list[dict]:
        entries, folders = [], set()
        for path, data in sorted(self.files.items()):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folders.add("/".join(parts[:depth]))
            if not recursive and len(parts) > 1:
                continue
            entry = {"type": "file", "oid": self.git_oid(data), "size": len(data), "path": path}
            if self.is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
        top = [f for f in sorted(folders) if recursive or "/" not in f]
        return [{"type": "directory", "oid": self.git_oid(f.encode()), "size": 0, "path": f}
                for f in top] + entries

    def file_headers(self, path: str) -> dict[str, str]:
        data = self.files[path]
        headers = {"X-Repo-Commit": self.sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if self.is_lfs(path):
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"',
                            "X-Linked-Size": str(self.claimed.get(path, len(data)))})
        else:
            headers["ETag"] = f'"{self.git_oid(data)}"'
        return headers


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5  # an idle keep-alive connection ends instead of holding its thread

        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self._answer(head=True)

        def do_GET(self):
            self._answer(head=False)

        def _answer(self, head: bool):
            url = urlsplit(self.path)
            path = unquote(url.path)
            repo = re.escape(hub.repo_id)
            api = re.fullmatch(rf"/api/models/{repo}/(revision|tree)/([^/]+)", path)
            resolve = re.fullmatch(rf"/{repo}/resolve/([^/]+)/(.+)", path)
            name = resolve.group(2) if resolve else path
            if hub.on_request:
                hub.on_request(self.command, name, self.headers)
            if api and not head:
                if api.group(2) not in ("main", hub.sha):
                    return self._error(name, 404, "RevisionNotFound", f"Invalid rev id: {api.group(2)}")
                if api.group(1) == "revision":
                    body = {"_id": "0" * 24, "id": hub.repo_id, "modelId": hub.repo_id, "sha": hub.sha,
                            "private": False, "disabled": False, "gated": False, "tags": [],
                            "siblings": [{"rfilename": f} for f in sorted(hub.files)]}
                else:
                    recursive = parse_qs(url.query).get("recursive", ["False"])[0].lower() == "true"
                    body = hub.tree(recursive)
                return self._send(name, 200, {"Content-Type": "application/json"},
                                  json.dumps(body).encode())
            if not resolve:
                return self._error(name, 404, "RepoNotFound", "Repository not found")
            if resolve.group(1) not in ("main", hub.sha):
                return self._error(name, 404, "RevisionNotFound", f"Invalid rev id: {resolve.group(1)}")
            if name not in hub.files:
                return self._error(name, 404, "EntryNotFound", f"{name} does not exist on \"{hub.sha}\"")
            data, headers = hub.files[name], hub.file_headers(name)
            if head:
                headers["Content-Length"] = str(hub.claimed.get(name, len(data)))
                return self._send(name, 200, headers, b"", head=True)
            fault = hub.faults.get(name)
            if fault and fault.dropped and fault.then_status:
                return self._error(name, fault.then_status, None, "Service unavailable")
            status, start, end = 200, 0, len(data) - 1
            wanted = self.headers.get("Range")
            if wanted:
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
                if not match or int(match.group(1)) >= len(data):
                    return self._send(name, 416, {"Content-Range": f"bytes */{len(data)}"}, b"")
                start = int(match.group(1))
                end = min(int(match.group(2)), end) if match.group(2) else end
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            body = data[start:end + 1]
            if fault and not fault.dropped:
                fault.dropped = True
                return self._send(name, status, headers, body, cut_after=fault.after)
            return self._send(name, status, headers, body)

        def _error(self, name, status, code, message):
            headers = {"Content-Type": "application/json", "X-Repo-Commit": hub.sha}
            if code:
                headers["X-Error-Code"] = code
            self._send(name, status, headers, json.dumps({"error": message}).encode())

        def _send(self, name, status, headers, body, head=False, cut_after=None):
            self.send_response(status)
            if not head:
                headers = {**headers, "Content-Length": str(len(body))}
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            sent = 0
            if not head:
                chunk = body if cut_after is None else body[:cut_after]
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent = len(chunk)
                except OSError:
                    pass
            if cut_after is not None:
                self.close_connection = True  # the rest of the promised body never comes
            with hub._lock:
                hub.hits.append(Hit(self.command, name, self.headers.get("Range"), status, sent))

    return Handler
