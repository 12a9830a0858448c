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

Each actor sees only its own GPU, as its ``cuda`` (``pin_actor_gpu``): with ``num_gpus`` Ray sets its
``CUDA_VISIBLE_DEVICES`` to the GPU it gave it; with a custom resource (which names no GPU), the actor
claims a GPU of its machine itself, one actor per GPU before any GPU gets a second, and sets it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
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
#: Where the actors of one machine claim its GPUs (a custom ``jobs.ray_resource``): a lock file per GPU and turn.
GPU_CLAIMS_DIR = Path(tempfile.gettempdir())
#: The most turns of claims per GPU: actors sharing one GPU (jobs.workers' limit).
MAX_TURNS = 64


class EngineActor(EngineHost):
    """The ``EngineHost`` that Ray runs as an actor. When Ray has made it again by itself after its
    process died (with the same arguments), it starts loading its model at once: nobody may have
    noticed the restart to ask. The first one waits for the server's ``start_loading``, which
    loads the workers in turn. It logs to its process's stderr (on its node, in Ray's log folder:
    ``session_latest/logs/worker-*.err``)."""

    def __init__(self, config: AppConfig, *, device: str, name: str, threads: int | None = None,
                 resource: str = ""):
        """``device`` as ``EngineHost`` takes it, or "auto": this node's GPU if it has one, else its CPU;
        ``resource``: the custom resource that placed it (``jobs.ray_resource``), "" for ``num_gpus``."""
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s")
        gpu_ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        # before CUDA starts in this process: it reads CUDA_VISIBLE_DEVICES once, then
        device, shown, self._gpu_claim = pin_actor_gpu(device, resource, gpu_ids=gpu_ids)
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(config, device=device, name=name, threads=threads, shown_device=shown)
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
    # resource, model.device (auto: the actor's node decides; it claims a GPU there: pin_actor_gpu).
    device = config.model.device if resource else "cuda"
    actor_class = ray.remote(EngineActor).options(
        max_restarts=-1, max_task_retries=0, max_concurrency=ACTOR_CONCURRENCY, **needs)
    # A number is the actor's own threads (one actor per GPU, alone on its share of the node); auto
    # leaves torch's default of the node's cores.
    threads = None if config.model.cpu_threads == "auto" else int(config.model.cpu_threads)
    channels = []
    for index in range(count):
        name = f"ray{index}"
        actor = actor_class.remote(config, device=device, name=name, threads=threads, resource=resource)
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


def pin_actor_gpu(device: str, resource: str, *, gpu_ids: list[str], env: MutableMapping[str, str] | None = None,
                  claims_dir: Path | None = None) -> tuple[str, str | None, int | None]:
    """Where an actor runs: (its device, the name it reports for its GPU or None, the claim it holds for
    its life or None). Its one GPU becomes ``env``'s ``CUDA_VISIBLE_DEVICES`` (this process's: call it
    before CUDA starts), so that its ``cuda`` is that GPU.

    Placed by ``num_gpus`` (no ``resource``): Ray gave it ``gpu_ids`` (its node's numbers; Ray sets the
    variable too, unless told not to). Placed by a custom resource, which names no GPU: a device of
    auto or cuda claims the first free GPU of its machine (``CUDA_VISIBLE_DEVICES`` of its node, else
    ``nvidia-smi``'s list), each GPU once before any twice; the claim is a lock on a file in
    ``claims_dir``, which the system lets go when the actor's process ends, so that Ray's new actor
    takes the GPU it left. cpu, cuda:N, and a machine without a GPU: as they are."""
    env = os.environ if env is None else env
    if not resource:
        if not gpu_ids:
            return device, None, None
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        return "cuda", _gpu_name(gpu_ids[0]), None
    if device not in ("auto", "cuda"):
        return device, None, None
    claimed = _claim_gpu(_machine_gpus(env), claims_dir or GPU_CLAIMS_DIR)
    if claimed is None:
        return device, None, None
    gpu, claim = claimed
    env["CUDA_VISIBLE_DEVICES"] = gpu
    return "cuda", _gpu_name(gpu), claim


def _gpu_name(gpu: str) -> str:
    """cuda:<number> as the node numbers its GPUs; cuda where it names them otherwise (a UUID)."""
    return f"cuda:{gpu}" if gpu.isdigit() else "cuda"


def _machine_gpus(env: MutableMapping[str, str]) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them: its list when set, else
    nvidia-smi's (never CUDA itself: once started, it would ignore the variable set afterwards)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index, line in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def _claim_gpu(gpus: list[str], folder: Path) -> tuple[str, int] | None:
    """The first of ``gpus`` no other process of this machine holds at the lowest turn, and the open lock
    file that holds it (turn 0 of every GPU first, then turn 1, ...); None when none is free."""
    for turn in range(MAX_TURNS if gpus else 0):
        for gpu in gpus:
            path = folder / f"i2v-gpu-{os.getuid()}-{re.sub(r'[^A-Za-z0-9]', '_', gpu)}-{turn}.lock"
            try:
                claim = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            except OSError as error:  # a folder it may not write: no claim, the GPU as CUDA numbers it
                log.warning("Cannot claim GPU %s: %s", gpu, error)
                return None
            try:
                fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another actor of this machine holds it
                os.close(claim)
                continue
            log.info("Claimed GPU %s of this machine (turn %d)", gpu, turn)
            return gpu, claim
    return None


def _cause(error: Exception) -> Exception:
    """The exception a host method raised, from Ray's wrapper of it."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else RuntimeError(str(error))
