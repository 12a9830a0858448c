"""The Python half of start_app.sh: everything the launcher decides once Python exists.

    python -m image_to_video.launcher [--run-dir DIR] [--for COMMAND] SUBCOMMAND [OPTIONS]

``start_app.sh`` prepares the Python environment, spawns the app and stops it by its
process group; it asks this module everything else:

    preflight    config values; a host this machine can listen on?; our app already running
                 on the port (then its address and login)?; Python, torch, GPU, ffmpeg and disk
                 checks; is the port free?; serve the demo model?; else does the model folder exist?
    port         is the port free? (lsof, else ss, else a bind test)
    usage        the script's --help
    prepare      the app's folders and this start's log file
    banner       the DEMO MODE banner
    addresses    where to open the page: this machine's URL and its network addresses, never
                 0.0.0.0 (--login: and how to log in)
    ticks PID    a process's start time, for the PID file
    wait-ready   poll the starting app until its model is ready; explain a failed start
    diagnose     the end of a log and the likely cause of a failed start
    status       the running instance: PID, address, uptime, model state, log file
    stop-target  the instance ``stop`` and ``restart`` act on
    log-file     the log ``logs`` follows

Every subcommand takes the options the script forwards (``--port``, ``--host``,
``--model``, ``--no-login``, ``--demo``); the config is read through ``load_config``,
so YAML, then ``I2V_<SECTION>_<KEY>``, then these options, as the app reads it.

Without ``--port``, status, stop-target and log-file act on the one instance that
runs (found from the PID files ``run/app-PORT.pid``, ``PID TICKS PORT LOGFILE``); when
several run they list them and exit with status 2.

Output: every line is ``LEVEL<TAB>TEXT``, which the script shows with its own helpers
(colours, ``--quiet``, errors to stderr): ``info``, ``success``, ``warn``, ``error``,
``debug``, ``say``, ``highlight``, ``out`` (stdout, even under ``--quiet``), ``err``
(stderr), and ``set`` (TEXT is ``KEY=VALUE``, a value for the script). Messages are in
Simplified Chinese when LC_ALL, LC_MESSAGES or LANG starts with ``zh``.

Only the standard library is imported at module level: this runs on every start.
The config (yaml) is imported when a subcommand needs it, torch only by ``preflight``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ipaddress
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import shown
from .processes import is_running, is_same_process, start_ticks

APP_NAME = "Image-to-Video"
PROJECT_DIR = Path(__file__).resolve().parent.parent
#: Below this much free space in the output folder the preflight warns.
LOW_DISK_GB = 10.0
#: The app's log files kept in the log folder (one per start).
KEEP_LOGS = 20
#: Lines of the log shown when a start fails.
LOG_TAIL_LINES = 25
#: Exit status when several instances run and the command needs --port to choose one.
SEVERAL = 2
#: Exit status when an option's value is refused (as for any bad command line).
BAD_VALUE = 2
#: Exit status of ``status`` when the app is not running (as in LSB init scripts).
NOT_RUNNING = 3

# -- messages ------------------------------------------------------------------------------

#: The Simplified Chinese of each message, keyed by its English: the words our users know.
ZH = {
    "  PID:     %s\n  URL:     %s\n  Uptime:  %s":
        "  进程号:   %s\n  地址:     %s\n  运行时长: %s",
    "  Model:   %s (%s)%s\n  Device:  %s": "  模型:     %s（%s）%s\n  设备:     %s",
    "  Model:   not answering yet": "  模型:     尚未响应",
    "  Workers: %s": "  工作进程: %s 个",
    "    %s: %s on %s (%s, %s)%s, %s done": "    %s：%s，设备 %s（%s，%s）%s，已完成 %s 个",
    ", job %s": "，任务 %s",
    "  Log:     %s": "  日志:     %s",
    "No log yet in %s. Start the app first: bash start_app.sh": "%s 中还没有日志。请先启动应用：bash start_app.sh",
    "The app's packages do not import in the %s:": "应用的依赖在 %s 中无法导入：",
    "Reinstall them: '%s -m pip install -r requirements.txt' (or delete .venv and run this again).":
        "请重新安装：'%s -m pip install -r requirements.txt'（或删除 .venv 后重新运行本脚本）。",
    "nvidia-smi sees a GPU but torch does not (torch %s): install the CUDA build of torch, e.g. "
    "'pip install torch==%s' from a machine that reaches PyPI, and check the driver with nvidia-smi.":
        "nvidia-smi 能看到显卡，但 torch 看不到（torch %s）：请安装 CUDA 版 torch，例如在能访问 PyPI 的机器上 "
        "'pip install torch==%s'，并用 nvidia-smi 检查驱动。",
    "imageio-ffmpeg has no ffmpeg binary for this machine. "
    "Reinstall it: '%s -m pip install --force-reinstall imageio-ffmpeg'.":
        "imageio-ffmpeg 没有适合本机的 ffmpeg 程序。请重新安装：'%s -m pip install --force-reinstall imageio-ffmpeg'。",
    "Only %s GB free for %s: the model needs ~5 GB and each video a few MB.":
        "可用空间只剩 %s GB（%s）：模型需要约 5 GB，每个视频几 MB。",
    "The GPU ran out of memory. Stop other programs using it (nvidia-smi lists them) and start again.":
        "显存不足。请停止占用显卡的其他程序（nvidia-smi 可列出）后重新启动。",
    "The port was taken while the app started. Use another: bash start_app.sh --port N":
        "应用启动时端口被占用。请换一个：bash start_app.sh --port N",
    "A package is missing. Delete .venv (or fix the conda environment) and run this script again.":
        "缺少依赖包。请删除 .venv（或修复 conda 环境）后重新运行本脚本。",
    "The disk is full. Free some space (old videos are in outputs/) and start again.":
        "磁盘已满。请清理空间（旧视频在 outputs/ 中）后重新启动。",
    "See the whole log: %s": "完整日志见：%s",
    "No login on %s: anyone who can reach port %s can use the GPU and see every video.":
        "%s 上没有登录保护：任何能访问端口 %s 的人都可以使用显卡并看到所有视频。",
    "Login: user %s, with the password set in server.password": "登录: 用户名 %s，密码为 server.password 中设置的密码",
    "   (kept in %s, readable by you only; the HTTP API takes it as \"Authorization: Bearer <password>\")":
        "   （保存在 %s，仅您可读；HTTP API 以 \"Authorization: Bearer <密码>\" 使用它）",
    "The app asks for a login, but %s is missing; see the log.": "应用要求登录，但 %s 不存在；请查看日志。",
    "No NVIDIA GPU found (nvidia-smi: %s).": "未检测到 NVIDIA 显卡（nvidia-smi: %s）。",
    "Cannot create the app's folders under %s: check the permissions and free space.":
        "无法在 %s 下创建应用目录：请检查权限和剩余空间。",
    "Folders ready: %s, %s": "目录创建完成: %s, %s",
    "Log file: %s": "日志文件: %s",
    "no device": "无设备",
    "not installed": "未安装",
    "Port %s is free": "端口 %s 空闲",
    "Port %s is in use by a process this user cannot see.": "端口 %s 被当前用户看不到的进程占用。",
    "Port %s is in use by another program:": "端口 %s 被其他程序占用：",
    "Start on another port: bash start_app.sh --port %s   (or stop that program first)":
        "换一个端口启动：bash start_app.sh --port %s   （或先停止该程序）",
    "%s is already running (PID %s).": "%s 已在运行（PID %s）。",
    "%s is ready in %s s: %s": "%s 已就绪，用时 %s 秒: %s",
    ", demo model": "，演示模型",
    "Model %s: %s": "模型 %s: %s",
    "The app stopped while starting.": "应用在启动过程中退出了。",
    "The app was not ready after %s s.": "应用在 %s 秒内未就绪。",
    "Likely cause: %s": "可能原因: %s",
    "Local address: %s": "本地地址: %s",
    "Network address: %s": "网络地址: %s",
    "Network address: this machine's address, port %s (none found here; 'hostname -I' lists them)":
        "网络地址: 本机的地址，端口 %s（这里没有找到；'hostname -I' 可列出）",
    "Login: user %s, password %s": "登录: 用户名 %s，密码 %s",
    "%s is not running on port %s.": "%s 未在端口 %s 上运行。",
    "%s is not running.": "%s 未在运行。",
    "%s is running.": "%s 正在运行。",
    "Several %s instances are running:": "有多个 %s 实例在运行：",
    "  port %s: PID %s, %s": "  端口 %s: PID %s, %s",
    "Say which one with --port N, e.g.: bash start_app.sh %s --port %s":
        "请用 --port N 指定其中一个，例如：bash start_app.sh %s --port %s",
    "It keeps the options it was started with. To use %s, restart it: bash start_app.sh restart --port %s %s":
        "它保持启动时的选项。要改用 %s，请重启：bash start_app.sh restart --port %s %s",
    "%s %s is neither an IP address nor a name this machine resolves. Use 0.0.0.0 (the whole network), "
    "127.0.0.1 (this machine only) or one of this machine's addresses (hostname -I lists them).":
        "%s %s 既不是 IP 地址，也不是本机能解析的主机名。请使用 0.0.0.0（整个网络）、127.0.0.1（仅本机）"
        "或本机的某个地址（hostname -I 可列出）。",
    "%s %s is not an address of this machine (%s). Use 0.0.0.0 (the whole network), "
    "127.0.0.1 (this machine only) or one of this machine's addresses (hostname -I lists them).":
        "%s %s 不是本机的地址（%s）。请使用 0.0.0.0（整个网络）、127.0.0.1（仅本机）"
        "或本机的某个地址（hostname -I 可列出）。",
    "The model folder %s does not exist. Give --model (or model.source) a folder that holds the weights "
    "(see models/README.md), or a hub id such as ali-vilab/i2vgen-xl.":
        "模型文件夹 %s 不存在。请给 --model（或 model.source）一个存放权重的文件夹（见 models/README.md），"
        "或 ali-vilab/i2vgen-xl 这样的 Hub 模型名。",
    "The model could not be loaded: %s": "模型加载失败: %s",
    "Stopping the app: it cannot make videos without its model. Fix the cause above, then start again.":
        "正在停止应用：没有模型就无法生成视频。请先解决上面的问题，再重新启动。",
    "worker needs the head's address: bash start_app.sh worker --head HOST[:PORT] (the machine where "
    "'ray start --head' runs; port %s unless it said another).":
        "worker 需要头节点的地址：bash start_app.sh worker --head 主机[:端口]（运行 'ray start --head' 的那台机器；"
        "端口默认为 %s，除非启动时指定了别的）。",
    "--head must be HOST or HOST:PORT (an IPv6 address in brackets: [::1]:6379) with a port from 1 to 65535, "
    "not %s.":
        "--head 必须是 主机 或 主机:端口（IPv6 地址写在方括号里：[::1]:6379），端口 1 到 65535，而不是 %s。",
    "Joining the Ray cluster at %s: %s": "正在加入位于 %s 的 Ray 集群：%s",
    "every GPU of this machine that Ray sees (%s) runs one worker": "Ray 看到的本机每块 GPU（%s 块）各运行一个工作进程",
    "%s unit(s) of %s (jobs.ray_resource), one worker each": "%s 个 %s 单位（jobs.ray_resource），每个运行一个工作进程",
    "Ray sees no GPU on this machine, and jobs.ray_resource is empty: it joins, but runs no job.":
        "Ray 在本机上看不到 GPU，而 jobs.ray_resource 为空：本机会加入集群，但不会运行任务。",
    "The web server starts one worker per GPU when it starts: restart it after adding a machine "
    "(a machine that left and joins again is used again by itself).":
        "网页服务器在启动时为每块 GPU 启动一个工作进程：加入新机器后请重启它（离开后重新加入的机器会被自动再次使用）。",
    "Ctrl+C (or a TERM signal) stops this worker machine; a job running here goes back to the queue.":
        "Ctrl+C（或 TERM 信号）停止本工作机器；正在本机运行的任务会回到队列。",
    "%s is not running on port %s. Without --port, logs shows the newest log: bash start_app.sh logs":
        "%s 未在端口 %s 上运行。不带 --port 时显示最新的日志：bash start_app.sh logs",
}

# -- help ----------------------------------------------------------------------------------

USAGE = """Usage: bash start_app.sh [COMMAND] [OPTIONS]

