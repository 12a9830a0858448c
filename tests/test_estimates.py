import pytest

from image_to_video.estimates import HEADROOM, compute_tflop, estimate, nearest_fitting, peak_memory_gb

RESOLUTIONS = {"256p": 256, "512p": 512, "768p": 768, "1024p": 1024}


def test_memory_follows_the_reported_figures_within_a_gigabyte():
    # What users of the app we replace report on an RTX 4090 (SEED_APP.md).
    for side, frames, reported in ((512, 16, 13.6), (768, 24, 17.8), (1024, 32, 21.9)):
        assert abs(peak_memory_gb(side, frames) - reported) < 1.0


def test_compute_matches_the_counted_flops():
    assert compute_tflop(512, 16, 50) == pytest.approx(50 * 41.9 + 16 * 2.5)  # ~2.09 PFLOP (STACK.md)
    assert compute_tflop(768, 16, 1) == pytest.approx(105 + 16 * 2.5 * 2.25, rel=0.05)


def test_time_grows_with_steps_frames_and_size():
    base = estimate(512, 16, 50, gpu_gb=None, demo=False).seconds
    assert 40 <= base <= 60  # the reported 40-60 s on an RTX 4090
    assert estimate(512, 16, 100, gpu_gb=None, demo=False).seconds == pytest.approx(2 * base, rel=0.05)
    assert estimate(768, 24, 50, gpu_gb=None, demo=False).seconds > 2.5 * base
    assert estimate(512, 16, 50, gpu_gb=None, demo=True).seconds == pytest.approx(28, rel=0.01)


def test_fit_and_the_nearest_setting_that_fits():
    assert estimate(768, 24, 80, gpu_gb=24, demo=False).fits
    assert not estimate(1024, 32, 50, gpu_gb=16, demo=False).fits
    assert estimate(1024, 32, 50, gpu_gb=None, demo=False).fits  # no GPU known: nothing to flag
    assert nearest_fitting(RESOLUTIONS, (8, 32), "1024p", 32, 24) == ("1024p", 31)  # fewer frames first
    name, frames = nearest_fitting(RESOLUTIONS, (8, 32), "1024p", 32, 16)  # then a smaller size
    assert (name, frames) == ("768p", 10) and peak_memory_gb(768, 10) <= 16 * HEADROOM
    assert nearest_fitting(RESOLUTIONS, (8, 32), "512p", 16, 8) is None
