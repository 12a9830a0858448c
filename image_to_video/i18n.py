"""The page's words in English and Simplified Chinese, and the user-facing messages.

``t(key, lang, **params)`` renders one text. ``AppError`` subclasses raised with a
``key`` render in the user's language through ``localized(error, lang)``; an error
without a key (or a text missing in a language) falls back to English.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = {"en": "English", "zh-CN": "简体中文"}
DEFAULT = "en"

TEXT: dict[str, dict[str, str]] = {
    # -- page ------------------------------------------------------------------
    "subtitle": {"en": "Turn one picture and a sentence into a short video (I2VGen-XL).",
                 "zh-CN": "一张图片加一句话，生成一段短视频（I2VGen-XL）。"},
    "language": {"en": "Language", "zh-CN": "语言"},
    "image": {"en": "Image", "zh-CN": "图片"},
    "image_help": {"en": "The first frame of your video. Any photo works; it is centre-cropped to a square.",
                   "zh-CN": "视频的第一帧。任何照片都可以；会居中裁剪成正方形。"},
    "prompt": {"en": "Prompt", "zh-CN": "提示词"},
    "prompt_help": {"en": "Describe the motion in English, e.g. 'the waves roll in slowly'. Name what moves "
                          "and how; the picture already shows what things look like.",
                    "zh-CN": "用英文描述动作，例如 'the waves roll in slowly'（海浪缓缓涌来）。写清楚什么在动、"
                             "怎么动；外观由图片决定。"},
    "negative": {"en": "Negative prompt", "zh-CN": "反向提示词"},
    "negative_help": {"en": "What to avoid, e.g. 'blurry, distorted, flickering'. Leave empty if unsure.",
                      "zh-CN": "想避免的内容，例如 'blurry, distorted, flickering'（模糊、变形、闪烁）。不确定就留空。"},
    "preset": {"en": "Preset", "zh-CN": "预设"},
    "preset_help": {"en": "One click sets resolution, frames, FPS, steps and guidance.",
                    "zh-CN": "一键设置分辨率、帧数、帧率、步数和引导系数。"},
    "generate": {"en": "Generate", "zh-CN": "生成视频"},
    "cancel": {"en": "Cancel", "zh-CN": "取消"},
    "settings": {"en": "Settings", "zh-CN": "参数设置"},
    "resolution": {"en": "Resolution", "zh-CN": "分辨率"},
    "resolution_help": {"en": "Output size. Higher is sharper but slower and needs more GPU memory: 768p takes "
                              "about twice the time and memory of 512p, 1024p about four times.",
                        "zh-CN": "输出尺寸。越高越清晰，但更慢、更占显存：768p 的时间和显存约为 512p 的两倍，1024p 约为四倍。"},
    "frames": {"en": "Frames", "zh-CN": "帧数"},
    "frames_help": {"en": "Number of frames. More frames make a longer video; time and memory grow in proportion.",
                    "zh-CN": "视频帧数。帧数越多视频越长，时间和显存按比例增加。"},
    "fps": {"en": "FPS", "zh-CN": "帧率 (FPS)"},
    "fps_help": {"en": "Playback speed, and how fast the model makes things move. 8 is smooth and calm; "
                       "higher is shorter and faster. Costs nothing extra.",
                 "zh-CN": "播放速度，也影响模型生成的运动快慢。8 平稳柔和；越高视频越短、动作越快。不增加耗时。"},
    "steps": {"en": "Steps", "zh-CN": "推理步数"},
    "steps_help": {"en": "Denoising steps. More steps give finer detail; time grows in proportion "
                         "(30 is a quick draft, 50 the standard, 80+ for the final cut).",
                   "zh-CN": "去噪步数。步数越多细节越好，时间按比例增加（30 适合快速预览，50 为标准，80 以上用于成片）。"},
    "guidance": {"en": "Guidance scale", "zh-CN": "引导系数"},
    "guidance_help": {"en": "How closely to follow the prompt. 7-12 works best; too high looks harsh, "
                            "too low ignores the prompt. Costs nothing extra.",
                      "zh-CN": "遵循提示词的程度。7-12 效果最好；过高画面生硬，过低会忽略提示词。不增加耗时。"},
    "random_seed": {"en": "Random seed", "zh-CN": "随机种子"},
    "seed": {"en": "Seed", "zh-CN": "种子"},
    "seed_help": {"en": "The same seed with the same inputs gives the same video. Tick 'Random seed' for a new "
                        "variation each time; the seed used is shown with the result.",
                  "zh-CN": "相同的种子和输入会得到相同的视频。勾选“随机种子”则每次都不同；结果中会显示实际使用的种子。"},
    "examples": {"en": "Examples: click one to try it", "zh-CN": "示例：点击即可试用"},
    "video": {"en": "Video", "zh-CN": "视频"},
    "preview": {"en": "Live preview (rough colours; cancel early if it goes wrong)",
                "zh-CN": "实时预览（颜色为近似；效果不对可以提前取消）"},
    "video_placeholder": {"en": "Your video will appear here.", "zh-CN": "生成的视频会显示在这里。"},
    "downloads": {"en": "Download the video and its settings (.json)", "zh-CN": "下载视频及其参数 (.json)"},
    "reuse_seed": {"en": "Reuse this seed", "zh-CN": "沿用这个种子"},
    "your_jobs": {"en": "Your jobs", "zh-CN": "我的任务"},
    "your_jobs_help": {"en": "This browser's jobs, newest first: click one to open it",
                       "zh-CN": "本浏览器提交的任务（最新在前）：点击打开"},
    "all_videos": {"en": "All videos", "zh-CN": "全部视频"},
    "all_videos_help": {"en": "Every video in the output folder, newest first: click one to open it",
                        "zh-CN": "输出文件夹中的全部视频（最新在前）：点击打开"},
    "retry": {"en": "Retry this job", "zh-CN": "重试这个任务"},
    "help": {"en": "Help: user manual and prompt tips", "zh-CN": "帮助：使用手册与提示词技巧"},
    "estimate": {"en": "**Estimate** for these settings: about **{peak} GB** of GPU memory at its peak{gpu}, "
                         "about **{time}** per video{where}.",
                 "zh-CN": "**预估**：这组参数峰值约需 **{peak} GB** 显存{gpu}，每个视频约 **{time}**{where}。"},
    "estimate_gpu": {"en": " (your GPU has {gpu} GB)", "zh-CN": "（您的显卡有 {gpu} GB）"},
    "estimate_where_demo": {"en": " here with the demo model", "zh-CN": "（此处为演示模型）"},
    "estimate_where_gpu": {"en": " on an RTX 4090-class GPU", "zh-CN": "（以 RTX 4090 级显卡计）"},
    "estimate_where_measured": {"en": " (measured on this GPU model, {gpu})", "zh-CN": "（在同型号显卡 {gpu} 上实测）"},
    "estimate_note_measured": {"en": "Peak memory measured with this app on {gpu} (docs/PERFORMANCE.md).",
                               "zh-CN": "峰值显存为本应用在 {gpu} 上的实测值（见 docs/PERFORMANCE.md）。"},
    "estimate_note": {"en": "Peak memory computed from the model's shapes, with everything on the GPU "
                            "(docs/PERFORMANCE.md); not yet measured on a GPU.",
                      "zh-CN": "峰值显存由模型结构推算（全部放在显卡上，见 docs/PERFORMANCE.md），尚未在显卡上实测。"},
    "estimate_too_big": {"en": "⚠️ **This will probably not fit in your GPU's memory.** Nearest setting that "
                               "fits: **{resolution} with {frames} frames**.",
                         "zh-CN": "⚠️ **这组参数很可能超出显存。** 能放下的最接近设置：**{resolution}、{frames} 帧**。"},
    "estimate_nothing_fits": {"en": "⚠️ **Even the smallest setting may not fit in your GPU's memory.**",
                              "zh-CN": "⚠️ **即使最小的设置也可能超出显存。**"},
    "reuse_settings": {"en": "Reuse these settings", "zh-CN": "沿用这些参数"},
    "same_seed": {"en": "Same seed, new prompt", "zh-CN": "同一种子，换提示词"},
    "delete": {"en": "Delete this video", "zh-CN": "删除这个视频"},
    "deleted": {"en": "Deleted `{video}`.", "zh-CN": "已删除 `{video}`。"},
    "settings_loaded": {"en": "The settings of `{video}` are in the form above.",
                        "zh-CN": "`{video}` 的参数已填入上方表单。"},
    "new_prompt_hint": {"en": "Same picture, settings and seed: write a new prompt above and press Generate.",
                        "zh-CN": "图片、参数和种子都已沿用：在上方写新的提示词，再点击“生成视频”。"},
    "col_created": {"en": "Created", "zh-CN": "创建时间"},
    "col_prompt": {"en": "Prompt", "zh-CN": "提示词"},
    "col_resolution": {"en": "Resolution", "zh-CN": "分辨率"},
    "col_frames": {"en": "Frames", "zh-CN": "帧数"},
    "col_fps": {"en": "FPS", "zh-CN": "帧率"},
    "col_steps": {"en": "Steps", "zh-CN": "步数"},
    "col_guidance": {"en": "Guidance", "zh-CN": "引导"},
    "col_seed": {"en": "Seed", "zh-CN": "种子"},
    "col_state": {"en": "State", "zh-CN": "状态"},
    "col_job": {"en": "Job", "zh-CN": "任务"},
    "col_file": {"en": "File", "zh-CN": "文件"},
    "state_queued": {"en": "queued (number {position})", "zh-CN": "排队中（第 {position} 位）"},
    "state_running": {"en": "{stage} {done}/{total}", "zh-CN": "{stage} {done}/{total}"},
    "state_done": {"en": "done", "zh-CN": "已完成"},
    "state_failed": {"en": "failed", "zh-CN": "失败"},
    "state_cancelled": {"en": "cancelled", "zh-CN": "已取消"},
    "state_interrupted": {"en": "interrupted", "zh-CN": "已中断"},
    "state_running_plain": {"en": "running", "zh-CN": "运行中"},
    "stage_denoising": {"en": "Denoising", "zh-CN": "去噪"},
    "stage_decoding": {"en": "Decoding", "zh-CN": "解码"},
    "stage_encoding": {"en": "Encoding", "zh-CN": "编码"},
    "seconds": {"en": "{seconds} s", "zh-CN": "{seconds} 秒"},
    "minutes_seconds": {"en": "{minutes} min {seconds} s", "zh-CN": "{minutes} 分 {seconds} 秒"},
    "time_left": {"en": "about {time} left", "zh-CN": "约剩 {time}"},
    "waiting": {"en": "Waiting in the queue: number {position}", "zh-CN": "排队等待中：第 {position} 位"},
    "model_state_ready": {"en": "Model ready", "zh-CN": "模型已就绪"},
    "model_state_error": {"en": "Model error", "zh-CN": "模型出错"},
    "model_state_downloading": {"en": "Model downloading", "zh-CN": "模型下载中"},
    "model_state_loading": {"en": "Model loading", "zh-CN": "模型加载中"},
    "model_state_starting": {"en": "Starting", "zh-CN": "启动中"},
    "device_line": {"en": "Device: {device}", "zh-CN": "设备：{device}"},
    "device_cpu": {"en": "CPU, float32 (slow: use a GPU for real videos)",
                   "zh-CN": "CPU，float32（很慢：真实视频请使用 GPU）"},
    "device_gpu_offload": {"en": "{name} ({memory} GiB), {dtype}, {mode}",
                           "zh-CN": "{name}（显存 {memory} GiB），{dtype}，{mode}"},
    "mode_model_offload": {"en": "model offload: each part on the GPU only while it runs (slower, less memory)",
                           "zh-CN": "模型分段加载：各部分仅在运行时放到显卡上（较慢，省显存）"},
    "mode_group_offload": {"en": "group offload: the UNet block by block, the rest part by part (slower, less memory)",
                           "zh-CN": "分组加载：UNet 逐块、其余各部分分段放到显卡上（较慢，更省显存）"},
    "mode_sequential_offload": {"en": "sequential offload: layer by layer (much slower, least memory)",
                                "zh-CN": "逐层加载：一层一层放到显卡上（慢很多，最省显存）"},
    "device_gpu": {"en": "{name} ({memory} GiB), {dtype}", "zh-CN": "{name}（显存 {memory} GiB），{dtype}"},
    "status_starting": {"en": "The app is starting; the model loads next.",
                        "zh-CN": "应用正在启动，随后加载模型。"},
    "status_download_start": {"en": "Downloading {source} (about 5 GB, once)...",
                              "zh-CN": "正在下载 {source}（约 5 GB，只需一次）……"},
    "status_downloading": {"en": "Downloading the model: {done} of {total} GB ({percent}%).",
                           "zh-CN": "正在下载模型：{done} / {total} GB（{percent}%）。"},
    "status_loading": {"en": "Loading the model from {folder} onto {device}...",
                       "zh-CN": "正在从 {folder} 加载模型到 {device}……"},
    "status_compiling": {"en": "Compiling the model for {width}x{height}, {frames} frames (once per size; takes "
                               "minutes)...",
                         "zh-CN": "正在为 {width}x{height}、{frames} 帧编译模型（每种尺寸一次，需要几分钟）……"},
    "status_ready": {"en": "Ready: model loaded in {seconds} s.", "zh-CN": "就绪：模型加载用时 {seconds} 秒。"},
    "status_plain": {"en": "{text}", "zh-CN": "{text}"},
    "status_load_failed": {"en": "Loading the model from {path} failed: {error}. Check that the folder holds a "
                                 "complete I2VGen-XL pipeline (see models/README.md); the log has the details.",
                           "zh-CN": "从 {path} 加载模型失败：{error}。请检查该文件夹是否包含完整的 I2VGen-XL 模型"
                                    "（见 models/README.md）；详细信息见日志。"},
    "err_no_cuda": {"en": "model.device is {device}, but PyTorch sees no CUDA GPU. Install the NVIDIA driver and a "
                          "CUDA build of PyTorch, or set model.device to auto.",
                    "zh-CN": "model.device 设为 {device}，但 PyTorch 找不到 CUDA GPU。请安装 NVIDIA 驱动和 CUDA 版 "
                             "PyTorch，或把 model.device 设为 auto。"},
    "err_model_folder_missing": {
        "en": "The model folder {source} does not exist. Set model.source in config/model_config.yaml to a folder "
              "with the weights or a hub id such as ali-vilab/i2vgen-xl.",
        "zh-CN": "模型文件夹 {source} 不存在。请在 config/model_config.yaml 中把 model.source 设为存放权重的文件夹，"
                 "或 ali-vilab/i2vgen-xl 这样的 Hub 模型名。"},
    "err_model_offline": {
        "en": "The model {repo} is not in {folder} and HF_HUB_OFFLINE is set, so it cannot be downloaded. Copy the "
              "weights into {folder} (see models/README.md) or unset HF_HUB_OFFLINE.",
        "zh-CN": "模型 {repo} 不在 {folder} 中，且设置了 HF_HUB_OFFLINE，无法下载。请把权重复制到 {folder}"
                 "（见 models/README.md），或取消 HF_HUB_OFFLINE。"},
    "err_model_download": {
        "en": "Downloading {repo} failed: {error}. Check the network (or set HF_ENDPOINT to a mirror) and start "
              "again: the files already downloaded are kept. Or copy the weights into {folder} (see "
              "models/README.md).",
        "zh-CN": "下载 {repo} 失败：{error}。请检查网络（或把 HF_ENDPOINT 设为镜像站，如 https://hf-mirror.com）"
                 "后重新启动：已下载完成的文件会保留。也可以把权重复制到 {folder}（见 models/README.md）。"},
    "demo_serving": {"en": "Serving the **demo model**: its videos are random noise.",
                     "zh-CN": "当前为**演示模型**：生成的视频是随机噪声。"},
    "done": {"en": "**Done** in {time}: {width}x{height}, {frames} frames at {fps} fps ({duration} s), "
                   "seed **{seed}**.  \nSaved as `{video}` in the output folder, with its settings in `{record}`.",
             "zh-CN": "**完成**，用时 {time}：{width}x{height}，{frames} 帧，{fps} fps（{duration} 秒），"
                      "种子 **{seed}**。  \n已保存为输出文件夹中的 `{video}`，参数保存在 `{record}`。"},
    "done_demo": {"en": "Made with the demo model: the video is noise by design.",
                  "zh-CN": "由演示模型生成：视频本来就是噪声。"},
    "cancelled_info": {"en": "**Cancelled.** Nothing was saved. Change the settings if you like and press "
                             "Generate again.",
                       "zh-CN": "**已取消。** 没有保存任何文件。可以调整参数后再次点击“生成视频”。"},
    "queued_again": {"en": "Queued again as job `{job}`; it appears above and runs when its turn comes.",
                     "zh-CN": "已重新排队，任务编号 `{job}`；它会出现在上方，轮到时自动运行。"},
    "select_job": {"en": "Select a job first.", "zh-CN": "请先选择一个任务。"},
    "nothing_to_cancel": {"en": "Nothing to cancel: none of your jobs is waiting or running.",
                          "zh-CN": "没有可取消的任务：您没有正在等待或运行的任务。"},
    "err_page_call": {"en": "The page sent something it cannot have sent. Reload the page (F5) and try again.",
                      "zh-CN": "页面发送了无法处理的内容。请刷新页面（F5）后重试。"},
    "err_upload_again": {"en": "Upload the picture again: the page sent a file that was not uploaded to this "
                               "server (or is no longer there).",
                         "zh-CN": "请重新上传图片：页面发送的文件不是上传到本服务器的文件（或已不存在）。"},
    "err_page_id": {"en": "This page's id is missing or not valid. Reload the page, then press Generate again.",
                    "zh-CN": "此页面的标识缺失或无效。请刷新页面，然后再次点击“生成视频”。"},
    "record_missing": {"en": "(record missing)", "zh-CN": "（记录缺失）"},
    "demo_banner": {
        "en": "**Demo mode: this is not the real model.** It serves a tiny built-in model with random weights, "
              "so the whole app works on any machine, but every video it makes is coloured noise. To make "
              "real videos, run the app on a machine with an NVIDIA GPU (12 GB or more): `bash start_app.sh` "
              "there loads I2VGen-XL (about 5 GB, downloaded once into `models/`). See the README for details.",
        "zh-CN": "**演示模式：当前不是真实模型。** 这里运行的是内置的随机权重小模型，让整个应用在任何机器上都能使用，"
                 "但生成的视频都是彩色噪声。要生成真实视频，请在有 NVIDIA 显卡（12 GB 以上显存）的机器上运行 "
                 "`bash start_app.sh`，它会加载 I2VGen-XL（约 5 GB，只下载一次，保存在 `models/`）。详见 README。"},
    # The same warning in the launcher's console (start_app.sh), in the words our users know from it.
    "demo_banner_console": {
        "en": "DEMO MODE: no CUDA GPU here, so the built-in demo model is served.\n"
              "Its videos are random noise; it shows the app works on this machine.\n"
              "For real videos run 'bash start_app.sh' on a server with an NVIDIA GPU\n"
              "(12 GB+). To force the real model here (hours per video on a CPU):",
        "zh-CN": "演示模式：本机没有 CUDA 显卡，因此运行内置的演示模型。\n"
                 "它生成的视频是随机噪声，用来确认应用在本机可以正常运行。\n"
                 "要生成真实视频，请在有 NVIDIA 显卡（12 GB 以上）的服务器上\n"
                 "运行 'bash start_app.sh'。如需在本机强制使用真实模型（CPU 上每个视频需数小时）："},
    # -- messages ----------------------------------------------------------------
    "err_something_wrong": {"en": "Something went wrong while making the video. Please try again; if it keeps "
                                  "happening, the log file in logs/ has the details.",
                            "zh-CN": "生成视频时出错了。请重试；如果反复出现，请查看 logs/ 中的日志文件。"},
    "err_no_image": {"en": "Please upload an image first.", "zh-CN": "请先上传一张图片。"},
    "err_not_image": {"en": "This file is not an image we can read. Upload a PNG, JPEG, WebP, GIF, BMP or TIFF file.",
                      "zh-CN": "无法识别这个文件为图片。请上传 PNG、JPEG、WebP、GIF、BMP 或 TIFF 文件。"},
    "err_upload_missing": {"en": "The uploaded file is missing; please upload it again.",
                           "zh-CN": "上传的文件不见了，请重新上传。"},
    "err_cannot_open": {"en": "The image could not be opened ({detail}). Upload a PNG, JPEG, WebP, GIF, BMP or "
                              "TIFF file.",
                        "zh-CN": "无法打开这张图片（{detail}）。请上传 PNG、JPEG、WebP、GIF、BMP 或 TIFF 文件。"},
    "err_bomb": {"en": "The image has far more pixels than the limit of {limit} megapixels. Resize it to at most "
                       "about 4000x4000 pixels and upload it again.",
                 "zh-CN": "图片像素远超 {limit} 百万像素的上限。请缩小到约 4000x4000 像素以内后重新上传。"},
    "err_too_many_pixels": {"en": "The image is {width}x{height} ({megapixels} megapixels); the limit is {limit}. "
                                  "Resize it to at most about 4000x4000 pixels and upload it again.",
                            "zh-CN": "图片为 {width}x{height}（{megapixels} 百万像素），上限是 {limit}。"
                                     "请缩小到约 4000x4000 像素以内后重新上传。"},
    "err_metadata_too_large": {
        "en": "The picture's metadata (a text comment or colour profile inside the PNG) is too large to read "
              "safely. Re-save the picture without its metadata, or as JPEG, and upload it again.",
        "zh-CN": "图片中的元数据（PNG 内的文字注释或颜色配置文件）过大，无法安全读取。请去掉元数据后重新保存图片，"
                 "或另存为 JPEG，再重新上传。"},
    "err_empty_image": {"en": "The image is empty (zero pixels wide or high).", "zh-CN": "图片是空的（宽或高为 0）。"},
    "err_damaged": {"en": "The image file is damaged or incomplete ({detail}). Upload the original file again, "
                          "or export it anew as PNG or JPEG.",
                    "zh-CN": "图片文件已损坏或不完整（{detail}）。请重新上传原文件，或重新导出为 PNG 或 JPEG。"},
    "err_too_small": {"en": "The image is only {width}x{height} pixels; each side needs at least {min_side}. "
                            "Upload a larger picture.",
                      "zh-CN": "图片只有 {width}x{height} 像素，每边至少需要 {min_side}。请上传更大的图片。"},
    "err_aspect": {"en": "The image is {width}x{height}, {ratio} times longer than it is wide; the limit is "
                         "{limit}:1. Crop it closer to a square (the video is square and keeps the centre of "
                         "the picture).",
                   "zh-CN": "图片为 {width}x{height}，长边是短边的 {ratio} 倍，上限是 {limit}:1。请裁剪得更接近正方形"
                            "（视频是正方形，保留图片中央部分）。"},
    "err_resolution": {"en": "Resolution {value} is not available. Choose one of: {allowed}.",
                       "zh-CN": "不支持分辨率 {value}。可选：{allowed}。"},
    "err_prompt_missing": {"en": "Please write a prompt: describe the motion you want, e.g. 'the waves roll in "
                                 "slowly'.",
                           "zh-CN": "请填写提示词：用英文描述想要的动作，例如 'the waves roll in slowly'。"},
    "err_prompt_type": {"en": "{name} must be text, not {kind}.", "zh-CN": "{name}必须是文本，而不是 {kind}。"},
    "err_prompt_long": {"en": "{name} is {length} characters long; the limit is {limit}. Shorten it: the model "
                              "reads only about the first 75 words.",
                        "zh-CN": "{name}有 {length} 个字符，上限是 {limit}。请缩短：模型只读取前约 75 个单词。"},
    "err_not_number": {"en": "{name} must be a number, not {value}.", "zh-CN": "{name}必须是数字，而不是 {value}。"},
    "err_not_finite": {"en": "{name} must be a finite number, not {value}.",
                       "zh-CN": "{name}必须是有限的数字，而不是 {value}。"},
    "err_not_whole": {"en": "{name} must be a whole number, not {value}.",
                      "zh-CN": "{name}必须是整数，而不是 {value}。"},
    "err_out_of_range": {"en": "{name} {value} is out of range. Allowed: {low} to {high}.",
                         "zh-CN": "{name} {value} 超出范围。允许范围：{low} 到 {high}。"},
    "err_queue_full": {"en": "The queue is full ({waiting} videos waiting). Please try again in a few minutes, "
                             "when some have finished.",
                       "zh-CN": "队列已满（{waiting} 个视频在等待）。请过几分钟，等部分任务完成后再试。"},
    "err_shutting_down": {"en": "The server is shutting down; try again in a minute.",
                          "zh-CN": "服务器正在关闭，请一分钟后再试。"},
    "err_not_ready": {"en": "The model is not ready yet ({state}); please wait a moment and try again.",
                      "zh-CN": "模型尚未就绪（{state}），请稍候再试。"},
    "err_not_available": {"en": "The model is not available: {detail}", "zh-CN": "模型不可用：{detail}"},
    "err_cancelled": {"en": "Cancelled: the video was stopped before it finished.",
                      "zh-CN": "已取消：视频在完成前被停止。"},
    "err_disk": {"en": "Only {free} GB of disk is free for {folder}; at least {needed} GB is needed. Delete old "
                       "videos from the output folder and try again.",
                 "zh-CN": "{folder} 只剩 {free} GB 磁盘空间，至少需要 {needed} GB。请删除输出文件夹中的旧视频后重试。"},
    "err_oom_resolution": {"en": "The GPU ran out of memory at {resolution} with {frames} frames, even in low-memory "
                                 "mode. Lower the resolution to {lower} (about {saving} less memory) or use fewer "
                                 "frames, and try again. The server is fine and ready for the next video.",
                           "zh-CN": "在 {resolution}、{frames} 帧时显存不足，低显存模式也不够。请把分辨率降到 {lower}"
                                    "（约少用 {saving} 显存）或减少帧数后重试。服务器一切正常，可以继续生成。"},
    "err_oom_frames": {"en": "The GPU ran out of memory at {resolution} with {frames} frames, even in low-memory "
                             "mode. Lower the frames from {frames} to {fewer} (about half the memory) and try "
                             "again. The server is fine and ready for the next video.",
                       "zh-CN": "在 {resolution}、{frames} 帧时显存不足，低显存模式也不够。请把帧数从 {frames} 降到 "
                                "{fewer}（约少用一半显存）后重试。服务器一切正常，可以继续生成。"},
    "err_gpu_fatal": {"en": "The GPU hit an unrecoverable error; the server restarted itself. Press Retry to try "
                            "again; if it happens again, lower the resolution or frames.",
                      "zh-CN": "显卡发生了无法恢复的错误，服务器已自动重启。请点击重试；如果再次出现，请降低分辨率或帧数。"},
    "err_gpu_switch_failed": {"en": "The GPU ran out of memory while moving the model back to {mode} mode after a "
                                    "low-memory retry; the server restarts itself to load it whole. Press Retry "
                                    "in a minute; if it happens again, lower the resolution or frames.",
                              "zh-CN": "低显存重试后把模型移回 {mode} 模式时显存不足；服务器正在自动重启以完整加载模型。请一分钟后"
                                       "点击重试；如果再次出现，请降低分辨率或帧数。"},
    "status_gpu_broken": {"en": "The GPU failed while moving the model; the server is restarting to load it again.",
                          "zh-CN": "移动模型时显卡出错；服务器正在重启以重新加载模型。"},
    "err_non_finite_video": {"en": "The model produced an invalid video (NaN or infinite pixels), even decoded in "
                                   "float32; nothing was saved. Try another seed or prompt; if it happens again, "
                                   "set model.dtype to float32 or bfloat16.",
                             "zh-CN": "模型生成的视频无效（像素为 NaN 或无穷大），用 float32 解码也一样；没有保存任何文件。请换一个"
                                      "种子或提示词；如果再次出现，请把 model.dtype 设为 float32 或 bfloat16。"},
    "err_interrupted": {"en": "Interrupted: the server stopped while this video was being made. Press Retry to "
                              "make it again.",
                        "zh-CN": "已中断：生成这个视频时服务器停止了。请点击重试重新生成。"},
    "msg_requeued": {"en": "Waiting: the server restarted.", "zh-CN": "等待中：服务器已重启。"},
    "err_already_running": {"en": "Only a failed, cancelled or interrupted job can be retried; this one is {state}.",
                            "zh-CN": "只有失败、已取消或已中断的任务才能重试；这个任务的状态是：{state}。"},
    "err_input_gone": {"en": "The input image of that job is gone; please upload it again.",
                       "zh-CN": "该任务的输入图片已不存在，请重新上传。"},
    "err_folder_has_server": {
        "en": "Another Image-to-Video server (PID {pid}, port {port}) is already running on the data folder "
              "{folder}. Only one may run per folder, or both would run jobs on the same GPU at once. Open {url} "
              "to use it (the page or its HTTP API), or stop it first with `bash start_app.sh stop`.",
        "zh-CN": "另一个 Image-to-Video 服务器（PID {pid}，端口 {port}）已在使用数据文件夹 {folder}。每个文件夹只能运行"
                 "一个，否则两者会同时在同一块 GPU 上运行任务。请打开 {url} 使用它（网页或 HTTP API），"
                 "或先用 `bash start_app.sh stop` 停止它。"},
    "err_folder_has_generate": {
        "en": "`python main.py generate` (PID {pid}) is running on the data folder {folder}. Only one process may "
              "use it at a time, or both would run jobs on the same GPU at once. Wait for it to finish, or stop it "
              "(Ctrl+C in its terminal, or kill {pid}), then start again.",
        "zh-CN": "`python main.py generate`（PID {pid}）正在使用数据文件夹 {folder}。同一时间只能有一个进程使用它，"
                 "否则两者会同时在同一块 GPU 上运行任务。请等它完成，或停止它（在其终端按 Ctrl+C，或 kill {pid}），"
                 "然后再启动。"},
    "err_no_job": {"en": "There is no job {job}.", "zh-CN": "没有任务 {job}。"},
    "err_record_missing": {"en": "The record of this video is missing from the output folder.",
                           "zh-CN": "输出文件夹中缺少这个视频的参数记录。"},
    "err_video_gone": {"en": "That video is no longer in the output folder.", "zh-CN": "这个视频已不在输出文件夹中。"},
    "err_file_removed": {"en": "The {kind} of job {job} was removed from the output folder: deleted from the page's "
                               "history or by hand{retention}. Retry the job (POST /api/jobs/{job}/retry, or Retry on "
                               "the page) to make it again.",
                         "zh-CN": "任务 {job} 的{kind}已从输出文件夹中移除：在页面的历史记录中被删除或被手动删除{retention}。"
                                  "请重试该任务（POST /api/jobs/{job}/retry，或在页面上点击重试）重新生成。"},
    "err_file_removed_retention": {"en": ", or by the retention policy ({settings})",
                                   "zh-CN": "，或被保留策略删除（{settings}）"},
    "err_body_too_large": {"en": "The request is larger than this server takes ({size} MB; the limit is {limit} MB, "
                                 "set by server.max_upload_mb). Send a smaller file, or raise server.max_upload_mb.",
                           "zh-CN": "请求超过了服务器允许的大小（{size} MB；上限为 {limit} MB，由 server.max_upload_mb "
                                    "设置）。请发送更小的文件，或调大 server.max_upload_mb。"},
    "err_body_too_slow": {"en": "The request's body did not arrive within {seconds} s (server.body_timeout_s). Send it "
                                "again on a faster connection, or raise server.body_timeout_s.",
                          "zh-CN": "请求内容未在 {seconds} 秒内传完（server.body_timeout_s）。请在更快的网络上重新发送，"
                                   "或调大 server.body_timeout_s。"},
    "err_login_throttled": {"en": "Too many wrong passwords from your address ({address}). Wait {seconds} s, then log in "
                                  "with the password start_app.sh printed.",
                            "zh-CN": "来自你的地址（{address}）的错误密码次数过多。请等待 {seconds} 秒，然后用 start_app.sh "
                                     "打印的密码登录。"},
    "err_no_route": {"en": "There is no API route {method} {path}. The routes are listed at /docs.",
                     "zh-CN": "没有 API 路由 {method} {path}。所有路由见 /docs。"},
    "err_wrong_method": {"en": "{path} does not take {method}; it takes {allowed}. The routes are listed at /docs.",
                         "zh-CN": "{path} 不接受 {method}，只接受 {allowed}。所有路由见 /docs。"},
    "err_no_event": {"en": "The page has no action called {name!r}. The page's API is listed under 'Use via API' at "
                           "the bottom of the page.",
                     "zh-CN": "页面没有名为 {name!r} 的操作。页面的 API 列在页面底部的“通过 API 使用”中。"},
    "err_event_index": {"en": "No action of the page has fn_index {index!r}. Reload the page, or call an action by "
                              "its name without fn_index.",
                        "zh-CN": "页面没有 fn_index 为 {index!r} 的操作。请刷新页面，或用操作的名称调用（不带 fn_index）。"},
    "err_event_mismatch": {"en": "fn_index {index} is the page's {actual!r} action, not {name!r}. Call an action by "
                                 "its own name, without fn_index.",
                           "zh-CN": "fn_index {index} 是页面的 {actual!r} 操作，而不是 {name!r}。请用操作自己的名称调用"
                                    "（不带 fn_index）。"},
    "err_event_inputs": {"en": "The page's {name!r} action takes {needed} input values; the request has {got}. Send "
                               "one value for each input.",
                         "zh-CN": "页面的 {name!r} 操作需要 {needed} 个输入值，请求中有 {got} 个。请为每个输入发送一个值。"},
    "err_event_queued": {"en": "The page's {name!r} action runs in the GPU queue, not on this route. Use "
                               "/gradio_api/call/{name} (or gradio_client), the page, or the HTTP API (POST /api/jobs).",
                         "zh-CN": "页面的 {name!r} 操作在 GPU 队列中运行，不走这个路由。请使用 /gradio_api/call/{name}"
                                  "（或 gradio_client）、页面，或 HTTP API（POST /api/jobs）。"},
    "err_event_not_queued": {"en": "The page's {name!r} action runs at once and does not join the queue. Use the page.",
                             "zh-CN": "页面的 {name!r} 操作会立即运行，不进入队列。请使用页面。"},
    "param_frames": {"en": "Frames", "zh-CN": "帧数"},
    "param_fps": {"en": "FPS", "zh-CN": "帧率"},
    "param_steps": {"en": "Steps", "zh-CN": "推理步数"},
    "param_guidance": {"en": "Guidance scale", "zh-CN": "引导系数"},
    "param_seed": {"en": "Seed", "zh-CN": "种子"},
    "param_prompt": {"en": "The prompt", "zh-CN": "提示词"},
    "param_negative_prompt": {"en": "The negative prompt", "zh-CN": "反向提示词"},
}


#: The shipped presets' names in Chinese; presets added in the config show their own name.
PRESET_NAMES = {"Quick preview": "快速预览", "Standard": "标准", "High quality": "高质量"}


def preset_label(name: str, lang: str | None) -> str:
    return PRESET_NAMES.get(name, name) if normalise_language(lang) == "zh-CN" else name


def normalise_language(value: str | None) -> str:
    """'zh', 'zh-CN', 'zh-Hans', '简体中文' -> 'zh-CN'; anything else -> 'en'."""
    text = value.strip() if isinstance(value, str) else ""
    if text.lower().startswith("zh") or text == LANGUAGES["zh-CN"]:
        return "zh-CN"
    return DEFAULT


def t(key: str, lang: str | None = DEFAULT, **params: Any) -> str:
    """The text ``key`` in ``lang`` (English when missing there), with ``params`` filled in.

    A parameter named ``x_key`` is itself a text key, shown in ``lang`` as ``{x}``: that is how
    a message names a setting ("Frames", "帧数") or a memory mode in the reader's language.
    """
    texts = TEXT[key]
    template = texts.get(normalise_language(lang)) or texts[DEFAULT]
    params = {name.removesuffix("_key"): t(value, lang) if name.endswith("_key") else value
              for name, value in params.items()}
    return template.format(**params) if params else template


def localized(error: BaseException, lang: str | None) -> str:
    """An error's message in ``lang`` when it carries a key, else its English text."""
    key = getattr(error, "key", None)
    if key and key in TEXT:
        return t(key, lang, **getattr(error, "params", {}))
    return str(error)


def format_seconds(seconds: float, lang: str | None = DEFAULT) -> str:
    """A duration as the page shows it: "28 s", "1 min 05 s" (or "28 秒", "1 分 05 秒")."""
    seconds = max(0, round(seconds))
    if seconds >= 60:
        return t("minutes_seconds", lang, minutes=seconds // 60, seconds=f"{seconds % 60:02d}")
    return t("seconds", lang, seconds=seconds)
