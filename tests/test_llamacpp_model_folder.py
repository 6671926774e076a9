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
