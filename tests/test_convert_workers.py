"""``adapt convert --workers N``: every converter's output (JSONL, images, skip report) is byte-identical to one
worker's, also when bad inputs (a corrupt GeoTIFF / JPEG / PNG / DICOM) are skipped inside a worker process."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains import parallel
from domains.base import DomainError, get_domain

# (domain, data set, synthetic options, convert options)
CASES = [
    ("remote_sensing", "ucmerced", {}),
    ("remote_sensing", "eurosat_ms", {}),
    ("remote_sensing", "rsvqa_lr", {}),
    ("remote_sensing", "dior_rsvg", {"resize": 48}),
    ("medical", "dicom_qa", {"redact_burned_in": True}),
    ("medical", "vqa_rad", {}),
    ("medical", "slake", {}),
    ("medical", "pmc_vqa", {}),
    ("medical", "classification", {}),
    ("driving", "drivelm", {"view_mode": "stitched", "progress": False}),
    ("driving", "nuscenes", {"progress": False}),
]
SYNTHETIC = {"remote_sensing": {"n": 3}, "medical": {"n": 2}, "driving": {"n_scenes": 2, "n_frames": 2, "progress": False}}
CORRUPT = {  # file suffixes whose first few (sorted) files are truncated to make the bad-input variant
    "remote_sensing": (".tif", ".png", ".jpg"), "medical": (".dcm", ".png", ".jpg"), "driving": (".jpg",)}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    base = tmp_path_factory.mktemp("raw")
    return {dom: get_domain(dom).synthetic(base / dom, **opts) for dom, opts in SYNTHETIC.items()}


def _corrupt(src: Path, suffixes: tuple[str, ...], every: int = 3) -> list[Path]:
    """Truncate every `every`-th image file under `src` (to 60 %: headers stay readable, pixels do not)."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    bad = files[1::every]
    for p in bad:
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * 0.6)])
    return bad


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _report(report, out: Path) -> tuple:
    return (report.written, report.skipped, report.examples, report.warnings, report.warning_examples,
            report.table().replace(str(out), "OUT"), sorted((k, Path(v).relative_to(out).as_posix())
                                                            for k, v in report.outputs.items()))


def _both(domain: str, dataset: str, src: Path, tmp: Path, options: dict):
    """One worker, then two -- waiting for the pool's first results, so these small sets go through the pool
    rather than being done in the loop while it starts (see the start-up test below)."""
    plugin = get_domain(domain)
    one = plugin.convert(dataset, src, tmp / "w1", **options)
    before = dict(parallel.STATS)
    parallel.Prefetch.wait_while_starting = True
    try:
        two = plugin.convert(dataset, src, tmp / "w2", workers=2, **options)
    finally:
        parallel.Prefetch.wait_while_starting = False
    return one, two, {k: parallel.STATS[k] - before[k] for k in before}


@pytest.mark.parametrize("wait", [False, True])
def test_the_loop_does_not_wait_for_a_starting_pool(wait, monkeypatch):
    """While the spawned workers start, the loop computes steps itself (same values); once told to wait, it takes
    every step from the pool."""
    import math

    if wait:  # otherwise the default
        monkeypatch.setattr(parallel.Prefetch, "wait_while_starting", True)
    steps = [(k, math.factorial, (k,)) for k in range(6)]
    with parallel.Prefetch(2, plan=lambda: steps) as prefetch:
        got = [prefetch.get(k, fn, *args) for k, fn, args in steps]
    assert got == [math.factorial(k) for k in range(6)]
    if wait:
        assert prefetch.stats == {"prefetched": 6, "inline": 0}
    else:
        assert prefetch.stats["inline"] >= 1  # the first step at least: no worker can have started yet


