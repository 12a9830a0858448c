"""Configuration: YAML defaults, then environment, then command line, into one frozen object.

``load_config`` is the only way in. Every value is type-checked and range-checked
here, once; a bad one raises ``ConfigError`` naming the setting, the value and
what is allowed. The rest of the app reads limits and defaults from the result
and never writes them again.
"""

from __future__ import annotations

import copyreg
import dataclasses
import ipaddress
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, exact, shown

#: The project folder: relative paths in the config are relative to it.
PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_DIR / "config" / "model_config.yaml"
#: The page's logo, style sheet and example pictures.
STATIC_DIR = PROJECT_DIR / "static"
ENV_PREFIX = "I2V_"
#: Folder name of the built-in demo model inside ``models_dir``.
DEMO_MODEL_DIR = "demo-i2vgen-xl-tiny"

_DEVICES = ("auto", "cpu", "cuda")
_DTYPES = ("auto", "float16", "bfloat16", "float32")


MEMORY_MODES = ("auto", "gpu", "model_offload", "group_offload", "sequential_offload")
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
SCHEDULERS = ("ddim", "dpmpp")
#: How OpenMP's idle threads wait (OMP_WAIT_POLICY): passive sleeps, active spins, default leaves
#: OpenMP's own (spin a short while, then sleep: what torch does unless told).
CPU_WAIT_POLICIES = ("passive", "active", "default")


