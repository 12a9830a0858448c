"""The web server: the HTTP API and the Gradio page in one FastAPI app, run by uvicorn.

Routes (OpenAPI docs at ``/docs``):
  GET  /api/health              liveness: the process answers
  GET  /api/ready               readiness: model loaded, GPU answers, disk space (503 if not)
  GET  /api/status              the model's state, for the launcher and monitoring
  POST /api/jobs                submit a job (multipart: image + parameters) -> its id
  GET  /api/jobs                recent jobs
  GET  /api/jobs/{id}           one job: state, progress, queue position
  GET  /api/jobs/{id}/video     the finished MP4
  GET  /api/jobs/{id}/metadata  its JSON record
  POST /api/jobs/{id}/cancel    cancel it (queued: at once; running: at the next step)
  POST /api/jobs/{id}/retry     queue a failed, cancelled or interrupted job again
  GET  /api/workers             each worker: machine, device, memory mode, state, current job, jobs done

Job routes need ``Authorization: Bearer <password>`` whenever the server asks for a
login; too many wrong passwords from one address get 429 for a while (``auth.LoginThrottle``).
Errors come back as ``{"error": "..."}`` with a message, never a traceback, unknown routes and
methods under /api included. ``http_guard`` limits every request body's size and time, holds
Gradio's event routes to the page's own events and adds the security headers.
On SIGTERM or Ctrl+C the server stops taking jobs, lets the running one finish
within the grace period or re-queues it, removes its PID file and releases the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import gradio as gr
import uvicorn
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, catalogue, families
from . import loras as lora_files
from .auth import Credentials, LoginThrottle
from .config import FORMATS, INTERPOLATE_METHODS, LOOPS, PARAMETERS, STATIC_DIR, AppConfig
from .errors import AppError, InvalidInput, NoSuchRoute, WrongMethod, exact, shown
from .http_guard import (BodyGuard, ConnectionLimits, PageEventGuard, PageLoginGuard, client_address,
                         event_body_limit, guarded_protocol, throttled)
from .i18n import t
from .job_queue import JobQueue
from .job_store import DONE
from .outputs import OutputFolder, VideoFiles
from .request import QUALITIES, summary
from .ui import build_ui, conventions
from .workers import WorkerBoard, loaded_model

log = logging.getLogger(__name__)


def create_app(config: AppConfig, queue: JobQueue, outputs: OutputFolder, engine, *,
               credentials: Credentials | None = None, pid_file: Path | None = None,
               throttle: LoginThrottle | None = None,
               worker_healthy: Callable[[], bool] | None = None,
               workers: WorkerBoard | None = None, lora_fetches: lora_files.Fetches | None = None) -> FastAPI:
    """The FastAPI app with the API under /api and the page at /. Starts nothing.

    ``engine`` is anything with the engine's ``status``, ``ready``, ``memory_mode`` and ``device_answers``;
    ``throttle`` counts wrong passwords per address (a new one when not given);
    ``worker_healthy`` says whether the job worker runs and reaches the store (without it, never ready);
    ``workers`` is the board the workers report to (``GET /api/workers``; none: an empty list);
    ``lora_fetches`` runs the LoRA downloads (a new one when not given).
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        remove_pid_file(pid_file)

    app = FastAPI(title="Image-to-Video API", version=__version__, lifespan=lifespan,
                  description="Turn an image and a prompt into a short video with I2VGen-XL. "
                              "Submit a job, poll it, download the video.",
                  redoc_url=None)
    _add_error_handlers(app)
    throttle = throttle or LoginThrottle()
    require_login = _login_dependency(credentials, throttle)
    max_bytes = int(config.server.max_upload_mb * 1024 * 1024)

    @app.get("/api/health", tags=["server"])
    def health() -> dict:
        """Liveness: the process is up and answering."""
        return {"status": "ok"}

    @app.get("/api/ready", tags=["server"])
    def ready() -> JSONResponse:
        """Readiness: the model is loaded, the GPU answers a small operation, there is disk space,
        and the job worker runs and reaches the job store (else accepted jobs would never run)."""
        checks = {"model": engine.ready, "device": engine.device_answers(),
                  "disk": outputs.has_free_space(), "worker": bool(worker_healthy and worker_healthy())}
        body = {"ready": all(checks.values()), "checks": checks, "model": engine.status.message}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/api/status", tags=["server"])
    def status(lang: str | None = None) -> dict:
        """The model's state (starting, downloading, loading, ready, error) and whether a job runs;
        ``lang=zh-CN`` gives the message and the device in Chinese."""
        model = engine.status
        return {"app": "Image-to-Video", "version": __version__, "busy": queue.busy,
                "login_required": credentials is not None,
                "model": {"state": model.state.value, "message": model.text(lang or "en"),
                          "device": model.device_text(lang or "en"),
                          "demo": model.is_demo, "download_fraction": model.fraction,
                          "memory_mode": engine.memory_mode, "name": loaded_model(engine)}}

    @app.get("/api/models", tags=["server"], dependencies=[Depends(require_login)])
    def list_models() -> dict:
        """The models this server offers (a job's ``model``), the default first among equals: each one's
        name, title, family, state (ready, loading, error, on_disk, not_downloaded) and the workers holding
        it, download size, whether it can end on a picture, and its default video's GPU memory per memory
        mode. A job for a model no worker holds loads it first (a worker holds one model at a time)."""
        return {"default": config.model.family, "models": catalogue.model_list(config, catalogue.engines_of(engine))}

    fetches = lora_fetches or lora_files.Fetches(config.paths.models_dir)

    @app.get("/api/loras", tags=["server"], dependencies=[Depends(require_login)])
    def list_loras(lang: str | None = None) -> dict:
        """The LoRAs a job's ``loras`` may name: the .safetensors files in loras/ inside the models folder,
        read now (a file put there is offered at once), each with its size; the models that take them; each
        model's Fast preset (its LoRAs as a job names them, their size, whether all are on disk); and the
        downloads asked for (``POST /api/loras``), with their state and, when one failed, why."""
        return {"loras": lora_files.listing(config.paths.models_dir),
                "models": [card.name for card in families.CARDS.values() if card.loras],
                "fast": catalogue.fast_presets(config.paths.models_dir), "downloads": fetches.state(lang)}

    @app.post("/api/loras", status_code=202, tags=["server"], dependencies=[Depends(require_login)])
    def fetch_loras(fast: Annotated[str | None, Form(description=(
                        "A model whose Fast preset's LoRAs to download (its card names them): "
                        + ", ".join(card.name for card in families.CARDS.values() if card.fast)))] = None,
                    repo: Annotated[str | None, Form(description="Or a hub repo id (owner/name) ...")] = None,
                    file: Annotated[str | None, Form(description="... and the path of a .safetensors LoRA file in "
                                                                 "it ...")] = None,
                    name: Annotated[str | None, Form(description="... kept as loras/<name>.safetensors (default: "
                                                                 "the file's name)")] = None) -> dict:
        """Download LoRA files from the hub (``HF_ENDPOINT`` honoured) into loras/ inside the models folder, one
        at a time in the background: ``GET /api/loras`` shows each download's progress. A file already fetched
        from there is not fetched again; a LoRA of that name from elsewhere is never replaced."""
        return {"downloads": fetches.start(catalogue.lora_sources(fast, repo, file, name))}

    app.post("/api/jobs", status_code=202, tags=["jobs"], dependencies=[Depends(require_login)],
             summary="Submit")(_submit_route(config, queue, max_bytes))

    @app.get("/api/jobs", tags=["jobs"], dependencies=[Depends(require_login)])
    def list_jobs(limit: int = 50) -> dict:
        """The newest jobs, newest first."""
        return {"jobs": [job.public() for job in queue.list(limit=max(1, min(limit, 500)))]}

    @app.get("/api/jobs/{job_id}", tags=["jobs"], dependencies=[Depends(require_login)])
    def get_job(job_id: str) -> dict:
        """One job: its state, progress, queue position and result."""
        return _job_body(queue, queue.get(job_id))

    @app.api_route("/api/jobs/{job_id}/video", methods=["GET", "HEAD"], tags=["jobs"],
                   dependencies=[Depends(require_login)], response_class=FileResponse)
    def get_video(job_id: str, format: str = "mp4", part: str = "final"):  # noqa: A002 - the query's name
        """The finished video: the MP4 by default; ``format=gif`` or ``format=webm`` for those files,
        ``format=png`` for a zip of every frame as a lossless PNG (``application/zip``), when the job
        asked for them; ``part=model`` for the model's own frames before a loop, interpolation or
        upscale, ``part=segment`` for the last segment alone. The job's JSON lists every file it made,
        with these addresses; ``format=zip`` for one zip of them all (as ``files.zip``). HEAD gives the
        headers only."""
        if str(format).lower() == "zip":
            return _zip_file(queue, job_id, config)
        return _video_file(queue, job_id, format, part, config)

    @app.api_route("/api/jobs/{job_id}/files.zip", methods=["GET", "HEAD"], tags=["jobs"],
                   dependencies=[Depends(require_login)], response_class=FileResponse)
    def get_zip(job_id: str):
        """One zip of everything a done job made: the video, every other file it asked for (GIF, WebM, PNG
        frames, the model's own frames, the last segment), its input picture and its record. Also
        ``/api/jobs/<id>/video?format=zip``."""
        return _zip_file(queue, job_id, config)

    @app.api_route("/api/jobs/{job_id}/metadata", methods=["GET", "HEAD"], tags=["jobs"],
                   dependencies=[Depends(require_login)], response_class=FileResponse)
    def get_metadata(job_id: str):
        """The JSON record written beside the video: every parameter, the seed, versions, timings."""
        return _result_file(queue, job_id, "metadata_path", "application/json", config)

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"], dependencies=[Depends(require_login)])
    def cancel(job_id: str) -> dict:
        """Cancel a queued job at once, or a running one at its next step."""
        return _job_body(queue, queue.cancel(job_id))

    @app.post("/api/jobs/{job_id}/retry", status_code=202, tags=["jobs"], dependencies=[Depends(require_login)])
    def retry(job_id: str) -> dict:
        """Queue a failed, cancelled or interrupted job again (a new job, same parameters)."""
        return _job_body(queue, queue.retry(job_id))

    @app.get("/api/workers", tags=["jobs"], dependencies=[Depends(require_login)])
    def list_workers() -> dict:
        """Each worker: id, machine, pid (of its engine's process), device, memory_mode, state (loading,
        ready, busy, lost, restarting, error), current_job and jobs_done."""
        return {"workers": workers.list() if workers else []}

    _add_unknown_api_route(app)
    demo = build_ui(config, queue, outputs, engine, workers=workers.list if workers else None, fetches=fetches)
    demo.queue(default_concurrency_limit=1, api_open=False)
    app = gr.mount_gradio_app(
        app, demo, path="/",
        server_name=config.server.host,
        server_port=config.server.port,
        auth=credentials.check if credentials else None,
        auth_message="Image-to-Video: log in with the user name and password that start_app.sh printed.",
        max_file_size=f"{config.server.max_upload_mb:g}mb",
        enable_monitoring=False,
        show_error=False,
        allowed_paths=[str(config.paths.output_dir)],
        favicon_path=str(STATIC_DIR / "logo.svg"),
        css_paths=[STATIC_DIR / "style.css"],
        head=conventions.head(),  # progress in the tab's title, a notification when done, Ctrl+Enter
        theme=gr.themes.Soft(),
        footer_links=["gradio"],
    )
    app.state.end_page_streams = _page_stream_ender(app)
    # Added last is outermost: the body limits come before the login throttle and the event check.
    app.add_middleware(PageEventGuard, blocks=demo, max_body_bytes=event_body_limit(
        config.generation.max_prompt_chars, config.jobs.max_queued))
    if credentials:
        app.add_middleware(PageLoginGuard, throttle=throttle)
    app.add_middleware(BodyGuard, max_upload_mb=config.server.max_upload_mb,
                       body_timeout_s=config.server.body_timeout_s)
    return app


