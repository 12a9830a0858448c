import json
import random
from fnmatch import fnmatch

import pytest

from image_to_video import model_store
from image_to_video.errors import ModelUnavailable

from .helpers import point_hub_at
from .hub_server import HubServer


def test_a_folder_is_used_as_it_is(tmp_path):
    folder, revision = model_store.ensure_local(str(tmp_path), tmp_path / "models", variant="fp16",
                                                revision="main")
    assert folder == tmp_path and revision is None


def test_a_missing_folder_is_explained(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not exist.*model.source"):
        model_store.ensure_local(str(tmp_path / "nope"), tmp_path, variant="fp16", revision="main")


def test_a_repo_id_goes_to_models_and_a_finished_download_needs_no_network(tmp_path, monkeypatch):
    folder = model_store.local_folder("ali-vilab/i2vgen-xl", tmp_path)
    assert folder == tmp_path / "i2vgen-xl"
    folder.mkdir()
    record = {"repo_id": "ali-vilab/i2vgen-xl", "revision": "main", "sha": "abc123", "variant": "fp16"}
    (folder / model_store.COMPLETE_FILE).write_text(json.dumps(record))
    monkeypatch.setattr(model_store, "_download", lambda *a, **k: pytest.fail("must not download"))
    assert model_store.ensure_local("ali-vilab/i2vgen-xl", tmp_path, variant="fp16",
                                    revision="main") == (folder, "abc123")


REPO = "ali-vilab/i2vgen-xl"
UNET16 = "unet/diffusion_pytorch_model.fp16.safetensors"


def _repo_files() -> dict[str, bytes]:
    """A small repo laid out like i2vgen-xl: configs, fp16 and full-precision weights, extras."""
    rng = random.Random(7)
    return {
        "model_index.json": b'{"_class_name": "I2VGenXLPipeline"}',
        "README.md": b"# not a weight, not fetched",
        "unet/config.json": b'{"sample_size": 64}',
        "unet/diffusion_pytorch_model.safetensors": rng.randbytes(400_000),
        UNET16: rng.randbytes(200_000),
        "text_encoder/config.json": b'{"hidden_size": 32}',
        "text_encoder/model.safetensors": rng.randbytes(60_000),
        "text_encoder/model.fp16.safetensors": rng.randbytes(30_000),
        "tokenizer/merges.txt": b"#version: 0.2\nh e\n",
        "tokenizer/vocab.json": b'{"h": 0, "e": 1}',
    }


#: What ensure_local(variant="fp16") must fetch: the fp16 weights and every json/txt file.
WANTED = {name for name in _repo_files() if name.endswith((".json", ".txt", ".fp16.safetensors"))}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A hub on 127.0.0.1 that huggingface_hub really talks to (HF_ENDPOINT), online for this test."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    with HubServer(REPO, _repo_files()) as server:
        point_hub_at(monkeypatch, tmp_path, server.url)
        # Bytes reach the file 10 MB at a time; smaller pieces let a few-hundred-KB file be cut part-way.
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
        yield server
        _http.close_session()


def _fetched(hits) -> set[str]:
    return {hit.path for hit in hits if not hit.path.startswith("/api/")}


def _partial_files(folder):
    return sorted((folder / ".cache").rglob("*.incomplete")) if (folder / ".cache").exists() else []


def test_an_interrupted_download_keeps_finished_files_and_the_next_start_completes_it(tmp_path, hub):
    models = tmp_path / "models"
    folder = model_store.local_folder(REPO, models)
    on_disk_at_retry = []

    def watch(method, path, headers):
        if path == UNET16 and headers.get("Range"):
            on_disk_at_retry.extend(p.stat().st_size for p in _partial_files(folder))

    # First start: the hub drops the UNet download after 64 KiB and then answers 503 for it.
    hub.interrupt(UNET16, after=65_536, then_status=503)
    hub.on_request = watch
    what_to_do = r"(?s)Downloading ali-vilab/i2vgen-xl failed: .*503.*Check the network.*start again"
    with pytest.raises(ModelUnavailable, match=what_to_do):
        model_store.ensure_local(REPO, models, variant="fp16", revision="main")
    first = hub.take_hits()
    assert model_store.download_record(folder) is None  # not "complete": the next start downloads
    unet_gets = [(h.range, h.status, h.sent) for h in first if h.path == UNET16 and h.method == "GET"]
    # huggingface_hub retries the cut connection at once, from where it stopped ...
    assert unet_gets == [(None, 200, 65_536), ("bytes=65536-", 503, len(b'{"error": "Service unavailable"}'))]
    assert on_disk_at_retry == [65_536]
    # ... but when that fails it deletes the partial file (a process-unique temp file, see
    # huggingface_hub.file_download._download_to_tmp_and_move): nothing of it survives the start.
    assert not (folder / UNET16).exists() and _partial_files(folder) == []
    finished = WANTED - {UNET16}
    assert all((folder / name).read_bytes() == hub.files[name] for name in finished)

    # Next start: the hub is back.
    hub.heal()
    seen = []
    assert model_store.ensure_local(REPO, models, variant="fp16", revision="main",
                                    progress=lambda done, total: seen.append((done, total))) == (folder, hub.sha)
    second = hub.take_hits()
    assert [h.path for h in second if h.path.startswith("/api/")] == [f"/api/models/{REPO}/revision/main"]
    # The files finished before the interruption are not asked for again (no HEAD, no GET): only
    # the unfinished one is, and it comes again from byte 0 (no Range): partial bytes are not resumed.
    assert _fetched(second) == {UNET16}
    assert [(h.range, h.status, h.sent) for h in second if h.method == "GET" and h.path == UNET16] == \
        [(None, 200, len(hub.files[UNET16]))]
    # Only the fp16 weights and the json/txt files were ever fetched, and they match the hub's bytes.
    assert _fetched(first) | _fetched(second) == WANTED
    assert all((folder / name).read_bytes() == hub.files[name] for name in WANTED)
    assert not (folder / "unet/diffusion_pytorch_model.safetensors").exists()
    assert not (folder / "text_encoder/model.safetensors").exists()
    assert model_store.download_record(folder) == {"repo_id": REPO, "revision": "main", "sha": hub.sha,
                                                   "variant": "fp16"}
    # Progress came in bytes, as the file arrived, and ended at the size of what was fetched.
    assert len(seen) > 1 and all(done <= total for done, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (len(hub.files[UNET16]), len(hub.files[UNET16]))

    # Once complete, a start makes no request at all.
    assert model_store.ensure_local(REPO, models, variant="fp16", revision="main") == (folder, hub.sha)
    assert hub.take_hits() == []


def test_a_connection_dropped_mid_file_is_resumed_with_a_range_request(tmp_path, hub):
    models = tmp_path / "models"
    hub.interrupt(UNET16, after=65_536, then_status=None)  # the connection drops once; the hub stays up
    folder, sha = model_store.ensure_local(REPO, models, variant="fp16", revision="main")
    gets = [(h.range, h.status, h.sent) for h in hub.take_hits() if h.method == "GET" and h.path == UNET16]
    size = len(hub.files[UNET16])
    assert gets == [(None, 200, 65_536), ("bytes=65536-", 206, size - 65_536)]  # no byte fetched twice
    assert (folder / UNET16).read_bytes() == hub.files[UNET16]
    assert sha == hub.sha and model_store.download_record(folder)["sha"] == hub.sha


def test_download_progress_is_reported_in_bytes():
    seen = []
    reporter = model_store.progress_class(lambda done, total: seen.append((done, total)))
    bar = reporter(total=1000, unit="B", disable=True)
    bar.update(250)
    bar.update(750)
    files = reporter(total=3, unit="it", disable=True)
    files.update(1)  # the file-count bar is not a byte count
    assert seen == [(250, 1000), (1000, 1000)]


def test_variant_detection(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert not model_store.has_variant(tmp_path, "fp16")
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert model_store.has_variant(tmp_path, "fp16") and not model_store.has_variant(tmp_path, "")


def test_a_repo_without_the_variant_gets_its_full_precision_safetensors():
    # Wan-AI/Wan2.2-TI2V-5B-Diffusers' weight files (sharded, no fp16 variant), as the hub lists them
    wan = ["model_index.json", "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
           "transformer/diffusion_pytorch_model.safetensors.index.json", "vae/diffusion_pytorch_model.safetensors",
           "text_encoder/model-00001-of-00003.safetensors", "tokenizer/spiece.model", "tokenizer/tokenizer.json"]
    patterns = model_store._weight_patterns("fp16", wan)
    assert any(fnmatch(name, pattern) for pattern in patterns for name in wan if "transformer/" in name)
    assert model_store._weight_patterns("fp16", list(_repo_files())) == ["*.fp16.safetensors"]
