"""The page's texts and tables as a user reads them, rendered without a server or a model."""

import time

import pytest

from image_to_video.config import load_config
from image_to_video.job_store import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job
from image_to_video.model_status import ModelState, ModelStatus
from image_to_video.progress import Progress
from image_to_video.ui import views

READY_ON_CPU = ModelStatus(state=ModelState.READY, is_demo=False, key="status_ready", params={"seconds": 3},
                           device_key="device_cpu")


def job(job_id="a1", state=DONE, prompt="the waves roll in slowly", created=None, **extra):
    params = {"prompt": prompt, "resolution": "512p", "num_frames": 16, "seed": 42}
    return Job(id=job_id, owner="me", state=state, params=params, image_path="in.png",
               created=created or time.mktime((2025, 3, 4, 5, 6, 7, 0, 0, -1)), **extra)


def record(name="video_20250304_050607_0a1b2c3d", prompt="clouds drift", demo=True, created="2025-03-04T05:06:07"):
    return {"video": f"{name}.mp4", "created": created, "record_path": f"/out/{name}.json",
            "parameters": {"prompt": prompt, "negative_prompt": "", "resolution": "512p", "num_frames": 16,
                           "fps": 8, "num_inference_steps": 50, "guidance_scale": 9.0, "seed": 1234},
            "timings_s": {"total": 75.2}, "video_info": {"width": 512, "height": 512, "frames": 16, "fps": 8.0,
                                                          "duration_s": 2.0},
            "model": {"demo": demo}}


def test_the_status_line_says_ready_and_names_the_device():
    text = views.status_text(READY_ON_CPU, "en")
    assert "Model ready" in text
    assert "Device: CPU, float32" in text
    assert "demo model" not in text


def test_the_status_line_tells_the_demo_model_apart_and_speaks_chinese():
    demo = ModelStatus(state=ModelState.READY, is_demo=True, device_key="device_cpu")
    assert "demo model" in views.status_text(demo, "en")
    chinese = views.status_text(demo, "zh-CN")
    assert "模型已就绪" in chinese and "设备：CPU" in chinese and "演示模型" in chinese


def test_a_loading_model_says_what_it_is_doing():
    loading = ModelStatus(state=ModelState.LOADING, key="status_loading",
                          params={"folder": "models/i2vgen-xl", "device": "cuda"})
    text = views.status_text(loading, "en")
    assert "Model loading" in text and "Loading the model from models/i2vgen-xl onto cuda" in text
    assert "Device" not in text  # no device line before there is a device


def test_the_estimate_on_a_gpu_that_is_big_enough():
    settings = load_config().generation
    text = views.estimate_text(settings, "en", "512p", 16, 50, gpu_gb=24.0, gpu_name=None, demo=False)
    assert "GB** of GPU memory" in text and "(your GPU has 24 GB)" in text
    assert "RTX 4090" in text
    assert "not fit" not in text


def test_the_estimate_in_chinese_warns_when_it_will_not_fit_and_names_a_smaller_setting():
    settings = load_config().generation
    text = views.estimate_text(settings, "zh-CN", "1024p", 32, 50, gpu_gb=16.0, gpu_name=None, demo=False)
    assert text.startswith("**预估**")
    assert "（您的显卡有 16 GB）" in text
    assert "很可能超出显存" in text and "能放下的最接近设置" in text


def test_the_demo_estimate_is_about_this_machine_and_an_unknown_resolution_has_none():
    settings = load_config().generation
    assert "here with the demo model" in views.estimate_text(settings, "en", "512p", 16, 50, gpu_gb=None,
                                                             gpu_name=None, demo=True)
    assert views.estimate_text(settings, "en", "4k", 16, 50, gpu_gb=None, gpu_name=None, demo=True) == ""


def test_a_queued_job_says_its_place_in_the_queue():
    table = views.job_table([job("q7", QUEUED)], {"q7": 3}.get, "en")
    assert table["headers"] == ["Created", "Prompt", "Resolution", "Frames", "Seed", "State", "Job"]
    assert table["data"] == [["2025-03-04 05:06:07", "the waves roll in slowly", "512p", 16, 42,
                              "queued (number 3)", "q7"]]
    assert views.job_table([job("q7", QUEUED)], {"q7": 3}.get, "zh-CN")["data"][0][5] == "排队中（第 3 位）"


