#!/usr/bin/env bash
#
# start_app.sh: set up, start, watch, stop and restart the Image-to-Video app.
#
# The shell half of the launcher: what must run before Python exists (the conda
# environment named in config/model_config.yaml, else a project-local .venv), and
# starting main.py in its own process group, recorded in run/app-PORT.pid, and
# stopping it by that group. What is decided once Python exists (settings, checks,
# the port, the demo rule, status, why a start failed, the login, their messages)
# is image_to_video/launcher.py, which this script asks.
#
# Sourcing this file defines the functions without running anything (tests/run.sh).

readonly APP_NAME="Image-to-Video"
APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly APP_DIR
readonly CONFIG_FILE="${APP_DIR}/config/model_config.yaml"
readonly REQUIREMENTS="${APP_DIR}/requirements.txt"
readonly REQUIREMENTS_RAY="${APP_DIR}/requirements-ray.txt"  # a Ray cluster's machines only (worker)
readonly VENV_DIR="${I2V_VENV_DIR:-${APP_DIR}/.venv}"
readonly RUN_DIR="${I2V_RUN_DIR:-${APP_DIR}/run}"  # PID files; the tests point it elsewhere
readonly GRADIO_TMP="${APP_DIR}/.gradio/tmp"
readonly READY_TIMEOUT="${I2V_READY_TIMEOUT:-1800}"  # seconds; a first model download is ~5 GB
readonly STOP_TIMEOUT=20                   # seconds between TERM and KILL
readonly MIN_PYTHON_MINOR=10               # Python 3.10+
readonly KEEP_TRACES=10                    # --debug traces kept in the log folder
readonly INSTALL_TAIL_LINES=20             # lines of pip's output shown when an install fails
readonly INSTALL_LOG_MAX_BYTES=1048576     # past this, the install log starts again

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
OPT_HEAD=""

# Filled in by ensure_env, config_args and the launcher's "set" lines.
PYTHON=""
ENV_DESCRIPTION=""
CONFIG_ARGS=()
APP_ARGS=()
declare -A PRE=()
INSTALL_LOG=""      # pip's output (open_install_log)
INSTALL_MARK=0      # its lines before this install
INSTALL_STARTED=0   # when this install started (SECONDS)

# The help, from the launcher (in the system's language); it needs only a system Python, no environment.
usage() {
  local python
  if python="$(find_system_python)" && (cd "${APP_DIR}" && "${python}" -m image_to_video.launcher usage \
      --stop-timeout "${STOP_TIMEOUT}" --ready-timeout "${READY_TIMEOUT}" --venv "${VENV_DIR/#${APP_DIR}\//}"); then
    return 0
  fi
  printf 'Usage: bash start_app.sh [start|stop|restart|status|logs|worker] [--port N] [--host ADDR] [--demo]\n'
  printf '         [--model SOURCE] [--no-login] [--foreground] [--quiet] [--debug] [--head HOST[:PORT]]\n'
  printf '         (Python 3.%s+ needed)\n' \
    "${MIN_PYTHON_MINOR}"
}

# -- output --------------------------------------------------------------------

