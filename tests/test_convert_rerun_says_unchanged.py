"""adapt convert run again on the same source writes nothing and says so; a changed source says what was written."""

import os
from pathlib import Path

from adapt.cli import main
from tests.deps import require


def test_a_rerun_writes_nothing_and_says_so(tmp_path: Path, capsys):
    require("rasterio", "the UC Merced GeoTIFFs")
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert main(["synthesize", "remote_sensing", "--out", str(raw), "--option", "kinds=[ucmerced]",
                 "--option", "n=1", "--no-progress"]) == 0
    argv = ["convert", "remote_sensing", "ucmerced", "--src", str(raw / "ucmerced"), "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    n_tifs = len(list((raw / "ucmerced").glob("*/*.tif")))
    assert capsys.readouterr().out.endswith(f"{out}: {n_tifs + 3} file(s) written or replaced\n")
    before = {p: os.lstat(p).st_ctime_ns for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith(f"{out}: nothing written; every output already held this conversion\n")
    assert {p: os.lstat(p).st_ctime_ns for p in out.rglob("*") if p.is_file()} == before

    tif = next((raw / "ucmerced").glob("*/*.tif"))
    os.utime(tif, ns=(tif.stat().st_atime_ns, tif.stat().st_mtime_ns + 10**9))  # the source replaced: one PNG again
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith(f"{out}: 1 file(s) written or replaced\n")
