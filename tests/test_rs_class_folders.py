"""Classification folders: a class folder holding only folders (--src a level too high, or a nested class) says
so, instead of the bare 'holds no images' that had users look for missing files."""

from __future__ import annotations

from PIL import Image

from domains.remote_sensing.convert import convert_classification


def test_a_class_folder_of_folders_names_them(tmp_path):
    src = tmp_path / "raw"
    for folder in ("forest", "urban/residential", "urban/industrial", "Empty/.cache"):
        (src / folder).mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(src / "forest" / f"f{i}.png")
    report = convert_classification(src, tmp_path / "out", progress=False)
    assert report.skipped == {"empty class folder": 2}
    empty, urban = report.examples["empty class folder"]
    assert empty == "Empty: class folder holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff)"
    assert urban == ("urban: class folder holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff); it holds folders "
                     "(industrial, residential), which are not read: the images of a class go directly in its folder")
