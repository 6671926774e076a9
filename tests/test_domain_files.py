"""domains.files under failure (issue 14): outputs honour the umask, temporary `.part` files never outlive their run,
an OSError names the file being written, and an output made with other options is not fresh."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from domains.base import ConvertReport, DomainPlugin, SkipInput
from domains.files import (
    HOST_TAG,
    PATH_ESCAPES,
    atomic_write,
    inside_root,
    is_fresh,
    link_or_copy,
    output_key,
    png_bytes,
    remove_stale_parts,
    source_stamp,
    write_output,
    write_splits,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_honour_the_umask(tmp_path, umask_022):
    atomic_write(tmp_path / "a.jsonl", lambda f: f.write(b"{}\n"))
    write_output(tmp_path / "b.png", png_bytes(Image.new("RGB", (2, 2))), tmp_path / "a.jsonl")
    assert _mode(tmp_path / "a.jsonl") == 0o644 and _mode(tmp_path / "b.png") == 0o644
    os.umask(0o077)
    atomic_write(tmp_path / "c.jsonl", lambda f: f.write(b"{}\n"))
    assert _mode(tmp_path / "c.jsonl") == 0o600


def test_link_or_copy_copies_keep_the_source_mode(tmp_path, umask_022):
    src = tmp_path / "cam.jpg"
    src.write_bytes(b"x" * 10)
    src.chmod(0o644)
    link_or_copy(src, tmp_path / "out" / "cam.jpg", "copy")
    assert _mode(tmp_path / "out" / "cam.jpg") == 0o644


def _parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


def test_a_failed_write_leaves_no_part_and_names_the_file(tmp_path):
    def disk_full(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "x.jsonl", disk_full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "x.jsonl")
    assert _parts(tmp_path) == [] and not (tmp_path / "x.jsonl").exists()

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "y.jsonl", lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _parts(tmp_path) == []


def test_an_os_error_without_errno_keeps_its_message_and_names_the_file(tmp_path):
    """OSError("...") given the file name printed "[Errno None] None: path": its own message was lost."""
    def broken(f):
        raise OSError("the device went away")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "x.jsonl", broken)
    assert str(caught.value) == f"the device went away: {tmp_path / 'x.jsonl'}"


def test_a_refused_temporary_file_names_the_target(tmp_path, monkeypatch):
    import domains.files as files

    def refuse(path, flags, mode=0o777, *, dir_fd=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(PermissionError) as caught:
        atomic_write(tmp_path / "x.jsonl", lambda f: f.write(b""))
    assert caught.value.filename == str(tmp_path / "x.jsonl")


def _killed_writer(target: Path) -> None:
    """A child process that starts an atomic write and is killed (SIGKILL) before it finishes."""
    code = ("import os, sys, pathlib\n"
            "from domains.files import atomic_write\n"
            "def hang(f):\n"
            "    f.write(b'half'); f.flush(); print('writing', flush=True); sys.stdin.read()\n"
            f"atomic_write(pathlib.Path({str(target)!r}), hang)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             cwd=Path(__file__).resolve().parents[1])
    assert child.stdout.readline().strip() == b"writing"
    child.kill()
    child.wait()


def test_parts_left_by_a_killed_run_are_removed_on_the_next_run(tmp_path):
    out = tmp_path / "out"
    _killed_writer(out / "images" / "a.png")
    stray = _parts(out)
    assert len(stray) == 1 and stray[0].name.startswith(".a.png.")
    mine = out / f".b.png.{os.getpid()}@{HOST_TAG}-0123abcd.part"  # this live process's: left alone
    mine.write_bytes(b"")
    assert remove_stale_parts(out) == stray
    assert _parts(out) == [mine]


def test_parts_of_unknown_owners_are_kept_at_any_age_and_named(tmp_path):
    """A .part whose writer cannot be probed here was deleted once a day old: a writer stopped for a day (a
    suspended container) lost its file. It is kept and named, for the user to delete."""
    old = tmp_path / ".a.png.k2j3h4_x.part"  # mkstemp-style name of an older version
    new = tmp_path / ".b.png.q9w8e7_r.part"
    for p in (old, new):
        p.write_bytes(b"")
    day = time.time() - 2 * 86400
    os.utime(old, (day, day))
    with pytest.warns(UserWarning, match=rf"kept 2 temporary file\(s\) under {re.escape(str(tmp_path))} whose writer "
                                         rf"cannot be checked from here .*{re.escape(str(old))}"):
        assert remove_stale_parts(tmp_path) == []
    assert _parts(tmp_path) == [old, new]
    assert remove_stale_parts(tmp_path / "missing") == []


def test_plugin_convert_removes_stale_parts_first(tmp_path):
    out = tmp_path / "out"
    _killed_writer(out / "toy_train.jsonl")
    assert len(_parts(out)) == 1

    def convert(src: Path, out: Path, progress: bool = True) -> ConvertReport:
        return write_splits(ConvertReport("toy"), out, "toy", {"train": [{"id": 1}]})

    DomainPlugin(name="toy_parts", converters={"toy": convert}).convert("toy", tmp_path, out)
    assert _parts(out) == [] and (out / "toy_train.jsonl").read_text() == '{"id": 1}\n'


def test_output_key_and_freshness(tmp_path):
    src = tmp_path / "a.tif"
    src.write_bytes(b"raw")
    key = output_key(bands=["B04", "B03", "B02"], stretch=(2, 98), resize=None)
    assert key == output_key(resize=None, stretch=(2, 98), bands=["B04", "B03", "B02"])  # order-free
    assert key != output_key(bands=[8, 4, 3], stretch=(2, 98), resize=None)
    dst = tmp_path / "a.png"
    write_output(dst, png_bytes(Image.new("RGB", (2, 2)), key), src)
    assert is_fresh(dst, [src]) and is_fresh(dst, [src], key=key)
    assert not is_fresh(dst, [src], key=output_key(bands=[8, 4, 3], stretch=(2, 98), resize=None))
    write_output(tmp_path / "b.png", png_bytes(Image.new("RGB", (2, 2))), src)  # without a key: never fresh for one
    assert not is_fresh(tmp_path / "b.png", [src], key=key)


def _replace_with_time(path: Path, data: bytes, mtime_ns: int) -> None:
    """Replace `path` by another file carrying `mtime_ns`, as ``tar x`` or ``cp -p`` of another download does."""
    other = path.with_name(path.name + ".new")
    other.write_bytes(data)
    os.utime(other, ns=(mtime_ns, mtime_ns))
    os.replace(other, path)


def test_an_output_is_stale_once_its_source_is_replaced_by_an_older_or_a_newer_file(tmp_path):
    src = tmp_path / "a.tif"
    src.write_bytes(b"raw")
    t = src.stat().st_mtime_ns
    dst = tmp_path / "a.png"
    write_output(dst, b"made from raw", src)
    assert dst.stat().st_mtime_ns == t and is_fresh(dst, src)
    _replace_with_time(src, b"other", t - 10**12)  # an older download unpacked over it
    assert not is_fresh(dst, src)
    write_output(dst, b"made from other", src)
    assert is_fresh(dst, src)
    _replace_with_time(src, b"third", t + 10**9)
    assert not is_fresh(dst, src)
    # several sources: the output carries the newest time, so replacing an older one is noticed by the stamp
    a, b = tmp_path / "cam_a.jpg", tmp_path / "cam_b.jpg"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    os.utime(a, ns=(t, t))
    os.utime(b, ns=(t + 10**9, t + 10**9))
    stamp = source_stamp([a, b])
    write_output(dst, b"stitched", [a, b])
    assert dst.stat().st_mtime_ns == t + 10**9 and is_fresh(dst, [a, b])
    _replace_with_time(a, b"A", t - 10**9)
    assert is_fresh(dst, [a, b]) and source_stamp([a, b]) != stamp


def test_write_splits_writes_nothing_when_every_split_is_empty(tmp_path):
    report = write_splits(ConvertReport("toy"), tmp_path, "toy", {"train": [], "test": []})
    assert report.written == 0 and report.outputs == {} and not list(tmp_path.iterdir())


def test_extracted_zip_entries_honour_the_umask_and_leave_no_part_on_ctrl_c(tmp_path, umask_022, monkeypatch):
    import zipfile

    from tests.deps import require

    require("pydicom", "domains.medical.dicom")
    from domains.medical.dicom import extract_zip

    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("study/a.dcm", b"a" * 100)
        z.writestr("study/b.dcm", b"b" * 100)
    files = extract_zip(archive, tmp_path / "out")
    assert [_mode(f) for f in files] == [0o644, 0o644]

    real_read = zipfile.ZipExtFile.read

    def interrupted(self, n=-1):
        if self.name.endswith("b.dcm"):
            raise KeyboardInterrupt
        return real_read(self, n)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_zip(archive, tmp_path / "again")
    assert _parts(tmp_path / "again") == [] and (tmp_path / "again" / "study" / "a.dcm").exists()


# --------------------------------------------------------------------------------------------- the path guard
@pytest.mark.parametrize("name", [
    "../../etc/passwd", "..", "a/../../x.jpg", "..\\..\\etc\\passwd", "/etc/passwd", "C:\\Windows\\win.ini",
    "C:x.jpg", "\\\\server\\share\\x.jpg", "", "  ", "a\x00b.jpg",
    5, None, ["a.jpg"], {"path": "a.jpg"},  # a JSON value that is no text: a TypeError traceback, not a skip
])
def test_inside_root_refuses_names_leaving_the_root(tmp_path, name):
    """Issue 15 item 10: the one containment check of every converter reading a name from a data file."""
    with pytest.raises(SkipInput) as info:
        inside_root(tmp_path / "root", name)
    assert info.value.reason == PATH_ESCAPES == "path escapes data root"


def test_inside_root_accepts_names_under_the_root_and_follows_symlinks_only_inside(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"x")
    assert inside_root(root, "a/x.jpg") == root / "a" / "x.jpg"
    assert inside_root(root, "a/../a/./x.jpg") == root / "a" / "x.jpg"
    assert inside_root(root, "a\\x.jpg") == root / "a" / "x.jpg"  # Windows separators
    assert inside_root(root, "missing/y.png") == root / "missing" / "y.png"  # need not exist
    (root / "inner").symlink_to(root / "a", target_is_directory=True)  # a link that stays inside: fine
    assert inside_root(root, "inner/x.jpg") == root / "inner" / "x.jpg"
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"s")
    (root / "leak.jpg").symlink_to(secret)  # as a downloaded archive can carry
    (root / "out").symlink_to(tmp_path, target_is_directory=True)
    for name in ("leak.jpg", "out/secret.jpg"):
        with pytest.raises(SkipInput, match="symlink") as info:
            inside_root(root, name)
        assert info.value.reason == PATH_ESCAPES
    # `..` is judged on the text: inner/.. is the root, not the link target's parent
    assert inside_root(root, "inner/../a/x.jpg") == root / "a" / "x.jpg"
    # the root itself may be a link (a data folder kept on another disk)
    (tmp_path / "linked_root").symlink_to(root, target_is_directory=True)
    assert inside_root(tmp_path / "linked_root", "a/x.jpg") == tmp_path / "linked_root" / "a" / "x.jpg"
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(SkipInput):
        inside_root(root, "loop/x.jpg")


def test_safe_name_keeps_safe_names_and_never_merges_two():
    from domains.files import safe_name

    assert [safe_name(n) for n in ("forest00", "P00001.tif", "a-b_c")] == ["forest00", "P00001.tif", "a-b_c"]
    names = ["森林", "農地", "north/tile", "north_tile", "a b", "a_b", "_a", "a", "..", "."]
    out = [safe_name(n) for n in names]
    assert len(set(out)) == len(names), out  # lossy cleaning alone made 森林 = 農地 = "x", north/tile = north_tile
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s) for s in out), out
    assert safe_name("森林") == safe_name("森林")  # stable across runs


def test_unique_stems_separate_files_that_share_a_stem():
    from domains.files import unique_stems

    names = ["a.png", "a.jpg", "b.tif", "a.jpg.tif", "sub/c.png", "sub_c.png"]
    stems = unique_stems(names)
    assert stems["b.tif"] == "b"  # the plain case keeps the plain name
    assert len(set(stems.values())) == len(names), stems
    assert unique_stems(reversed(names)) == stems  # whatever order the folder listing comes in


def test_inside_root_names_no_full_path(tmp_path, monkeypatch):
    """Where an escaping name leads was a full path (and a symlink's full target): it named the folders around the
    data in every converter's report. It is now said relative to the root, a symlink's target not at all."""
    monkeypatch.chdir(tmp_path)
    root = Path("data")
    (root / "a").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_bytes(b"s")
    (root / "leak.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "loop").symlink_to(tmp_path / "data" / "loop")
    details = []
    for name in ("../../x.jpg", "a/../../y.jpg", "leak.jpg", "loop/z.jpg"):
        with pytest.raises(SkipInput) as info:
            inside_root(root, name)
        details.append(info.value.detail)
    assert details[0] == "'../../x.jpg' leads outside data (to ../../x.jpg)"
    assert details[1] == "'a/../../y.jpg' leads outside data (to ../y.jpg)"
    assert details[2] == "'leak.jpg' leads through a symlink to a place outside data"
    assert all(str(tmp_path) not in d and "secret" not in d for d in details), details


def test_report_names_inputs_relative_to_its_source(tmp_path):
    """Every converter's report named inputs by the path it was given (--src /home/alice/data/... in full); the one
    shared report now names those under its source relative to it, and another input folder by its label."""
    from domains.base import ConvertReport

    src, cams = tmp_path / "src", tmp_path / "nuscenes"
    src.mkdir()
    report = ConvertReport(dataset="d", source=src, out=tmp_path / "out", labels={str(cams): "<nuscenes_root>"})
    report.skip(src / "a" / "b.jpg", "unreadable image", f"{src / 'a' / 'b.jpg'}: cannot decode")
    report.skip(cams / "samples" / "c.jpg", "missing image", f"no image in {cams / 'samples'} (under {src})")
    report.skip(tmp_path / "elsewhere.jpg", "other")  # outside both: named as given
    assert report.examples["unreadable image"] == ["a/b.jpg: cannot decode"]
    assert report.examples["missing image"] == ["<nuscenes_root>/samples/c.jpg: no image in <nuscenes_root>/samples "
                                                "(under .)"]
    assert report.examples["other"] == [f"{tmp_path / 'elsewhere.jpg'}: other"]
    assert ConvertReport(source=src / "qa.json").root == str(src)  # a file: its folder
    assert ConvertReport(source=".").root == "" and ConvertReport().root == ""


def test_a_part_of_another_host_is_kept(tmp_path):
    """On a shared file system a .part of a run on another machine was judged by its pid on this one, where no such
    process runs: a live writer's file was deleted. The name now carries its host; another host's is kept."""
    import domains.files as files

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process of this host holds
    other = "0123abcd" if HOST_TAG != "0123abcd" else "4567cdef"
    theirs = tmp_path / f".a.png.{gone.pid}@{other}-0123abcd.part"
    ours = tmp_path / f".b.png.{gone.pid}@{HOST_TAG}-0123abcd.part"
    older = tmp_path / f".c.png.{gone.pid}@{other}-4567cdef.part"
    for p in (theirs, ours, older):
        p.write_bytes(b"half")
    day = time.time() - 2 * 86400
    os.utime(older, (day, day))
    with pytest.warns(UserWarning, match="kept 2 temporary file"):
        assert remove_stale_parts(tmp_path) == [ours]
    assert _parts(tmp_path) == [theirs, older]
    assert f"@{HOST_TAG}-" in files._part_name(tmp_path / "d.png").name  # what this host writes carries its tag


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times from Linux's /proc")
def test_a_part_whose_pid_now_belongs_to_a_later_process_is_removed(tmp_path):
    """Process ids are reused (soon, in a container): a killed run's .part named with a pid another process took
    since was kept as a live writer's for a day. A process started after the file was written is not its writer."""
    later = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        stale = tmp_path / f".a.png.{later.pid}@{HOST_TAG}-0123abcd.part"
        live = tmp_path / f".b.png.{later.pid}@{HOST_TAG}-4567cdef.part"  # written after it started: its own, kept
        stale.write_bytes(b"half")
        hour = time.time() - 3600
        os.utime(stale, (hour, hour))
        live.write_bytes(b"")
        assert remove_stale_parts(tmp_path) == [stale] and _parts(tmp_path) == [live]
    finally:
        later.kill()
        later.wait()


def test_a_text_write_keeps_its_line_ends_on_every_platform(tmp_path, monkeypatch):
    """atomic_write(binary=False) (the synthetic sets' JSONL) opened its file with Python's default newline, which
    writes '\\r\\n' on Windows: the same call wrote other bytes there than on Linux and macOS."""
    from domains import files

    opened = []
    real = files.os.fdopen

    def spy(fd, mode, **kw):
        opened.append((mode, kw))
        return real(fd, mode, **kw)

    monkeypatch.setattr(files.os, "fdopen", spy)
    atomic_write(tmp_path / "t.jsonl", lambda f: f.write("a\nb\n"), binary=False)
    assert opened == [("w", {"encoding": "utf-8", "newline": "\n"})]
    assert (tmp_path / "t.jsonl").read_bytes() == b"a\nb\n"


def test_a_part_of_another_container_or_boot_with_this_host_name_is_kept(tmp_path):
    """Two containers with one host name (``--network host``, a fixed ``--hostname``) tagged their .part files
    alike, and judged each other's by pid, in pid namespaces that are not the same: a live writer's file was deleted
    (its pid ran nothing here), and an earlier version's untagged one too. The tag is now of the host name, the boot
    and the pid namespace: only this process's own pid space is judged by pid."""
    import socket

    from domains import files

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process here holds
    boot, space = files._pid_space()
    host = socket.gethostname()
    assert HOST_TAG == files.host_tag(host, boot, space)
    container = tmp_path / f".a.png.{gone.pid}@{files.host_tag(host, boot, 'pid:[1]')}-0123abcd.part"
    reboot = tmp_path / f".b.png.{gone.pid}@{files.host_tag(host, 'another boot', space)}-0123abcd.part"
    earlier = tmp_path / f".c.png.{gone.pid}-0123abcd.part"  # an earlier version's: no tag
    named_only = tmp_path / f".d.png.{gone.pid}@{files.hashlib.sha1(host.encode()).hexdigest()[:8]}-0123abcd.part"
    ours = tmp_path / f".e.png.{gone.pid}@{HOST_TAG}-0123abcd.part"
    for p in (container, reboot, earlier, named_only, ours):
        p.write_bytes(b"half")
    with pytest.warns(UserWarning, match="kept 4 temporary file") as said:
        assert remove_stale_parts(tmp_path) == [ours]
    assert _parts(tmp_path) == [container, reboot, earlier, named_only]
    shown = str(said[0].message)
    assert all(str(p) in shown for p in (container, reboot, earlier)) and "and 1 more" in shown
    # a child process shares this pid space, so its tag: what it leaves when killed is judged
    child = subprocess.run([sys.executable, "-c", "from domains.files import HOST_TAG; print(HOST_TAG)"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert child.stdout.strip() == HOST_TAG


def test_writer_state_judges_a_pid_only_in_this_pid_space(tmp_path, monkeypatch):
    """The one rule of the clean-ups of .part files, export staging folders and the demo's runtime folders
    (each had its own copy of it): a pid is judged only under this machine, boot and container's tag."""
    from domains import files
    from domains.files import kept_warning, writer_state

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.time_ns()
    other = "0123abcd" if HOST_TAG != "0123abcd" else "4567cdef"
    assert writer_state(gone.pid, HOST_TAG, now) == "gone"
    assert writer_state(str(os.getpid()), HOST_TAG, now) == "alive"
    for pid, host in ((gone.pid, other), (gone.pid, None), (gone.pid, ""), (None, HOST_TAG), ("x1", HOST_TAG)):
        assert writer_state(pid, host, now) == "unknown", (pid, host)
    monkeypatch.setattr(files.os, "name", "nt")  # processes cannot be probed there
    assert writer_state(gone.pid, HOST_TAG, now) == "unknown"
    said = kept_warning([tmp_path / f"{k}" for k in range(5)], "thing(s)", f"in {tmp_path}", "owner", "job")
    assert said.startswith(f"kept 5 thing(s) in {tmp_path} whose owner cannot be checked from here")
    assert str(tmp_path / "2") in said and str(tmp_path / "3") not in said and "and 2 more" in said
    assert said.endswith("delete them once no job writes there")


@pytest.mark.parametrize("manifest", ['{"notes.txt": "0", "toy_test.jsonl": "0"}', '["notes.txt", 1, "toy_test.jsonl"]',
                                      '"toy_test.jsonl"'])
def test_a_damaged_split_manifest_removes_only_this_data_sets_split_files(tmp_path, manifest):
    """The manifest's names were removed whatever they were: one naming a file of the user's (edited, damaged)
    deleted it, a JSON string was taken letter by letter, a number among the names crashed with a TypeError."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "t").write_text("mine too")
    (tmp_path / "toy_test.jsonl").write_text("{}\n")
    (tmp_path / ".toy.splits.json").write_text(manifest)
    report = write_splits(ConvertReport("toy"), tmp_path, "toy", {"train": [{"id": 1}]})
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "t").read_text() == "mine too"
    assert report.removed == [tmp_path / "toy_test.jsonl"]  # the earlier run's held-out split still goes


def test_inside_root_names_a_root_given_as_dot_by_its_absolute_path(tmp_path, monkeypatch):
    """A root given as "." read "'../x' leads outside . (to ../x)": the message did not say where the root was. A
    root whose text names no folder is now named by its absolute path; any other root as it was given."""
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "data")
    details = []
    for root, name in ((".", "../x.jpg"), ("", "/etc/passwd"), ("./", "\x00"), ("../data", "../../y.jpg")):
        with pytest.raises(SkipInput) as info:
            inside_root(root, name)
        details.append(info.value.detail)
    here = str(tmp_path / "data")
    assert details[0] == f"'../x.jpg' leads outside {here} (to ../x.jpg)"
    assert details[1] == f"'/etc/passwd': an absolute path; expected a path relative to {here}"
    assert details[2] == f"'\\x00': not a file name under {here}"
    assert details[3] == "'../../y.jpg' leads outside ../data (to ../../y.jpg)"  # as given: it names a folder
