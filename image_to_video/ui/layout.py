"""The page's layout: which components there are, where, with which labels; and which event
runs which handler of ``events``.

All limits, defaults and presets come from the config; the five generation settings are
built from ``config.PARAMETERS``.
"""

from __future__ import annotations

import gradio as gr
from gradio.utils import get_upload_folder

from .. import catalogue, families
from ..config import INTERPOLATE_METHODS, LOOPS, PARAMETERS, PROJECT_DIR, STATIC_DIR, AppConfig, Parameter
from ..examples import ensure_examples
from ..i18n import LANGUAGES, preset_label, t
from ..job_queue import JobQueue
from ..request import QUALITIES
from ..outputs import OutputFolder
from . import events, lora_picker, views
from .many import ManyPictures
from .components import (CacheSweeper, Choice, Choices, HistoryTab, Inputs, JobsTab, Language, ManyTab, Outputs,
                         Page, PageBlocks, SeedNumber, Slider, Translations, UploadedImage)

# On load: the page id this browser kept (the server checks it and, if it did not sign it,
# issues a fresh one that _KEEP_OWNER_JS stores) and its language (the one chosen before,
# else the browser's).
_BROWSER_JS = """() => {
  const id = localStorage.getItem("image-to-video-page-id") || "";
  const chosen = localStorage.getItem("image-to-video-language");
  const lang = chosen || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en");
  return [id, lang];
}"""
_KEEP_OWNER_JS = """(id) => { localStorage.setItem("image-to-video-page-id", id); return [id]; }"""
# A double click never starts two jobs: the button is off from the first click until the
# submit is answered (the server also refuses the duplicate: events.Generation).
_GENERATE_CLICKED_JS = """(...values) => {
  const button = document.querySelector("#generate-button");
  if (button) { button.disabled = true; setTimeout(() => { button.disabled = false; }, 3000); }
  return values;
}"""
#: The page ids' signing key, in the state folder.
OWNER_KEY_FILE = "page_owner.key"
_REMEMBER_LANGUAGE_JS = """(lang, video, model) => {
  localStorage.setItem("image-to-video-language", lang);
  return [lang, video, model];
}"""
_DOCS = PROJECT_DIR / "docs"
#: Page helpers: instant, outside the GPU queue, and no part of the API: only the page runs them
#: (by number, on its own route; ``http_guard.PageEventGuard`` refuses them by name).
_QUICK = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}


#: The frame rates "Smoother motion" offers (those up to ``finishing.max_interpolate_fps``).
INTERPOLATE_CHOICES = (12, 16, 24, 30)


def _loop_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"loop_{kind}", lang), kind) for kind in LOOPS]


def _interpolate_method_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"interpolate_{method}", lang), method) for method in INTERPOLATE_METHODS]


def _quality_choices(lang: str) -> list[tuple[str, int]]:
    """The MP4's quality (its CRF, ``request.QUALITIES``) in words, best first."""
    return [(t(f"quality_{word}", lang, crf=crf), crf) for word, crf in QUALITIES.items()]


def _format_choices(lang: str) -> list[tuple[str, str]]:
    """The files besides the MP4: GIF and WebM by their names, the PNG frames in the page's language."""
    return [("GIF", "gif"), ("WebM", "webm"), (t("format_png", lang), "png")]


def build_page(config: AppConfig, queue: JobQueue, outputs: OutputFolder, model: events.ModelInfo, *,
               workers=None, fetches=None) -> gr.Blocks:
    """The page with its events wired; ``workers()`` lists the workers for the Workers panel.
    Nothing is started or loaded here."""
    tables = events.Tables(queue, outputs, workers)
    layout = _Layout(config, model, tables)
    with PageBlocks(title="Image-to-Video") as demo:
        page = layout.build()
        _wire(demo, page, config, queue, outputs, model, tables, layout.logo_svg, fetches)
    demo.lang_component = page.lang
    older_than_s = config.server.cache_max_age_min * 60
    every_s = min(600.0, older_than_s / 4)
    sweeper = CacheSweeper(get_upload_folder(), every_s, older_than_s, keep=lambda: _kept_files(demo))
    demo.extra_startup_events.append(sweeper.start)
    return demo


