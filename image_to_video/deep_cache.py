"""DeepCache-style reuse of the UNet's deep features between denoising steps (off by default).

The deep part of the UNet (every down block but the first, the middle block, every
up block but the last) changes slowly from one step to the next. Every ``interval``
steps the UNet runs whole and the input of its last up block is kept; on the steps
between, only the shallow ends run (input convolutions, first down block, last up
block) and the kept features stand in for the deep part (Ma et al., "DeepCache", 2023).

This is done without copying the UNet's forward: for a reusing step the deep blocks'
``forward`` is swapped for stubs that return the kept features (or, for blocks whose
output nothing reads, their own input), and put back after the step.
"""

from __future__ import annotations


class DeepCache:
    """Use as ``with DeepCache(unet, interval):`` around one video's denoising loop."""

    def __init__(self, unet, interval: int):
        self.unet, self.interval = unet, interval
        self.down = list(unet.down_blocks)[1:]
        self.up = list(unet.up_blocks)[:-1]
        self.step = 0
        self.kept = None
        self.reusing = False
        self.full_steps = 0
        self._hooks = []
        self._saved: dict = {}

    def __enter__(self) -> DeepCache:
        self._hooks = [self.unet.register_forward_pre_hook(self._before),
                       self.unet.register_forward_hook(self._after),
                       self.up[-1].register_forward_hook(self._keep)]
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
        for hook in self._hooks:
            hook.remove()

    def _before(self, _module, _args) -> None:
        self.reusing = self.kept is not None and self.step % self.interval != 0
        if not self.reusing:
            self.full_steps += 1
            return
        for block in self.down:
            outputs = len(block.resnets) + (1 if block.downsamplers is not None else 0)
            self._swap(block, lambda hidden_states, *_, n=outputs, **__: (hidden_states, (hidden_states,) * n))
        self._swap(self.unet.mid_block, lambda hidden_states, *_, **__: hidden_states)
        for block in self.up:
            self._swap(block, lambda *_, **__: self.kept)

    def _after(self, _module, _args, _output) -> None:
        self._restore()
        self.step += 1

    def _keep(self, _module, _args, output) -> None:
        if not self.reusing:
            self.kept = output

    def _swap(self, module, stub) -> None:
        # Keep any forward already set on the instance (accelerate's offload hooks set one).
        self._saved[module] = module.__dict__.get("forward")
        module.forward = stub

    def _restore(self) -> None:
        for module, forward in self._saved.items():
            if forward is None:
                del module.forward
            else:
                module.forward = forward
        self._saved.clear()
