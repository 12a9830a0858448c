"""image_to_video.launcher, the Python half of start_app.sh: its answers, in-process and without a real app."""

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from image_to_video import launcher
from image_to_video.config import PROJECT_DIR, load_config
from image_to_video.processes import start_ticks

from .helpers import wait_for


def run(capsys, *argv: str) -> tuple[int, list[tuple[str, str]], dict[str, str]]:
    """``launcher.main(argv)``: its exit status, its (level, text) lines and its values."""
    code = launcher.main(list(argv))
    lines = [tuple(line.split("\t", 1)) for line in capsys.readouterr().out.splitlines()]
    values = dict(text.split("=", 1) for level, text in lines if level == "set")
    return code, lines, values


def texts(lines, *levels: str) -> str:
    return "\n".join(text for level, text in lines if level in levels)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def fake_app(tmp_path, run_dir):
    """Processes that look like our app (a command line holding main.py), each with a PID file and a log."""
    started = []

    def make(port: int, host: str = "127.0.0.1") -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "main.py", "--host", host])
        started.append(process)
        # Until it has exec'd, the child's command line is still pytest's, and the launcher (rightly) sees
        # no app there: on a busy machine that moment is long enough to be seen.
        wait_for(lambda: "main.py" in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace"))
        log = tmp_path / f"app_{port}.log"
        log.write_text("started\n")
        (run_dir / f"app-{port}.pid").write_text(f"{process.pid} {start_ticks(process.pid)} {port} {log}\n")
        return process

    yield make
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture
def chinese(monkeypatch):
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    monkeypatch.setenv("LC_ALL", "")
    monkeypatch.delenv("LC_MESSAGES", raising=False)


# -- messages ------------------------------------------------------------------------------

def test_the_locale_is_read_as_the_script_reads_it(monkeypatch):
    monkeypatch.setenv("LC_ALL", "")
    monkeypatch.setenv("LC_MESSAGES", "")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert launcher.chinese() and launcher.t("Port %s is free", 7860) == "端口 7860 空闲"
    monkeypatch.setenv("LC_ALL", "C.UTF-8")  # the first one set decides
    assert not launcher.chinese() and launcher.t("Port %s is free", 7860) == "Port 7860 is free"


def test_every_translation_takes_the_same_values_as_its_english():
    for english, chinese_text in launcher.ZH.items():
        assert english.count("%s") == chinese_text.count("%s"), english
        assert english.count("\n") == chinese_text.count("\n"), english


def test_importing_it_loads_neither_torch_gradio_nor_yaml():
    code = ("import sys, image_to_video.launcher\n"
            "print(sorted(m for m in ('torch', 'gradio', 'yaml', 'diffusers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- preflight, demo rule, config ----------------------------------------------------------

@pytest.fixture
def libraries(monkeypatch):
    """installed_libraries without torch: CUDA or not, as the test says."""
    found = {"python": "3.11.7", "torch": "2.13.0+cpu", "gradio": "6.0", "cuda": False, "torch_cuda": "",
             "gpu": "", "ffmpeg": "/usr/bin/ffmpeg"}
    monkeypatch.setattr(launcher, "installed_libraries", lambda: found)
    monkeypatch.setattr(launcher, "nvidia_smi_state", lambda: "not installed")
    return found


@pytest.mark.parametrize("argv, env, cuda, demo", [
    ([], {}, False, "1"),                                  # no GPU, no model asked for: the demo model
    ([], {}, True, "0"),                                   # a GPU: the real model
    (["--demo"], {}, True, "1"),                           # asked for
    (["--model", "ali-vilab/i2vgen-xl"], {}, False, "0"),  # a model asked for, even the default one
    ([], {"I2V_MODEL_SOURCE": "ali-vilab/i2vgen-xl"}, False, "0"),
    ([], {"I2V_MODEL_SOURCE": "{tmp}/models/mine"}, False, "0"),  # a folder that exists
])
def test_the_demo_rule(capsys, monkeypatch, run_dir, free_port, libraries, tmp_path, argv, env, cuda, demo):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    for name, content in env.items():
        monkeypatch.setenv(name, content.replace("{tmp}", str(tmp_path)))
    libraries["cuda"], libraries["gpu"] = cuda, "H200 (139 GiB)" if cuda else ""
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", str(free_port), *argv)
    assert code == 0, lines
    assert values["DEMO"] == demo and values["PORT"] == str(free_port)
    assert f"Port {free_port} is free" in texts(lines, "success")


def test_preflight_reports_the_machine_and_takes_the_config_with_env_and_flags(capsys, monkeypatch, run_dir,
                                                                                free_port, libraries, tmp_path):
    monkeypatch.setenv("I2V_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("I2V_PATHS_LOG_DIR", str(tmp_path / "my-logs"))
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", str(free_port))
    assert code == 0
    assert values["HOST"] == "127.0.0.1" and values["LOG_DIR"] == str(tmp_path / "my-logs")
    assert ("success", "Python 3.11.7, torch 2.13.0+cpu, gradio 6.0") in lines
    assert ("info", "No NVIDIA GPU found (nvidia-smi: not installed).") in lines


def test_preflight_refuses_a_bad_setting_and_a_missing_ffmpeg(capsys, monkeypatch, run_dir, libraries):
    monkeypatch.setenv("I2V_GENERATION_DEFAULTS_FPS", "500")
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "preflight")
    assert code == 1 and "generation.defaults.fps: 500" in texts(lines, "error")
    monkeypatch.delenv("I2V_GENERATION_DEFAULTS_FPS")
    libraries["ffmpeg"] = ""
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "preflight")
    assert code == 1 and "imageio-ffmpeg has no ffmpeg binary" in texts(lines, "error")


def test_a_broken_install_is_said_with_the_fix(capsys, monkeypatch, run_dir):
    def broken():
        raise ImportError("No module named 'gradio'")

    monkeypatch.setattr(launcher, "installed_libraries", broken)
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "preflight")
    assert code == 1
    assert "The app's packages do not import" in texts(lines, "error")
    assert "No module named 'gradio'" in texts(lines, "err")
    assert "pip install -r requirements.txt" in texts(lines, "error")


