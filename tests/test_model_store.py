import json

import pytest

from image_to_video import model_store
from image_to_video.errors import ModelUnavailable


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


def test_an_unfinished_download_is_resumed_with_the_right_files(tmp_path, monkeypatch):
    calls = {}

    class FakeApi:
        def model_info(self, repo_id, revision):
            return type("Info", (), {"sha": "f00d"})()

    def fake_snapshot(repo_id, **kwargs):
        calls.update(kwargs, repo_id=repo_id)
        kwargs["local_dir"].mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    (tmp_path / "i2vgen-xl").mkdir()  # a partial folder from an interrupted run
    folder, sha = model_store.ensure_local("ali-vilab/i2vgen-xl", tmp_path, variant="fp16", revision="main")
    assert sha == "f00d" and calls["revision"] == "f00d" and calls["local_dir"] == folder
    assert "*.fp16.safetensors" in calls["allow_patterns"] and "*.json" in calls["allow_patterns"]
    assert model_store.download_record(folder)["sha"] == "f00d"


def test_download_progress_is_reported_in_bytes():
    seen = []
    reporter = model_store._progress_class(lambda done, total: seen.append((done, total)))
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
