"""Synthetic sets' `n` is bounded: n=10**12 (images per class, patients) was taken and files were written until the
disk filled; now it, and n that is no whole number, are refused before anything is drawn or written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapt.cli import main
from domains.base import MAX_SYNTHETIC_N, DomainError, check_synthetic_n
from tests.deps import require


def _no_writing(monkeypatch):
    """A refusal that comes too late fails here instead of writing 10**12 files."""
    def refuse(*args, **kwargs):
        raise AssertionError("a folder was made before n was checked")

    monkeypatch.setattr(Path, "mkdir", refuse)


BAD_N = [10**12, MAX_SYNTHETIC_N + 1, 0, -3, 2.5, True, "5", None]


@pytest.mark.parametrize("n", BAD_N)
def test_check_synthetic_n_names_the_range(n):
    with pytest.raises(DomainError, match=rf"^n must be a whole number from 1 to {MAX_SYNTHETIC_N} .*got {n!r}$"):
        check_synthetic_n(n)


def test_whole_numbers_in_range_pass():
    assert check_synthetic_n(1) == 1 and check_synthetic_n(np.int64(MAX_SYNTHETIC_N)) == MAX_SYNTHETIC_N


@pytest.mark.parametrize(("module", "package"), [("domains.remote_sensing.synthetic", "rasterio"),
                                                 ("domains.medical.synthetic", "pydicom")])
@pytest.mark.parametrize("n", [10**12, 0, 2.5])
def test_generators_refuse_before_writing(tmp_path, monkeypatch, module, package, n):
    require(package)
    import importlib

    mod = importlib.import_module(module)
    _no_writing(monkeypatch)
    with pytest.raises(DomainError, match="n must be a whole number from 1 to"):
        mod.generate(mod.KINDS[0], tmp_path / "one", n=n)
    with pytest.raises(DomainError, match="n must be a whole number from 1 to"):
        mod.generate_all(tmp_path / "all", n=n, progress=False)
    assert not (tmp_path / "one").exists() and not (tmp_path / "all").exists()


@pytest.mark.parametrize(("name", "package"), [("remote_sensing", "rasterio"), ("medical", "pydicom")])
def test_cli_refuses_a_huge_n_in_one_line(tmp_path, capsys, monkeypatch, name, package):
    require(package)
    _no_writing(monkeypatch)
    assert main(["synthesize", name, "--out", str(tmp_path / "raw"), "--no-progress", "--option",
                 "n=1000000000000"]) == 1
    err = capsys.readouterr().err
    assert err == (f"adapt synthesize: error: n must be a whole number from 1 to {MAX_SYNTHETIC_N} (synthetic sets "
                   "are small, for tests and trying things out), got 1000000000000\n")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("size", [32.5, "32", True])
def test_remote_sensing_size_that_is_no_whole_number_is_refused(tmp_path, size):
    require("rasterio")
    from domains.remote_sensing.synthetic import generate

    with pytest.raises(DomainError, match=rf"^size must be a whole number of pixels, got {size!r}$"):
        generate("ucmerced", tmp_path / "u", size=size)


@pytest.mark.parametrize(("kind", "options", "words"), [
    ("ucmerced", {"classes": ["forest", "nope"]}, "'nope' unknown"),
    ("ucmerced", {"classes": []}, "got []"),
    ("ucmerced", {"classes": 5}, "got 5"),
    ("ucmerced", {"clases": ["forest"]}, "unknown option(s) clases for synthetic kind 'ucmerced' (options: classes)"),
    ("rsvqa_lr", {"classes": ["forest"]}, "unknown option(s) classes for synthetic kind 'rsvqa_lr' (options: none)"),
])
def test_remote_sensing_classes_are_checked_before_anything_is_written(tmp_path, kind, options, words):
    # a misspelt class was a raw KeyError after the classes before it were written; a misspelt option was ignored
    require("rasterio")
    from domains.remote_sensing.synthetic import generate

    with pytest.raises(DomainError) as info:
        generate(kind, tmp_path / "u", n=1, **options)
    assert words in str(info.value)
    assert not (tmp_path / "u").exists()


def test_remote_sensing_classes_as_one_string_are_its_comma_separated_names(tmp_path):
    require("rasterio")
    from domains.remote_sensing.synthetic import generate

    out = generate("ucmerced", tmp_path / "u", n=1, classes="forest, river")
    assert sorted(p.name for p in out.iterdir()) == ["forest", "river"]  # not the letters "f", "o", ...


@pytest.mark.parametrize("seed", [2.5, "x", True])
def test_remote_sensing_seed_that_is_no_whole_number_is_refused(tmp_path, seed):
    # 2.5 was drawn as seed 2 (another set than asked for), "x" a bare ValueError
    require("rasterio")
    from domains.remote_sensing.synthetic import generate

    with pytest.raises(DomainError, match=rf"^seed must be a whole number >= 0, got {seed!r}$"):
        generate("ucmerced", tmp_path / "u", n=1, seed=seed)


@pytest.mark.parametrize(("module", "kind"), [("pydicom", "domains.medical.synthetic:vqa_rad"),
                                              ("rasterio", "domains.remote_sensing.synthetic:ucmerced")])
@pytest.mark.parametrize(("args", "error"), [
    ({"kind": "bogus"}, "^unknown synthetic kind 'bogus'; known: "),
    ({"n": 0}, "^n must be a whole number from 1 to "),
    ({"seed": -1}, r"^seed must be a whole number >= 0, got -1$"),
    ({"seed": 2.5}, r"^seed must be a whole number >= 0, got 2.5$"),
])
def test_medical_and_remote_sensing_generate_check_kind_n_and_seed_alike(monkeypatch, tmp_path, module, kind, args,
                                                                          error):
    """Both generators make domains.base.check_synthetic_call's checks, in its words, before any folder is made."""
    import importlib

    require(module)
    name, known = kind.split(":")
    generate = importlib.import_module(name).generate
    _no_writing(monkeypatch)
    with pytest.raises(DomainError, match=error):
        generate(args.get("kind", known), tmp_path / "out", n=args.get("n", 1), seed=args.get("seed", 0))