def _submit_route(config: AppConfig, queue: JobQueue, max_bytes: int):
    """``POST /api/jobs``: a multipart form with the image, the prompts and every one of ``PARAMETERS``."""

    card = families.served_card(config)

    async def read(upload: UploadFile | None) -> bytes | None:
        data = None if upload is None else await upload.read(max_bytes + 1)
        if data is not None and len(data) > max_bytes:
            raise InvalidInput(f"The image is larger than {config.server.max_upload_mb:g} MB. "
                               "Upload a smaller file.")
        return data

    async def submit(image: UploadFile | None = None, prompt: str | None = None, negative_prompt: str | None = None,
                     seed: str | None = None, last_image: UploadFile | None = None, **settings: str | None) -> dict:
        """Queue a job; returns its id at once. Every value is checked as in the page."""
        data = await read(image)
        end = await read(last_image)
        job = await _in_thread(queue.submit, data, prompt, owner="api", source="api",
                               negative_prompt=negative_prompt, seed=seed,
                               **({"last_image": end} if end is not None else {}), **settings)
        return _job_body(queue, job)

    def form(name: str, description: str, annotation=str | None) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[annotation, Form(description=description)])

    # FastAPI reads the form's fields from the signature: one per parameter of the one definition.
    submit.__signature__ = inspect.Signature([
        inspect.Parameter("image", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            UploadFile | None, File(description="The first frame: PNG, JPEG, WebP, GIF, BMP or TIFF (not needed "
                                                "with continue_from)")]),
        form("prompt", "What should move" + (", in English or Chinese (the model reads both)"
                                             if "zh" in card.prompt_languages else
                                             ", in English (other languages are translated first)")),
        form("negative_prompt", t("negative_help") + f" Empty: {card.title}'s default."),
        *[form(p.name, _parameter_help(p, card)) for p in PARAMETERS],
        form("model", f"Which model makes the video: one of {', '.join(config.offered or (card.name,))} (default: "
                      f"{card.name}). Each has its own sizes, frame counts and defaults: GET /api/models lists them; "
                      "the sizes and limits described here are the default's."),
        form("aspect", f"The video's shape: auto (default: the one nearest the picture's) or one of "
                       f"{', '.join(card.aspects)}. The picture is scaled to cover it and centre-cropped."),
        form("seed", "-1 or empty for a random seed"),
        inspect.Parameter("last_image", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            UploadFile | None, File(description="The picture the video ends on (optional). " + (
                f"{card.title} can end on it." if card.end_frame else
                f"{card.title} cannot: a job with one is refused (Wan2.2-I2V-A14B can)."))]),
        form("loras", "LoRAs to apply: a comma-separated list of name:strength (e.g. style:0.8,motion:1; a name "
                      f"alone is strength 1), each strength a number from {exact(lora_files.MIN_STRENGTH)} to "
                      f"{exact(lora_files.MAX_STRENGTH)}, at most {lora_files.MAX_LORAS}. A name is a .safetensors "
                      "file in loras/ inside the models folder (GET /api/loras lists them). Only models that take "
                      f"LoRAs ({', '.join(c.title for c in families.CARDS.values() if c.loras)}); empty: none. The "
                      "job's record lists each with its strength and its file's sha256. On Wan2.2-I2V-A14B, "
                      "name@high:1 or name@low:1 puts a file into one of its two experts. A model's Fast preset "
                      "is its LoRAs (GET /api/loras, 'fast') with its steps and guidance."),
        *[form(name, description) for name, description in _finishing_fields(config)],
    ])
    return submit


