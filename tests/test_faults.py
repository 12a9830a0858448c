"""The test-only fault injector, and that only its explicit use turns it on."""

import logging

import pytest
import torch

from image_to_video.config import ModelSettings
from image_to_video.engine import Engine
from image_to_video.errors import GPUFailed
from image_to_video.faults import FaultInjector

from .helpers import tiny_request


def test_each_fault_fires_at_its_stage_the_given_number_of_times():
    faults = FaultInjector("oom@denoise*2, fatal@decode")
    faults.trip("encode")  # no fault named for that stage
    for _ in range(2):
        with pytest.raises(torch.cuda.OutOfMemoryError,
                           match=r"^CUDA out of memory\. \(injected by I2V_TEST_FAULTS\)$"):
            faults.trip("denoise")
    faults.trip("denoise")  # spent
    with pytest.raises(RuntimeError, match=r"^CUDA error: an illegal memory access was encountered "
                                           r"\(injected by I2V_TEST_FAULTS\)$"):
        faults.trip("decode")  # no count: once
    faults.trip("decode")


def test_no_spec_no_faults_and_a_spec_is_logged(caplog):
    caplog.set_level(logging.WARNING)
    FaultInjector("").trip("denoise")
    assert "Fault injection" not in caplog.text
    FaultInjector("oom@decode*1")
    assert "Fault injection is on (I2V_TEST_FAULTS): oom@decode*1" in caplog.text


def test_the_engine_ignores_the_environment_and_obeys_its_argument(demo_dir, photo, monkeypatch):
    monkeypatch.setenv("I2V_TEST_FAULTS", "fatal@denoise*5")
    engine = Engine(ModelSettings(source=str(demo_dir)), str(demo_dir), demo_dir.parent)
    engine.load()
    assert engine.generate(tiny_request(photo)).frames.shape == (4, 64, 64, 3)  # the variable does nothing
    engine.faults = FaultInjector("fatal@denoise*1")  # tests swap it on a loaded engine
    with pytest.raises(GPUFailed):
        engine.generate(tiny_request(photo))
