import json
import subprocess
import threading
import time

import imageio_ffmpeg
import numpy as np
import pytest

from image_to_video import video
from image_to_video.errors import Cancelled, GenerationFailed
from image_to_video.video import probe_video, write_json, write_video


def frames(count=16, height=96, width=128):
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (count, height, width, 3), dtype=np.uint8)


def test_video_plays_with_the_right_frames_fps_size_codec_and_pixels(tmp_path):
    path = tmp_path / "v.mp4"
    info = write_video(frames(16, 96, 128), path, fps=8)
    decoded = probe_video(path)
    assert decoded == info
    assert (decoded.frames, decoded.fps, decoded.width, decoded.height) == (16, 8.0, 128, 96)
    assert (decoded.codec, decoded.pixel_format) == ("h264", "yuv420p")
    assert decoded.duration == 2.0


def test_size_is_kept_exactly_not_rounded_to_16(tmp_path):
    info = write_video(frames(4, 66, 130), tmp_path / "v.mp4", fps=4)
    assert (info.width, info.height) == (130, 66)


def test_content_survives_encoding(tmp_path):
    flat = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    flat[:, :, :32] = (250, 20, 20)
    path = tmp_path / "v.mp4"
    write_video(flat, path, fps=8)
    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    first = np.frombuffer(next(reader), dtype=np.uint8).reshape(64, 64, 3)
    assert abs(int(first[32, 8, 0]) - 250) < 12 and first[32, 56, 0] < 30


def test_faststart_puts_the_index_first(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(frames(), path, fps=8)
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_comment_tag_holds_the_summary(tmp_path):
    path = tmp_path / "v.mp4"
    summary = json.dumps({"seed": 42, "prompt": "waves, slowly"})
    write_video(frames(4), path, fps=8, comment=summary)
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True).stdout
    assert f"comment={summary}" in out


def test_odd_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="even sizes"):
        write_video(frames(4, 65, 64), tmp_path / "v.mp4", fps=8)
    assert not list(tmp_path.iterdir())


def test_a_file_that_does_not_check_out_never_appears(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "probe_video",
                        lambda path, cancel=None: video.VideoInfo(3, 8.0, 128, 96, "h264", "yuv420p"))
    with pytest.raises(GenerationFailed, match="has 3 frames"):
        write_video(frames(16), tmp_path / "v.mp4", fps=8)
    assert not list(tmp_path.iterdir())  # neither the final name nor the temporary file


def test_an_unplayable_file_is_detected(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    with pytest.raises(GenerationFailed, match="does not decode"):
        probe_video(broken)


def test_json_is_written_whole(tmp_path):
    path = tmp_path / "r.json"
    write_json({"seed": 1, "prompt": "海浪"}, path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"seed": 1, "prompt": "海浪"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_cancel_stops_the_encoder_at_once_and_leaves_no_file(tmp_path, monkeypatch):
    real = imageio_ffmpeg.get_ffmpeg_exe()
    slow = tmp_path / "bin" / "ffmpeg"  # the real encoder, slowed to real time at 1 frame per second
    slow.parent.mkdir()
    slow.write_text(f'#!/bin/sh\nexec "{real}" -readrate 1 "$@"\n')
    slow.chmod(0o755)
    monkeypatch.setattr(video.imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(slow))
    out = tmp_path / "out"
    out.mkdir()
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    began = time.monotonic()
    with pytest.raises(Cancelled, match="Cancelled"):
        write_video(frames(30, 64, 64), out / "v.mp4", fps=1, cancel=cancel)
    assert time.monotonic() - began < 2.5
    assert not list(out.iterdir())  # neither the video nor its temporary file


def test_a_higher_crf_makes_a_smaller_mp4_and_the_writer_counts_its_frames(tmp_path):
    # Issue 24 (4, 10): the MP4's quality is a setting; encoding reports the frames it handed on.
    clip = frames(24, 96, 128)
    counted = []
    write_video(clip, tmp_path / "best.mp4", fps=8, crf=10, progress=lambda done, total: counted.append((done, total)))
    write_video(clip, tmp_path / "small.mp4", fps=8, crf=40)
    assert (tmp_path / "small.mp4").stat().st_size < (tmp_path / "best.mp4").stat().st_size / 2
    assert counted and counted[-1] == (24, 24) and all(total == 24 for _, total in counted)
