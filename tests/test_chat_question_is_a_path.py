"""`adapt chat DIR --image X` asked the default model the question "DIR"; a path where the question goes is named."""

from __future__ import annotations

import pytest

from adapt.cli import main


def test_a_checkpoint_folder_given_as_the_question_is_pointed_at_model(tmp_path, capsys):
    """It loaded pocket-tiny and printed its answer to the question '/…/final', the user's model never read."""
    final = tmp_path / "final"
    final.mkdir()
    assert main(["chat", str(final), "--image", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert f"--model {final}" in err and "not a question" in err


def test_an_image_given_as_the_question_is_pointed_at_image(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG")
    assert main(["chat", str(photo)]) == 1
    assert f"--image {photo}" in capsys.readouterr().err


@pytest.mark.parametrize("question", ["What is in the picture?", "final"])
def test_a_question_that_names_no_existing_path_is_asked(question, tmp_path, monkeypatch, capsys):
    import adapt.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_chat_pytorch", lambda args, images: print(f"asked {args.question}") or 0)
    assert main(["chat", question]) == 0
    assert f"asked {question}" in capsys.readouterr().out


def test_a_question_too_long_for_a_file_name_is_asked(monkeypatch, capsys):
    import adapt.cli as cli

    monkeypatch.setattr(cli, "_chat_pytorch", lambda args, images: print("asked") or 0)
    assert main(["chat", "red square " * 100]) == 0 and "asked" in capsys.readouterr().out
    assert main(["chat", "a\0b"]) == 0


def test_a_question_of_several_words_is_asked_even_where_it_names_a_path(tmp_path, monkeypatch, capsys):
    """Only a one-word 'question' is taken for a misplaced path: a sentence is asked whatever the folder holds."""
    import adapt.cli as cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "is it red").mkdir()
    monkeypatch.setattr(cli, "_chat_pytorch", lambda args, images: print(f"asked {args.question}") or 0)
    assert main(["chat", "is it red"]) == 0
    assert "asked is it red" in capsys.readouterr().out


@pytest.mark.parametrize("question", ["shot.jpg", "scans/ct_01.DCM", "tile.tif"])
def test_a_missing_picture_given_as_the_question_is_refused(question, tmp_path, monkeypatch, capsys):
    """`adapt chat --model m shot.jpg` (a typo, or no --image) asked the model the question 'shot.jpg', exit 0."""
    import adapt.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_chat_pytorch", lambda args, images: print(f"asked {args.question}") or 0)
    assert main(["chat", question]) == 1
    out, err = capsys.readouterr()
    assert "asked" not in out and f"{question!r} names a picture, but no such file exists" in err and "--image" in err
    assert main(["chat", "What is in shot.jpg?"]) == 0  # a sentence mentioning a file name is a question
