"""End to end: the real `python main.py --demo` on a free port, driven with gradio_client."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError as ClientError

from image_to_video.config import PROJECT_DIR
from image_to_video.examples import ensure_examples
from image_to_video.video import probe_video

from .app_process import AppProcess, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    port = free_port()
    app = AppProcess(root, port).start()
    try:
        yield {"url": app.url, "client": Client(app.url, verbose=False), "outputs": root / "outputs",
               "log": app.log_path}
    finally:
        app.stop()


def example_image() -> str:
    path, _ = ensure_examples(PROJECT_DIR / "static" / "examples")[0]
    return str(path)


def page_id(client: Client) -> str:
    """A page id as the server issues it to a new browser (what the page keeps in local storage)."""
    return client.predict("", api_name="/page_owner")


def generate(client: Client, image, prompt="the waves roll in slowly", **params):
    values = dict(negative_prompt="", resolution="512p", num_frames=16, fps=8, steps=50, guidance=9.0,
                  seed=0, random_seed=True, owner=page_id(client), lang="en")
    values.update(params)
    return client.submit(handle_file(image), prompt, *values.values(), api_name="/generate")


def page_defaults(url: str) -> dict[str, object]:
    """The value each setting shows when the page opens, by its label (the page's own description)."""
    config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
    return {c["props"]["label"]: c["props"]["value"] for c in config["components"]
            if c["type"] in ("slider", "radio") and c["props"].get("label")}


def test_default_settings_give_a_512p_16_frame_8_fps_h264_video_and_its_record(server):
    shown = page_defaults(server["url"])
    # The design's defaults, as the page shows them before anything is touched.
    assert (shown["Preset"], shown["Resolution"], shown["Frames"], shown["FPS"], shown["Steps"],
            shown["Guidance scale"]) == ("Standard", "512p", 16, 8, 50, 9.0)
    # A video at those settings; the steps change how long it takes, not the file (10 instead of 50
    # keeps this test to seconds: the demo default's full time is in bench/demo_speed.py).
    job = generate(server["client"], example_image(), resolution=shown["Resolution"], num_frames=shown["Frames"],
                   fps=shown["FPS"], steps=10, guidance=shown["Guidance scale"])
    video, info, files, jobs, preview = job.result(timeout=600)
    decoded = probe_video(Path(video))
    assert (decoded.width, decoded.height, decoded.frames, decoded.fps) == (512, 512, 16, 8.0)
    assert (decoded.codec, decoded.pixel_format) == ("h264", "yuv420p")
    assert "seed" in info and "demo model" in info

    saved = list(server["outputs"].glob("video_*.mp4"))
    assert len(saved) == 1 and probe_video(saved[0]).frames == 16
    record = json.loads(saved[0].with_suffix(".json").read_text())
    assert record["parameters"]["num_frames"] == 16 and record["parameters"]["num_inference_steps"] == 10
    assert record["model"]["demo"] is True
    assert str(record["parameters"]["seed"]) in info
    assert Path(files[1]).name == saved[0].with_suffix(".json").name
    assert jobs["data"][0][1] == "the waves roll in slowly" and jobs["data"][0][5] == "done"


def test_a_text_file_named_png_gets_a_clear_message(server, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("this is not a picture")
    with pytest.raises(ClientError, match="not an image we can read"):
        generate(server["client"], str(fake)).result(timeout=60)


def test_limits_hold_for_api_callers_too(server):
    with pytest.raises(ClientError, match="Frames 99 is out of range. Allowed: 8 to 32"):
        generate(server["client"], example_image(), num_frames=99).result(timeout=60)
    with pytest.raises(ClientError, match="Please write a prompt"):
        generate(server["client"], example_image(), prompt="  ").result(timeout=60)


def test_cancel_stops_a_running_job(server):
    client = server["client"]
    before = set(server["outputs"].glob("*.mp4"))
    owner = page_id(client)
    job = generate(client, example_image(), steps=100, num_frames=32, owner=owner)
    deadline = time.monotonic() + 120
    while "Denoising" not in str(job.status().progress_data) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Cancelled" in client.predict(owner, "en", api_name="/cancel")
    video, info, files, jobs, preview = job.result(timeout=120)
    assert video is None and "Cancelled" in info
    assert jobs["data"][0][5] == "cancelled"
    assert set(server["outputs"].glob("*.mp4")) == before


def test_queue_bypass_and_monitoring_routes_are_closed(server):
    request = urllib.request.Request(server["url"] + "gradio_api/run/generate", method="POST",
                                     data=b'{"data": []}', headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server["url"] + "monitoring/summary", timeout=10)
    assert error.value.code in (403, 404)


def test_page_says_it_is_the_demo_model(server):
    config = json.loads(urllib.request.urlopen(server["url"] + "config", timeout=10).read())
    texts = json.dumps(config)
    assert "Demo mode: this is not the real model" in texts
    assert "start_app.sh" in texts
    log = server["log"].read_text()
    assert "Demo mode" in log and "Traceback" not in log


def test_status_endpoint_reports_the_model(server):
    status = json.loads(urllib.request.urlopen(server["url"] + "api/status", timeout=10).read())
    assert status["model"]["state"] == "ready" and status["model"]["demo"] is True
    assert "CPU" in status["model"]["device"] and status["busy"] is False
    assert status["model"]["memory_mode"] == "cpu"
    chinese = json.loads(urllib.request.urlopen(server["url"] + "api/status?lang=zh-CN", timeout=10).read())
    assert "就绪" in chinese["model"]["message"] and chinese["model"]["device"].startswith("CPU，")


def test_messages_follow_the_language(server, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("this is not a picture")
    with pytest.raises(ClientError, match="无法识别这个文件为图片"):
        generate(server["client"], str(fake), lang="zh-CN").result(timeout=60)
    with pytest.raises(ClientError, match="帧数 99 超出范围。允许范围：8 到 32"):
        generate(server["client"], example_image(), num_frames=99, lang="zh-CN").result(timeout=60)
    assert "没有可取消的任务" in server["client"].predict(page_id(server["client"]), "zh-CN", api_name="/cancel")

