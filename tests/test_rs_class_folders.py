"""Classification folders: a class folder without images anywhere below it says which folders it holds, instead of
the bare 'holds no images' that had users look for missing files; images nested in a class folder are read as that
class (NWPU-RESISC45 mirrors, ``class/site/*.tif``) with the nested option and named without it (a --src one level
too high looks the same), links out of the source refused; split folders refused."""

from __future__ import annotations

import pytest
from PIL import Image

from domains.base import DomainError
from domains.remote_sensing.convert import convert_classification
from tests.deps import require


def test_a_class_folder_of_folders_names_them(tmp_path):
    src = tmp_path / "raw"
    for folder in ("forest", "urban/residential", "urban/industrial", "Empty/.cache"):
        (src / folder).mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(src / "forest" / f"f{i}.png")
    report = convert_classification(src, tmp_path / "out", progress=False)
    assert report.skipped == {"empty class folder": 2}
    empty, urban = report.examples["empty class folder"]
    assert empty == "Empty: class folder holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .jp2, .img)"
    assert urban == ("urban: class folder holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .jp2, .img), "
                     "nor do its folders (industrial, residential)")


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 0, 0)).save(path)


def _records(report):
    import json

    return [json.loads(line) for split in report.outputs.values() for line in split.read_text().splitlines()]


def test_nested_images_are_read_as_the_top_folder_class(tmp_path):
    src = tmp_path / "raw"
    _png(src / "forest" / "f0.png")
    _png(src / "forest" / "site1" / "a.png", 1)
    _png(src / "forest" / "site2" / "a.png", 2)  # same name in two sites: two outputs
    _png(src / "forest" / "site2" / "deep" / "b.png", 3)
    _png(src / "forest" / ".cache" / "hidden.png")  # hidden folders stay unread
    _png(src / "urban" / "tiles" / "u.png", 4)
    report = convert_classification(src, tmp_path / "out", test_fraction=0, nested=True, progress=False)
    recs = _records(report)
    assert sorted((r["label"], r["meta"]["source"]) for r in recs) == [
        ("forest", "forest/f0.png"), ("forest", "forest/site1/a.png"), ("forest", "forest/site2/a.png"),
        ("forest", "forest/site2/deep/b.png"), ("urban", "urban/tiles/u.png")]
    assert len({r["image"] for r in recs}) == 5 and len({r["id"] for r in recs}) == 5
    for r in recs:  # each output shows its own source's pixels
        with Image.open(tmp_path / "out" / r["image"]) as im, Image.open(src / r["meta"]["source"]) as orig:
            assert im.getpixel((0, 0)) == orig.getpixel((0, 0))
    assert all(r["options"] == ["forest", "urban"] for r in recs)
    assert report.warnings == {"class images in subfolders": 2} and report.skipped == {}
    assert "forest: 3 of its 4 images lie in its folders (site1, site2) and are read as class 'forest'" in \
        report.warning_examples["class images in subfolders"]


def test_links_out_of_the_source_are_refused_and_linked_folders_not_entered(tmp_path):
    src, outside = tmp_path / "raw", tmp_path / "elsewhere"
    _png(src / "forest" / "f0.png")
    _png(src / "urban" / "u0.png")
    _png(outside / "secret.png", 9)
    _png(outside / "dir" / "s.png", 9)
    (src / "forest" / "site").mkdir()
    (src / "forest" / "site" / "leak.png").symlink_to(outside / "secret.png")
    (src / "forest" / "linked").symlink_to(outside / "dir", target_is_directory=True)
    (src / "forest" / "loop").symlink_to(src / "forest", target_is_directory=True)
    report = convert_classification(src, tmp_path / "out", test_fraction=0, nested=True, progress=False)
    assert sorted(r["meta"]["source"] for r in _records(report)) == ["forest/f0.png", "urban/u0.png"]
    assert report.skipped == {"path escapes data root": 2, "symlinked folder": 1}
    assert any("forest/loop" in e for e in report.examples["symlinked folder"])


