"""`adapt chat` takes at most model.limits.MAX_IMAGES images, as the demo does: each was read and tiled (a shell
glob of thousands of photos) before the context check refused the prompt."""

from __future__ import annotations

from adapt.cli import main
from model.limits import MAX_IMAGES


def test_more_images_than_one_question_takes_are_refused_before_any_is_read(tmp_path, monkeypatch, capsys):
    import adapt.cli as cli

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "_load", no_model)
    images = [str(tmp_path / f"missing-{k}.png") for k in range(MAX_IMAGES + 1)]  # never opened
    argv = ["chat", "What is shown?"] + [arg for path in images for arg in ("--image", path)]
    assert main(argv) == 1
    assert f"{MAX_IMAGES + 1} images: at most {MAX_IMAGES} go into one question" in capsys.readouterr().err
