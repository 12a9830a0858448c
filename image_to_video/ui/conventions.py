"""What creators expect of a web tool, done in the browser: progress and "done" in the tab's title, a
notification when a long job ends (permission asked once, only after the user's first Generate), and
Ctrl+Enter (Cmd+Enter on a Mac) to generate, a click on a file's name downloads it (Gradio links only
its size) and the downloads list shows no "×" (Gradio's, which only hides a row, reads as delete), and a
gallery thumbnail plays its video while pointed at or focused.

``head()`` is a ``<script>`` for the page's ``<head>`` (``server`` mounts the page with it). It only
reads the page: the progress Gradio shows on the result video (``#result-video``: "Denoising 12/50 ·
about 30 s left"), the video once it is there, and the Generate button (``#generate-button``), which it
clicks for the shortcut; it sends nothing the page's own button would not. Its words come from ``i18n``
in both languages and follow the page's language (kept in localStorage by the page).
"""

from __future__ import annotations

import json

from ..i18n import LANGUAGES, t

#: A job that took at least this long gets a notification when it ends (if the tab is not in front).
NOTIFY_AFTER_S = 20

_KEYS = ("tab_working", "tab_done", "tab_finished", "notify_done_title", "notify_done_body")

_SCRIPT = """<style>
  .file-preview td.filename { cursor: pointer; text-decoration: underline; }
  /* The downloads list holds downloads only: no "×" that reads as delete (it only hid a row), an arrow instead. */
  #downloads .file-preview td:has(> .label-clear-button) { display: none; }
  #downloads .file-preview td.filename::before { content: "⬇\\00a0"; text-decoration: none; display: inline-block; }
</style>
<script>
(() => {
  const WORDS = __WORDS__, NOTIFY_AFTER_MS = __NOTIFY_MS__;
  const words = () => WORDS[localStorage.getItem("image-to-video-language")
    || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en")] || WORDS.en;
  let base = null, running = false, started = 0, asked = false, ended = "";
  const plain = () => base || (base = document.title.replace(/^(⏳|✅|⏹)[^·]*· /, ""));
  const askOnce = () => {  // politely: once, and only after the user asked for a video
    if (asked || !("Notification" in window) || Notification.permission !== "default") return;
    asked = true;
    try { Notification.requestPermission(); } catch (e) { /* an old browser: no notifications */ }
  };
  const generate = () => {
    const button = document.querySelector("#generate-button");
    if (button && !button.disabled) { askOnce(); button.click(); }
  };
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.repeat) {
      event.preventDefault();
      generate();
    }
  }, true);
  document.addEventListener("click", (event) => {
    if (event.target && event.target.closest && event.target.closest("#generate-button")) askOnce();
  }, true);
  // A file's name downloads it, as its size (Gradio's link) does.
  document.addEventListener("click", (event) => {
    const cell = event.target && event.target.closest && event.target.closest(".file-preview td.filename");
    const row = cell && cell.closest("tr");
    const link = row && row.querySelector("td.download a[href]");
    if (link) { event.preventDefault(); link.click(); }
  }, true);
  // The gallery: a thumbnail pointed at (or focused) plays its video in place, muted and looped; leaving it
  // stops it and shows its first frame again. The video is the one the gallery already shows.
  const thumbnail = (node) => node && node.closest ? node.closest("#gallery .thumbnail-item") : null;
  const play = (item) => {
    const video = item && item.querySelector("video");
    if (!video) return;
    video.muted = true;
    video.loop = true;
    const started = video.play();
    if (started && started.catch) started.catch(() => { /* gone meanwhile, or not playable */ });
  };
  const rest = (item) => {
    const video = item && item.querySelector("video");
    if (video) { video.pause(); video.currentTime = 0; }
  };
  document.addEventListener("mouseover", (event) => {
    const item = thumbnail(event.target);
    if (item && !item.contains(event.relatedTarget)) play(item);
  }, true);
  document.addEventListener("mouseout", (event) => {
    const item = thumbnail(event.target);
    if (item && !item.contains(event.relatedTarget)) rest(item);
  }, true);
  document.addEventListener("focusin", (event) => play(thumbnail(event.target)), true);
  document.addEventListener("focusout", (event) => rest(thumbnail(event.target)), true);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && ended) { ended = ""; document.title = plain(); }
  });
  const look = () => {
    const area = document.querySelector("#result-video");
    if (!area) return;
    const bar = area.querySelector(".progress-level-inner, .progress-text, .eta-bar, .meta-text");
    if (bar) {
      if (!running) { running = true; started = Date.now(); ended = ""; plain(); }
      const inner = area.querySelector(".progress-level-inner");  // our words: "Denoising 12/50 · ..."
      const said = inner ? inner.textContent.trim() : "";  // not the queue's "1/2"
      const count = said.match(/(\\d+)\\s*\\/\\s*(\\d+)/);
      const stage = said.replace(/\\s*\\d+\\s*\\/.*$/, "").trim();
      const percent = count && Number(count[2]) ? Math.floor(100 * Number(count[1]) / Number(count[2])) + "% " : "";
      document.title = "⏳ " + (percent || words().tab_working + " ") + (stage ? stage + " " : "") + "· " + plain();
      return;
    }
    if (!running) return;
    running = false;
    const made = Boolean(area.querySelector("video"));
    ended = made ? "done" : "finished";
    document.title = (made ? "✅ " + words().tab_done : "⏹ " + words().tab_finished) + " · " + plain();
    if (made && Date.now() - started >= NOTIFY_AFTER_MS && document.hidden && "Notification" in window
        && Notification.permission === "granted") {
      try { new Notification(words().notify_done_title, {body: words().notify_done_body}); } catch (e) { /* none */ }
    }
  };
  setInterval(look, 500);
})();
</script>"""


def head() -> str:
    """The ``<script>`` the page's ``<head>`` carries (see the module's docstring)."""
    words = {lang: {key: t(key, lang) for key in _KEYS} for lang in LANGUAGES}
    return (_SCRIPT.replace("__WORDS__", json.dumps(words, ensure_ascii=False).replace("</", "<\\/"))
            .replace("__NOTIFY_MS__", str(NOTIFY_AFTER_S * 1000)))
