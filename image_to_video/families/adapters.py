"""The LoRA adapters a loaded diffusers pipeline holds, made exactly a request's before it denoises.

What the pipelines share (Wan's uses it; a family whose card says ``loras`` hands its pipeline and its
experts here). ``Adapters.use(loras)`` leaves the pipeline with exactly the request's LoRAs active, at
their strengths, as plain diffusers' ``load_lora_weights(file, adapter_name=...)`` and ``set_adapters(names,
strengths)`` would: the same state dict (diffusers' own ``lora_state_dict``, its format conversions and its
T2V-to-I2V widening), the same adapter metadata (rank, alpha), the same ``load_lora_adapter`` per expert.
A request without LoRAs unloads them all (``unload_lora_weights``: every layer is the original module
again), so its frames are those of a pipeline that never held one. Loaded LoRAs stay while the next
requests keep asking for them (a new one is added); a request that drops one unloads all and loads its own.

Each expert takes the weights under its own prefix: ``transformer.*`` (what ``save_lora_weights`` writes,
and what diffusers loads by default) into the first, ``transformer_2.*`` into Wan2.2-I2V-A14B's second.
A LoRA named with an expert (``@high``, ``@low``: a request's ``"expert"``) puts its ``transformer.*``
weights into that expert alone, as ``load_lora_weights`` does without and with
``load_into_transformer_2=True``
(the two files of a Lightning LoRA, one per expert). Before anything is loaded, every weight is checked against
the layer it changes: a LoRA for another model is refused with ``InvalidInput`` naming it and the layer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.lora_pipeline import _LOW_CPU_MEM_USAGE_DEFAULT_LORA  # load_lora_weights' own default

from ..errors import InvalidInput, shown

log = logging.getLogger(__name__)


#: A request's expert -> the pipeline module it names (``loras.EXPERTS``).
EXPERT_MODULES = {"high": "transformer", "low": "transformer_2"}


def adapter_name(entry: Mapping[str, Any]) -> str:
    """The adapter's name in the pipeline: one per LoRA name, file content (a changed file is a new one) and
    expert."""
    key = f"{entry['name']}\0{entry['sha256']}\0{entry.get('expert') or ''}"
    return "lora_" + hashlib.sha256(key.encode()).hexdigest()[:16]


class Adapters:
    """The LoRAs loaded into ``pipeline`` (a diffusers pipeline with a LoRA loader mixin); ``title`` names
    the model in messages."""

    def __init__(self, pipeline, title: str):
        self.pipeline, self.title = pipeline, title
        self.loaded: list[str] = []  # adapter names, in the order they were loaded

    @property
    def experts(self) -> dict[str, torch.nn.Module]:
        """Prefix -> module, of the modules the pipeline loads LoRAs into (diffusers' ``_lora_loadable_modules``:
        Wan's ``transformer`` and, in A14B, ``transformer_2``)."""
        names = getattr(self.pipeline, "_lora_loadable_modules", ())
        return {name: module for name in names if (module := getattr(self.pipeline, name, None)) is not None}

    def use(self, loras: Sequence[Mapping[str, Any]], find: Callable[[Mapping[str, Any]], Path]) -> None:
        """Make ``loras`` (a request's: {"name", "strength", "sha256"} each) the active adapters, in order;
        ``find`` gives each one's file (``loras.find``). None: unload every LoRA."""
        names = [adapter_name(entry) for entry in loras]
        # plain parameters (and offload hooks), usable inside inference mode and after it
        with torch.inference_mode(False), torch.no_grad():
            if not set(self.loaded) <= set(names):  # one is dropped: back to the bare model, then load
                self.unload()
            for entry, name in zip(loras, names):
                if name not in self.loaded:
                    self._load(entry, name, find(entry))
        if names:
            self.pipeline.set_adapters(names, [float(entry["strength"]) for entry in loras])

    def unload(self) -> None:
        if self.loaded:
            self.pipeline.unload_lora_weights()
            log.info("Unloaded %d LoRA(s)", len(self.loaded))
            self.loaded = []

    def _load(self, entry: Mapping[str, Any], name: str, path: Path) -> None:
        pipe = self.pipeline
        expand = getattr(pipe, "_maybe_expand_t2v_lora_for_i2v", None)  # Wan's: a T2V LoRA widened for I2V
        try:  # what load_lora_weights does before it loads: read, convert, widen
            state, metadata = pipe.lora_state_dict(str(path), return_lora_metadata=True)
            state = expand(transformer=pipe.transformer, state_dict=state) if expand else state
        except Exception as error:  # not a LoRA diffusers can read
            raise InvalidInput(key="err_lora_not_loaded", name=shown(entry["name"]), model=self.title,
                               error=f"{type(error).__name__}: {error}") from None
        parts = self._check(entry, state)
        try:
            for module, prefix in parts:  # load_lora_into_transformer's call, with the expert's prefix
                self.experts[module].load_lora_adapter(
                    state, prefix=prefix, adapter_name=name, metadata=metadata, _pipeline=pipe,
                    low_cpu_mem_usage=_LOW_CPU_MEM_USAGE_DEFAULT_LORA)
        except Exception as error:  # nothing is left half-loaded
            pipe.unload_lora_weights()
            self.loaded = []
            refused = isinstance(error, (ValueError, KeyError, TypeError, AttributeError)) or (
                isinstance(error, RuntimeError) and "Error(s) in loading state_dict" in str(error))
            if not refused:
                raise  # out of memory or a GPU error: the engine's to handle, as in any step
            # whatever the checks missed (peft's own refusals), said with the LoRA's name
            raise InvalidInput(key="err_lora_not_loaded", name=shown(entry["name"]), model=self.title,
                               error=f"{type(error).__name__}: {error}") from None
        self.loaded.append(name)
        for module, _prefix in parts:
            self.experts[module].requires_grad_(False)  # as gpu.inference_only leaves the rest
        log.info("Loaded LoRA %s (%s) into %s", entry["name"], path.name, ", ".join(module for module, _ in parts))

    def _check(self, entry: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
        """(module, prefix) of each expert ``state`` goes into, once each weight fits the layer it changes:
        every prefix into its own module, or with an expert named, ``transformer.*`` into that expert."""
        lora = shown(entry["name"])
        if not state or not all("lora" in key for key in state):  # load_lora_weights' own check
            raise InvalidInput(key="err_lora_not_loaded", name=lora, model=self.title,
                               error="not every weight in it is a LoRA weight (lora_A, lora_B)")
        prefixes = {key.split(".", 1)[0] for key in state}
        parts = [(prefix, prefix) for prefix in self.experts if prefix in prefixes]
        others = sorted(prefixes - set(self.experts))
        if not parts or others:
            raise InvalidInput(key="err_lora_other_model", name=lora, model=self.title,
                               parts=", ".join(others or sorted(prefixes)))
        expert = EXPERT_MODULES.get(entry.get("expert") or "")
        if entry.get("expert"):
            if expert not in self.experts:
                raise InvalidInput(key="err_lora_expert_one", name=lora, model=self.title)
            if prefixes != {"transformer"}:
                raise InvalidInput(key="err_lora_expert_both", name=lora)
            parts = [(expert, "transformer")]
        for key, tensor in state.items():
            prefix, rest = key.split(".", 1)
            layer, _, kind = rest.partition(".lora_")
            if not kind:
                continue  # not a LoRA weight (diffusers keeps only those; an alpha, say): peft reads it
            try:
                module = self.experts[expert or prefix].get_submodule(layer)
                module = getattr(module, "base_layer", module)  # a layer that already holds a LoRA: its own
            except AttributeError:
                raise InvalidInput(key="err_lora_other_layers", name=lora, model=self.title, layer=layer) from None
            wanted = _wanted_shape(module, kind, tensor)
            if wanted is not None and tuple(tensor.shape) != wanted:
                raise InvalidInput(key="err_lora_other_shapes", name=lora, model=self.title, layer=layer,
                                   got=_shape(tensor.shape), wanted=_shape(wanted))
        return parts


def _wanted_shape(module: torch.nn.Module, kind: str, tensor: torch.Tensor) -> tuple[int, ...] | None:
    """The shape ``module`` takes for its LoRA weight ``kind`` (``A.weight``, ``B.weight``, ``B.bias``) of
    rank ``tensor``'s, or None when it is not a layer whose shapes are checked here."""
    if isinstance(module, torch.nn.Linear):
        inputs, outputs = module.in_features, module.out_features
    elif isinstance(module, torch.nn.modules.conv._ConvNd):
        inputs, outputs = module.in_channels, module.out_channels
    else:
        return None
    if kind == "A.weight":
        return (tensor.shape[0], inputs, *tensor.shape[2:])
    if kind == "B.weight":
        return (outputs, tensor.shape[1], *tensor.shape[2:])
    if kind == "B.bias":
        return (outputs,)
    return None


def _shape(shape) -> str:
    return "x".join(str(side) for side in shape)

