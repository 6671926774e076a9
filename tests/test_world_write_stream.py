"""The synthetic general / land-cover sets stream each split to a temporary file and rename it when complete."""

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


def test_a_failure_half_way_leaves_no_index_of_redrawn_images(tmp_path):
    # the earlier train.jsonl would have named images the failed call had already redrawn with other contents
    _write(tmp_path, {"train": general_samples("train", 3, image_size=32)}, progress=False)

    def failing():
        yield from general_samples("train", 4, seed=5, image_size=32)
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        _write(tmp_path, {"train": failing()}, progress=False)
    assert not (tmp_path / "train.jsonl").exists()
    assert not list(tmp_path.glob(".*.part"))


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
