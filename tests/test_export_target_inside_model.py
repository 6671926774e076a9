"""deploy.hf.check_target: `adapt export --force --out MODEL/adapter` replaced the adapter's weights (an export owns
`*.safetensors` in its target), so a folder of the model being exported that holds files is refused, --force too."""

from pathlib import Path

import pytest

from deploy.hf import ExportError, check_target


def test_a_non_empty_folder_inside_the_model_is_refused_even_with_force(tmp_path: Path):
    model = tmp_path / "final"
    (model / "adapter").mkdir(parents=True)
    (model / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    with pytest.raises(ExportError, match="adapter: a folder of the model being exported"):
        check_target(model / "adapter", True, model)
    assert (model / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"


def test_a_new_or_empty_folder_inside_the_model_and_other_folders_are_taken(tmp_path: Path):
    model = tmp_path / "final"
    (model / "empty").mkdir(parents=True)
    check_target(model / "gguf", True, model)  # not there yet
    check_target(model / "empty", True, model)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.safetensors").write_bytes(b"x")
    check_target(tmp_path / "old", True, model)  # another folder: --force replaces what an export owns there
    with pytest.raises(ExportError, match="not empty"):
        check_target(tmp_path / "old", False, model)
