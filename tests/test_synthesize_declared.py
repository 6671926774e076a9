"""`adapt synthesize` into an --out that already holds a domain's data is refused before the generator runs (it
generated everything, minutes for driving, and only then refused), and each generator's declared top-level names
(its ``writes``) are exactly what it writes, so the early check cannot rot."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from adapt.cli import main
from domains.base import DomainError, get_domain, list_domains, synthetic_writes
from tests.deps import require

# small options per built-in domain (and what each needs installed); variants cover options that change the names
CASES: dict[str, tuple[str | None, list[dict[str, Any]]]] = {
    "general": (None, [{"n_train": 2, "n_test": 1, "image_size": 32}]),
    "driving": (None, [{"n_scenes": 1, "n_frames": 1}, {"n_scenes": 1, "n_frames": 1, "drivelm": False}]),
    "medical": ("pydicom", [{"n": 1, "size": 32, "n_slices": 4}, {"n": 1, "size": 32, "n_slices": 4,
                                                                  "kinds": "vqa_rad,pmc_vqa"}]),
    "remote_sensing": ("rasterio", [{"n": 1}, {"n": 1, "kinds": ["ucmerced"]}]),
}
VARIANTS = [(name, i) for name, (_, options) in CASES.items() for i in range(len(options))]


def test_every_builtin_generator_is_covered_and_declares_its_names():
    with_generator = sorted(n for n in list_domains() if get_domain(n).synthetic is not None and n in
                            {"general", "driving", "medical", "remote_sensing"})
    assert with_generator == sorted(CASES)
    for name in with_generator:
        assert synthetic_writes(get_domain(name).synthetic, {}), f"{name}: its generator declares no names"


def _options(name: str, i: int) -> dict[str, Any]:
    module, variants = CASES[name]
    if module:
        require(module, f"the {name} generator")
    return dict(variants[i])


@pytest.mark.parametrize(("name", "i"), VARIANTS)
def test_declared_names_are_what_the_generator_writes(tmp_path, name, i):
    options = _options(name, i)
    plugin = get_domain(name)
    plugin.synthetic(tmp_path, progress=False, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == synthetic_writes(plugin.synthetic, options)


@pytest.mark.parametrize("name", list(CASES))
def test_a_second_synthesize_is_refused_before_the_generator_runs(tmp_path, monkeypatch, capsys, name):
    options = _options(name, 0)
    plugin = get_domain(name)
    out = tmp_path / "raw"
    plugin.synthesize(out, show_progress=False, **options)
    before = {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*")}
    calls = []
    real = plugin.synthetic

    @functools.wraps(real)
    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(plugin, "synthetic", spy)
    with pytest.raises(DomainError, match="already there and not empty; synthesize into another --out, or pass "
                                          r"--force to replace them \(nothing was written\)"):
        plugin.synthesize(out, show_progress=False, **options)
    assert calls == []
    argv = ["synthesize", name, "--out", str(out), "--no-progress"]
    argv += [a for k, v in options.items() for a in ("--option", f"{k}={v}")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert str(out / synthetic_writes(real, options)[0]) in err and "already there" in err and calls == []
    assert {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched
    assert main([*argv, "--force"]) == 0 and len(calls) == 1  # --force still replaces
    assert sorted(p.name for p in out.iterdir()) == synthetic_writes(real, options)  # no staging folder left


def test_an_empty_declared_folder_is_no_clash_and_an_undeclared_one_is_still_caught(tmp_path):
    """Only names holding something are refused (as after generating); a generator that declares nothing is
    still checked after generating."""
    from domains.base import DomainPlugin, register_domain, unregister_domain

    def gen(out: Path, progress: bool = True) -> Path:
        (out / "toy").mkdir()
        (out / "toy" / "a.txt").write_text("x\n")
        return out / "toy"

    plugin = DomainPlugin(name="toy_undeclared", synthetic=gen)
    register_domain(plugin, overwrite=True)
    try:
        (tmp_path / "toy").mkdir()
        assert plugin.synthesize(tmp_path, show_progress=False) == tmp_path / "toy"
        with pytest.raises(DomainError, match="already there and not empty"):
            plugin.synthesize(tmp_path, show_progress=False)
    finally:
        unregister_domain(plugin.name)


def test_an_unknown_kind_is_refused_before_any_set_is_written(tmp_path):
    require("rasterio", "the remote-sensing generator")
    with pytest.raises(DomainError, match="unknown synthetic kind 'bogus'"):
        get_domain("remote_sensing").synthesize(tmp_path / "raw", show_progress=False, kinds=["ucmerced", "bogus"])
    assert not (tmp_path / "raw").exists()  # refused before even the folder is made


@pytest.mark.parametrize(("name", "module"), [("driving", None), ("medical", "pydicom"), ("remote_sensing", "rasterio")])
def test_a_negative_seed_is_one_clear_line_not_a_numpy_traceback(tmp_path, capsys, name, module):
    if module:
        require(module, f"the {name} generator")
    assert main(["synthesize", name, "--out", str(tmp_path / "raw"), "--no-progress", "--option", "seed=-1"]) == 1
    err = capsys.readouterr().err
    assert err == "adapt synthesize: error: seed must be a whole number >= 0, got -1\n"
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize(("name", "module", "options", "message"), [
    ("remote_sensing", "rasterio", ["size=100000"], "size must be <= 1024 pixels, got 100000"),
    ("medical", "pydicom", ["size=100000"], "size must be <= 512 pixels, got 100000"),
    ("medical", "pydicom", ["n_slices=10000000"], "n_slices must be <= 1024, got 10000000"),
    ("medical", "pydicom", ["size=512", "n_slices=1024"], "size x size x n_slices must be at most 33554432 voxels"),
])
def test_sizes_that_cannot_fit_in_memory_are_refused_before_allocating(tmp_path, capsys, monkeypatch, name, module,
                                                                       options, message):
    """size=100000 tried to allocate 149 GiB (a MemoryError traceback, or the machine swapping)."""
    require(module, f"the {name} generator")
    import numpy as np

    def no_alloc(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("allocated before refusing")

    for fn in ("full", "meshgrid", "zeros", "empty"):
        monkeypatch.setattr(np, fn, no_alloc)
    argv = ["synthesize", name, "--out", str(tmp_path / "raw"), "--no-progress"]
    assert main([*argv, *(a for o in options for a in ("--option", o))]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"adapt synthesize: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "raw").exists()


def test_driving_frames_beyond_a_scene_are_refused_before_the_frame_lists_are_built(tmp_path, capsys, monkeypatch):
    """n_frames=100000000 built a list of every (scene, frame) job and every frame time first: gigabytes."""
    import domains.driving.synthetic as synthetic

    monkeypatch.setattr(synthetic, "_make_scene", lambda *a: pytest.fail("a scene was made before refusing"))
    argv = ["synthesize", "driving", "--out", str(tmp_path / "raw"), "--no-progress", "--option", "n_frames=100000000"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt synthesize: error: n_frames must be <= 40") and not (tmp_path / "raw").exists()
