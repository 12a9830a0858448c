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


def measured_report(tmp_path, shapes="real"):
    """A report as `bench/speed.py --scaling --out` writes it on a GPU (numbers made up for the test)."""
    rows = [{"resolution": side, "frames": frames, "unet_s_per_step": 0.01 * frames * (side / 512) ** 2,
             "decode_s": 0.02 * frames, "peak_gpu_gb": 5 + 0.25 * frames * (side / 512) ** 2}
            for side in (512, 768) for frames in (8, 16, 24)]
    rows.append({"resolution": 1024, "frames": 32, "error": "OutOfMemoryError: ..."})
    path = tmp_path / "performance-gpu.json"
    path.write_text(__import__("json").dumps({"machine": "NVIDIA H100 80GB HBM3, 79 GiB, CUDA 12.8",
                                              "shapes": shapes, "scaling": rows}))
    return path


def test_a_measured_table_replaces_the_computed_figures_where_it_covers_them(tmp_path):
    from image_to_video.estimates import MeasuredTable

    table = MeasuredTable.load(measured_report(tmp_path))
    assert table.gpu == "NVIDIA H100 80GB HBM3"
    exact = estimate(512, 16, 50, gpu_gb=80, demo=False, gpu_name="NVIDIA H100 80GB HBM3", measured=table)
    assert exact.peak_gb == pytest.approx(9.0) and exact.peak_measured_on == "NVIDIA H100 80GB HBM3"
    assert exact.seconds == pytest.approx(50 * 0.16 + 0.32) and exact.time_measured_on
    between = estimate(512, 12, 50, gpu_gb=80, demo=False, measured=table)  # a line through 8 and 16 frames
    assert between.peak_gb == pytest.approx(8.0) and between.time_measured_on is None  # GPU unknown: computed
    other_gpu = estimate(512, 16, 50, gpu_gb=24, demo=False, gpu_name="NVIDIA GeForce RTX 4090", measured=table)
    assert other_gpu.peak_measured_on and other_gpu.time_measured_on is None
    uncovered = estimate(1024, 32, 50, gpu_gb=80, demo=False, measured=table)  # no row: the formula
    assert uncovered.peak_gb == pytest.approx(peak_memory_gb(1024, 32)) and uncovered.peak_measured_on is None
    # The nearest fitting setting follows the measured memory: at 768p, 5 + 0.5625 GB per frame;
    # 17 frames (14.6 GB) is the most that fits in 92% of 16 GB.
    assert nearest_fitting(RESOLUTIONS, (8, 32), "768p", 24, 16, measured=table) == ("768p", 17)


def test_no_table_or_a_cpu_smoke_table_changes_nothing(tmp_path):
    from image_to_video.estimates import MeasuredTable

    assert MeasuredTable.load(tmp_path / "missing.json") is None
    assert MeasuredTable.load(measured_report(tmp_path, shapes="smoke")) is None
