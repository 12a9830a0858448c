"""The page in a real browser: Debian's Chromium driven by Playwright, against `python main.py --demo`.

Screenshots of the main states go to docs/screenshots/ (the README shows them).
Without Chromium or Playwright these tests skip, except in CI (the variable ``CI`` set), where
.ci/run installs both and a missing one fails the run.
"""

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from image_to_video.config import PROJECT_DIR

from .app_process import AppProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("I2V_SCREENSHOT_DIR", PROJECT_DIR / "docs" / "screenshots"))
EXAMPLE = PROJECT_DIR / "static" / "examples" / "seaside_sunset.png"


def _missing(what: str, how: str) -> None:
    """In CI a missing browser part fails the run; elsewhere these tests skip, saying what to install."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {what} is missing: {how} (.ci/run does)", pytrace=False)
    pytest.skip(f"{what} is not installed ({how})", allow_module_level=True)


if not Path(CHROMIUM).exists():
    _missing("Chromium", "apt-get install chromium")
try:
    from playwright import sync_api
except ImportError:
    _missing("Playwright", "pip install -r requirements-dev.txt")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path_factory.mktemp("browser")
    from image_to_video.examples import ensure_examples

    ensure_examples(PROJECT_DIR / "static" / "examples")
    process = AppProcess(root, port, host="0.0.0.0").start()  # a network address: login required
    process.password = (root / "data" / "credentials.txt").read_text().strip().split(":", 1)[1]
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield browser
        browser.close()


def open_page(browser, app, locale: str, generate_label: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, locale=locale)
    page = context.new_page()
    page.goto(app.url)
    page.locator("input").first.fill("admin")
    page.locator("input[type=password]").fill(app.password)
    page.locator("button").last.click()
    page.get_by_role("button", name=generate_label).wait_for(timeout=30000)
    return context, page


@pytest.fixture
def page(browser, app):
    context, page = open_page(browser, app, "en-US", "Generate")
    yield page
    context.close()


def shot(page, name: str, at: str | None = None) -> None:
    """Save a screenshot of the top of the page, or of the part around the element ``at``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    if at:
        page.locator(at).scroll_into_view_if_needed()
    else:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def start_job(page, preset: str) -> None:
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
    page.locator("#prompt textarea").fill("the waves roll in slowly")
    page.get_by_test_id(f"{preset}-radio-label").click()
    page.get_by_role("button", name="Generate").click()


def progress_text(page) -> str:
    return " ".join(page.locator("#result-video .progress-text, #result-video .meta-text").all_inner_texts())


def test_login_upload_generate_and_the_video_plays(page):
    shot(page, "1-start")
    start_job(page, "Quick preview")
    steps_seen, previews_seen = [], []
    deadline = time.monotonic() + 120
    while not page.locator("#result-info").get_by_text("Done in").count():
        assert time.monotonic() < deadline, "no result in time"
        text = page.locator("#result-video").inner_text()
        if page.locator("#live-preview img").count():
            previews_seen.append(True)
        if "Denoising" in text:
            steps_seen.append(int(text.split("Denoising ")[1].split("/")[0]))
            if len(steps_seen) == 12:
                shot(page, "2-progress")
        time.sleep(0.3)
    assert len(set(steps_seen)) >= 2 and steps_seen == sorted(steps_seen), steps_seen  # the bar advanced
    assert previews_seen, "no live preview while denoising"
    video = page.locator("#result-video video")
    video.wait_for(timeout=30000)
    page.wait_for_function("document.querySelector('#result-video video').readyState >= 1", timeout=30000)
    facts = video.evaluate("v => ({duration: v.duration, width: v.videoWidth, height: v.videoHeight, "
                           "error: v.error && v.error.code})")
    assert facts == {"duration": 1, "width": 512, "height": 512, "error": None}  # 8 frames at 8 fps
    assert "seed" in page.locator("#result-info").inner_text()
    shot(page, "3-result")


def test_cancel_stops_the_job(page):
    start_job(page, "Standard")
    page.locator("#result-video").get_by_text("Denoising").wait_for(timeout=60000)
    page.locator("#cancel-button").click()
    page.locator("#result-info").get_by_text("Cancelled").wait_for(timeout=30000)
    sync_api.expect(page.locator("#your-jobs")).to_contain_text("cancelled", timeout=30000)


