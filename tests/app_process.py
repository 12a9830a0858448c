"""A helper for tests that run the real server: `python main.py --demo` in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from image_to_video.config import PROJECT_DIR


#: The test session's models folder holding the demo model built once (set by conftest); None: each
#: server builds its own.
SHARED_MODELS_DIR: Path | None = None
#: The test runner's thread settings (tests/run.sh), not passed on to the servers it starts.
RUNNER_ONLY = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def app_environment(**extra: str) -> dict[str, str]:
    """The environment for a process of the app a test starts (``main.py``, ``start_app.sh``): this one's,
    without the test runner's thread settings, offline, its models folder the session's shared one (when
    set), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in RUNNER_ONLY}
    env["HF_HUB_OFFLINE"] = "1"
    if SHARED_MODELS_DIR:
        env["I2V_PATHS_MODELS_DIR"] = str(SHARED_MODELS_DIR)
    return {**env, **extra}


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """`python main.py ...` in a subprocess with its state in ``root``; waits until the model is ready.

    Its models folder is ``models``, else the session's shared one (``SHARED_MODELS_DIR``: the demo
    model built once), else ``root/models`` (where it builds the demo model itself)."""

    def __init__(self, root: Path, port: int, *args: str, env: dict | None = None, host: str = "127.0.0.1",
                 models: Path | None = None, demo: bool = True):
        self.root, self.port, self.args = root, port, ("--demo", *args) if demo else args
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = root / "app.log"
        # No test server reaches a model hub (the prompt translator would try to download at start). The
        # test runner's one torch thread (tests/run.sh) is not the server's: it uses model.cpu_threads.
        models = models or SHARED_MODELS_DIR or root / "models"
        self.env = {**app_environment(), **(env or {}), "I2V_PATHS_OUTPUT_DIR": str(root / "outputs"),
                    "I2V_PATHS_STATE_DIR": str(root / "data"), "I2V_PATHS_MODELS_DIR": str(models),
                    "I2V_PATHS_LOG_DIR": str(root / "logs")}
        self.host = host
        self.process = None

    def start(self, timeout: float = 180) -> "AppProcess":
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "main.py", "--host", self.host, "--port", str(self.port), *self.args],
            cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        self.wait_ready(timeout)
        return self

    def status(self) -> dict | None:
        try:
            return json.loads(urllib.request.urlopen(self.url + "api/status", timeout=5).read())
        except OSError:
            return None

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            status = self.status()
            if status and status["model"]["state"] == "ready":
                return
            time.sleep(0.3)
        raise AssertionError(f"the app did not become ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def log(self) -> str:
        return self.log_path.read_text()
