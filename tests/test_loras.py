"""LoRAs (loras.py, families/adapters.py) on the tiny Wan pipelines, each LoRA made in code with peft and
saved with diffusers' ``save_lora_weights``: a LoRA changes the frames exactly as plain diffusers'
``load_lora_weights`` and ``set_adapters`` do, strength 0 and a job without LoRAs after one with give the
frames of a model that never held one, A14B takes one in both experts when it has weights for both, a
LoRA for other shapes or another model is refused with its name; requests, the API, the command line
and a batch name them as name:strength, and the job's record lists each with its file's sha256."""

import dataclasses
import hashlib
import io
import json
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from fastapi.testclient import TestClient
from peft.tuners.tuners_utils import BaseTunerLayer
from PIL import Image

from image_to_video import batch, catalogue, cli, families, gpu, loras
from image_to_video.config import load_config
from image_to_video.errors import InvalidInput
from image_to_video.families.wan import demo
from image_to_video.job_queue import JobQueue
from image_to_video.job_store import SQLiteJobStore
from image_to_video.live import LiveJobs
from image_to_video.model_status import ModelState, ModelStatus
from image_to_video.outputs import OutputFolder
from image_to_video.request import build_request
from image_to_video.server import create_app

from .app_process import AppProcess, free_port
from .helpers import call, largest_difference, png, point_hub_at, save_lora, served_wan, submit, wait_done
from .hub_server import HubServer

#: The cheapest video the cards allow: 5 frames (4k+1), 2 steps, 480p (run at 256x160 by ``small``).
CHEAP = dict(resolution="480p", num_frames=5, num_inference_steps=2)


def small(request, width=256, height=160):
    """``request`` at a size the models take but the cards do not offer, so that these tests stay cheap."""
    return dataclasses.replace(request, image=request.image.resize((width, height)), width=width, height=height)


