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
    "subtitle": {"en": "Turn one picture and a sentence into a short video ({model}).",
                 "zh-CN": "一张图片加一句话，生成一段短视频（{model}）。"},
    "language": {"en": "Language", "zh-CN": "语言"},
    "image": {"en": "Image", "zh-CN": "图片"},
    "image_help": {"en": "The first frame of your video. Any photo works; it keeps its shape (see Aspect): the "
                         "model's size nearest to it, with as little cut off as possible.",
                   "zh-CN": "视频的第一帧。任何照片都可以；会保持原有形状（见“画面比例”）：选用最接近的模型尺寸，尽量少裁剪。"},
    "end_frame": {"en": "End frame (optional)", "zh-CN": "结束帧（可选）"},
    "end_frame_help": {"en": "A second picture the video ends on. Fitted to the video's size like the first.",
                       "zh-CN": "视频结束时的第二张图片。与第一张一样适配到视频尺寸。"},
    "aspect": {"en": "Aspect", "zh-CN": "画面比例"},
    "aspect_help": {"en": "The video's shape. Auto picks the one nearest your picture's; the picture is scaled to "
                          "cover it and centre-cropped.",
                    "zh-CN": "视频的形状。“自动”选最接近图片的比例；图片会缩放以铺满画面并居中裁剪。"},
    "aspect_auto": {"en": "Auto (as the picture)", "zh-CN": "自动（随图片）"},
    "crop_note": {"en": "The video will be **{width}x{height}** ({aspect}); {cut}.",
                  "zh-CN": "视频尺寸为 **{width}x{height}**（{aspect}）；{cut}。"},
    "crop_none": {"en": "the whole picture is used", "zh-CN": "使用整张图片"},
    "crop_sides": {"en": "{percent}% of the picture's width is cut from its left and right",
                   "zh-CN": "图片左右两侧共裁去 {percent}% 的宽度"},
    "crop_top_bottom": {"en": "{percent}% of the picture's height is cut from its top and bottom",
                        "zh-CN": "图片上下共裁去 {percent}% 的高度"},
    "estimate_table": {"en": "Peak GPU memory for {model}: about {peak} GB with everything on the GPU, {lowest} GB in "
                             "its lowest-memory mode (traced from the model's real shapes).",
                       "zh-CN": "{model} 的显存峰值：全部放在显卡上约 {peak} GB，最省显存的模式约 {lowest} GB（按模型真实"
                                "形状追踪）。"},
    "estimate_no_time_yet": {"en": "No time estimate for {model} here yet: the first video made on this machine "
                                   "teaches it.",
                             "zh-CN": "此处暂无 {model} 的时间估算：本机做出第一个视频后即可得出。"},
    "model_picker": {"en": "Model", "zh-CN": "模型"},
    "model_picker_help": {"en": "Each model has its own sizes, frame counts and defaults. A model not loaded yet loads "
                                "when your job starts (the first time it downloads).",
                          "zh-CN": "每个模型有自己的尺寸、帧数和默认值。尚未加载的模型会在任务开始时加载（首次使用时下载）。"},
    "picker_state_ready": {"en": "ready", "zh-CN": "已就绪"},
    "picker_state_ready_on": {"en": "ready on {workers}", "zh-CN": "已在 {workers} 上就绪"},
    "picker_state_loading": {"en": "loading…", "zh-CN": "加载中…"},
    "picker_state_error": {"en": "⚠️ could not load: {message}", "zh-CN": "⚠️ 无法加载：{message}"},
    "picker_state_on_disk": {"en": "on disk, loads when a job asks for it", "zh-CN": "已在磁盘上，任务需要时加载"},
    "picker_state_demo": {"en": "demo (tiny random weights), loads when a job asks for it",
                         "zh-CN": "演示模型（随机权重的小模型），任务需要时加载"},
    "picker_state_not_downloaded": {"en": "not downloaded: {size} GB, fetched when the first job asks for it",
                                   "zh-CN": "尚未下载：{size} GB，第一个使用它的任务开始时下载"},
    "model_needs": {"en": "{resolution}, {frames} frames need {peak} GB of GPU memory ({lowest} GB offloaded)",
                    "zh-CN": "{resolution}、{frames} 帧需要 {peak} GB 显存（卸载模式 {lowest} GB）"},
    "estimate_table_mode": {"en": "On this {gpu} GB GPU: {mode}.",
                            "zh-CN": "在这块 {gpu} GB 显卡上：{mode}。"},
    "estimate_table_none": {"en": "⚠️ It does not fit this {gpu} GB GPU in any mode: lower the resolution (480p) "
                                  "or the frames.",
                            "zh-CN": "⚠️ 任何模式下都放不进这块 {gpu} GB 显卡：请降低分辨率（480p）或帧数。"},
    "estimate_untraced": {"en": "No memory or time estimate for {model} yet: its memory has not been traced. It "
                                "runs in the memory mode its weights allow.",
                          "zh-CN": "{model} 暂无显存和时间估算：尚未追踪其显存占用。将按其权重大小选择显存模式。"},
    "prompt_read_as_written": {"en": "ℹ️ {model} reads Chinese and English prompts as written (no translation).",
                               "zh-CN": "ℹ️ {model} 直接读取中文和英文提示词（不翻译）。"},
    "prompt": {"en": "Prompt", "zh-CN": "提示词"},
    "prompt_help": {"en": "Describe the motion, e.g. 'the waves roll in slowly'. Name what moves and how; the "
                          "picture already shows what things look like. The model reads English; Chinese is "
                          "translated when the translator is installed (the note below says).",
                    "zh-CN": "描述动作，例如 'the waves roll in slowly'（海浪缓缓涌来）。写清楚什么在动、怎么动；"
                             "外观由图片决定。模型读英文；安装了翻译模型时中文会自动翻译（见下方说明）。"},
    "prompt_help_multilingual": {"en": "Describe the motion, e.g. 'the waves roll in slowly' or '海浪缓缓涌来'. Name "
                                       "what moves and how; the picture already shows what things look like. The "
                                       "model reads Chinese and English as written.",
                                 "zh-CN": "描述动作，例如“海浪缓缓涌来”或 'the waves roll in slowly'。写清楚什么在动、"
                                          "怎么动；外观由图片决定。模型直接读取中文和英文。"},
    "negative": {"en": "Negative prompt", "zh-CN": "反向提示词"},
    "negative_help": {"en": "What to avoid, e.g. 'blurry, distorted, flickering'. Leave empty if unsure.",
                      "zh-CN": "想避免的内容，例如 'blurry, distorted, flickering'（模糊、变形、闪烁）。不确定就留空。"},
    "preset": {"en": "Preset", "zh-CN": "预设"},
    "preset_help": {"en": "One click sets resolution, frames, FPS, steps and guidance.",
                    "zh-CN": "一键设置分辨率、帧数、帧率、步数和引导系数。"},
    "generate": {"en": "Generate", "zh-CN": "生成视频"},
    "cancel": {"en": "Cancel", "zh-CN": "取消"},
    "cancel_all": {"en": "Cancel all ({count})", "zh-CN": "全部取消（{count}）"},
    "cancel_job": {"en": "Cancel this job", "zh-CN": "取消这个任务"},
    "cancelled_one": {"en": "**Cancelled** job `{job}`. Your other jobs still waiting or running: {left}.",
                      "zh-CN": "已**取消**任务 `{job}`。你其他仍在等待或运行的任务：{left} 个。"},
    "cancelled_all": {"en": "**Cancelled {count} job(s).** Nothing of them was saved.",
                      "zh-CN": "**已取消 {count} 个任务。**它们都没有保存任何内容。"},
    "following_job": {"en": "{state} · job `{job}`", "zh-CN": "{state} · 任务 `{job}`"},
    "summary_title": {"en": "**This video:**", "zh-CN": "**本次视频：**"},
    "summary_random_seed": {"en": "random seed", "zh-CN": "随机种子"},
    "summary_seed": {"en": "seed {seed} (locked)", "zh-CN": "固定种子 {seed}"},
    "summary_fps": {"en": "{fps} fps", "zh-CN": "每秒 {fps} 帧"},
    "summary_aspect": {"en": "shape {aspect}", "zh-CN": "画幅 {aspect}"},
    "summary_continues": {"en": "continues `{video}`", "zh-CN": "接续 `{video}`"},
    "summary_segments": {"en": "{segments} segments", "zh-CN": "{segments} 段"},
    "summary_loop": {"en": "loop: {loop}", "zh-CN": "循环：{loop}"},
    "summary_interpolate": {"en": "smoother motion to {fps} fps ({method})", "zh-CN": "补帧到 {fps} fps（{method}）"},
    "summary_formats": {"en": "also {formats}", "zh-CN": "另存 {formats}"},
    "summary_upscale": {"en": "upscaled {factor}×", "zh-CN": "放大 {factor}×"},
    "summary_plain": {"en": "no finishing", "zh-CN": "无后期处理"},
    "plain_video": {"en": "Plain video", "zh-CN": "恢复普通视频"},
    "plain_video_done": {"en": "Back to a plain video: random seed, no continuation, no finishing.",
                         "zh-CN": "已恢复普通视频：随机种子，不接续，无后期处理。"},
    "delete_confirm": {"en": "Delete `{video}` and all its files for good? This cannot be undone.",
                       "zh-CN": "永久删除 `{video}` 及其所有文件？此操作无法撤销。"},
    "delete_yes": {"en": "Yes, delete it", "zh-CN": "确认删除"},
    "delete_keep": {"en": "Keep it", "zh-CN": "保留"},
    "gallery_caption": {"en": "{width}×{height} · {frames} frames · {fps} fps · seed {seed}",
                        "zh-CN": "{width}×{height} · {frames} 帧 · {fps} fps · 种子 {seed}"},
    "settings": {"en": "Settings", "zh-CN": "参数设置"},
    "resolution": {"en": "Resolution", "zh-CN": "分辨率"},
    "resolution_help": {"en": "Output size. Higher is sharper but slower and needs more GPU memory: time and "
                              "memory grow with the number of pixels (twice the side is about four times both).",
                        "zh-CN": "输出尺寸。越高越清晰，但更慢、更占显存：时间和显存随像素数增长（边长翻倍约为四倍）。"},
    "frames": {"en": "Frames", "zh-CN": "帧数"},
    "frames_help": {"en": "Number of frames. More frames make a longer video; time and memory grow in proportion.",
                    "zh-CN": "视频帧数。帧数越多视频越长，时间和显存按比例增加。"},
    "fps": {"en": "FPS", "zh-CN": "帧率 (FPS)"},
    "fps_help": {"en": "Playback speed: higher is shorter and faster. The default is the model's own (I2VGen-XL "
                       "also makes motion calmer at a low rate). Costs nothing extra.",
                 "zh-CN": "播放速度：越高视频越短、动作越快。默认值是模型自己的帧率（I2VGen-XL 帧率低时动作也更平缓）。"
                          "不增加耗时。"},
    "steps": {"en": "Steps", "zh-CN": "推理步数"},
    "steps_help": {"en": "Denoising steps. More steps give finer detail; time grows in proportion "
                         "(30 is a quick draft, 50 the standard, 80+ for the final cut).",
                   "zh-CN": "去噪步数。步数越多细节越好，时间按比例增加（30 适合快速预览，50 为标准，80 以上用于成片）。"},
    "guidance": {"en": "Guidance scale", "zh-CN": "引导系数"},
    "guidance_help": {"en": "How closely to follow the prompt. The presets use the model's recommended value (I2VGen-XL "
                            "7-12, Wan 3.5-5); too high looks harsh, too low ignores the prompt.",
                      "zh-CN": "遵循提示词的程度。预设使用模型推荐值（I2VGen-XL 为 7-12，Wan 为 3.5-5）；过高画面生硬，"
                               "过低会忽略提示词。"},
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
    "estimate_cpu": {"en": "**Estimate** for these settings: about **{time}** per video{where}, on this machine's "
                           "CPU (no GPU here).",
                     "zh-CN": "**预估**：这组参数每个视频约 **{time}**{where}，在本机 CPU 上运行（此处没有显卡）。"},
    "estimate_where_learned": {"en": " (learned from {count} video(s) made on this machine)",
                               "zh-CN": "（根据本机已生成的 {count} 个视频测得）"},
    "estimate_with_finishing": {"en": ", finishing steps for {frames} frames included",
                                "zh-CN": "，已含 {frames} 帧的后期处理"},
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
    "stage_loading_model": {"en": "Loading the model", "zh-CN": "加载模型"},
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
    "mode_group_offload": {"en": "group offload: the denoiser (UNet or transformer) block by block, the rest part by "
                                 "part (slower, less memory)",
                           "zh-CN": "分组加载：去噪网络（UNet 或 Transformer）逐块、其余各部分分段放到显卡上（较慢，更省显存）"},
    "mode_gpu": {"en": "everything on the GPU (fastest)", "zh-CN": "全部放在显卡上（最快）"},
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
                                 "complete {model} pipeline (see models/README.md); the log has the details.",
                           "zh-CN": "从 {path} 加载模型失败：{error}。请检查该文件夹是否包含完整的 {model} 模型"
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
              "there loads {model} (about {size} GB, downloaded once into `models/`). See the README for details.",
        "zh-CN": "**演示模式：当前不是真实模型。** 这里运行的是内置的随机权重小模型，让整个应用在任何机器上都能使用，"
                 "但生成的视频都是彩色噪声。要生成真实视频，请在有 NVIDIA 显卡（12 GB 以上显存）的机器上运行 "
                 "`bash start_app.sh`，它会加载 {model}（约 {size} GB，只下载一次，保存在 `models/`）。详见 README。"},
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
                         "{limit}:1. Crop it closer to a square (the video's widest shape is 16:9, and the "
                         "picture is cropped to it).",
                   "zh-CN": "图片为 {width}x{height}，长边是短边的 {ratio} 倍，上限是 {limit}:1。请裁剪得更接近正方形"
                            "（视频最宽为 16:9，图片会被裁剪到该比例）。"},
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
    "err_cudnn_unsupported": {"en": "cuDNN (the GPU's library of neural-network kernels) has no kernel for this "
                                    "video's size ({width}x{height}, {frames} frames): {detail}. The server is fine "
                                    "and ready for the next video. Try another resolution or aspect ratio; if "
                                    "model.cudnn_benchmark or model.channels_last is on in the config, turning it "
                                    "off (it takes a restart) may also help.",
                              "zh-CN": "显卡的神经网络计算库 cuDNN 没有适用于此视频尺寸（{width}x{height}，{frames} 帧）的"
                                       "计算内核：{detail}。服务器一切正常，可以继续生成。请换一个分辨率或宽高比后重试；"
                                       "如果配置中开启了 model.cudnn_benchmark 或 model.channels_last，关闭它（需要重启"
                                       "服务器）也可能解决。"},
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
    "err_output_folder_taken": {
        "en": "Another Image-to-Video process (PID {pid}) is already writing its videos to the output folder "
              "{folder}. Only one may use it at a time, or each start would remove the other's videos in progress. "
              "Give this one an output folder of its own (--output-dir or paths.output_dir), or stop the other "
              "first (`bash start_app.sh stop`, or kill {pid}).",
        "zh-CN": "另一个 Image-to-Video 进程（PID {pid}）已在向输出文件夹 {folder} 写入视频。同一时间只能有一个进程"
                 "使用它，否则每次启动都会删除对方正在生成的视频。请为本进程指定单独的输出文件夹（--output-dir 或 "
                 "paths.output_dir），或先停止另一个（`bash start_app.sh stop`，或 kill {pid}）。"},
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
    "err_headers_too_slow": {"en": "The request's headers did not arrive within {seconds} s (server.header_timeout_s). "
                                   "Send the request again, or raise server.header_timeout_s for a very slow link.",
                             "zh-CN": "请求头未在 {seconds} 秒内传完（server.header_timeout_s）。请重新发送请求，"
                                      "或为很慢的网络调大 server.header_timeout_s。"},
    "err_too_many_connections": {"en": "Too many open connections from your address ({address}): {limit} at once "
                                       "(server.max_connections_per_client). Close some tabs or downloads and try "
                                       "again, or raise server.max_connections_per_client.",
                                 "zh-CN": "来自你的地址（{address}）的连接过多：最多同时 {limit} 个"
                                          "（server.max_connections_per_client）。请关闭一些标签页或下载后重试，"
                                          "或调大 server.max_connections_per_client。"},
    "err_server_full": {"en": "The server holds as many connections as it can ({limit}). Try again in a moment.",
                        "zh-CN": "服务器的连接数已达上限（{limit}）。请稍后再试。"},
    "err_event_too_large": {"en": "This page action sent {size} KB; a page action needs at most {limit} KB (pictures "
                                  "go through the upload). Shorten the prompts, or reload the page.",
                            "zh-CN": "此页面操作发送了 {size} KB；页面操作最多需要 {limit} KB（图片通过上传发送）。"
                                     "请缩短提示词，或刷新页面。"},
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
    "param_resolution": {"en": "Resolution", "zh-CN": "分辨率"},
    "param_aspect": {"en": "Aspect", "zh-CN": "画面比例"},
    "param_model": {"en": "Model", "zh-CN": "模型"},
    "param_last_image": {"en": "End frame", "zh-CN": "结束帧"},
    "err_frame_count": {"en": "Frames: {value} is not a frame count {model} can make. It makes {rule}; the nearest "
                              "are {nearest}.",
                        "zh-CN": "帧数：{model} 无法生成 {value} 帧。可用帧数为 {rule}；最接近的是 {nearest}。"},
    "err_model_not_offered": {"en": "This server does not offer the model {value}. Choose one of: {allowed} "
                                    "(or leave the model out to use the server's own).",
                              "zh-CN": "本服务器不提供模型 {value}。请从以下模型中选择：{allowed}（或不指定模型以使用服务器当前的模型）。"},
    "err_other_model": {"en": "These settings were made with the model {value}; this server serves {model}. Start a "
                              "server with that model (--model), or leave the model out to use this one.",
                        "zh-CN": "这些参数来自模型 {value}；本服务器运行的是 {model}。请用该模型启动服务器（--model），"
                                 "或去掉模型参数以使用当前模型。"},
    "err_end_frame_unsupported": {"en": "{model} cannot end a video on a chosen picture. Remove the end frame, or "
                                        "pick Wan2.2-I2V-A14B, which can.",
                                  "zh-CN": "{model} 不支持指定结束帧。请去掉结束帧，或选择支持它的 Wan2.2-I2V-A14B。"},
    # The end frame's own problem (a picture message) in both languages; each text shows its own
    # (``{x:.0}`` shows nothing: the two texts must have the same placeholders).
    "err_end_frame_picture": {"en": "End frame: {problem_en}{problem_zh:.0} (Or remove the end frame: it is "
                                    "optional.)",
                              "zh-CN": "结束帧：{problem_zh}{problem_en:.0}（也可以去掉结束帧：它是可选的。）"},
    # -- LoRAs (loras.py, families/adapters.py) ----------------------------------------
    "param_loras": {"en": "LoRAs", "zh-CN": "LoRA 模型"},
    "err_loras_unsupported": {"en": "{model} takes no LoRAs; the Wan 2.2 models do. Remove the LoRAs, or pick a "
                                    "Wan 2.2 model.",
                              "zh-CN": "{model} 不支持 LoRA（Wan 2.2 模型支持）。请去掉 LoRA，或选择 Wan 2.2 模型。"},
    "err_lora_format": {"en": "LoRAs: {value} is not a list of name:strength separated by commas (for example "
                              "style:0.8,motion:1).",
                        "zh-CN": "LoRA：{value} 不是以逗号分隔的“名称:强度”列表（例如 style:0.8,motion:1）。"},
    "err_too_many_loras": {"en": "{count} LoRAs were asked for; at most {limit} can be used at once.",
                           "zh-CN": "请求了 {count} 个 LoRA；一次最多可用 {limit} 个。"},
    "err_lora_twice": {"en": "LoRA {name} is named twice. Name each LoRA once, with one strength.",
                       "zh-CN": "LoRA {name} 被指定了两次。每个 LoRA 只能指定一次，并给一个强度。"},
    "err_lora_missing": {"en": "LoRA {name} is not in the LoRA folder (loras/ in the models folder). Available: "
                               "{allowed}.",
                         "zh-CN": "LoRA 文件夹（模型文件夹中的 loras/）里没有 LoRA {name}。可用的有：{allowed}。"},
    "err_lora_none": {"en": "LoRA {name} is not in the LoRA folder, which holds none yet: put LoRA files "
                            "(.safetensors) in loras/ inside the models folder; each is named by its file name.",
                      "zh-CN": "LoRA 文件夹里没有 LoRA {name}，目前文件夹是空的：请把 LoRA 文件（.safetensors）放进模型文件夹中的 "
                               "loras/，以文件名作为名称。"},
    "err_lora_strength": {"en": "LoRA {name}: the strength {value} is not a number from {low} to {high}.",
                          "zh-CN": "LoRA {name}：强度 {value} 不是 {low} 到 {high} 之间的数字。"},
    "err_lora_unreadable": {"en": "LoRA {name} cannot be read as LoRA weights in safetensors format. Replace its "
                                  "file with a LoRA saved as .safetensors.",
                            "zh-CN": "无法把 LoRA {name} 读取为 safetensors 格式的 LoRA 权重。请换成保存为 .safetensors "
                                     "的 LoRA 文件。"},
    "err_lora_gone": {"en": "LoRA {name} is no longer in the LoRA folder. Put it back, or queue the job again "
                            "without it.",
                      "zh-CN": "LoRA {name} 已不在 LoRA 文件夹中。请放回该文件，或去掉它后重新提交任务。"},
    "err_lora_changed": {"en": "LoRA {name} changed after the job was queued (it was the file with sha256 "
                               "{sha256}…). Queue the job again to use the file as it is now.",
                         "zh-CN": "任务提交后 LoRA {name} 已被更改（提交时文件的 sha256 为 {sha256}…）。请重新提交任务以使用"
                                  "当前的文件。"},
    "err_lora_other_model": {"en": "LoRA {name} does not fit {model}: it has no weights for its transformer "
                                   "(its weights are for {parts}). It was made for another kind of model.",
                             "zh-CN": "LoRA {name} 与 {model} 不匹配：其中没有该模型 transformer 的权重（它的权重属于 "
                                      "{parts}）。它是为其他类型的模型制作的。"},
    "err_lora_other_layers": {"en": "LoRA {name} does not fit {model}: it changes the layer {layer}, which {model} "
                                    "does not have. It was made for another model.",
                              "zh-CN": "LoRA {name} 与 {model} 不匹配：它修改的层 {layer} 在 {model} 中不存在。它是为其他"
                                       "模型制作的。"},
    "err_lora_other_shapes": {"en": "LoRA {name} does not fit {model}: its weights for the layer {layer} are "
                                    "{got}, where that layer takes {wanted}. It was made for another model (another "
                                    "size of Wan, say).",
                              "zh-CN": "LoRA {name} 与 {model} 不匹配：它给层 {layer} 的权重形状为 {got}，而该层需要 "
                                       "{wanted}。它是为其他模型（例如另一种规模的 Wan）制作的。"},
    "err_lora_not_loaded": {"en": "LoRA {name} could not be loaded into {model}: {error}",
                            "zh-CN": "无法把 LoRA {name} 加载到 {model}：{error}"},
    "err_lora_expert_one": {"en": "LoRA {name}: {model} has one transformer, so a LoRA cannot be put into one "
                                  "expert (@high, @low name the two experts of Wan2.2-I2V-A14B). Remove the @ and what "
                                  "follows it.",
                            "zh-CN": "LoRA {name}：{model} 只有一个 transformer，不能把 LoRA 只放进某一个专家（@high、@low "
                                     "指的是 Wan2.2-I2V-A14B 的两个专家）。请去掉 @ 及其后面的内容。"},
    "err_lora_expert_both": {"en": "LoRA {name} has weights for both experts already; name it without @high or @low.",
                             "zh-CN": "LoRA {name} 已经包含两个专家的权重；请不带 @high 或 @low 使用它。"},
    "err_lora_fast_missing": {"en": "LoRA {name} belongs to the Fast preset and is not downloaded yet ({size} GB "
                                    "in all). Download it once: the Download button beside the Fast preset on the "
                                    "page, or `python main.py loras fetch --fast {model}`, or POST /api/loras with "
                                    "fast={model}; then start the job again.",
                              "zh-CN": "LoRA {name} 属于“极速”预设，尚未下载（共 {size} GB）。请先下载一次：页面上“极速”预设旁的"
                                       "下载按钮，或运行 `python main.py loras fetch --fast {model}`，或 POST /api/loras 并带 "
                                       "fast={model}；然后重新开始任务。"},
    "err_lora_fetch_repo": {"en": "{value} is not a hub repo id (owner/name, for example lightx2v/Wan2.2-Lightning).",
                            "zh-CN": "{value} 不是 Hub 仓库名（所有者/名称，例如 lightx2v/Wan2.2-Lightning）。"},
    "err_lora_fetch_file": {"en": "{value} is not the path of a .safetensors file in the repo (for example "
                                  "folder/model.safetensors).",
                            "zh-CN": "{value} 不是仓库中 .safetensors 文件的路径（例如 folder/model.safetensors）。"},
    "err_lora_fetch_name": {"en": "{value} cannot name a LoRA: use letters, digits, - _ . and @ only inside, no "
                                  "comma, colon or slash, and no ending @high or @low.",
                            "zh-CN": "{value} 不能用作 LoRA 名称：不能含逗号、冒号或斜杠，也不能以 @high 或 @low 结尾。"},
    "err_lora_fetch_taken": {"en": "A LoRA named {name} is already in the LoRA folder and came from elsewhere; it "
                                   "is kept. Give the download another name.",
                             "zh-CN": "LoRA 文件夹中已有名为 {name} 的 LoRA（来源不同），它会被保留。请给这次下载换一个名称。"},
    "err_lora_fetch_big": {"en": "LoRA {name} is {size} GB; LoRA downloads stop at {limit} GB. Is it a whole model "
                                 "rather than a LoRA?",
                           "zh-CN": "LoRA {name} 有 {size} GB；LoRA 下载上限为 {limit} GB。它是否是完整模型而不是 LoRA？"},
    "err_lora_fetch_disk": {"en": "LoRA {name} ({size} GB) does not fit on the disk of the models folder. Free some "
                                  "space and download it again.",
                            "zh-CN": "LoRA {name}（{size} GB）放不进模型文件夹所在的磁盘。请腾出空间后重新下载。"},
    # hostile-client review of the LoRA downloads
    "err_lora_fetch_name_plain": {"en": "{value} cannot name a LoRA: as a file name it would be over 255 bytes, or it "
                                        "holds a control or text-direction character. Give a shorter, plain name.",
                                  "zh-CN": "{value} 不能用作 LoRA 名称：作为文件名超过 255 字节，或含控制字符、文字方向字符。"
                                           "请换一个更短、普通的名称。"},
    "err_lora_fetch_reserved": {"en": "{name} is the name of a Fast preset's LoRA ({file} of {repo}); a download "
                                      "from elsewhere cannot take it. Give it another name.",
                                "zh-CN": "{name} 是“极速”预设的 LoRA 名称（{repo} 中的 {file}）；其他来源的下载不能使用它。"
                                         "请换一个名称。"},
    "err_lora_fetch_overrun": {"en": "LoRA {name}: the hub sent more than the {size} bytes it announced (LoRA "
                                     "downloads stop at {limit} GB), so the download was stopped and nothing was "
                                     "kept. Check the repo and file, or download the file yourself into the LoRA "
                                     "folder.",
                               "zh-CN": "LoRA {name}：Hub 发送的数据超过了它声明的 {size} 字节（LoRA 下载上限为 {limit} GB），"
                                        "因此已停止下载，未保留任何内容。请检查仓库和文件，或自行下载该文件放入 LoRA 文件夹。"},
    "err_lora_fetch_busy": {"en": "{count} LoRA downloads are already waiting. Wait for them to end, then ask again.",
                            "zh-CN": "已有 {count} 个 LoRA 下载在排队。请等它们结束后再试。"},
    "err_lora_fetch_what": {"en": "Say what to download: fast=<model> (its Fast preset's LoRAs), or repo and file "
                                  "(and optionally name).",
                            "zh-CN": "请说明要下载什么：fast=<模型>（其“极速”预设的 LoRA），或 repo 和 file（可选 name）。"},
    "err_lora_fetch_failed": {"en": "Downloading {file} from {repo} failed: {error}. Check the network (or set "
                                    "HF_ENDPOINT to a mirror such as https://hf-mirror.com) and try again: a cut-off "
                                    "download goes on where it stopped. Or download the file yourself and put it in "
                                    "{folder} as {name}.safetensors.",
                              "zh-CN": "从 {repo} 下载 {file} 失败：{error}。请检查网络（或把 HF_ENDPOINT 设为镜像，例如 "
                                       "https://hf-mirror.com）后重试：中断的下载会从断点继续。也可以自行下载该文件，放到 "
                                       "{folder} 中并命名为 {name}.safetensors。"},
    "err_lora_fetch_no_fast": {"en": "{model} has no Fast preset. Models with one: {allowed}.",
                               "zh-CN": "{model} 没有“极速”预设。有该预设的模型：{allowed}。"},
    "lora_picker": {"en": "LoRAs on this server", "zh-CN": "本服务器上的 LoRA"},
    "lora_picker_help": {"en": "Pick one or several (files in loras/ inside the models folder); set each one's "
                               "strength in the box below.",
                         "zh-CN": "可选一个或多个（模型文件夹中 loras/ 里的文件）；在下面的输入框里设置各自的强度。"},
    "loras_help": {"en": "name:strength, separated by commas (strength from -4 to 4; 1 is the LoRA as made). On "
                         "Wan2.2-I2V-A14B, name@high or name@low puts a LoRA into one of its two experts.",
                   "zh-CN": "名称:强度，用逗号分隔（强度 -4 到 4；1 为原始强度）。在 Wan2.2-I2V-A14B 上，name@high 或 "
                            "name@low 只把 LoRA 放进它两个专家中的一个。"},
    "fast_download": {"en": "⬇️ Download the Fast LoRAs ({size} GB)", "zh-CN": "⬇️ 下载“极速”LoRA（{size} GB）"},
    "fast_missing": {"en": "The Fast preset needs {names} ({size} GB in all), not downloaded yet: download "
                           "them once with the button below (or `python main.py loras fetch --fast {model}`).",
                     "zh-CN": "“极速”预设需要 {names}（共 {size} GB），尚未下载：请用下面的按钮下载一次（或运行 "
                              "`python main.py loras fetch --fast {model}`）。"},
    "fast_ready": {"en": "✅ The Fast LoRAs are downloaded: Generate uses them.",
                   "zh-CN": "✅ “极速”LoRA 已下载：点击生成即可使用。"},
    "fast_failed_too": {"en": "(Also not downloaded: {names}.)", "zh-CN": "（同样未下载：{names}。）"},
    "fast_waiting": {"en": "{name}: waiting", "zh-CN": "{name}：等待中"},
    "fast_starting": {"en": "{name}: starting", "zh-CN": "{name}：开始下载"},
    "fast_progress": {"en": "{name}: {done} of {total} MB", "zh-CN": "{name}：已下载 {done} / {total} MB"},
    "summary_loras": {"en": "LoRAs {loras}", "zh-CN": "使用 LoRA {loras}"},
    "estimate_loras": {"en": "(the LoRAs' {gb} GB included)", "zh-CN": "（含 LoRA 的 {gb} GB）"},
    "estimate_learned_time": {"en": "About {time} per video here (learned from {count} job(s) on this machine).",
                              "zh-CN": "在此每个视频约 {time}（根据本机 {count} 个任务得出）。"},
    "param_frames": {"en": "Frames", "zh-CN": "帧数"},
    "param_fps": {"en": "FPS", "zh-CN": "帧率"},
    "param_steps": {"en": "Steps", "zh-CN": "推理步数"},
    "param_guidance": {"en": "Guidance scale", "zh-CN": "引导系数"},
    "param_seed": {"en": "Seed", "zh-CN": "种子"},
    "param_prompt": {"en": "The prompt", "zh-CN": "提示词"},
    "param_negative_prompt": {"en": "The negative prompt", "zh-CN": "反向提示词"},
    # -- finishing steps: continue, loops, smoother motion, formats, upscale ----------
    "param_segments": {"en": "Segments", "zh-CN": "段数"},
    "param_loop": {"en": "Loop", "zh-CN": "循环"},
    "param_interpolate_fps": {"en": "Smoother motion", "zh-CN": "补帧"},
    "param_interpolate_method": {"en": "Smoother motion's method", "zh-CN": "补帧方法"},
    "param_upscale": {"en": "Upscale", "zh-CN": "放大"},
    "param_crf": {"en": "MP4 quality (CRF)", "zh-CN": "MP4 画质（CRF）"},
    "crf": {"en": "MP4 quality", "zh-CN": "MP4 画质"},
    "crf_help": {"en": "H.264's constant rate factor (CRF): lower is better and bigger. High (18) looks lossless; "
                       "each step down about halves the file.",
                 "zh-CN": "H.264 的恒定质量系数（CRF）：数值越小画质越好、文件越大。“高”（18）肉眼无损；每降一档文件约小一半。"},
    "quality_best": {"en": "Best (CRF {crf})", "zh-CN": "最佳（CRF {crf}）"},
    "quality_high": {"en": "High (CRF {crf})", "zh-CN": "高（CRF {crf}）"},
    "quality_medium": {"en": "Medium (CRF {crf})", "zh-CN": "中（CRF {crf}）"},
    "quality_low": {"en": "Small file (CRF {crf})", "zh-CN": "小文件（CRF {crf}）"},
    "param_formats": {"en": "Formats", "zh-CN": "格式"},
    "param_continue_from": {"en": "Continue from", "zh-CN": "续接视频"},
    "err_choice": {"en": "{name}: {value} is not available. Choose one of: {allowed}.",
                   "zh-CN": "{name}：不支持 {value}。可选：{allowed}。"},
    "err_interpolate_fps": {"en": "Smoother motion: {value} fps is not above the video's {fps} fps. Choose 0 (off) "
                                  "or {low} to {high}.",
                            "zh-CN": "补帧：{value} fps 不高于视频本身的 {fps} fps。请选 0（关闭）或 {low} 到 {high}。"},
    "err_too_many_frames": {"en": "The finished video would have {frames} frames; at most {limit} are allowed. Use "
                                  "fewer segments, frames or a lower smoother-motion frame rate.",
                            "zh-CN": "成片将有 {frames} 帧，最多允许 {limit} 帧。请减少段数、帧数，或降低补帧帧率。"},
    "err_finished_too_large": {"en": "The finished video would have {frames} frames of {size} ({megapixels} million "
                                  "pixels); at most {limit} million are allowed. Use a lower resolution, no upscale, "
                                  "fewer segments or frames, or a lower smoother-motion frame rate.",
                            "zh-CN": "成片将有 {frames} 帧 {size}（{megapixels} 百万像素），最多允许 {limit} 百万像素。"
                                     "请降低分辨率、不放大、减少段数或帧数，或降低补帧帧率。"},
    "err_continue_from": {"en": "Continue from: {value} is not a job id or a video name. Use the id of one of your "
                                "finished jobs, or a video name from the list of videos (video_....mp4).",
                          "zh-CN": "续接视频：{value} 不是任务 ID 或视频名。请填写你已完成任务的 ID，或视频列表中的视频名"
                                   "（video_....mp4）。"},
    "err_continue_missing": {"en": "There is no finished video {value} to continue. It may have been deleted; pick "
                                   "one from the list of videos.",
                             "zh-CN": "没有可续接的已完成视频 {value}，可能已被删除。请从视频列表中选择。"},
    "err_continue_size": {"en": "{name} must stay {value} when continuing {video}: the segments are joined into one "
                                "video. Leave it empty to keep it.",
                          "zh-CN": "续接 {video} 时{name}必须保持 {value}：各段会拼接成一个视频。留空即可沿用。"},
    "err_continue_gone": {"en": "The video this job continues ({video}) was deleted before the job ran. Pick another "
                                "video to continue.",
                          "zh-CN": "此任务要续接的视频（{video}）在任务运行前已被删除。请另选一个视频续接。"},
    "err_video_choice": {"en": "There is no video file format={format} part={part}. Use format=mp4 (the default), "
                               "gif, webm or png (a zip of the PNG frames), and part=final (the default), model or "
                               "segment (with mp4); format=zip for every file of the job in one zip.",
                         "zh-CN": "没有 format={format} part={part} 的视频文件。format 可用 mp4（默认）、gif、webm 或 png"
                                  "（PNG 逐帧图片的 zip）；"
                                  "part 可用 final（默认）、model 或 segment（仅 mp4）；format=zip 可把任务的所有文件打包成一个 zip。"},
    "err_video_not_made": {"en": "This job made no {format} file of part {part}: ask for it when submitting "
                                 "(formats=gif,webm,png; part=model exists when a loop, interpolation or upscale was "
                                 "applied; part=segment when more than one segment was made or a video continued). "
                                 "The job's JSON lists every file it made.",
                           "zh-CN": "此任务没有生成 {format} 格式的 {part} 文件：请在提交时选择（formats=gif,webm,png；"
                                    "part=model 仅在做了循环、补帧或放大时存在；part=segment 仅在生成多段或续接视频时存在）。"
                                    "任务的 JSON 列出了它生成的所有文件。"},
    "finishing": {"en": "More: continue, loop, smoother motion, GIF/WebM/PNG, upscale",
                  "zh-CN": "更多：续接、循环、补帧、GIF/WebM/PNG、放大"},
    "segments": {"en": "Segments", "zh-CN": "段数"},
    "segments_help": {"en": "A longer video: each segment starts from the last frame of the one before and is joined "
                            "on. Each one takes as long as a whole video.",
                      "zh-CN": "更长的视频：每一段从上一段的最后一帧开始，再拼接起来。每多一段，就多一个完整视频的时间。"},
    "loop": {"en": "Loop", "zh-CN": "循环"},
    "loop_help": {"en": "Boomerang plays forward then back; crossfade blends the end into the start. Either loops "
                        "without a jump (a fraction of a second).",
                  "zh-CN": "往返：先正放再倒放；交叉淡化：把结尾融入开头。两者都能无缝循环（不到一秒）。"},
    "loop_none": {"en": "No loop", "zh-CN": "不循环"},
    "loop_boomerang": {"en": "Boomerang", "zh-CN": "往返"},
    "loop_crossfade": {"en": "Crossfade", "zh-CN": "交叉淡化"},
    "interpolate": {"en": "Smoother motion", "zh-CN": "补帧（更流畅）"},
    "interpolate_help": {"en": "Adds frames between the model's by motion interpolation: same duration, more frames "
                               "per second. Must be above the FPS setting.",
                         "zh-CN": "用运动插值在模型的帧之间补帧：时长不变，每秒帧数更多。须高于帧率设置。"},
    "interpolate_off": {"en": "Off", "zh-CN": "关闭"},
    "interpolate_method": {"en": "How frames are added", "zh-CN": "补帧方式"},
    "interpolate_method_help": {
        "en": "RIFE (learned) puts what moves where it belongs between two frames, without smearing fast motion; "
              "on a CPU it takes longer. ffmpeg's minterpolate is quicker but smears fast motion. If RIFE cannot "
              "run, minterpolate adds the frames and the video's details say so.",
        "zh-CN": "RIFE（AI 学习的补帧）把运动的物体放在两帧之间应有的位置，快速运动也不拖影；在 CPU 上更慢。"
                 "ffmpeg 的 minterpolate 更快，但快速运动会拖影。RIFE 无法运行时改用 minterpolate，视频详情中会注明。"},
    "interpolate_rife": {"en": "RIFE (learned)", "zh-CN": "RIFE（AI 补帧）"},
    "interpolate_ffmpeg": {"en": "ffmpeg minterpolate", "zh-CN": "ffmpeg minterpolate（运动补偿）"},
    "done_interpolated": {"en": "frames added by {method}", "zh-CN": "由 {method} 补帧"},
    "done_interpolate_fallback": {"en": "RIFE could not run ({reason}); ffmpeg's minterpolate added the frames.",
                                  "zh-CN": "RIFE 无法运行（{reason}），已改用 ffmpeg 的 minterpolate 补帧。"},
    "formats": {"en": "Also save as", "zh-CN": "另存为"},
    "formats_help": {"en": "The MP4 is always made. A GIF plays anywhere (made smaller if it is too big); WebM is "
                           "small and plays in browsers; PNG frames are a zip of every frame as a lossless PNG, for "
                           "video editors.",
                     "zh-CN": "始终生成 MP4。GIF 到处都能播放（过大时会自动缩小）；WebM 体积小，可在浏览器中播放；"
                              "PNG 逐帧图片是把每一帧存为无损 PNG 的 zip，便于导入视频编辑软件。"},
    "format_png": {"en": "PNG frames (zip)", "zh-CN": "PNG 逐帧图片（zip）"},
    "upscale": {"en": "Upscale", "zh-CN": "放大"},
    "upscale_help": {"en": "2× doubles the width and height (Lanczos resampling: smoother, not more detail).",
                     "zh-CN": "2× 把宽和高各放大一倍（Lanczos 重采样：更平滑，但不会增加细节）。"},
    "finishing_costs": {"en": "**What each costs**, for 16 frames at 512p before this server has measured it (a 2-core "
                              "CPU; these run on the server's CPU, beside the GPU, but RIFE runs on the GPU when there "
                              "is one): each extra segment as long as the whole video again; a loop under 0.1 s; "
                              "smoother motion about 4 s with RIFE, 1.5 to 2.5 s with minterpolate; upscale about "
                              "0.5 s; GIF about 3 s; WebM about 1 s; PNG frames about 0.5 s. Each grows with the "
                              "finished video's frames x pixels (2× upscale: 4 times), and the estimate above counts "
                              "them at your settings, learning each one's real time on this server after a job.",
                        "zh-CN": "**各项耗时**（本服务器实测之前的参考值：512p、16 帧，在 2 核 CPU 上实测；这些步骤在服务器的 "
                                 "CPU 上运行，不占 GPU，但有 GPU 时 RIFE 在 GPU 上运行）：每多一段，就多一个完整视频的时间；"
                                 "循环不到 0.1 秒；补帧用 RIFE 约 4 秒，用 minterpolate 约 1.5 到 2.5 秒；放大约 0.5 秒；"
                                 "GIF 约 3 秒；WebM 约 1 秒；PNG 逐帧图片约 0.5 秒。每项都随成品视频的帧数 × 像素增长"
                                 "（2× 放大为 4 倍），上方的预估按您的设置计入它们，并在每个任务之后学习它们在本服务器上的实际耗时。"},
    "continue_video": {"en": "Continue this video", "zh-CN": "续接这个视频"},
    "continuing": {"en": "Continuing `{video}`: its last frame is the picture, and the new segment(s) are joined onto "
                         "it. Its prompt, settings and seed are in the form; resolution and FPS stay as they are.",
                   "zh-CN": "正在续接 `{video}`：以它的最后一帧为图片，新生成的片段会拼接在它后面。它的提示词、参数和种子已"
                            "填入表单；分辨率和帧率保持不变。"},
    "stop_continuing": {"en": "Start from a picture instead", "zh-CN": "改为从图片开始"},
    # -- A video of your own to continue (brought.py; issue 24) ------------------------
    "brought_label": {"en": "Or continue a video of your own (MP4 or WebM)", "zh-CN": "或续接你自己的视频（MP4 或 WebM）"},
    "brought_help": {"en": "Drop or pick a video: the server checks it, keeps its frames at this model's size nearest "
                           "its shape (the resolution above) and a frame rate the model takes, for this page only, and "
                           "the next Generate continues it from its last frame. Write what happens next in the prompt.",
                     "zh-CN": "拖入或选择一个视频：服务器会检查它，按本模型最接近其形状的尺寸（上面的分辨率）和模型支持的帧率"
                              "保存它的各帧，仅供本页面使用；下一次生成会从它的最后一帧续接。请在提示词里写接下来发生什么。"},
    "continuing_brought": {"en": "Continuing your video `{name}` ({frames} frames at {fps} fps, {width}x{height}): its "
                                 "last frame is the picture, and the new segment(s) are joined onto it. Resolution and "
                                 "FPS stay as they are.",
                           "zh-CN": "正在续接你的视频 `{name}`（{frames} 帧，{fps} fps，{width}x{height}）：以它的最后一帧为"
                                    "图片，新生成的片段会拼接在它后面。分辨率和帧率保持不变。"},
    "err_brought_not_video": {"en": "This file is not a video we can read. Drop an MP4 (H.264) or WebM video file, as a "
                                    "phone or an editor saves it.",
                              "zh-CN": "无法识别这个文件为视频。请拖入 MP4（H.264）或 WebM 视频文件，例如手机或剪辑软件保存的视频。"},
    "err_brought_too_big": {"en": "This video is {size} MB; at most {limit} MB can be continued. Trim it or save it "
                                  "smaller, then drop it again.",
                            "zh-CN": "这个视频有 {size} MB，可续接的视频最大 {limit} MB。请剪短或压缩后再拖入。"},
    "err_brought_too_long": {"en": "This video has {frames} frames at {fps} fps; at most {limit} ({seconds} s) can be "
                                   "continued. Trim it to its last seconds, then drop it again.",
                             "zh-CN": "这个视频按 {fps} fps 有 {frames} 帧，可续接的最多 {limit} 帧（{seconds} 秒）。"
                                      "请只保留最后几秒，再拖入。"},
    "err_brought_shape": {"en": "This video is {width}x{height}: a video to continue needs sides of at least {min_side} "
                                "pixels, at most {limit} million pixels and a shape no longer than {ratio}:1. Crop or "
                                "resize it, then drop it again.",
                          "zh-CN": "这个视频为 {width}x{height}：可续接的视频每边至少 {min_side} 像素，最多 {limit} 百万像素，"
                                   "长宽比不超过 {ratio}:1。请裁剪或缩放后再拖入。"},
    "err_brought_upload_again": {"en": "Drop the video again: the page sent a file that was not uploaded to this "
                                       "server (or is no longer there).",
                                 "zh-CN": "请重新拖入视频：页面发送的文件不是上传到本服务器的（或已不存在）。"},
    "err_brought_slow": {"en": "Reading this video took longer than {seconds} s, so it was stopped. Drop a shorter or "
                               "smaller video.",
                         "zh-CN": "读取这个视频超过了 {seconds} 秒，已停止。请拖入更短或更小的视频。"},
    "prompt_not_translated": {"en": "⚠️ This prompt is not in English, and the model reads English only: write it in "
                                    "English.",
                              "zh-CN": "⚠️ 这条提示词不是英文，而模型只读英文：请用英文书写。"},
    "done_translated": {"en": "The model read the prompt in English as: *{english}*",
                        "zh-CN": "模型读到的英文提示词：*{english}*"},
    "done_continued": {"en": "Continues `{video}`.", "zh-CN": "续接自 `{video}`。"},
    "done_segments": {"en": "{segments} segments", "zh-CN": "{segments} 段"},
    "done_step": {"en": "{step} {time} s", "zh-CN": "{step} {time} 秒"},
    "done_fps": {"en": "{model} fps made, {output} fps delivered", "zh-CN": "模型生成 {model} fps，输出 {output} fps"},
    "done_files": {"en": "Also made: {files}", "zh-CN": "另外生成：{files}"},
    "many_tab": {"en": "Many pictures", "zh-CN": "批量图片"},
    "many_tab_help": {"en": "Drop several pictures (or .zip files of pictures): one video each, with the settings of "
                            "the form above (resolution, frames, loop, formats...). They all appear under Your jobs.",
                      "zh-CN": "拖入多张图片（或图片的 .zip 压缩包）：每张生成一个视频，使用上方表单的参数（分辨率、帧数、循环、"
                               "格式等）。它们都会出现在“我的任务”中。"},
    "many_files": {"en": "Pictures or .zip files", "zh-CN": "图片或 .zip 文件"},
    "many_prompts": {"en": "Prompts", "zh-CN": "提示词"},
    "many_prompts_help": {"en": "One line for all the pictures, or one line per picture in their order (a .zip's "
                                "pictures by name).",
                          "zh-CN": "一行用于所有图片，或每张图片一行，按图片顺序（.zip 中的图片按文件名排序）。"},
    "many_queue_all": {"en": "Queue all", "zh-CN": "全部排队"},
    "stage_joining": {"en": "Joining segments", "zh-CN": "拼接片段"},
    "stage_looping": {"en": "Making the loop", "zh-CN": "制作循环"},
    "stage_interpolating": {"en": "Adding frames", "zh-CN": "补帧"},
    "stage_upscaling": {"en": "Upscaling", "zh-CN": "放大"},
    "stage_gif": {"en": "Writing the GIF", "zh-CN": "生成 GIF"},
    "stage_webm": {"en": "Writing the WebM", "zh-CN": "生成 WebM"},
    "stage_png": {"en": "Writing the PNG frames", "zh-CN": "生成 PNG 逐帧图片"},
    "stage_segment": {"en": "Segment {segment} of {segments}: {stage}", "zh-CN": "第 {segment}/{segments} 段：{stage}"},
    # -- workers: one per GPU, processes and Ray actors (jobs.workers) ----------------
    "err_worker_lost": {"en": "The worker {worker} stopped: its process ended or no longer answers.",
                        "zh-CN": "工作进程 {worker} 已停止：进程已退出或不再响应。"},
    "msg_worker_lost_requeued": {"en": "The worker running this job stopped; it is back in the queue "
                                       "(attempt {attempt}).",
                                 "zh-CN": "运行此任务的工作进程已停止；任务已重新排队（第 {attempt} 次尝试）。"},
    "err_worker_lost_final": {"en": "The worker running this job stopped {attempts} times, so it was not run again. "
                                    "Press Retry to try once more; if it keeps happening, the server log says why "
                                    "the worker stopped (for example out of memory).",
                              "zh-CN": "运行此任务的工作进程已停止 {attempts} 次，因此不再重试。可点击重试再试一次；"
                                       "如果反复发生，请查看服务器日志中工作进程停止的原因（例如内存不足）。"},
    "status_worker_starting": {"en": "Worker {worker} is starting.", "zh-CN": "工作进程 {worker} 正在启动。"},
    "status_worker_lost": {"en": "Worker {worker} stopped; it is being started again.",
                           "zh-CN": "工作进程 {worker} 已停止，正在重新启动。"},
    "workers_title": {"en": "Workers", "zh-CN": "工作进程"},
    "workers_none": {"en": "No workers.", "zh-CN": "没有工作进程。"},
    "workers_summary": {"en": "{busy} busy, {ready} ready of {total}.",
                        "zh-CN": "共 {total} 个：{busy} 个忙碌，{ready} 个空闲就绪。"},
    "col_worker": {"en": "Worker", "zh-CN": "工作进程"},
    "col_machine": {"en": "Machine", "zh-CN": "机器"},
    "col_device": {"en": "Device", "zh-CN": "设备"},
    "col_memory_mode": {"en": "Memory mode", "zh-CN": "显存模式"},
    "col_worker_state": {"en": "State", "zh-CN": "状态"},
    "col_current_job": {"en": "Job", "zh-CN": "任务"},
    "col_jobs_done": {"en": "Done", "zh-CN": "已完成"},
    "worker_state_loading": {"en": "loading", "zh-CN": "加载中"},
    "worker_state_ready": {"en": "ready", "zh-CN": "就绪"},
    "worker_state_busy": {"en": "busy", "zh-CN": "忙碌"},
    "worker_state_lost": {"en": "stopped", "zh-CN": "已停止"},
    "worker_state_restarting": {"en": "restarting", "zh-CN": "重启中"},
    "worker_state_error": {"en": "error", "zh-CN": "错误"},
    # -- prompt translation: prompts not in English, translated on the server (translation.*) ----
    "translator_ready": {"en": "Chinese prompts are translated to English before the model reads them ({name}).",
                         "zh-CN": "中文提示词会先翻译成英文，再交给模型（{name}）。"},
    "translator_loading": {"en": "The prompt translator ({name}) is loading. English prompts work now; Chinese ones "
                                 "once it is ready.",
                           "zh-CN": "提示词翻译模型（{name}）正在加载。英文提示词现在就能用，中文提示词需等它就绪。"},
    "translator_downloading": {"en": "Downloading the prompt translator ({name}, once): {done} of {total} MB. English "
                                     "prompts work now; Chinese ones once it is ready.",
                               "zh-CN": "正在下载提示词翻译模型（{name}，仅需一次）：{done} / {total} MB。英文提示词现在"
                                        "就能用，中文提示词需等它就绪。"},
    "err_translator_loading": {"en": "The prompt translator is still loading, so this prompt cannot be translated yet. "
                                     "Try again in a minute, or write the prompt in English.",
                               "zh-CN": "提示词翻译模型仍在加载，暂时无法翻译这条提示词。请一分钟后再试，或用英文书写提示词。"},
    "translator_off": {"en": "Prompts are not translated (translation.enabled is off) and the model reads English "
                             "only: write the prompt in English, or set translation.enabled to auto in "
                             "config/model_config.yaml and restart (the translator downloads once, about 300 MB).",
                       "zh-CN": "提示词不会被翻译（translation.enabled 为 off），而模型只读英文：请用英文书写提示词，或在 "
                                "config/model_config.yaml 中把 translation.enabled 设为 auto 后重启（翻译模型只需下载一次，"
                                "约 300 MB）。"},
    "translator_not_downloaded": {
        "en": "No translator is available: {repo} is not downloaded yet. The model reads English only: write the "
              "prompt in English, or start the app with translation.enabled auto or on (config/model_config.yaml): "
              "it downloads once at start-up, about 300 MB.",
        "zh-CN": "没有可用的翻译模型：{repo} 尚未下载。模型只读英文：请用英文书写提示词，或在 config/model_config.yaml 中把 "
                 "translation.enabled 设为 auto 或 on 再启动应用：它会在启动时下载一次，约 300 MB。"},
    "translator_offline": {
        "en": "No translator is available: {repo} is not in {folder} and HF_HUB_OFFLINE is set. The model reads "
              "English only: write the prompt in English, or unset HF_HUB_OFFLINE (or copy the translator into "
              "{folder}) and restart; it downloads once, about 300 MB.",
        "zh-CN": "没有可用的翻译模型：{repo} 不在 {folder} 中，且设置了 HF_HUB_OFFLINE。模型只读英文：请用英文书写提示词，"
                 "或取消 HF_HUB_OFFLINE（或把翻译模型复制到 {folder}）后重启；它只需下载一次，约 300 MB。"},
    "translator_download_failed": {
        "en": "No translator is available: downloading {repo} failed ({error}). The model reads English only, so a "
              "Chinese prompt would go to it untranslated: write the prompt in English. To translate Chinese "
              "prompts, set up the translator: connect this server to the internet (or set HF_ENDPOINT to a "
              "mirror such as https://hf-mirror.com), or copy a downloaded opus-mt-zh-en folder to {folder}, then "
              "restart; it downloads once, about 300 MB.",
        "zh-CN": "没有可用的翻译模型：下载 {repo} 失败（{error}）。模型只读英文，中文提示词会未经翻译直接交给模型：请用英文"
                 "书写提示词。如需翻译中文提示词，请配置翻译模型：让本服务器能上网（或把 HF_ENDPOINT 设为镜像站，如 "
                 "https://hf-mirror.com），或把已下载的 opus-mt-zh-en 文件夹复制到 {folder}，然后重启；它只需下载一次，"
                 "约 300 MB。"},
    "translator_folder_missing": {
        "en": "No translator is available: the folder {source} does not exist. The model reads English only: write "
              "the prompt in English, or set translation.source in config/model_config.yaml to a MarianMT folder or "
              "a hub id such as Helsinki-NLP/opus-mt-zh-en and restart.",
        "zh-CN": "没有可用的翻译模型：文件夹 {source} 不存在。模型只读英文：请用英文书写提示词，或在 config/model_config.yaml "
                 "中把 translation.source 设为 MarianMT 模型文件夹或 Helsinki-NLP/opus-mt-zh-en 这样的 Hub 模型名后重启。"},
    "translator_load_failed": {
        "en": "No translator is available: loading {folder} failed ({error}). The model reads English only: write "
              "the prompt in English, or make sure {folder} holds a whole MarianMT model (config.json, the weights, "
              "source.spm, target.spm, vocab.json) and restart; a downloaded one comes again once its folder is "
              "deleted.",
        "zh-CN": "没有可用的翻译模型：加载 {folder} 失败（{error}）。模型只读英文：请用英文书写提示词，或确认 {folder} "
                 "中有完整的 MarianMT 模型（config.json、权重、source.spm、target.spm、vocab.json）后重启；"
                 "下载来的模型删除其文件夹后会重新下载。"},
    "prompt_translated": {"en": "The model reads the prompt in English: “{text}”",
                          "zh-CN": "模型读取的是提示词的英文译文：“{text}”"},
    # -- finishing steps (finishing.py): interpolation, upscaling, GIF, WebM, continuing a video -------
    "finish_interpolate": {"en": "Frame interpolation", "zh-CN": "插帧"},
    "finish_upscale": {"en": "Upscaling", "zh-CN": "放大"},
    "finish_gif": {"en": "The GIF", "zh-CN": "GIF 动图"},
    "finish_webm": {"en": "The WebM video", "zh-CN": "WebM 视频"},
    "finish_png": {"en": "The PNG frames", "zh-CN": "PNG 逐帧图片"},
    "err_png_frames_failed": {
        "en": "The PNG frames could not be written ({detail}). Try again, or leave them out; if it keeps failing, "
              "check the free disk space and the log file in logs/.",
        "zh-CN": "无法写入 PNG 逐帧图片（{detail}）。请重试，或不生成它们；如果反复失败，请检查磁盘剩余空间和 logs/ 中的日志文件。"},
    "err_finishing_failed": {
        "en": "{step} failed (ffmpeg: {detail}). Try again, or leave this step out; if it keeps failing, the log "
              "file in logs/ has the details.",
        "zh-CN": "{step}失败（ffmpeg：{detail}）。请重试，或不用这一步；如果反复失败，请查看 logs/ 中的日志文件。"},
    "err_finished_file_wrong": {
        "en": "{step} came out wrong: the file has {frames} frames of {width}x{height}, expected {expected_frames} "
              "of {expected_width}x{expected_height}. Please try again.",
        "zh-CN": "{step}生成有误：文件有 {frames} 帧、{width}x{height}，应为 {expected_frames} 帧、"
                 "{expected_width}x{expected_height}。请重试。"},
    "err_gif_too_large": {
        "en": "The GIF does not fit in {max_mb} MB even at {width} px wide and {fps} frames per second ({size_mb} "
              "MB). Allow a larger GIF, or make a shorter video.",
        "zh-CN": "即使缩小到宽 {width} 像素、每秒 {fps} 帧，GIF 仍有 {size_mb} MB，超过 {max_mb} MB 的上限。"
                 "请放宽 GIF 的大小上限，或生成更短的视频。"},
    "gif_capped": {
        "en": "The GIF was made smaller to fit in {max_mb} MB: {width} px wide at {fps} frames per second, instead "
              "of {original_width} px at {original_fps}.",
        "zh-CN": "为了不超过 {max_mb} MB，GIF 已缩小为宽 {width} 像素、每秒 {fps} 帧（原为宽 {original_width} 像素、"
                 "每秒 {original_fps} 帧）。"},
    "tab_working": {"en": "Working", "zh-CN": "生成中"},
    "tab_done": {"en": "Done", "zh-CN": "完成"},
    "tab_finished": {"en": "Finished", "zh-CN": "已结束"},
    "notify_done_title": {"en": "Your video is ready", "zh-CN": "视频已生成"},
    "notify_done_body": {"en": "Image-to-Video finished your video. Click to watch it.",
                         "zh-CN": "Image-to-Video 已生成您的视频，点击查看。"},
    "msg_untranslated": {
        "en": "The {fields} went to the model untranslated: it is not in English, no translator was available, and "
              "the model reads English only, so the video may not follow it. Write it in English, or set up the "
              "translator (the note under the prompt says how).",
        "zh-CN": "{fields} 未经翻译就交给了模型：它不是英文，当时没有可用的翻译模型，而模型只读英文，所以视频可能不符合它。"
                 "请用英文书写，或配置好翻译模型（提示词下方的说明写了怎么做）。"},
    "msg_files_not_made": {
        "en": "The video is done, but {files} could not be made: the MP4 video is kept without it. {reason}",
        "zh-CN": "视频已完成，但无法生成 {files}：已保留不含该文件的 MP4 视频。{reason}"},
    "err_video_unreadable": {
        "en": "The video file {name} cannot be read ({detail}). Pick another video, or make this one again.",
        "zh-CN": "无法读取视频文件 {name}（{detail}）。请换一个视频，或重新生成这个视频。"},
    "err_video_no_frames": {
        "en": "The video file {name} has no frames. Pick another video, or make this one again.",
        "zh-CN": "视频文件 {name} 里没有任何帧。请换一个视频，或重新生成这个视频。"},
    # -- many pictures at once (ui/many.py): "Queue all" -------------------------------------------
    "many_no_files": {"en": "Add pictures, or .zip files of pictures, first.",
                      "zh-CN": "请先添加图片，或装有图片的 .zip 文件。"},
    "many_not_image": {"en": "not a picture we can read (PNG, JPEG, WebP, GIF, BMP or TIFF); left out.",
                       "zh-CN": "不是可读取的图片（PNG、JPEG、WebP、GIF、BMP 或 TIFF），已跳过。"},
    "many_file_too_large": {"en": "larger than {limit_mb} MB, the limit for one picture; left out. Make it smaller "
                                  "and add it again.",
                            "zh-CN": "超过单张图片 {limit_mb} MB 的上限，已跳过。请缩小后重新添加。"},
    "many_total_too_large": {"en": "left out, with every picture after it: the pictures together unpack to more "
                                   "than {limit_mb} MB, the limit for one Queue all. Queue the rest in a second "
                                   "go.",
                             "zh-CN": "已跳过，其后的图片也都跳过：这些图片解压后合计超过一次“全部排队”"
                                      "{limit_mb} MB 的上限。请把其余图片分一次再排队。"},
    "many_too_many": {"en": "left out, with every picture after it: at most {limit} pictures are queued at once "
                            "(the size of the queue).",
                      "zh-CN": "已跳过，其后的图片也都跳过：一次最多排队 {limit} 张图片（队列的容量）。"},
    "many_zip_damaged": {"en": "this .zip is damaged or is not a .zip file. Make it again and add it again.",
                         "zh-CN": "这个 .zip 文件已损坏或不是 .zip 文件。请重新压缩后再添加。"},
    "many_zip_member_damaged": {"en": "damaged inside the .zip (it does not unpack to what the .zip says); "
                                      "left out. Make the .zip again.",
                                "zh-CN": "在 .zip 中已损坏（解压结果与 .zip 记录的不符），已跳过。请重新压缩。"},
    "many_zip_encrypted": {"en": "protected by a password, which this page cannot open; left out. Make the .zip "
                                 "again without a password.",
                           "zh-CN": "受密码保护，本页面无法打开，已跳过。请不加密码重新压缩。"},
    "many_zip_method": {"en": "packed with a compression method this server cannot unpack; left out. Make the "
                              ".zip again with the usual (Deflate) compression.",
                        "zh-CN": "使用了本服务器无法解压的压缩方式，已跳过。请用常规的 Deflate 压缩方式重新压缩。"},
    "many_prompt_lines": {"en": "The prompt has {lines} lines for {pictures} pictures, so nothing was queued. "
                                "Write one line for all the pictures, or one line per picture in their order.",
                          "zh-CN": "提示词有 {lines} 行，图片有 {pictures} 张，因此没有排队任何任务。"
                                   "请写一行提示词用于所有图片，或按图片顺序每张写一行。"},
    "many_queued": {"en": "**Queued: {count} video(s).** Follow them under Your jobs.",
                    "zh-CN": "**已排队：{count} 个视频。** 可在“我的任务”中查看进度。"},
    "many_none_queued": {"en": "**No video was queued.**", "zh-CN": "**没有排队任何视频。**"},
    "many_stopped": {"en": "The queue stopped taking jobs after {queued}: the other {left} picture(s) were not "
                           "queued. {reason}",
                     "zh-CN": "排队 {queued} 个后队列不再接受任务：其余 {left} 张图片没有排队。{reason}"},
    "many_refused_title": {"en": "Not queued ({count}):", "zh-CN": "未排队（{count} 个）："},
    "many_more_refused": {"en": "… and {count} more.", "zh-CN": "……另有 {count} 个。"},
    # -- workers on a Ray cluster (jobs.backend: ray) ------------------------------------
    "err_ray_not_installed": {"en": "jobs.backend is ray, but Ray is not installed here. Install it with "
                                    "'pip install -r requirements-ray.txt', or set jobs.backend: local.",
                              "zh-CN": "jobs.backend 设为 ray，但本机没有安装 Ray。请用 "
                                       "'pip install -r requirements-ray.txt' 安装，或设置 jobs.backend: local。"},
    "err_ray_unreachable": {"en": "Cannot join the Ray cluster at {address} ({error}). Start its head first "
                                  "('ray start --head' on that machine; auto means this machine), check "
                                  "jobs.ray_address and that its port is open from here.",
                            "zh-CN": "无法加入位于 {address} 的 Ray 集群（{error}）。请先启动它的头节点（在该机器上运行 "
                                     "'ray start --head'；auto 表示本机），并检查 jobs.ray_address 以及从本机能否访问其端口。"},
    "err_ray_no_gpus": {"en": "The Ray cluster at {address} has no {resource} for a worker yet. Add a GPU machine "
                              "to it (bash start_app.sh worker --head HEAD:PORT on that machine), then start "
                              "the app again.",
                        "zh-CN": "位于 {address} 的 Ray 集群还没有可供工作进程使用的 {resource}。请先加入一台 GPU 机器"
                                 "（在该机器上运行 bash start_app.sh worker --head 头节点:端口），再重新启动应用。"},
}


#: The shipped presets' names in Chinese; presets added in the config show their own name.
PRESET_NAMES = {"Quick preview": "快速预览", "Standard": "标准", "High quality": "高质量", "Fast": "极速",
                "Short 720p": "720p 短片"}


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
