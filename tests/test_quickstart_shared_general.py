"""The quick starts of one OUT share data/general: a second field's (`adapt quickstart medical --data-only --out
OUT` after the land-cover one) rewrote it whole, under a run that may be reading it; it is now reused as it is."""

from __future__ import annotations

import functools

import pytest

import adapt.quickstart as qs
from domains.general.world import generate_general

SMALL = functools.partial(generate_general, n_train=4, n_test=2)


def _files(folder):
    """Each file's inode and modification time: a file rewritten, even with the same bytes, shows."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != qs.GENERAL_STAMP}


@pytest.fixture(autouse=True)
def small_general(monkeypatch):
    monkeypatch.setattr(qs, "generate_general", SMALL)


def test_another_fields_data_reuses_the_general_set_without_rewriting_it(tmp_path, monkeypatch):
    monkeypatch.setattr(qs, "generate_landcover", functools.partial(qs.generate_landcover, n_train=4, n_test=2))
    qs.prepare_data(tmp_path, "landcover", progress=False)
    general = tmp_path / "data" / "general"
    before = _files(general)
    assert "train.jsonl" in before and any(name.startswith("images/") for name in before)
    monkeypatch.setitem(qs.FIELDS, "medical", ("medical_pocket-tiny_full", lambda data, progress: qs.prepare_general(
        data, progress)))  # the medical data preparation's general part, without its DICOM synthesis
    qs.prepare_data(tmp_path, "medical", progress=False)
    assert _files(general) == before


def test_an_identical_set_without_a_stamp_is_kept_and_stamped(tmp_path):
    general = tmp_path / "general"
    SMALL(general, **qs.GENERAL_OPTIONS, progress=False)  # as an earlier version's quick start left it
    before = _files(general)
    qs.prepare_general(tmp_path, progress=False)
    assert _files(general) == before and qs._unchanged_general(general)
    assert [p.name for p in tmp_path.iterdir()] == ["general"]  # no staging folder left


def test_a_different_set_is_refused_unless_forced(tmp_path):
    general = tmp_path / "general"
    SMALL(general, answer_style="letter", progress=False)  # complete, but not the set a quick start makes
    before = _files(general)
    with pytest.raises(qs.QuickstartError, match=r"general differs from the general set .* --force"):
        qs.prepare_general(tmp_path, progress=False)
    assert _files(general) == before
    qs.prepare_general(tmp_path, progress=False, force=True)
    assert qs._unchanged_general(general) and '"answer": "A"' not in (general / "train.jsonl").read_text()


def test_an_edited_stamped_set_is_not_taken_as_unchanged(tmp_path):
    qs.prepare_general(tmp_path, progress=False)
    (tmp_path / "general" / "train.jsonl").write_text("{}\n")
    with pytest.raises(qs.QuickstartError):
        qs.prepare_general(tmp_path, progress=False)


def test_an_interrupted_generation_is_replaced_without_force(tmp_path):
    (tmp_path / "general").mkdir()
    (tmp_path / "general" / "train.jsonl").write_text("{}\n")  # the older in-place writer stopped half-way
    qs.prepare_general(tmp_path, progress=False)
    assert qs._unchanged_general(tmp_path / "general") and (tmp_path / "general" / "test.jsonl").is_file()


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_folders_a_killed_run_left_are_removed_on_the_next_run(tmp_path):
    import os
    import subprocess
    import sys
    import time

    qs.prepare_general(tmp_path, progress=False)
    from domains.files import HOST_TAG

    killed = tmp_path / f".general-{_dead_pid()}@{HOST_TAG}-abcd1234"  # kill -9 during generation
    # kill -9 while the replaced set was deleted
    killed_old = tmp_path / f".general-old-{_dead_pid()}@{HOST_TAG}-abcd1234"
    earlier_version = tmp_path / ".general-k2j4_x9a"  # no pid: stale after a day
    fresh_earlier_version = tmp_path / ".general-q8w3_z1b"
    earlier_with_pid = tmp_path / f".general-{_dead_pid()}-abcd1234"  # no tag: its pid may be another container's
    other_host = tmp_path / f".general-{_dead_pid()}@{'0' if HOST_TAG[0] != '0' else '1'}{HOST_TAG[1:]}-abcd1234"
    for folder in (killed, killed_old, earlier_version, fresh_earlier_version, earlier_with_pid, other_host):
        (folder / "images").mkdir(parents=True)
        (folder / "images" / "0.png").write_bytes(b"x")
    day_ago = time.time() - 2 * 86_400
    os.utime(earlier_version, (day_ago, day_ago))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = tmp_path / f".general-{live.pid}@{HOST_TAG}-abcd1234"  # another field's quick start, generating now
        running.mkdir()
        with pytest.warns(UserWarning, match=r"kept 3 staging folder\(s\) in .* whose quick start cannot be checked"
                          ) as said:
            qs.prepare_general(tmp_path, progress=False)  # reuses the set, and cleans up
        # the folders kept for want of an owner to probe are named
        message = next(str(w.message) for w in said if "staging folder" in str(w.message))
        assert all(str(p) in message for p in (fresh_earlier_version, earlier_with_pid, other_host))
        left = sorted(p.name for p in tmp_path.iterdir())
        # another host's pid cannot be probed here (a shared file system): kept until it is a day old
        assert left == sorted(["general", fresh_earlier_version.name, running.name, other_host.name,
                               earlier_with_pid.name])
    finally:
        live.kill()
        live.wait()
    assert qs._unchanged_general(tmp_path / "general")


def test_the_quick_start_replaces_a_land_cover_set_it_wrote_with_other_options(tmp_path, monkeypatch):
    """generate_landcover refuses a folder holding another set; the quick start, which has already refused a
    data/landcover it did not write (unless --force), replaces one an earlier version made with other options."""
    from domains.general.world import generate_landcover

    small = functools.partial(generate_landcover, n_train=4, n_test=2)
    monkeypatch.setattr(qs, "generate_landcover", small)
    landcover = tmp_path / "data" / "landcover"
    small(landcover, seed=9, progress=False)  # an earlier version's set
    qs.prepare_data(tmp_path, "landcover", progress=False, force=True)
    expected = tmp_path / "expected"
    small(expected, **qs.GENERAL_OPTIONS, progress=False)
    assert (landcover / "train.jsonl").read_bytes() == (expected / "train.jsonl").read_bytes()