def _parameter_help(parameter, card) -> str:
    """The API form's description of one of ``PARAMETERS`` for the served model: its sizes by name, its
    frame-count rule, or its range."""
    text = t(f"{parameter.text}_help")
    if parameter.limits is None:
        return f"{text} One of: {card.resolution_text()} (other aspects keep about as many pixels; see aspect)."
    if parameter.name == "num_frames":
        return f"{text} {card.frames_text()}."
    return f"{text} {card.generation.limits(parameter.name)}."


def _finishing_fields(config: AppConfig) -> list[tuple[str, str]]:
    """The form fields of the steps after the model, with what each takes."""
    f = config.finishing
    return [
        ("continue_from", "A done job's id or a video name (video_....mp4): its last frame is the picture, its "
                          "settings and seed the defaults; the result is that video joined with the new segment(s)."),
        ("segments", f"Segments to make, each from the last frame of the one before: 1 to {f.max_segments} "
                     "(default 1)."),
        ("loop", f"One of: {', '.join(LOOPS)} (default none). boomerang plays forward then back; crossfade blends "
                 "the end into the start."),
        ("interpolate_fps", f"0 (off, default) or a frame rate above fps, up to {f.max_interpolate_fps}: frames "
                            "added by motion interpolation, same duration."),
        ("interpolate_method", f"How interpolate_fps adds frames: {' or '.join(INTERPOLATE_METHODS)} (default "
                               "rife). rife: learned in-between frames (RIFE HD v3), sharp on fast motion, slower "
                               "on a CPU; ffmpeg: minterpolate, also used when RIFE cannot run (the job's record "
                               "says which made them)."),
        ("formats", f"Files besides the MP4, comma-separated: any of {', '.join(FORMATS[1:])} (png: a zip of "
                    "every frame as a lossless PNG)."),
        ("upscale", "1 (default) or 2: twice the width and height (Lanczos)."),
        ("crf", f"The MP4's quality: H.264's constant rate factor, 1 (best, largest) to 51; 0 or empty: the "
                f"server's default ({f.crf}). 18 looks lossless, 23 is smaller; each +6 about halves the file."),
        ("quality", "Another name for crf: a number, or one of " + ", ".join(f"{word} ({crf})" for word, crf in
                                                                         QUALITIES.items()) + "."),
    ]


