"""A chat template YAML is read bounded, as a recipe is: a huge file or a pipe is refused, not read into memory."""
from __future__ import annotations

import os
import threading

import pytest

from model.chat import ChatTemplateError, get_chat_template


def test_oversized_template_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * ((2 << 20) // 10), encoding="utf-8")
    with pytest.raises(ChatTemplateError, match=r"big\.yaml.*larger than"):
        get_chat_template(str(path))


def test_endless_pipe_is_refused_after_the_limit(tmp_path):
    fifo = tmp_path / "endless.yaml"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        try:
            with open(fifo, "wb") as f:
                while not stop.is_set():
                    f.write(b"# x\n" * 4096)
        except (BrokenPipeError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        with pytest.raises(ChatTemplateError, match="larger than"):
            get_chat_template(str(fifo))
    finally:
        stop.set()
    writer.join(5)


def test_bundled_and_small_templates_still_load(tmp_path):
    assert get_chat_template("internvl2_5").name == "internvl2_5"
