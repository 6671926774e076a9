"""Which error texts reach the demo page: a PocketAdaptError's (written for users: a refused question, an upload or
a reader's own error) as it is; any other error's text may quote inputs (a patient's name in a path or a header), so
the page shows its type and a reference, and the server log holds the rest under that reference."""

from __future__ import annotations

import errno

from PIL import Image

from tests.deps import require

require("gradio")

SECRET = "/secret/DOE_JANE/IM0001.dcm"


class Study:  # a loaded PNG, as medical.ask sees it
    staged = None

    def model_inputs(self, index, n, window):
        return [Image.new("RGB", (32, 32))], ["upload 1"], None


def raising(exc: BaseException):
    class Session:
        def stream(self, question, images, prompt=None):
            raise exc
            yield ""  # a generator, as ModelSession.stream is

    return Session()


def logged(caplog, note: str, secret: str) -> bool:
    ref = note.split("reference ")[-1].rstrip(".")
    return any(ref in r.getMessage() and secret in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def notes(session) -> list[str]:
    from deploy.demo.hooks import default_draw_answer
    from deploy.demo.panels import medical
    from deploy.demo.panels.generic import answer_stream

    *_, (_, drawn, note) = answer_stream(session, default_draw_answer, "What is shown?", None)
    *_, (_, medical_drawn, _, medical_note) = medical.ask(session, "What is shown?", Study())
    assert drawn is None and medical_drawn is None
    return [note, medical_note]


def test_an_unexpected_error_asking_shows_its_type_and_a_reference(caplog):
    """Any ValueError's text from the session was shown as "Could not ask: <text>"."""
    for exc in (ValueError(f"cannot tile {SECRET}"), KeyError(SECRET), TypeError(SECRET)):
        for note in notes(raising(exc)):
            assert SECRET not in note and "DOE" not in note, note
            assert f"\\({type(exc).__name__}\\)" in note and "reference" in note, note  # markdown-escaped
            assert logged(caplog, note, SECRET), note


def test_a_refused_question_keeps_its_words():
    from deploy.demo.session import QuestionError
    from model.generation import PromptTooLongError

    for exc in (QuestionError("type a question first"), PromptTooLongError("the question is too long")):
        for note in notes(raising(exc)):
            assert note == f"**Could not ask:** {exc}", note


def test_session_checks_raise_question_errors():
    import pytest

    from deploy.demo.session import QuestionError, check_max_new_tokens, check_sampling, compose_question

    with pytest.raises(QuestionError, match="placeholders"):
        compose_question("Which?", 2, "only one <image>")
    with pytest.raises(QuestionError, match="max_new_tokens"):
        check_max_new_tokens(0)
    with pytest.raises(QuestionError, match="temperature"):
        check_sampling(temperature=-1)


def test_readable_error_shows_only_user_errors_and_system_reasons(caplog):
    """Any ValueError / OSError / KeyError text reached the page (a reader's message may quote header values)."""
    from deploy.demo.hooks import check_file_count
    from deploy.demo.uploads import UploadError, readable_error
    from domains.base import DomainError

    for exc in (ValueError(f"bad header in {SECRET}"), KeyError(SECRET), OSError(SECRET)):
        text = readable_error(exc)
        assert SECRET not in text and "DOE" not in text, text
        assert f"({type(exc).__name__})" in text and "reference" in text, text
        assert logged(caplog, text, SECRET), text
    assert readable_error(DomainError("no DICOM or image files among the upload")) == \
        "no DICOM or image files among the upload"
    assert readable_error(UploadError("the upload is empty")) == "the upload is empty"
    full = readable_error(OSError(errno.ENOSPC, "No space left on device", SECRET))
    assert full == "No space left on device", full  # the system's reason, never the path
    try:
        check_file_count(10**6)
    except Exception as err:  # noqa: BLE001 - its type is what is checked
        assert isinstance(err, UploadError) and "at most" in readable_error(err), err


def test_the_medical_readers_own_refusals_are_user_errors(tmp_path):
    """The medical reader refused with plain ValueErrors, whose text the page no longer shows."""
    import pytest

    require("pydicom")
    from domains.base import DomainError
    from domains.medical import read_upload
    from domains.medical.dicom import _series_choice

    note = tmp_path / "upload-1.txt"
    note.write_text("not an image")
    with pytest.raises(DomainError, match="no DICOM or image files among the upload"):
        read_upload([note])
    with pytest.raises(DomainError, match="no files uploaded"):
        read_upload([])
    with pytest.raises(DomainError, match="SeriesNumber"):
        _series_choice(1.5)
