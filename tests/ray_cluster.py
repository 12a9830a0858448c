"""A Ray cluster of several nodes on this machine's loopback, for the Ray backend's tests and benchmark.

Each node is ``ray start --block`` in its own process group (``start_new_session``), with its own
resources, all in one private temporary folder (``--temp-dir``), so nothing is shared with any other
Ray on the machine. ``stop`` ends exactly these processes: TERM to each node's ``ray start`` (it
stops its own children), then KILL to anything of theirs still there. It never runs ``ray stop``,
which ends every Ray process of the machine, other people's too.

The head listens on 127.0.0.2: Ray replaces a ``--node-ip-address`` of 127.0.0.1 with the machine's
network address, but keeps any other loopback address; the other nodes find 127.0.0.1 on their own
(the address they reach the head from).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .app_process import free_port

HEAD_IP = "127.0.0.2"
#: What each node prints once it runs (``ray start --block``).
STARTED = "block forever"


class RayCluster:
    """``nodes`` Ray nodes, each with ``cpus`` CPUs and one unit of each of ``resources``."""

    def __init__(self, *, nodes: int = 2, cpus: int = 1, resources: dict[str, float] | None = None):
        self.nodes, self.cpus = nodes, cpus
        self.resources = resources if resources is not None else {"i2v_slot": 1}
        # Short on purpose: Ray's socket paths live under it (a Unix socket path has at most 107 bytes).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="i2v-ray-"))
        self.port = free_port()
        self.address = f"{HEAD_IP}:{self.port}"
        self.leaders: list[subprocess.Popen] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}

    def start(self, timeout: float = 120) -> RayCluster:
        """Start the head, then the other nodes, each waited for in turn."""
        try:
            for index in range(self.nodes):
                self._start_node(index, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, index: int, timeout: float) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        where = (["--head", f"--port={self.port}", f"--node-ip-address={HEAD_IP}", "--include-dashboard=false"]
                 if index == 0 else [f"--address={self.address}"])
        log = self.log_path(index)
        with log.open("w") as out:
            leader = subprocess.Popen(
                [ray, "start", *where, f"--num-cpus={self.cpus}", "--num-gpus=0",
                 f"--resources={json.dumps(self.resources)}", f"--temp-dir={self.temp_dir}",
                 "--disable-usage-stats", "--block"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.leaders.append(leader)
        deadline = time.monotonic() + timeout
        while STARTED not in log.read_text(errors="replace"):
            if leader.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray node {index} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)

    def log_path(self, index: int) -> Path:
        return self.temp_dir / f"node{index}.log"

    def processes(self) -> list[psutil.Process]:
        """Every process of the cluster now: each running node's ``ray start`` and all below it (Ray's
        workers, the actors among them, start sessions of their own: they are not in the nodes' groups)."""
        return [process for index in range(len(self.leaders)) for process in self.node_processes(index)]

    def node_processes(self, index: int) -> list[psutil.Process]:
        """Node ``index``'s ``ray start`` and every process below it; none once it has ended (its PID,
        reaped, may be another process's by now)."""
        leader = self.leaders[index]
        if leader.poll() is not None:
            return []
        try:
            process = psutil.Process(leader.pid)
            return [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def node_of(self, pid: int) -> int | None:
        """Which node (0: the head) runs process ``pid``; None: none of them."""
        return next((index for index in range(len(self.leaders))
                     if pid in {process.pid for process in self.node_processes(index)}), None)

    def stop(self, timeout: float = 60) -> list[psutil.Process]:
        """End every process of the cluster; returns those still alive afterwards (none, normally).

        The other nodes go first, each waited for, then the head: a node stopping drains itself
        through the head, and waits half a minute for a head that is already gone."""
        leaders = {leader.pid for leader in self.leaders}
        below = [process for process in self.processes() if process.pid not in leaders]
        for leader in reversed(self.leaders):
            if leader.poll() is not None:
                continue
            _signal(leader.pid, signal.SIGTERM)  # not reaped yet: the PID is still this leader's
            try:
                leader.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(leader.pid, signal.SIGKILL)
                leader.wait(10)
        _, alive = psutil.wait_procs(below, timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # psutil checks it is still the same process (its start time)
        _, alive = psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return alive


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