def test_a_bad_upload_gets_a_message(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not a picture")
    page.locator("input[type=file]").first.set_input_files(str(fake))
    page.locator("#prompt textarea").fill("waves")
    page.get_by_role("button", name="Generate").click()
    toast = page.get_by_text("This file is not an image we can read")
    toast.wait_for(timeout=30000)
    shot(page, "4-bad-upload")


def test_a_reload_during_a_job_finds_it_again(page):
    start_job(page, "Standard")
    page.locator("#result-video").get_by_text("Denoising").wait_for(timeout=60000)
    page.reload()
    jobs = page.locator("#your-jobs")
    sync_api.expect(jobs).to_contain_text("Denoising", timeout=30000)  # still there, still running
    shot(page, "5-after-reload", at="#your-jobs")
    sync_api.expect(jobs).to_contain_text("done", timeout=180000)


def wait_for_result(page, timeout_ms: int = 120000) -> None:
    sync_api.expect(page.locator("#result-info")).to_contain_text("Done in", timeout=timeout_ms)


def test_reuse_the_settings_of_a_past_video_then_delete_it(page, app):
    before = set((app.root / "outputs").glob("video_*.mp4"))
    start_job(page, "Quick preview")  # this test's own video
    wait_for_result(page)
    (made,) = set((app.root / "outputs").glob("video_*.mp4")) - before
    record = json.loads((app.root / "outputs" / f"{made.stem}.json").read_text())
    page.get_by_role("tab", name="All videos").click()
    table = page.locator("#all-videos")
    table.get_by_role("gridcell", name=made.name).click()
    page.locator("#reuse-settings").click()
    sync_api.expect(page.locator("#prompt textarea")).to_have_value(record["parameters"]["prompt"])
    seed = page.get_by_label("Seed", exact=True)
    sync_api.expect(seed).to_have_value(str(record["parameters"]["seed"]))
    page.locator("#same-seed").click()
    sync_api.expect(page.locator("#prompt textarea")).to_have_value("")
    sync_api.expect(seed).to_have_value(str(record["parameters"]["seed"]))
    page.locator("#delete-video").click()
    page.get_by_text(f"Deleted {made.name}").wait_for(timeout=10000)
    assert not made.exists()
    sync_api.expect(table).not_to_contain_text(made.name)


def test_the_page_speaks_chinese_and_english_and_remembers_the_choice(browser, app, tmp_path):
    context, page = open_page(browser, app, "zh-CN", "生成视频")  # follows the browser's language
    try:
        sync_api.expect(page.locator("#prompt")).to_contain_text("提示词")
        sync_api.expect(page.locator("#preset")).to_contain_text("快速预览")  # the shipped presets' names too
        sync_api.expect(page.get_by_text("示例：点击即可试用")).to_be_visible()  # and the examples
        status = page.locator("#model-status")
        sync_api.expect(status).to_contain_text("模型已就绪")
        sync_api.expect(status).to_contain_text("设备：CPU，float32（很慢")  # the device line as well
        page.locator("#help").get_by_text("帮助：使用手册与提示词技巧").click()
        sync_api.expect(page.locator("#manual")).to_contain_text("提示词技巧")
        shot(page, "6-chinese")
        fake = tmp_path / "photo.png"
        fake.write_text("not a picture")
        page.locator("input[type=file]").first.set_input_files(str(fake))
        page.locator("#prompt textarea").fill("waves")
        page.get_by_role("button", name="生成视频").click()
        page.get_by_text("无法识别这个文件为图片").wait_for(timeout=30000)  # messages too

        page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))  # a video, in Chinese
        page.locator("#prompt textarea").fill("the waves roll in slowly")
        page.get_by_test_id("快速预览-radio-label").click()
        page.get_by_role("button", name="生成视频").click()
        sync_api.expect(page.locator("#result-info")).to_contain_text("完成，用时", timeout=120000)

        page.locator("#language").get_by_text("English").click()
        page.get_by_role("button", name="Generate").wait_for(timeout=10000)
        sync_api.expect(page.locator("#result-info")).to_contain_text("Done in", timeout=10000)
        sync_api.expect(status).to_contain_text("Device: CPU, float32 (slow")
        sync_api.expect(page.locator("#manual")).to_contain_text("Prompt tips")
        page.reload()
        page.get_by_role("button", name="Generate").wait_for(timeout=30000)  # the choice is remembered
    finally:
        context.close()


def test_a_double_click_on_generate_starts_one_job(page, app):
    before = set((app.root / "outputs").glob("video_*.mp4"))
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
    page.locator("#prompt textarea").fill("the waves roll in slowly")
    page.get_by_test_id("Quick preview-radio-label").click()
    page.locator("#generate-button").dblclick()
    wait_for_result(page, 180000)
    time.sleep(2)  # a second job, if one had started, would be in the table by now
    rows = page.locator("#your-jobs tbody tr")
    assert rows.count() == 1, page.locator("#your-jobs").inner_text()
    assert len(set((app.root / "outputs").glob("video_*.mp4")) - before) == 1