async def _in_thread(function, *args, **kwargs):
    import anyio

    return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


def _job_body(queue: JobQueue, job) -> dict:
    return {**summary(job.params), **job.public(), "queue_position": queue.position(job.id), "files": _files_of(job),
            **({"files_zip": f"/api/jobs/{job.id}/files.zip"} if job.state == DONE else {})}


#: ``GET /api/jobs/<id>/video``'s choices: (format, part) -> (the file's kind in the record, its
#: companion in the output folder (None: the video itself), media type).
_VIDEO_FILES = {("mp4", "final"): ("video", None, "video/mp4"), ("gif", "final"): ("gif", "gif", "image/gif"),
                ("webm", "final"): ("webm", "webm", "video/webm"),
                ("png", "final"): ("png", "png_frames", "application/zip"),
                ("mp4", "model"): ("model", "model_video", "video/mp4"),
                ("mp4", "segment"): ("segment", "segment_video", "video/mp4")}


def _video_file(queue: JobQueue, job_id: str, fmt: str, part: str, config: AppConfig) -> FileResponse:
    """One of a done job's video files, by format and part."""
    choice = _VIDEO_FILES.get((str(fmt).lower(), str(part).lower()))
    if choice is None:
        raise InvalidInput(key="err_video_choice", format=shown(fmt), part=shown(part))
    kind, companion, media_type = choice
    if companion is None:
        return _result_file(queue, job_id, "video_path", media_type, config)
    job = queue.get(job_id)
    if job.state != DONE:
        raise HTTPException(409, f"The job is {job.state}; its files exist once it is done.")
    video = Path(job.video_path or "")
    path = VideoFiles(video.parent, video.stem).companion(companion)
    if not path.is_file():
        if kind not in {entry.get("kind") for entry in _record(job).get("files", []) if isinstance(entry, dict)}:
            raise HTTPException(404, t("err_video_not_made", "en", format=fmt, part=part))
        raise HTTPException(410, _removed_message(job.id, "video", config))
    return FileResponse(path, media_type=media_type, filename=path.name)