def test_a_running_job_says_its_stage_and_step_and_finished_jobs_their_state():
    rows = views.job_table([job("r", RUNNING, stage="denoising", done=12, total=50), job("d", DONE),
                            job("f", FAILED), job("c", CANCELLED)], {}.get, "en")["data"]
    assert [row[5] for row in rows] == ["Denoising 12/50", "done", "failed", "cancelled"]


def test_the_gallery_describes_the_delivered_video_not_the_request():
    # A 512p, 16-frame request looped, interpolated and upscaled: the gallery names the video delivered.
    made = record()
    made["video_info"] = {"width": 1024, "height": 1024, "frames": 120, "fps": 24.0, "duration_s": 5.0}
    assert views.gallery_caption(made, "en") == "1024×1024 · 120 frames · 24 fps · seed 1234"
    assert views.gallery_caption(made, "zh-CN") == "1024×1024 · 120 帧 · 24 fps · 种子 1234"
    assert views.gallery_caption({"video": "video_x.mp4", "record_missing": True}, "en") == "(record missing)"


def test_the_result_names_16_frames_at_8_fps_the_seed_and_both_files():
    text = views.result_text(record(demo=False), "en")
    assert text.startswith("**Done** in 1 min 15 s: 512x512, 16 frames at 8 fps (2.0 s), seed **1234**.")
    assert "`video_20250304_050607_0a1b2c3d.mp4`" in text and "`video_20250304_050607_0a1b2c3d.json`" in text
    assert "demo model" not in text


def test_a_demo_result_says_so_in_chinese():
    text = views.result_text(record(demo=True), "zh-CN")
    assert "**完成**，用时 1 分 15 秒" in text and "16 帧，8 fps" in text and "演示模型" in text


@pytest.mark.parametrize(("report", "lang", "expected"), [
    (Progress("denoising", 12, 50, 3.0, 95.0), "en", "Denoising 12/50 · about 1 min 35 s left"),
    (Progress("decoding", 2, 16, 30.0, None), "en", "Decoding 2/16"),
    (Progress("denoising", 3, 30, 1.0, 8.4), "zh-CN", "去噪 3/30 · 约剩 8 秒"),
])
def test_the_progress_bar_says_the_stage_the_step_and_the_time_left(report, lang, expected):
    assert views.progress_text(report, lang) == expected


def test_state_labels_and_a_failed_jobs_message():
    assert views.state_label(RUNNING, "en") == "running"
    assert views.state_label("interrupted", "zh-CN") == "已中断"
    assert views.waiting_text(2, "en") == "Waiting in the queue: number 2"
    failed = job("f", FAILED, message="Out of GPU memory.")
    assert views.job_message(failed, None, "en") == "**failed**: Out of GPU memory."
    assert views.job_message(job("c", CANCELLED), None, "zh-CN") == "**已取消**"
    assert views.job_message(job("q", QUEUED), 4, "en") == "**queued (number 4)**"


def test_the_manual_follows_the_language():
    assert views.manual_name("zh") == "MANUAL.zh-CN.md"
    assert views.manual_name("en") == "MANUAL.md"


def test_the_crop_note_says_the_size_and_what_is_cut():
    # A 1200x600 picture (2:1) made 16:9 at 832x480: scaled to 960x480, 128 of its 960 columns cut (13%)
    note = views.crop_text((1200, 600), (832, 480), "16:9", "en")
    assert "832x480" in note and "16:9" in note and "13% of the picture's width" in note
    assert "height" in views.crop_text((600, 1200), (832, 480), "16:9", "en")
    assert "whole picture" in views.crop_text((1664, 960), (832, 480), "16:9", "en")
    assert "832x480" in views.crop_text((1200, 600), (832, 480), "16:9", "zh-CN")
    assert views.crop_text(None, (832, 480), "16:9", "en") == ""


def test_a_model_that_reads_chinese_says_so_instead_of_translating():
    note = views.prompt_note("海浪缓缓涌来", None, "en", reads_it="Wan2.2-TI2V-5B")
    assert "Wan2.2-TI2V-5B" in note and "no translation" in note
    assert views.prompt_note("the waves roll in", None, "en", reads_it="Wan2.2-TI2V-5B") == ""


def test_a_model_without_traced_memory_gets_no_invented_estimate():
    settings = load_config().generation
    text = views.estimate_text(settings, "en", "512p", 16, 50, gpu_gb=24, gpu_name="RTX 4090", demo=False,
                               untraced="Wan2.2-TI2V-5B")
    assert "No memory or time estimate for Wan2.2-TI2V-5B" in text and "GB" not in text