@pytest.mark.parametrize("bad", [False, True], ids=["clean", "corrupt"])
@pytest.mark.parametrize("domain,dataset,options", CASES, ids=[c[1] for c in CASES])
def test_two_workers_byte_identical(raw, tmp_path, domain, dataset, options, bad):
    src = raw[domain][dataset]
    if bad:  # a private copy, so the clean runs keep clean data
        import shutil

        whole = src.parent if domain == "driving" else src  # DriveLM reads the cameras from ../nuscenes
        shutil.copytree(whole, tmp_path / "src", symlinks=True)
        src = tmp_path / "src" / src.relative_to(whole)
        assert _corrupt(tmp_path / "src", CORRUPT[domain], every=10**6 if domain == "driving" else 3)
    one, two, stats = _both(domain, dataset, src, tmp_path, options)
    assert one.written > 0
    assert _report(one, tmp_path / "w1") == _report(two, tmp_path / "w2")
    t1, t2 = _tree(tmp_path / "w1"), _tree(tmp_path / "w2")
    assert list(t1) == list(t2)
    for name in t1:
        assert t1[name] == t2[name], name
    if dataset != "nuscenes":  # nuscenes decodes no image: it runs in one process whatever --workers
        assert stats["prefetched"] > 0, stats  # the image work was done in the pool
        if bad:
            assert one.total_skipped > 0
            if dataset != "drivelm":  # a stitched frame's unreadable camera comes back as a value, not a SkipInput
                assert stats["skipped_in_worker"] > 0, stats  # ... and the skips were raised there


def test_rerun_with_workers_rewrites_nothing(raw, tmp_path):
    plugin = get_domain("remote_sensing")
    src = raw["remote_sensing"]["ucmerced"]
    plugin.convert("ucmerced", src, tmp_path, workers=2)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    plugin.convert("ucmerced", src, tmp_path, workers=2)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps


@pytest.mark.parametrize("workers", [0, -1, 1.5, "two", True])
def test_bad_workers_refused(raw, tmp_path, workers):
    with pytest.raises(DomainError, match="workers"):
        get_domain("remote_sensing").convert("ucmerced", raw["remote_sensing"]["ucmerced"], tmp_path, workers=workers)


def test_cli_workers(raw, tmp_path, capsys):
    from adapt.cli import main

    src = raw["remote_sensing"]["ucmerced"]
    assert main(["convert", "remote_sensing", "ucmerced", "--src", str(src), "--out", str(tmp_path / "a"),
                 "--workers", "2"]) == 0
    assert main(["convert", "remote_sensing", "ucmerced", "--src", str(src), "--out", str(tmp_path / "b")]) == 0
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def _dota_tree(root: Path, n: int = 3) -> Path:
    """A small DOTA layout (images/ + labelTxt/): `n` 300x200 scenes with three objects each."""
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(root / "images" / f"P{k:04d}.png")
        (root / "labelTxt" / f"P{k:04d}.txt").write_text(
            "gsd:0.15\n10 20 50 20 50 60 10 60 small-vehicle 0\n200 10 230 40 200 70 170 40 plane 1\n"
            f"110 100 150 100 150 140 110 140 ship {k % 2}\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("bad", [False, True], ids=["clean", "corrupt"])
def test_dota_two_workers_byte_identical(tmp_path, bad):
    """DOTA accepted --workers but ran in one process; each scene is now decoded and cut in a worker, with the
    output (chips, JSONL, skip report) of one worker."""
    src = _dota_tree(tmp_path / "dota")
    if bad:
        assert _corrupt(src, (".png",))
    options = {"size": 128, "overlap": 28, "progress": False}
    one, two, stats = _both("remote_sensing", "dota", src, tmp_path, options)
    assert one.written > 0 and stats["prefetched"] > 0, stats
    assert _report(one, tmp_path / "w1") == _report(two, tmp_path / "w2")
    assert _tree(tmp_path / "w1") == _tree(tmp_path / "w2")
    if bad:
        assert one.skipped.get("unreadable image") and stats["skipped_in_worker"] > 0, (one.skipped, stats)
