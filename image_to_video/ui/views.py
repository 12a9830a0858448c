"""What the page shows, as pure functions of the state: Markdown texts and table values.

Nothing here touches Gradio, the queue, the model or the disk: each function takes
the facts it renders (a ``ModelStatus``, a ``Job``, a video's record, ...) and the
reader's language, so every text can be checked without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import GenerationSettings
from ..estimates import LearnedTimes, Plan, estimate, nearest_fitting
from ..i18n import format_seconds, normalise_language, t
from ..job_store import QUEUED, RUNNING, Job
from ..model_status import ModelState, ModelStatus
from ..progress import Progress
from ..translate import needs_translation

#: The "Your jobs" table; the job id is last (a click opens the job of that row).
JOB_COLUMNS = ("created", "prompt", "resolution", "frames", "seed", "state", "job")

_ICONS = {ModelState.READY: "🟢", ModelState.ERROR: "🔴", ModelState.DOWNLOADING: "⬇️",
          ModelState.LOADING: "⏳", ModelState.NOT_LOADED: "⏳"}


def headers(columns: Iterable[str], lang: str) -> list[str]:
    return [t(f"col_{column}", lang) for column in columns]


def title_html(logo_svg: str, lang: str, model: str = "I2VGen-XL") -> str:
    return (f'<div class="app-header">{logo_svg}<div><h1>Image-to-Video</h1>'
            f"<p>{t('subtitle', lang, model=model)}</p></div></div>")


def manual_name(lang: str) -> str:
    """The user manual's file in docs/ for ``lang``."""
    return "MANUAL.zh-CN.md" if normalise_language(lang) == "zh-CN" else "MANUAL.md"


def status_text(status: ModelStatus, lang: str) -> str:
    """The model's state line, its device, and a reminder when the demo model serves."""
    state = t(f"model_state_{status.state.value}", lang)
    text = f"{_ICONS[status.state]} **{state}**"
    if status.state is not ModelState.READY:
        text += f": {status.text(lang)}"
    if status.device_key:
        text += "  \n" + t("device_line", lang, device=status.device_text(lang))
    if status.is_demo and status.state is ModelState.READY:
        text += "  \n" + t("demo_serving", lang)
    return text


def estimate_text(settings: GenerationSettings, lang: str, resolution: str, frames, steps, *,
                  gpu_gb: float | None, gpu_name: str | None, demo: bool, untraced: str = "",
                  needs: Mapping[str, float] | None = None, plan: Plan | None = None,
                  learned: LearnedTimes | None = None, key: str | None = None, lora_gb: float = 0.0) -> str:
    """Peak GPU memory and time per video for these settings (``plan``: the whole job's work, finishing
    steps included; ``learned``/``key``: the times learned from jobs made on this machine; on a CPU only
    the time); a warning with the nearest fitting
    setting when they will not fit in the GPU. Empty for an unknown resolution; for a model whose
    memory is not traced by ``estimates`` (``untraced``: its name), the peak its own traced table gives
    (``needs``: GB per memory mode, fastest first, ``lora_gb`` of it the LoRAs') and the mode that fits
    this GPU, else says it has none; with the time learned here once a job of it ran."""
    side = settings.resolutions.get(resolution)
    if side is None:
        return ""
    if untraced and needs:
        seconds = learned.seconds(key, plan) if learned is not None and key and plan is not None else None
        timing = t("estimate_learned_time", lang, time=format_seconds(seconds, lang), count=learned.jobs(key)) \
            if seconds is not None else t("estimate_no_time_yet", lang, model=untraced)
        if not gpu_gb:  # a CPU: no GPU memory to speak of
            return timing
        text = t("estimate_table", lang, model=untraced, peak=f"{needs['gpu']:.1f}",
                 lowest=f"{min(needs.values()):.1f}")
        if lora_gb >= 0.05:
            text += " " + t("estimate_loras", lang, gb=f"{lora_gb:.1f}")
        fitting = next((mode for mode, gb in needs.items() if gb <= gpu_gb * 0.92), None)
        text += "  \n" + (t("estimate_table_mode", lang, gpu=f"{gpu_gb:.0f}", mode_key=f"mode_{fitting}")
                          if fitting else t("estimate_table_none", lang, gpu=f"{gpu_gb:.0f}"))
        return text + "  \n" + timing
    if untraced:
        return t("estimate_untraced", lang, model=untraced)
    guess = estimate(side, int(frames), int(steps), gpu_gb=gpu_gb, demo=demo, gpu_name=gpu_name, plan=plan,
                     learned=learned, key=key)
    if guess.learned_jobs:
        where = t("estimate_where_learned", lang, count=guess.learned_jobs)
    elif guess.time_measured_on:
        where = t("estimate_where_measured", lang, gpu=guess.time_measured_on)
    else:
        where = t("estimate_where_demo" if demo else "estimate_where_gpu", lang)
    if plan is not None and len(plan.finishing) > 1:
        where += t("estimate_with_finishing", lang, frames=plan.output_frames)
    if not gpu_gb:  # a CPU: no GPU memory to speak of
        return t("estimate_cpu", lang, time=format_seconds(guess.seconds, lang), where=where)
    text = t("estimate", lang, peak=f"{guess.peak_gb:.1f}", time=format_seconds(guess.seconds, lang),
             gpu=t("estimate_gpu", lang, gpu=f"{gpu_gb:.0f}") if gpu_gb else "", where=where)
    if guess.peak_measured_on:
        text += " " + t("estimate_note_measured", lang, gpu=guess.peak_measured_on)
    else:
        text += " " + t("estimate_note", lang)
    if not guess.fits:
        limits = settings.limits("num_frames")
        nearest = nearest_fitting(settings.resolutions, (int(limits.min), int(limits.max)), resolution,
                                  int(frames), gpu_gb)
        text += "  \n" + (t("estimate_too_big", lang, resolution=nearest[0], frames=nearest[1]) if nearest
                          else t("estimate_nothing_fits", lang))
    return text


