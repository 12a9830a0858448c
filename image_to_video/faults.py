"""Test-only fault injection: make a stage of a generation fail as the GPU would.

``FaultInjector("oom@denoise*1,fatal@decode*1")`` raises the named failure at the start of
that stage (at each denoising step, at each decoding chunk), the given number of times:
``oom`` as torch's out-of-memory error, ``fatal`` as a CUDA error that leaves the GPU unusable.
The engine takes one as its ``faults`` argument; whoever builds the engine for a test
(the composition root, from ``I2V_TEST_FAULTS``) makes it. Unused in normal runs.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

class FaultInjector:
    """Raises the configured failures; ``trip(stage)`` at the start of each unit of work."""

    def __init__(self, spec: str = ""):
        self._faults: dict[str, list] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kind, _, rest = item.partition("@")
            stage, _, count = rest.partition("*")
            self._faults[stage] = [kind, int(count or 1)]
        if self._faults:
            log.warning("Fault injection is on (I2V_TEST_FAULTS): %s", spec)

    def trip(self, stage: str) -> None:
        fault = self._faults.get(stage)
        if not fault or fault[1] <= 0:
            return
        fault[1] -= 1
        if fault[0] == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (injected by I2V_TEST_FAULTS)")
        raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by I2V_TEST_FAULTS)")
