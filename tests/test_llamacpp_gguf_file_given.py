"""`adapt chat --runtime llamacpp --model EXPORT/<name>-<type>.gguf` (a file of the export, as llama.cpp's own tools
take it): the message said only "not a folder"; it now names the folder to give."""

import pytest

from deploy.llamacpp import LlamaCppError
from deploy.llamacpp.runtime import ExportFolder


@pytest.mark.parametrize("name", ["pocket-tiny-f16.gguf", "mmproj-pocket-tiny-f16.gguf"])
def test_a_gguf_file_given_names_its_folder(tmp_path, name):
    file = tmp_path / name
    file.write_bytes(b"GGUF")
    with pytest.raises(LlamaCppError, match=rf"{file}: a file; give the folder it is in, --model {tmp_path}$"):
        ExportFolder.open(file)


def test_a_missing_path_is_still_not_a_folder(tmp_path):
    with pytest.raises(LlamaCppError, match="not a folder; give the folder `adapt export --format gguf` wrote"):
        ExportFolder.open(tmp_path / "none.gguf")
