"""adapt convert refuses a --src inside --out's image folder: the converter would write its images into its source."""

from pathlib import Path

import pytest

from adapt.cli import main


@pytest.mark.parametrize("inside", ["images", "images/ucmerced", "images/ucmerced/raw"])
def test_a_source_inside_the_outputs_image_folder_is_refused(tmp_path: Path, capsys, inside):
    out = tmp_path / "out"
    src = out / inside
    src.mkdir(parents=True)
    (src / "keep.txt").write_text("the user's data\n")
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(src), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("adapt convert: error:")
    assert f"--src {src} lies inside {out / 'images'}" in err and f"--out {out}" in err
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written == [src / "keep.txt"], "nothing written before the refusal"


def test_a_source_beside_the_image_folder_is_not_refused_by_this_check(tmp_path: Path, capsys):
    out = tmp_path / "out"
    (out / "raw").mkdir(parents=True)
    main(["convert", "remote_sensing", "ucmerced", "--src", str(out / "raw"), "--out", str(out)])
    assert "lies inside" not in capsys.readouterr().err