def _kept_files(demo: gr.Blocks) -> set[str]:
    """Files Gradio keeps in its cache for the page's life: the examples, the components' defaults."""
    return {path for block in demo.blocks.values() for path in getattr(block, "keep_in_cache", ())}


class _Layout:
    """Builds the components, registering what follows the language in ``translations``."""

    def __init__(self, config: AppConfig, model: events.ModelInfo, tables: events.Tables):
        self.config, self.model, self.tables = config, model, tables
        self.settings = config.generation
        self.card = families.served_card(config)
        self.translations = Translations()
        self.say = self.translations.say
        self.logo_svg = (STATIC_DIR / "logo.svg").read_text()
        #: The Workers panel is an operator's: shown only where several workers (or a Ray cluster) serve.
        self.operators = layout_shows_workers(config)

    def build(self) -> Page:
        """A short page: the form (presets first, settings collapsed) beside the result, with your jobs,
        the gallery and Many pictures under the result; the examples, the Workers panel (operators only)
        and the manual below."""
        subtitle, lang, status, timer = self._header()
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                inputs = self._inputs()
            with gr.Column(scale=6):
                outputs = self._outputs()
                jobs, history = self._jobs_tab(), self._history_tab()
                many = self._many_tab()
        self._examples(inputs)
        # This page's id as the server signed it (events.PageOwners), kept in local storage.
        owner = gr.Textbox(visible=False, elem_id="page-owner")
        with self.say(gr.Accordion(t("workers_title"), open=False, elem_id="workers-panel",
                                   visible=self.operators), label="workers_title"):
            workers = gr.Markdown(self.tables.workers("en") if self.operators else "", elem_id="workers")
        with self.say(gr.Accordion(t("help"), open=False, elem_id="help"), label="help"):
            manual = gr.Markdown(events.read_manual(_DOCS, "en"), elem_id="manual")
        return Page(lang=lang, owner=owner, subtitle=subtitle, status=status, timer=timer, manual=manual,
                    inputs=inputs, outputs=outputs, jobs=jobs, history=history, translations=self.translations,
                    many=many, workers=workers)

    def _header(self):
        with gr.Row(equal_height=True):
            with gr.Column(scale=5):
                subtitle = gr.HTML(views.title_html(self.logo_svg, "en", self.card.title))
            with gr.Column(scale=1, min_width=180):
                lang = Language([(name, code) for code, name in LANGUAGES.items()], value="en",
                                show_label=False, elem_id="language", container=False)
        if self.config.model.demo:
            card = self.card

            def banner(lang: str) -> str:
                return t("demo_banner", lang, model=card.title, size=f"{card.download_gb:g}")

            self.say(gr.Markdown(banner("en"), elem_classes=["demo-banner"]), value=banner)
        # Filled in the page's language as soon as the page has loaded, then every tick.
        status = gr.Markdown(views.status_text(self.model.status, "en"), elem_classes=["model-status"],
                             elem_id="model-status")
        return subtitle, lang, status, gr.Timer(2.0)

    def _inputs(self) -> Inputs:
        s, d, say = self.settings, self.settings.defaults, self.say
        offered = self.config.offered or {self.card.name: self.config}
        model = say(Choice([(families.served_card(one).title, name) for name, one in offered.items()],
                           value=self.card.name, label=t("model_picker"), info=t("model_picker_help"),
                           elem_id="model-picker", visible=len(offered) > 1),
                    label="model_picker", info="model_picker_help")
        model_note = gr.Markdown("", elem_id="model-note", visible=len(offered) > 1)
        preset = say(Choice(self._preset_choices("en"), label=t("preset"), value=s.preset_for(d.values()),
                            info=t("preset_help"), elem_id="preset"),
                     label="preset", info="preset_help")  # its choices follow the model too: settings.model_texts
        lora_note, fast_download = lora_picker.build_note()  # under the presets: the Fast LoRAs to download
        image = say(UploadedImage(label=t("image"), type="filepath", sources=["upload", "clipboard"], height=280,
                                  elem_id="image"),
                    label="image")
        say(gr.Markdown(t("image_help"), elem_id="image-help"), value="image_help")
        crop_note = gr.Markdown("", elem_id="crop-note")
        last_image = say(UploadedImage(label=t("end_frame"), type="filepath", sources=["upload", "clipboard"], height=160,
                                       elem_id="end-frame", visible=self.card.end_frame),
                         label="end_frame")
        prompt_help = "prompt_help_multilingual" if "zh" in self.card.prompt_languages else "prompt_help"
        prompt = say(gr.Textbox(label=t("prompt"), info=t(prompt_help), lines=2, elem_id="prompt",
                                max_length=s.max_prompt_chars, placeholder="the waves roll in slowly"),
                     label="prompt")  # its help names the languages the picked model reads: settings.model_texts
        prompt_note = gr.Markdown("", elem_id="prompt-note")
        with gr.Row(elem_id="generate-row"):
            generate = say(gr.Button(t("generate"), variant="primary", elem_id="generate-button", scale=3,
                                     min_width=120), value="generate")
            cancel = say(gr.Button(t("cancel"), variant="stop", scale=1, elem_id="cancel-button", min_width=80),
                         value="cancel")
            cancel_all = gr.Button(t("cancel_all", count=0), scale=1, elem_id="cancel-all", min_width=80,
                                   interactive=False)
        with gr.Row(equal_height=True, elem_id="summary-row"):
            summary = gr.Markdown("", elem_id="options-summary")
            plain = say(gr.Button(t("plain_video"), size="sm", visible=False, elem_id="plain-video", scale=0,
                                  min_width=120), value="plain_video")
        with say(gr.Accordion(t("settings"), open=False, elem_id="settings"), label="settings"):
            negative = say(gr.Textbox(label=t("negative"), info=t("negative_help"), value=d.negative_prompt,
                                      max_length=s.max_prompt_chars), label="negative", info="negative_help")
            parameters = tuple(self._parameter(p, value) for p, value in zip(PARAMETERS, d.values()))
            aspect = say(Choice(self._aspect_choices("en"), value=families.AUTO, label=t("aspect"),
                                info=t("aspect_help"), elem_id="aspect"),
                         label="aspect", info="aspect_help")  # choices: settings.model_texts
            estimate = gr.Markdown(views.estimate_text(
                s, "en", d.resolution, d.num_frames, d.num_inference_steps, gpu_gb=self.model.gpu_memory_gb,
                gpu_name=self.model.gpu_name, demo=self.model.status.is_demo, untraced=events.untraced(self.card),
                needs=events.table_needs(self.card, d.resolution, d.num_frames)),
                elem_id="estimate")
            with gr.Row():
                random_seed = say(gr.Checkbox(value=d.seed == events.RANDOM_SEED, label=t("random_seed")),
                                  label="random_seed")
                seed = say(SeedNumber(value=max(d.seed, 0), precision=0, minimum=0, maximum=2**32 - 1,
                                      label=t("seed"), info=t("seed_help"), interactive=d.seed != events.RANDOM_SEED),
                           label="seed", info="seed_help")
            lora_box = lora_picker.build(say, self.card, self.config.paths.models_dir, lora_note, fast_download)
        finishing_box, finishing, continuing, stop_continuing, interpolate_method = self._finishing()
        return Inputs(image=image, prompt=prompt, negative_prompt=negative, preset=preset, generate=generate,
                      cancel=cancel, parameters=parameters, estimate=estimate, random_seed=random_seed, seed=seed,
                      prompt_note=prompt_note, finishing=finishing, finishing_box=finishing_box,
                      continuing=continuing, stop_continuing=stop_continuing, aspect=aspect, last_image=last_image,
                      crop_note=crop_note, model=model, model_note=model_note,
                      interpolate_method=interpolate_method, crf=self.crf, summary=summary, plain=plain,
                      cancel_all=cancel_all, bring=self.bring, loras=lora_box)

    def _examples(self, inputs: Inputs) -> None:
        """The example pictures and prompts, below the form and the result (a phone reaches the video first)."""
        shown = gr.Examples([[str(path), text] for path, text in ensure_examples(STATIC_DIR / "examples")],
                            [inputs.image, inputs.prompt], label=t("examples"), api_visibility="private")
        self.say(shown.dataset, label="examples", headers=["image", "prompt"])

    def _finishing(self):
        """The steps after the model: continue a video, segments, loop, smoother motion, formats, upscale."""
        say, limits = self.say, self.config.finishing
        with say(gr.Accordion(t("finishing"), open=False, elem_id="finishing"), label="finishing") as box:
            continuing = gr.Markdown("", elem_id="continuing")
            stop = say(gr.Button(t("stop_continuing"), size="sm", visible=False, elem_id="stop-continuing"),
                       value="stop_continuing")
            continue_from = gr.Textbox("", visible=False, elem_id="continue-from")
            # A video of the creator's own to continue: checked and kept by the server (events.Bringing).
            self.bring = say(gr.File(label=t("brought_label"), file_types=[".mp4", ".webm"], type="filepath",
                                     file_count="single", height=110, elem_id="bring-video"), label="brought_label")
            say(gr.Markdown(t("brought_help"), elem_id="bring-help"), value="brought_help")
            segments = say(Slider(1, limits.max_segments, step=1, value=1, label=t("segments"),
                                  info=t("segments_help"), elem_id="segments"), label="segments", info="segments_help")
            loop = say(Choice(_loop_choices("en"), value="none", label=t("loop"), info=t("loop_help"), elem_id="loop"),
                       label="loop", info="loop_help", choices=_loop_choices)
            interpolate = say(Choice(self._interpolate_choices("en"), value=0, label=t("interpolate"),
                                     info=t("interpolate_help"), elem_id="interpolate"),
                              label="interpolate", info="interpolate_help", choices=self._interpolate_choices)
            method = say(Choice(_interpolate_method_choices("en"), value=INTERPOLATE_METHODS[0],
                                label=t("interpolate_method"), info=t("interpolate_method_help"),
                                elem_id="interpolate-method"),
                         label="interpolate_method", info="interpolate_method_help",
                         choices=_interpolate_method_choices)
            formats = say(Choices(_format_choices("en"), value=[], label=t("formats"), info=t("formats_help"),
                                  elem_id="formats"), label="formats", info="formats_help", choices=_format_choices)
            upscale = say(Choice([("1×", 1), ("2×", 2)], value=1, label=t("upscale"), info=t("upscale_help"),
                                 elem_id="upscale"), label="upscale", info="upscale_help")
            self.crf = say(Choice(_quality_choices("en"), value=limits.crf if limits.crf in QUALITIES.values() else 18,
                                  label=t("crf"), info=t("crf_help"), elem_id="crf"),
                           label="crf", info="crf_help", choices=_quality_choices)  # issue 24: the MP4's quality
            say(gr.Markdown(t("finishing_costs")), value="finishing_costs")
        return box, (continue_from, segments, loop, interpolate, formats, upscale), continuing, stop, method

    def _aspect_choices(self, lang: str) -> list[tuple[str, str]]:
        return [(t("aspect_auto", lang), families.AUTO), *[(aspect, aspect) for aspect in self.card.aspects]]

    def _interpolate_choices(self, lang: str) -> list[tuple[str, int]]:
        rates = [fps for fps in INTERPOLATE_CHOICES if fps <= self.config.finishing.max_interpolate_fps]
        return [(t("interpolate_off", lang), 0), *[(f"{fps} fps", fps) for fps in rates]]

    def _parameter(self, p: Parameter, value):
        """One generation setting's control: a radio for the resolution, else a slider within its limits."""
        keys = {"label": p.text, "info": f"{p.text}_help"}
        texts = {"label": t(p.text), "info": t(f"{p.text}_help")}
        if p.limits is None:
            return self.say(Choice(list(self.settings.resolutions), value=value, **texts), **keys)
        limits = self.settings.limits(p.name)
        low, high = (int(limits.min), int(limits.max)) if p.kind is int else (limits.min, limits.max)
        step = self.card.frame_step if p.name == "num_frames" else p.step  # Wan: 4k+1 frames only
        return self.say(Slider(low, high, step=step, value=value, **texts), **keys)

    def _preset_choices(self, lang: str) -> list[tuple[str, str]]:
        return [(preset_label(name, lang), name) for name in self.settings.presets]

    def _outputs(self) -> Outputs:
        say = self.say
        video = say(gr.Video(label=t("video"), autoplay=True, loop=True, height=420, interactive=False,
                             elem_id="result-video", buttons=["download"]), label="video")
        preview = say(gr.Image(label=t("preview"), visible=False, interactive=False, height=160,
                               elem_id="live-preview", buttons=[]), label="preview")
        info = gr.Markdown(t("video_placeholder"), elem_classes=["result-info"], elem_id="result-info")
        files = say(gr.File(label=t("downloads"), file_count="multiple", interactive=False, elem_id="downloads"),
                    label="downloads")
        with gr.Row():
            reuse_seed = say(gr.Button(t("reuse_seed"), visible=False, size="sm"), value="reuse_seed")
            continue_video = say(gr.Button(t("continue_video"), visible=False, size="sm", elem_id="continue-button"),
                                 value="continue_video")
        return Outputs(video=video, preview=preview, info=info, files=files, reuse_seed=reuse_seed,
                       last_seed=gr.State(None), continue_video=continue_video, shown=gr.State(None),
                       following=gr.State(None))

    def _jobs_tab(self) -> JobsTab:
        say = self.say
        selected = gr.State(None)
        with say(gr.Tab(t("your_jobs")), label="your_jobs"):
            table = say(gr.Dataframe(headers=views.headers(views.JOB_COLUMNS, "en"), interactive=False, wrap=True,
                                     max_height=360, elem_id="your-jobs", label=t("your_jobs_help")),
                        label="your_jobs_help")
            with gr.Row():
                message = gr.Markdown("", elem_id="job-message")
                retry = say(gr.Button(t("retry"), visible=False, size="sm", elem_id="retry-job"), value="retry")
                cancel = say(gr.Button(t("cancel_job"), visible=False, size="sm", variant="stop", elem_id="cancel-job"),
                             value="cancel_job")
        return JobsTab(table=table, selected=selected, message=message, retry=retry, cancel=cancel)

    def _many_tab(self) -> ManyTab:
        """Many pictures at once: one job each, with the form's settings."""
        say = self.say
        with say(gr.Tab(t("many_tab")), label="many_tab"):
            say(gr.Markdown(t("many_tab_help")), value="many_tab_help")
            files = say(gr.File(label=t("many_files"), file_count="multiple", type="filepath",
                                file_types=["image", ".zip"], elem_id="many-files"), label="many_files")
            prompts = say(gr.Textbox(label=t("many_prompts"), info=t("many_prompts_help"), lines=4,
                                     elem_id="many-prompts"), label="many_prompts", info="many_prompts_help")
            queue_all = say(gr.Button(t("many_queue_all"), variant="primary", elem_id="many-queue-all"),
                            value="many_queue_all")
            summary = gr.Markdown("", elem_id="many-summary")
        return ManyTab(files=files, prompts=prompts, queue_all=queue_all, summary=summary)

    def _history_tab(self) -> HistoryTab:
        say = self.say
        with say(gr.Tab(t("all_videos")), label="all_videos"):
            # Filled on load and kept live by the tick (events.Live.tick), newest first.
            say(gr.Markdown(t("all_videos_help"), elem_id="gallery-help"), value="all_videos_help")
            gallery = gr.Gallery(show_label=False, columns=4, height=320, allow_preview=False, fit_columns=False,
                                 object_fit="cover", interactive=False, elem_id="gallery", buttons=[])
            picked = gr.State(None)
            with gr.Row(visible=False) as actions:
                reuse = say(gr.Button(t("reuse_settings"), size="sm", elem_id="reuse-settings"),
                            value="reuse_settings")
                same_seed = say(gr.Button(t("same_seed"), size="sm", elem_id="same-seed"), value="same_seed")
                continue_video = say(gr.Button(t("continue_video"), size="sm", elem_id="continue-history"),
                                     value="continue_video")
                delete = say(gr.Button(t("delete"), size="sm", variant="stop", elem_id="delete-video"),
                             value="delete")
            message = gr.Markdown("", elem_id="gallery-message")
            with gr.Row(visible=False) as confirm:
                confirm_delete = say(gr.Button(t("delete_yes"), size="sm", variant="stop", elem_id="confirm-delete"),
                                     value="delete_yes")
                keep = say(gr.Button(t("delete_keep"), size="sm", elem_id="keep-video"), value="delete_keep")
        return HistoryTab(gallery=gallery, picked=picked, actions=actions, reuse=reuse, same_seed=same_seed,
                          delete=delete, message=message, continue_video=continue_video, names=gr.State(None),
                          confirm=confirm, confirm_delete=confirm_delete, keep=keep)