def picture(width=600, height=340, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def plain_diffusers(folder, request, adapters=(), into_second=()):
    """diffusers alone on the same folder, seed and settings, after ``load_lora_weights(file,
    adapter_name=...)`` for each (name, file, strength) of ``adapters`` (those in ``into_second`` with
    ``load_into_transformer_2=True``) and ``set_adapters``."""
    pipe = WanImageToVideoPipeline.from_pretrained(folder, dtype=torch.float32)
    for name, path, _ in adapters:
        pipe.load_lora_weights(str(path), adapter_name=name, **({"load_into_transformer_2": True}
                                                                if name in into_second else {}))
    if adapters:
        pipe.set_adapters([name for name, _, _ in adapters], [strength for _, _, strength in adapters])
    frames = pipe(image=request.image, prompt=request.prompt, negative_prompt=request.negative_prompt,
                  height=request.height, width=request.width, num_frames=request.num_frames,
                  num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                  generator=torch.Generator("cpu").manual_seed(request.seed), output_type="np").frames[0]
    return (frames * 255).round().astype(np.uint8)


def lora_layers_in(module) -> int:
    return sum(isinstance(layer, BaseTunerLayer) for layer in module.modules())


def test_a_lora_changes_the_frames_as_plain_diffusers_and_leaves_nothing_once_a_job_has_none(wan_5b, tmp_path):
    models = tmp_path / "models"
    config, engine = served_wan(wan_5b, models)
    style = save_lora(wan_5b, models, "style")  # put there after the server started: offered at once

    def make(wanted):
        return engine.generate(small(build_request(config, image=picture(), prompt="waves", seed=11, loras=wanted,
                                                   **CHEAP))).frames

    fresh = make(None)
    with_lora = make("style:0.8")
    assert largest_difference(with_lora, fresh) > 10  # it changes the frames
    assert largest_difference(with_lora, plain_diffusers(wan_5b, small(build_request(
        config, image=picture(), prompt="waves", seed=11, **CHEAP)), [("style", style, 0.8)])) <= 1
    assert np.array_equal(make("style:0"), fresh)  # strength 0: no change at all
    assert lora_layers_in(engine.pipeline.transformer) > 0
    assert np.array_equal(make(""), fresh)  # unloaded: the frames of the model that never held it
    assert lora_layers_in(engine.pipeline.transformer) == 0 and engine.family.adapters.loaded == []


def test_several_loras_at_once_and_a_dropped_one_give_plain_diffusers_frames(wan_5b, tmp_path):
    models = tmp_path / "models"
    config, engine = served_wan(wan_5b, models)
    style, motion = save_lora(wan_5b, models, "style", seed=1), save_lora(wan_5b, models, "motion", seed=2)
    request = small(build_request(config, image=picture(seed=3), prompt="waves", seed=5, **CHEAP))
    both = engine.generate(dataclasses.replace(request, loras=loras.check("style:0.5, motion:-1", models,
                                                                          engine.card))).frames
    expected = plain_diffusers(wan_5b, request, [("style", style, 0.5), ("motion", motion, -1.0)])
    assert largest_difference(both, expected) <= 1
    alone = engine.generate(dataclasses.replace(request, loras=loras.check("motion:1", models, engine.card))).frames
    assert largest_difference(alone, plain_diffusers(wan_5b, request, [("motion", motion, 1.0)])) <= 1


def test_a14b_takes_a_lora_into_both_experts_when_it_has_weights_for_both(wan_a14b, tmp_path):
    models = tmp_path / "models"
    config, engine = served_wan(wan_a14b, models)
    save_lora(wan_a14b, models, "both", seed=4, experts=("transformer", "transformer_2"))
    high, low = save_lora(wan_a14b, tmp_path / "plain", "high", seed=4), save_lora(wan_a14b, tmp_path / "plain",
                                                                                    "low", seed=5)
    request = small(build_request(config, image=picture(seed=1), prompt="waves", seed=5, loras="both:0.7",
                                  **CHEAP))
    made = engine.generate(request).frames
    assert all(lora_layers_in(expert) > 0 for expert in engine.family.experts)
    # plain diffusers: the same weights, the second expert's through load_into_transformer_2
    expected = plain_diffusers(wan_a14b, request, [("high", high, 0.7), ("low", low, 0.7)], into_second=("low",))
    assert largest_difference(made, expected) <= 1
    # a file for the first expert alone goes where load_lora_weights puts it: the first expert only
    save_lora(wan_a14b, models, "first", seed=4)
    engine.generate(dataclasses.replace(request, loras=loras.check("first:1", models, engine.card)))
    assert lora_layers_in(engine.pipeline.transformer) > 0 and lora_layers_in(engine.pipeline.transformer_2) == 0


def test_a14b_takes_one_file_per_expert_named_at_high_and_at_low_as_plain_diffusers(wan_a14b, tmp_path):
    """A Lightning LoRA is two files, one per expert: ``name@high`` puts a file's weights into the noisy
    steps' expert only, ``name@low`` into the later steps' (diffusers' ``load_into_transformer_2``)."""
    models = tmp_path / "models"
    config, engine = served_wan(wan_a14b, models)
    high, low = save_lora(wan_a14b, models, "fast-high", seed=6), save_lora(wan_a14b, models, "fast-low", seed=7)
    save_lora(wan_a14b, models, "both", seed=4, experts=("transformer", "transformer_2"))
    make = lambda value: build_request(config, image=picture(seed=2), prompt="waves", seed=3,  # noqa: E731
                                       loras=value, **CHEAP)
    entries = make("fast-high@high:1, fast-low@low:0.6").loras
    assert [(entry["name"], entry.get("expert"), entry["strength"]) for entry in entries] == [
        ("fast-high", "high", 1.0), ("fast-low", "low", 0.6)]
    assert entries[1]["sha256"] == hashlib.sha256(low.read_bytes()).hexdigest()
    assert loras.text(entries) == "fast-high@high:1,fast-low@low:0.6"
    assert make(list(entries)).loras == entries  # a record's entries (a retried job) read back with their expert
    # the same file into each expert at its own strength is two LoRAs, not one named twice
    assert len(make("fast-low@high:0.5,fast-low@low:1").loras) == 2
    with pytest.raises(InvalidInput, match="LoRA 'fast-low@low' is named twice"):
        make("fast-low@low:0.5,fast-low@low:1")
    request = small(make("fast-high@high:1, fast-low@low:0.6"))
    made = engine.generate(request).frames
    expected = plain_diffusers(wan_a14b, small(make(None)), [("high", high, 1.0), ("low", low, 0.6)],
                               into_second=("low",))
    assert largest_difference(made, expected) <= 1
    # the low-noise file alone: the second expert holds a LoRA, the first none
    engine.generate(small(make("fast-low@low:1")))
    assert lora_layers_in(engine.pipeline.transformer) == 0 and lora_layers_in(engine.pipeline.transformer_2) > 0
    # a file with weights for both experts cannot be put into one: refused before a step, nothing loaded
    with pytest.raises(InvalidInput, match="LoRA 'both' has weights for both experts already"):
        engine.generate(small(make("both@low:1")))
    assert lora_layers_in(engine.pipeline.transformer_2) == 0


def test_a_model_with_one_transformer_refuses_an_expert_with_words(wan_5b, tmp_path):
    models = tmp_path / "models"
    config = families.served_config(load_config(overrides={"model.source": str(wan_5b),
                                                           "paths.models_dir": str(models)}))
    save_lora(wan_5b, models, "style")
    with pytest.raises(InvalidInput, match="Wan2.2-TI2V-5B has one transformer, so a LoRA cannot be put into one "
                                           "expert"):
        build_request(config, image=picture(), prompt="waves", loras="style@low:1")


def test_a_lora_loads_and_unloads_under_group_offload_with_the_same_frames(wan_5b, tmp_path, offload_on_the_cpu):
    models = tmp_path / "models"
    config, engine = served_wan(wan_5b, models)
    save_lora(wan_5b, models, "style")
    request = small(build_request(config, image=picture(), prompt="waves", seed=2, **CHEAP))
    styled = dataclasses.replace(request, loras=loras.check("style:0.8", models, engine.card))
    fresh, with_lora = engine.generate(request).frames, engine.generate(styled).frames
    engine.generate(request)  # unloaded before the pipeline is offloaded
    gpu.enable_group_offload(engine.pipeline, torch.device("cpu"))
    assert largest_difference(engine.generate(styled).frames, with_lora) <= 1  # loaded under the offload hooks
    assert largest_difference(engine.generate(request).frames, fresh) <= 1  # and unloaded under them
    assert lora_layers_in(engine.pipeline.transformer) == 0


def test_a_lora_for_other_shapes_or_another_model_is_refused_by_name_before_a_step_runs(wan_5b, tmp_path):
    models = tmp_path / "models"
    config, engine = served_wan(wan_5b, models)
    request = small(build_request(config, image=picture(), prompt="waves", seed=2, **CHEAP))
    fresh = engine.generate(request).frames
    wider = dict(demo.build_transformer("ti2v-5b").config, attention_head_dim=16)  # 32 wide, not 24
    save_lora(wan_5b, models, "wide", transformer=lambda: WanTransformer3DModel.from_config(wider))
    save_lora(wan_5b, models, "deeper", transformer=lambda: WanTransformer3DModel.from_config(
        dict(wider, attention_head_dim=12, num_layers=3)))  # a layer the model does not have
    unet = loras.folder(models) / "unet.safetensors"
    from safetensors.torch import save_file
    save_file({"unet.down.lora_A.weight": torch.ones(4, 8), "unet.down.lora_B.weight": torch.ones(8, 4)}, unet)
    for name, words in [("wide", "are 4x32, where that layer takes 4x24. It was made for another model"),
                        ("deeper", "it changes the layer blocks.2.attn1.to_k, which Wan2.2-TI2V-5B does not have"),
                        ("unet", "it has no weights for its transformer (its weights are for unet)")]:
        reports = []
        with pytest.raises(InvalidInput) as refused:
            engine.generate(dataclasses.replace(request, loras=loras.check(f"{name}:1", models, engine.card)),
                            progress=reports.append)
        assert f"LoRA '{name}' does not fit Wan2.2-TI2V-5B" in str(refused.value) and words in str(refused.value)
        assert not [p for p in reports if p.stage == "denoising" and p.done]  # refused before any step
    assert np.array_equal(engine.generate(request).frames, fresh)  # nothing was left half-loaded
    assert lora_layers_in(engine.pipeline.transformer) == 0


def test_a_request_names_loras_on_disk_with_sane_strengths_or_is_refused_with_words(wan_5b, tmp_path):
    models = tmp_path / "models"
    config = families.served_config(load_config(overrides={"model.source": str(wan_5b),
                                                           "paths.models_dir": str(models)}))
    make = lambda value: build_request(config, image=picture(), prompt="waves", loras=value).loras  # noqa: E731
    with pytest.raises(InvalidInput, match="LoRA 'style' is not in the LoRA folder, which holds none yet"):
        make("style:0.8")
    path = save_lora(wan_5b, models, "style")  # no restart: offered from now on
    save_lora(wan_5b, models, "motion", seed=1)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert make("style:0.8") == ({"name": "style", "strength": 0.8, "sha256": digest},)
    assert make(" style : 0.8 ,motion") == make(["style:0.8", "motion:1"]) == make({"style": "0.8", "motion": 1}) \
        == make([("style", 0.8), ("motion", "1")])
    assert [entry["name"] for entry in make("motion:1,style:2")] == ["motion", "style"]  # in the order given
    assert make("") == make(None) == ()
    record = build_request(config, image=picture(), prompt="waves", loras="style:0.8").parameters()
    assert record["loras"] == [{"name": "style", "strength": 0.8, "sha256": digest}]
    assert make(record["loras"]) == make("style:0.8")  # a record's list (a retried job) reads back
    assert loras.text(make("style:0.8,motion:-1")) == "style:0.8,motion:-1"
    assert [entry["name"] for entry in loras.listing(models)] == ["motion", "style"]
    for value, words in [("nope:1", "LoRA 'nope' is not in the LoRA folder (loras/ in the models folder). "
                                    "Available: motion, style."),
                         ("style:strong", "LoRA 'style': the strength 'strong' is not a number from -4 to 4."),
                         ("style:9", "LoRA 'style': the strength 9 is not a number from -4 to 4."),
                         ("style:nan", "is not a number from -4 to 4"),
                         ("style:1,style:0.5", "LoRA 'style' is named twice."),
                         (":1", "is not a list of name:strength"),
                         (",".join(f"x{i}:1" for i in range(9)), "9 LoRAs were asked for; at most 8")]:
        with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            make(value)
    (loras.folder(models) / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidInput, match="LoRA 'broken' cannot be read as LoRA weights"):
        make("broken:1")
    # a model whose card takes no LoRAs says so (and why not is in its card)
    xl = families.served_config(load_config(overrides={"paths.models_dir": str(models)}))
    assert not families.served_card(xl).loras and "no LoRA loader" in families.served_card(xl).sources["loras"]
    with pytest.raises(InvalidInput, match="I2VGen-XL takes no LoRAs"):
        build_request(xl, image=picture(), prompt="waves", loras="style:1")
    assert build_request(xl, image=picture(), prompt="waves", loras="").loras == ()
    # both languages
    error = pytest.raises(InvalidInput, make, "nope:1").value
    from image_to_video.i18n import localized
    assert "nope" in localized(error, "zh-CN") and "LoRA 文件夹" in localized(error, "zh-CN")
    # a file that changed after the job was queued is not used in its place
    changing = save_lora(wan_5b, models, "changing", seed=17)
    entry = make("changing:1")[0]
    loras.serve_from(models)
    assert loras.find(entry) == changing
    save_lora(wan_5b, models, "changing", seed=18)
    with pytest.raises(InvalidInput, match="LoRA 'changing' changed after the job was queued"):
        loras.find(entry)
    changing.unlink()
    with pytest.raises(InvalidInput, match="LoRA 'changing' is no longer in the LoRA folder"):
        loras.find(entry)


class Model:
    """What the app reads of an engine that is still loading."""

    memory_mode, gpu_memory_gb, gpu_name, ready = None, None, None, False
    status = ModelStatus(state=ModelState.LOADING)

    def device_answers(self):
        return True


def test_the_api_describes_lists_and_checks_loras_and_a_job_keeps_them(wan_5b, tmp_path):
    models = tmp_path / "models"
    config = families.served_config(load_config(overrides={
        "model.source": str(wan_5b), "paths.models_dir": str(models), "paths.output_dir": str(tmp_path / "o"),
        "paths.state_dir": str(tmp_path / "d"), "outputs.min_free_gb": 0}))
    queue = JobQueue(SQLiteJobStore(tmp_path / "j.sqlite3"), config, live=LiveJobs(), inputs_dir=tmp_path / "i")
    client = TestClient(create_app(config, queue, OutputFolder(tmp_path / "o", config.outputs), Model()))
    form = client.get("/openapi.json").json()["components"]["schemas"]
    fields = next(schema["properties"] for schema in form.values() if "loras" in schema.get("properties", {}))
    assert "comma-separated list of name:strength" in fields["loras"]["description"]
    assert client.get("/api/loras").json()["loras"] == []
    takes = {model["name"]: model["loras"] for model in client.get("/api/models").json()["models"]}
    assert takes["wan2.2-ti2v-5b"] is True and takes.get("i2vgen-xl", False) is False
    path = save_lora(wan_5b, models, "style")
    listed = client.get("/api/loras").json()
    assert (listed["loras"], listed["models"], listed["downloads"]) == (
        [{"name": "style", "size_mb": 0.0}], ["wan2.2-ti2v-5b", "wan2.2-i2v-a14b"], [])
    assert listed["fast"]["wan2.2-i2v-a14b"]["on_disk"] is False and "@low:1" in listed["fast"]["wan2.2-i2v-a14b"][
        "loras"]
    photo = png(picture())
    refused = client.post("/api/jobs", data={"prompt": "waves", "loras": "gone:1"},
                          files={"image": ("p.png", photo)})
    assert refused.status_code == 400 and "LoRA 'gone' is not in the LoRA folder" in refused.json()["error"]
    job = client.post("/api/jobs", data={"prompt": "waves", "loras": "style:0.8"}, files={"image": ("p.png", photo)})
    assert job.status_code == 202, job.text
    listed = {"name": "style", "strength": 0.8, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert job.json()["loras"] == job.json()["params"]["loras"] == [listed]
    stored = queue.get(job.json()["id"])
    assert stored.params["loras"] == [listed]  # as the worker reads it back
    retried = queue.retry(queue.cancel(stored.id).id)  # the same LoRAs, checked again
    assert retried.params["loras"] == [listed]


def test_the_command_line_and_a_batch_file_take_loras(tmp_path):
    args, _config = cli.parse_config(["generate", "--image", "a.png", "--prompt", "waves", "--loras", "style:0.8"])
    assert batch._spec_from_flags(args)["loras"] == "style:0.8"
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"image": "a.png", "prompt": "waves", "loras": "style:0.8,motion:1"}) + "\n")
    assert batch.read_batch(jobs)[0]["loras"] == "style:0.8,motion:1"