Set up, start and manage the {app} web app.

Commands:
  start       prepare the environment if needed, start the app, wait until it is ready (default)
  stop        stop the app (TERM to its process group, then KILL after {stop} s)
  restart     stop, then start
  status      say whether the app runs, with its PID, address, uptime and model state
  logs        follow the app's log file (with --port: that app's, if it runs)
  worker      make this machine a GPU worker of a Ray cluster (--head HOST[:PORT]; README "More than
              one machine"); runs until Ctrl+C
Without --port, stop, restart, status and logs act on the running app; when several
run they list them and ask for --port.

Options:
  --port N        port to serve on, 1 to 65535 (default: server.port in config/model_config.yaml, 7860)
  --host ADDR     address to listen on (default: server.host, 0.0.0.0 = the whole network)
  --demo          serve the built-in demo model (random weights; runs anywhere; videos are noise)
  --model SOURCE  model folder or hub repo id (default: model.source in the config)
  --no-login      serve a network address without a login (not recommended; prints a warning)
  --head ADDR     worker: the Ray head's HOST[:PORT] (port 6379 by default)
  --foreground    run in this terminal instead of the background (Ctrl+C stops it)
  --quiet         print only errors and the final address lines
  --debug         trace this script into logs/start_app_trace_*.log, log the app at DEBUG level
  -h, --help      show this help

Without a CUDA GPU, and unless a model is asked for (--model, I2V_MODEL_SOURCE or a
model.source other than the default), the demo model is served. A model that cannot be
loaded fails a (background) start: the app is stopped again and the exit status is 1. A bad value
(a missing one, a port outside 1 to 65535, a host this machine cannot listen on) exits 2.

Environment:
  CONDA_ENV           conda environment to use (default: launcher.conda_env, torch28);
                      'none' skips conda and uses {venv}
  I2V_READY_TIMEOUT   seconds to wait for the app to be ready (default {ready})
  NO_COLOR            set to turn colours off"""

USAGE_ZH = """用法: bash start_app.sh [命令] [选项]

安装、启动和管理 {app} 网页应用。

命令:
  start       按需准备运行环境，启动应用并等待就绪（默认）
  stop        停止应用（先向进程组发送 TERM，{stop} 秒后 KILL）
  restart     先停止，再启动
  status      显示应用是否在运行，以及 PID、地址、运行时长和模型状态
  logs        实时查看应用的日志文件（带 --port 时：该端口上应用的日志）
  worker      让本机成为 Ray 集群的 GPU 工作机器（--head 主机[:端口]；见 README“More than one machine”）；
              运行到按下 Ctrl+C 为止
不带 --port 时，stop、restart、status 和 logs 作用于正在运行的应用；
有多个在运行时会列出它们，并要求用 --port 指定。

选项:
  --port N        服务端口，1 到 65535（默认：config/model_config.yaml 中的 server.port，7860）
  --host ADDR     监听地址（默认：server.host，0.0.0.0 表示整个网络可访问）
  --demo          运行内置演示模型（随机权重，任何机器都能运行，生成的视频是噪声）
  --model SOURCE  模型文件夹或 Hub 模型名（默认：配置中的 model.source）
  --no-login      网络地址也不要求登录（不推荐，会打印警告）
  --head ADDR     worker：Ray 头节点的 主机[:端口]（端口默认 6379）
  --foreground    在当前终端前台运行，而不是后台（Ctrl+C 停止）
  --quiet         只打印错误和最后的地址信息
  --debug         把本脚本的执行跟踪写入 logs/start_app_trace_*.log，并以 DEBUG 级别记录应用日志
  -h, --help      显示本帮助

没有 CUDA 显卡、且没有指定模型（--model、I2V_MODEL_SOURCE 或非默认的 model.source）时，
运行演示模型。（后台启动时）模型无法加载视为启动失败：应用会被停止，退出码为 1。选项值有误（缺少值、
端口不在 1 到 65535 之间、本机无法监听的地址）时退出码为 2。

环境变量:
  CONDA_ENV           使用的 conda 环境（默认：launcher.conda_env，torch28）；
                      设为 none 则不用 conda，改用 {venv}
  I2V_READY_TIMEOUT   等待应用就绪的秒数（默认 {ready}）
  NO_COLOR            设置后关闭彩色输出"""


def chinese() -> bool:
    """True when the system's locale is Chinese: the first set of LC_ALL, LC_MESSAGES, LANG starts with zh."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(name):
            return os.environ[name].startswith("zh")
    return False


def t(message: str, *args: object) -> str:
    """``message % args``, with the message in Chinese under a Chinese locale."""
    text = ZH.get(message, message) if chinese() else message
    return text % args if args else text


def emit(level: str, text: object = "") -> None:
    """Send a message (each of its lines) to start_app.sh, which shows it at ``level``."""
    for line in str(text).replace("\t", " ").splitlines() or [""]:
        print(f"{level}\t{line}", flush=True)


def value(key: str, content: object) -> None:
    """Hand start_app.sh a value: it keeps it as ``PRE[key]``."""
    emit("set", f"{key}={str(content).replace(chr(10), ' ')}")


class Refused(Exception):
    """An expected failure; its message (already in the user's language) is shown as an error, status 1."""


class BadValue(Refused):
    """An option's value is refused before anything starts; exit status ``BAD_VALUE``."""


class Several(Exception):
    """Several instances run and the command needs ``--port`` to choose one."""

    def __init__(self, instances: list[Instance]):
        super().__init__(f"{len(instances)} instances")
        self.instances = instances


# -- config --------------------------------------------------------------------------------

def load(args: argparse.Namespace):
    """The app's config with the options the script forwarded; a bad setting is refused with its message."""
    from .cli import config_overrides
    from .config import load_config
    from .errors import ConfigError

    try:
        return load_config(overrides=config_overrides(args))
    except ConfigError as error:
        raise Refused(str(error)) from None


def wants_demo(args: argparse.Namespace, config, cuda: bool) -> bool:
    """The product rule: the demo model when asked for, or with no CUDA GPU unless a model was asked for."""
    from .config import ModelSettings

    if args.demo or config.model.demo:
        return True
    model_asked = bool(args.model or os.environ.get("I2V_MODEL_SOURCE")) \
        or config.model.source != ModelSettings.source
    return not cuda and not model_asked


# -- processes -----------------------------------------------------------------------------

def _cmdline(pid: int) -> list[str]:
    """The process's arguments, empty when it is gone or hidden."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass(frozen=True)
class Instance:
    """One started app, as its PID file records it: ``PID TICKS PORT LOGFILE``."""

    pid: int
    ticks: str
    port: int
    log_file: str
    pid_file: Path

    @property
    def is_running(self) -> bool:
        """Still the process that was started (a reused PID has other ticks), and still our main.py."""
        return is_same_process(self.pid, self.ticks) and "main.py" in " ".join(_cmdline(self.pid))

    @property
    def app_args(self) -> list[str]:
        """Its own arguments, those after ``main.py`` (``--host``, ``--port``, ``--no-login``, ...)."""
        args = _cmdline(self.pid)
        starts = [i for i, arg in enumerate(args) if arg.endswith("main.py")]
        return args[starts[0] + 1:] if starts else []

    @property
    def host(self) -> str:
        """The address it listens on, from its own ``--host`` argument."""
        args = self.app_args
        for i, arg in enumerate(args):
            if arg == "--host" and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith("--host="):
                return arg.split("=", 1)[1]
        return "localhost"


def read_pid_file(path: Path) -> Instance | None:
    """The instance ``path`` records, or None when it cannot be read or parsed."""
    try:
        pid, ticks, port, *log = path.read_text().split(maxsplit=3)
        return Instance(int(pid), ticks, int(port), log[0].strip() if log else "", path)
    except (OSError, ValueError):
        return None


def running_instances(run_dir: Path, port: int | None = None) -> list[Instance]:
    """The instances the PID files in ``run_dir`` name (only ``port``'s if given) that still run.

    A PID file whose process is gone (a crash, ``kill -9``, a reboot) is removed, so it
    never blocks the next start.
    """
    found = []
    for path in sorted(run_dir.glob(f"app-{port}.pid" if port else "app-*.pid")):
        instance = read_pid_file(path)
        if instance and instance.is_running:
            found.append(instance)
            continue
        emit("debug", f"stale PID file {path} ({instance.pid if instance else 'unreadable'}); removing it")
        path.unlink(missing_ok=True)
    return sorted(found, key=lambda instance: instance.port)


def chosen_instance(run_dir: Path, port: int | None) -> Instance | None:
    """The instance a command acts on: the one on ``port``, else the only one running; raises ``Several``."""
    instances = running_instances(run_dir, port)
    if len(instances) > 1:
        raise Several(instances)
    return instances[0] if instances else None


def uptime(pid: int) -> str:
    """How long ``pid`` has run, as ``1h 02m 03s``; "unknown" when that cannot be read."""
    try:
        ticks = int(start_ticks(pid))
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return "unknown"
    seconds = max(0, int(since_boot - ticks / os.sysconf("SC_CLK_TCK")))
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m {seconds % 60:02d}s"


# -- the port ------------------------------------------------------------------------------

def port_listeners(port: int) -> list[int] | None:
    """PIDs listening on TCP ``port``: empty when it is free, None when something holds it but hides its PID.

    lsof, else ss; the bind test then also catches other users' processes and works without either.
    """
    if shutil.which("lsof"):
        pids = _pids_from(["lsof", "-nP", "-t", f"-iTCP:{port}", "-sTCP:LISTEN"], r"^(\d+)$")
    elif shutil.which("ss"):
        pids = _pids_from(["ss", "-Hltnp", f"sport = :{port}"], r"pid=(\d+)")
    else:
        pids = []
    if not pids and not port_bindable(port):
        return None
    return pids


def _pids_from(command: list[str], pattern: str) -> list[int]:
    """The PIDs ``pattern`` finds in ``command``'s output (none when it fails)."""
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({int(pid) for pid in re.findall(pattern, output, re.MULTILINE)})


def port_bindable(port: int) -> bool:
    """True when nothing holds ``port`` on any address (SO_REUSEADDR: a closing socket does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def check_port(port: int) -> bool:
    """Say whether ``port`` is free; when it is not, who holds it and what to do."""
    listeners = port_listeners(port)
    if listeners == []:
        emit("success", t("Port %s is free", port))
        return True
    if listeners is None:
        emit("error", t("Port %s is in use by a process this user cannot see.", port))
    else:
        emit("error", t("Port %s is in use by another program:", port))
        for pid in listeners:
            emit("err", f"  PID {pid}: {' '.join(_cmdline(pid))[:150]}")
    emit("err", t("Start on another port: bash start_app.sh --port %s   (or stop that program first)", port + 1))
    return False


# -- checks --------------------------------------------------------------------------------

def installed_libraries() -> dict[str, object]:
    """Python, torch and gradio versions, the GPU torch sees and the ffmpeg binary; raises ImportError."""
    import importlib.util
    from importlib import metadata

    # Importing gradio and diffusers costs seconds on every start; finding them is
    # enough here (a broken one shows in the app's log, which diagnose reads).
    for name in ("diffusers", "transformers", "gradio", "accelerate", "yaml", "PIL"):
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"No module named {name!r}")
    import imageio_ffmpeg
    import torch

    found: dict[str, object] = {"python": sys.version.split()[0], "torch": torch.__version__,
                                "gradio": metadata.version("gradio"), "cuda": torch.cuda.is_available(),
                                "torch_cuda": torch.version.cuda or "", "gpu": ""}
    if found["cuda"]:
        props = torch.cuda.get_device_properties(0)
        found["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    try:
        found["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        found["ffmpeg"] = ""
    return found


def nvidia_smi_state() -> str:
    """"gpu" when nvidia-smi lists a GPU, "no device" when it lists none, "not installed" without it."""
    if not shutil.which("nvidia-smi"):
        return "not installed"
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        listed = False
    return "gpu" if listed else "no device"


def report_checks(libraries: dict[str, object], output_dir: Path) -> None:
    """Say what the app will run on; refuse when there is no ffmpeg; warn when the disk is nearly full."""
    emit("success", f"Python {libraries['python']}, torch {libraries['torch']}, gradio {libraries['gradio']}")
    if libraries["cuda"]:
        emit("success", f"GPU: {libraries['gpu']} (CUDA {libraries['torch_cuda']})")
    elif (smi := nvidia_smi_state()) == "gpu":
        torch_version = str(libraries["torch"])
        emit("warn", t("nvidia-smi sees a GPU but torch does not (torch %s): install the CUDA build of torch, e.g. "
                       "'pip install torch==%s' from a machine that reaches PyPI, and check the driver with "
                       "nvidia-smi.", torch_version, torch_version.split("+")[0]))
    else:
        emit("info", t("No NVIDIA GPU found (nvidia-smi: %s).", t(smi)))
    if not libraries["ffmpeg"]:
        raise Refused(t("imageio-ffmpeg has no ffmpeg binary for this machine. "
                        "Reinstall it: '%s -m pip install --force-reinstall imageio-ffmpeg'.", sys.executable))
    from .outputs import free_gb  # the output folder's own measure (preflight has imported torch by now)

    free = free_gb(output_dir)
    if free < LOW_DISK_GB:
        emit("warn", t("Only %s GB free for %s: the model needs ~5 GB and each video a few MB.",
                       f"{free:.1f}", output_dir))


def environment_name() -> str:
    """This Python's environment as the user knows it: a conda environment, else the virtual environment."""
    if os.environ.get("CONDA_PREFIX") == sys.prefix and os.environ.get("CONDA_DEFAULT_ENV"):
        return f"conda environment {os.environ['CONDA_DEFAULT_ENV']}"
    return f"virtual environment {sys.prefix}"


# -- the running app -----------------------------------------------------------------------

def model_status(port: int, host: str = "127.0.0.1") -> dict | None:
    """The ``model`` part of the app's /api/status, in the user's language; None while it does not answer."""
    return _api_get(port, host, "status" + ("?lang=zh-CN" if chinese() else ""), "model")


def worker_list(port: int, host: str = "127.0.0.1", token: str = "") -> list[dict] | None:
    """The app's /api/workers (``token``: the password, when it asks for a login); None when it does not answer."""
    return _api_get(port, host, "workers", "workers", token)


def _api_get(port: int, host: str, path: str, part: str, token: str = "") -> object:
    """``part`` of the JSON the running app answers at /api/``path``; None when it does not answer."""
    address = "127.0.0.1" if host in ("0.0.0.0", "::", "", "localhost") else host
    if ":" in address:
        address = f"[{address}]"  # an IPv6 literal
    request = urllib.request.Request(f"http://{address}:{port}/api/{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    # No proxy: a proxy from the environment cannot reach this machine's own port.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=3) as response:
            return json.load(response)[part]
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return None


def api_token(args: argparse.Namespace) -> str:
    """The password the running app takes as its API token (server.password, else the stored one); empty
    when the config cannot be read or none is set."""
    from .auth import credentials_path, stored_password

    try:
        config = load(args)
    except Refused:
        return ""
    return config.server.password or stored_password(credentials_path(config))


def say_workers(workers: list[dict]) -> None:
    """One line per worker: id, state, device, machine, memory mode, current job, jobs done."""
    emit("out", t("  Workers: %s", len(workers)))
    for worker in workers:
        job = t(", job %s", worker["current_job"]) if worker["current_job"] else ""
        emit("out", t("    %s: %s on %s (%s, %s)%s, %s done", worker["id"], worker["state"], worker["device"],
                      worker["machine"], worker["memory_mode"] or "-", job, worker["jobs_done"]))


def likely_cause(log: Path) -> str:
    """The likeliest reason in ``log`` why the app did not start, with what to do."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    causes = (
        (("OutOfMemoryError", "CUDA out of memory"),
         "The GPU ran out of memory. Stop other programs using it (nvidia-smi lists them) and start again."),
        (("Address already in use", "error while attempting to bind"),
         "The port was taken while the app started. Use another: bash start_app.sh --port N"),
        (("ModuleNotFoundError", "ImportError"),
         "A package is missing. Delete .venv (or fix the conda environment) and run this script again."),
        (("No space left on device",),
         "The disk is full. Free some space (old videos are in outputs/) and start again."),
    )
    for needles, cause in causes:
        if any(needle in text for needle in needles):
            return t(cause)
    first_error = next((line for line in text.splitlines() if "[ERROR]" in line), None)
    return first_error if first_error is not None else t("See the whole log: %s", log)


def diagnose(log: Path, reason: str | None) -> None:
    """Why a start failed: the reason, the end of the log and the likely cause."""
    if reason:
        emit("error", reason)
    emit("err", f"--- last lines of {log} ---")
    try:
        for line in log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]:
            emit("err", line)
    except OSError:
        pass
    emit("err", "---")
    emit("error", t("Likely cause: %s", likely_cause(log)))


def wait_ready(pid: int, port: int, host: str, log: Path, timeout: float) -> bool:
    """Poll the app each second until its model is ready (or failed to load); False when the start failed."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        if not is_running(pid):
            diagnose(log, t("The app stopped while starting."))
            return False
        model = model_status(port, host)
        if model and model["state"] == "ready":
            demo = t(", demo model") if model["demo"] else ""
            emit("success", t("%s is ready in %s s: %s", APP_NAME, int(time.monotonic() - started), model["device"])
                 + demo)
            return True
        if model and model["state"] == "error":  # no videos without it: a failed start, not a half one
            diagnose(log, t("The model could not be loaded: %s", model["message"]))
            emit("error", t("Stopping the app: it cannot make videos without its model. Fix the cause above, "
                            "then start again."))
            return False
        if model and model["message"] != last:
            emit("info", t("Model %s: %s", model["state"], model["message"]))
            last = model["message"]
        time.sleep(1)
    diagnose(log, t("The app was not ready after %s s.", f"{timeout:g}"))
    return False


#: The addresses that mean "every address of this machine" (IPv4, IPv6, the app's default when empty).
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
#: At most this many network addresses are printed (a machine with many interfaces, Docker bridges...).
MAX_NETWORK_ADDRESSES = 4
#: Seconds the host name's own addresses may take to look up (a name missing from /etc/hosts can wait on
#: a DNS server that does not answer); past this, they are left out.
LOOKUP_TIMEOUT = 1.0
#: Private addresses a UDP socket is connected to (nothing is sent) to learn which of this machine's
#: addresses its route leaves from: the LAN address, found without internet.
ROUTE_PROBES = ((socket.AF_INET, "10.254.254.254"), (socket.AF_INET6, "fd00::1"))


def url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if _is_ipv6(host) else f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: localhost, 127.x.x.x, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page_addresses(host: str, port: int) -> tuple[list[str], list[str]]:
    """(local, network): the URLs a browser opens the page at, for an app listening on ``host``: on this
    machine, and from other machines (those of this machine's addresses that the app listens on). A
    wildcard host is never printed as such: nobody can open http://0.0.0.0:7860."""
    if host in WILDCARD_HOSTS:
        return [this_machines_url(host, port)], [url(address, port) for address in network_addresses(host == "::")]
    if is_loopback(host):
        return [url(host, port)], []
    return [], [url(host, port)]


def this_machines_url(host: str, port: int) -> str:
    """The URL this machine opens an app listening on ``host`` at (without looking anything up)."""
    if host in WILDCARD_HOSTS:
        # "::" listens on IPv4 too (Linux's dual stack) unless the system says otherwise: localhost
        # reaches it either way.
        return url("localhost" if host == "::" else "127.0.0.1", port)
    return url(host, port)


def network_addresses(ipv6: bool = False) -> list[str]:
    """This machine's addresses that other machines may reach it at (IPv4 first; IPv6 only when
    ``ipv6``), found without the internet: the address the route to a private network leaves from, then
    the host name's own addresses. Loopback, link-local and the like are left out; none found: empty."""
    found = []
    for family, probe in ROUTE_PROBES:
        if family == socket.AF_INET6 and not ipv6:
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.connect((probe, 9))  # UDP: connecting sends nothing, it only picks the route
                found.append(udp.getsockname()[0])
        except OSError:  # no route to it, no IPv6 here
            pass
    found += _host_name_addresses()
    usable = []
    for address in found:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # fe80::1%eth0 on an old Python, or junk
            continue
        if ip.version == 6 and not ipv6:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            continue
        if str(ip) not in usable:
            usable.append(str(ip))
    usable.sort(key=lambda address: ":" in address)  # IPv4 first, each in the order found
    return usable[:MAX_NETWORK_ADDRESSES]


def _host_name_addresses(timeout: float = LOOKUP_TIMEOUT) -> list[str]:
    """The addresses this machine's host name resolves to (/etc/hosts, else the resolver), given at most
    ``timeout`` seconds; none when it takes longer or fails."""
    found: list[str] = []

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        found.extend(str(info[4][0]) for info in infos)

    thread = threading.Thread(target=look_up, daemon=True)  # a hung lookup never delays the exit
    thread.start()
    thread.join(timeout)
    return [] if thread.is_alive() else list(found)


def say_addresses(host: str, port: int) -> None:
    """Where to open the page: on this machine, and from the others (each address the app listens on)."""
    local, network = page_addresses(host, port)
    for address in local:
        emit("out", f"📍 {t('Local address: %s', address)}")
    for address in network:
        emit("out", f"📍 {t('Network address: %s', address)}")
    if host in WILDCARD_HOSTS and not network:
        none_found = t("Network address: this machine's address, port %s (none found here; 'hostname -I' "
                       "lists them)", port)
        emit("out", f"📍 {none_found}")


def say_login(config, no_login: bool) -> None:
    """How to log in, when the app asks for a login (it does whenever it listens beyond this machine)."""
    from .auth import credentials_path, stored_password

    server = config.server
    if not server.login_required:
        if no_login:
            emit("warn", t("No login on %s: anyone who can reach port %s can use the GPU and see every video.",
                           server.host, server.port))
        return
    credentials = credentials_path(config)
    if server.password:
        emit("out", f"🔑 {t('Login: user %s, with the password set in server.password', server.username)}")
    elif password := stored_password(credentials):
        emit("out", f"🔑 {t('Login: user %s, password %s', server.username, password)}")
        emit("out", t('   (kept in %s, readable by you only; the HTTP API takes it as '
                      '"Authorization: Bearer <password>")', credentials))
    else:
        emit("warn", t("The app asks for a login, but %s is missing; see the log.", credentials))


def say_several(instances: list[Instance], command: str) -> None:
    """List the running instances and say how to choose one."""
    emit("error", t("Several %s instances are running:", APP_NAME))
    for instance in instances:
        emit("err", t("  port %s: PID %s, %s", instance.port, instance.pid,
                      this_machines_url(instance.host, instance.port)))
    emit("err", t("Say which one with --port N, e.g.: bash start_app.sh %s --port %s", command, instances[0].port))


# -- subcommands ---------------------------------------------------------------------------

def cmd_preflight(args: argparse.Namespace) -> int:
    """Everything the script checks before it starts the app.

    Values: PORT, HOST, OUTPUT_DIR, LOG_DIR; RUNNING=PID when our app already serves the
    port (then it says so and prints that app's addresses and login); else DEMO=0/1 once the
    checks, the port and the model folder passed. Exit status 1 when the app cannot start,
    with the reason said; ``BAD_VALUE`` for a host it could not listen on.
    """
    if args.host is not None:
        check_host(args.host, "--host")
    config = load(args)
    port, host = config.server.port, config.server.host
    if args.host is None:
        check_host(host, "server.host")
    for key, content in (("PORT", port), ("HOST", host), ("OUTPUT_DIR", config.paths.output_dir),
                         ("LOG_DIR", config.paths.log_dir)):
        value(key, content)
    running = running_instances(args.run_dir, port)
    if running:
        say_running(running[0], args, config)
        value("RUNNING", running[0].pid)
        return 0
    libraries = installed_libraries()
    report_checks(libraries, config.paths.output_dir)
    if not check_port(port):
        return 1
    demo = wants_demo(args, config, bool(libraries["cuda"]))
    if not demo:
        check_model_folder(config)
    value("DEMO", int(demo))
    return 0


def say_running(instance: Instance, args: argparse.Namespace, asked) -> None:
    """Our app already serves the port: its addresses and login (not those the new options would give),
    and how to apply the new options."""
    emit("success", t("%s is already running (PID %s).", APP_NAME, instance.pid))
    config = instance_config(instance, asked)
    say_addresses(config.server.host, instance.port)
    say_login(config, "--no-login" in instance.app_args)
    flags = " ".join(not_applied(args, config))
    if flags:
        emit("info", t("It keeps the options it was started with. To use %s, restart it: "
                       "bash start_app.sh restart --port %s %s", flags, instance.port, flags))


def not_applied(args: argparse.Namespace, running) -> list[str]:
    """The options given now that the running app's config does not have, as they would be typed."""
    flags = []
    for flag, given, has in (("--host", args.host, running.server.host), ("--model", args.model, running.model.source)):
        if given is not None and given != has:
            flags.append(f"{flag} {shlex.quote(given)}")
    if args.demo and not running.model.demo:
        flags.append("--demo")
    if args.no_login and running.server.login != "off":
        flags.append("--no-login")
    return flags


def instance_config(instance: Instance, asked):
    """The config a running instance was started with: its own arguments read as main.py reads them
    (the same config file and environment); ``asked`` with its host and port when they cannot be read."""
    from dataclasses import replace

    from .cli import parse_config
    from .errors import ConfigError

    try:
        return parse_config(instance.app_args)[1]
    except (ConfigError, SystemExit):
        return replace(asked, server=replace(asked.server, host=instance.host, port=instance.port))


# -- the values given ----------------------------------------------------------------------

def check_host(host: str, option: str) -> None:
    """Refuse (``BadValue``) a host the app could not listen on: neither an IP address nor a name this
    machine resolves, or not an address of this machine."""
    problem = _host_problem(host)
    if problem == "unknown":
        raise BadValue(t("%s %s is neither an IP address nor a name this machine resolves. Use 0.0.0.0 (the "
                         "whole network), 127.0.0.1 (this machine only) or one of this machine's addresses "
                         "(hostname -I lists them).", option, shown(host)))
    if problem:
        raise BadValue(t("%s %s is not an address of this machine (%s). Use 0.0.0.0 (the whole network), "
                         "127.0.0.1 (this machine only) or one of this machine's addresses (hostname -I lists "
                         "them).", option, shown(host), problem))


def _host_problem(host: str) -> str | None:
    """None when the app can listen on ``host``; "unknown" when it names nothing; else why not."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # Dotted numbers that are no IP address (999.1.1.1, 1.2.3) are not looked up as a name.
        if not host.strip() or re.fullmatch(r"[0-9.]+", host) or any(c.isspace() for c in host):
            return "unknown"
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0]
    except (OSError, ValueError):  # UnicodeError, a ValueError: a name IDNA cannot encode
        return "unknown"
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)  # port 0: only whether this machine has the address
        except OSError as error:
            return error.strerror or str(error)
    return None


def check_model_folder(config) -> None:
    """Refuse a model source written as a folder (/, ./, ../, ~) that does not exist, before the app starts."""
    source = config.model.source
    looks_like_a_folder = source.startswith(("/", "./", "../", "~")) or source in (".", "..")
    if looks_like_a_folder and not Path(config.model_path).is_dir():
        raise Refused(t("The model folder %s does not exist. Give --model (or model.source) a folder that holds "
                        "the weights (see models/README.md), or a hub id such as ali-vilab/i2vgen-xl.",
                        shown(source)))


def cmd_usage(args: argparse.Namespace) -> int:
    """The help of start_app.sh, in the system's language (printed as it is, not as messages)."""
    text = USAGE_ZH if chinese() else USAGE
    print(text.format(app=APP_NAME, stop=args.stop_timeout, ready=args.ready_timeout, venv=args.venv))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """The folders the app writes to, and a new log file for this start (LOG_FILE; logs/latest.log
    points at it; the newest KEEP_LOGS are kept). ``--scratch`` is emptied: the page's upload cache."""
    config = load(args)
    paths = config.paths
    try:
        for folder in (paths.output_dir, paths.log_dir, args.run_dir, args.scratch):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(args.scratch)
        args.scratch.mkdir()
        log_file = new_log_file(paths.log_dir)
    except OSError:
        raise Refused(t("Cannot create the app's folders under %s: check the permissions and free space.",
                        PROJECT_DIR)) from None
    emit("success", t("Folders ready: %s, %s", _shown(paths.output_dir), _shown(paths.log_dir)))
    emit("success", t("Log file: %s", log_file))
    value("LOG_FILE", log_file)
    return 0


def new_log_file(log_dir: Path, now: float | None = None) -> Path:
    """``app_YYYYmmdd_HHMMSS.log``, with ``latest.log`` pointing at it; older ones beyond KEEP_LOGS go."""
    log_file = log_dir / time.strftime("app_%Y%m%d_%H%M%S.log", time.localtime(now))
    log_file.touch()
    latest = log_dir / "latest.log"
    latest.unlink(missing_ok=True)
    latest.symlink_to(log_file.name)
    logs = sorted(log_dir.glob("app_*.log"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in logs[KEEP_LOGS:]:
        old.unlink(missing_ok=True)
    return log_file


def _shown(folder: Path) -> str:
    """A folder as the launcher says it: relative to the project when inside it."""
    return str(folder.relative_to(PROJECT_DIR)) if folder.is_relative_to(PROJECT_DIR) else str(folder)


def cmd_port(args: argparse.Namespace) -> int:
    """Exit status 0 when the port is free; else who holds it, status 1."""
    return 0 if check_port(args.port or load(args).server.port) else 1


def cmd_banner(args: argparse.Namespace) -> int:
    """The DEMO MODE banner, printed when the script passes --demo to the app (its words are in i18n.py,
    beside the page's)."""
    from . import i18n
    from .config import ModelSettings

    rule = "=" * 66
    first, *rest = i18n.t("demo_banner_console", "zh-CN" if chinese() else "en").splitlines()
    lines = [("say", ""), ("highlight", rule), ("highlight", " " + first), *[("say", " " + line) for line in rest],
             ("say", f"   bash start_app.sh --model {ModelSettings.source}"), ("highlight", rule), ("say", "")]
    for level, text in lines:
        emit(level, text)
    return 0


def cmd_addresses(args: argparse.Namespace) -> int:
    """Where to open the page; with --login also how to log in."""
    config = load(args)
    say_addresses(config.server.host, config.server.port)
    if args.login:
        say_login(config, args.no_login)
    return 0


def cmd_ticks(args: argparse.Namespace) -> int:
    """TICKS: the start time of PID, which the PID file records beside it."""
    value("TICKS", start_ticks(args.pid))
    return 0


def cmd_wait_ready(args: argparse.Namespace) -> int:
    """Exit status 0 once the app's page answers with its model ready (or failed); 1 when the start failed."""
    port = args.port or load(args).server.port
    return 0 if wait_ready(args.pid, port, args.host or "127.0.0.1", Path(args.log), args.timeout) else 1


def cmd_diagnose(args: argparse.Namespace) -> int:
    """The end of a log and the likely cause of a failed start."""
    diagnose(Path(args.log), args.reason)
    return 0


def not_running(port: int | None) -> str:
    return t("%s is not running on port %s.", APP_NAME, port) if port else t("%s is not running.", APP_NAME)


def cmd_status(args: argparse.Namespace) -> int:
    """The running instance's PID, address, uptime, model state and log; exit status 3 when none runs."""
    instance = chosen_instance(args.run_dir, args.port)
    if instance is None:
        emit("out", not_running(args.port))
        return NOT_RUNNING
    emit("out", t("%s is running.", APP_NAME))
    emit("out", t("  PID:     %s\n  URL:     %s\n  Uptime:  %s",
                  instance.pid, this_machines_url(instance.host, instance.port), uptime(instance.pid)))
    model = model_status(instance.port, instance.host)
    if model:
        emit("out", t("  Model:   %s (%s)%s\n  Device:  %s", model["state"], model["message"],
                      t(", demo model") if model["demo"] else "", model["device"]))
    else:
        emit("out", t("  Model:   not answering yet"))
    workers = worker_list(instance.port, instance.host, api_token(args)) if model else None
    if workers:
        say_workers(workers)
    emit("out", t("  Log:     %s", instance.log_file or "unknown"))
    return 0


def cmd_stop_target(args: argparse.Namespace) -> int:
    """PID, PORT, HOST and PID_FILE of the instance to stop; none (and says so) when none runs."""
    instance = chosen_instance(args.run_dir, args.port)
    if instance is None:
        emit("success", not_running(args.port))
        return 0
    for key, content in (("PID", instance.pid), ("PORT", instance.port), ("HOST", instance.host),
                         ("PID_FILE", instance.pid_file)):
        value(key, content)
    return 0


def cmd_log_file(args: argparse.Namespace) -> int:
    """LOG_FILE: the running instance's log (with --port: the one on that port, or none), else the newest
    (logs/latest.log)."""
    instance = chosen_instance(args.run_dir, args.port)
    if instance and Path(instance.log_file).is_file():
        value("LOG_FILE", instance.log_file)
        return 0
    if args.port and instance is None:
        raise Refused(t("%s is not running on port %s. Without --port, logs shows the newest log: "
                        "bash start_app.sh logs", APP_NAME, args.port))
    log_dir = load(args).paths.log_dir
    if not (log_dir / "latest.log").exists():
        raise Refused(t("No log yet in %s. Start the app first: bash start_app.sh", log_dir))
    value("LOG_FILE", log_dir / "latest.log")
    return 0


#: The port ``ray start --head`` listens on unless told another.
RAY_HEAD_PORT = 6379


def cmd_worker(args: argparse.Namespace) -> int:
    """RAY_ADDRESS and RAY_RESOURCES for ``ray start`` on a worker machine: the head's host:port, and
    the units of jobs.ray_resource this machine offers (one per GPU, one on a machine without any)."""
    address = head_address(args.head)
    config = load(args)
    resource = config.jobs.ray_resource
    gpus = visible_gpus()
    if resource:
        units = max(1, gpus)
        what = t("%s unit(s) of %s (jobs.ray_resource), one worker each", units, resource)
        value("RAY_RESOURCES", json.dumps({resource: units}))
    else:
        what = t("every GPU of this machine that Ray sees (%s) runs one worker", gpus)
        value("RAY_RESOURCES", "")
    emit("info", t("Joining the Ray cluster at %s: %s", address, what))
    if not resource and gpus == 0:
        emit("warn", t("Ray sees no GPU on this machine, and jobs.ray_resource is empty: it joins, but runs no job."))
    emit("info", t("The web server starts one worker per GPU when it starts: restart it after adding a machine "
                   "(a machine that left and joins again is used again by itself)."))
    emit("highlight", t("Ctrl+C (or a TERM signal) stops this worker machine; a job running here goes back to the queue."))
    value("RAY_ADDRESS", address)
    return 0


def cmd_head(args: argparse.Namespace) -> int:
    """Check --head (before anything is installed): RAY_ADDRESS, or exit 2 saying what is wrong."""
    value("RAY_ADDRESS", head_address(args.head))
    return 0


def head_address(head: str | None) -> str:
    """``--head`` as host:port (port RAY_HEAD_PORT when not given): ``host``, ``host:port``, an IPv6
    address bare (``::1``) or in brackets (``[::1]``, ``[::1]:6379``), which stays in brackets, as Ray
    reads it. A missing or bad one is refused."""
    if not head:
        raise BadValue(t("worker needs the head's address: bash start_app.sh worker --head HOST[:PORT] (the machine "
                         "where 'ray start --head' runs; port %s unless it said another).", RAY_HEAD_PORT))
    host, port = _split_head(head)
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or any(c.isspace() for c in host):
        raise BadValue(t("--head must be HOST or HOST:PORT (an IPv6 address in brackets: [::1]:6379) with a port "
                         "from 1 to 65535, not %s.", shown(head)))
    return f"{host}:{int(port)}"


def _split_head(head: str) -> tuple[str, str]:
    """(host, port) of ``--head``, the port RAY_HEAD_PORT when not given; ("", "") when it cannot be
    read. An IPv6 host comes back in brackets."""
    default = str(RAY_HEAD_PORT)
    if head.startswith("["):
        inside, bracket, rest = head[1:].partition("]")
        if not bracket or not _is_ipv6(inside) or (rest and not rest.startswith(":")):
            return "", ""
        return f"[{inside}]", rest[1:] if rest else default
    if head.count(":") > 1:  # colons in the host: only a bare IPv6 address, which takes the default port
        return (f"[{head}]", default) if _is_ipv6(head) else ("", "")
    host, colon, port = head.partition(":")
    return host, port if colon else default


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def visible_gpus() -> int:
    """NVIDIA GPUs this machine's processes see: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([device for device in visible.split(",") if device.strip() and device.strip() != "-1"])
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.splitlines())


def build_parser() -> argparse.ArgumentParser:
    """The command line: global options, then a subcommand with the options the script forwards."""
    parser = argparse.ArgumentParser(prog="python -m image_to_video.launcher",
                                     description="The Python half of start_app.sh.")
    parser.add_argument("--run-dir", type=Path, default=PROJECT_DIR / "run", help="where the PID files are")
    parser.add_argument("--for", dest="script_command", default="status",
                        help="the start_app.sh command being run, for the hints")
    forwarded = argparse.ArgumentParser(add_help=False)
    forwarded.add_argument("--port", type=int)
    forwarded.add_argument("--host")
    forwarded.add_argument("--model")
    forwarded.add_argument("--no-login", action="store_true")
    forwarded.add_argument("--demo", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[forwarded], help=handler.__doc__.splitlines()[0])
        sub.set_defaults(handler=handler)
        return sub

    for name, handler in (("preflight", cmd_preflight), ("port", cmd_port), ("banner", cmd_banner),
                          ("status", cmd_status), ("stop-target", cmd_stop_target), ("log-file", cmd_log_file)):
        add(name, handler)
    add("addresses", cmd_addresses).add_argument("--login", action="store_true")
    add("ticks", cmd_ticks).add_argument("pid", type=int)
    wait = add("wait-ready", cmd_wait_ready)
    wait.add_argument("--pid", type=int, required=True)
    wait.add_argument("--log", required=True)
    wait.add_argument("--timeout", type=float, default=1800)
    usage = add("usage", cmd_usage)
    usage.add_argument("--stop-timeout", default="20")
    usage.add_argument("--ready-timeout", default="1800")
    usage.add_argument("--venv", default=".venv")
    add("prepare", cmd_prepare).add_argument("--scratch", type=Path, required=True)
    add("worker", cmd_worker).add_argument("--head")
    add("head", cmd_head).add_argument("--head")
    diagnosis = add("diagnose", cmd_diagnose)
    diagnosis.add_argument("--log", required=True)
    diagnosis.add_argument("--reason")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; expected failures are said in the user's language, never as a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BadValue as refusal:
        emit("error", refusal)
        return BAD_VALUE
    except Refused as refusal:
        emit("error", refusal)
        return 1
    except Several as several:
        say_several(several.instances, args.script_command)
        return SEVERAL
    except ImportError as error:  # a broken install: yaml, torch or the app's own modules
        emit("error", t("The app's packages do not import in the %s:", environment_name()))
        emit("err", f"{type(error).__name__}: {error}")
        emit("error", t("Reinstall them: '%s -m pip install -r requirements.txt' (or delete .venv and run this again).",
                        sys.executable))
        return 1


if __name__ == "__main__":
    sys.exit(main())
