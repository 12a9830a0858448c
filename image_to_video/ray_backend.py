"""Workers on a Ray cluster (``jobs.backend: ray``): one actor per GPU of the cluster, each holding an
``engine_host.EngineHost``, and ``RayChannel``, the ``remote_engine.Channel`` to one of them.

Only ``app.build`` imports this module, and only for the ray backend: a server on one machine never
imports Ray. The web server is a Ray driver (``ray.init``); its job store, output folder, page and API
stay where they are, and only a job's request goes to an actor and its frames come back. Ray places
each actor on a node with a free GPU (or a free unit of ``jobs.ray_resource``), restarts it when its
process dies (``max_restarts=-1``; the new one loads its model again), and ends the actors when the
server's connection ends. Ray never retries a call by itself (``max_task_retries=0``): a job whose
actor died is put back in the queue by the worker, which counts its attempts.

Each actor gets this package from the server (``runtime_env`` ``py_modules``), so it runs the server's
code whatever is checked out on its machine; the libraries (requirements.txt, requirements-ray.txt)
come from the environment its node was started in, and the model path and models folder are the
server's: the same folder on each machine (or a hub id, downloaded into the same models folder).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .config import AppConfig
from .cpu_threads import WAIT_POLICY_VARIABLE
from .engine_host import EngineHost
from .errors import ConfigError, WorkerLost

try:
    import ray
    from ray import exceptions as ray_errors
except ModuleNotFoundError:  # the server's own start-up message, not a traceback
    raise ConfigError(key="err_ray_not_installed") from None

log = logging.getLogger(__name__)

#: Seconds a call may take. The host answers each at once; a poll that finishes a job carries its
#: frames across the network, and a start carries the picture.
CALL_TIMEOUT_S = {"poll": 120.0, "start": 60.0}
QUICK_CALL_TIMEOUT_S = 15.0
#: How long a new actor may take to be placed and made (importing torch) before its first call.
START_TIMEOUT_S = 600.0
#: How long ``restart`` waits for Ray's new actor (its node may have to come back first).
RESTART_TIMEOUT_S = 120.0
RETRY_S = 1.0
#: Calls an actor answers at once: a poll, a cancel and a describe while a job runs in its thread.
ACTOR_CONCURRENCY = 4
#: How long the server tries to reach the head given in ``jobs.ray_address`` before it says so.
CONNECT_TIMEOUT_S = 10.0


class EngineActor(EngineHost):
    """The ``EngineHost`` that Ray runs as an actor. When Ray has made it again by itself after its
    process died (with the same arguments), it starts loading its model at once: nobody may have
    noticed the restart to ask. The first one waits for the server's ``start_loading``, which
    loads the workers in turn. It logs to its process's stderr (on its node, in Ray's log folder:
    ``session_latest/logs/worker-*.err``)."""

    def __init__(self, config: AppConfig, *, device: str, name: str, threads: int | None = None):
        """``device`` as ``EngineHost`` takes it, or "auto": this node's GPU if it has one, else its CPU."""
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(config, device=device, name=name, threads=threads)
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self.start_loading()


class RayChannel:
    """The channel to one ``EngineActor``: each call is ``ray.get`` of the actor's method, with a time limit."""

    def __init__(self, actor: Any, *, name: str, device: str, start_timeout_s: float = START_TIMEOUT_S,
                 restart_timeout_s: float = RESTART_TIMEOUT_S):
        """``start_timeout_s`` bounds the wait for the new actor (placed, torch imported: its calls wait
        for that); ``restart_timeout_s`` the wait for Ray's restarted one in ``restart``."""
        self.actor, self.name, self.device = actor, name, device
        self.start_timeout_s, self.restart_timeout_s = start_timeout_s, restart_timeout_s
        self._started = False

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``EngineHost.<method>(*args, **kwargs)`` on the actor. Raises ``WorkerLost`` when the actor
        died, is being restarted, or did not answer in time (its node may be gone); an error of the
        method itself is raised again as itself."""
        return self._call(method, args, kwargs, log_level=logging.WARNING)

    def _call(self, method: str, args: tuple, kwargs: dict, *, log_level: int) -> Any:
        if not self._started:
            self._get(self.actor.__ray_ready__.remote(), self.start_timeout_s, "start-up", log_level)
            self._started = True
        reply = getattr(self.actor, method).remote(*args, **kwargs)
        return self._get(reply, CALL_TIMEOUT_S.get(method, QUICK_CALL_TIMEOUT_S), method, log_level)

    def _get(self, reply: Any, timeout_s: float, what: str, log_level: int) -> Any:
        try:
            return ray.get(reply, timeout=timeout_s)
        except ray_errors.RayTaskError as error:  # the method ran and raised
            raise _cause(error) from None
        except ray_errors.RayError as error:  # actor died or restarting, node gone, reply lost, timed out
            log.log(log_level, "Worker %s: %s on %s: %s", self.name, type(error).__name__, what,
                    str(error).splitlines()[0] if str(error) else "")
            raise WorkerLost(key="err_worker_lost", worker=self.name) from None

    def restart(self) -> None:
        """A fresh actor: Ray is asked to restart this one (a live actor may hold a GPU that a fatal
        CUDA error left unusable; a dead one is being restarted already), and this returns once the
        new one answers. Ray places it on any node with a free GPU (or unit), which may have to join
        first: raises ``WorkerLost`` when none answered within ``restart_timeout_s``."""
        before = self._identity()
        try:
            ray.kill(self.actor, no_restart=False)
        except Exception as error:  # noqa: BLE001 - Ray restarts a dead one by itself all the same
            log.debug("Worker %s: ray.kill: %s", self.name, error)
        log.info("Worker %s: waiting for Ray to restart its actor", self.name)
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            now = self._identity()
            if now is not None and now != before:
                return
            if time.monotonic() >= deadline:
                raise WorkerLost(key="err_worker_lost", worker=self.name)
            time.sleep(RETRY_S)

    def _identity(self) -> tuple[str, int] | None:
        """The actor's machine and process id, or None when it does not answer."""
        try:
            described = self._call("describe", (), {}, log_level=logging.DEBUG)
        except WorkerLost:
            return None
        return described["host"], described["pid"]

    def close(self) -> None:
        """End the actor for good (Ray does not restart it)."""
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception as error:  # noqa: BLE001 - already gone, or Ray already shut down
            log.debug("Worker %s: ray.kill: %s", self.name, error)


