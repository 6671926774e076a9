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