def model_note(entry: Mapping[str, Any] | None, lang: str, *, gpu_gb: float | None = None) -> str:
    """Under the model picker: how the chosen model stands here (``catalogue.model_list``'s entry): ready
    on which worker, loading, why it failed, on disk or the size to download, and the GPU memory its
    default video needs (all on the GPU, and in the leanest memory mode), with which mode fits this GPU."""
    if not entry:
        return ""
    state = entry["state"]
    parts = [f"**{entry['title']}**"]
    if state == "ready":
        parts.append(t("picker_state_ready_on", lang, workers=", ".join(entry["workers"])) if entry["workers"]
                     else t("picker_state_ready", lang))
    elif state == "loading":
        parts.append(t("picker_state_loading", lang))
    elif state == "error":
        parts.append(t("picker_state_error", lang, message=entry["message"] or ""))
    elif state == "on_disk":
        parts.append(t("picker_state_demo" if entry["demo"] else "picker_state_on_disk", lang))
    else:
        parts.append(t("picker_state_not_downloaded", lang, size=f"{entry['download_gb']:g}"))
    needs = entry.get("memory_gb") or {}
    if needs:
        parts.append(t("model_needs", lang, resolution=entry["resolution"], frames=entry["num_frames"],
                       peak=f"{needs['gpu']:.1f}", lowest=f"{min(needs.values()):.1f}"))
        if gpu_gb:
            fitting = next((mode for mode, gb in needs.items() if gb <= gpu_gb * 0.92), None)
            parts.append(t("estimate_table_mode", lang, gpu=f"{gpu_gb:.0f}", mode_key=f"mode_{fitting}")
                         if fitting else t("estimate_table_none", lang, gpu=f"{gpu_gb:.0f}"))
    parts.append(entry["licence"])
    return " · ".join(parts)


def crop_text(picture: tuple[int, int] | None, video: tuple[int, int] | None, aspect: str, lang: str) -> str:
    """Under the picture: the video's size and how much of a ``picture`` (width, height) the crop to
    ``video`` (width, height) cuts off; empty without a picture."""
    if not picture or not video:
        return ""
    (pw, ph), (vw, vh) = picture, video
    scale = max(vw / pw, vh / ph)  # cover the video, then cut what is left over
    cut_w, cut_h = 1 - vw / (pw * scale), 1 - vh / (ph * scale)
    if cut_w >= 0.005:
        cut = t("crop_sides", lang, percent=f"{100 * cut_w:.0f}")
    elif cut_h >= 0.005:
        cut = t("crop_top_bottom", lang, percent=f"{100 * cut_h:.0f}")
    else:
        cut = t("crop_none", lang)
    return t("crop_note", lang, width=vw, height=vh, aspect=aspect, cut=cut)


def state_label(state: str, lang: str) -> str:
    """done, failed, cancelled, interrupted (and running) in ``lang``."""
    return t("state_running_plain" if state == RUNNING else f"state_{state}", lang)


def job_state_text(job: Job, position: int | None, lang: str) -> str:
    """A job's state as its table row says it: its place in the queue, or the stage it is at."""
    if job.state == QUEUED:
        return t("state_queued", lang, position=position or 1)
    if job.state == RUNNING and job.total:
        return t("state_running", lang, stage=t(f"stage_{job.stage}", lang), done=job.done, total=job.total)
    return state_label(job.state, lang)


def job_message(job: Job, position: int | None, lang: str) -> str:
    """A job that has no video to show: its state in bold (a queued one's place in the queue), and its
    message if it has one."""
    message = job.localized_message(lang)
    return f"**{job_state_text(job, position, lang)}**" + (f": {message}" if message else "")