def test_preflight_sees_our_app_already_running(capsys, run_dir, fake_app, libraries):
    process = fake_app(47001)
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", "47001", "--host", "127.0.0.1")
    assert code == 0 and values["RUNNING"] == str(process.pid)
    assert f"Image-to-Video is already running (PID {process.pid})." in texts(lines, "success")
    assert "📍 Local address: http://127.0.0.1:47001" in texts(lines, "out")


# -- PID files -----------------------------------------------------------------------------

def test_stale_pid_files_are_removed_and_live_ones_kept(capsys, run_dir, fake_app):
    live = fake_app(47002)
    unrelated = subprocess.Popen(["sleep", "60"])  # alive, but not our app
    try:
        (run_dir / "app-47003.pid").write_text(f"{unrelated.pid} {start_ticks(unrelated.pid)} 47003 x.log\n")
        (run_dir / "app-47004.pid").write_text(f"{live.pid} 12345 47004 x.log\n")  # a reused PID: other ticks
        (run_dir / "app-47005.pid").write_text("")                                   # half written, unreadable
        (run_dir / "app-47006.pid").write_text("999999999 1 47006 x.log\n")          # gone
        found = launcher.running_instances(run_dir)
    finally:
        unrelated.kill()
        unrelated.wait()
    assert [(i.pid, i.port, i.host) for i in found] == [(live.pid, 47002, "127.0.0.1")]
    assert sorted(p.name for p in run_dir.iterdir()) == ["app-47002.pid"]
    said = capsys.readouterr().out
    assert said.count("debug\tstale PID file") == 4 and "(unreadable)" in said


def test_without_a_port_the_one_running_instance_is_chosen(capsys, run_dir, fake_app):
    process = fake_app(47010, host="0.0.0.0")
    code, _, values = run(capsys, "--run-dir", str(run_dir), "stop-target")
    assert code == 0 and values == {"PID": str(process.pid), "PORT": "47010", "HOST": "0.0.0.0",
                                    "PID_FILE": str(run_dir / "app-47010.pid")}
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "status")
    assert code == 0 and f"PID:     {process.pid}" in texts(lines, "out")
    assert "Model:   not answering yet" in texts(lines, "out")
    code, _, values = run(capsys, "--run-dir", str(run_dir), "log-file")
    assert code == 0 and values["LOG_FILE"].endswith("app_47010.log")