def start_actors(config: AppConfig) -> list[RayChannel]:
    """Join the cluster at ``jobs.ray_address`` and start one actor per GPU in it (per unit of
    ``jobs.ray_resource`` when set), at most ``jobs.workers`` when that is a number. Returns at once:
    each actor loads its model on its own node meanwhile. Raises ``ConfigError`` when the cluster
    cannot be reached or has no GPU (no unit) at all."""
    connect(config.jobs.ray_address)
    resource = config.jobs.ray_resource
    count = actor_count(config, units=int(ray.cluster_resources().get(resource or "GPU", 0)))
    needs = {"resources": {resource: 1}} if resource else {"num_gpus": 1}
    # With num_gpus Ray hides the other GPUs from the actor: its "cuda" is its own GPU. With a custom
    # resource, model.device (auto: the actor's node decides).
    device = config.model.device if resource else "cuda"
    actor_class = ray.remote(EngineActor).options(
        max_restarts=-1, max_task_retries=0, max_concurrency=ACTOR_CONCURRENCY, **needs)
    # A number is the actor's own threads (one actor per GPU, alone on its share of the node); auto
    # leaves torch's default of the node's cores.
    threads = None if config.model.cpu_threads == "auto" else int(config.model.cpu_threads)
    channels = []
    for index in range(count):
        name = f"ray{index}"
        actor = actor_class.remote(config, device=device, name=name, threads=threads)
        channels.append(RayChannel(actor, name=name, device=device))
    log.info("Started %d Ray actor(s), each needing %s", count, needs)
    return channels


def connect(address: str) -> None:
    """This process as a driver of the cluster at ``address`` ("auto": the one started on this
    machine); a head that does not answer is said in seconds (Ray itself would try for minutes)."""
    if ray.is_initialized():
        return
    if address != "auto":
        host, _, port = address.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # "[::1]:6379": IPv6
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise ConfigError(key="err_ray_unreachable", address=address, error=str(error)) from None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 # every actor of this server imports this package as the server has it
                 runtime_env={"py_modules": [str(Path(__file__).resolve().parent)], "excludes": ["__pycache__"],
                              # the server's OpenMP wait policy (model.cpu_wait_policy) for its actors too
                              "env_vars": {WAIT_POLICY_VARIABLE: os.environ[WAIT_POLICY_VARIABLE]}
                              if WAIT_POLICY_VARIABLE in os.environ else {}})
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(key="err_ray_unreachable", address=address, error=str(error).splitlines()[0]) from None


def actor_count(config: AppConfig, *, units: int) -> int:
    """How many actors: the cluster's GPUs (``units``), at most ``jobs.workers`` when it is a number."""
    jobs = config.jobs
    if units < 1:
        raise ConfigError(key="err_ray_no_gpus", address=jobs.ray_address,
                          resource=jobs.ray_resource or "GPU")
    if jobs.workers == "auto":
        return units
    count = min(units, int(jobs.workers))
    if count < units:
        log.warning("jobs.workers is %s: %d of the cluster's %d %s get an actor (jobs.workers: auto uses "
                    "them all)", jobs.workers, count, units, jobs.ray_resource or "GPUs")
    return count


def _cause(error: Exception) -> Exception:
    """The exception a host method raised, from Ray's wrapper of it."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else RuntimeError(str(error))