# This script's own messages (the launcher has the rest) follow the system locale:
# Simplified Chinese when LC_ALL, LC_MESSAGES or LANG starts with zh.
declare -A ZH=(
  ["%s launcher"]="%s 应用启动器"
  ["Unknown argument: %s"]="未知参数: %s"
  ["%s needs a value, e.g. %s %s"]="%s 需要一个值，例如 %s %s"
  ["--port must be a whole number from 1 to 65535, not %s."]="--port 必须是 1 到 65535 之间的整数，而不是 %s。"
  ["Run \"bash start_app.sh --help\" for the options.\n"]="运行 \"bash start_app.sh --help\" 查看可用选项。\n"
  ["Python 3.%s or newer is needed. Install it (e.g. 'apt install python3 python3-venv') and run this again."]="需要 Python 3.%s 或更新版本。请先安装（例如 'apt install python3 python3-venv'）再运行本脚本。"
  ["Could not create %s. On Debian/Ubuntu install the venv module: apt install python3-venv"]="无法创建 %s。Debian/Ubuntu 上请安装 venv 模块：apt install python3-venv"
  ["Installing the packages failed. Check the network and disk space, then run this again. The end of pip's output is below; all of it is in %s"]="依赖安装失败。请检查网络和磁盘空间后重新运行。下面是 pip 输出的末尾；完整输出在 %s"
  ["Packages installed into %s in %s s: %s new or updated, %s warning(s) from pip (its output: %s)"]="依赖已安装到 %s，用时 %s 秒：新装或更新 %s 个，pip 警告 %s 条（完整输出：%s）"
  ["Tracing this script (--debug) into %s"]="本脚本的跟踪输出（--debug）写入 %s"
  ["Cannot write the trace into %s; tracing to the terminal."]="无法把跟踪输出写入 %s，改为输出到终端。"
  ["The %s has %s; %s needs Python 3.%s+."]="%s 中是 %s；%s 需要 Python 3.%s 以上。"
  ["Conda has no environment '%s'; using %s instead."]="Conda 中没有名为 '%s' 的环境，改用 %s。"
  ["Conda environment activated: %s"]="Conda 环境已激活: %s"
  ["Creating the virtual environment %s (first run only)..."]="正在创建虚拟环境 %s（仅首次运行）..."
  ["Installing packages from requirements.txt (%s first; the first time takes a few minutes)..."]="正在安装 requirements.txt 中的依赖（先装 %s；首次需要几分钟）..."
  ["Virtual environment ready: %s"]="虚拟环境已就绪: %s"
  ["Starting in the foreground (Ctrl+C stops it)..."]="前台启动中（Ctrl+C 停止）..."
  ["Starting the app..."]="应用启动中..."
  ["Stopping %s (PID %s)..."]="正在停止 %s（PID %s）..."
  ["Stopped."]="已停止。"
  ["PID %s did not stop within %s s; killing it."]="PID %s 在 %s 秒内没有停止，强制结束。"
  ["Installing %s from requirements-ray.txt..."]="正在安装 requirements-ray.txt 中的 %s..."
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

# Every command's options; a missing value, an unknown argument or a bad port is refused here (exit 2),
# before anything is set up.
parse_args() {
  while (($#)); do
    case "$1" in
      start|stop|restart|status|logs|worker) COMMAND="$1" ;;
      --port|--host|--model|--head)
        if (($# < 2)) || [[ "$2" == --* ]]; then needs_value "$1"; fi
        set_option "$1" "$2"
        shift ;;
      --port=*|--host=*|--model=*|--head=*) set_option "${1%%=*}" "${1#*=}" ;;
      --demo) OPT_DEMO=1 ;;
      --no-login) OPT_NO_LOGIN=1 ;;
      --foreground) OPT_FOREGROUND=1 ;;
      --quiet|-q) OPT_QUIET=1 ;;
      --debug) OPT_DEBUG=1 ;;
      -h|--help) usage; exit 0 ;;
      *) error "$(_t 'Unknown argument: %s' "$(shown --bare "$1")")"
         _t 'Run "bash start_app.sh --help" for the options.\n' >&2; exit 2 ;;
    esac
    shift
  done
  check_port_option
}

# set_option OPTION VALUE: an empty value is a missing one.
set_option() {
  [[ -n "$2" ]] || needs_value "$1"
  case "$1" in
    --port) OPT_PORT="$2" ;;
    --host) OPT_HOST="$2" ;;
    --model) OPT_MODEL="$2" ;;
    --head) OPT_HEAD="$2" ;;
  esac
}

needs_value() {
  local -A example=([--port]=7860 [--host]=127.0.0.1 [--model]=ali-vilab/i2vgen-xl [--head]=10.0.0.5:6379)
  error "$(_t '%s needs a value, e.g. %s %s' "$1" "$1" "${example[$1]}")"
  exit 2
}