def test_several_instances_are_listed_and_need_a_port(capsys, run_dir, fake_app):
    first, second = fake_app(47020), fake_app(47021)
    for command, word in (("status", "status"), ("stop-target", "stop"), ("log-file", "logs")):
        code, lines, values = run(capsys, "--run-dir", str(run_dir), "--for", word, command)
        assert code == launcher.SEVERAL and "PID" not in values and "LOG_FILE" not in values
        assert "Several Image-to-Video instances are running" in texts(lines, "error")
        listed = texts(lines, "err")
        assert f"port 47020: PID {first.pid}, http://127.0.0.1:47020" in listed
        assert f"port 47021: PID {second.pid}" in listed
        assert f"bash start_app.sh {word} --port 47020" in listed
    code, _, values = run(capsys, "--run-dir", str(run_dir), "stop-target", "--port", "47021")
    assert code == 0 and values["PID"] == str(second.pid)


def test_nothing_running(capsys, run_dir, tmp_path, monkeypatch, chinese):
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "stop-target")
    assert code == 0 and values == {} and ("success", "Image-to-Video 未在运行。") in lines
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "status", "--port", "47030")
    assert code == launcher.NOT_RUNNING and ("out", "Image-to-Video 未在端口 47030 上运行。") in lines
    monkeypatch.setenv("I2V_PATHS_LOG_DIR", str(tmp_path / "logs"))
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "log-file")
    assert code == 1 and "中还没有日志" in texts(lines, "error")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app_1.log").write_text("x")
    (tmp_path / "logs" / "latest.log").symlink_to("app_1.log")
    code, _, values = run(capsys, "--run-dir", str(run_dir), "log-file")
    assert code == 0 and values["LOG_FILE"] == str(tmp_path / "logs" / "latest.log")


def test_ticks_are_the_processes_start_time(capsys):
    code, _, values = run(capsys, "ticks", str(os.getpid()))
    assert code == 0 and values["TICKS"] == start_ticks(os.getpid())


# -- the port ------------------------------------------------------------------------------

def test_the_port_is_checked_with_lsof_ss_or_a_bind_test(tmp_path, free_port, monkeypatch):
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("0.0.0.0", free_port))
        blocker.listen()
        if shutil.which("lsof"):
            assert launcher.port_listeners(free_port) == [os.getpid()]
        bare = tmp_path / "bin"
        bare.mkdir()
        if shutil.which("ss"):
            (bare / "ss").symlink_to(shutil.which("ss"))
        monkeypatch.setenv("PATH", str(bare))  # no lsof: ss, then only the bind test
        if shutil.which("ss"):
            assert launcher.port_listeners(free_port) == [os.getpid()]
        (bare / "ss").unlink(missing_ok=True)
        assert launcher.port_listeners(free_port) is None
    assert launcher.port_listeners(free_port) == []


def test_a_foreign_listener_is_named_with_its_command(capsys, free_port):
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("0.0.0.0", free_port))
        blocker.listen()
        code, lines, _ = run(capsys, "port", "--port", str(free_port))
    assert code == 1
    assert f"Port {free_port} is in use by another program:" in texts(lines, "error")
    assert re.search(rf"PID {os.getpid()}: .*python", texts(lines, "err"))
    assert f"bash start_app.sh --port {free_port + 1}" in texts(lines, "err")


# -- the running app -----------------------------------------------------------------------

