"""The domain plugin contract, the registry and entry-point discovery."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import types
from pathlib import Path

import pytest

from domains import base
from domains.base import (
    ConvertReport,
    DomainPlugin,
    get_domain,
    list_domains,
    register_domain,
)


@pytest.fixture
def clean_registry(monkeypatch):
    """A fresh registry (built-ins reloaded) that is restored after the test."""
    saved, errors, loaded = dict(base._REGISTRY), dict(base._ERRORS), base._LOADED
    base._REGISTRY.clear()
    base._ERRORS.clear()
    monkeypatch.setattr(base, "_LOADED", False)
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(saved)
    base._ERRORS.clear()
    base._ERRORS.update(errors)
    base._LOADED = loaded


def test_builtins_registered(clean_registry):
    names = list_domains()
    assert "general" in names and "remote_sensing" in names
    general = get_domain("general")
    from domains.general import generate_general
    assert general.synthetic is generate_general
    assert "quickstart" in general.recipes
    rs = get_domain("remote_sensing")
    assert ".tif" in rs.readers
    assert {"ucmerced", "eurosat", "eurosat_ms", "rsvqa", "dior_rsvg"} <= set(rs.converters)
    assert callable(rs.synthetic)
    assert base.discovery_errors() == {}


def test_every_domain_recipe_template_is_listed_by_its_domain():
    """`adapt domains` listed no recipe for remote_sensing, whose two templates exist; each template named by a
    plugin exists, and each template named after a domain is listed by it."""
    from adapt.recipe import list_recipe_templates

    templates = set(list_recipe_templates())
    listed = {name: set(get_domain(name).recipes) for name in list_domains()}
    for domain, names in listed.items():
        assert names <= templates, (domain, names - templates)
        prefix = domain.replace("_", "-") + "_"
        assert {t for t in templates if t.startswith(prefix)} <= names, domain
    assert listed["remote_sensing"] == {"remote-sensing_pocket-tiny_full", "remote-sensing_mobilevlm-v2_full"}


def test_unknown_domain_lists_known(clean_registry):
    with pytest.raises(ValueError, match=r"unknown domain 'nope'.*general.*remote_sensing"):
        get_domain("nope")


def test_register_and_conflicts(clean_registry):
    scorer = lambda prediction, record, reference: {"exact": float(prediction == reference)}
    plugin = DomainPlugin(name="forestry", description="trees", metrics={"species": scorer}, recipes="forestry_x")
    assert register_domain(plugin) is plugin
    assert get_domain("forestry").metrics["species"]("a", {}, "a") == {"exact": 1.0}
    assert plugin.recipes == ("forestry_x",)
    register_domain(plugin)  # the same object again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_domain(DomainPlugin(name="forestry"))
    register_domain(DomainPlugin(name="forestry", description="new"), overwrite=True)
    assert get_domain("forestry").description == "new"
    base.unregister_domain("forestry")
    assert "forestry" not in list_domains()


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "Bad Name"}, "snake_case"),
    ({"name": "x", "readers": {".tif": 3}}, r"readers\['.tif'\] must be callable"),
    ({"name": "x", "readers": {"tif": print}}, "suffixes"),
    ({"name": "x", "converters": [print]}, "must be a dict"),
    ({"name": "x", "synthetic": "gen"}, "synthetic must be callable"),
    ({"name": "x", "recipes": (1,)}, "recipes"),
])
def test_plugin_validation(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DomainPlugin(**kwargs)


def test_reader_and_converter_dispatch(tmp_path):
    seen = []

    def reader(path, **opts):
        seen.append((path, opts))
        return "image"

    def converter(src: Path, out: Path, **options) -> ConvertReport:
        report = ConvertReport(dataset="toy", source=src, out=out)
        report.wrote(2)
        report.skip("a.json", "missing image", "a.png not found")
        return report

    plugin = DomainPlugin(name="toy", readers={".tif": reader}, converters={"toy": converter})
    assert plugin.read(tmp_path / "x.TIF", band=1) == "image"
    assert seen == [(tmp_path / "x.TIF", {"band": 1})]
    with pytest.raises(ValueError, match=r"x\.png.*no reader for '\.png'.*\.tif"):
        plugin.read(tmp_path / "x.png")
    report = plugin.convert("toy", tmp_path, tmp_path / "out")
    assert report.written == 2 and report.total_skipped == 1
    with pytest.raises(ValueError, match="no converter for data set 'other'.*toy"):
        plugin.convert("other", tmp_path, tmp_path)


def test_convert_report_table_and_merge():
    r = ConvertReport(dataset="rsvqa", source="raw", out="out", max_examples=2)
    r.wrote(5)
    for i in range(3):
        r.skip(f"img{i}.tif", "unreadable image", "truncated TIFF")
    r.skip("q9.json", "empty | answer")
    assert r.skipped == {"unreadable image": 3, "empty | answer": 1}
    assert r.examples["unreadable image"] == ["img0.tif: truncated TIFF", "img1.tif: truncated TIFF"]
    table = r.table()
    assert "| written | 5 | |" in table
    assert "| skipped: unreadable image | 3 | img0.tif: truncated TIFF<br>img1.tif: truncated TIFF |" in table
    assert "empty \\| answer" in table  # pipes escaped in cells
    assert str(r) == table
    other = ConvertReport(written=1, skipped={"unreadable image": 1}, examples={"unreadable image": ["z: z"]},
                          inputs={"val.json": "val"})
    r.merge(other)
    assert r.written == 6 and r.skipped["unreadable image"] == 4
    assert r.inputs == {"val.json": "val"} and "| read: val.json | | val |" in r.table()


class _FakeEP:
    def __init__(self, name, value, obj=None, exc=None):
        self.name, self.value, self._obj, self._exc = name, value, obj, exc

    def load(self):
        if self._exc:
            raise self._exc
        return self._obj


def test_entry_points_discovery(clean_registry, monkeypatch):
    good = DomainPlugin(name="forestry", description="from an entry point")
    factory = lambda: DomainPlugin(name="oceans")
    eps = [
        _FakeEP("forestry", "pkg.forestry:PLUGIN", good),
        _FakeEP("broken", "pkg.broken:PLUGIN", exc=ImportError("No module named 'pkg.broken'")),
        _FakeEP("oceans", "pkg.oceans:make", factory),
        _FakeEP("wrong", "pkg.wrong:X", 42),
        _FakeEP("dupe", "pkg.dupe:PLUGIN", DomainPlugin(name="general")),
    ]
    calls = []

    def fake_entry_points(**kw):
        calls.append(kw)
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    with pytest.warns(RuntimeWarning) as caught:
        names = list_domains()
    messages = " ".join(str(w.message) for w in caught)
    assert all(f"entry point '{n}'" in messages for n in ("broken", "wrong", "dupe"))
    assert calls == [{"group": "pocket_adapt.domains"}]
    assert {"forestry", "oceans", "general", "remote_sensing"} <= set(names)
    assert get_domain("forestry") is good
    assert get_domain("general").description != ""  # the built-in kept its name
    errors = base.discovery_errors()
    assert set(errors) == {"entry point 'broken' (pkg.broken:PLUGIN)", "entry point 'wrong' (pkg.wrong:X)",
                           "entry point 'dupe' (pkg.dupe:PLUGIN)"}
    assert "No module named" in errors["entry point 'broken' (pkg.broken:PLUGIN)"]
    with pytest.raises(ValueError, match="failed to load.*broken"):
        get_domain("broken")


def test_broken_builtin_is_reported_not_fatal(clean_registry, monkeypatch):
    mod = types.ModuleType("domains._broken_test_domain")
    mod.PLUGIN = "not a plugin"
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(base.BUILTIN_DOMAINS, "broken_test", mod.__name__)
    with pytest.warns(RuntimeWarning, match="builtin:broken_test"):
        names = list_domains()
    assert "general" in names and "broken_test" not in names
    assert "builtin:broken_test" in base.discovery_errors()


def test_remote_sensing_demo_hooks_read_a_geotiff_and_draw_an_answer(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "scene.tif"
    data = (np.arange(3 * 40 * 60, dtype=np.uint16).reshape(3, 40, 60) % 4000) + 1
    with rasterio.open(path, "w", driver="GTiff", width=60, height=40, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 10, 10), nodata=0) as dst:
        dst.write(data)
    hooks = get_domain("remote_sensing").demo_hooks
    result = hooks["read_upload"]([path])
    image = result["images"][0]
    assert image.size == (60, 40) and image.mode == "RGB" and result["prompt"] is None
    drawn = hooks["draw_answer"]([image], "<ref>field</ref><box>[[0, 0, 500, 500]]</box>")[0]
    assert drawn.size == image.size and drawn.getpixel((0, 10)) != image.getpixel((0, 10))


def test_report_skip_names_the_file_once_and_write_splits_is_idempotent(tmp_path):
    from domains.base import ConvertReport
    from domains.files import is_fresh, write_splits

    report = ConvertReport("demo")
    report.skip("a.json", "malformed JSON", "a.json: line 3: expected ','")
    report.skip("b.json", "malformed JSON", "truncated")
    assert report.examples["malformed JSON"] == ["a.json: line 3: expected ','", "b.json: truncated"]
    splits = {"train": [{"id": 1}], "test": []}
    write_splits(report, tmp_path, "demo", splits, keep_empty=False)
    assert report.written == 1 and set(report.outputs) == {"train"} and not (tmp_path / "demo_test.jsonl").exists()
    path = report.outputs["train"]
    before = path.stat().st_mtime_ns
    write_splits(ConvertReport("demo"), tmp_path, "demo", splits)  # same bytes: not rewritten
    assert path.stat().st_mtime_ns == before and (tmp_path / "demo_test.jsonl").read_text() == ""
    newer = tmp_path / "source.json"
    newer.write_text("{}")
    os.utime(newer, ns=(before + 10**9, before + 10**9))
    assert is_fresh(path, []) and not is_fresh(path, [newer]) and not is_fresh(tmp_path / "nope", path)


def test_a_plugin_that_exits_while_loading_is_reported_not_fatal(clean_registry, monkeypatch):
    """A plugin module that calls sys.exit() on import (a missing tool, a script's argparse at module level) ended
    every command that looks up a domain, with that plugin's exit status and no word of which plugin it was."""
    def quits():
        raise SystemExit("please install gdal")

    eps = [_FakeEP("quitter", "pkg.quitter:PLUGIN", exc=SystemExit(2)),
           _FakeEP("factory", "pkg.factory:make", quits),
           _FakeEP("forestry", "pkg.forestry:PLUGIN", DomainPlugin(name="forestry"))]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: eps)
    with pytest.warns(RuntimeWarning, match="quitter"):
        names = list_domains()
    assert "forestry" in names and "general" in names
    errors = base.discovery_errors()
    assert errors["entry point 'quitter' (pkg.quitter:PLUGIN)"] == "SystemExit: 2"
    assert errors["entry point 'factory' (pkg.factory:make)"] == "SystemExit: please install gdal"
