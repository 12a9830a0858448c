#!/usr/bin/env bash
#
# start_app.sh: set up, start, watch, stop and restart the Image-to-Video app.
#
# The first run prepares the Python environment (the conda environment named in
# config/model_config.yaml, else a project-local .venv with requirements.txt),
# then every run checks the machine, starts main.py in the background, waits
# until the page really answers and prints where to open it. Running it again
# after a crash, a `pkill -9`, a reboot or an out-of-memory error just works.
#
# Sourcing this file defines the functions without running anything (for tests).

readonly APP_NAME="Image-to-Video"
APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly APP_DIR
readonly CONFIG_FILE="${APP_DIR}/config/model_config.yaml"
readonly REQUIREMENTS="${APP_DIR}/requirements.txt"
readonly VENV_DIR="${I2V_VENV_DIR:-${APP_DIR}/.venv}"
readonly RUN_DIR="${APP_DIR}/run"
readonly GRADIO_TMP="${APP_DIR}/.gradio/tmp"
readonly KEEP_LOGS=20                      # app_*.log files kept in logs/
readonly READY_TIMEOUT="${I2V_READY_TIMEOUT:-1800}"  # seconds; a first model download is ~5 GB
readonly STOP_TIMEOUT=20                   # seconds between TERM and KILL
readonly MIN_PYTHON_MINOR=10               # Python 3.10+

# Options (set by parse_args).
COMMAND="start"
OPT_PORT=""
OPT_HOST=""
OPT_MODEL=""
OPT_DEMO=0
OPT_FOREGROUND=0
OPT_QUIET=0
OPT_DEBUG=0
OPT_NO_LOGIN=0

# Filled in by ensure_env / preflight.
PYTHON=""
ENV_DESCRIPTION=""
declare -A PRE=()