def frames_of(server, job_id):
    status, data = call(server, "GET", f"/api/jobs/{job_id}/video?format=png")
    assert status == 200, data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return np.stack([np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))
                         for name in sorted(archive.namelist())])


def test_a_server_makes_a_lora_job_then_a_job_without_gives_its_fresh_frames(wan_5b, tmp_path):
    models = tmp_path / "models"
    server = AppProcess(tmp_path, free_port(), "--model", str(wan_5b), demo=False, models=models).start(timeout=240)
    try:
        path = save_lora(wan_5b, models, "style")  # after the start: no restart needed
        made = {}
        for label, extra in [("fresh", {}), ("lora", {"loras": "style:0.8"}), ("after", {})]:
            status, job = submit(server, png(picture()), prompt="waves", formats="png", seed="4",
                                 **{k: str(v) for k, v in CHEAP.items()}, **extra)
            assert status == 202, job
            done = wait_done(server, job["id"], timeout=240)
            assert done["state"] == "done", done
            made[label] = (frames_of(server, job["id"]), call(server, "GET", f"/api/jobs/{job['id']}/metadata")[1])
        assert made["lora"][1]["loras"] == made["lora"][1]["parameters"]["loras"] == [
            {"name": "style", "strength": 0.8, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]
        assert made["fresh"][1]["loras"] == made["after"][1]["loras"] == []
        assert largest_difference(made["lora"][0], made["fresh"][0]) > 10
        assert np.array_equal(made["after"][0], made["fresh"][0])  # exactly the frames of the fresh server
        # the LoRA job's frames are plain diffusers' on the same folder, picture, seed and settings
        record = made["lora"][1]
        picture_used = tmp_path / "outputs" / record["input_image"]
        settings = SimpleNamespace(image=Image.open(picture_used).convert("RGB"), **{
            key: record[key] for key in ("negative_prompt", "width", "height", "num_frames", "num_inference_steps",
                                         "guidance_scale", "seed")}, prompt=record["prompt"])
        assert largest_difference(made["lora"][0], plain_diffusers(wan_5b, settings, [("style", path, 0.8)])) <= 1
    finally:
        server.stop()


def test_the_card_says_which_models_take_loras():
    taking = {card.name: card.loras for card in families.CARDS.values()}
    assert taking == {"i2vgen-xl": False, "wan2.2-ti2v-5b": True, "wan2.2-i2v-a14b": True}
    assert all("loras" in card.sources for card in families.CARDS.values())



def test_the_fast_presets_loras_are_fetched_from_the_hub_once_and_never_over_a_users_file(
        wan_a14b, tmp_path, monkeypatch):
    """``POST /api/loras`` with ``fast=<model>`` downloads the files the card names (from a hub on loopback,
    as ``HF_ENDPOINT`` points it), once; a Fast job before that is refused with what to do, after it is
    taken with each file's expert; bad sources and a file of the same name from elsewhere are refused."""
    card = families.CARDS["wan2.2-i2v-a14b"]
    made = tmp_path / "made"
    published = {lora.file: save_lora(wan_a14b, made, lora.name, seed=index).read_bytes()
                 for index, lora in enumerate(card.fast.loras)}
    repo = card.fast.loras[0].repo
    models = tmp_path / "models"
    config = families.served_config(load_config(overrides={
        "model.source": str(wan_a14b), "paths.models_dir": str(models), "paths.output_dir": str(tmp_path / "o"),
        "paths.state_dir": str(tmp_path / "d"), "outputs.min_free_gb": 0}))
    queue = JobQueue(SQLiteJobStore(tmp_path / "j.sqlite3"), config, live=LiveJobs(), inputs_dir=tmp_path / "i")
    fetches = loras.Fetches(models)
    client = TestClient(create_app(config, queue, OutputFolder(tmp_path / "o", config.outputs), Model(),
                                   lora_fetches=fetches))
    photo = png(picture())
    fast = dict(prompt="waves", loras=card.fast.loras_text(), **{
        name: str(value) for name, value in zip(("resolution", "num_frames", "fps", "num_inference_steps",
                                                 "guidance_scale"), card.generation.presets["Fast"].values())})
    refused = client.post("/api/jobs", data=fast, files={"image": ("p.png", photo)})
    assert refused.status_code == 400 and "belongs to the Fast preset and is not downloaded yet" in \
        refused.json()["error"] and "python main.py loras fetch --fast wan2.2-i2v-a14b" in refused.json()["error"]
    with HubServer(repo, published) as hub:
        point_hub_at(monkeypatch, tmp_path, hub.url)
        asked = client.post("/api/loras", data={"fast": "wan2.2-i2v-a14b"})
        assert asked.status_code == 202, asked.text
        assert [item["name"] for item in asked.json()["downloads"]] == list(card.fast.names())
        assert fetches.wait(timeout=60)
        listed = client.get("/api/loras").json()
        assert [item["state"] for item in listed["downloads"]] == ["done", "done"], listed["downloads"]
        assert listed["fast"]["wan2.2-i2v-a14b"]["on_disk"] is True
        for lora in card.fast.loras:  # the published bytes, under the card's names
            assert (loras.folder(models) / f"{lora.name}.safetensors").read_bytes() == published[lora.file]
        fetched = [hit.path for hit in hub.take_hits() if hit.method == "GET" and hit.path in published]
        assert sorted(fetched) == sorted(published)
        # asked again: nothing fetched, nothing queued
        assert client.post("/api/loras", data={"fast": "wan2.2-i2v-a14b"}).status_code == 202
        assert fetches.wait(timeout=30) and not [hit for hit in hub.take_hits() if hit.path in published]
        # a file of that name from elsewhere, or one the user put there, is never replaced
        high = card.fast.loras[0]
        with pytest.raises(InvalidInput, match=f"A LoRA named '{high.name}' is already in the LoRA folder"):
            loras.fetch(repo, card.fast.loras[1].file, high.name, models)
        mine = loras.folder(models) / "mine.safetensors"
        mine.write_bytes(published[high.file])
        refused = client.post("/api/loras", data={"repo": repo, "file": high.file, "name": "mine"})
        assert refused.status_code == 400 and "A LoRA named 'mine' is already in the LoRA folder" in \
            refused.json()["error"]
        # bad sources: said with words, nothing fetched
        for fields, words in [({"repo": "../etc", "file": "a.safetensors"}, "is not a hub repo id"),
                              ({"repo": repo, "file": "../../secret.safetensors"}, "is not the path of a .safetensors"),
                              ({"repo": repo, "file": "model.bin"}, "is not the path of a .safetensors"),
                              ({"repo": repo, "file": high.file, "name": "a:b"}, "cannot name a LoRA"),
                              ({"repo": repo, "file": high.file, "name": "x@low"}, "cannot name a LoRA"),
                              ({"fast": "i2vgen-xl"}, "has no Fast preset"), ({}, "Say what to download")]:
            answer = client.post("/api/loras", data=fields)
            assert answer.status_code == 400 and words in answer.json()["error"], (fields, answer.text)
        assert not [hit for hit in hub.take_hits() if hit.method == "GET" and hit.path in published]
        # too big for a LoRA: not kept; a file the hub does not have: the download fails with the reason
        with pytest.raises(InvalidInput, match="LoRA 'huge' is 0.0 GB; LoRA downloads stop at 1e-06 GB"):
            loras.fetch(repo, high.file, "huge", models, max_bytes=1000)
        assert "huge" not in loras.available(models)
        client.post("/api/loras", data={"repo": repo, "file": "missing/lora.safetensors"})
        assert fetches.wait(timeout=30)
        failed = client.get("/api/loras?lang=zh-CN").json()["downloads"][-1]
        assert failed["state"] == "failed" and repo in failed["error"] and "HF_ENDPOINT" in failed["error"]
    # the Fast job is taken now, each file with its expert
    job = client.post("/api/jobs", data=fast, files={"image": ("p.png", photo)})
    assert job.status_code == 202, job.text
    assert [(entry["name"], entry["expert"], entry["strength"]) for entry in job.json()["loras"]] == [
        (lora.name, lora.expert, 1.0) for lora in card.fast.loras]
    assert (job.json()["params"]["num_inference_steps"], job.json()["params"]["guidance_scale"]) == (4, 1.0)


def test_the_command_line_lists_and_fetches_loras(wan_5b, tmp_path, monkeypatch, capsys):
    card = families.CARDS["wan2.2-ti2v-5b"]
    lora = card.fast.loras[0]
    data = save_lora(wan_5b, tmp_path / "made", "x").read_bytes()
    models = tmp_path / "models"
    with HubServer(lora.repo, {lora.file: data}) as hub:
        point_hub_at(monkeypatch, tmp_path, hub.url)
        assert cli.main(["loras", "fetch", "--fast", card.name, "--models-dir", str(models)]) == 0
        assert cli.main(["loras", "fetch", lora.repo, lora.file, "--name", "again", "--models-dir", str(models)]) == 0
    assert cli.main(["loras", "list", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert f"{lora.name}  (" in out and "again  (" in out and "2 LoRA(s) in" in out
    assert (loras.folder(models) / f"{lora.name}.safetensors").read_bytes() == data
    assert cli.main(["loras", "fetch", "--fast", "i2vgen-xl", "--models-dir", str(models)]) == 1
    assert "i2vgen-xl' has no Fast preset" in capsys.readouterr().err


def test_the_pages_lora_box_picks_several_keeps_strengths_and_the_fast_preset_fetches_its_loras(
        wan_a14b, tmp_path, monkeypatch):
    """The page's LoRA handlers (ui/lora_picker.py): picking adds a LoRA at strength 1 and keeps the
    strengths typed, the Fast preset puts its LoRAs into the box (another preset takes them out), the note
    offers their download while they are missing, and the button fetches them with progress."""
    from image_to_video.ui import lora_picker

    models = tmp_path / "models"
    save_lora(wan_a14b, models, "style", seed=1)
    save_lora(wan_a14b, models, "motion", seed=2)
    cards = {card.name: card for card in families.CARDS.values()}
    box = lora_picker.LoraBox(box="box", picker="picker", text="text", note="note", download="download")
    events = lora_picker.LoraEvents(box, models, lambda model: cards[model], loras.Fetches(models),
                                    lambda model: cards[model].generation.presets)
    assert events.picked(["style", "motion"], "style:0.5")["text"] == "style:0.5,motion:1"
    assert events.picked(["motion"], "style:0.5,motion@low:0.3")["text"] == "motion@low:0.3"
    assert events.picked([], "style:0.5")["text"] == ""
    shown = events.for_model("wan2.2-i2v-a14b", "en", "style:0.5")
    assert shown["box"]["visible"] is True and shown["picker"]["choices"] == ["motion", "style"]
    assert shown["picker"]["value"] == ["style"] and shown["note"] == ""
    assert events.for_model("i2vgen-xl", "en")["box"]["visible"] is False
    # the Fast preset: its LoRAs first, at full strength, each into its expert; the note offers the download
    fast = events.preset("Fast", "wan2.2-i2v-a14b", "style:0.5", "en")
    assert fast["text"] == "lightning-i2v-a14b-high@high:1,lightning-i2v-a14b-low@low:1,style:0.5"
    assert "The Fast preset needs lightning-i2v-a14b-high, lightning-i2v-a14b-low (2.5 GB in all)" in fast["note"]
    assert fast["download"]["visible"] is True and "2.5 GB" in fast["download"]["value"]
    assert "下载" in events.note("wan2.2-i2v-a14b", "zh-CN", fast["text"])["note"]
    assert events.preset("Standard", "wan2.2-i2v-a14b", fast["text"], "en")["text"] == "style:0.5"
    # the button: both files fetched from the hub, with progress, then the note says they are ready
    card = cards["wan2.2-i2v-a14b"]
    published = {lora.file: save_lora(wan_a14b, tmp_path / "made", lora.name, seed=3).read_bytes()
                 for lora in card.fast.loras}
    monkeypatch.setattr(lora_picker, "PROGRESS_EVERY_S", 0.05)
    with HubServer(card.fast.loras[0].repo, published) as hub:
        point_hub_at(monkeypatch, tmp_path, hub.url)
        said = list(events.download("wan2.2-i2v-a14b", "en", fast["text"]))
    assert said[-1]["note"] == "✅ The Fast LoRAs are downloaded: Generate uses them."
    assert said[-1]["download"]["visible"] is False
    assert set(card.fast.names()) <= set(loras.available(models))
    assert events.note("wan2.2-i2v-a14b", "en", fast["text"])["note"] == ""


def test_the_estimate_counts_the_loras_weights(wan_a14b, tmp_path):
    models = tmp_path / "models"
    path = save_lora(wan_a14b, models, "style")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        weights = sum(file.get_tensor(key).numel() for key in file.keys())
    assert loras.weights_gb("style:0.8", models, bytes_per_value=2) == pytest.approx(weights * 2 / 2**30)
    assert loras.weights_gb("style@high:1,style@low:1", models, bytes_per_value=4) == pytest.approx(
        2 * weights * 4 / 2**30)  # once in each expert
    assert loras.weights_gb("gone:1", models, bytes_per_value=2) == loras.weights_gb("::", models,
                                                                                    bytes_per_value=2) == 0


def _tiny_lora() -> bytes:
    """A .safetensors file holding one LoRA weight (written by hand: no model needed)."""
    header = json.dumps({"transformer.a.lora_A.weight": {"dtype": "F32", "shape": [1, 1],
                                                          "data_offsets": [0, 4]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(4)


def test_a_hub_that_sends_more_than_it_announced_is_cut_off_and_nothing_is_kept(tmp_path, monkeypatch):
    """A hub whose HEAD claims a small LoRA but whose GET streams far more: the download stops there, says
    so, and leaves neither the LoRA nor its partial file (no disk filled by a lying hub)."""
    lora = _tiny_lora()
    published = lora + bytes(3_000_000)
    models = tmp_path / "models"
    with HubServer("owner/repo", {"big.safetensors": published}) as hub:
        hub.claimed["big.safetensors"] = len(lora)
        point_hub_at(monkeypatch, tmp_path, hub.url)
        with pytest.raises(InvalidInput, match="the hub sent more than the") as refused:
            loras.fetch("owner/repo", "big.safetensors", "big", models)
    assert "big" not in loras.available(models)
    assert "Consistency" not in str(refused.value) and str(models) not in str(refused.value)
    assert not (loras.folder(models) / ".fetching" / "big").exists()  # its partial download is gone


def test_a_refused_fetch_request_queues_none_of_its_downloads(tmp_path):
    """``POST /api/loras`` with fast=<model> whose second file's name the user already has (from elsewhere):
    refused, and the first is not left queued either (a refused request changes nothing)."""
    models = tmp_path / "models"
    card = families.CARDS["wan2.2-i2v-a14b"]
    loras.folder(models).mkdir(parents=True)
    (loras.folder(models) / f"{card.fast.loras[1].name}.safetensors").write_bytes(_tiny_lora())
    fetches = loras.Fetches(models)
    with pytest.raises(InvalidInput, match="is already in the LoRA folder"):
        fetches.start(catalogue.lora_sources(card.name, None, None, None))
    assert fetches.state() == []


@pytest.mark.parametrize("name", ["é" * 200, "a\x00b", "new\nline", "evil\u202etxt", "a\tb"])
def test_a_fetch_name_the_disk_cannot_hold_or_a_page_cannot_show_is_refused_at_once(tmp_path, name):
    """A download's name becomes a file name: one over the file system's 255 bytes, or with a control or
    direction character, is refused when asked (not a failed download naming server paths later)."""
    fetches = loras.Fetches(tmp_path / "models")
    with pytest.raises(InvalidInput, match="cannot name a LoRA"):
        fetches.start([("owner/repo", "dir/lora.safetensors", name)])
    assert fetches.state() == []


def test_the_fast_download_button_says_why_it_failed_once_and_names_the_others(tmp_path, monkeypatch):
    from image_to_video.ui import lora_picker

    models = tmp_path / "models"
    card = families.CARDS["wan2.2-i2v-a14b"]
    box = lora_picker.LoraBox(box="box", picker="picker", text="text", note="note", download="download")
    events = lora_picker.LoraEvents(box, models, lambda model: card, loras.Fetches(models),
                                    lambda model: card.generation.presets)
    monkeypatch.setattr(lora_picker, "PROGRESS_EVERY_S", 0.05)
    with HubServer(card.fast.loras[0].repo, {}) as hub:  # the hub has neither file
        point_hub_at(monkeypatch, tmp_path, hub.url)
        said = list(events.download(card.name, "en", card.fast.loras_text()))
    high, low = card.fast.names()
    note = said[-1]["note"]
    assert note.startswith(f"⚠️ {high}: Downloading ") and "HF_ENDPOINT" in note
    assert note.endswith(f"(Also not downloaded: {low}.)") and note.count("Downloading") == 1
    assert said[-1]["download"]["interactive"] is True  # it can be tried again
    assert not loras.available(models)


def test_the_same_lora_fetched_at_once_by_several_callers_is_downloaded_once_and_each_gets_it(tmp_path, monkeypatch):
    """The command line's ``loras fetch`` while the server fetches the same file (three callers at once
    here): each gets the LoRA, none a made-up network failure naming a lock file, and the file is
    downloaded once."""
    import threading

    published = _tiny_lora() + bytes(2_000_000)
    models, answers = tmp_path / "models", []

    def fetch():
        try:
            answers.append(loras.fetch("owner/repo", "a.safetensors", "same", models))
        except Exception as error:  # what a caller would see
            answers.append(f"{type(error).__name__}: {error}")

    with HubServer("owner/repo", {"a.safetensors": published}) as hub:
        point_hub_at(monkeypatch, tmp_path, hub.url)
        callers = [threading.Thread(target=fetch) for _ in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(60)
        gets = [hit for hit in hub.take_hits() if hit.method == "GET" and hit.path == "a.safetensors"]
    assert answers == [loras.folder(models) / "same.safetensors"] * 3, answers
    assert len(gets) == 1 and (loras.folder(models) / "same.safetensors").read_bytes() == published
    assert not (loras.folder(models) / ".fetching" / "same").exists()


def test_a_download_cannot_take_the_name_of_a_fast_presets_lora_from_another_source(tmp_path):
    """``POST /api/loras`` with repo+file of anyone's and name=<a Fast preset's LoRA>: refused, so every
    creator's Fast jobs keep the card's own file (and the preset's own download is not blocked later)."""
    fast = families.CARDS["wan2.2-i2v-a14b"].fast.loras[0]
    with pytest.raises(InvalidInput, match="is the name of a Fast preset's LoRA"):
        catalogue.lora_sources(None, "someone/else", "weights.safetensors", fast.name)
    with pytest.raises(InvalidInput, match="is the name of a Fast preset's LoRA"):  # the name from the file's
        catalogue.lora_sources(None, "someone/else", f"dir/{fast.name}.safetensors", "")
    assert catalogue.lora_sources(None, fast.repo, fast.file, fast.name) == [(fast.repo, fast.file, fast.name)]


def test_the_estimate_of_thousands_of_loras_reads_no_file_thousands_of_times(tmp_path):
    """The page's estimate counts the LoRAs' weights from each file's header: a box naming one LoRA twenty
    thousand times (a job refuses more than ``MAX_LORAS``) counts nothing and answers at once, instead of
    reading a real-sized header twenty thousand times."""
    import time

    header = json.dumps({f"transformer.blocks.{n}.lora_A.weight": {"dtype": "BF16", "shape": [64, 5120],
                                                                   "data_offsets": [0, 0]} for n in range(2000)})
    loras.folder(tmp_path).mkdir()
    (loras.folder(tmp_path) / "style.safetensors").write_bytes(len(header).to_bytes(8, "little") + header.encode())
    assert loras.weights_gb("style", tmp_path, bytes_per_value=2) > 1  # one LoRA counts (the check works)
    started = time.monotonic()
    assert loras.weights_gb(",".join(["style@high"] * 20_000), tmp_path, bytes_per_value=2) == 0.0
    assert time.monotonic() - started < 2.0


def test_a_damaged_record_of_fetched_loras_counts_its_files_as_the_users(tmp_path):
    models = tmp_path / "models"
    loras.folder(models).mkdir(parents=True)
    (loras.folder(models) / loras.FETCHED_FILE).write_text(json.dumps(
        {"a": "not a dict", "b": {"repo": 5}, "c": {"repo": "o/r", "file": "c.safetensors", "sha256": "ab"}}))
    assert list(loras.fetched(models)) == ["c"]
    (loras.folder(models) / "a.safetensors").write_bytes(b"mine")
    with pytest.raises(InvalidInput, match="A LoRA named 'a' is already in the LoRA folder"):
        loras.Fetches(models).start([("o/r", "a.safetensors", "a")])
