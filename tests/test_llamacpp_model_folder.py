"""`adapt chat --runtime llamacpp --model RUN/final` (the model, not its GGUF export) says how to make the export."""

import pytest

from deploy.llamacpp import LlamaCppError
from deploy.llamacpp.runtime import ExportFolder


def test_a_model_folder_given_for_its_export_names_the_export_command(tmp_path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(LlamaCppError, match=r"found no \.gguf files; export it first: adapt export -f gguf --model "):
        ExportFolder.open(final)


def test_an_empty_folder_is_not_taken_for_a_model(tmp_path):
    with pytest.raises(LlamaCppError) as err:
        ExportFolder.open(tmp_path)
    assert str(err.value).endswith("found no .gguf files")


def test_a_stale_driver_alone_says_only_it_is_rebuilt(tmp_path, monkeypatch):
    """A changed pocket_llama.cpp over the same llama.cpp rebuilds only the driver (build.sh); the message said the
    whole build's 20-40 minutes."""
    from deploy.llamacpp import VERSION, binary

    monkeypatch.setenv("POCKET_LLAMA_CPP", str(tmp_path))
    (tmp_path / "bin").mkdir()
    (tmp_path / "build").mkdir()
    (tmp_path / "bin" / "pocket-llama").write_text("")
    (tmp_path / "bin" / "BUILD").write_text(f"llama-cpp-python {VERSION}; driver 0000")
    with pytest.raises(LlamaCppError, match=r"out of date .*only pocket-llama.*a minute or two") as err:
        binary()
    assert "20-40 minutes" not in str(err.value)
    (tmp_path / "bin" / "BUILD").write_text("llama-cpp-python 0.0.1; driver 0000")
    with pytest.raises(LlamaCppError, match=r"out of date .*20-40 minutes"):
        binary()


def test_a_failed_first_request_closes_the_process(monkeypatch):
    """LlamaCppVLM asks llama.cpp for the stop tokens and a rendered probe once the model is loaded; when that
    failed (a template llama.cpp's Jinja refuses), the pocket-llama process and its scratch folder were left running
    with no object to close them (a server loading exports kept one per failure). They are closed, the error kept."""
    from types import SimpleNamespace

    import deploy.llamacpp.runtime as runtime
    from model.chat import get_chat_template

    closed = []

    class Llama:
        def __init__(self, *args, **kwargs):
            pass

        def request(self, **req):
            raise LlamaCppError("llama.cpp: cannot render the chat template")

        def close(self):
            closed.append(True)

    export = SimpleNamespace(model="m.gguf", mmproj=None, file_type=1, context=None, n_ctx=lambda wanted: wanted,
                             template=get_chat_template("vicuna_v1"))
    monkeypatch.setattr(runtime.ExportFolder, "open", classmethod(lambda cls, folder: export))
    monkeypatch.setattr(runtime, "PocketLlama", Llama)
    with pytest.raises(LlamaCppError, match="cannot render the chat template"):
        runtime.LlamaCppVLM("export")
    assert closed == [True]


@pytest.mark.parametrize("damage", ["bytes", "missing"])
def test_weights_are_checked_against_their_checksums_before_any_gguf_is_read(tmp_path, damage):
    """llama.cpp's open makes the checks ONNX and ExecuTorch make (deploy.export_sidecar.export_folder), in the
    same words: a damaged or missing weight listed in SHA256SUMS is refused before the GGUF reader sees a file."""
    from deploy.export_sidecar import export_folder
    from model.checkpoints.checksums import write_checksums

    gguf = tmp_path / "pocket-tiny-f16.gguf"
    gguf.write_bytes(b"not a gguf")  # were it read, the error would say "not a readable GGUF file"
    write_checksums(tmp_path)
    if damage == "bytes":
        gguf.write_bytes(b"not a gguf either")
    else:
        gguf.unlink()
    with pytest.raises(LlamaCppError) as err:
        ExportFolder.open(tmp_path)
    with pytest.raises(LlamaCppError) as shared:
        export_folder(tmp_path, "gguf", "GGUF", (), LlamaCppError)
    assert str(err.value) == str(shared.value)
    assert ("its bytes do not match the SHA-256" if damage == "bytes" else "is missing (copied in part?)") in str(
        err.value)


def test_a_run_stopped_while_replacing_the_export_says_so(tmp_path):
    """A folder missing because a run left its earlier one moved aside: the note ONNX and ExecuTorch give."""
    from model.loading import moved_aside, moved_aside_note

    export = tmp_path / "export"
    moved_aside(export).mkdir()
    with pytest.raises(LlamaCppError) as err:
        ExportFolder.open(export)
    assert str(err.value) == moved_aside_note(export) and "a run stopped while replacing it" in str(err.value)
