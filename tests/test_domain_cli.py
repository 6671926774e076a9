"""`adapt domains`, `adapt convert` (with a tiny fake plugin registered here) and `adapt synthesize` + `adapt convert`
on the remote_sensing plugin's UC Merced layout."""

from __future__ import annotations

import os
import subprocess
import sys
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
    # each generator's options: `synthesize --help` offered n=20, which the general and driving ones refuse
    assert ("synthesize: adapt synthesize general --out DIR [--option KEY=VALUE]; options: answer_style, image_size, "
            "n_test, n_train, seed") in out
    assert "synthesize: adapt synthesize driving --out DIR [--option KEY=VALUE]; options: drivelm, n_frames" in out


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
    assert _fake_converter.last == {"progress": True, "limit": 3, "split": "val", "classes": ["a", "b"]}
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


@pytest.mark.parametrize("argv,needle", [
    (["synthesize", "remote_sensing", "--option", "n=abc"], "option n='abc' is not an integer"),
    (["synthesize", "medical", "--option", "n_slices=abc"], "option n_slices='abc' is not an integer"),
    (["synthesize", "medical", "--option", "size=big"], "option size='big' is not an integer"),
    (["synthesize", "general", "--option", "answer_style=3"], "is not a string; quote it"),
    (["convert", "remote_sensing", "ucmerced", "--option", "test_fraction=abc"], "option test_fraction='abc' is not a number"),
    (["convert", "remote_sensing", "ucmerced", "--option", "test_fraction=5"], "test_fraction must be a share in [0, 1)"),
    (["convert", "medical", "classification", "--option", "test_fraction=1"], "test_fraction must be a share in [0, 1)"),
    (["convert", "medical", "dicom_qa", "--option", "redact_burned_in=maybe"], "is not true or false"),
    (["convert", "remote_sensing", "ucmerced", "--option", "stretch=foo"], "stretch must be \"auto\", null or two"),
    (["convert", "remote_sensing", "rsvqa_lr", "--option", "stretch=[2]"], "stretch must be \"auto\", null or two"),
    (["convert", "remote_sensing", "ucmerced", "--option", "stretch=[90, 10]"], "stretch percentiles must satisfy"),
])
def test_an_option_of_the_wrong_kind_is_one_line_naming_it(tmp_path, capsys, argv, needle):
    """--option values are checked against the converter's / generator's parameter types before any work:
    `n=abc` used to end in a TypeError traceback, `redact_burned_in=maybe` was taken as true."""
    src = tmp_path / "raw"
    src.mkdir()
    rc = main([*argv, *(["--src", str(src)] if argv[0] == "convert" else []), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"adapt {argv[0]}: error:") and needle in err and "Traceback" not in err
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
    assert printed.endswith(f"test: {outputs[0]}\ntrain: {outputs[1]}\n{out}: {len(tifs) + 3} file(s) written or "
                            "replaced\n")  # the PNGs, two split files and the manifest
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


# --------------------------------------------------------------------------------------------- convert --help (issue 15)
def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_convert_help_explains_every_data_sets_options(capsys):
    """Issue 15 item 11: nuscenes_root (how DriveLM's ../nuscenes/samples paths resolve) was only in a docstring."""
    text = _help(["convert", "--help"], capsys)
    assert "usage: adapt convert" in text and "data sets and their options (--option KEY=VALUE" in text
    drivelm = text[text.index("  driving drivelm:"):text.index("  driving nuscenes:")]
    flat = " ".join(drivelm.split())
    assert "nuscenes_root (default: unset): the nuScenes folder holding samples/CAM_*/." in flat
    assert "../nuscenes/samples/CAM_FRONT/<file>.jpg" in flat and "relative to the JSON's folder" in flat
    assert "<nuscenes_root>/samples/CAM_FRONT/<file>.jpg" in flat
    assert "view_mode=stitched:" in flat and "png_level" in flat and "image_format=png:" in flat
    for line in ("  remote_sensing rsvqa, rsvqa_hr, rsvqa_lr:", "  remote_sensing aid, eurosat, eurosat_ms, nwpu, "
                 "ucmerced:", "  medical vqa_rad:", "  driving nuscenes:"):
        assert line in text
    rsvqa = " ".join(text[text.index("  remote_sensing rsvqa,"):].split())
    assert "resolution (default: unset): lr or hr" in rsvqa and "images_dir (default: unset): the tiles' folder" in rsvqa
    assert "label_fn" not in text  # a Python callable is no command-line option


def test_convert_help_describes_every_option_of_every_converter(capsys):
    """`adapt convert remote_sensing ucmerced --help` showed ``nested=false`` bare (the README describes it), and
    scene_chips and the medical converters had more such options: every option line of every data set now says what
    the option does."""
    import re

    text = _help(["convert", "--help"], capsys)
    listing = text[text.index("data sets and their options"):]
    bare, dataset = [], None
    for line in listing.splitlines():
        if re.match(r"  \S", line):
            dataset = line.split(":")[0].strip()
        elif re.fullmatch(r"    \w+(=\S+|=\[.*\]| \(default: unset\))?", line):  # the option's name and default alone
            bare.append(f"{dataset}: {line.strip()}")
    assert dataset is not None and not bare, bare
    ucmerced = " ".join(_help(["convert", "remote_sensing", "ucmerced", "--help"], capsys).split())
    assert "nested=false: also read the images below a class folder" in ucmerced

def test_convert_help_after_domain_and_dataset_shows_that_one(fake_domain, capsys):
    text = _help(["convert", "driving", "drivelm", "--help"], capsys)
    assert "  driving drivelm:" in text and "nuscenes_root" in text
    assert "remote_sensing" not in text and "driving nuscenes" not in text
    text = _help(["convert", "toy_domain", "-h"], capsys)
    assert "  toy_domain toy:" in text and "driving" not in text
    text = _help(["convert", "nope", "-h"], capsys)
    assert "unknown domain 'nope'" in text


def _documented(src: Path, out: Path, limit: int = 2, mode: str = "fast", hook=print) -> ConvertReport:
    """A documented toy converter.

    `limit`: how many records
    to write. `mode` (experimental): ``fast`` or ``slow``.
    """
    return _fake_converter(src, out, limit=limit)


def test_convert_help_reads_option_sentences_from_any_plugin(capsys):
    register_domain(DomainPlugin(name="toy_docs", converters={"doc": _documented}), overwrite=True)
    try:
        text = _help(["convert", "toy_docs", "doc", "--help"], capsys)
    finally:
        unregister_domain("toy_docs")
    assert "  toy_docs doc: A documented toy converter" in text
    assert "    limit=2: how many records to write." in text and "    mode=fast: fast or slow." in text
    assert "hook" not in text


def test_convert_rsvqa_website_sample(tmp_path, capsys):
    """Issue 15 item 9: the website sample converts through the CLI; a mixed folder asks for resolution; a run that
    finds no tile exits 1 with the skip table."""
    require("rasterio", "the remote-sensing converters")
    from tests.test_rs_convert import _website_sample

    src = tmp_path / "RSVQA_website"
    _website_sample(src)
    out = tmp_path / "out"
    assert main(["convert", "remote_sensing", "rsvqa", "--src", str(src), "--out", str(out)]) == 1
    assert "pass --option resolution=hr or resolution=lr" in capsys.readouterr().err
    assert main(["convert", "remote_sensing", "rsvqa", "--src", str(src), "--out", str(out),
                 "--option", "resolution=hr"]) == 0
    printed = capsys.readouterr().out
    assert "| written | 6 | |" in printed and f"train: {out / 'rsvqa_hr_train.jsonl'}" in printed
    for png in (src / "data_S2_reduced").glob("*.png"):
        png.unlink()
    assert main(["convert", "remote_sensing", "rsvqa", "--src", str(src), "--out", str(out),
                 "--option", "resolution=lr"]) == 1
    captured = capsys.readouterr()
    assert "| written | 0 | |" in captured.out and "| skipped: missing image | 3 |" in captured.out
    assert "no tile 0.* in" in captured.out
    assert f"adapt convert: error: nothing converted from {src}" in captured.err
    assert not (out / "rsvqa_lr_all.jsonl").exists() and (out / "rsvqa_hr_train.jsonl").exists()


@pytest.mark.parametrize("inside", [".", "converted"])
def test_an_out_folder_inside_the_source_is_refused(tmp_path, capsys, inside):
    """Sources are never modified: --out inside --src wrote images/ and the JSONL into the source."""
    src = tmp_path / "raw"
    src.mkdir()
    rc = main(["convert", "remote_sensing", "ucmerced", "--src", str(src), "--out", str(src / inside)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("adapt convert: error:") and "lies inside --src" in err
    assert [p.name for p in src.iterdir()] == []


def _toy_generator(out: Path, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    folder = out / "toy"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text(f"seed {seed}\n")
    if seed == 0:
        (folder / "only_seed_0.txt").write_text("x\n")
    return {"toy": folder}


def test_synthesize_never_overwrites_or_mixes_without_force(tmp_path, capsys):
    """A second generation into the same --out is refused with nothing touched (a real set downloaded there, or
    an earlier generation, stays whole); --force replaces the generator's folders whole; other folders stay."""
    plugin = DomainPlugin(name="toy_synth", synthetic=_toy_generator)
    register_domain(plugin, overwrite=True)
    try:
        out = tmp_path / "raw"
        (out / "mine").mkdir(parents=True)
        (out / "mine" / "real.tif").write_text("the user's own data\n")
        assert main(["synthesize", "toy_synth", "--out", str(out)]) == 0
        assert f"toy: {out / 'toy'}" in capsys.readouterr().out
        assert (out / "toy" / "a.txt").read_text() == "seed 0\n"
        assert main(["synthesize", "toy_synth", "--out", str(out), "--option", "seed=2"]) == 1
        err = capsys.readouterr().err
        assert f"{out / 'toy'}: already there and not empty" in err and "--force" in err
        assert (out / "toy" / "a.txt").read_text() == "seed 0\n"  # untouched
        assert main(["synthesize", "toy_synth", "--out", str(out), "--option", "seed=2", "--force"]) == 0
        assert (out / "toy" / "a.txt").read_text() == "seed 2\n"
        assert not (out / "toy" / "only_seed_0.txt").exists()  # replaced whole, not mixed
        assert (out / "mine" / "real.tif").read_text() == "the user's own data\n"
        assert sorted(p.name for p in out.iterdir()) == ["mine", "toy"]  # no staging folder left
    finally:
        unregister_domain(plugin.name)


@pytest.mark.parametrize("domain, kinds, expected", [
    ("remote_sensing", "ucmerced,dior_rsvg", ["dior_rsvg", "ucmerced"]), ("medical", "vqa_rad", ["vqa_rad"])])
def test_synthesize_kinds_as_comma_separated_text(tmp_path, capsys, domain, kinds, expected):
    """`--option kinds=vqa_rad` picked the medical kinds while the remote-sensing generator refused
    `kinds=ucmerced` ("not a list such as [a, b]"), though it reads a comma-separated string as the medical one
    does; both take the text form now."""
    if domain == "remote_sensing":
        require("rasterio", "the synthetic GeoTIFFs")
    else:
        require("pydicom", "the synthetic DICOM series")
    out = tmp_path / "raw"
    assert main(["synthesize", domain, "--out", str(out), "--option", f"kinds={kinds}", "--option", "n=1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == expected


def test_a_refused_synthesize_option_leaves_no_empty_folder(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["synthesize", "driving", "--out", str(out), "--no-progress", "--option", "quality=-5"]) == 1
    assert "quality" in capsys.readouterr().err and not out.exists()


def test_convert_again_refuses_to_replace_an_edited_split_file(tmp_path, capsys):
    """A converter run again rewrites its JSONL: a hand-edited split file was replaced without a word. The
    manifest records each file's digest; an edited one is refused before any work, and --force replaces it."""
    require("rasterio", "the UC Merced GeoTIFFs")
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert main(["synthesize", "remote_sensing", "--out", str(raw), "--option", "kinds=[ucmerced]",
                 "--option", "n=2"]) == 0
    argv = ["convert", "remote_sensing", "ucmerced", "--src", str(raw / "ucmerced"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 0  # unedited: converting again is fine (and idempotent)
    train = out / "ucmerced_train.jsonl"
    edited = train.read_text(encoding="utf-8") + '{"note": "mine"}\n'
    train.write_text(edited, encoding="utf-8")
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{train}: changed since a conversion wrote it" in err and "--force" in err
    assert train.read_text(encoding="utf-8") == edited
    assert main([*argv, "--force"]) == 0 and "mine" not in train.read_text(encoding="utf-8")


def test_a_plugin_whose_lazy_target_does_not_import_hides_no_other(tmp_path, capsys):
    """`adapt domains` and `adapt convert --help` read each converter's and generator's signature: one plugin whose
    lazy target does not import (a missing dependency) stopped both with a traceback, listing no plugin after it."""
    broken = DomainPlugin(name="aaa_broken", synthetic=base.lazy("no_such_pkg_xyz.gen:generate"),
                          converters={"x": base.lazy("no_such_pkg_xyz.conv:run")})
    register_domain(broken, overwrite=True)
    try:
        assert main(["domains"]) == 0
        out = capsys.readouterr().out
        assert "aaa_broken:" in out and "general:" in out and "remote_sensing:" in out
        text = _help(["convert", "--help"], capsys)
        assert "  aaa_broken x: cannot be loaded (ModuleNotFoundError: No module named 'no_such_pkg_xyz')" in text
        assert "  remote_sensing aid, eurosat, eurosat_ms, nwpu, ucmerced:" in text
    finally:
        unregister_domain("aaa_broken")


def test_chat_on_a_13_band_geotiff_without_its_domain_says_one_line(tmp_path):
    """Pillow cannot decode a 13-band TIFF and logs that before it raises; the user gets adapt's line naming the file
    and --domain remote_sensing, not Pillow's log line on top of it."""
    require("rasterio", "the EuroSAT MS GeoTIFFs")
    from domains.remote_sensing.synthetic import generate

    tif = next(generate("eurosat_ms", tmp_path / "raw", n=1).rglob("*.tif"))
    root = Path(__file__).resolve().parents[1]
    # a process of its own: pytest's log capture would take Pillow's line off stderr
    done = subprocess.run([sys.executable, "-m", "adapt", "chat", "--model", "pocket-tiny", "--image", str(tif),
                           "Which scene?"], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1, done.stderr
    assert err[0].startswith("adapt chat: error: ") and "--domain remote_sensing" in err[0], err