# The same check for every command (start, stop, status, logs); a leading zero is dropped, so that
# --port 07860 finds run/app-7860.pid.
check_port_option() {
  [[ -n "${OPT_PORT}" ]] || return 0
  if [[ ! "${OPT_PORT}" =~ ^[0-9]{1,5}$ ]] || ((10#${OPT_PORT} < 1 || 10#${OPT_PORT} > 65535)); then
    error "$(_t '--port must be a whole number from 1 to 65535, not %s.' "$(shown "${OPT_PORT}")")"
    exit 2
  fi
  OPT_PORT="$((10#${OPT_PORT}))"
}

# A value as a message quotes it, as errors.shown does in Python: a number as given, anything else in
# quotes (--bare: as it is); past 40 characters cut, with "…" and its length.
shown() {
  local text
  if [[ "$1" == --bare ]]; then shift; text="$1"; else text="'$1'"; fi
  [[ ! "$1" =~ ^[0-9]+$ ]] || text="$1"
  if ((${#1} > 40)); then text="${text:0:40}… (${#1} characters)"; fi
  printf '%s' "${text}"
}

# The options the launcher and the app share, as given on the command line.
config_args() {
  CONFIG_ARGS=()
  if [[ -n "${OPT_PORT}" ]]; then CONFIG_ARGS+=(--port "${OPT_PORT}"); fi
  if [[ -n "${OPT_HOST}" ]]; then CONFIG_ARGS+=(--host "${OPT_HOST}"); fi
  if [[ -n "${OPT_MODEL}" ]]; then CONFIG_ARGS+=(--model "${OPT_MODEL}"); fi
  if [[ "${OPT_NO_LOGIN}" == 1 ]]; then CONFIG_ARGS+=(--no-login); fi
  if [[ "${OPT_DEMO}" == 1 ]]; then CONFIG_ARGS+=(--demo); fi
}

# -- environment ---------------------------------------------------------------

# The conda environment's name, read before any Python exists: CONDA_ENV, else
# I2V_LAUNCHER_CONDA_ENV, else launcher.conda_env in the config, else torch28.
conda_env_name() {
  local name="${CONDA_ENV:-${I2V_LAUNCHER_CONDA_ENV:-}}"
  if [[ -z "${name}" ]]; then
    name="$(awk '/^launcher:/ {inside=1; next} /^[^ #]/ {inside=0}
                 inside && $1 == "conda_env:" {print $2; exit}' "${CONFIG_FILE}" 2>/dev/null)"
  fi
  printf '%s\n' "${name:-torch28}"
}

# The app's log folder, read before any Python exists, as the app reads it: I2V_PATHS_LOG_DIR, else
# paths.log_dir in the config, else logs; a relative one is in the project.
log_dir() {
  local dir="${I2V_PATHS_LOG_DIR:-}"
  if [[ -z "${dir}" ]]; then
    dir="$(awk '/^paths:/ {inside=1; next} /^[^ #]/ {inside=0}
                inside && $1 == "log_dir:" {print $2; exit}' "${CONFIG_FILE}" 2>/dev/null | tr -d "\"'")"
  fi
  dir="${dir:-logs}"
  dir="${dir/#\~/${HOME}}"
  [[ "${dir}" == /* ]] || dir="${APP_DIR}/${dir}"
  printf '%s\n' "${dir}"
}

# --debug: trace this script (set -x) into start_app_trace_YYYYmmdd_HHMMSS.log in the log folder (the
# newest KEEP_TRACES kept), not onto the terminal, and say where in one line.
start_trace() {
  local dir trace
  local -a traces
  dir="$(log_dir)"
  trace="${dir}/start_app_trace_$(date +%Y%m%d_%H%M%S).log"
  # Readable by you only: the trace holds what the launcher says, the login's password included.
  if { mkdir -p "${dir}" && (umask 077 && : >> "${trace}"); } 2>/dev/null; then
    exec 19>> "${trace}"  # fd 19: the trace; the app's processes are started without it (19>&-)
    BASH_XTRACEFD=19
    traces=("${dir}"/start_app_trace_*.log)  # by name: oldest first
    if ((${#traces[@]} > KEEP_TRACES)); then
      rm -f -- "${traces[@]:0:${#traces[@]}-KEEP_TRACES}"
    fi
    debug "$(_t 'Tracing this script (--debug) into %s' "${trace/#${APP_DIR}\//}")"
  else
    debug "$(_t 'Cannot write the trace into %s; tracing to the terminal.' "${dir}")"
  fi
  set -x
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
    open_install_log
    if ! { pip_install "${VENV_DIR}/bin/python" --upgrade pip \
           && pip_install "${VENV_DIR}/bin/python" "${torch_pin}" \
           && pip_install "${VENV_DIR}/bin/python" -r "${REQUIREMENTS}"; }; then
      install_failed
    fi
    requirements_hash > "${VENV_DIR}/.requirements.sha256"
    install_succeeded "${VENV_DIR}"
  fi
  PYTHON="${VENV_DIR}/bin/python"
  ENV_DESCRIPTION="virtual environment ${VENV_DIR}"
  # shellcheck disable=SC1091
  source "${VENV_DIR}/bin/activate"
  success "$(_t 'Virtual environment ready: %s' "${VENV_DIR/#${APP_DIR}\//}")"
}

# -- pip: its output into the install log, a summary on the terminal ---------------------------

# INSTALL_LOG: logs/install.log (pip's output, appended; begun again past INSTALL_LOG_MAX_BYTES), else a
# temporary file when the log folder cannot be written.
open_install_log() {
  local dir
  dir="$(log_dir)"
  INSTALL_LOG="${dir}/install.log"
  if ! { mkdir -p "${dir}" && : >> "${INSTALL_LOG}"; } 2>/dev/null; then
    INSTALL_LOG="$(mktemp "${TMPDIR:-/tmp}/image-to-video-install.XXXXXX")"
  fi
  if (($(wc -c < "${INSTALL_LOG}") > INSTALL_LOG_MAX_BYTES)); then : > "${INSTALL_LOG}"; fi
  INSTALL_MARK="$(wc -l < "${INSTALL_LOG}")"
  INSTALL_STARTED="${SECONDS}"
}

# pip_install PYTHON ARGS...: `PYTHON -m pip install ARGS`, its output (warnings included) into the
# install log, not onto the terminal.
pip_install() {
  local python="$1"
  shift
  printf '\n=== %s: pip install %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >> "${INSTALL_LOG}"
  "${python}" -m pip install --progress-bar off "$@" >> "${INSTALL_LOG}" 2>&1
}

# One line for an install that worked: where, how long, how many packages, pip's warnings, the log.
install_succeeded() {
  local counts
  counts="$(tail -n "+$((INSTALL_MARK + 1))" "${INSTALL_LOG}" \
            | awk '/^Successfully installed / {n += NF - 2} /^(WARNING|DEPRECATION):/ {w++} END {print n + 0, w + 0}')"
  success "$(_t 'Packages installed into %s in %s s: %s new or updated, %s warning(s) from pip (its output: %s)' \
    "${1/#${APP_DIR}\//}" "$((SECONDS - INSTALL_STARTED))" "${counts% *}" "${counts#* }" \
    "${INSTALL_LOG/#${APP_DIR}\//}")"
}

# An install that failed: what to do, the log's path and its last lines; exit 1.
install_failed() {
  error "$(_t "Installing the packages failed. Check the network and disk space, then run this again. The end of pip's output is below; all of it is in %s" "${INSTALL_LOG}")"
  {
    printf -- '--- last lines of %s ---\n' "${INSTALL_LOG}"
    tail -n "${INSTALL_TAIL_LINES}" "${INSTALL_LOG}"
    printf -- '---\n'
  } >&2
  exit 1
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

# stop, status and logs use the environment as it is: they never create or install anything
# (a stop must work offline, after a requirements change too); the launcher's answers for
# them need only the standard library.
use_env_as_it_is() {
  local OPT_QUIET=1 name
  name="$(conda_env_name)"
  if [[ "${name}" != "none" ]] && activate_conda "${name}"; then return 0; fi
  if [[ -x "${VENV_DIR}/bin/python" ]]; then PYTHON="${VENV_DIR}/bin/python"; return 0; fi
  PYTHON="$(find_system_python)" \
    || die "$(_t "Python 3.%s or newer is needed. Install it (e.g. 'apt install python3 python3-venv') and run this again." "${MIN_PYTHON_MINOR}")"
}

# -- the launcher (image_to_video/launcher.py) -----------------------------------

# Run a launcher subcommand: show its messages as they come, keep its values in PRE,
# return its exit status.
launcher() {
  local level text
  while IFS=$'\t' read -r level text; do
    show "${level}" "${text}"
  done < <(cd "${APP_DIR}" \
             && "${PYTHON}" -m image_to_video.launcher --run-dir "${RUN_DIR}" --for "${COMMAND}" "$@")
  wait "$!"
}

# Show one line of the launcher's output with this script's helpers; "set KEY=VALUE" goes into PRE.
show() {
  local level="$1" text="$2"
  case "${level}" in
    info|success|warn|error|debug|say) "${level}" "${text}" ;;
    highlight) say "${C_YELLOW}${text}${C_OFF}" ;;
    set) PRE["${text%%=*}"]="${text#*=}" ;;
    out) printf '%s\n' "${text}" ;;
    err) printf '%s\n' "${text}" >&2 ;;
    *) printf '%s %s\n' "${level}" "${text}" ;;  # not ours (a stray print): as it came
  esac
}

# -- processes -----------------------------------------------------------------

pid_file() { printf '%s/app-%s.pid\n' "${RUN_DIR}" "$1"; }

# The PID file: "PID TICKS PORT LOGFILE"; the start ticks tell our app from a later process with its PID.
write_pid_file() {
  local pid="$1" port="$2" log_file="$3"
  launcher ticks "${pid}" || return 1
  printf '%s %s %s %s\n' "${pid}" "${PRE[TICKS]}" "${port}" "${log_file}" > "$(pid_file "${port}")"
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

export_app_environment() {
  # Less fragmentation after many jobs of different sizes; the app's scratch files stay in the project.
  export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
  export GRADIO_TEMP_DIR="${GRADIO_TMP}"
  export GRADIO_ANALYTICS_ENABLED=False
  export PYTHONUNBUFFERED=1
}

# -- commands ------------------------------------------------------------------

cmd_start() {
  local log_file
  say "🚀 $(_t '%s launcher' "${APP_NAME}")"
  ensure_env
  config_args
  PRE=()
  launcher preflight "${CONFIG_ARGS[@]}" || exit  # 1: cannot start; 2: a bad value
  [[ -z "${PRE[RUNNING]:-}" ]] || exit 0
  launcher prepare --scratch "${GRADIO_TMP}" "${CONFIG_ARGS[@]}" || exit 1
  log_file="${PRE[LOG_FILE]}"
  set_app_args
  export_app_environment
  if [[ "${OPT_FOREGROUND}" == 1 ]]; then
    run_foreground "${log_file}"
  fi
  run_background "${log_file}"
}

# main.py's arguments; the demo model (and its banner) when the launcher's rule says so.
set_app_args() {
  APP_ARGS=(main.py --host "${PRE[HOST]}" --port "${PRE[PORT]}" --pid-file "$(pid_file "${PRE[PORT]}")")
  if [[ -n "${OPT_MODEL}" ]]; then APP_ARGS+=(--model "${OPT_MODEL}"); fi
  if [[ "${OPT_NO_LOGIN}" == 1 ]]; then APP_ARGS+=(--no-login); fi
  if [[ "${PRE[DEMO]}" == 1 ]]; then
    APP_ARGS+=(--demo)
    launcher banner
  fi
  if [[ "${OPT_DEBUG}" == 1 ]]; then APP_ARGS+=(--log-level DEBUG); fi
}

run_foreground() {
  local log_file="$1"
  say "📡 $(_t 'Starting in the foreground (Ctrl+C stops it)...')"
  launcher addresses "${CONFIG_ARGS[@]}"
  write_pid_file "$$" "${PRE[PORT]}" "${log_file}" || exit 1
  cd "${APP_DIR}" && exec "${PYTHON}" "${APP_ARGS[@]}" > >(tee -a "${log_file}") 2>&1 19>&-
}

# Start main.py in its own process group (so stop reaches every child), wait until it is ready.
run_background() {
  local log_file="$1" pid
  say "📡 $(_t 'Starting the app...')"
  (cd "${APP_DIR}" && exec setsid nohup "${PYTHON}" "${APP_ARGS[@]}" >> "${log_file}" 2>&1 < /dev/null 19>&-) &
  pid=$!
  debug "started PID ${pid}"
  if ! write_pid_file "${pid}" "${PRE[PORT]}" "${log_file}" \
      || ! launcher wait-ready --pid "${pid}" --port "${PRE[PORT]}" --host "${PRE[HOST]}" \
             --log "${log_file}" --timeout "${READY_TIMEOUT}"; then
    stop_pid_group "${pid}" >/dev/null 2>&1
    rm -f "$(pid_file "${PRE[PORT]}")"
    exit 1
  fi
  launcher addresses --login "${CONFIG_ARGS[@]}"
}

# Stop the app on --port, else the one that runs; PRE then holds its PORT and HOST.
cmd_stop() {
  use_env_as_it_is
  config_args
  PRE=()
  launcher stop-target "${CONFIG_ARGS[@]}" || exit
  [[ -n "${PRE[PID]:-}" ]] || return 0
  info "$(_t 'Stopping %s (PID %s)...' "${APP_NAME}" "${PRE[PID]}")"
  stop_pid_group "${PRE[PID]}"
  rm -f "${PRE[PID_FILE]}"
  success "$(_t 'Stopped.')"
}

# Stop, then start again where it ran, unless another port or address is asked for.
cmd_restart() {
  cmd_stop
  OPT_PORT="${OPT_PORT:-${PRE[PORT]:-}}"
  OPT_HOST="${OPT_HOST:-${PRE[HOST]:-}}"
  cmd_start
}

cmd_status() {
  use_env_as_it_is
  config_args
  launcher status "${CONFIG_ARGS[@]}"
}

# This machine as a GPU worker of the Ray cluster whose head is --head: the app's environment, Ray
# from requirements-ray.txt, then `ray start --block` in the foreground (this process becomes it):
# Ctrl+C or a TERM stops it, and Ray drains the node and stops what it started.
cmd_worker() {
  local -a ray_args
  say "🚀 $(_t '%s launcher' "${APP_NAME}")"
  use_env_as_it_is  # a missing or bad --head is said before anything is created or installed
  PRE=()
  launcher head --head "${OPT_HEAD}" || exit
  ensure_env
  ensure_ray
  config_args
  PRE=()
  launcher worker --head "${OPT_HEAD}" "${CONFIG_ARGS[@]}" || exit
  ray_args=(start "--address=${PRE[RAY_ADDRESS]}" --disable-usage-stats --block)
  if [[ -n "${PRE[RAY_RESOURCES]}" ]]; then ray_args+=("--resources=${PRE[RAY_RESOURCES]}"); fi
  export_app_environment
  cd "${APP_DIR}" && exec "$(dirname "${PYTHON}")/ray" "${ray_args[@]}" 19>&-
}

# Ray as requirements-ray.txt pins it, installed into the environment when missing or another version.
ensure_ray() {
  local pin
  pin="$(grep -E '^ray==' "${REQUIREMENTS_RAY}" | head -n 1)"
  [[ "$("${PYTHON}" -c 'import ray; print("ray==" + ray.__version__)' 2>/dev/null)" != "${pin}" ]] || return 0
  info "$(_t 'Installing %s from requirements-ray.txt...' "${pin}")"
  open_install_log
  pip_install "${PYTHON}" -r "${REQUIREMENTS_RAY}" || install_failed
  install_succeeded "$("${PYTHON}" -c 'import sys; print(sys.prefix)')"
}

# Follow the running app's log, else the newest.
cmd_logs() {
  use_env_as_it_is
  config_args
  launcher log-file "${CONFIG_ARGS[@]}" || exit
  exec tail -n 50 -F "${PRE[LOG_FILE]}"
}

main() {
  setup_colours
  parse_args "$@"
  if [[ "${OPT_DEBUG}" == 1 ]]; then start_trace; fi
  case "${COMMAND}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_restart ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    worker) cmd_worker ;;
  esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -o nounset -o pipefail
  main "$@"
fi
