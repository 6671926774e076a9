"""The generic panel: any domain through its ``demo_hooks`` (or plain images for ``general``).

File upload (several files allowed), question, streamed answer, gallery of the images with the answer's
boxes drawn, an info table and warnings. The handlers are plain functions so they can be tested without a
browser; :func:`build` wires them to Gradio components.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import gradio as gr
from PIL import Image

from deploy.demo.hooks import UploadResult, hooks_for, normalize_upload, options_for
from deploy.demo.page import (
    CLEAR_FILE_INPUTS,
    DISCLAIMER,
    DemoSettings,
    error_md,
    escape_md,
    info_md,
    warnings_md,
)
from deploy.demo.session import ModelSession
from deploy.demo.uploads import UploadError, readable_error, stage_uploads

log = logging.getLogger(__name__)

__all__ = ["answer_stream", "build", "read_files", "title"]


def title(plugin) -> str:
    if plugin is None or plugin.name == "general":
        return "images"
    return plugin.name.replace("_", " ")


def read_files(files, read_upload: Callable[..., dict], *, max_bytes: int, **options) -> UploadResult:
    """Stage the uploaded files under neutral names, read them with the hook, validate the result.

    Raises :class:`UploadError` with a message fit for the page.
    """
    staged = stage_uploads(files, max_bytes=max_bytes)
    try:
        return normalize_upload(read_upload(list(staged.paths), **options), len(staged.paths))
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a readable line
        raise UploadError(readable_error(exc, staged)) from None
    finally:
        staged.cleanup()  # the images are in memory now


def answer_stream(session: ModelSession, draw_answer: Callable[..., list], question: str,
                  upload: UploadResult | None, **options) -> Iterator[tuple[str, list[Image.Image] | None, str]]:
    """Yield ``(answer so far, drawn images or None, error message)``; the last item carries the drawn
    images (the answer's boxes on each image) or an error. `options` go to `draw_answer`."""
    images = upload.images if upload else []
    text = ""
    try:
        for text in session.stream(question, images, prompt=upload.prompt if upload else None):
            yield text, None, ""
    except ValueError as exc:
        yield text, None, str(exc)
        return
    except Exception as exc:
        log.error("demo: generation failed", exc_info=exc)
        yield text, None, f"generation failed ({type(exc).__name__}); see the server log"
        return
    if not images:
        yield text, [], ""
        return
    try:
        drawn = list(draw_answer(images, text, **options))
    except Exception as exc:  # a drawing bug must not hide the answer
        log.error("demo: drawing the answer failed", exc_info=exc)
        yield text, list(images), f"the answer's boxes could not be drawn ({type(exc).__name__})"
        return
    yield text, drawn, ""


def _gallery(images: Sequence[Image.Image], labels: Sequence[str]) -> list[tuple[Image.Image, str]]:
    return list(zip(images, labels))


def build(session: ModelSession, plugin, settings: DemoSettings) -> None:
    read_upload, draw_answer = hooks_for(plugin)
    option_specs = options_for(plugin)
    what = title(plugin)
    gr.Markdown(f"## pocket-adapt · {escape_md(what)}\nModel: **{escape_md(session.name)}** · {escape_md(DISCLAIMER)}")
    state = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.UploadButton(f"Upload file(s) (≤ {settings.max_upload_mb:g} MB)", file_count="multiple",
                                     variant="secondary")
            choosers = [gr.Radio(spec["choices"], value=spec.get("default", spec["choices"][0]),
                                 label=spec.get("label", name)) for name, spec in option_specs.items()]
            status = gr.Markdown("No file uploaded yet.", elem_classes=["pa-notice"])
            question = gr.Textbox(label="Question", lines=2, placeholder="Ask about the uploaded image(s)")
            ask = gr.Button("Ask", variant="primary")
            notice = gr.Markdown("", elem_classes=["pa-notice"])
            answer = gr.Textbox(label="Answer", lines=5, interactive=False)
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Images (answer boxes drawn)", columns=2, format="png", interactive=False,
                                 buttons=["download", "fullscreen"])
            warnings = gr.Markdown("")
            info = gr.Markdown("")

    def chosen(values) -> dict:
        return dict(zip(option_specs, values))

    def on_upload(files, *values):
        try:
            result = read_files(files, read_upload, max_bytes=settings.max_upload_bytes, **chosen(values))
        except UploadError as err:
            return None, error_md(str(err)), [], "", "", ""
        n = len(result.images)
        line = f"**Ready:** {escape_md(', '.join(result.labels))} ({n} image{'s' if n != 1 else ''})"
        return (result, line, _gallery(result.images, result.labels), info_md(result.info),
                warnings_md(result.warnings), "")

    def on_ask(q, current: UploadResult | None, *values):
        for text, drawn, error in answer_stream(session, draw_answer, q, current, **chosen(values)):
            images = gr.skip() if drawn is None or current is None else _gallery(drawn, current.labels)
            yield text, images, error_md(error, "Could not answer") if error else ""

    upload.upload(on_upload, inputs=[upload, *choosers], outputs=[state, status, gallery, info, warnings, answer]
                  ).then(None, js=CLEAR_FILE_INPUTS)
    for event in (ask.click, question.submit):
        event(on_ask, inputs=[question, state, *choosers], outputs=[answer, gallery, notice], show_progress="minimal")
