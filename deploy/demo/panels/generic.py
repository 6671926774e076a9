"""The generic panel: any domain through its ``demo_hooks`` (or plain images for ``general``).

What to upload (the domain's ``upload_help``), file upload (several files allowed), the domain's options,
question, streamed answer, gallery of the images with the answer's boxes drawn, an info table and warnings.
The upload stays staged (privately, under neutral names) while the page is open, so changing an option
(driving's view, remote sensing's bands) reads it again and the model always gets the layout shown. The
handlers are plain functions so they can be tested without a browser; :func:`build` wires them to Gradio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from PIL import Image

from deploy.demo.hooks import UploadResult, hooks_for, name_tag_for, normalize_upload, options_for, upload_help_for
from deploy.demo.page import (
    DISCLAIMER,
    REFUSED_BUTTON,
    DemoSettings,
    error_md,
    escape_md,
    info_md,
    notice_md,
    refused_md,
    warnings_md,
)
from deploy.demo.panels import stream_and_draw
from deploy.demo.session import ModelSession
from deploy.demo.uploads import StagedUpload, UploadError, readable_error, stage_uploads

log = logging.getLogger(__name__)

__all__ = ["Loaded", "answer_stream", "build", "load_files", "read_files", "reread", "title"]


def title(plugin) -> str:
    if plugin is None or plugin.name == "general":
        return "images"
    return plugin.name.replace("_", " ")


@dataclass
class Loaded:
    """An upload kept for the page: its private staged copy, the options it was read with and what they
    gave (`result`), or why they gave nothing (`error`)."""

    staged: StagedUpload
    options: dict[str, Any] = field(default_factory=dict)
    result: UploadResult | None = None
    error: str = ""

    def close(self) -> None:
        self.staged.cleanup()


def _read_staged(staged: StagedUpload, read_upload: Callable[..., dict], options: Mapping[str, Any]) -> UploadResult:
    try:
        return normalize_upload(read_upload(list(staged.paths), **options), len(staged.paths))
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a readable line
        raise UploadError(readable_error(exc, staged)) from None


def load_files(files, read_upload: Callable[..., dict], *, max_bytes: int,
               name_tag: Callable[[str], str | None] | None = None, session: str | None = None, **options) -> Loaded:
    """Stage the uploaded files under neutral names and read them with the hook; the staged copy is kept
    (``Loaded.close`` frees it, and so does the browser `session`'s end). Raises :class:`UploadError` with a
    message fit for the page."""
    staged = stage_uploads(files, max_bytes=max_bytes, name_tag=name_tag, session=session)
    try:
        return Loaded(staged, dict(options), _read_staged(staged, read_upload, options))
    except BaseException:
        staged.cleanup()
        raise


def reread(loaded: Loaded, read_upload: Callable[..., dict], **options) -> Loaded:
    """The same staged upload read again with new `options` (an error is kept in ``Loaded.error``)."""
    try:
        return Loaded(loaded.staged, dict(options), _read_staged(loaded.staged, read_upload, options))
    except UploadError as err:
        return Loaded(loaded.staged, dict(options), None, str(err))


def read_files(files, read_upload: Callable[..., dict], *, max_bytes: int,
               name_tag: Callable[[str], str | None] | None = None, **options) -> UploadResult:
    """Stage, read and validate the uploaded files, then free the staged copy (the images are in memory)."""
    loaded = load_files(files, read_upload, max_bytes=max_bytes, name_tag=name_tag, **options)
    loaded.close()
    return loaded.result


def answer_stream(session: ModelSession, draw_answer: Callable[..., list], question: str,
                  upload: UploadResult | None, **options) -> Iterator[tuple[str, list[Image.Image] | None, str]]:
    """Yield ``(answer so far, drawn images or None, notice)``; the last item carries the drawn images (the
    answer's boxes on each image). The notice is page markdown naming what failed — the question, the
    generation or only the drawing — or saying that a looping answer was cut; "" when all went well.
    `options` go to `draw_answer` (the ones the images were read with)."""
    yield from stream_and_draw(session, question, upload.images if upload else [], upload.prompt if upload else None,
                               lambda images, text: draw_answer(images, text, **options), "marks")


def _columns(n: int) -> int:
    return 1 if n == 1 else 3 if n in (3, 6, 9) else 2


def _gallery(images: Sequence[Image.Image], labels: Sequence[str]) -> dict:
    """A gallery update: the images with their labels, one column for a single (3:1 stitched) image."""
    return gr.update(value=list(zip(images, labels)), columns=_columns(len(images)))


def _choice(name: str, spec: Mapping[str, Any]):
    value = spec.get("default", spec["choices"][0])
    label, info = spec.get("label", name), spec.get("info")
    if spec.get("custom"):
        return gr.Dropdown(spec["choices"], value=value, label=label, info=info, allow_custom_value=True)
    return gr.Radio(spec["choices"], value=value, label=label, info=info)


def build(session: ModelSession, plugin, settings: DemoSettings) -> None:
    read_upload, draw_answer = hooks_for(plugin)
    name_tag = name_tag_for(plugin)
    option_specs = options_for(plugin)
    needs_upload = plugin is not None and plugin.name != "general"
    what = title(plugin)
    gr.Markdown(f"## pocket-adapt · {escape_md(what)}\nModel: **{escape_md(session.name)}**, "
                f"{escape_md(session.sampling_note)} · {escape_md(DISCLAIMER)}")
    state = gr.State(None, delete_callback=lambda loaded: loaded.close() if loaded else None)
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown(f"**What to upload:** {escape_md(upload_help_for(plugin))}", elem_id="pa-upload-help",
                        elem_classes=["pa-notice"])
            upload = gr.UploadButton(f"Upload file(s) (≤ {settings.max_upload_mb:g} MB)", file_count="multiple",
                                     variant="secondary")
            refused = gr.Button("upload refused", elem_id=REFUSED_BUTTON)  # hidden; the page presses it (HTTP 413)
            choosers = [_choice(name, spec) for name, spec in option_specs.items()]
            status = gr.Markdown("No file uploaded yet.", elem_classes=["pa-notice"])
            question = gr.Textbox(label="Question", lines=2, placeholder="Ask about the uploaded image(s)")
            ask = gr.Button("Ask", variant="primary")
            notice = gr.Markdown("", elem_classes=["pa-notice"])
            answer = gr.Textbox(label="Answer", lines=5, interactive=False)
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Images sent to the model (answer marks drawn)", columns=2, format="png",
                                 interactive=False, object_fit="contain", elem_classes=["pa-gallery"],
                                 buttons=["download", "fullscreen"])
            warnings = gr.Markdown("")
            info = gr.Markdown("")

    def chosen(values) -> dict:
        return dict(zip(option_specs, values))

    def shown(loaded: Loaded):
        """(status, gallery, info, warnings) for a loaded upload."""
        if loaded.result is None:
            return (error_md(loaded.error, "Could not read the upload with these options"), gr.update(value=None),
                    "", "")
        result = loaded.result
        n = len(result.images)
        line = f"**Ready:** {escape_md(', '.join(result.labels))} ({n} image{'s' if n != 1 else ''})"
        return line, _gallery(result.images, result.labels), info_md(result.info), warnings_md(result.warnings)

    def on_upload(request: gr.Request, files, old: Loaded | None, *values):  # Gradio fills `request` in
        if old is not None:
            old.close()
        try:
            loaded = load_files(files, read_upload, max_bytes=settings.max_upload_bytes, name_tag=name_tag,
                                session=request.session_hash if request else None, **chosen(values))
        except UploadError as err:
            return None, error_md(str(err)), gr.update(value=None), "", "", "", ""
        return (loaded, *shown(loaded), "", "")

    def on_refused(old: Loaded | None):
        if old is not None:
            old.close()
        return None, refused_md(settings.max_upload_mb, old is not None), gr.update(value=None), "", "", "", ""

    def on_option(current: Loaded | None, *values):
        if current is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        loaded = reread(current, read_upload, **chosen(values))
        return (loaded, *shown(loaded), "")

    def on_ask(q, current: Loaded | None, *values):
        keep = (gr.skip(),) * 4  # state, status, info, warnings
        if current is None and needs_upload:
            yield "", gr.skip(), notice_md("upload a file first: nothing was sent to the model.", "No upload yet"), *keep
            return
        if current is not None and current.options != chosen(values):  # an option changed and was not read yet
            current = reread(current, read_upload, **chosen(values))
            status_md, gallery_value, info_value, warnings_value = shown(current)
            keep = (current, status_md, info_value, warnings_value)
            yield "", gallery_value, "", *keep
        if current is not None and current.result is None:
            yield "", gr.skip(), error_md(current.error, "Could not read the upload with these options"), *keep
            return
        upload_result = current.result if current else None
        for n, (text, drawn, note) in enumerate(
                answer_stream(session, draw_answer, q, upload_result, **(current.options if current else {}))):
            images = gr.skip() if drawn is None or upload_result is None else _gallery(drawn, upload_result.labels)
            if current is None and drawn is not None and not note:
                note = notice_md("no image was uploaded: the answer comes from the question alone.")
            yield text, images, note, *(keep if n == 0 else (gr.skip(),) * 4)

    upload.upload(on_upload, inputs=[upload, state, *choosers],
                  outputs=[state, status, gallery, info, warnings, answer, notice])
    refused.click(on_refused, inputs=[state], outputs=[state, status, gallery, info, warnings, answer, notice])
    for chooser in choosers:
        chooser.input(on_option, inputs=[state, *choosers], outputs=[state, status, gallery, info, warnings, notice],
                      trigger_mode="always_last")
    for event in (ask.click, question.submit):
        event(on_ask, inputs=[question, state, *choosers],
              outputs=[answer, gallery, notice, state, status, info, warnings], show_progress="minimal")
