"""How the training data reader reports an image file it cannot use."""

from __future__ import annotations

import json

from adapt.data import SkipLog, SourceSpec, read_source


def test_an_empty_image_file_is_skipped_as_empty(tmp_path):
    """The data reader measures images with upright_size, which said Pillow's "cannot identify image file" for a
    file of 0 bytes, while load_image (chat, eval, the demo) says "empty file"."""
    (tmp_path / "blank.png").write_bytes(b"")
    turns = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "Nothing."}]
    ann = tmp_path / "t.jsonl"
    ann.write_text(json.dumps({"image": "blank.png", "conversations": turns}) + "\n")
    skips = SkipLog()
    assert list(read_source(SourceSpec("d", ann), skips)) == []
    [(where, detail)] = skips.examples("d", "unreadable image")
    assert where == f"{ann}:1" and detail == f"{tmp_path / 'blank.png'}: empty file"