def _zip_file(queue: JobQueue, job_id: str, config: AppConfig) -> FileResponse:
    """A done job's files in one zip, written to a temporary file that goes once it has been sent."""
    job = queue.get(job_id)
    if job.state != DONE:
        raise HTTPException(409, f"The job is {job.state}; its files exist once it is done.")
    video = Path(job.video_path or "")
    handle, name = tempfile.mkstemp(prefix="i2v-", suffix=".zip")
    os.close(handle)
    temporary = Path(name)
    try:
        OutputFolder(video.parent, config.outputs).write_zip(video.name, temporary)
    except (FileNotFoundError, InvalidInput):
        temporary.unlink(missing_ok=True)
        raise HTTPException(410, _removed_message(job.id, "video", config)) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return FileResponse(temporary, media_type="application/zip", filename=f"{video.stem}.zip",
                        background=BackgroundTask(temporary.unlink, missing_ok=True))


def _record(job) -> dict:
    """A done job's record (the JSON beside its video), or {} when there is none to read."""
    try:
        record = json.loads(Path(job.metadata_path).read_text(encoding="utf-8"))
    except (OSError, TypeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _files_of(job) -> list[dict]:
    """Every file a done job made, each with its download address (none for other jobs)."""
    if job.state != DONE:
        return []
    addresses = {"video": "", "gif": "?format=gif", "webm": "?format=webm", "png": "?format=png",
                 "model": "?part=model", "segment": "?part=segment"}
    files = []
    for entry in _record(job).get("files", []):
        if isinstance(entry, dict) and entry.get("kind") in addresses:
            files.append({**entry, "url": f"/api/jobs/{job.id}/video{addresses[entry['kind']]}"})
    files.append({"kind": "record", "format": "json", "name": Path(job.metadata_path or "").name,
                  "url": f"/api/jobs/{job.id}/metadata"})
    return files


def _result_file(queue: JobQueue, job_id: str, attribute: str, media_type: str, config: AppConfig) -> FileResponse:
    job = queue.get(job_id)
    if job.state != DONE:
        raise HTTPException(409, f"The job is {job.state}; its files exist once it is done.")
    path = getattr(job, attribute)
    if not path or not Path(path).is_file():
        kind = "video" if attribute == "video_path" else "record"
        raise HTTPException(410, _removed_message(job.id, kind, config))
    return FileResponse(path, media_type=media_type, filename=Path(path).name)


def _removed_message(job_id: str, kind: str, config: AppConfig) -> str:
    """Why a finished job's file is gone: a delete, or the retention policy if one is on."""
    outputs = config.outputs
    settings = [f"outputs.max_age_days: {outputs.max_age_days:g}"] if outputs.max_age_days else []
    settings += [f"outputs.max_total_gb: {outputs.max_total_gb:g}"] if outputs.max_total_gb else []
    retention = t("err_file_removed_retention", settings=", ".join(settings)) if settings else ""
    return t("err_file_removed", kind=kind, job=job_id, retention=retention)


def _add_unknown_api_route(app: FastAPI) -> None:
    """Every other path under /api: 405 (with Allow) where the path exists with other methods, else
    404, both as ``{"error": ...}``. Without it the page, mounted at /, would answer them itself."""
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    @app.api_route("/api", methods=methods, include_in_schema=False)
    @app.api_route("/api/{rest:path}", methods=methods, include_in_schema=False)
    def unknown(request: Request) -> None:
        path, method = request.url.path, request.method
        allowed = sorted({m for route in app.routes if getattr(route, "methods", None)
                          and route.endpoint is not unknown and route.path_regex.match(path)
                          for m in route.methods})
        if allowed:
            raise WrongMethod(key="err_wrong_method", path=path, method=method, allowed=", ".join(allowed))
        raise NoSuchRoute(key="err_no_route", method=method, path=path)


def _login_dependency(credentials: Credentials | None, throttle: LoginThrottle):
    bearer = HTTPBearer(auto_error=False)

    def require_login(request: Request,
                      token: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if credentials is None:
            return
        address = client_address(request.scope)
        if token is not None and throttle.wait_s(address) > 0:
            raise throttled(address, throttle.wait_s(address))
        if token is None or not credentials.check_token(token.credentials):
            if token is not None:
                throttle.failed(address)
            raise HTTPException(401, "Log in: send 'Authorization: Bearer <password>' (the password "
                                     "start_app.sh printed).", headers={"WWW-Authenticate": "Bearer"})
        throttle.succeeded(address)

    return require_login


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_request: Request, error: AppError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.http_status, headers=error.headers)

    # Starlette's own class: FastAPI's subclass and the 404/405 Starlette raises itself both land here.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                             for e in error.errors())
        return JSONResponse({"error": f"The request is incomplete or malformed: {problems}."}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.error("Unexpected error", exc_info=error)
        return JSONResponse({"error": "Something went wrong on the server; the log has the details."},
                            status_code=500)


def _page_stream_ender(app: FastAPI) -> Callable[[], None]:
    """What ends the page's heartbeat streams (one per open tab), to be called on the server's event loop.

    Gradio ends them on its own stop event, which only its own launcher sets; a page's stream never ends
    otherwise, so uvicorn's graceful shutdown would wait its whole timeout for every stop with a tab open."""
    mounted = [route.app for route in app.routes if isinstance(getattr(route, "app", None), gr.routes.App)]

    def end() -> None:
        for gradio_app in mounted:
            gradio_app.stop_event.set()
    return end


class _GracefulServer(uvicorn.Server):
    """uvicorn, but a stop signal first drains the GPU job (finish or re-queue), then ends the page's
    streams, so that the server exits as soon as its last real response is sent."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[float], None], grace_s: float,
                 end_streams: Callable[[], None] | None = None):
        super().__init__(config)
        self._drain = drain
        self._grace_s = grace_s
        self._draining = False
        self._end_streams = end_streams
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig, frame) -> None:
        if self._draining:  # a second signal: stop now
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("Stopping: no new jobs; the running one gets %.0f s to finish", self._grace_s)
        threading.Thread(target=self._drain_then_exit, args=(sig, frame), daemon=True).start()

    def _drain_then_exit(self, sig, frame) -> None:
        self._drain(self._grace_s)
        if self._end_streams and self._loop and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._end_streams)  # asyncio's Event is the loop's own
        super().handle_exit(sig, frame)


#: Connections accepted in one go (the listen backlog; uvicorn's default is 2048). asyncio accepts up to
#: this many sockets before any of them reaches ``connection_made``, where one past the limits is closed.
ACCEPT_BACKLOG = 128
#: Open files kept free of connections: two accept batches not yet refused, the job store's database
#: (3 files a transaction), logs, the model's files, ffmpeg's pipes, the worker processes' pipes.
RESERVED_FILES = 2 * ACCEPT_BACKLOG + 128


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit (allowed without privileges), and
    return the soft limit now. Each connection is an open file: at the usual soft limit of 1024 a
    thousand idle connections would leave the job worker none to open its database with."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            log.info("Open-file limit raised from %d to %d", soft, wanted)
            soft = wanted
        except (ValueError, OSError) as error:
            log.warning("Open-file limit stays at %d (could not raise it to %d: %s)", soft, wanted, error)
    return (1 << 20) if soft == resource.RLIM_INFINITY else soft


def connection_limits(config: AppConfig, open_files: int) -> ConnectionLimits:
    """The connection limits of ``config.server``; ``open_files``: the process's open-file limit, of which
    all connections together may take all but ``RESERVED_FILES``."""
    server = config.server
    return ConnectionLimits(header_timeout_s=server.header_timeout_s, max_per_client=server.max_connections_per_client,
                            max_total=max(16, open_files - RESERVED_FILES), exempt=server.proxy_list)


def uvicorn_config(app: FastAPI, config: AppConfig, limits: ConnectionLimits) -> uvicorn.Config:
    """How uvicorn serves ``app``: its h11 protocol held to ``limits`` (whatever HTTP parser is installed),
    X-Forwarded-For believed only from ``server.trusted_proxies`` (uvicorn's default believes it from any
    connection on 127.0.0.1, so a local proxy's every client, or anyone on this machine, could claim any
    address to the login throttle)."""
    proxies = list(config.server.proxy_list)
    return uvicorn.Config(app, host=config.server.host, port=config.server.port, log_level="warning",
                          timeout_graceful_shutdown=5, http=guarded_protocol(limits), backlog=ACCEPT_BACKLOG,
                          proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)


def run_server(app: FastAPI, config: AppConfig, *, drain: Callable[[float], None],
               pid_file: Path | None = None) -> None:
    """Serve ``app`` until SIGTERM or Ctrl+C; ``drain(grace_s)`` stops the jobs first."""
    server_config = uvicorn_config(app, config, connection_limits(config, raise_open_file_limit()))
    server = _GracefulServer(server_config, drain, config.jobs.shutdown_grace_s,
                             getattr(app.state, "end_page_streams", None))
    try:
        server.run()
    finally:
        remove_pid_file(pid_file)


def remove_pid_file(pid_file: Path | None) -> None:
    """Remove the launcher's PID file, but only if it still names this process."""
    if not pid_file:
        return
    try:
        recorded = Path(pid_file).read_text().split()
    except OSError:
        return
    if recorded and recorded[0] == str(os.getpid()):
        Path(pid_file).unlink(missing_ok=True)
        log.info("Removed %s", pid_file)