def _is_network(text: str) -> bool:
    """``text`` is an IP address or network (``10.0.0.0/8``)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _require(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid setting {key}: {shown(value)}. Allowed: {allowed}.")


@dataclass(frozen=True)
class Range:
    """An inclusive numeric range, written ``{min: A, max: B}`` in YAML."""

    min: float
    max: float

    def __contains__(self, value: float) -> bool:
        return self.min <= value <= self.max

    def __str__(self) -> str:
        return f"{exact(self.min)} to {exact(self.max)}"


@dataclass(frozen=True)
class ModelSettings:
    source: str = "ali-vilab/i2vgen-xl"
    variant: str = "fp16"
    revision: str = "main"
    device: str = "auto"
    dtype: str = "auto"
    decode_chunk_size: int = 4
    #: Where the weights stay while generating (CUDA only): auto picks from free GPU memory.
    memory_mode: str = "auto"
    # Speed switches, measured by bench/speed.py (docs/PERFORMANCE.md).
    cudnn_benchmark: bool = False
    attention_backend: str = "auto"
    fuse_qkv: bool = False
    channels_last: bool = False
    compile: bool = False
    #: The same seed gives the identical video on a GPU too (deterministic kernels; slower, so off).
    deterministic: bool = False
    #: Sampler: ddim (the model's own) or dpmpp (DPM-Solver++, meant for fewer steps; off by default).
    scheduler: str = "ddim"
    #: DeepCache-style reuse of the UNet's deep features: 0 off, N >= 2 the whole UNet every N steps.
    deep_cache_interval: int = 0
    #: Torch's CPU threads on this machine, shared by its local workers: "auto" (OMP_NUM_THREADS when
    #: set, else every core) or a whole number (cpu_threads.plan).
    cpu_threads: str = "auto"
    #: How OpenMP's idle threads wait: passive (sleep), active (spin) or default (OpenMP's own).
    cpu_wait_policy: str = "passive"
    #: Which model family ``source`` is (families/): auto (told from the folder's model_index.json or a
    #: known hub repo, else i2vgen-xl), i2vgen-xl, wan2.2-ti2v-5b or wan2.2-i2v-a14b. With ``demo``, the
    #: family whose demo is served.
    family: str = "auto"
    #: The models this server offers, each loaded when a job asks for it (one at a time per worker):
    #: "all" (every model the app knows) or model names separated by commas. The model of ``source``
    #: is always offered and loads first; the others come from their hub repos (or, with ``demo``,
    #: are their families' demos). A job names its model (``model``), else gets ``source``'s.
    offer: str = "all"
    #: Serve the built-in demo model instead of ``source`` (set by ``--demo``).
    demo: bool = False

    def __post_init__(self) -> None:
        _require(bool(self.source.strip()), "model.source", self.source, "a folder or a hub repo id")
        _require(self.family == "auto" or self.family.replace("-", "").replace(".", "").isalnum(), "model.family",
                 self.family, "auto or a model family's name, such as i2vgen-xl or wan2.2-ti2v-5b")
        _require(self.offer.strip() == "all" or all(name.strip().replace("-", "").replace(".", "").isalnum()
                                                    for name in self.offer.split(",")), "model.offer", self.offer,
                 "all, or model names separated by commas, such as i2vgen-xl, wan2.2-ti2v-5b")
        _require(self.device in _DEVICES or self.device.startswith("cuda:"), "model.device",
                 self.device, "auto, cpu, cuda or cuda:N")
        _require(self.dtype in _DTYPES, "model.dtype", self.dtype, ", ".join(_DTYPES))
        _require(1 <= self.decode_chunk_size <= 32, "model.decode_chunk_size",
                 self.decode_chunk_size, "1 to 32")
        _require(self.memory_mode in MEMORY_MODES, "model.memory_mode", self.memory_mode, ", ".join(MEMORY_MODES))
        _require(self.scheduler in SCHEDULERS, "model.scheduler", self.scheduler, ", ".join(SCHEDULERS))
        _require(self.deep_cache_interval == 0 or 2 <= self.deep_cache_interval <= 10, "model.deep_cache_interval",
                 self.deep_cache_interval, "0 (off) or 2 to 10")
        _require(not (self.deep_cache_interval and self.compile), "model.deep_cache_interval",
                 self.deep_cache_interval, "0 while model.compile is on (the compiled UNet cannot skip blocks)")
        _require(self.attention_backend in ATTENTION_BACKENDS, "model.attention_backend",
                 self.attention_backend, ", ".join(ATTENTION_BACKENDS))
        _require(self.cpu_threads == "auto" or (self.cpu_threads.isdigit() and 1 <= int(self.cpu_threads) <= 1024),
                 "model.cpu_threads", self.cpu_threads, "auto or a whole number from 1 to 1024")
        _require(self.cpu_wait_policy in CPU_WAIT_POLICIES, "model.cpu_wait_policy", self.cpu_wait_policy,
                 ", ".join(CPU_WAIT_POLICIES))


@dataclass(frozen=True)
class Parameter:
    """One generation setting, defined once: the page's control, the presets, the API form, the batch
    reader, the command line and request validation all read this table."""

    #: The request's field and the YAML key (``generation.defaults.<name>``, ``generation.<name>``).
    name: str
    kind: type
    default: Any
    #: The allowed range, ``generation.<name>`` in YAML; None for a choice (the resolution).
    limits: Range | None
    #: i18n keys: ``<text>`` labels it, ``<text>_help`` explains it, ``param_<text>`` names it in messages.
    text: str
    #: The ``python main.py generate`` flag.
    flag: str
    #: The page's slider step.
    step: float = 1

    @property
    def message_name_key(self) -> str:
        return f"param_{self.text}"


#: The settings a preset sets and a user picks on the page, in the page's order.
PARAMETERS: tuple[Parameter, ...] = (
    Parameter("resolution", str, "512p", None, "resolution", "--resolution"),
    Parameter("num_frames", int, 16, Range(8, 32), "frames", "--frames"),
    Parameter("fps", int, 8, Range(4, 24), "fps", "--fps"),
    Parameter("num_inference_steps", int, 50, Range(10, 100), "steps", "--steps"),
    Parameter("guidance_scale", float, 9.0, Range(1.0, 20.0), "guidance", "--guidance", step=0.5),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)


class _Values:
    """What presets and defaults share: their parameters as a tuple in ``PARAMETERS`` order."""

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in PARAMETER_NAMES)


#: A named set of ``PARAMETERS`` the page offers as one click.
Preset = dataclasses.make_dataclass(
    "Preset", [(p.name, p.kind) for p in PARAMETERS], bases=(_Values,), frozen=True)

#: The values a new video starts from: ``PARAMETERS``, plus the negative prompt and the seed (-1: random).
GenerationDefaults = dataclasses.make_dataclass(
    "GenerationDefaults",
    [*[(p.name, p.kind, field(default=p.default)) for p in PARAMETERS],
     ("negative_prompt", str, field(default="")), ("seed", int, field(default=-1))],
    bases=(_Values,), frozen=True)

_DEFAULT_PRESETS = {
    "Quick preview": Preset("512p", 8, 8, 30, 9.0),
    "Standard": Preset("512p", 16, 8, 50, 9.0),
    "High quality": Preset("768p", 24, 12, 80, 10.0),
}


class _GenerationChecks:
    """The checks and look-ups of ``GenerationSettings`` (its fields come from ``PARAMETERS``)."""

    def limits(self, name: str) -> Range:
        """The allowed range of parameter ``name``."""
        return getattr(self, name)

    def preset_for(self, values: tuple) -> str | None:
        """The name of the preset with exactly these ``PARAMETERS`` values, if any."""
        return next((name for name, preset in self.presets.items() if preset.values() == tuple(values)), None)

    def __post_init__(self) -> None:
        _require(bool(self.resolutions), "generation.resolutions", dict(self.resolutions),
                 "at least one name: side pair")
        for name, side in self.resolutions.items():
            _require(side % 16 == 0 and 64 <= side <= 2048, f"generation.resolutions.{name}", side,
                     "a multiple of 16 from 64 to 2048; for I2VGen-XL a multiple of 64")
        for p in PARAMETERS:
            if p.limits:
                limits = self.limits(p.name)
                _require(0 < limits.min <= limits.max, f"generation.{p.name}", dataclasses.asdict(limits),
                         "0 < min <= max")
        _require(self.max_prompt_chars > 0, "generation.max_prompt_chars", self.max_prompt_chars,
                 "a positive number")
        self._check_values("generation.defaults", self.defaults)
        _require(-1 <= self.defaults.seed < 2**32, "generation.defaults.seed", self.defaults.seed,
                 "-1 (random) or 0 to 4294967295")
        for name, preset in self.presets.items():
            self._check_values(f"generation.presets.{name}", preset)

    def _check_values(self, prefix: str, values) -> None:
        _require(values.resolution in self.resolutions, f"{prefix}.resolution", values.resolution,
                 ", ".join(self.resolutions))
        for p in PARAMETERS:
            if p.limits:
                value, limits = getattr(values, p.name), self.limits(p.name)
                _require(value in limits, f"{prefix}.{p.name}", value, str(limits))


#: The ``generation`` section: defaults, presets, resolutions and one range per numeric parameter.
GenerationSettings = dataclasses.make_dataclass(
    "GenerationSettings",
    [("defaults", GenerationDefaults, field(default_factory=GenerationDefaults)),
     ("presets", Mapping[str, Preset], field(default_factory=lambda: types.MappingProxyType(_DEFAULT_PRESETS))),
     ("resolutions", Mapping[str, int], field(default_factory=lambda: types.MappingProxyType(
         {"256p": 256, "512p": 512, "768p": 768, "1024p": 1024}))),
     *[(p.name, Range, field(default=p.limits)) for p in PARAMETERS if p.limits],
     ("max_prompt_chars", int, field(default=1000))],
    bases=(_GenerationChecks,), frozen=True)

# A worker process gets its AppConfig pickled: make_dataclass names its classes' module "types" (where
# pickle cannot find them), and pickle cannot write a mappingproxy (the read-only mappings) by itself.
for _made in (Preset, GenerationDefaults, GenerationSettings):
    _made.__module__ = __name__


def _read_only(mapping: dict) -> Mapping:
    """A read-only view of ``mapping``: how a pickled mappingproxy is made again."""
    return types.MappingProxyType(mapping)


copyreg.pickle(types.MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))


#: Loops a video can be finished with (``loop``), and the files it can be delivered in (``formats``).
LOOPS = ("none", "boomerang", "crossfade")
FORMATS = ("mp4", "gif", "webm", "png")
UPSCALES = (1, 2)
#: How "smoother motion" makes its in-between frames (``interpolate_method``), the default first: RIFE
#: (learned, finishing.py falls back to ffmpeg when it cannot run) or ffmpeg's minterpolate.
INTERPOLATE_METHODS = ("rife", "ffmpeg")


@dataclass(frozen=True)
class FinishingSettings:
    """Limits of the steps after the model: more segments, loops, interpolation, formats, upscale."""

    #: Most segments one job may make (each runs the model once more).
    max_segments: int = 8
    #: Highest frame rate ``interpolate_fps`` may ask for.
    max_interpolate_fps: int = 48
    #: Most frames the finished video may have (segments, a continued video, loop and interpolation
    #: together): each frame is held in memory while the job finishes.
    max_output_frames: int = 600
    #: Most pixels (frames x width x height, in millions) the finished video may have: its frames are
    #: held in memory (3 bytes a pixel, a few copies while a step runs).
    max_output_megapixels: float = 160.0
    #: A GIF larger than this is made smaller (narrower, then fewer frames per second) until it fits.
    gif_max_mb: float = 15.0
    #: The MP4's quality when a job does not say (its ``crf``): H.264's constant rate factor, 1 (best,
    #: largest) to 51; 18 looks lossless, 23 is x264's default, each +6 about halves the file.
    crf: int = 18

    def __post_init__(self) -> None:
        _require(1 <= self.max_segments <= 8, "finishing.max_segments", self.max_segments, "1 to 8")
        _require(8 <= self.max_interpolate_fps <= 60, "finishing.max_interpolate_fps", self.max_interpolate_fps,
                 "8 to 60")
        _require(8 <= self.max_output_frames <= 5000, "finishing.max_output_frames", self.max_output_frames,
                 "8 to 5000")
        _require(isinstance(self.crf, int) and 1 <= self.crf <= 51, "finishing.crf", self.crf, "1 to 51")
        _require(0.1 <= self.gif_max_mb <= 500, "finishing.gif_max_mb", self.gif_max_mb, "0.1 to 500")
        _require(1 <= self.max_output_megapixels <= 5000, "finishing.max_output_megapixels",
                 self.max_output_megapixels, "1 to 5000")


@dataclass(frozen=True)
class ImageSettings:
    max_megapixels: float = 50.0
    max_aspect_ratio: float = 4.0
    min_side: int = 64

    def __post_init__(self) -> None:
        _require(0 < self.max_megapixels <= 200, "images.max_megapixels", self.max_megapixels, "0 to 200")
        _require(self.max_aspect_ratio >= 1, "images.max_aspect_ratio", self.max_aspect_ratio, "1 or more")
        _require(1 <= self.min_side <= 1024, "images.min_side", self.min_side, "1 to 1024")


_LOGIN = ("auto", "on", "off")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 7860
    max_upload_mb: float = 30.0
    #: Seconds a client gets to send a request's whole body (an upload); then it gets 408.
    body_timeout_s: float = 60.0
    #: Seconds a client gets to send a request's line and headers, from its first byte (or from
    #: connecting); then the connection is closed (a 408 when part of a request came).
    header_timeout_s: float = 10.0
    #: Connections one client address (an IPv6 /64) may hold open at once; one more is refused with 429.
    max_connections_per_client: int = 64
    #: Reverse proxies whose X-Forwarded-For names the client: addresses or networks, comma-separated;
    #: empty (the default): the header is believed from no one.
    trusted_proxies: str = ""
    #: Minutes the page's copies (uploads, previews, results) stay in Gradio's cache folder.
    cache_max_age_min: float = 60.0
    #: auto: a login is required whenever the server listens beyond this machine.
    login: str = "auto"
    username: str = "admin"
    #: Empty: a strong password is generated on first start and kept in the state folder.
    password: str = ""

    @property
    def loopback_only(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    @property
    def proxy_list(self) -> tuple[str, ...]:
        """``trusted_proxies`` as a list: each address or network alone."""
        return tuple(item.strip() for item in self.trusted_proxies.split(",") if item.strip())

    @property
    def login_required(self) -> bool:
        return self.login == "on" or (self.login == "auto" and not self.loopback_only)

    def __post_init__(self) -> None:
        _require(bool(self.host.strip()), "server.host", self.host, "an address such as 0.0.0.0 or 127.0.0.1")
        _require(self.login in _LOGIN, "server.login", self.login, ", ".join(_LOGIN))
        _require(bool(self.username.strip()), "server.username", self.username, "a user name")
        _require(1 <= self.port <= 65535, "server.port", self.port, "1 to 65535")
        _require(0 < self.max_upload_mb <= 1000, "server.max_upload_mb", self.max_upload_mb, "0 to 1000")
        _require(1 <= self.body_timeout_s <= 3600, "server.body_timeout_s", self.body_timeout_s, "1 to 3600")
        _require(0.5 <= self.header_timeout_s <= 600, "server.header_timeout_s", self.header_timeout_s,
                 "0.5 to 600")
        _require(1 <= self.max_connections_per_client <= 100_000, "server.max_connections_per_client",
                 self.max_connections_per_client, "1 to 100000")
        _require(all(_is_network(item) for item in self.proxy_list), "server.trusted_proxies", self.trusted_proxies,
                 "empty, or IP addresses or networks separated by commas, such as 127.0.0.1 or 10.0.0.0/8")
        _require(0.05 <= self.cache_max_age_min <= 10080, "server.cache_max_age_min", self.cache_max_age_min,
                 "0.05 to 10080 (a week)")


@dataclass(frozen=True)
class PathSettings:
    models_dir: Path = Path("models")
    output_dir: Path = Path("outputs")
    log_dir: Path = Path("logs")
    #: The job database, the queued jobs' input images and the generated password.
    state_dir: Path = Path("data")


@dataclass(frozen=True)
class JobSettings:
    #: Jobs that may wait in the queue; one more is refused at once with a message.
    max_queued: int = 20
    #: Seconds a running job may go on after a stop signal before it is stopped (and re-queued).
    shutdown_grace_s: float = 10.0
    #: Days a failed, cancelled or interrupted job keeps its input picture (for Retry); 0: none.
    keep_inputs_days: float = 7.0
    #: How many workers run jobs at once, each with its own engine: "auto" (one per visible CUDA
    #: device, 1 on a CPU) or a whole number; 1 runs the engine in the server's own process.
    workers: str = "1"
    #: Where the workers run: local (processes on this machine) or ray (actors on a Ray cluster).
    backend: str = "local"
    #: The Ray cluster to join (backend ray): auto (the one started on this machine) or host:port.
    ray_address: str = "auto"
    #: A Ray custom resource each actor needs instead of a GPU; empty: each actor takes one GPU.
    ray_resource: str = ""
    #: Runs a job gets when its worker stops under it (a crash, a kill); then it fails with a message.
    max_attempts: int = 3

    def __post_init__(self) -> None:
        _require(1 <= self.max_queued <= 10000, "jobs.max_queued", self.max_queued, "1 to 10000")
        _require(0 <= self.shutdown_grace_s <= 3600, "jobs.shutdown_grace_s", self.shutdown_grace_s, "0 to 3600")
        _require(0 <= self.keep_inputs_days <= 3650, "jobs.keep_inputs_days", self.keep_inputs_days, "0 to 3650")
        _require(self.workers == "auto" or (self.workers.isdigit() and 1 <= int(self.workers) <= MAX_WORKERS),
                 "jobs.workers", self.workers, f"auto or a whole number from 1 to {MAX_WORKERS}")
        _require(self.backend in BACKENDS, "jobs.backend", self.backend, ", ".join(BACKENDS))
        _require(self.ray_address == "auto" or _is_host_port(self.ray_address), "jobs.ray_address",
                 self.ray_address, "auto or host:port")
        _require(self.ray_resource == "" or self.ray_resource.replace("_", "").isalnum(), "jobs.ray_resource",
                 self.ray_resource, "empty (one GPU each) or a resource name of letters, digits and _")
        _require(1 <= self.max_attempts <= 10, "jobs.max_attempts", self.max_attempts, "1 to 10")

    def worker_count(self, cuda_devices: int) -> int:
        """How many workers to start: ``workers``, where "auto" is one per CUDA device (1 without any)."""
        return max(1, cuda_devices) if self.workers == "auto" else int(self.workers)


MAX_WORKERS = 64
BACKENDS = ("local", "ray")


def _is_host_port(address: str) -> bool:
    """True for "host:port" with a port from 1 to 65535."""
    host, _, port = address.rpartition(":")
    return bool(host.strip()) and port.isdigit() and 1 <= int(port) <= 65535


@dataclass(frozen=True)
class OutputSettings:
    #: Delete videos older than this many days; 0 keeps them forever.
    max_age_days: float = 0
    #: Delete the oldest videos while the folder holds more than this many GB; 0 means no limit.
    max_total_gb: float = 0
    #: Refuse a job when less disk than this is free.
    min_free_gb: float = 1.0

    def __post_init__(self) -> None:
        for key in ("max_age_days", "max_total_gb", "min_free_gb"):
            _require(getattr(self, key) >= 0, f"outputs.{key}", getattr(self, key), "0 or more")


TRANSLATION_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class TranslationSettings:
    """Prompts not in English are translated on the server before the model reads them (its text
    encoder reads English only)."""

    #: auto: translate when the translator is on disk or can be downloaded; on: the same, and a
    #: translator that cannot be had is an error in the log; off: never translate.
    enabled: str = "auto"
    #: A MarianMT folder or a hub repo id (downloaded once into ``paths.models_dir``).
    source: str = "Helsinki-NLP/opus-mt-zh-en"
    #: Hub revision (branch, tag or commit) used when downloading.
    revision: str = "main"
    #: Longest English text one sentence may become, in tokens.
    max_new_tokens: int = 200

    def __post_init__(self) -> None:
        _require(self.enabled in TRANSLATION_MODES, "translation.enabled", self.enabled,
                 ", ".join(TRANSLATION_MODES))
        _require(bool(self.source.strip()), "translation.source", self.source, "a folder or a hub repo id")
        _require(bool(self.revision.strip()), "translation.revision", self.revision, "a branch, tag or commit")
        _require(8 <= self.max_new_tokens <= 512, "translation.max_new_tokens", self.max_new_tokens, "8 to 512")


@dataclass(frozen=True)
class LauncherSettings:
    """Read by start_app.sh (before Python is set up); kept here so the file validates."""

    conda_env: str = "torch28"


@dataclass(frozen=True)
class AppConfig:
    """Everything the app is configured with. Build it with ``load_config``."""

    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    finishing: FinishingSettings = field(default_factory=FinishingSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    outputs: OutputSettings = field(default_factory=OutputSettings)
    translation: TranslationSettings = field(default_factory=TranslationSettings)
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    #: Every model the server offers, by name, each with its own settings (``families.served_config``
    #: fills it; empty: only this config's model). Not a setting of the file.
    offered: Mapping[str, AppConfig] = field(default_factory=dict, repr=False, compare=False,
                                             metadata={"computed": True})

    @property
    def model_path(self) -> str:
        """The folder or repo id the engine loads: the demo folder when ``model.demo`` is set."""
        if self.model.demo:
            family = self.model.family
            return str(self.paths.models_dir / (DEMO_MODEL_DIR if family in ("auto", "i2vgen-xl") else f"demo-{family}-tiny"))
        source = Path(self.model.source).expanduser()
        if source.is_absolute() or source.exists() or (PROJECT_DIR / source).exists():
            return str(source if source.is_absolute() else (PROJECT_DIR / source).resolve())
        return self.model.source


def load_config(path: Path | str | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> AppConfig:
    """Read ``path`` (the project's YAML by default), apply ``env`` then ``overrides``.

    ``overrides`` maps dotted keys (``"server.port"``) to values, as the command line
    gives them. Raises ``ConfigError`` for a missing file, bad YAML, an unknown key,
    a wrong type or a value out of range.
    """
    data = _read_yaml(Path(path) if path else DEFAULT_CONFIG_FILE)
    for key, value in _env_overrides(os.environ if env is None else env).items():
        _set_dotted(data, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    config = _build(AppConfig, data, "")
    return dataclasses.replace(config, paths=_resolve_paths(config.paths))


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"Cannot read the config file {path}: {error.strerror}. "
                          f"Pass an existing file with --config.") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"The config file {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The config file {path} must hold sections such as 'model:' and 'server:'.")
    return data


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of every scalar setting, used to map environment variables."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint) and hint is not Range:
            keys += _leaf_keys(hint, f"{prefix}{f.name}.")
        elif hint is not Range and typing.get_origin(hint) is not Mapping and not f.metadata.get("computed"):
            keys.append(prefix + f.name)
    return keys


def env_var_name(key: str) -> str:
    """``server.port`` -> ``I2V_SERVER_PORT``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    found = {}
    for key in _leaf_keys(AppConfig):
        name = env_var_name(key)
        if name in env:
            try:
                found[key] = yaml.safe_load(env[name]) if env[name].strip() else ""
            except yaml.YAMLError:
                found[key] = env[name]
    return found


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Invalid setting {key}: its section must be a mapping.")
    node[leaf] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, checking keys and types."""
    name = prefix.rstrip(".") or "the config file"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"Invalid setting {name}: {shown(data)}. Allowed: a mapping of settings.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init and not f.metadata.get("computed")}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"Unknown setting {prefix}{unknown[0]} in {name}. "
                          f"Allowed: {', '.join(sorted(known))}.")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [key for key in required if key not in data]
    if missing:
        raise ConfigError(f"Missing setting {prefix}{missing[0]} in {name}. "
                          f"Each needs: {', '.join(required)}.")
    values = {key: _coerce(hints[key], data[key], prefix + key) for key in data}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if typing.get_origin(hint) is Mapping:
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"Invalid setting {key}: {shown(value)}. Allowed: a non-empty mapping of names.")
        item = typing.get_args(hint)[1]
        return types.MappingProxyType({str(k): _coerce(item, v, f"{key}.{k}") for k, v in value.items()})
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"Invalid setting {key}: {shown(value)}. Allowed: true or false.")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"Invalid setting {key}: {shown(value)}. Allowed: a whole number.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"Invalid setting {key}: {shown(value)}. Allowed: a number.")
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted on/off/yes/no as a bool: server.login: on
            return "on" if value else "off"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ConfigError(f"Invalid setting {key}: {shown(value)}. Allowed: text.")
    if hint is Path:
        if isinstance(value, str) and value.strip():
            return Path(value).expanduser()
        raise ConfigError(f"Invalid setting {key}: {shown(value)}. Allowed: a folder path.")
    raise TypeError(f"no coercion for {hint}")  # a programming error, not a user's


def _resolve_paths(paths: PathSettings) -> PathSettings:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (PROJECT_DIR / p).resolve()

    return PathSettings(**{f.name: resolve(getattr(paths, f.name)) for f in dataclasses.fields(paths)})
