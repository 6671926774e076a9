"""DOTA label files without objects: a header alone (v1.0 / v1.5 ``gsd:<m>``, v2.0 ``gsd:null``) is a scene with
nothing in it, asked "no" presence questions; an empty file or one of malformed lines only is skipped by name."""

from __future__ import annotations

import pytest

from domains.remote_sensing.dota import convert_dota
from tests.test_rs_dota import make_tree, rows


@pytest.mark.parametrize("header", [
    "imagesource:GoogleEarth\ngsd:0.146343590398\n",  # v1.0
    "imagesource:GoogleEarth\r\ngsd:0.1\r\n",  # v1.5, Windows line ends
    "\ufeffimagesource:GF2\ngsd:null\n\n",  # v2.0 (gsd unknown), a BOM and a trailing blank line
    "gsd:null\n",  # one header line is enough
])
def test_a_header_only_label_file_is_a_scene_without_objects(tmp_path, header):
    src = make_tree(tmp_path / "dota")  # P0001 holds a small vehicle, a plane and a ship
    make_tree(src, header, name="P0002", size=(120, 100))
    out = tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, negatives=100, progress=False)
    assert report.total_skipped == 0, report.examples
    empty = [r for r in rows(out) if r["meta"]["source_image"] == "images/P0002.png"]
    assert {(r["meta"]["name"], r["answer"]) for r in empty} == {
        ("plane", "no"), ("ship", "no"), ("small-vehicle", "no")}
    assert all(r["meta"]["question_type"] == "presence" for r in empty)
    assert (out / empty[0]["image"]).is_file()


@pytest.mark.parametrize("labels, detail", [
    ("", "empty: no imagesource: / gsd: header and no object lines"),
    ("\n  \n", "empty: no imagesource: / gsd: header and no object lines"),
    ("imagesource:GoogleEarth\ngsd:0.1\n1 2 3 plane 0\n", "no object line could be read"),
    ("0 0 10 0 10 10 0 10 7 0\n", "no object line could be read"),
])
def test_an_empty_or_malformed_label_file_is_still_skipped(tmp_path, labels, detail):
    src = make_tree(tmp_path / "dota")
    make_tree(src, labels, name="P0002", size=(120, 100))
    out = tmp_path / "out"
    report = convert_dota(src, out, size=128, overlap=28, negatives=100, progress=False)
    assert report.skipped.get("no objects") == 1
    assert report.examples["no objects"][0].startswith("labelTxt/P0002.txt: " + detail)
    if labels.strip():  # each bad line is named too
        assert "labelTxt/P0002.txt:" in " ".join(report.examples["malformed label line"])
    assert not [r for r in rows(out) if r["meta"]["source_image"] == "images/P0002.png"]


def test_an_image_without_a_label_file_is_reported(tmp_path):
    src = make_tree(tmp_path / "dota")
    make_tree(src, "gsd:null\n", name="P0002", size=(60, 50))
    (src / "labelTxt" / "P0002.txt").unlink()
    (src / "images" / "._P0001.png").write_bytes(b"AppleDouble")  # a Mac zip's companion file: not an image
    report = convert_dota(src, tmp_path / "out", size=128, overlap=28, progress=False)
    assert report.skipped == {"no label file": 1}
    assert report.examples["no label file"] == [
        "images/P0002.png: no labelTxt/P0002.txt, so it is not converted (a scene without objects needs its header "
        "lines)"]
