"""The command line (cli.py): its commands and flags, the config they build, and its mistakes
refused with a message (`python main.py generate` itself is tested in test_batch.py)."""

import os
import subprocess
import sys

import pytest

from image_to_video.cli import parse_config
from image_to_video.config import PROJECT_DIR


def test_command_line_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("I2V_SERVER_HOST", "10.0.0.1")
    args, config = parse_config(["--host", "127.0.0.1", "--port", "7999", "--demo",
                                 "--output-dir", str(tmp_path / "v")])
    assert config.server.host == "127.0.0.1" and config.server.port == 7999
    assert config.model.demo and config.model_path.endswith("demo-i2vgen-xl-tiny")
    assert config.paths.output_dir == tmp_path / "v"


def test_start_up_stops_with_the_message(tmp_path):
    result = subprocess.run([sys.executable, "main.py", "--port", "70000"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "[ERROR] Invalid setting server.port: 70000. Allowed: 1 to 65535." in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_flags():
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--config", "--host", "--port", "--demo", "build-demo"):
        assert flag in result.stdout


def test_no_login_flag_turns_the_login_off():
    _, config = parse_config(["--no-login"])
    assert config.server.login == "off"


def test_without_a_command_the_app_is_served_and_each_command_has_its_own_options():
    args, config = parse_config(["--port", "7999", "--device", "cpu"])
    assert args.command == "serve" and config.server.port == 7999 and config.model.device == "cpu"
    args, config = parse_config(["generate", "--image", "photo.png", "--prompt", "waves", "--frames", "8",
                                 "--loop", "boomerang"])
    assert (args.command, args.image, args.prompt, args.num_frames, args.loop) == (
        "generate", "photo.png", "waves", "8", "boomerang")
    args, config = parse_config(["build-demo", "--force"])
    assert args.command == "build-demo" and args.force and config.model.demo  # always the demo model


@pytest.mark.parametrize("argv, said", [
    (["--colour", "blue"], "unrecognized arguments: --colour blue"),
    (["generate", "--prompt", "waves"], "one of the arguments --image --batch --continue-from is required"),
    (["--port", "seventy"], "argument --port: invalid int value: 'seventy'"),
])
def test_a_mistake_on_the_command_line_exits_2_saying_what_is_wrong(capsys, argv, said):
    with pytest.raises(SystemExit) as stopped:
        parse_config(argv)
    assert stopped.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize("command", [["--demo", "--port", "7861"],
                                     ["generate", "--demo", "--image", "photo.png", "--prompt", "waves"]])
def test_a_folder_another_process_holds_is_said_before_the_model_code_loads(tmp_path, command):
    """A second server (or generate) on the same data folder is told at once: the folder is claimed before
    torch (seconds of imports) is loaded."""
    from image_to_video.processes import FolderLock

    held = FolderLock(tmp_path / "data")
    assert held.acquire(command="serve", port=7860, url="http://localhost:7860/") is None
    try:
        script = ("import sys; from image_to_video import cli; "
                  f"code = cli.main({command!r}); print(code, 'torch' in sys.modules)")
        env = {**os.environ, "I2V_PATHS_STATE_DIR": str(tmp_path / "data"), "I2V_PATHS_OUTPUT_DIR": str(tmp_path)}
        result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True,
                                env=env, timeout=120)
    finally:
        held.release()
    assert result.stdout.split() == ["1", "False"], result.stdout + result.stderr
    assert f"PID {os.getpid()}" in result.stderr and "bash start_app.sh stop" in result.stderr
