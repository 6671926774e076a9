"""The synthetic general / land-cover sets stream each split to a temporary file and rename it when complete."""

import json
from pathlib import Path

import pytest

from domains.general.world import _write, general_samples


def test_a_split_is_streamed_to_a_temporary_file_and_appears_whole(tmp_path):
    # the whole JSONL was built in memory, then written: a large set held every line at once
    seen_parts = []

    def watched():
        for i, sample in enumerate(general_samples("train", 6, image_size=32)):
            if i == 5:
                seen_parts.extend(p.name for p in tmp_path.glob(".train.jsonl.*.part"))
                assert not (tmp_path / "train.jsonl").exists()
            yield sample

    result = _write(tmp_path, {"train": watched()}, progress=False)
    assert seen_parts, "no temporary file while the split was being written"
    lines = Path(result["train"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and not list(tmp_path.glob(".*.part"))
    assert all((tmp_path / "images" / f"train_{i:05d}.png").is_file() for i in range(6))


def test_a_failure_half_way_leaves_the_earlier_index_and_its_images_as_they_were(tmp_path):
    # the earlier train.jsonl was deleted first, then the call failed: the set was lost
    _write(tmp_path, {"train": general_samples("train", 3, image_size=32)}, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def failing():
        yield from general_samples("train", 5, image_size=32)
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        _write(tmp_path, {"train": failing()}, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name in before} == before
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize("other", [{"seed": 5}, {"image_size": 48}, {"answer_style": "label"}, "landcover", "real"])
def test_a_folder_holding_another_set_is_refused_before_anything_is_written(tmp_path, other):
    # generate_general / generate_landcover deleted train.jsonl and test.jsonl of whatever set the folder held
    from domains.base import DomainError
    from domains.general.world import generate_general, generate_landcover

    out = tmp_path / "set"
    if other == "real":
        (out / "images").mkdir(parents=True)
        (out / "train.jsonl").write_text('{"id": "mine", "image": "images/train_00000.png"}\n', encoding="utf-8")
        (out / "images" / "train_00000.png").write_bytes(b"my image")
    elif other == "landcover":
        generate_landcover(out, n_train=3, n_test=2, image_size=32, progress=False)
    else:
        generate_general(out, n_train=3, n_test=2, progress=False, **{"image_size": 32, **other})
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DomainError, match=r"train\.jsonl: already there and holds another set .*nothing was written"):
        generate_general(out, n_train=4, n_test=2, image_size=32, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_same_set_is_rewritten_larger_or_smaller_and_an_edited_one_is_refused(tmp_path):
    from domains.base import DomainError
    from domains.general.world import generate_general

    generate_general(tmp_path, n_train=3, n_test=2, image_size=32, progress=False)
    generate_general(tmp_path, n_train=5, n_test=2, image_size=32, progress=False)  # a larger call of the same set
    assert len((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 5
    generate_general(tmp_path, n_train=2, n_test=0, image_size=32, progress=False)  # a smaller one
    assert len((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    assert (tmp_path / "test.jsonl").read_text(encoding="utf-8") == ""
    lines = (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "train.jsonl").write_text(lines[0] + lines[1].replace('"answer": "', '"answer": "X'), encoding="utf-8")
    with pytest.raises(DomainError, match=r"train\.jsonl: edited since it was generated"):
        generate_general(tmp_path, n_train=2, n_test=0, image_size=32, progress=False)
    (tmp_path / "manifest.json").unlink()  # an earlier version's set: the edit is met as the split is rewritten
    with pytest.raises(DomainError, match=r"train\.jsonl: line 2 differs"):
        generate_general(tmp_path, n_train=2, n_test=0, image_size=32, progress=False)
    assert '"answer": "X' in (tmp_path / "train.jsonl").read_text(encoding="utf-8")
    # nothing in the new splits to compare with: an existing set is not taken for this one
    with pytest.raises(DomainError, match="an empty split cannot tell"):
        generate_general(tmp_path, n_train=0, n_test=0, image_size=32, progress=False)


def test_a_set_too_large_for_the_disk_names_the_output_folder_not_the_staging_folder(tmp_path, capsys):
    # adapt synthesize generates into OUT/.synthesize-xxxx, and the message named that hidden, removed folder
    from adapt.cli import main

    out = tmp_path / "out"
    assert main(["synthesize", "general", "--out", str(out), "--option", "n_train=100000000000", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"free on the disk of {out};" in err and ".synthesize-" not in err
    assert not out.exists()  # nothing left behind


@pytest.mark.parametrize("name", ["general_samples", "landcover_samples"])
def test_an_unknown_split_is_named(name):
    import domains.general.world as world
    from domains.base import DomainError

    with pytest.raises(DomainError, match="split must be one of 'train', 'test', got 'val'"):
        next(getattr(world, name)("val", 1))


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_edited_after_its_first_line_is_refused_before_anything_is_written(tmp_path, split):
    # only each split's first line was compared up front: an edit on line 5 was lost without a word to a smaller
    # call (the file cut to its first lines), or, in test.jsonl, noticed only after train.jsonl had been rewritten
    from domains.base import DomainError
    from domains.general.world import generate_general

    generate_general(tmp_path, n_train=6, n_test=6, image_size=32, progress=False)
    path = tmp_path / f"{split}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[4] = lines[4].replace('"answer": "', '"answer": "X')
    path.write_text("".join(lines), encoding="utf-8")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(DomainError, match=rf"{split}\.jsonl: .*edited since it was generated.*nothing was written"):
        generate_general(tmp_path, n_train=3, n_test=6, image_size=32, progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_manifest_is_the_same_bytes_for_the_same_call(tmp_path):
    from domains.general.world import MANIFEST, generate_general

    for out in (tmp_path / "a", tmp_path / "b"):
        generate_general(out, n_train=3, n_test=2, image_size=32, progress=False)
    assert (tmp_path / "a" / MANIFEST).read_bytes() == (tmp_path / "b" / MANIFEST).read_bytes()
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text(encoding="utf-8"))
    assert {split: entry["lines"] for split, entry in manifest.items()} == {"train": 3, "test": 2}


@pytest.mark.parametrize("case", ["smaller call", "appended tail", "emptied split"])
def test_an_earlier_versions_set_is_not_cut_to_a_smaller_call(tmp_path, case):
    # without a manifest entry, only the lines this call rewrote were compared: a smaller call (or one of the same
    # size over a file the user had added lines to) cut the rest off without a word
    from domains.base import DomainError
    from domains.general.world import MANIFEST, generate_general

    generate_general(tmp_path, n_train=4, n_test=2, image_size=32, progress=False)
    (tmp_path / MANIFEST).unlink()  # as an earlier version wrote it
    n_train, n_test, split = {"smaller call": (2, 2, "train"), "appended tail": (4, 2, "train"),
                              "emptied split": (4, 0, "test")}[case]
    if case == "appended tail":
        with (tmp_path / "train.jsonl").open("a", encoding="utf-8") as f:
            f.write('{"id": "mine", "image": "images/train_00000.png", "answer": "mine"}\n')
    before = (tmp_path / f"{split}.jsonl").read_bytes()
    writes = n_train if split == "train" else n_test
    with pytest.raises(DomainError, match=rf"{split}\.jsonl: holds more lines than the {writes} this call writes, "
                                          rf"and has no {MANIFEST} entry"):
        generate_general(tmp_path, n_train=n_train, n_test=n_test, image_size=32, progress=False)
    assert (tmp_path / f"{split}.jsonl").read_bytes() == before and not list(tmp_path.glob(".*.part"))
    if case == "smaller call":  # the same call, or a larger one, rewrites it and records it
        generate_general(tmp_path, n_train=5, n_test=2, image_size=32, progress=False)
        generate_general(tmp_path, n_train=2, n_test=2, image_size=32, progress=False)
        assert len((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 2