def test_wans_estimate_gives_its_traced_peak_and_the_mode_this_gpu_takes():
    settings = load_config().generation
    needs = {"gpu": 33.1, "model_offload": 15.3, "group_offload": 14.1, "sequential_offload": 10.7}
    text = views.estimate_text(settings, "en", "512p", 16, 50, gpu_gb=24, gpu_name=None, demo=False,
                               untraced="Wan2.2-TI2V-5B", needs=needs)
    assert "about 33.1 GB" in text and "10.7 GB" in text and "model offload" in text
    small = views.estimate_text(settings, "en", "512p", 16, 50, gpu_gb=8, gpu_name=None, demo=False,
                                untraced="Wan2.2-TI2V-5B", needs=needs)
    assert "does not fit this 8 GB GPU" in small
    assert "全部放在显卡上" in views.estimate_text(settings, "zh-CN", "512p", 16, 50, gpu_gb=80, gpu_name=None,
                                                  demo=False, untraced="Wan2.2-TI2V-5B", needs=needs)


def test_the_model_note_says_how_the_picked_model_stands_and_what_it_needs():
    entry = {"title": "Wan2.2-TI2V-5B", "state": "not_downloaded", "workers": [], "message": None, "demo": False,
             "download_gb": 34, "resolution": "720p", "num_frames": 121, "licence": "Apache-2.0",
             "memory_gb": {"gpu": 45.5, "model_offload": 25.6, "sequential_offload": 23.1}}
    english = views.model_note(entry, "en", gpu_gb=24)
    assert "not downloaded: 34 GB" in english and "45.5 GB" in english and "23.1 GB" in english
    assert "does not fit this 24 GB GPU in any mode" in english  # 23.1 GB is over 92% of 24 GB
    assert "On this 80 GB GPU: everything on the GPU (fastest)" in views.model_note(entry, "en", gpu_gb=80)
    assert "尚未下载" in views.model_note(entry, "zh-CN")
    ready = views.model_note({**entry, "state": "ready", "workers": ["cuda0", "cuda1"]}, "en")
    assert "ready on cuda0, cuda1" in ready
    failed = views.model_note({**entry, "state": "error", "message": "No space left on device"}, "en")
    assert "could not load: No space left on device" in failed
    assert views.model_note(None, "en") == ""


def test_a_wan_estimate_speaks_of_time_on_a_cpu_and_of_memory_with_the_loras_on_a_gpu(tmp_path):
    """Wan's estimate: on a CPU the time only (learned here once a job ran, else said to come), on a GPU its
    traced memory with the LoRAs' weights named, the memory mode that fits, and the time."""
    from image_to_video.estimates import LearnedTimes, plan_of
    from image_to_video.families.wan import TI2V_5B

    settings, needs = TI2V_5B.generation, {"gpu": 30.0, "model_offload": 20.0, "group_offload": 12.0,
                                         "sequential_offload": 8.0}
    plan = plan_of(832, 480, 33, 30, fps=24, guidance=5.0)
    learned = LearnedTimes(tmp_path / "learned.json")
    common = dict(gpu_name=None, demo=False, untraced="Wan2.2-TI2V-5B", needs=needs, plan=plan, learned=learned,
                  key="k")
    cpu = views.estimate_text(settings, "en", "480p", 33, 30, gpu_gb=None, **common)
    assert cpu == "No time estimate for Wan2.2-TI2V-5B here yet: the first video made on this machine teaches it."
    learned.learn("k", {"parameters": {"width": 832, "height": 480, "num_frames": 33, "num_inference_steps": 30,
                                       "guidance_scale": 5.0, "fps": 24},
                        "timings_s": {"denoise": 60.0, "decode": 5.0, "encode": 1.0, "total": 70.0}})
    cpu = views.estimate_text(settings, "en", "480p", 33, 30, gpu_gb=None, **common)
    assert cpu == "About 1 min 10 s per video here (learned from 1 job(s) on this machine)." and "GPU" not in cpu
    gpu = views.estimate_text(settings, "en", "480p", 33, 30, gpu_gb=24, lora_gb=1.2,
                              **{**common, "needs": {mode: gb + 1.2 for mode, gb in needs.items()}})
    assert "about 31.2 GB with everything on the GPU, 9.2 GB in its lowest-memory mode" in gpu
    assert "(the LoRAs' 1.2 GB included)" in gpu and "About 1 min 10 s per video here" in gpu
    zh = views.estimate_text(settings, "zh-CN", "480p", 33, 30, gpu_gb=24, **common)
    assert "显存峰值" in zh and "根据本机 1 个任务得出" in zh
