"""What several test files use: plain functions, classes and constants (the shared fixtures are in
conftest.py, where pytest finds them without an import).

A test file imports these from here, never from another test file or from conftest, so that each
test file stands on its own (tests/test_architecture.py checks it). Only light modules are imported
at the top: conftest imports this file for every test run.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager

import numpy as np
from PIL import Image

from image_to_video.config import TranslationSettings
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import DONE, SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.model_status import ModelState, ModelStatus
from image_to_video.outputs import OutputFolder
from image_to_video.request import GenerationRequest
from image_to_video.service import VideoService
from image_to_video.video import probe_video, write_video
from image_to_video.worker import Worker

# -- settings and waiting ----------------------------------------------------------------------------

#: Small limits so the real pipeline runs in seconds on two CPU cores.
SMALL = {
    "generation.resolutions": {"64p": 64, "128p": 128, "512p": 512},
    "generation.defaults.resolution": "64p",
    "generation.defaults.num_frames": 4,
    "generation.defaults.num_inference_steps": 3,
    "generation.num_frames": {"min": 2, "max": 32},
    "generation.num_inference_steps": {"min": 1, "max": 100},
    "generation.presets": {"Tiny": {"resolution": "64p", "num_frames": 4, "fps": 8,
                                    "num_inference_steps": 3, "guidance_scale": 9.0}},
}


def wait_for(predicate, timeout=120, every=0.1):
    """Call ``predicate`` every ``every`` seconds until it gives something true, and return that;
    raise ``AssertionError`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {getattr(predicate, '__qualname__', '')}")
        time.sleep(every)


# -- the engine ---------------------------------------------------------------------------------------

def tiny_request(photo: Image.Image, **changes) -> GenerationRequest:
    """A 64x64, 4-frame, 3-step request of ``photo`` (``changes`` replace any of its values)."""
    values = dict(image=photo.resize((64, 64)), prompt="the waves roll in slowly", negative_prompt="",
                  resolution="64p", width=64, height=64, num_frames=4, fps=8, num_inference_steps=3,
                  guidance_scale=9.0, seed=7)
    values.update(changes)
    return GenerationRequest(**values)


#: The real model's parameter counts per component, from ali-vilab/i2vgen-xl's weight files.
REAL_COUNTS = {"unet": 1_420_469_224, "text_encoder": 352_984_064, "image_encoder": 632_076_800, "vae": 83_653_863}


def largest_difference(frames: np.ndarray, reference: np.ndarray) -> int:
    """The largest pixel difference between two videos, in levels of 255."""
    return int(np.abs(frames.astype(int) - reference.astype(int)).max())


def write_weight_headers(folder, counts: dict[str, int]):
    """A model folder whose fp16 weight files hold only their safetensors headers, with the real
    model's parameter counts: enough for reading sizes, no 5 GB written."""
    for component, count in counts.items():
        header = json.dumps({"weight": {"dtype": "F16", "shape": [count], "data_offsets": [0, 2 * count]}}).encode()
        path = folder / component / "diffusion_pytorch_model.fp16.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(len(header).to_bytes(8, "little") + header)
    return folder


# -- jobs in this process: the store, the queue and the worker, wired as app.build does ----------------

class RecordingBoard(LiveJobs):
    """The live board, keeping every progress report the worker gives it."""

    def __init__(self):
        super().__init__()
        self.reports = []

    def report(self, job_id, progress):
        self.reports.append(progress)
        super().report(job_id, progress)


class Jobs:
    """A job queue and its worker over one store, on the session's engine; reads go to the queue."""

    def __init__(self, config, engine, folder, *, on_fatal=None):
        self.store = SQLiteJobStore(folder / "jobs.sqlite3")
        self.live = RecordingBoard()
        self.queue = JobQueue(self.store, config, live=self.live, inputs_dir=folder / "inputs")
        service = VideoService(engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
        self.worker = Worker(self.store, self.live, service.make_video, model_ready=lambda: engine.ready,
                             on_fatal=on_fatal)

    def __getattr__(self, name):
        return getattr(self.queue, name)

    def start(self):
        self.worker.start()

    def shutdown(self, grace_s):
        self.queue.close()
        self.worker.shutdown(grace_s)


@contextmanager
def database_locked(path):
    """Another writer holding the job database's write lock (as a stuck process would)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("COMMIT")
        db.close()


class Parts:
    """Queue, worker and readiness check over one store that gives up on a lock after 0.2 s."""

    def __init__(self, config, engine, folder, make_video=None):
        self.store = SQLiteJobStore(folder / "jobs.sqlite3", timeout_s=0.2)
        self.live = LiveJobs()
        self.outputs = OutputFolder(config.paths.output_dir, config.outputs)
        self.queue = JobQueue(self.store, config, live=self.live, inputs_dir=folder / "inputs")
        self.service = VideoService(engine, self.outputs, config.model)
        self.worker = Worker(self.store, self.live, make_video or self.service.make_video,
                             model_ready=lambda: engine.ready)
        self.config, self.engine = config, engine

    def readiness(self):
        """GET /api/ready of the real server app over these parts, as a call giving (status, body)."""
        from image_to_video.server import create_app  # imports Gradio: only for the tests that need it

        asgi = create_app(self.config, self.queue, self.outputs, self.engine,
                          worker_healthy=lambda: self.worker.healthy)
        endpoint = next(route.endpoint for route in asgi.routes if getattr(route, "path", "") == "/api/ready")

        def ready():
            response = endpoint()
            return response.status_code, json.loads(response.body)
        return ready


# -- the page -----------------------------------------------------------------------------------------

class FakeModel:
    """What the page reads of the engine: a ready model (the demo one unless a GPU size is given)."""

    def __init__(self, gpu_memory_gb=None):
        self.status = ModelStatus(state=ModelState.READY, is_demo=gpu_memory_gb is None, device_key="device_cpu")
        self.gpu_memory_gb = gpu_memory_gb
        self.gpu_name = None


# -- prompt translation: a tiny random MarianMT model built here ----------------------------------------

#: The sentences the tiny translator's vocabulary is trained on, and what they mean.
CHINESE = ["一只猫在草地上奔跑", "海浪缓缓涌来", "一个女孩在雨中跳舞", "风吹动树叶", "小狗摇着尾巴", "烟花在夜空中绽放"]
ENGLISH = ["a cat runs on the grass", "the waves roll in slowly", "a girl dances in the rain",
           "the wind moves the leaves", "the puppy wags its tail", "fireworks bloom in the night sky"]


def translation_settings(**values) -> TranslationSettings:
    """Translation on, with short translations (12 tokens a sentence: quick on two cores)."""
    return TranslationSettings(**{"enabled": "auto", "max_new_tokens": 12, **values})


def _train_spm(folder, name, lines, vocab_size):
    import sentencepiece

    (folder / f"{name}.txt").write_text("\n".join(lines), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(input=str(folder / f"{name}.txt"), model_prefix=str(folder / name),
                                             vocab_size=vocab_size, character_coverage=1.0, minloglevel=2,
                                             hard_vocab_limit=False)
    return folder / f"{name}.model"


def build_tiny_marian(tmp_path_factory):
    """A MarianMT folder as save_pretrained writes it: d_model 16, one layer each side, ~80 tokens.

    Its end-of-sentence logit is pushed far down, so every translation runs to the token limit:
    the output is never empty, and its length shows the limit is applied.
    """
    import sentencepiece
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    work = tmp_path_factory.mktemp("spm")
    source = _train_spm(work, "source", CHINESE + ENGLISH, 100)
    target = _train_spm(work, "target", ENGLISH, 60)
    vocab = {"</s>": 0, "<unk>": 1}  # Marian's layout: eos 0, unk 1, ..., pad last
    for path in (source, target):
        pieces = sentencepiece.SentencePieceProcessor(model_file=str(path))
        for piece in map(pieces.id_to_piece, range(pieces.get_piece_size())):
            if piece != "<s>":  # Marian has no start token: the decoder starts from pad
                vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (work / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    folder = tmp_path_factory.mktemp("opus-mt-tiny")
    tokenizer = MarianTokenizer(source_spm=str(source), target_spm=str(target), vocab=str(work / "vocab.json"))
    tokenizer.save_pretrained(folder)
    pad = len(vocab) - 1
    config = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=pad, decoder_start_token_id=pad,
                          eos_token_id=0, forced_eos_token_id=0)
    torch.manual_seed(0)
    model = MarianMTModel(config)
    with torch.no_grad():
        model.final_logits_bias[0, 0] = -1e4
    # What the published translators' generation config sets too: a long max_length, pad never generated.
    model.generation_config.max_length = 512
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(folder)
    return folder


# -- a real server (tests/app_process.py) over HTTP -----------------------------------------------------

#: A server's environment whose jobs take a second or two on the demo model (and a 1 MB upload limit).
FAST_ENV = {"I2V_GENERATION_DEFAULTS_RESOLUTION": "256p", "I2V_GENERATION_DEFAULTS_NUM_FRAMES": "8",
            "I2V_GENERATION_DEFAULTS_NUM_INFERENCE_STEPS": "10", "I2V_SERVER_MAX_UPLOAD_MB": "1"}
#: A job's form fields that make it take a second or two on the demo model, whatever the server's defaults.
FAST_JOB = {"num_frames": "8", "num_inference_steps": "10", "resolution": "256p"}
#: The states a job ends in.
FINISHED = ("done", "failed", "cancelled", "interrupted")


def png(image: Image.Image, fmt="PNG", **options) -> bytes:
    """``image`` encoded as ``fmt`` (PNG unless said)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


PHOTO = png(Image.new("RGB", (320, 240), (30, 120, 200)))


def call(app, method, path, *, fields=None, files=None, token=None, timeout=30):
    """A tiny HTTP client for ``app`` (anything with a ``url``): returns (status, JSON body or bytes).
    ``path`` with or without its leading slash; ``fields`` and ``files`` ({name: (filename, bytes)})
    go as a multipart form; ``token`` as the bearer password."""
    data, headers = None, {}
    if fields is not None or files is not None:
        data, content_type = _multipart(fields or {}, files or {})
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = app.url.rstrip("/") + "/" + path.lstrip("/")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _decode(response.read(), response.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as error:
        return error.code, _decode(error.read(), error.headers.get("Content-Type", ""))


def _decode(body: bytes, content_type: str):
    return json.loads(body) if "json" in content_type else body


def _multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def fetch_json(app, path, method="GET"):
    """``call`` for a route that must succeed: its JSON body (an ``AssertionError`` for an error status)."""
    status, body = call(app, method, path)
    assert 200 <= status < 300, (method, path, status, body)
    return body


def submit(app, image_bytes, filename="photo.png", token=None, **fields):
    """``POST /api/jobs`` with the picture ``image_bytes`` and ``fields``: (status, body)."""
    fields.setdefault("prompt", "the waves roll in slowly")
    return call(app, "POST", "/api/jobs", fields=fields, files={"image": (filename, image_bytes)}, token=token)


def submit_job(app, **fields) -> str:
    """A job of a small blue picture (prompt "waves" unless ``fields`` say otherwise), accepted: its id."""
    status, job = submit(app, png(Image.new("RGB", (96, 80), (40, 120, 200))), "p.png",
                         **{"prompt": "waves", **fields})
    assert status == 202, job
    return job["id"]


def wait_done(app, job_id, token=None, timeout=240, every=0.2):
    """Poll the job until it is done, failed, cancelled or interrupted; returns it as the API shows it."""
    deadline = time.monotonic() + timeout
    while True:
        status, job = call(app, "GET", f"/api/jobs/{job_id}", token=token)
        assert status == 200, job
        if job["state"] in FINISHED:
            return job
        if time.monotonic() >= deadline:
            raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")
        time.sleep(every)


def workers_of(app) -> list[dict]:
    """``GET /api/workers``: each worker as the API lists it."""
    return fetch_json(app, "api/workers")["workers"]


def video_frames(app, job_id, tmp_path) -> int:
    """The number of frames in the done job's MP4, downloaded into ``tmp_path``."""
    status, video = call(app, "GET", f"/api/jobs/{job_id}/video")
    assert status == 200, video
    path = tmp_path / f"{job_id}.mp4"
    path.write_bytes(video)
    return probe_video(path).frames


def kill_a_worker_mid_job(server, tmp_path, every=0.1) -> dict:
    """SIGKILL the process running a job: the job must come back and finish whole on a second attempt,
    and the killed worker come back ready in a new process (returned, as ``/api/workers`` lists it)."""
    job_id = submit_job(server, **{**FAST_JOB, "num_inference_steps": "30"})

    def denoising_with_steps_to_go():  # visibly mid-job: two steps done, at least ten (over a second) to go
        job = fetch_json(server, f"api/jobs/{job_id}")
        progress = job["progress"]
        return (job["state"] == "running" and progress["stage"] == "denoising"
                and 2 <= progress["done"] <= progress["total"] - 10 and job)

    running = wait_for(denoising_with_steps_to_go, timeout=120, every=0.1)
    victim = running["worker"]["name"]
    pid = next(w["pid"] for w in workers_of(server) if w["id"] == victim and w["current_job"] == job_id)
    os.kill(pid, signal.SIGKILL)
    job = wait_done(server, job_id)
    assert job["state"] == DONE and job["attempts"] == 2, job
    assert video_frames(server, job_id, tmp_path) == 8
    assert f"Job {job_id} goes back in the queue" in server.log()
    back = wait_for(lambda: next((w for w in workers_of(server) if w["id"] == victim and w["state"] == "ready"
                                  and w["pid"] not in (None, pid)), None), timeout=180, every=every)
    assert back["pid"] != pid
    return back


# -- memory counted two ways: the app's tracer against torch's profiler ----------------------------------

def counted_bytes(run) -> int:
    """The peak ``memory_trace.LiveBytes`` counts while ``run()`` runs."""
    from image_to_video import memory_trace

    with memory_trace.LiveBytes() as counter:
        run()
    return counter.peak


def profiler_peak_bytes(run, *, tensors_only: bool = False) -> int:
    """The peak of what ``run()`` allocates on the CPU, by torch's profiler (its memory timeline).
    ``tensors_only``: leave out what the CPU kernels allocate inside themselves and never hand out as a
    tensor (the im2col columns of a CPU convolution; the CPU attention's buffers)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, TensorKey

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        run()
    live = peak = 0
    for _time, action, (key, _version), size in prof._memory_profile().timeline:
        if tensors_only and not isinstance(key, TensorKey):
            continue
        if action == Action.CREATE:
            live += size
            peak = max(peak, live)
        elif action == Action.DESTROY:
            live -= size
    return peak


def served_wan(folder, models_dir):
    """The config a server on the Wan folder ``folder`` validates with (models in ``models_dir``), and its
    engine, loaded through the app's own loading code (on the CPU, float32)."""
    from image_to_video import families
    from image_to_video.config import load_config
    from image_to_video.engine_host import engine_for

    config = families.served_config(load_config(overrides={
        "model.source": str(folder), "paths.models_dir": str(models_dir), "model.device": "cpu"}))
    engine = engine_for(config)
    engine.load()
    assert engine.ready, engine.status.message
    return config, engine


def point_hub_at(monkeypatch, tmp_path, url: str) -> None:
    """Make huggingface_hub talk to ``url`` (a ``hub_server.HubServer``, or a dead address), online, with a
    cache of this test's own, as ``HF_ENDPOINT`` would: it reads these once, at import, so what was derived
    from them is set too. ``close_session`` (the client) again when the test ends."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # no copy from a real cache
    _http.close_session()  # a fresh client, built with this environment


def own_video(path, frames: int = 30, fps: int = 30, size=(320, 240)):
    """A video of a creator's own (a real H.264 MP4 with moving content): ``frames`` frames of ``size`` at
    ``fps``, as a phone might make (30 fps: more than the model takes)."""
    width, height = size
    ramp = np.arange(width)[None, :, None]
    made = np.stack([np.broadcast_to((ramp + 8 * i) % 256, (height, width, 3)).astype(np.uint8)
                     for i in range(frames)])
    write_video(made, path, fps)
    return path


def lora_layers(transformer, *, seed, rank=4, alpha=8):
    """A LoRA on ``transformer``'s attention projections as peft makes one, with random (not zero) weights
    so that it changes the frames; alpha is not the rank, so the file's metadata matters. Its state dict
    and its adapter metadata."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    torch.manual_seed(seed)
    transformer.add_adapter(config)
    return get_peft_model_state_dict(transformer), transformer.peft_config["default"].to_dict()


def save_lora(folder, models, name, *, seed=0, experts=("transformer",), transformer=None):
    """``models/loras/<name>.safetensors``: a LoRA for the Wan folder ``folder``'s transformer (or
    ``transformer``), with weights for each of ``experts`` (different ones for each), written by diffusers'
    own saving code."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from image_to_video import loras

    layers, metadata = {}, {}
    for index, expert in enumerate(experts):
        model = transformer() if transformer else WanTransformer3DModel.from_pretrained(folder / "transformer")
        layers[expert], metadata[expert] = lora_layers(model, seed=seed + index)
    WanImageToVideoPipeline._save_lora_weights(  # what save_lora_weights calls, here with both experts
        save_directory=loras.folder(models), lora_layers=layers, lora_metadata=metadata,
        weight_name=f"{name}.safetensors")
    return loras.folder(models) / f"{name}.safetensors"
