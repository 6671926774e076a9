"""`adapt domains`, `adapt convert` (with a tiny fake plugin registered here) and `adapt synthesize` + `adapt convert`
on the remote_sensing plugin's UC Merced layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapt.cli import main
from domains import base
from domains.base import ConvertReport, DomainPlugin, register_domain, unregister_domain
from domains.remote_sensing.synthetic import UCMERCED_CLASSES
from tests.converted import records
from tests.deps import require


def _fake_converter(src: Path, out: Path, **options) -> ConvertReport:
    report = ConvertReport(dataset="toy", source=src, out=out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.jsonl"
    n = int(options.get("limit", 2))
    path.write_text("".join('{"conversations": []}\n' for _ in range(n)))
    report.wrote(n)
    report.skip("bad.tif", "unreadable raster", "truncated")
    report.outputs["train"] = path
    _fake_converter.last = options
    return report


@pytest.fixture
def fake_domain():
    plugin = DomainPlugin(name="toy_domain", description="A toy domain for CLI tests.",
                          converters={"toy": _fake_converter}, metrics={"toy_task": lambda p, r, ref: {"accuracy": 1.0}})
    register_domain(plugin, overwrite=True)
    yield plugin
    unregister_domain(plugin.name)


def test_domains_lists_plugins(fake_domain, capsys):
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    assert "toy_domain: A toy domain for CLI tests." in out
    assert "converters: toy" in out and "tasks:      toy_task" in out
    assert "remote_sensing:" in out and "general:" in out


def test_domains_shows_discovery_errors(fake_domain, capsys, monkeypatch):
    monkeypatch.setattr(base, "_ERRORS", {"entry point 'broken' (x:y)": "ImportError: no module x"})
    assert main(["domains"]) == 0
    err = capsys.readouterr().err
    assert "failed to load entry point 'broken' (x:y): ImportError: no module x" in err


def test_convert_prints_report(fake_domain, tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    rc = main(["convert", "toy_domain", "toy", "--src", str(src), "--out", str(tmp_path / "out"),
               "--option", "limit=3", "--option", "split=val", "--option", "classes=[a, b]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| written | 3 | |" in out
    assert "| skipped: unreadable raster | 1 | bad.tif: truncated |" in out
    assert f"train: {tmp_path / 'out' / 'train.jsonl'}" in out
    assert _fake_converter.last == {"limit": 3, "split": "val", "classes": ["a", "b"]}
    assert (tmp_path / "out" / "train.jsonl").read_text().count("\n") == 3


@pytest.mark.parametrize("argv,needle", [
    (["convert", "nope", "toy"], "unknown domain 'nope'"),
    (["convert", "toy_domain", "nope"], "no converter for data set 'nope' (known: toy)"),
    (["convert", "toy_domain", "toy", "--option", "novalue"], "is not KEY=VALUE"),
])
def test_convert_errors(fake_domain, tmp_path, capsys, argv, needle):
    src = tmp_path / "raw"
    src.mkdir()
    rc = main([*argv, "--src", str(src), "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt convert: error:") and needle in err
    assert not (tmp_path / "out").exists()


def test_convert_missing_src(fake_domain, tmp_path, capsys):
    rc = main(["convert", "toy_domain", "toy", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert rc == 1 and "does not exist" in capsys.readouterr().err


def test_convert_ucmerced_layout(tmp_path, capsys):
    """`adapt synthesize remote_sensing` writes UC Merced's public layout (``<class>/<class>NN.tif``) and
    `adapt convert remote_sensing ucmerced` turns it into one classification record per GeoTIFF: its class
    as the answer, every class as an option, and its pixels in the PNG."""
    rasterio = require("rasterio", "the UC Merced GeoTIFFs")
    raw = tmp_path / "raw"
    assert main(["synthesize", "remote_sensing", "--out", str(raw), "--option", "kinds=[ucmerced]",
                 "--option", "n=2"]) == 0
    src = raw / "ucmerced"
    assert capsys.readouterr().out == f"ucmerced: {src}\n"
    classes = sorted(UCMERCED_CLASSES)
    tifs = sorted(src.glob("*/*.tif"))
    assert [t.relative_to(src).as_posix() for t in tifs] == [f"{c}/{c}{i:02d}.tif" for c in classes for i in range(2)]

    out = tmp_path / "out"
    assert main(["convert", "remote_sensing", "ucmerced", "--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"| written | {len(tifs)} | |" in printed and "skipped" not in printed
    outputs = [out / "ucmerced_test.jsonl", out / "ucmerced_train.jsonl"]
    assert printed.endswith(f"test: {outputs[0]}\ntrain: {outputs[1]}\n")
    recs = [r for p in outputs for r in records(p)]
    assert sorted(r["meta"]["source"] for r in recs) == [t.relative_to(src).as_posix() for t in tifs]
    question = ("<image>\nClassify the image from the following classes: " + ", ".join(classes) + ".\n"
                "Answer in one word or a short phrase.")
    for r in recs:
        tif = src / r["meta"]["source"]
        assert r["task"] == "classification" and r["answer"] == r["label"] == tif.parent.name
        assert r["conversations"] == [{"from": "human", "value": question}, {"from": "gpt", "value": r["answer"]}]
        assert r["options"] == classes and r["meta"]["dataset"] == "ucmerced"
        with rasterio.open(tif) as ds:
            pixels = ds.read().transpose(1, 2, 0)
        with Image.open(out / r["image"]) as png:
            assert png.mode == "RGB" and (png.width, png.height) == (r["width"], r["height"]) == (32, 32)
            assert np.array_equal(np.asarray(png), pixels)


@pytest.mark.parametrize("dataset,layout,needle", [
    ("ucmerced", "empty", None),  # --src holds no class folders
    ("ucmerced", "parent", "empty class folder"),  # --src one level too high: data-set folders taken as classes
    ("eurosat_ms", "ucmerced", "bad band selection"),  # 3-band tiles have no B04 / B03 / B02
    ("rsvqa", "rsvqa_lr_no_images", "missing image"),
])
def test_convert_that_writes_nothing_exits_1_with_the_table(tmp_path, capsys, dataset, layout, needle):
    """Issue 14 (15): these runs wrote empty JSONL files and exited 0."""
    require("rasterio", "the remote-sensing GeoTIFFs")
    from domains.remote_sensing.synthetic import generate

    if layout == "empty":
        src = tmp_path / "empty"
        src.mkdir()
    elif layout == "parent":
        src = tmp_path / "raw"
        generate("ucmerced", src / "ucmerced", n=1)
        generate("rsvqa_lr", src / "rsvqa_lr", n=1)
    elif layout == "ucmerced":
        src = generate("ucmerced", tmp_path / "ucm", n=1)
    else:
        src = generate("rsvqa_lr", tmp_path / "rsvqa", n=2)
        for tif in (src / "Images_LR").glob("*.tif"):
            tif.unlink()
    out = tmp_path / "out"
    assert main(["convert", "remote_sensing", dataset, "--src", str(src), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "| written | 0 | |" in captured.out and (needle is None or f"skipped: {needle}" in captured.out)
    assert f"adapt convert: error: nothing converted from {src}" in captured.err
    assert "Traceback" not in captured.err and not list(out.rglob("*.jsonl"))
