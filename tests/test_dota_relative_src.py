"""DOTA given as the README writes it: ``adapt convert remote_sensing dota --src DOTA/train --out data/rs``, paths
relative to the working folder."""

from __future__ import annotations

from adapt.cli import main
from tests.test_rs_dota import make_tree, rows


def test_a_relative_src_converts_and_names_images_relative_to_it(tmp_path, monkeypatch, capsys):
    make_tree(tmp_path / "DOTA" / "train")
    (tmp_path / "DOTA" / "train" / "images" / "P0002.png").write_bytes(b"not a png")
    (tmp_path / "DOTA" / "train" / "labelTxt" / "P0002.txt").write_text("gsd:null\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "remote_sensing", "dota", "--src", "DOTA/train", "--out", "data/rs", "--no-progress",
                 "--option", "size=128", "--option", "overlap=28"]) == 0
    recs = rows(tmp_path / "data" / "rs", "train")
    assert recs and {r["meta"]["source_image"] for r in recs} == {"images/P0001.png"}
    shown = capsys.readouterr().out
    # the damaged image is named as given (relative), never by the absolute path around the data
    assert "images/P0002.png" in shown and str(tmp_path) not in shown