def _wire(demo: gr.Blocks, page: Page, config: AppConfig, queue: JobQueue, outputs: OutputFolder,
          model: events.ModelInfo, tables: events.Tables, logo_svg: str, fetches=None) -> None:
    """Connect every event to its handler; the outputs listed are those the handler may update
    (``fetches``: the server's LoRA downloads, which the Fast preset's button starts)."""
    settings = events.Settings(page, config.generation, model, queue, card=families.served_card(config),
                               offered=config.offered, logo_svg=logo_svg,
                               models=lambda: catalogue.model_list(config, catalogue.engines_of(model)),
                               default_crf=config.finishing.crf)
    owners = events.PageOwners(config.paths.state_dir / OWNER_KEY_FILE)
    live = events.Live(page, tables, outputs, model, owners, logo_svg=logo_svg, docs_dir=_DOCS,
                       model_title=settings.title)
    generation = events.Generation(page, queue, tables, owners, max_listed=config.jobs.max_queued + 5)
    jobs = events.JobActions(page, queue, tables, owners)
    history = events.HistoryActions(page, outputs, config.generation, tables, models=settings)
    i, o, lang, owner = page.inputs, page.outputs, page.lang, page.owner
    past = page.history
    params = list(i.parameters)
    browser = [owner, lang]
    # The tick: the status, your jobs, "Cancel all (N)", the video area following your latest job, the gallery.
    ticked = [owner, lang, o.following, past.names, o.shown]
    ticks = [page.status, page.jobs.table, i.cancel_all, o.video, o.info, o.files, o.continue_video, o.reuse_seed,
             o.last_seed, o.shown, o.preview, o.following, past.gallery, past.names]

    demo.load(None, None, browser, js=_BROWSER_JS, **_QUICK).then(
        # Public: an API caller of /generate gets its page id here, as a browser does.
        live.page_owner, owner, owner, api_name="page_owner", **{**_QUICK, "api_visibility": "public"}).then(
        None, owner, owner, js=_KEEP_OWNER_JS, **_QUICK).then(
        live.tick, ticked, ticks, **_QUICK)
    lang.change(live.relabel, [lang, o.video, i.model],
                [*page.translations.components, page.subtitle, page.manual, page.status, o.info],
                js=_REMEMBER_LANGUAGE_JS, **_QUICK).then(
        live.both_tables, browser, [page.jobs.table, past.gallery, past.names], **_QUICK)
    page.timer.tick(live.tick, ticked, ticks, **_QUICK)
    if page.workers is not None and layout_shows_workers(config):
        page.timer.tick(live.workers, lang, page.workers, **_QUICK)

    # The model picker: every control that depends on the model follows it (and the language).
    model_controls = [*params, i.preset, i.negative_prompt, i.last_image, i.aspect, i.prompt, page.subtitle,
                      i.model_note, i.estimate]
    i.model.input(settings.pick_model, [i.model, lang], model_controls, **_QUICK)
    lang.change(settings.model_texts, [lang, i.model], [i.aspect, i.prompt, i.preset, i.model_note], **_QUICK)
    if len(config.offered) > 1:  # how each model stands changes as jobs switch them
        demo.load(settings.model_note, [lang, i.model], i.model_note, **_QUICK)
        page.timer.tick(settings.model_note, [lang, i.model], i.model_note, **_QUICK)

    i.preset.input(settings.apply_preset, [i.preset, i.model], [*params, i.preset], **_QUICK)
    _wire_loras(demo, page, settings, config, fetches)
    for component in params:
        component.input(settings.match_preset, [*params, i.model], i.preset, **_QUICK)
    i.random_seed.change(settings.seed_box, i.random_seed, i.seed, **_QUICK)
    by_name = dict(zip((p.name for p in PARAMETERS), params))
    sizing = [by_name["resolution"], by_name["num_frames"], by_name["num_inference_steps"]]
    # the estimate counts the finishing steps too, the passes a step makes (guidance) and the LoRAs' memory
    timing = [*sizing, by_name["fps"], *i.finishing, by_name["guidance_scale"], i.loras.text]
    for trigger in [component.change for component in timing] + [lang.change]:
        trigger(settings.estimate, [lang, *sizing, i.model, by_name["fps"], *i.finishing, by_name["guidance_scale"],
                                    i.loras.text], i.estimate, **_QUICK)
    # On a GPU too small for the default settings, start from the largest preset that fits.
    demo.load(settings.fitting_defaults, None, [*params, i.preset], **_QUICK)

    for trigger in (i.prompt.change, lang.change, i.model.change):
        trigger(settings.prompt_note, [i.prompt, lang, i.model], i.prompt_note, **_QUICK)
    for trigger in (i.image.change, i.aspect.change, by_name["resolution"].change, lang.change, i.model.change):
        trigger(settings.crop_note, [i.image, i.aspect, by_name["resolution"], lang, i.model], i.crop_note, **_QUICK)
    i.generate.click(
        generation.generate,
        [i.image, i.prompt, i.negative_prompt, *params, i.seed, i.random_seed, owner, lang, *i.finishing, i.aspect,
         i.last_image, i.model, i.interpolate_method, i.crf, i.loras.text],
        [o.video, o.info, o.files, o.last_seed, o.reuse_seed, page.jobs.table, o.preview,
         o.continue_video, o.shown, o.following],
        api_name="generate", concurrency_limit=config.jobs.max_queued + 2, trigger_mode="once",
        show_progress_on=[o.video], js=_GENERATE_CLICKED_JS)
    # The same click, beside it: a continuation is asked for once (the seed it locked unlocked again).
    i.generate.click(settings.after_continuing, [i.finishing[0], lang],
                     [i.finishing[0], i.continuing, i.stop_continuing, i.random_seed], **_QUICK)
    # "Cancel": the job the video area shows; "Cancel all (N)": every unfinished job of this page (the API's).
    i.cancel.click(generation.cancel_shown, [o.following, owner, lang], o.info, **_QUICK)
    i.cancel_all.click(generation.cancel, browser, o.info, queue=False, api_name="cancel")
    o.reuse_seed.click(settings.reuse_seed, o.last_seed, [i.random_seed, i.seed], **_QUICK)

    # Beside Generate: every option the next video gets, and "Plain video" to drop them all.
    summarised = [lang, i.seed, i.random_seed, by_name["fps"], i.aspect, *i.finishing, i.model, i.interpolate_method,
                  i.crf, i.loras.text]
    gr.on([component.change for component in summarised] + [demo.load], settings.summary, summarised,
          [i.summary, i.plain], **_QUICK)
    i.plain.click(settings.plain_video, lang, [i.random_seed, *i.finishing, i.continuing, i.stop_continuing],
                  **_QUICK)

    many = page.many
    queue_many = events.QueueMany(page, tables, owners, ManyPictures(
        queue, owners, max_pictures=config.jobs.max_queued, max_upload_bytes=int(config.server.max_upload_mb * 2**20)))
    many.queue_all.click(queue_many.queue_all, [many.files, many.prompts, i.negative_prompt, *params, i.seed,
                                                 i.random_seed, owner, lang, *i.finishing[1:], i.model,
                                                 i.interpolate_method, i.crf, i.loras.text],
                         [many.summary, page.jobs.table], api_name="queue_many", concurrency_limit=2,
                         trigger_mode="once")

    tab = page.jobs
    tab.table.select(jobs.open, browser, [o.video, o.info, o.files, tab.selected, tab.message, tab.retry,
                                          o.continue_video, o.shown, tab.cancel], **_QUICK)
    tab.retry.click(jobs.retry, [tab.selected, *browser], [tab.message, tab.retry, tab.table], **_QUICK)
    tab.cancel.click(jobs.cancel, [tab.selected, *browser], [tab.message, tab.cancel, tab.table], **_QUICK)

    past.gallery.select(history.open, [past.names, lang],
                        [o.video, o.info, o.files, past.picked, past.actions, past.message, o.continue_video,
                         o.shown, past.confirm], **_QUICK)
    form = [i.image, i.prompt, i.negative_prompt, *params, i.random_seed, i.seed, i.preset, past.message, i.model,
            i.last_image, i.aspect, page.subtitle, i.model_note, *i.finishing[1:], i.interpolate_method,
            *([i.crf] if i.crf is not None else []), i.loras.text]
    continuing = [*form, i.finishing[0], i.continuing, i.stop_continuing, i.finishing_box]
    o.continue_video.click(history.continue_video, [o.shown, lang], continuing, **_QUICK)
    past.continue_video.click(history.continue_video, [past.picked, lang], continuing, **_QUICK)
    i.stop_continuing.click(history.stop_continuing, lang, [i.finishing[0], i.continuing, i.stop_continuing],
                            **_QUICK)
    # A video of the creator's own: checked and kept by the server (it may take a while: in the queue).
    bringing = events.Bringing(page, queue, owners)
    i.bring.upload(bringing.bring, [i.bring, owner, lang, i.model, by_name["resolution"], i.aspect],
                   [i.image, by_name["fps"], by_name["resolution"], *i.finishing, i.continuing, i.stop_continuing,
                    i.bring, i.aspect], concurrency_limit=2, show_progress="minimal", show_progress_on=[i.bring],
                   api_visibility="private")
    # A new picture is a new start: it is no longer a continuation.
    i.image.upload(history.stop_continuing, lang, [i.finishing[0], i.continuing, i.stop_continuing], **_QUICK)
    past.reuse.click(history.reuse_settings, [past.picked, lang], form, **_QUICK)
    past.same_seed.click(history.same_seed, [past.picked, lang], form, **_QUICK)
    # Delete asks first; the player empties when it showed the deleted video.
    past.delete.click(history.ask_delete, [past.picked, lang], [past.confirm, past.message], **_QUICK)
    past.keep.click(history.keep, lang, [past.confirm, past.message], **_QUICK)
    past.confirm_delete.click(history.delete, [past.picked, lang, o.shown],
                              [past.gallery, past.names, past.message, past.actions, past.picked, past.confirm,
                               o.video, o.files, o.continue_video, o.shown, o.info], **_QUICK)


