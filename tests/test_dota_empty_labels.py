"""DOTA ``empty_labels``: the devkit's ImgSplit and mmrotate's img_split write a background patch's label file empty;
skipped by default (the message naming the option), read as a scene without objects with ``negative``; counted
either way."""

from __future__ import annotations

import pytest

from adapt.cli import main
from domains.base import DomainError
from domains.remote_sensing.dota import convert_dota
from tests.test_rs_dota import make_tree, rows

# a pre-split set: patches named as the devkit names them, object lines with no header, one background patch
PATCH = "10 20 50 20 50 60 10 60 small-vehicle 0\n70 70 100 70 100 100 70 100 ship 0\n"


def _presplit(root):
    make_tree(root, PATCH, name="P0001__1__0___0", size=(128, 128))
    make_tree(root, "", name="P0001__1__824___0", size=(128, 128))
    make_tree(root, "\n \n", name="P0001__1__0___824", size=(128, 128))  # blank lines only: empty too
    return root



def test_empty_label_files_are_skipped_by_default_naming_the_option(tmp_path):
    src, out = _presplit(tmp_path / "dota"), tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, negatives=100, progress=False)
    assert report.skipped == {"no objects": 2}
    assert "--option empty_labels=negative" in report.examples["no objects"][0]
    assert "ImgSplit" in report.examples["no objects"][0]
    assert not [r for r in rows(out) if r["meta"]["label_file"] != "labelTxt/P0001__1__0___0.txt"]


def test_empty_label_files_are_background_patches_with_negative(tmp_path):
    src, out = _presplit(tmp_path / "dota"), tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, negatives=100, empty_labels="negative", progress=False)
    assert report.total_skipped == 0, report.examples
    assert report.warnings == {"empty label file read as a scene without objects": 2}
    assert "empty_labels=negative" in report.warning_examples["empty label file read as a scene without objects"][0]
    for name in ("P0001__1__824___0", "P0001__1__0___824"):
        recs = [r for r in rows(out) if r["meta"]["label_file"] == f"labelTxt/{name}.txt"]
        assert {(r["meta"]["name"], r["answer"], r["meta"]["question_type"]) for r in recs} == {
            ("ship", "no", "presence"), ("small-vehicle", "no", "presence")}
        assert (out / recs[0]["image"]).is_file()


def test_negative_does_not_hide_a_file_of_malformed_lines(tmp_path):
    src = make_tree(tmp_path / "dota", PATCH)
    make_tree(src, "1 2 3 plane 0\n", name="P0002", size=(60, 50))
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, empty_labels="negative", progress=False)
    assert report.skipped.get("no objects") == 1 and not report.warnings.get(
        "empty label file read as a scene without objects")


def test_empty_labels_from_the_cli_and_a_wrong_value(tmp_path):
    src = _presplit(tmp_path / "dota")
    rc = main(["convert", "remote_sensing", "dota", "--src", str(src), "--out", str(tmp_path / "out"),
               "--option", "size=128", "--option", "overlap=28", "--option", "empty_labels=negative",
               "--option", "negatives=100"])
    assert rc == 0
    assert any(r["meta"]["label_file"] == "labelTxt/P0001__1__824___0.txt" for r in rows(tmp_path / "out"))
    with pytest.raises(DomainError, match="empty_labels must be one of skip, negative"):
        convert_dota(src, tmp_path / "out2", empty_labels="yes", progress=False)