usage() {
  if _is_chinese; then usage_zh; return; fi
  cat <<EOF
Usage: bash start_app.sh [COMMAND] [OPTIONS]

Set up, start and manage the ${APP_NAME} web app.

Commands:
  start       prepare the environment if needed, start the app, wait until it is ready (default)
  stop        stop the app (TERM to its process group, then KILL after ${STOP_TIMEOUT} s)
  restart     stop, then start
  status      say whether the app runs, with its PID, address, uptime and model state
  logs        follow the newest log file

Options:
  --port N        port to serve on (default: server.port in config/model_config.yaml, 7860)
  --host ADDR     address to listen on (default: server.host, 0.0.0.0 = the whole network)
  --demo          serve the built-in demo model (random weights; runs anywhere; videos are noise)
  --model SOURCE  model folder or hub repo id (default: model.source in the config)
  --no-login      serve a network address without a login (not recommended; prints a warning)
  --foreground    run in this terminal instead of the background (Ctrl+C stops it)
  --quiet         print only errors and the final address lines
  --debug         trace this script and log the app at DEBUG level
  -h, --help      show this help

Without a CUDA GPU, and unless a model is asked for (--model, I2V_MODEL_SOURCE or a
model.source other than the default), the demo model is served.

Environment:
  CONDA_ENV           conda environment to use (default: launcher.conda_env, torch28);
                      'none' skips conda and uses ${VENV_DIR/#${APP_DIR}\//}
  I2V_READY_TIMEOUT   seconds to wait for the app to be ready (default ${READY_TIMEOUT})
  NO_COLOR            set to turn colours off
EOF
}

usage_zh() {
  cat <<EOF
用法: bash start_app.sh [命令] [选项]

安装、启动和管理 ${APP_NAME} 网页应用。

命令:
  start       按需准备运行环境，启动应用并等待就绪（默认）
  stop        停止应用（先向进程组发送 TERM，${STOP_TIMEOUT} 秒后 KILL）
  restart     先停止，再启动
  status      显示应用是否在运行，以及 PID、地址、运行时长和模型状态
  logs        实时查看最新的日志文件

选项:
  --port N        服务端口（默认：config/model_config.yaml 中的 server.port，7860）
  --host ADDR     监听地址（默认：server.host，0.0.0.0 表示整个网络可访问）
  --demo          运行内置演示模型（随机权重，任何机器都能运行，生成的视频是噪声）
  --model SOURCE  模型文件夹或 Hub 模型名（默认：配置中的 model.source）
  --no-login      网络地址也不要求登录（不推荐，会打印警告）
  --foreground    在当前终端前台运行，而不是后台（Ctrl+C 停止）
  --quiet         只打印错误和最后的地址信息
  --debug         跟踪本脚本的执行，并以 DEBUG 级别记录应用日志
  -h, --help      显示本帮助

没有 CUDA 显卡、且没有指定模型（--model、I2V_MODEL_SOURCE 或非默认的 model.source）时，
运行演示模型。

环境变量:
  CONDA_ENV           使用的 conda 环境（默认：launcher.conda_env，torch28）；
                      设为 none 则不用 conda，改用 ${VENV_DIR/#${APP_DIR}\//}
  I2V_READY_TIMEOUT   等待应用就绪的秒数（默认 ${READY_TIMEOUT}）
  NO_COLOR            设置后关闭彩色输出
EOF
}

# -- output --------------------------------------------------------------------

# Messages follow the system locale: Simplified Chinese when LC_ALL, LC_MESSAGES or
# LANG starts with zh, in the words our users know from the app we replace.
declare -A ZH=(
  ["%s launcher"]="%s 应用启动器"
  ["Unknown argument: %s"]="未知参数: %s"
  ["  PID:     %s\n  URL:     http://localhost:%s\n  Uptime:  %s\n"]="  进程号:   %s\n  地址:     http://localhost:%s\n  运行时长: %s\n"
  ["  Model:   %s (%s)%s\n  Device:  %s\n"]="  模型:     %s（%s）%s\n  设备:     %s\n"
  ["  Model:   not answering yet\n"]="  模型:     尚未响应\n"
  ["  Log:     %s\n"]="  日志:     %s\n"
  ["Python 3.%s or newer is needed. Install it (e.g. 'apt install python3 python3-venv') and run this again."]="需要 Python 3.%s 或更新版本。请先安装（例如 'apt install python3 python3-venv'）再运行本脚本。"
  ["Could not create %s. On Debian/Ubuntu install the venv module: apt install python3-venv"]="无法创建 %s。Debian/Ubuntu 上请安装 venv 模块：apt install python3-venv"
  ["Installing the packages failed (see the pip output above). Check the network and disk space, then run this again."]="依赖安装失败（见上方 pip 输出）。请检查网络和磁盘空间后重新运行。"
  ["The %s has %s; %s needs Python 3.%s+."]="%s 中是 %s；%s 需要 Python 3.%s 以上。"
  ["Cannot create the app's folders under %s: check the permissions and free space."]="无法在 %s 下创建应用目录：请检查权限和剩余空间。"
  ["No log yet in %s. Start the app first: bash start_app.sh"]="%s 中还没有日志。请先启动应用：bash start_app.sh"
  ["Conda has no environment '%s'; using %s instead."]="Conda 中没有名为 '%s' 的环境，改用 %s。"
  ["The app's packages do not import in the %s:"]="应用的依赖在 %s 中无法导入："
  ["Reinstall them: '%s -m pip install -r requirements.txt' (or delete .venv and run this again)."]="请重新安装：'%s -m pip install -r requirements.txt'（或删除 .venv 后重新运行本脚本）。"
  ["nvidia-smi sees a GPU but torch does not (torch %s): install the CUDA build of torch, e.g. 'pip install torch==%s' from a machine that reaches PyPI, and check the driver with nvidia-smi."]="nvidia-smi 能看到显卡，但 torch 看不到（torch %s）：请安装 CUDA 版 torch，例如在能访问 PyPI 的机器上 'pip install torch==%s'，并用 nvidia-smi 检查驱动。"
  ["imageio-ffmpeg has no ffmpeg binary for this machine. Reinstall it: '%s -m pip install --force-reinstall imageio-ffmpeg'."]="imageio-ffmpeg 没有适合本机的 ffmpeg 程序。请重新安装：'%s -m pip install --force-reinstall imageio-ffmpeg'。"
  ["Only %s GB free for %s: the model needs ~5 GB and each video a few MB."]="可用空间只剩 %s GB（%s）：模型需要约 5 GB，每个视频几 MB。"
  ["The GPU ran out of memory. Stop other programs using it (nvidia-smi lists them) and start again.\\n"]="显存不足。请停止占用显卡的其他程序（nvidia-smi 可列出）后重新启动。\\n"
  ["The port was taken while the app started. Use another: bash start_app.sh --port N\\n"]="应用启动时端口被占用。请换一个：bash start_app.sh --port N\\n"
  ["A package is missing. Delete .venv (or fix the conda environment) and run this script again.\\n"]="缺少依赖包。请删除 .venv（或修复 conda 环境）后重新运行本脚本。\\n"
  ["The disk is full. Free some space (old videos are in outputs/) and start again.\\n"]="磁盘已满。请清理空间（旧视频在 outputs/ 中）后重新启动。\\n"
  ["See the whole log: %s\\n"]="完整日志见：%s\\n"
  ["No login on %s: anyone who can reach port %s can use the GPU and see every video."]="%s 上没有登录保护：任何能访问端口 %s 的人都可以使用显卡并看到所有视频。"
  ["Login: user %s, with the password set in server.password"]="登录: 用户名 %s，密码为 server.password 中设置的密码"
  ["   (kept in %s, readable by you only; the HTTP API takes it as \"Authorization: Bearer <password>\")\\n"]="   （保存在 %s，仅您可读；HTTP API 以 \"Authorization: Bearer <密码>\" 使用它）\\n"
  ["The app asks for a login, but %s is missing; see the log."]="应用要求登录，但 %s 不存在；请查看日志。"
  ["PID %s did not stop within %s s; killing it."]="PID %s 在 %s 秒内没有停止，强制结束。"
  ["Run \"bash start_app.sh --help\" for the options.\n"]="运行 \"bash start_app.sh --help\" 查看可用选项。\n"
  ["Conda environment activated: %s"]="Conda 环境已激活: %s"
  ["Creating the virtual environment %s (first run only)..."]="正在创建虚拟环境 %s（仅首次运行）..."
  ["Installing packages from requirements.txt (%s first; the first time takes a few minutes)..."]="正在安装 requirements.txt 中的依赖（先装 %s；首次需要几分钟）..."
  ["Packages installed into %s"]="依赖已安装到 %s"
  ["Virtual environment ready: %s"]="虚拟环境已就绪: %s"
  ["No NVIDIA GPU found (nvidia-smi: %s)."]="未检测到 NVIDIA 显卡（nvidia-smi: %s）。"
  ["no device"]="无设备"
  ["not installed"]="未安装"
  ["Port %s is free"]="端口 %s 空闲"
  ["Port %s is in use by a process this user cannot see."]="端口 %s 被当前用户看不到的进程占用。"
  ["Port %s is in use by another program:"]="端口 %s 被其他程序占用："
  ["Start on another port: bash start_app.sh --port %s   (or stop that program first)\n"]="换一个端口启动：bash start_app.sh --port %s   （或先停止该程序）\n"
  ["%s is already running (PID %s)."]="%s 已在运行（PID %s）。"
  ["Folders ready: %s, %s"]="目录创建完成: %s, %s"
  ["Log file: %s"]="日志文件: %s"
  ["Starting in the foreground (Ctrl+C stops it)..."]="前台启动中（Ctrl+C 停止）..."
  ["Starting the app..."]="应用启动中..."
  ["%s is ready in %s s: %s"]="%s 已就绪，用时 %s 秒: %s"
  [", demo model"]="，演示模型"
  ["The page is up, but the model could not be loaded: %s"]="页面已启动，但模型加载失败: %s"
  ["Model %s: %s"]="模型 %s: %s"
  ["The app stopped while starting."]="应用在启动过程中退出了。"
  ["The app was not ready after %s s."]="应用在 %s 秒内未就绪。"
  ["Likely cause: %s"]="可能原因: %s"
  ["Access address: http://%s:%s"]="访问地址: http://%s:%s"
  ["Local address: http://localhost:%s"]="本地地址: http://localhost:%s"
  ["Login: user %s, password %s"]="登录: 用户名 %s，密码 %s"
  ["%s is not running on port %s."]="%s 未在端口 %s 上运行。"
  ["Stopping %s (PID %s)..."]="正在停止 %s（PID %s）..."
  ["Stopped."]="已停止。"
  ["%s is running."]="%s 正在运行。"
  ["DEMO MODE: no CUDA GPU here, so the built-in demo model is served."]="演示模式：本机没有 CUDA 显卡，因此运行内置的演示模型。"
  ["Its videos are random noise; it shows the app works on this machine."]="它生成的视频是随机噪声，用来确认应用在本机可以正常运行。"
  ["For real videos run 'bash start_app.sh' on a server with an NVIDIA GPU"]="要生成真实视频，请在有 NVIDIA 显卡（12 GB 以上）的服务器上"
  ["(12 GB+). To force the real model here (hours per video on a CPU):"]="运行 'bash start_app.sh'。如需在本机强制使用真实模型（CPU 上每个视频需数小时）："
)

_is_chinese() {
  [[ "${LC_ALL:-${LC_MESSAGES:-${LANG:-}}}" == zh* ]]
}

# printf FORMAT ARGS, with FORMAT translated when the locale is Chinese.
_t() {
  local format="$1"
  shift
  if _is_chinese && [[ -n "${ZH[${format}]+set}" ]]; then
    format="${ZH[${format}]}"
  fi
  # shellcheck disable=SC2059  # the format is one of ours, above
  printf -- "${format}" "$@"
}

setup_colours() {
  if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    C_RED=$'\033[31m'; C_GREEN=$'\033[32m'; C_YELLOW=$'\033[33m'; C_BLUE=$'\033[34m'; C_OFF=$'\033[0m'
  else
    C_RED=""; C_GREEN=""; C_YELLOW=""; C_BLUE=""; C_OFF=""
  fi
}

say() { [[ "${OPT_QUIET}" == 1 ]] || printf '%s\n' "$*"; }
info() { say "${C_BLUE}[INFO]${C_OFF} $*"; }
success() { say "${C_GREEN}[SUCCESS]${C_OFF} $*"; }
warn() { printf '%s\n' "${C_YELLOW}[WARNING]${C_OFF} $*" >&2; }
error() { printf '%s\n' "${C_RED}[ERROR]${C_OFF} $*" >&2; }
die() { error "$@"; exit 1; }
debug() { [[ "${OPT_DEBUG}" == 1 ]] && printf '[DEBUG] %s\n' "$*" >&2; return 0; }

# -- arguments -----------------------------------------------------------------

parse_args() {
  while (($#)); do
    case "$1" in
      start|stop|restart|status|logs) COMMAND="$1" ;;
      --port) OPT_PORT="${2:?--port needs a number}"; shift ;;
      --port=*) OPT_PORT="${1#*=}" ;;
      --host) OPT_HOST="${2:?--host needs an address}"; shift ;;
      --host=*) OPT_HOST="${1#*=}" ;;
      --model) OPT_MODEL="${2:?--model needs a folder or repo id}"; shift ;;
      --model=*) OPT_MODEL="${1#*=}" ;;
      --demo) OPT_DEMO=1 ;;
      --no-login) OPT_NO_LOGIN=1 ;;
      --foreground) OPT_FOREGROUND=1 ;;
      --quiet|-q) OPT_QUIET=1 ;;
      --debug) OPT_DEBUG=1 ;;
      -h|--help) usage; exit 0 ;;
      *) error "$(_t 'Unknown argument: %s' "$1")"; _t 'Run "bash start_app.sh --help" for the options.\n' >&2; exit 2 ;;
    esac
    shift
  done
  if [[ -n "${OPT_PORT}" && ! "${OPT_PORT}" =~ ^[0-9]+$ ]]; then
    error "--port must be a number, not '${OPT_PORT}'."; exit 2
  fi
}

