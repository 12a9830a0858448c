"""The finishing steps: joined, looped, interpolated, upscaled frames, GIF/WebM files that decode, and
zips of PNG frames that open."""

import os
import re
import threading
import time
import zipfile
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from image_to_video import finishing
from image_to_video.errors import Cancelled, GenerationFailed
from image_to_video.finishing import (MB, boomerang, crossfade, decode_frames, interpolate, join_segments,
                                      last_frame, png_frame_names, upscale, write_gif, write_png_frames, write_webm)
from image_to_video.i18n import localized
from image_to_video.video import probe_video, write_video


def moving_square(count=8, size=64, step=6.0, start=4.0):
    """``count`` frames: a yellow square moving right ``step`` px a frame over a colour gradient
    (``start`` and ``step`` may be fractional, to draw the true frames between two others)."""
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.stack([xx * 200 // size, yy * 200 // size, np.full_like(xx, 90)], axis=-1)
    frames = []
    for i in range(count):
        frame = background.copy()
        left = int(round(start + i * step))
        frame[size // 3:size // 3 + size // 4, left:left + size // 4] = (250, 240, 40)
        frames.append(frame)
    return np.stack(frames).astype(np.uint8)


def numbered(count, size=16):
    """Frames filled with their own index, to read the order back."""
    return np.repeat(np.arange(count, dtype=np.uint8), size * size * 3).reshape(count, size, size, 3)


def mean_difference(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def stray_files(folder):
    return sorted(path.name for path in folder.iterdir())


# -- join, boomerang, crossfade ------------------------------------------------------------------

def test_joined_segments_drop_each_later_segments_first_frame(tmp_path):
    first, second = numbered(8), numbered(8) + 100
    joined = join_segments([first, second])
    assert len(joined) == 15
    assert joined[:, 0, 0, 0].tolist() == list(range(8)) + list(range(101, 108))
    write_video(joined, tmp_path / "j.mp4", 8)
    decoded = decode_frames(tmp_path / "j.mp4")[:, 8, 8, 0].astype(int)
    assert len(decoded) == 15 and np.abs(decoded - joined[:, 8, 8, 0]).max() <= 3


def test_join_refuses_no_segments_and_mixed_sizes():
    with pytest.raises(ValueError, match="at least one segment"):
        join_segments([])
    with pytest.raises(ValueError, match="one frame size"):
        join_segments([numbered(4, 16), numbered(4, 32)])


def test_boomerang_goes_forward_then_back_without_doubling_the_ends():
    looped = boomerang(numbered(8))
    assert looped[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1]
    with pytest.raises(ValueError, match="at least 2 frames"):
        boomerang(numbered(1))


def test_crossfade_blends_the_end_into_the_start_so_the_loop_has_no_jump():
    frames = moving_square(16, size=128, step=4)
    looped = crossfade(frames)
    k = 4  # max(2, 16 // 4)
    assert len(looped) == 16 - k
    assert np.array_equal(looped[:16 - 2 * k], frames[k:16 - k])
    expected = np.rint(0.8 * frames[16 - k].astype(float) + 0.2 * frames[0].astype(float))
    assert mean_difference(looped[16 - 2 * k], expected) <= 0.5  # j = 0: weight 1/5 on frames[0]
    jump = mean_difference(frames[-1], frames[0])
    steps = [mean_difference(looped[i], looped[(i + 1) % len(looped)]) for i in range(len(looped))]
    assert steps[-1] < jump / 3  # the wrap, last frame -> first
    assert max(steps) < jump / 2  # and no other step jumps either


def test_crossfade_takes_an_overlap_and_refuses_too_few_frames():
    assert len(crossfade(moving_square(10), overlap=3)) == 7
    with pytest.raises(ValueError, match="needs at least 9 frames"):
        crossfade(moving_square(8), overlap=4)
    with pytest.raises(ValueError, match="overlap"):
        crossfade(moving_square(10), overlap=0)
    with pytest.raises(ValueError, match="needs at least 5 frames"):
        crossfade(moving_square(4))


# -- interpolate, upscale ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["rife", "ffmpeg"])
def test_interpolating_8_frames_at_8_fps_gives_a_one_second_24_fps_video(tmp_path, method):
    frames = moving_square(8)
    smooth = interpolate(frames, 8, 24, method=method)
    assert smooth.shape == (24, 64, 64, 3) and smooth.dtype == np.uint8
    info = write_video(smooth, tmp_path / "s.mp4", 24)
    assert (info.frames, info.fps, info.duration) == (24, 24.0, 1.0)
    decoded = decode_frames(tmp_path / "s.mp4")
    assert mean_difference(decoded[3], frames[1]) < 3  # every third frame is an input frame


def square_position(frame):
    """The yellow square's left edge (mean x of its pixels minus half its width) and its pixel count."""
    yellow = (frame[..., 0] > 220) & (frame[..., 1] > 220) & (frame[..., 2] < 70)
    columns = np.nonzero(yellow)[1]
    return columns.mean() - (frame.shape[1] // 4 - 1) / 2, int(yellow.sum())


def test_interpolated_frames_show_the_square_between_two_frames_not_a_copy_or_a_ghost():
    frames = moving_square(8, size=128, step=9)
    smooth = interpolate(frames, 8, 24, method="ffmpeg")  # RIFE's own: tests/test_rife.py
    whole = square_position(frames[0])[1]
    # Past the first input frames (minterpolate's motion search starts from zero vectors there):
    # each in-between frame shows one whole square a third or two thirds of the way along.
    for i in range(7, 21):
        left, pixels = square_position(smooth[i])
        true_left = 4 + 9 * i / 3
        assert abs(left - true_left) <= 1, i
        assert pixels >= 0.9 * whole, i  # a blend of two frames would show two faint squares instead
        if i % 3:
            assert abs(square_position(frames[i // 3])[0] - true_left) >= 3  # a duplicate is far off
    for i in range(8):
        assert mean_difference(smooth[3 * i], frames[i]) < 2
    assert mean_difference(smooth[23], frames[7]) < 2  # the end: the last frame, held


@pytest.mark.parametrize("method", ["rife", "ffmpeg"])
@pytest.mark.parametrize("count, fps, target, expected", [
    (8, 8, 16, 16), (8, 8, 12, 12), (7, 8, 24, 21), (16, 8, 24, 48), (5, 2, 3, 8), (1, 8, 24, 3)])
def test_interpolation_keeps_the_duration(count, fps, target, expected, method):
    frames = moving_square(count, size=32, step=3)
    assert len(interpolate(frames, fps, target, method=method)) == expected == round(count * target / fps)


def test_each_output_frame_shows_the_clip_at_its_own_time():
    # 8 -> 24 fps: every third frame an input frame, a third and two thirds of the way between; the end held
    times = finishing.interpolation_times(3, 8, 24)
    assert times == [(0, 0), (0, Fraction(1, 3)), (0, Fraction(2, 3)), (1, 0), (1, Fraction(1, 3)),
                     (1, Fraction(2, 3)), (2, 0), (2, 0), (2, 0)]
    assert finishing.interpolation_times(2, 16, 24) == [(0, 0), (0, Fraction(2, 3)), (1, 0)]
    assert [index for index, _ in finishing.interpolation_times(16, 8, 30)][-5:] == [14, 14, 15, 15, 15]


def test_both_methods_give_the_same_frames_where_an_output_frame_is_an_input_frame():
    frames = moving_square(6, size=64, step=5)
    rife_frames, ffmpeg_frames = (interpolate(frames, 8, 24, method=method) for method in ("rife", "ffmpeg"))
    assert rife_frames.shape == ffmpeg_frames.shape == (18, 64, 64, 3)
    for i in range(6):
        assert np.array_equal(rife_frames[3 * i], frames[i])  # RIFE copies them; minterpolate nearly
        assert mean_difference(ffmpeg_frames[3 * i], frames[i]) < 2


def test_interpolation_refuses_a_lower_rate_and_reports_ffmpegs_words(monkeypatch):
    with pytest.raises(ValueError, match="must be above"):
        interpolate(moving_square(8), 8, 8)
    with pytest.raises(ValueError, match="fps must be a whole number"):
        interpolate(moving_square(8), 0, 24)
    monkeypatch.setattr(finishing, "MINTERPOLATE", "minterpolate=fps={fps}:no_such_option=1")
    with pytest.raises(GenerationFailed, match="no_such_option") as failed:
        interpolate(moving_square(8), 8, 24, method="ffmpeg")
    assert "插帧" in localized(failed.value, "zh-CN")


def test_ffmpegs_cause_survives_a_long_output_path_and_the_servers_folders_are_not_shown(tmp_path, monkeypatch):
    # What ffmpeg 7 prints for an out-of-range option: the cause first, then its consequences naming the
    # output file. With a long folder, the cause used to be cut off the front of the message.
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 12)
    deep.mkdir(parents=True)
    monkeypatch.setattr(finishing, "WEBM_OPTIONS", [*finishing.WEBM_OPTIONS[:-2], "-crf", "999", "-f", "webm"])
    with pytest.raises(GenerationFailed) as failed:
        write_webm(moving_square(4), 8, deep / "clip.webm")
    said = str(failed.value)
    assert "crf" in said and "999" in said, said
    assert "a-rather-long-folder-name" not in said and str(tmp_path) not in said, said


def test_upscale_doubles_the_size_and_keeps_the_picture():
    frames = moving_square(4)
    big = upscale(frames, 2)
    assert big.shape == (4, 128, 128, 3)
    halved = big.reshape(4, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    assert mean_difference(halved, frames) < 3
    assert upscale(frames, 1) is frames
    for factor in (3, 2.0, True):
        with pytest.raises(ValueError, match="factor"):
            upscale(frames, factor)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 16, 16, 3), dtype=np.float32), "uint8"),
    (np.zeros((16, 16, 3), dtype=np.uint8), "shaped"),
    (np.zeros((4, 16, 16, 4), dtype=np.uint8), "shaped"),
    (np.zeros((0, 16, 16, 3), dtype=np.uint8), "needs at least"),
])
def test_frames_that_are_not_rgb_uint8_are_refused(bad, message, tmp_path):
    for step in (boomerang, lambda f: upscale(f, 2), lambda f: write_webm(f, 8, tmp_path / "x.webm"),
                 lambda f: write_png_frames(f, 8, tmp_path / "x_frames.zip")):
        with pytest.raises(ValueError, match=message):
            step(bad)
    assert stray_files(tmp_path) == []


# -- GIF -----------------------------------------------------------------------------------------

def test_gif_decodes_with_every_frame_at_full_size(tmp_path):
    frames = moving_square(8)
    result = write_gif(frames, 8, tmp_path / "clip.gif", max_mb=10)
    decoded = decode_frames(tmp_path / "clip.gif")
    assert decoded.shape == (8, 64, 64, 3)
    assert mean_difference(decoded, frames) < 8  # 256 colours, dithered
    assert (result.frames, result.fps, result.width, result.height, result.capped) == (8, 8.0, 64, 64, False)
    assert result.size_mb == pytest.approx((tmp_path / "clip.gif").stat().st_size / MB)
    assert stray_files(tmp_path) == ["clip.gif"]


def test_a_gif_over_its_limit_is_made_smaller_until_it_fits(tmp_path):
    frames = moving_square(8, size=256, step=20)
    full = write_gif(frames, 8, tmp_path / "full.gif", max_mb=100)
    cap = full.size_mb / 2
    result = write_gif(frames, 8, tmp_path / "small.gif", max_mb=cap)
    assert result.capped and (result.original_width, result.original_fps) == (256, 8.0)
    assert (tmp_path / "small.gif").stat().st_size <= cap * MB
    decoded = decode_frames(tmp_path / "small.gif")
    assert decoded.shape == (result.frames, result.height, result.width, 3)
    assert result.width < 256 or result.fps < 8


def test_the_gif_ladder_halves_width_and_frame_rate_in_turn_down_to_the_floors():
    assert list(finishing._gif_attempts(512, 16)) == [(512, 1), (256, 1), (256, 2), (128, 2), (128, 4)]
    assert list(finishing._gif_attempts(100, 8)) == [(100, 1), (100, 2)]


def test_a_gif_that_cannot_fit_fails_and_leaves_nothing(tmp_path):
    frames = moving_square(8, size=128)
    with pytest.raises(GenerationFailed, match="does not fit in 0.0001 MB"):
        write_gif(frames, 8, tmp_path / "clip.gif", max_mb=0.0001)
    assert stray_files(tmp_path) == []
    with pytest.raises(ValueError, match="max_mb"):
        write_gif(frames, 8, tmp_path / "clip.gif", max_mb=0)


def test_a_gif_that_decodes_wrong_is_not_kept(tmp_path, monkeypatch):
    seen = []
    real = finishing.decode_frames

    def short_by_one(path, cancel=None):
        seen.append(path.name)
        return real(path)[:-1]

    monkeypatch.setattr(finishing, "decode_frames", short_by_one)
    with pytest.raises(GenerationFailed, match="7 frames of 64x64, expected 8"):
        write_gif(moving_square(8), 8, tmp_path / "clip.gif", max_mb=10)
    assert re.fullmatch(r"\.clip\.[0-9a-f]{6}\.tmp\.gif", seen[0])
    assert stray_files(tmp_path) == []


@pytest.mark.parametrize("fps", [34, 48])
def test_a_gif_at_34_to_48_fps_is_written_with_every_frame_once(tmp_path, fps):
    # GIF delays are whole hundredths of a second (48 fps: 2 and 3 mixed), which ffmpeg's constant-rate
    # decode turned into about twice the frames, and the GIF failed its own check.
    frames = moving_square(16)
    result = write_gif(frames, fps, tmp_path / "clip.gif", max_mb=10)
    assert (result.frames, result.fps, result.capped) == (16, float(fps), False)
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.n_frames == 16
    decoded = decode_frames(tmp_path / "clip.gif")
    assert len(decoded) == 16 and mean_difference(decoded, frames) < 8
    assert stray_files(tmp_path) == ["clip.gif"]


# -- cancel ---------------------------------------------------------------------------------------

@pytest.fixture
def stuck_ffmpeg(tmp_path, monkeypatch):
    """ffmpeg replaced by a program that reads nothing and never ends on its own (a step that takes
    minutes); returns the file where it writes its process id."""
    folder = tmp_path / "bin"
    folder.mkdir()
    pid_file, program = folder / "pid", folder / "ffmpeg"
    program.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    program.chmod(0o755)
    monkeypatch.setattr(finishing.imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(program))
    return pid_file


@pytest.mark.parametrize("step", ["interpolate", "upscale", "gif", "webm"])
def test_cancel_kills_a_running_ffmpeg_step_at_once_and_leaves_no_file(tmp_path, stuck_ffmpeg, step):
    out = tmp_path / "out"
    out.mkdir()
    cancel = threading.Event()
    run = {"interpolate": lambda: finishing.interpolate(moving_square(8), 8, 24, method="ffmpeg", cancel=cancel),
           "upscale": lambda: finishing.upscale(moving_square(8), 2, cancel=cancel),
           "gif": lambda: write_gif(moving_square(8), 8, out / "clip.gif", max_mb=10, cancel=cancel),
           "webm": lambda: write_webm(moving_square(8), 8, out / "clip.webm", cancel=cancel)}[step]
    threading.Timer(0.5, cancel.set).start()
    began = time.monotonic()
    with pytest.raises(Cancelled, match="Cancelled"):
        run()
    assert time.monotonic() - began < 2.5
    pid = int(stuck_ffmpeg.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ffmpeg is gone, not left running
    assert stray_files(out) == []


# -- WebM, decoding, last frame ------------------------------------------------------------------

def test_webm_decodes_with_the_right_frames_and_size(tmp_path):
    frames = moving_square(12, size=96)
    info = write_webm(frames, 8, tmp_path / "clip.webm")
    assert (info.frames, info.fps, info.width, info.height, info.codec) == (12, 8.0, 96, 96, "vp9")
    assert info.pixel_format == "yuv420p"
    decoded = decode_frames(tmp_path / "clip.webm")
    assert decoded.shape == (12, 96, 96, 3) and mean_difference(decoded, frames) < 4
    assert stray_files(tmp_path) == ["clip.webm"]


def test_a_webm_that_decodes_wrong_or_fails_to_encode_is_not_kept(tmp_path, monkeypatch):
    seen = []
    real = finishing.probe_video

    def one_frame_short(path, cancel=None):
        seen.append(path.name)
        info = real(path)
        return type(info)(info.frames - 1, info.fps, info.width, info.height, info.codec, info.pixel_format)

    monkeypatch.setattr(finishing, "probe_video", one_frame_short)
    with pytest.raises(GenerationFailed, match="expected 8 of 64x64"):
        write_webm(moving_square(8), 8, tmp_path / "clip.webm")
    assert re.fullmatch(r"\.clip\.[0-9a-f]{6}\.tmp\.webm", seen[0])
    assert stray_files(tmp_path) == []
    monkeypatch.setattr(finishing, "WEBM_OPTIONS", [*finishing.WEBM_OPTIONS[:-2], "-crf", "999", "-f", "webm"])
    with pytest.raises(GenerationFailed, match="The WebM video failed .*crf"):
        write_webm(moving_square(8), 8, tmp_path / "clip.webm")
    assert stray_files(tmp_path) == []


# -- PNG frames -----------------------------------------------------------------------------------

def png_header(data):
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk, as a file viewer reads them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), data[24], data[25]


def test_png_frames_are_every_frame_lossless_in_order_in_a_zip(tmp_path):
    frames = np.ascontiguousarray(moving_square(12, size=64)[:, :40])  # 64 wide, 40 high
    result = write_png_frames(frames, 8, tmp_path / "clip_frames.zip")
    with zipfile.ZipFile(tmp_path / "clip_frames.zip") as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == sorted(names) == [f"frame_{number:05d}.png" for number in range(1, 13)]
        for index, name in enumerate(names):
            data = archive.read(name)
            assert png_header(data) == (64, 40, 8, 2)  # 8 bits a channel, truecolour RGB, no alpha
            with Image.open(archive.open(name)) as picture:
                assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (64, 40))
                assert np.array_equal(np.asarray(picture), frames[index])  # lossless, in frame order
    assert (result.frames, result.fps, result.width, result.height) == (12, 8.0, 64, 40)
    assert result.names == tuple(names)
    assert result.size_mb == pytest.approx((tmp_path / "clip_frames.zip").stat().st_size / MB)
    assert stray_files(tmp_path) == ["clip_frames.zip"]


def test_png_frame_names_sort_in_frame_order_past_five_digits():
    assert png_frame_names(3) == ["frame_00001.png", "frame_00002.png", "frame_00003.png"]
    long = png_frame_names(100_000)
    assert (long[0], long[9], long[-1]) == ("frame_000001.png", "frame_000010.png", "frame_100000.png")
    assert sorted(long) == long and len(set(long)) == 100_000


def test_png_frames_stop_between_frames_on_cancel_and_leave_no_file(tmp_path, monkeypatch):
    cancel, saved, save = threading.Event(), [], Image.Image.save

    def save_then_cancel_at_the_third(picture, *args, **kwargs):
        saved.append(picture.size)
        if len(saved) == 3:
            cancel.set()
        return save(picture, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_cancel_at_the_third)
    with pytest.raises(Cancelled, match="Cancelled"):
        write_png_frames(moving_square(40), 8, tmp_path / "clip_frames.zip", cancel=cancel)
    assert len(saved) == 3  # not the other 37 frames
    assert stray_files(tmp_path) == []


def test_png_frames_that_check_wrong_or_cannot_be_written_are_not_kept(tmp_path, monkeypatch):
    seen, namelist = [], zipfile.ZipFile.namelist

    def one_frame_short(archive):
        seen.append(os.path.basename(archive.filename))
        return namelist(archive)[:-1]

    monkeypatch.setattr(zipfile.ZipFile, "namelist", one_frame_short)
    with pytest.raises(GenerationFailed, match="7 frames of 64x64, expected 8"):
        write_png_frames(moving_square(8), 8, tmp_path / "clip_frames.zip")
    assert re.fullmatch(r"\.clip_frames\.[0-9a-f]{6}\.tmp\.zip", seen[0])  # what the crash clean-up finds
    assert stray_files(tmp_path) == []
    monkeypatch.undo()

    fromarray = Image.fromarray
    monkeypatch.setattr(Image, "fromarray", lambda *args: fromarray(*args).convert("RGBA"))  # an alpha channel
    with pytest.raises(GenerationFailed, match="the first frame is a PNG RGBA 64x64, not 8-bit RGB"):
        write_png_frames(moving_square(8), 8, tmp_path / "clip_frames.zip")
    assert stray_files(tmp_path) == []
    monkeypatch.undo()

    def disk_full(archive, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(GenerationFailed, match=r"The PNG frames could not be written \(.*No space left on device\)"):
        write_png_frames(moving_square(8), 8, tmp_path / "clip_frames.zip")
    assert stray_files(tmp_path) == []


@pytest.mark.parametrize("kind", ["mp4", "webm", "gif"])
def test_last_frame_is_the_videos_final_frame(tmp_path, kind):
    frames = moving_square(8)
    path = tmp_path / f"clip.{kind}"
    {"mp4": lambda: write_video(frames, path, 8), "webm": lambda: write_webm(frames, 8, path),
     "gif": lambda: write_gif(frames, 8, path, max_mb=10)}[kind]()
    picture = last_frame(path)
    assert picture.mode == "RGB" and picture.size == (64, 64)
    assert mean_difference(picture, frames[-1]) < 4
    assert mean_difference(picture, frames[-1]) < mean_difference(picture, frames[-2]) / 2


def test_a_file_that_does_not_decode_fails_clearly(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    for read in (last_frame, decode_frames):
        with pytest.raises(GenerationFailed, match="junk.mp4 cannot be read"):
            read(junk)
        with pytest.raises(GenerationFailed, match="missing.mp4 cannot be read"):
            read(tmp_path / "missing.mp4")
    truncated = tmp_path / "cut.gif"
    write_gif(moving_square(8), 8, truncated, max_mb=10)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(GenerationFailed, match="cut.gif"):
        last_frame(truncated)


def test_a_long_gif_starts_small_enough_to_be_quick(tmp_path, monkeypatch):
    from image_to_video import finishing

    monkeypatch.setattr(finishing, "GIF_PIXEL_BUDGET", 20 * 128 * 128)
    frames = np.random.default_rng(0).integers(0, 255, (40, 256, 256, 3), dtype=np.uint8)
    result = finishing.write_gif(frames, 8, tmp_path / "long.gif", max_mb=500)
    # 40 frames at 256 px are 2.6 million pixels, over the budget of 20 at 128: halved in width (to
    # 1.3 million, still over), then every other frame: 20 frames of 128 px.
    assert (result.capped, result.width, result.frames, result.fps) == (True, 128, 20, 4.0)
    assert len(finishing.decode_frames(tmp_path / "long.gif")) == 20
