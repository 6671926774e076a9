"""The expected outcome of ``dicom_to_rgb`` on every file of pydicom's own test data, pinned in a table.

    python -m tests.pydicom_sweep            # (re)write tests/data/pydicom_sweep.json
    python -m tests.pydicom_sweep --check    # compare only; exit 1 and list the differences

Each file's entry is ``{"outcome": "decoded", "size": [w, h], "mean_rgb": [r, g, b]}`` or
``{"outcome": "<exception class>", "reason": "<DicomError.reason>"}``. The table holds the versions of
pydicom and of the pixel decoders it was made with: outcomes depend on them (which test files ship,
which codecs decode), so after an upgrade check the differences and regenerate.
``tests/test_medical_dicom.py`` compares the live outcome of each file with its entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pydicom
import pydicom.data

from domains.medical.dicom import DicomError, dicom_to_rgb

TABLE = Path(__file__).parent / "data" / "pydicom_sweep.json"
TEST_FILES = Path(pydicom.data.DATA_ROOT) / "test_files"
COMMAND = "python -m tests.pydicom_sweep"
# distributions whose versions decide the outcomes (pydicom first)
VERSIONED = ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls",
             "numpy", "pillow")
# mean_rgb is compared with this tolerance (in 0-255 levels): decoder patch releases may move lossy pixels
# by a level or so, while a wrong window, inversion or colour conversion moves the means by far more
MEAN_TOLERANCE = 1.0


def testdata_files() -> list[Path]:
    """``pydicom.data.get_testdata_files()`` with downloads disabled: only the files shipped on disk."""
    def no_download(*_args: Any, **_kwargs: Any) -> str:
        raise RuntimeError("downloads are disabled in tests")

    with mock.patch("pydicom.data.data_manager.data_path_with_download", no_download):
        found = pydicom.data.get_testdata_files()
    return sorted(Path(p) for p in found if Path(p).is_file())


def key_of(path: Path) -> str:
    """The table key of a test file: its path under pydicom's ``test_files`` folder."""
    return path.relative_to(TEST_FILES).as_posix()


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`VERSIONED` (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def sweep_outcome(path: Path) -> dict[str, Any]:
    """What ``dicom_to_rgb(path)`` does: the decoded image's size and channel means, or the error."""
    try:
        image = dicom_to_rgb(path)
    except Exception as err:  # recorded, not raised: the test requires DicomError with the path in its message
        entry: dict[str, Any] = {"outcome": type(err).__name__}
        if isinstance(err, DicomError):
            entry["reason"] = err.reason
            entry["names_file"] = str(path) in str(err)
        else:
            entry["message"] = str(err)[:200]
        return entry
    pixels = np.asarray(image, dtype=np.float64)
    return {"outcome": "decoded", "mode": image.mode, "size": [image.width, image.height],
            "mean_rgb": [round(float(m), 2) for m in pixels.reshape(-1, pixels.shape[-1]).mean(axis=0)]}


def sweep() -> dict[str, dict[str, Any]]:
    return {key_of(p): sweep_outcome(p) for p in testdata_files()}


def load_table(path: Path = TABLE) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def build_table() -> dict[str, Any]:
    return {"generator": COMMAND, "versions": versions(), "mean_tolerance": MEAN_TOLERANCE, "files": sweep()}


def dump_table(table: dict[str, Any]) -> str:
    """The table as JSON with one line per file (readable diffs when it is regenerated)."""
    head = {k: v for k, v in table.items() if k != "files"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(table["files"].items())]
    body = json.dumps(head, indent=1, sort_keys=True)[:-2]
    return body + ',\n "files": {\n' + ",\n".join(lines) + "\n }\n}\n"


def differs(expected: dict[str, Any], got: dict[str, Any], tolerance: float = MEAN_TOLERANCE) -> bool:
    """True when `got` is not the pinned outcome `expected` (channel means within `tolerance`)."""
    if expected.keys() != got.keys():
        return True
    for name, want in expected.items():
        if name == "mean_rgb":
            if len(want) != len(got[name]) or any(abs(a - b) > tolerance for a, b in zip(want, got[name])):
                return True
        elif got[name] != want:
            return True
    return False


def version_note(table: dict[str, Any]) -> str:
    """Where the table's versions and the installed ones differ, said plainly; else that they agree."""
    pinned, now = table.get("versions", {}), versions()
    changed = [f"{name} {pinned.get(name)} -> {now.get(name)}" for name in VERSIONED if pinned.get(name) != now.get(name)]
    if not changed:
        return f"the table was made with the installed versions (pydicom {now['pydicom']}); this is a regression"
    return (f"the table was made with pydicom {pinned.get('pydicom')}, and installed versions differ "
            f"({'; '.join(changed)}): the outcomes are version-specific, so if the new outcome is right, "
            f"regenerate the table with `{COMMAND}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the table instead of writing it")
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)  # pydicom's notes on odd files, not outcomes
    table = build_table()
    if args.check:
        pinned = load_table(args.out)
        keys = sorted(set(pinned["files"]) | set(table["files"]))
        bad = [k for k in keys if differs(pinned["files"].get(k, {}), table["files"].get(k, {}))]
        for k in bad:
            print(f"{k}: pinned {pinned['files'].get(k)}, now {table['files'].get(k)}")
        if bad:
            print(version_note(pinned))
        return 1 if bad else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump_table(table), encoding="utf-8")
    counts: dict[str, int] = {}
    for entry in table["files"].values():
        counts[entry.get("reason", entry["outcome"])] = counts.get(entry.get("reason", entry["outcome"]), 0) + 1
    print(f"wrote {args.out}: {len(table['files'])} files (pydicom {table['versions']['pydicom']}): "
          + ", ".join(f"{k}: {n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