# -- environment ---------------------------------------------------------------

# The conda environment's name: CONDA_ENV, else launcher.conda_env in the config, else torch28.
conda_env_name() {
  if [[ -n "${CONDA_ENV:-}" ]]; then
    printf '%s\n' "${CONDA_ENV}"
    return
  fi
  local name
  name="$(awk '/^launcher:/ {inside=1; next} /^[^ #]/ {inside=0}
               inside && $1 == "conda_env:" {print $2; exit}' "${CONFIG_FILE}" 2>/dev/null)"
  printf '%s\n' "${name:-torch28}"
}

find_conda() {
  local candidate
  for candidate in "${CONDA_EXE:-}" "$(command -v conda 2>/dev/null)" \
      "${HOME}/miniconda3/bin/conda" "${HOME}/anaconda3/bin/conda" "/opt/conda/bin/conda"; do
    if [[ -n "${candidate}" && -x "${candidate}" ]]; then
      printf '%s\n' "${candidate}"
      return 0
    fi
  done
  return 1
}

# Activate the named conda environment; returns 1 if conda or the environment is missing.
activate_conda() {
  local name="$1" conda hook
  conda="$(find_conda)" || { debug "conda not found"; return 1; }
  "${conda}" env list 2>/dev/null | awk '!/^#/ {print $1}' | grep -qxF "${name}" \
    || { info "$(_t "Conda has no environment '%s'; using %s instead." "${name}" "${VENV_DIR/#${APP_DIR}\//}")"; return 1; }
  # The shell hook makes `conda activate` work in a non-interactive shell.
  hook="$("${conda}" shell.bash hook 2>/dev/null)" || { warn "'conda shell.bash hook' failed."; return 1; }
  eval "${hook}"
  conda activate "${name}" || { warn "'conda activate ${name}' failed."; return 1; }
  PYTHON="$(command -v python)"
  ENV_DESCRIPTION="conda environment ${name}"
  success "$(_t 'Conda environment activated: %s' "${name}")"
}

# A Python 3.10+ to build the virtual environment with.
find_system_python() {
  local candidate
  for candidate in python3.12 python3.11 python3.10 python3 python; do
    if command -v "${candidate}" >/dev/null 2>&1 && python_is_recent "${candidate}"; then
      command -v "${candidate}"
      return 0
    fi
  done
  return 1
}

python_is_recent() {
  "$1" -c "import sys; sys.exit(0 if sys.version_info >= (3, ${MIN_PYTHON_MINOR}) else 1)" 2>/dev/null
}

requirements_hash() {
  sha256sum "${REQUIREMENTS}" | awk '{print $1}'
}

# True when the venv's packages were installed from a different requirements.txt.
requirements_changed() {
  [[ "$(cat "${VENV_DIR}/.requirements.sha256" 2>/dev/null)" != "$(requirements_hash)" ]]
}

# Create (first run) or update (requirements.txt changed) the project's .venv, then use it.
ensure_venv() {
  local system_python torch_pin
  if [[ ! -x "${VENV_DIR}/bin/python" ]]; then
    system_python="$(find_system_python)" \
      || die "$(_t "Python 3.%s or newer is needed. Install it (e.g. 'apt install python3 python3-venv') and run this again." "${MIN_PYTHON_MINOR}")"
    info "$(_t 'Creating the virtual environment %s (first run only)...' "${VENV_DIR}")"
    "${system_python}" -m venv "${VENV_DIR}" \
      || die "$(_t "Could not create %s. On Debian/Ubuntu install the venv module: apt install python3-venv" "${VENV_DIR}")"
  fi
  if requirements_changed; then
    torch_pin="$(grep -E '^torch==' "${REQUIREMENTS}" | head -n 1)"
    info "$(_t 'Installing packages from requirements.txt (%s first; the first time takes a few minutes)...' "${torch_pin}")"
    if ! { "${VENV_DIR}/bin/python" -m pip install --quiet --upgrade pip >&2 \
           && "${VENV_DIR}/bin/python" -m pip install --quiet "${torch_pin}" >&2 \
           && "${VENV_DIR}/bin/python" -m pip install --quiet -r "${REQUIREMENTS}" >&2; }; then
      die "$(_t "Installing the packages failed (see the pip output above). Check the network and disk space, then run this again.")"
    fi
    requirements_hash > "${VENV_DIR}/.requirements.sha256"
    success "$(_t 'Packages installed into %s' "${VENV_DIR}")"
  fi
  PYTHON="${VENV_DIR}/bin/python"
  ENV_DESCRIPTION="virtual environment ${VENV_DIR}"
  # shellcheck disable=SC1091
  source "${VENV_DIR}/bin/activate"
  success "$(_t 'Virtual environment ready: %s' "${VENV_DIR/#${APP_DIR}\//}")"
}

ensure_env() {
  local name
  name="$(conda_env_name)"
  if [[ "${name}" == "none" ]] || ! activate_conda "${name}"; then
    ensure_venv
  fi
  python_is_recent "${PYTHON}" \
    || die "$(_t "The %s has %s; %s needs Python 3.%s+." "${ENV_DESCRIPTION}" "$("${PYTHON}" --version 2>&1)" "${APP_NAME}" "${MIN_PYTHON_MINOR}")"
}

# -- checks --------------------------------------------------------------------

# Run the app's own preflight and keep its KEY=VALUE answers in PRE.
preflight() {
  local output status key value
  local -a args=()
  [[ -n "${OPT_PORT}" ]] && args+=(--port "${OPT_PORT}")
  [[ -n "${OPT_HOST}" ]] && args+=(--host "${OPT_HOST}")
  [[ -n "${OPT_MODEL}" ]] && args+=(--model "${OPT_MODEL}")
  [[ "${OPT_NO_LOGIN}" == 1 ]] && args+=(--no-login)
  output="$(cd "${APP_DIR}" && "${PYTHON}" -m image_to_video.preflight "${args[@]}" 2>&1)"
  status=$?
  while IFS='=' read -r key value; do
    [[ "${key}" =~ ^[A-Z_]+$ ]] && PRE["${key}"]="${value}"
  done <<< "${output}"
  if ((status != 0)); then
    if [[ -n "${PRE[ERROR]:-}" ]]; then
      die "${PRE[ERROR]}"
    fi
    error "$(_t "The app's packages do not import in the %s:" "${ENV_DESCRIPTION}")"
    printf '%s\n' "${output}" | tail -n 5 >&2
    die "$(_t "Reinstall them: '%s -m pip install -r requirements.txt' (or delete .venv and run this again)." "${PYTHON}")"
  fi
  debug "preflight: ${output//$'\n'/ }"
}

report_checks() {
  success "Python ${PRE[PYTHON]}, torch ${PRE[TORCH]}, gradio ${PRE[GRADIO]}"
  if [[ "${PRE[CUDA]}" == 1 ]]; then
    success "GPU: ${PRE[GPU]} (CUDA ${PRE[TORCH_CUDA]})"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    warn "$(_t "nvidia-smi sees a GPU but torch does not (torch %s): install the CUDA build of torch, e.g. 'pip install torch==%s' from a machine that reaches PyPI, and check the driver with nvidia-smi." "${PRE[TORCH]}" "${PRE[TORCH]%%+*}")"
  else
    local smi
    if command -v nvidia-smi >/dev/null 2>&1; then smi="$(_t 'no device')"; else smi="$(_t 'not installed')"; fi
    info "$(_t 'No NVIDIA GPU found (nvidia-smi: %s).' "${smi}")"
  fi
  if [[ -z "${PRE[FFMPEG]}" ]]; then
    die "$(_t "imageio-ffmpeg has no ffmpeg binary for this machine. Reinstall it: '%s -m pip install --force-reinstall imageio-ffmpeg'." "${PYTHON}")"
  fi
  if [[ "${PRE[DISK_LOW]}" == 1 ]]; then
    warn "$(_t "Only %s GB free for %s: the model needs ~5 GB and each video a few MB." "${PRE[DISK_FREE_GB]}" "${PRE[OUTPUT_DIR]}")"
  fi
}

# The demo model is served when there is no CUDA GPU and nobody asked for a model.
want_demo() {
  [[ "${OPT_DEMO}" == 1 ]] && return 0
  [[ -n "${OPT_MODEL}" || -n "${I2V_MODEL_SOURCE:-}" || "${PRE[MODEL_EXPLICIT]}" == 1 ]] && return 1
  [[ "${PRE[CUDA]}" != 1 ]]
}

print_demo_banner() {
  say ""
  say "${C_YELLOW}==================================================================${C_OFF}"
  say "${C_YELLOW} $(_t 'DEMO MODE: no CUDA GPU here, so the built-in demo model is served.')${C_OFF}"
  say " $(_t 'Its videos are random noise; it shows the app works on this machine.')"
  say " $(_t "For real videos run 'bash start_app.sh' on a server with an NVIDIA GPU")"
  say " $(_t '(12 GB+). To force the real model here (hours per video on a CPU):')"
  say "   bash start_app.sh --model ali-vilab/i2vgen-xl"
  say "${C_YELLOW}==================================================================${C_OFF}"
  say ""
}

# -- processes -----------------------------------------------------------------

pid_file() { printf '%s/app-%s.pid\n' "${RUN_DIR}" "$1"; }

# Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
process_start_ticks() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"  # drop "pid (comm) ", comm may hold spaces
  awk '{print $20}' <<< "${stat}"
}

# Print the PID recorded for PORT if that process is still our app; else clean up and fail.
running_pid() {
  local port="$1" file pid ticks recorded
  file="$(pid_file "${port}")"
  [[ -f "${file}" ]] || return 1
  read -r pid recorded _ < "${file}" || true
  if [[ "${pid}" =~ ^[0-9]+$ ]] && ticks="$(process_start_ticks "${pid}")" \
      && [[ "${ticks}" == "${recorded}" ]] && grep -qa "main.py" "/proc/${pid}/cmdline" 2>/dev/null; then
    printf '%s\n' "${pid}"
    return 0
  fi
  debug "stale PID file ${file} (${pid:-empty}); removing it"
  rm -f "${file}"
  return 1
}

# PIDs listening on PORT (empty if none; "?" if something listens but its PID is hidden).
port_listeners() {
  local port="$1" pids=""
  if command -v lsof >/dev/null 2>&1; then
    pids="$(lsof -nP -t -iTCP:"${port}" -sTCP:LISTEN 2>/dev/null | sort -u | tr '\n' ' ')"
  elif command -v ss >/dev/null 2>&1; then
    pids="$(ss -Hltnp "sport = :${port}" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' ')"
  fi
  if [[ -z "${pids// /}" ]] && ! port_bindable "${port}"; then
    pids="?"
  fi
  printf '%s\n' "${pids% }"
}

# A bind test: true if nothing holds PORT (works without lsof and ss, and for other users' processes).
port_bindable() {
  "${PYTHON:-python3}" - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

check_port() {
  local port="$1" listeners pid
  listeners="$(port_listeners "${port}")"
  if [[ -z "${listeners}" ]]; then
    success "$(_t 'Port %s is free' "${port}")"
    return 0
  fi
  if [[ "${listeners}" == "?" ]]; then
    error "$(_t 'Port %s is in use by a process this user cannot see.' "${port}")"
  else
    error "$(_t 'Port %s is in use by another program:' "${port}")"
    for pid in ${listeners}; do
      printf '  PID %s: %s\n' "${pid}" "$(ps -o args= -p "${pid}" 2>/dev/null | cut -c1-150)" >&2
    done
  fi
  _t 'Start on another port: bash start_app.sh --port %s   (or stop that program first)\n' "$((port + 1))" >&2
  exit 1
}

# Ask the running app for its state: prints "state<TAB>message<TAB>device<TAB>demo".
app_status() {
  local url="http://127.0.0.1:$1/api/status"
  if _is_chinese; then url+="?lang=zh-CN"; fi
  "${PYTHON:-python3}" - "${url}" <<'EOF' 2>/dev/null
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        s = json.load(response)
except Exception:
    sys.exit(1)
m = s["model"]
print("\t".join([m["state"], m["message"].replace("\t", " "), m["device"], str(m["demo"]).lower()]))
EOF
}

uptime_of() {
  local seconds
  seconds="$(ps -o etimes= -p "$1" 2>/dev/null | tr -d ' ')"
  [[ -n "${seconds}" ]] || { echo "unknown"; return; }
  printf '%dh %02dm %02ds\n' "$((seconds / 3600))" "$((seconds % 3600 / 60))" "$((seconds % 60))"
}

# -- logs ----------------------------------------------------------------------

new_log_file() {
  local log_dir="$1" file
  mkdir -p "${log_dir}"
  file="${log_dir}/app_$(date +%Y%m%d_%H%M%S).log"
  : > "${file}"
  ln -sfn "$(basename "${file}")" "${log_dir}/latest.log"
  prune_logs "${log_dir}"
  printf '%s\n' "${file}"
}

# Keep the newest KEEP_LOGS app logs: logs do not grow without bound.
prune_logs() {
  local old
  while IFS= read -r old; do
    rm -f -- "${old}"
  done < <(find "$1" -maxdepth 1 -name 'app_*.log' -type f -printf '%T@ %p\n' | sort -rn \
             | tail -n +"$((KEEP_LOGS + 1))" | cut -d' ' -f2-)
}

likely_cause() {
  local log="$1"
  if grep -q "OutOfMemoryError\|CUDA out of memory" "${log}"; then
    _t "The GPU ran out of memory. Stop other programs using it (nvidia-smi lists them) and start again.\n"
  elif grep -q "Address already in use\|error while attempting to bind" "${log}"; then
    _t "The port was taken while the app started. Use another: bash start_app.sh --port N\n"
  elif grep -q "ModuleNotFoundError\|ImportError" "${log}"; then
    _t "A package is missing. Delete .venv (or fix the conda environment) and run this script again.\n"
  elif grep -q "No space left on device" "${log}"; then
    _t "The disk is full. Free some space (old videos are in outputs/) and start again.\n"
  elif grep -q "\[ERROR\]" "${log}"; then
    grep -m 1 "\[ERROR\]" "${log}"
  else
    _t "See the whole log: %s\n" "${log}"
  fi
}

# -- commands ------------------------------------------------------------------

# Settle the port (flag, then config via preflight) for commands that only look.
resolve_port() {
  if [[ -n "${OPT_PORT}" ]]; then
    PORT="${OPT_PORT}"
  elif [[ -n "${PRE[PORT]:-}" ]]; then
    PORT="${PRE[PORT]}"
  else
    PORT="$(awk '/^server:/ {inside=1; next} /^[^ #]/ {inside=0}
                 inside && $1 == "port:" {print $2; exit}' "${CONFIG_FILE}" 2>/dev/null)"
    PORT="${I2V_SERVER_PORT:-${PORT:-7860}}"
  fi
}

cmd_start() {
  local pid log_file host port
  say "🚀 $(_t '%s launcher' "${APP_NAME}")"
  ensure_env
  preflight
  port="${PRE[PORT]}"
  host="${PRE[HOST]}"
  if pid="$(running_pid "${port}")"; then
    success "$(_t '%s is already running (PID %s).' "${APP_NAME}" "${pid}")"
    print_addresses "${host}" "${port}"
    print_login
    exit 0
  fi
  report_checks
  check_port "${port}"
  mkdir -p "${PRE[OUTPUT_DIR]}" "${RUN_DIR}" "${GRADIO_TMP}" \
    || die "$(_t "Cannot create the app's folders under %s: check the permissions and free space." "${APP_DIR}")"
  rm -rf "${GRADIO_TMP:?}"/* 2>/dev/null || true
  log_file="$(new_log_file "${PRE[LOG_DIR]}")"
  success "$(_t 'Folders ready: %s, %s' "${PRE[OUTPUT_DIR]/#${APP_DIR}\//}" "${PRE[LOG_DIR]/#${APP_DIR}\//}")"
  success "$(_t 'Log file: %s' "${log_file}")"

  local -a app_args=(main.py --host "${host}" --port "${port}" --pid-file "$(pid_file "${port}")")
  [[ -n "${OPT_MODEL}" ]] && app_args+=(--model "${OPT_MODEL}")
  [[ "${OPT_NO_LOGIN}" == 1 ]] && app_args+=(--no-login)
  if want_demo; then
    app_args+=(--demo)
    print_demo_banner
  fi
  [[ "${OPT_DEBUG}" == 1 ]] && app_args+=(--log-level DEBUG)
  export_app_environment

  if [[ "${OPT_FOREGROUND}" == 1 ]]; then
    say "📡 $(_t 'Starting in the foreground (Ctrl+C stops it)...')"
    print_addresses "${host}" "${port}"
    printf '%s %s %s %s\n' "$$" "$(process_start_ticks "$$")" "${port}" "${log_file}" > "$(pid_file "${port}")"
    cd "${APP_DIR}" && exec "${PYTHON}" "${app_args[@]}" > >(tee -a "${log_file}") 2>&1
  fi

  say "📡 $(_t 'Starting the app...')"
  (cd "${APP_DIR}" && exec setsid nohup "${PYTHON}" "${app_args[@]}" >> "${log_file}" 2>&1 < /dev/null) &
  pid=$!
  printf '%s %s %s %s\n' "${pid}" "$(process_start_ticks "${pid}")" "${port}" "${log_file}" > "$(pid_file "${port}")"
  debug "started PID ${pid}"
  wait_until_ready "${pid}" "${port}" "${log_file}"
  print_addresses "${host}" "${port}"
  print_login
}

# How to log in, when the app asks for a login (it does whenever it listens beyond this machine).
print_login() {
  local password
  if [[ "${PRE[LOGIN_REQUIRED]}" != 1 ]]; then
    if [[ "${OPT_NO_LOGIN}" == 1 ]]; then
      warn "$(_t "No login on %s: anyone who can reach port %s can use the GPU and see every video." "${PRE[HOST]}" "${PRE[PORT]}")"
    fi
    return 0
  fi
  if [[ "${PRE[PASSWORD_CONFIGURED]}" == 1 ]]; then
    printf '🔑 %s\n' "$(_t 'Login: user %s, with the password set in server.password' "${PRE[LOGIN_USER]}")"
  elif password="$(cut -d: -f2- "${PRE[CREDENTIALS_FILE]}" 2>/dev/null)" && [[ -n "${password}" ]]; then
    printf '🔑 %s\n' "$(_t 'Login: user %s, password %s' "${PRE[LOGIN_USER]}" "${password}")"
    _t '   (kept in %s, readable by you only; the HTTP API takes it as "Authorization: Bearer <password>")\n' \
      "${PRE[CREDENTIALS_FILE]}"
  else
    warn "$(_t "The app asks for a login, but %s is missing; see the log." "${PRE[CREDENTIALS_FILE]}")"
  fi
}

export_app_environment() {
  # Less fragmentation after many jobs of different sizes; the app's scratch files stay in the project.
  export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
  export GRADIO_TEMP_DIR="${GRADIO_TMP}"
  export GRADIO_ANALYTICS_ENABLED=False
  export PYTHONUNBUFFERED=1
}

wait_until_ready() {
  local pid="$1" port="$2" log_file="$3" started state message device demo last=""
  started="${SECONDS}"
  while ((SECONDS - started < READY_TIMEOUT)); do
    if ! kill -0 "${pid}" 2>/dev/null; then
      fail_start "$(_t 'The app stopped while starting.')" "${log_file}" "${port}"
    fi
    if IFS=$'\t' read -r state message device demo < <(app_status "${port}"); then
      case "${state}" in
        ready)
          success "$(_t '%s is ready in %s s: %s' "${APP_NAME}" "$((SECONDS - started))" "${device}")$([[ "${demo}" == true ]] && _t ', demo model')"
          return 0 ;;
        error)
          warn "$(_t 'The page is up, but the model could not be loaded: %s' "${message}")"
          return 0 ;;
        *)
          if [[ "${message}" != "${last}" ]]; then
            info "$(_t 'Model %s: %s' "${state}" "${message}")"
            last="${message}"
          fi ;;
      esac
    fi
    sleep 1
  done
  fail_start "$(_t 'The app was not ready after %s s.' "${READY_TIMEOUT}")" "${log_file}" "${port}"
}

fail_start() {
  local reason="$1" log_file="$2" port="$3"
  error "${reason}"
  printf -- '--- last lines of %s ---\n' "${log_file}" >&2
  tail -n 25 "${log_file}" >&2
  printf -- '---\n' >&2
  error "$(_t 'Likely cause: %s' "$(likely_cause "${log_file}")")"
  stop_pid_group "$(head -c 64 "$(pid_file "${port}")" 2>/dev/null | awk '{print $1}')" >/dev/null 2>&1
  rm -f "$(pid_file "${port}")"
  exit 1
}

print_addresses() {
  local host="$1" port="$2"
  printf '📍 %s\n' "$(_t 'Access address: http://%s:%s' "${host}" "${port}")"
  printf '📍 %s\n' "$(_t 'Local address: http://localhost:%s' "${port}")"
}

# TERM to the whole process group, wait, then KILL. Never by name.
stop_pid_group() {
  local pid="$1" waited=0
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 0
  kill -TERM -- "-${pid}" 2>/dev/null || kill -TERM "${pid}" 2>/dev/null || return 0
  while kill -0 "${pid}" 2>/dev/null && ((waited < STOP_TIMEOUT * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "${pid}" 2>/dev/null; then
    warn "$(_t "PID %s did not stop within %s s; killing it." "${pid}" "${STOP_TIMEOUT}")"
    kill -KILL -- "-${pid}" 2>/dev/null || kill -KILL "${pid}" 2>/dev/null
  fi
}

cmd_stop() {
  local pid
  resolve_port
  if ! pid="$(running_pid "${PORT}")"; then
    success "$(_t '%s is not running on port %s.' "${APP_NAME}" "${PORT}")"
    return 0
  fi
  info "$(_t 'Stopping %s (PID %s)...' "${APP_NAME}" "${pid}")"
  stop_pid_group "${pid}"
  rm -f "$(pid_file "${PORT}")"
  success "$(_t 'Stopped.')"
}

cmd_status() {
  local pid state message device demo log_file
  resolve_port
  if ! pid="$(running_pid "${PORT}")"; then
    printf '%s\n' "$(_t '%s is not running on port %s.' "${APP_NAME}" "${PORT}")"
    return 3
  fi
  read -r _ _ _ log_file < "$(pid_file "${PORT}")" || true
  printf '%s\n' "$(_t '%s is running.' "${APP_NAME}")"
  _t '  PID:     %s\n  URL:     http://localhost:%s\n  Uptime:  %s\n' "${pid}" "${PORT}" "$(uptime_of "${pid}")"
  if IFS=$'\t' read -r state message device demo < <(app_status "${PORT}"); then
    _t '  Model:   %s (%s)%s\n  Device:  %s\n' "${state}" "${message}" \
      "$([[ "${demo}" == true ]] && _t ', demo model')" "${device}"
  else
    _t '  Model:   not answering yet\n'
  fi
  _t '  Log:     %s\n' "${log_file:-unknown}"
}

cmd_logs() {
  local log_dir
  log_dir="$(awk '/^paths:/ {inside=1; next} /^[^ #]/ {inside=0}
                  inside && $1 == "log_dir:" {print $2; exit}' "${CONFIG_FILE}" 2>/dev/null)"
  log_dir="${I2V_PATHS_LOG_DIR:-${log_dir:-logs}}"
  [[ "${log_dir}" == /* ]] || log_dir="${APP_DIR}/${log_dir}"
  [[ -e "${log_dir}/latest.log" ]] || die "$(_t "No log yet in %s. Start the app first: bash start_app.sh" "${log_dir}")"
  exec tail -n 50 -F "${log_dir}/latest.log"
}

main() {
  setup_colours
  parse_args "$@"
  [[ "${OPT_DEBUG}" == 1 ]] && set -x
  case "${COMMAND}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
  esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -o nounset -o pipefail
  main "$@"
fi
