"""`python main.py generate`: single and batch jobs through the same job path, in a subprocess."""

import json
import subprocess
import sys

from PIL import Image

from image_to_video.config import PROJECT_DIR
from image_to_video.video import probe_video

from .app_process import app_environment


def run(tmp_path, *args, timeout=300):
    env = app_environment(I2V_PATHS_OUTPUT_DIR=str(tmp_path / "outputs"), I2V_PATHS_STATE_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "main.py", "generate", "--demo", *args], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_one_video_from_the_command_line(tmp_path):
    image = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), (200, 80, 20)).save(image)
    result = run(tmp_path, "--image", str(image), "--prompt", "the waves roll in slowly", "--resolution", "256p",
                 "--frames", "8", "--steps", "10", "--seed", "5")
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip()
    info = probe_video(path)
    record = json.loads(open(path.replace(".mp4", ".json")).read())
    assert (info.frames, info.width, info.height, info.fps) == (8, record["width"], record["height"], 8.0)
    assert info.width > info.height and record["parameters"]["seed"] == 5  # the 300x200 picture stays landscape
    assert "1 video(s) made, 0 failed." in result.stderr


def test_a_batch_reports_each_job_and_skips_bad_ones(tmp_path):
    Image.new("RGB", (300, 200), (20, 80, 200)).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_text("not a picture")
    lines = [
        {"image": "a.png", "prompt": "waves", "resolution": "256p", "num_frames": 8, "num_inference_steps": 10},
        {"image": "broken.png", "prompt": "waves"},
        {"image": "a.png", "prompt": "clouds drift", "resolution": "256p", "num_frames": 8,
         "num_inference_steps": 10, "fps": 4},
        {"image": "a.png", "prompt": "海浪缓缓涌来", "model": "wan2.2-ti2v-5b", "resolution": "480p", "num_frames": 5,
         "num_inference_steps": 2},  # another model of the server's, switched to between jobs
    ]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("# my jobs\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    result = run(tmp_path, "--batch", str(batch))
    assert result.returncode == 1  # one job was refused
    assert "[2/4] broken.png: refused: This file is not an image we can read" in result.stderr
    videos = result.stdout.split()
    assert len(videos) == 3 and probe_video(videos[1]).fps == 4.0
    wan = json.loads(open(videos[2].replace(".mp4", ".json")).read())
    assert (wan["model"]["name"], wan["family"], wan["model_read"]["prompt"]) == ("wan2.2-ti2v-5b", "wan", "海浪缓缓涌来")
    assert (probe_video(videos[2]).frames, probe_video(videos[2]).fps) == (5, 24.0)  # Wan's own frame rate
    assert "3 video(s) made, 1 failed." in result.stderr


def test_bad_batch_files_are_explained(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "prompt": "x", "frames": 8}\n')
    result = run(tmp_path, "--batch", str(bad))
    assert result.returncode == 2 and "unknown key 'frames'" in result.stderr and "num_frames" in result.stderr
    bad.write_text("{not json\n")
    assert "line 1: not valid JSON" in run(tmp_path, "--batch", str(bad)).stderr
    assert "Cannot read the batch file" in run(tmp_path, "--batch", str(tmp_path / "none.jsonl")).stderr


def test_prompt_is_required_with_an_image(tmp_path):
    result = run(tmp_path, "--image", "x.png")
    assert result.returncode == 2 and "--prompt is needed" in result.stderr


def test_a_bad_batch_file_is_refused_before_the_model_code_loads(tmp_path):
    """The jobs are read first: a bad file is said before torch (seconds of imports) is loaded."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "prompt": "x", "frames": 8}\n')
    script = ("import sys; from image_to_video import cli; code = cli.main(['generate', '--demo', '--batch', "
              f"{str(bad)!r}]); print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True,
                            env=app_environment(I2V_PATHS_STATE_DIR=str(tmp_path / "data")), timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
    assert "unknown key 'frames'" in result.stderr