def _wire_loras(demo: gr.Blocks, page: Page, settings: events.Settings, config: AppConfig, fetches) -> None:
    """The LoRA picker and box follow the picked model and preset; the Fast preset's download button."""
    i, lang = page.inputs, page.lang
    box = i.loras
    picking = lora_picker.LoraEvents(box, config.paths.models_dir, lambda model: settings.of(model)[0], fetches,
                                     lambda model: settings.of(model)[1].presets)
    shown = [box.box, box.picker, box.note, box.download]
    box.picker.input(picking.picked, [box.picker, box.text], box.text, **_QUICK)
    box.text.change(picking.note, [i.model, lang, box.text], [box.note, box.download], **_QUICK)
    i.model.input(picking.switched, [i.model, lang], [box.text, *shown], **_QUICK)
    i.preset.input(picking.preset, [i.preset, i.model, box.text, lang], [box.text, *shown], **_QUICK)
    for trigger in (demo.load, lang.change):  # the files on disk now, the note in the page's language
        trigger(picking.for_model, [i.model, lang, box.text], shown, **_QUICK)
    box.download.click(picking.download, [i.model, lang, box.text], shown, concurrency_limit=4,
                       api_visibility="private")


def layout_shows_workers(config: AppConfig) -> bool:
    """Whether the page shows the Workers panel: an operator's, only where several workers (or Ray) serve."""
    return config.jobs.workers != "1" or config.jobs.backend == "ray"