@pytest.fixture
def status_server():
    """A stand-in /api/status that answers with the states in ``answers``, one per request (the last repeats)."""
    answers, asked = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            body = json.dumps({"model": answers[min(len(asked), len(answers)) - 1]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.answers, server.asked = answers, asked
    yield server
    server.shutdown()
    server.server_close()


def model(state, message="", demo=True):
    return {"state": state, "message": message, "device": "CPU, float32", "demo": demo}


def test_waiting_shows_each_stage_once_then_ready(capsys, status_server, tmp_path, monkeypatch):
    monkeypatch.setattr(launcher.time, "sleep", lambda seconds: None)
    status_server.answers += [model("loading", "Loading..."), model("loading", "Loading..."), model("ready", "Ready")]
    port = status_server.server_address[1]
    assert launcher.wait_ready(os.getpid(), port, "0.0.0.0", tmp_path / "app.log", timeout=60)
    lines = [tuple(line.split("\t", 1)) for line in capsys.readouterr().out.splitlines()]
    assert lines == [("info", "Model loading: Loading..."),
                     ("success", "Image-to-Video is ready in 0 s: CPU, float32, demo model")]


def test_the_status_query_asks_in_chinese_under_a_chinese_locale(status_server, chinese):
    status_server.answers.append(model("ready", "就绪"))
    assert launcher.model_status(status_server.server_address[1])["message"] == "就绪"
    assert status_server.asked == ["/api/status?lang=zh-CN"]


def test_a_start_that_stops_shows_the_log_and_the_likely_cause(capsys, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {n}\n" for n in range(40)) + "OSError: [Errno 28] No space left on device\n")
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not launcher.wait_ready(gone.pid, 1, "127.0.0.1", log, timeout=60)
    lines = [tuple(line.split("\t", 1)) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == ("error", "The app stopped while starting.")
    shown = texts(lines, "err")
    assert "line 39" in shown and "line 10" not in shown  # the last 25 lines
    assert lines[-1] == ("error", "Likely cause: The disk is full. Free some space (old videos are in outputs/) "
                                  "and start again.")


@pytest.mark.parametrize("log_line, english, chinese_text", [
    ("OSError: [Errno 28] No space left on device", "The disk is full", "磁盘已满"),
    ("torch.OutOfMemoryError: CUDA out of memory.", "The GPU ran out of memory", "显存不足"),
    ("ModuleNotFoundError: No module named 'gradio'", "A package is missing", "缺少依赖包"),
    ("OSError: [Errno 98] Address already in use", "The port was taken", "端口被占用"),
    ("[ERROR] Invalid setting model.dtype: 'f8'.", "[ERROR] Invalid setting model.dtype", "[ERROR] Invalid setting"),
    ("nothing to see", "See the whole log", "完整日志见"),
])
def test_the_likely_cause_of_a_failed_start_is_said_in_the_systems_language(tmp_path, monkeypatch, log_line,
                                                                             english, chinese_text):
    log = tmp_path / "app.log"
    log.write_text(f"Traceback (most recent call last):\n{log_line}\n")
    monkeypatch.setenv("LC_ALL", "")
    for locale, expected in (("C.UTF-8", english), ("zh_CN.UTF-8", chinese_text)):
        monkeypatch.setenv("LANG", locale)
        assert expected in launcher.likely_cause(log)


def test_the_login_lines(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("I2V_PATHS_STATE_DIR", str(tmp_path))
    network = load_config(overrides={"server.host": "0.0.0.0"})
    launcher.say_login(network, no_login=False)
    assert "The app asks for a login, but" in capsys.readouterr().out
    (tmp_path / "credentials.txt").write_text("admin:s3cret:with-colon\n")
    launcher.say_login(network, no_login=False)
    out = capsys.readouterr().out
    assert "out\t🔑 Login: user admin, password s3cret:with-colon" in out and "Authorization: Bearer" in out
    launcher.say_login(load_config(overrides={"server.host": "0.0.0.0", "server.password": "x"}), no_login=False)
    assert "with the password set in server.password" in capsys.readouterr().out
    launcher.say_login(load_config(overrides={"server.host": "0.0.0.0", "server.login": "off"}), no_login=True)
    assert "warn\tNo login on 0.0.0.0" in capsys.readouterr().out
    launcher.say_login(load_config(overrides={"server.host": "127.0.0.1"}), no_login=False)
    assert capsys.readouterr().out == ""


def test_the_demo_banner_in_both_languages(capsys, monkeypatch):
    monkeypatch.setenv("LC_ALL", "C")
    code, lines, _ = run(capsys, "banner")
    assert code == 0 and lines[1] == ("highlight", "=" * 66)
    assert ("highlight", " DEMO MODE: no CUDA GPU here, so the built-in demo model is served.") in lines
    assert ("say", "   bash start_app.sh --model ali-vilab/i2vgen-xl") in lines
    monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")
    _, lines, _ = run(capsys, "banner")
    assert ("highlight", " 演示模式：本机没有 CUDA 显卡，因此运行内置的演示模型。") in lines


def test_each_start_gets_a_new_log_the_latest_link_and_the_newest_20_are_kept(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for day in range(1, 31):
        log = logs / f"app_202611{day:02d}_120000.log"
        log.write_text("x")
        os.utime(log, (day * 1000, day * 1000))
    new = launcher.new_log_file(logs)
    assert re.fullmatch(r"app_\d{8}_\d{6}\.log", new.name) and new.read_text() == ""
    assert (logs / "latest.log").resolve() == new.resolve()
    kept = sorted(p.name for p in logs.glob("app_*.log"))
    assert len(kept) == 20 and new.name in kept and kept[0] == "app_20261112_120000.log"


def test_prepare_makes_the_folders_and_empties_the_upload_scratch(capsys, tmp_path, monkeypatch, run_dir):
    monkeypatch.setenv("I2V_PATHS_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("I2V_PATHS_LOG_DIR", str(tmp_path / "logs"))
    scratch = tmp_path / "scratch"
    (scratch / "old").mkdir(parents=True)
    (scratch / "old" / "upload.png").write_bytes(b"x")
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "prepare", "--scratch", str(scratch))
    assert code == 0 and (tmp_path / "out").is_dir() and list(scratch.iterdir()) == []
    assert Path(values["LOG_FILE"]).parent == tmp_path / "logs" and Path(values["LOG_FILE"]).is_file()
    assert "Folders ready" in texts(lines, "success") and "Log file" in texts(lines, "success")


def test_the_help_in_both_languages_needs_no_app_packages(monkeypatch):
    code = "import image_to_video.launcher as l, sys; sys.exit(l.main(['usage']))"
    for lang, said in (("C.UTF-8", "show this help"), ("zh_CN.UTF-8", "显示本帮助")):
        result = subprocess.run([sys.executable, "-S", "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True,
                                env={"PATH": os.environ["PATH"], "LANG": lang})
        assert result.returncode == 0, result.stderr
        assert said in result.stdout and "--port N" in result.stdout and "CONDA_ENV" in result.stdout


# -- issue 12: what is running, and the values given --------------------------------------

def test_already_running_says_the_running_instances_address_and_login(capsys, run_dir, fake_app, libraries,
                                                                       tmp_path, monkeypatch):
    # Asked again with other flags, it used to print the new flags' address and login, not the running app's.
    monkeypatch.setattr(launcher, "network_addresses", lambda ipv6=False: ["192.168.1.20"])
    monkeypatch.setenv("I2V_PATHS_STATE_DIR", str(tmp_path))
    (tmp_path / "credentials.txt").write_text("admin:pw-of-the-running-app\n")
    fake_app(47040, host="0.0.0.0")
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", "47040", "--host", "127.0.0.1")
    out = texts(lines, "out")
    assert code == 0 and "RUNNING" in values
    assert "📍 Network address: http://192.168.1.20:47040" in out and "0.0.0.0" not in out
    assert "🔑 Login: user admin, password pw-of-the-running-app" in out
    assert "bash start_app.sh restart --port 47040 --host 127.0.0.1" in texts(lines, "info")

    fake_app(47041, host="127.0.0.1")
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", "47041", "--host", "0.0.0.0")
    assert code == 0 and "📍 Local address: http://127.0.0.1:47041" in texts(lines, "out")
    assert "Network address" not in texts(lines, "out")  # the running app listens on this machine only
    assert "Login" not in texts(lines, "out", "warn")  # it asks for none: it listens on this machine only


def test_logs_with_a_port_shows_that_instances_log_or_says_none_runs_there(capsys, run_dir, fake_app, tmp_path,
                                                                           monkeypatch):
    # It used to fall back to the newest log, another instance's, when none ran on --port.
    monkeypatch.setenv("I2V_PATHS_LOG_DIR", str(tmp_path / "logs"))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app_1.log").write_text("x")
    (tmp_path / "logs" / "latest.log").symlink_to("app_1.log")
    fake_app(47050)
    code, _, values = run(capsys, "--run-dir", str(run_dir), "log-file", "--port", "47050")
    assert code == 0 and values["LOG_FILE"].endswith("app_47050.log")
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "--for", "logs", "log-file", "--port", "47051")
    assert code == 1 and "LOG_FILE" not in values
    assert "Image-to-Video is not running on port 47051." in texts(lines, "error")
    assert "bash start_app.sh logs" in texts(lines, "error")


@pytest.mark.parametrize("host", ["999.1.1.1", "a b", "", "no-such-host.invalid", "1.2.3"])
def test_a_host_that_is_no_address_of_this_machine_is_refused_before_start(capsys, run_dir, free_port, libraries,
                                                                            host):
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", str(free_port),
                              "--host", host)
    assert code == 2 and "DEMO" not in values
    said = texts(lines, "error")
    assert f"--host {host!r}" in said and "0.0.0.0" in said and "127.0.0.1" in said


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost", "::1", "::"])
def test_a_host_of_this_machine_is_taken(capsys, run_dir, free_port, libraries, host):
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", str(free_port),
                              "--host", host)
    assert code == 0 and values["HOST"] == host and values["DEMO"] == "1", lines


@pytest.mark.parametrize("source", ["/nonexistent/i2vgen", "./no-such-folder", "../no-such-folder", "~/no-such-model"])
def test_a_model_folder_that_does_not_exist_is_refused_before_start(capsys, run_dir, free_port, libraries, source):
    # It used to start, exit 0, and serve an error page.
    code, lines, values = run(capsys, "--run-dir", str(run_dir), "preflight", "--port", str(free_port),
                              "--model", source)
    assert code == 1 and "DEMO" not in values
    said = texts(lines, "error")
    assert f"The model folder {source!r} does not exist" in said and "ali-vilab/i2vgen-xl" in said


def test_a_model_that_fails_to_load_is_a_failed_start(capsys, status_server, tmp_path, monkeypatch):
    # It used to warn, return success, and start_app.sh said the app had started (exit 0).
    monkeypatch.setattr(launcher.time, "sleep", lambda seconds: None)
    (tmp_path / "app.log").write_text("[ERROR] Loading the model failed\n")
    status_server.answers += [model("loading", "Loading..."), model("error", "Loading the model from /m failed: x")]
    port = status_server.server_address[1]
    assert not launcher.wait_ready(os.getpid(), port, "127.0.0.1", tmp_path / "app.log", timeout=60)
    lines = [tuple(line.split("\t", 1)) for line in capsys.readouterr().out.splitlines()]
    assert ("error", "The model could not be loaded: Loading the model from /m failed: x") in lines
    assert "Likely cause" in texts(lines, "error") and "start again" in texts(lines, "error")


@pytest.mark.parametrize("head, address", [
    ("10.0.0.5", "10.0.0.5:6379"), ("head.lan:7000", "head.lan:7000"), ("[::1]:6379", "[::1]:6379"),
    ("[fd00::5]", "[fd00::5]:6379"), ("fd00::5", "[fd00::5]:6379")])
def test_the_head_s_address_is_read_as_host_host_port_or_ipv6_in_brackets(head, address):
    assert launcher.head_address(head) == address


@pytest.mark.parametrize("head", ["[::1]:6379:6379", "[::1", "[::1]x", "[head]:6379", "a:b:c", "head:0", ":6379"])
def test_a_head_address_that_cannot_be_read_is_refused_saying_how_to_write_it(head):
    with pytest.raises(launcher.BadValue) as refused:
        launcher.head_address(head)
    assert f"not '{head}'" in str(refused.value) and "[::1]:6379" in str(refused.value)


# -- issue 24: where to open the page ------------------------------------------------------

@pytest.fixture
def lan(monkeypatch):
    """This machine's network addresses, as the launcher would find them: one IPv4, one IPv6."""
    monkeypatch.setattr(launcher, "network_addresses",
                        lambda ipv6=False: ["192.168.1.20", "fd00::5"] if ipv6 else ["192.168.1.20"])


def out_lines(lines) -> list[str]:
    return [text for level, text in lines if level == "out"]


def test_the_addresses_are_ones_a_browser_opens_never_0_0_0_0(capsys, run_dir, tmp_path, monkeypatch, lan):
    # It used to print "Access address: http://0.0.0.0:7860", which nobody can open.
    monkeypatch.setenv("I2V_PATHS_STATE_DIR", str(tmp_path))
    (tmp_path / "credentials.txt").write_text("admin:pw\n")
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "addresses", "--login", "--host", "0.0.0.0",
                         "--port", "47050")
    assert code == 0
    assert out_lines(lines)[:3] == ["📍 Local address: http://127.0.0.1:47050",
                                    "📍 Network address: http://192.168.1.20:47050",
                                    "🔑 Login: user admin, password pw"]  # the login line kept
    assert "0.0.0.0" not in "\n".join(out_lines(lines))
    # Every address, IPv6 ones in brackets, when it listens on IPv6 too.
    _, lines, _ = run(capsys, "--run-dir", str(run_dir), "addresses", "--host", "::", "--port", "47050")
    assert out_lines(lines) == ["📍 Local address: http://localhost:47050",
                                "📍 Network address: http://192.168.1.20:47050",
                                "📍 Network address: http://[fd00::5]:47050"]


@pytest.mark.parametrize("host, said", [
    ("127.0.0.1", ["📍 Local address: http://127.0.0.1:47051"]),
    ("::1", ["📍 Local address: http://[::1]:47051"]),
    ("localhost", ["📍 Local address: http://localhost:47051"]),
    ("192.168.1.20", ["📍 Network address: http://192.168.1.20:47051"]),  # only that one listens
    ("fd00::5", ["📍 Network address: http://[fd00::5]:47051"]),
])
def test_one_address_is_said_as_it_is(capsys, lan, host, said):
    launcher.say_addresses(host, 47051)
    assert [line.split("\t", 1)[1] for line in capsys.readouterr().out.splitlines()] == said


def test_without_a_network_address_it_says_where_to_find_one(capsys, monkeypatch, chinese):
    monkeypatch.setattr(launcher, "network_addresses", lambda ipv6=False: [])
    launcher.say_addresses("0.0.0.0", 47052)
    out = capsys.readouterr().out
    assert "本地地址: http://127.0.0.1:47052" in out and "hostname -I" in out and "0.0.0.0" not in out


def test_the_network_addresses_are_found_without_the_internet(monkeypatch):
    # The route to a private address (UDP: nothing is sent), then the host name's addresses; never the
    # loopback or link-local ones (/etc/hosts often maps the host name to 127.0.1.1).
    monkeypatch.setattr(launcher, "ROUTE_PROBES", ())
    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    names = ["127.0.1.1", "10.1.2.3", "fe80::1", "::1", "2001:db8::7", "10.1.2.3"]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: [
        (socket.AF_INET6 if ":" in name else socket.AF_INET, socket.SOCK_STREAM, 6, "", (name, 0))
        for name in names] if host == "box" else [])
    assert launcher.network_addresses() == ["10.1.2.3"]
    assert launcher.network_addresses(ipv6=True) == ["10.1.2.3", "2001:db8::7"]

    def no_answer(*args, **kwargs):
        raise socket.gaierror("no DNS")

    monkeypatch.setattr(socket, "getaddrinfo", no_answer)
    assert launcher.network_addresses(ipv6=True) == []


def test_a_host_name_that_takes_long_to_look_up_does_not_hold_the_start(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(launcher, "ROUTE_PROBES", ())
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: release.wait(30) and [])
    try:
        started = time.monotonic()
        assert launcher.network_addresses() == []
        assert time.monotonic() - started < launcher.LOOKUP_TIMEOUT + 1
    finally:
        release.set()


def test_the_real_network_addresses_are_usable_ones():
    for address in launcher.network_addresses(ipv6=True):
        ip = ipaddress.ip_address(address)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified), address


def test_status_and_the_list_of_instances_give_an_address_a_browser_opens(capsys, run_dir, fake_app):
    fake_app(47053, host="0.0.0.0")
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "status")
    assert code == 0 and "URL:     http://127.0.0.1:47053" in texts(lines, "out")
    fake_app(47054, host="::")
    code, lines, _ = run(capsys, "--run-dir", str(run_dir), "status")
    assert code == launcher.SEVERAL
    assert "port 47053: PID" in texts(lines, "err") and "http://127.0.0.1:47053" in texts(lines, "err")
    assert "http://localhost:47054" in texts(lines, "err") and "0.0.0.0" not in texts(lines, "err")
