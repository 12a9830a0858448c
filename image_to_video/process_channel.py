"""A worker's engine in a child process of the server: the local ``remote_engine.Channel``.

The child is started with ``multiprocessing``'s *spawn* (a fresh interpreter: no CUDA state or
threads copied from the server) and runs an ``engine_host.EngineHost`` behind a request/reply loop
over a pipe. A CUDA fatal error, an out-of-memory kill or a ``kill -9`` ends that child only; the
server sees ``WorkerLost`` on its next call and can start a fresh one. The child lives in its own
session (a stop signal to the server's process group, or Ctrl+C, reaches the server, which decides),
and it exits as soon as its pipe closes, so it never outlives the server, however that ends.

A worker on ``cuda:i`` sees that GPU alone: its child's ``CUDA_VISIBLE_DEVICES`` names that one GPU
before torch is imported there (``pin_gpu``), so its ``cuda`` is that GPU: its current device, peak
memory and any call without a device are its own, and its weights load straight onto it. It still
reports ``cuda:i``, the server's name for it (``GET /api/workers``, a job's record).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any

from .config import AppConfig
from .errors import WorkerLost, plain_error, rebuilt_error

log = logging.getLogger(__name__)

#: The host's methods a channel may call.
HOST_METHODS = ("start_loading", "describe", "start", "poll", "cancel")


class ProcessChannel:
    """An ``EngineHost`` in a spawned child process; one call at a time, each with a time limit."""

    def __init__(self, config: AppConfig, *, device: str, name: str, threads: int | None = None,
                 memory_share: float = 1.0, call_timeout_s: float = 60.0, start_timeout_s: float = 600.0):
        """``device``: cpu, cuda or cuda:N as this process numbers the GPUs; ``memory_share``: the worker's
        part of its GPU's memory where several share it (``workers.memory_shares``). ``call_timeout_s``
        bounds each call (the host answers each at once; one that does not is stuck and is killed);
        ``start_timeout_s`` bounds a fresh child's start (importing torch)."""
        self.config, self.name, self.device, self.threads = config, name, device, threads
        self.memory_share = memory_share
        self.call_timeout_s, self.start_timeout_s = call_timeout_s, start_timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._process = self._conn = None
        self._greeted = False
        self._start()

    @property
    def pid(self) -> int | None:
        """The child's process id (None once closed)."""
        return self._process.pid if self._process is not None else None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``EngineHost.<method>(*args, **kwargs)`` in the child. Raises ``WorkerLost`` when the child
        is gone or does not answer within the time limit (then it is killed); an error of the
        method itself is raised again here (``errors.rebuilt_error``)."""
        if method not in HOST_METHODS:
            raise ValueError(f"EngineHost has no call {method!r}")
        with self._lock:
            if self._conn is None:
                raise WorkerLost(key="err_worker_lost", worker=self.name)
            try:
                if not self._greeted:
                    self._receive(self.start_timeout_s)
                    self._greeted = True
                self._conn.send((method, args, kwargs))
                status, value = self._receive(self.call_timeout_s)
            except (EOFError, OSError, TimeoutError) as error:
                self._stop_child(reason=f"{type(error).__name__} {error}".strip())
                raise WorkerLost(key="err_worker_lost", worker=self.name) from None
        if status == "error":
            raise rebuilt_error(value)
        return value

    def _receive(self, timeout_s: float) -> Any:
        """The child's next message, waiting up to ``timeout_s``; ``EOFError`` as soon as it is gone."""
        deadline = time.monotonic() + timeout_s
        while not self._conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
            if not self._process.is_alive():
                raise EOFError("the worker process ended")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        return self._conn.recv()

    def restart(self) -> None:
        """Stop the child if it still runs and start a fresh one (its model loads on ``start_loading``)."""
        with self._lock:
            self._stop_child(reason="restart")
            self._start()

    def close(self) -> None:
        """Stop the child: its pipe closes, it exits (killed if it has not within a few seconds)."""
        with self._lock:
            self._stop_child(reason=None)

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=serve, name=f"i2v-worker-{self.name}", daemon=True,
            args=(child, self.config, self.device, self.name, self.threads, logging.getLogger().level,
                  self.memory_share))
        self._process.start()
        child.close()  # the child's end lives in the child only: its death is this end's EOF
        self._conn, self._greeted = parent, False
        log.info("Worker %s: started process %d on %s", self.name, self._process.pid, self.device)

    def _stop_child(self, *, reason: str | None) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        if reason:
            log.warning("Worker %s: process %d ended (exit code %s; %s)", self.name, process.pid,
                        process.exitcode, reason)


def pin_gpu(device: str, env: MutableMapping[str, str] | None = None) -> str:
    """The device of a worker that sees only its own GPU: for ``cuda:i`` (as the server numbers its GPUs),
    ``env``'s ``CUDA_VISIBLE_DEVICES`` becomes that one GPU (the i-th of the server's own list when it
    has one) and the device is ``cuda``; cpu and cuda stay as they are. CUDA reads the variable once, as
    it starts: call this before torch is imported (``serve`` does, first thing)."""
    env = os.environ if env is None else env
    if not device.startswith("cuda:"):
        return device
    index = int(device.partition(":")[2])
    visible = env.get("CUDA_VISIBLE_DEVICES")
    gpus = [gpu.strip() for gpu in visible.split(",") if gpu.strip()] if visible is not None else None
    if gpus is not None and index >= len(gpus):
        return device  # not one of the server's GPUs: the engine says so as it loads
    env["CUDA_VISIBLE_DEVICES"] = gpus[index] if gpus is not None else str(index)
    return "cuda"


def serve(conn, config: AppConfig, device: str, name: str, threads: int | None, log_level: int,
          memory_share: float = 1.0) -> None:
    """The child's life: see only its own GPU, build the host, say so, then answer calls until the pipe closes."""
    os.setsid()  # its own session: the server's group signals and Ctrl+C go to the server only
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    local_device = pin_gpu(device)
    if local_device != device and "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        log.warning("Worker %s: CUDA started before CUDA_VISIBLE_DEVICES was set: it may not see %s alone",
                    name, device)
    from .engine_host import EngineHost

    host = EngineHost(config, device=local_device, name=name, threads=threads,
                      shown_device=device if local_device != device else None, memory_share=memory_share)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            method, args, kwargs = conn.recv()
        except (EOFError, OSError):
            break  # the server is gone or closed the channel: so is this worker
        try:
            reply = ("ok", getattr(host, method)(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - the caller gets it, this loop goes on
            reply = ("error", plain_error(error))
        try:
            conn.send(reply)
        except (EOFError, OSError):
            break
        except Exception as error:  # noqa: BLE001 - a result that does not pickle: say so, go on
            conn.send(("error", plain_error(error)))
    os._exit(0)  # now, without waiting for a job's thread: nobody is left to collect its frames