def job_table(jobs: Iterable[Job], position: Callable[[str], int | None], lang: str) -> dict:
    """The "Your jobs" table; ``position`` gives a queued job's place in the queue."""
    rows = []
    for job in jobs:
        created = datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([created, job.params.get("prompt", ""), job.params.get("resolution"),
                     job.params.get("num_frames"), job.params.get("seed"),
                     job_state_text(job, position(job.id) if job.state == QUEUED else None, lang), job.id])
    return {"headers": headers(JOB_COLUMNS, lang), "data": rows}


def waiting_text(position: int | None, lang: str) -> str:
    return t("waiting", lang, position=position or 1)


def progress_text(report: Progress, lang: str) -> str:
    """The progress bar's words: the stage, how far it is, and the time left when known."""
    text = f"{t('stage_' + report.stage, lang)} {report.done}/{report.total}"
    if report.eta is not None:
        text += " · " + t("time_left", lang, time=format_seconds(report.eta, lang))
    return text


def result_text(record: Mapping[str, Any], lang: str) -> str:
    """A finished video as the page describes it, from its record (with its ``record_path``)."""
    if record.get("record_missing"):
        return t("err_record_missing", lang)
    p, timing, v = record["parameters"], record["timings_s"], record["video_info"]
    text = t("done", lang, time=format_seconds(timing["total"], lang), width=v["width"], height=v["height"],
             frames=v["frames"], fps=f"{v['fps']:g}", duration=f"{v['duration_s']:.1f}", seed=p["seed"],
             video=record["video"], record=Path(record["record_path"]).name)
    text += "".join("  \n" + line for line in _finishing_lines(record, lang))
    if record["model"]["demo"]:
        text += "  \n" + t("done_demo", lang)
    return text


def _finishing_lines(record: Mapping[str, Any], lang: str) -> list[str]:
    """What a video's record says beyond the model's own frames: the English the model read, the
    video it continues, the steps after the model and their times, the other files made."""
    p, timing, lines = record["parameters"], record.get("timings_s", {}), []
    if p.get("prompt_en"):
        lines.append(t("done_translated", lang, english=p["prompt_en"]))
    if record.get("untranslated"):
        lines.append("⚠️ " + t("msg_untranslated", lang, fields=", ".join(record["untranslated"])))
    if p.get("continue_from"):
        lines.append(t("done_continued", lang, video=p["continue_from"]))
    steps = [t("done_step", lang, step=t(f"stage_{stage}", lang), time=f"{timing[key]:.1f}")
             for stage, key in (("joining", "joining"), ("looping", "looping"), ("interpolating", "interpolating"),
                                ("upscaling", "upscaling"), ("gif", "gif"), ("webm", "webm"), ("png", "png"))
             if key in timing]
    if p.get("segments", 1) > 1:
        steps.insert(0, t("done_segments", lang, segments=p["segments"]))
    fps = record.get("fps") or {}
    if fps.get("output") and fps.get("output") != fps.get("model"):
        steps.append(t("done_fps", lang, model=fps["model"], output=fps["output"]))
    made_by = record.get("interpolation") if isinstance(record.get("interpolation"), dict) else {}
    if made_by.get("method") in ("rife", "ffmpeg"):  # which method added the frames (records since RIFE)
        steps.append(t("done_interpolated", lang, method=t(f"interpolate_{made_by['method']}", lang)))
    if steps:
        lines.append(" · ".join(steps))
    if made_by.get("fallback"):
        lines.append("⚠️ " + t("done_interpolate_fallback", lang, reason=made_by["fallback"]))
    others = [entry for entry in record.get("files", []) if isinstance(entry, dict) and entry.get("kind") != "video"]
    if others:
        lines.append(t("done_files", lang, files=", ".join(f"`{entry['name']}`" for entry in others)))
    lines += [t("gif_capped", lang, max_mb=f"{entry['max_mb']:g}", width=entry["width"], fps=f"{entry['fps']:g}",
                original_width=entry["original_width"], original_fps=f"{entry['original_fps']:g}")
              for entry in others if entry.get("capped")]
    lines += ["⚠️ " + t("msg_files_not_made", lang, files=f"`{entry.get('name')}`", reason=entry.get("error", ""))
              for entry in record.get("not_made", []) if isinstance(entry, dict)]  # a GIF/WebM/PNG zip that failed
    return lines


