"""A converter's ``dataset`` option names folders and files under ``--out``: it must stay a plain name."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from domains.base import ConvertReport, DomainError, get_domain
from domains.files import remove_unreferenced_images


def _classes(src: Path) -> Path:
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (16, 16), i * 40).save(src / cls / f"{i}.png")
    return src


@pytest.mark.parametrize("name", ["../../../victim", "..", ".", "", "a/b", "a\\b", "/abs", "x\x00y"])
def test_converter_refuses_dataset_name_leaving_out(tmp_path, name):
    from domains.medical.convert import convert_classification

    src = _classes(tmp_path / "src")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    out = tmp_path / "work" / "out"
    (tmp_path / "work").mkdir()
    with pytest.raises(DomainError, match="dataset"):
        convert_classification(src, out, dataset=name, progress=False)
    assert (victim / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*") if "src" not in p.parts)


def test_report_without_out_keeps_any_dataset_label():
    assert ConvertReport(dataset="").dataset == ""


def test_remove_unreferenced_images_stays_inside_out(tmp_path):
    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    (tmp_path / "keep.txt").write_text("precious")
    report = ConvertReport()
    with pytest.raises(ValueError, match="outside"):
        remove_unreferenced_images(report, out, "images/../../..", {"train": [{"image": "x.png"}]})
    assert (tmp_path / "keep.txt").is_file() and report.removed == []


def test_plugin_convert_passes_dataset_option(tmp_path):
    """DomainPlugin.convert's own first parameter is called dataset too: the option reached it twice (TypeError)."""
    plugin = get_domain("remote_sensing")
    with pytest.raises(DomainError, match="dataset"):
        plugin.convert("dior_rsvg", tmp_path / "src", tmp_path / "out", show_progress=False, dataset="../x")
    with pytest.raises(DomainError, match="no option 'dataset'"):  # fixed by the registration (ucmerced)
        plugin.convert("ucmerced", tmp_path / "src", tmp_path / "out", show_progress=False, dataset="x")


def test_cli_convert_dataset_option_is_one_line(tmp_path, capsys):
    from adapt.cli import main

    (tmp_path / "src").mkdir()
    code = main(["convert", "remote_sensing", "dior_rsvg", "--src", str(tmp_path / "src"), "--out",
                 str(tmp_path / "out"), "--option", "dataset=../../esc", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "dataset" in err
    assert not (tmp_path.parent / "esc").exists()


def test_converting_from_inside_out_images_never_deletes_the_source(tmp_path):
    """--src under out/images/<dataset>/: pruning an earlier run's images deleted the raw data being converted."""
    from domains.medical.convert import convert_classification

    out = tmp_path / "out"
    src = _classes(out / "images" / "classification")
    raw = sorted(p.relative_to(src) for p in src.rglob("*.png"))
    report = convert_classification(src, out, progress=False)
    assert report.written == 6
    assert all((src / p).is_file() for p in raw)
    assert not any(p.is_relative_to(src) and p.relative_to(src) in raw for p in report.removed)