def test_split_folders_in_place_of_classes_are_refused(tmp_path):
    import pytest

    from domains.base import DomainError

    src = tmp_path / "raw"
    for split in ("train", "test"):
        _png(src / split / "forest" / "f.png")
        _png(src / split / "urban" / "u.png")
    with pytest.raises(DomainError, match=r"holds split folders \(test, train\), not class folders"):
        convert_classification(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    report = convert_classification(src / "train", tmp_path / "out", test_fraction=0, progress=False)
    assert sorted(r["label"] for r in _records(report)) == ["forest", "urban"]


def test_images_without_class_folders_are_refused_naming_them(tmp_path):
    import pytest

    from domains.base import DomainError

    src = tmp_path / "forest"  # --src one class folder
    for i in range(4):
        _png(src / f"f{i}.png")
    with pytest.raises(DomainError, match=r"holds 4 image\(s\) \(f0.png, f1.png, f2.png, ...\) but no class folders"):
        convert_classification(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_without_nested_images_below_a_class_folder_are_named_not_read(tmp_path):
    """Without the option, data-set folders under a --src one level too high would be read as classes."""
    src = tmp_path / "raw"
    _png(src / "forest" / "f0.png")
    _png(src / "forest" / "site1" / "a.png", 1)
    _png(src / "urban" / "tiles" / "u.png", 4)
    _png(src / "water" / "w.png", 5)
    (src / "water" / "linked").symlink_to(tmp_path, target_is_directory=True)  # not entered, not reported
    report = convert_classification(src, tmp_path / "out", test_fraction=0, progress=False)
    assert sorted(r["meta"]["source"] for r in _records(report)) == ["forest/f0.png", "water/w.png"]
    assert report.skipped == {"empty class folder": 1} and report.warnings == {"class subfolders not read": 1}
    assert "urban: class folder holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .jp2, .img); its folders " \
        "(tiles) hold 1 image(s), not read: pass --option nested=true" in report.examples["empty class folder"][0]
    assert "forest: its folders (site1) hold 1 image(s), not read" in \
        report.warning_examples["class subfolders not read"][0]


def test_class_folders_that_give_one_label_are_refused_naming_both(tmp_path):
    """``AnnualCrop`` and ``annual_crop`` both gave "annual crop": their images merged into one class unsaid."""
    src = tmp_path / "raw"
    for folder in ("AnnualCrop", "Forest", "annual_crop"):
        _png(src / folder / "a.png")
    with pytest.raises(DomainError, match=r"class folders 'AnnualCrop' and 'annual_crop' both give the label "
                                          r"'annual crop'"):
        convert_classification(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_distinct_labels_are_read(tmp_path):
    src = tmp_path / "raw"
    for folder in ("AnnualCrop", "PermanentCrop", "rainforest", "forest"):
        _png(src / folder / "a.png")
    report = convert_classification(src, tmp_path / "out", test_fraction=0, progress=False)
    assert sorted(r["label"] for r in _records(report)) == ["annual crop", "forest", "permanent crop", "rainforest"]


def test_jpeg_2000_and_erdas_imagine_rasters_are_read_and_a_bad_one_is_named(tmp_path):
    """The plugin reads .jp2 / .img through rasterio, but the converters' own suffix list stopped at .tif / .tiff:
    such images in a class folder were left out without a word."""
    np = require("numpy")
    rasterio = require("rasterio")

    src = tmp_path / "raw"
    _png(src / "forest" / "f0.png")
    (src / "urban").mkdir()
    for name, driver, value in (("u0.jp2", "JP2OpenJPEG", 100), ("u1.img", "HFA", 200)):
        with rasterio.open(src / "urban" / name, "w", driver=driver, width=8, height=8, count=3, dtype="uint8",
                           transform=rasterio.transform.from_origin(0, 8, 1, 1)) as dst:
            dst.write(np.full((3, 8, 8), value, np.uint8))
    (src / "urban" / "u2.img").write_bytes(b"a disk image, no raster")
    report = convert_classification(src, tmp_path / "out", test_fraction=0, progress=False)
    recs = {r["meta"]["source"]: r for r in _records(report)}
    assert sorted(recs) == ["forest/f0.png", "urban/u0.jp2", "urban/u1.img"]
    for name, value in (("urban/u0.jp2", 100), ("urban/u1.img", 200)):
        with Image.open(tmp_path / "out" / recs[name]["image"]) as im:
            assert im.getpixel((4, 4)) == (value,) * 3
    assert report.skipped == {"unreadable image": 1}
    assert "u2.img" in report.examples["unreadable image"][0]