def prompt_note(prompt: Any, status, lang: str, *, reads_it: str = "") -> str:
    """Under the prompt: nothing for an English prompt; for another language, whether it will be
    translated (``status``, a ``translate.TranslatorStatus``; None: there is no translator), or that
    the model reads it as written (``reads_it``: the model's name)."""
    if not isinstance(prompt, str) or not needs_translation(prompt):
        return ""
    if reads_it:
        return t("prompt_read_as_written", lang, model=reads_it)
    if status is None:
        return t("prompt_not_translated", lang)
    return ("ℹ️ " if status.state == "ready" else "⚠️ ") + status.message(lang)


#: The page's Workers table, in ``GET /api/workers``' words.
WORKER_COLUMNS = ("worker", "machine", "device", "memory_mode", "worker_state", "current_job", "jobs_done")


def workers_markdown(workers: list[Mapping[str, Any]], lang: str) -> str:
    """The page's Workers panel: how many are busy and ready, then one table row per worker (as
    ``GET /api/workers`` lists them: id, machine, device, memory_mode, state, current_job, jobs_done)."""
    if not workers:
        return t("workers_none", lang)
    busy = sum(worker["state"] == "busy" for worker in workers)
    ready = sum(worker["state"] == "ready" for worker in workers)
    summary = t("workers_summary", lang, busy=busy, ready=ready, total=len(workers))
    lines = [f"**{t('workers_title', lang)}**: {summary}",
             "", "| " + " | ".join(headers(WORKER_COLUMNS, lang)) + " |", "|" + "---|" * len(WORKER_COLUMNS)]
    for worker in workers:
        cells = (worker["id"], worker["machine"], worker["device"], worker["memory_mode"] or "–",
                 t(f"worker_state_{worker['state']}", lang), worker["current_job"] or "–", worker["jobs_done"])
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def _format_list(formats: Any) -> list[str]:
    """The files besides the MP4 a ``formats`` value asks for (a list from the page, "mp4,gif" from a record)."""
    items = formats.split(",") if isinstance(formats, str) else list(formats or [])
    return [str(item) for item in items if item and item != "mp4"]


def options_summary(lang: str, *, seed=None, random_seed=True, fps=None, aspect=None, continue_from="",
                    segments=1, loop="none", interpolate_fps=0, interpolate_method="rife", formats=(),
                    upscale=1, model: str = "") -> str:
    """Beside Generate: one line naming every option the next video gets, so that none applies unseen."""
    parts = [model] if model else []
    parts.append(t("summary_random_seed", lang) if random_seed or seed in (None, "")
                 else t("summary_seed", lang, seed=seed))
    if fps not in (None, ""):
        parts.append(t("summary_fps", lang, fps=fps))
    if aspect not in (None, "", "auto"):
        parts.append(t("summary_aspect", lang, aspect=aspect))
    finishing = []
    if continue_from:
        finishing.append(t("summary_continues", lang, video=continue_from))
    if segments not in (None, "", 1, "1"):
        finishing.append(t("summary_segments", lang, segments=segments))
    if loop not in (None, "", "none"):
        finishing.append(t("summary_loop", lang, loop=t(f"loop_{loop}", lang)))
    if interpolate_fps not in (None, "", 0, "0"):
        method = t(f"interpolate_{interpolate_method}", lang) if interpolate_method else ""
        finishing.append(t("summary_interpolate", lang, fps=interpolate_fps, method=method))
    extra = _format_list(formats)
    if extra:
        names = {"gif": "GIF", "webm": "WebM", "png": t("format_png", lang)}
        finishing.append(t("summary_formats", lang, formats=", ".join(names.get(item, item) for item in extra)))
    if upscale not in (None, "", 1, "1"):
        finishing.append(t("summary_upscale", lang, factor=upscale))
    parts += finishing or [t("summary_plain", lang)]
    return f"{t('summary_title', lang)} " + " · ".join(str(part) for part in parts)


def is_plain(*, random_seed=True, continue_from="", segments=1, loop="none", interpolate_fps=0, formats=(),
             upscale=1, **_ignored) -> bool:
    """Whether the next video is a plain one: a random seed, no continuation, no finishing."""
    return bool(random_seed) and not continue_from and segments in (None, "", 1, "1") and \
        loop in (None, "", "none") and interpolate_fps in (None, "", 0, "0") and not _format_list(formats) and \
        upscale in (None, "", 1, "1")


def gallery_caption(record: Mapping[str, Any], lang: str) -> str:
    """A finished video under its thumbnail: the delivered video's size, frames, rate and seed (from its
    record's ``video_info``, not the request's settings); its file name where the record cannot say."""
    if record.get("record_missing"):
        return t("record_missing", lang)
    v, p = record.get("video_info") or {}, record.get("parameters") or {}
    try:
        return t("gallery_caption", lang, width=v["width"], height=v["height"], frames=v["frames"],
                 fps=f"{float(v['fps']):g}", seed=p.get("seed"))
    except (KeyError, TypeError, ValueError):
        return str(record.get("video", ""))
