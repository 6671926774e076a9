"""Make or check `requirements/dev.lock`: the exact, hashed environment that `make setup` installs.

    python3 requirements/lock.py            # resolve again with uv (make lock)
    python3 requirements/lock.py --check    # is the lock still made from today's pyproject.toml and pins?
    python3 requirements/lock.py --pin torch           # the locked requirement, e.g. torch==2.13.0+cpu
    python3 requirements/lock.py --drift freeze.txt    # what a `pip freeze` has that the lock has not
    python3 requirements/lock.py --lowest OUT          # the lowest versions the bounds allow (make test-lowest)

The lock holds pyproject.toml's `dev` extra, its build-system requirements and `pins.in`, resolved
together for CPython 3.11 on x86_64 Linux, followed by `no-deps.in` (packages whose declared
dependencies are wrong, locked alone). Its first line records a digest of those inputs, so a
dependency edit without `make lock` is caught before anything is installed.
Standard library only: `--check` runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCK = HERE / "dev.lock"
PINS = HERE / "pins.in"
NO_DEPS = HERE / "no-deps.in"
EXTRA = "dev"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
DIGEST_PREFIX = "# inputs-sha256: "


def inputs_digest() -> str:
    """A digest of everything the resolution depends on (not of pyproject.toml's other tables)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    inputs = {
        "requires-python": project["project"].get("requires-python"),
        "dependencies": project["project"].get("dependencies", []),
        "optional-dependencies": project["project"].get("optional-dependencies", {}),
        "build-system": project["build-system"]["requires"],
        "pins": PINS.read_text(encoding="utf-8"),
        "no-deps": NO_DEPS.read_text(encoding="utf-8"),
        "target": [EXTRA, PYTHON_VERSION, PLATFORM],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path = LOCK) -> str | None:
    if not lock.is_file():
        return None
    first = lock.read_text(encoding="utf-8").splitlines()[:1]
    return first[0][len(DIGEST_PREFIX):].strip() if first and first[0].startswith(DIGEST_PREFIX) else None


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(text: str) -> dict[str, str]:
    """`name==version` lines of a lock or a `pip freeze`, by normalised name."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            found[normalize(match.group(1))] = match.group(2)
    return found


def locked() -> dict[str, str]:
    return pinned(LOCK.read_text(encoding="utf-8"))


def drift(freeze: Path) -> int:
    """Print how an environment differs from the lock (informational: always succeeds)."""
    lock, env = locked(), pinned(Path(freeze).read_text(encoding="utf-8"))
    env.pop("pip", None)  # the venv's own installer, not part of the lock
    changed = [f"  {name}: {lock[name]} -> {env[name]}" for name in sorted(lock.keys() & env.keys()) if lock[name] != env[name]]
    added = [f"  + {name}=={env[name]}" for name in sorted(env.keys() - lock.keys())]
    removed = [f"  - {name}=={lock[name]}" for name in sorted(lock.keys() - env.keys())]
    print(f"{Path(freeze).parent.name} vs {LOCK.relative_to(ROOT)}: {len(changed)} newer or other, {len(added)} added, {len(removed)} gone")
    print("\n".join(changed + added + removed) or "  (identical)")
    return 0


def check() -> int:
    if recorded_digest() == inputs_digest():
        return 0
    print(f"{LOCK.relative_to(ROOT)} was not made from today's pyproject.toml / requirements/*: "
          "run `make lock`, test, and commit the new lock", file=sys.stderr)
    return 1


def compile_requirements(uv: str, inputs: list[str], options: list[str], prefer: str = "") -> str:
    """uv's resolution of `inputs`; `prefer`: requirements text whose versions uv keeps where they still fit
    (the current lock), so a new dependency changes only what it must."""
    out = HERE / ".prefer.txt"
    out.write_text(prefer, encoding="utf-8")
    cmd = [uv, "pip", "compile", *inputs, "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
           "--generate-hashes", "--annotation-style=line", "--no-header", "--quiet", "--output-file", str(out),
           *options]
    try:
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(run.stderr)
        return out.read_text(encoding="utf-8")
    finally:
        out.unlink(missing_ok=True)


def locked_text(lock: Path = LOCK) -> tuple[str, str]:
    """The current lock's two parts (resolved together, locked alone), without comments: uv's preferences."""
    if not lock.is_file():
        return "", ""
    text = lock.read_text(encoding="utf-8")
    together, _, alone = text.partition(f"# {NO_DEPS.name}: locked without their declared dependencies\n")
    return together, alone


def resolve(uv: str, sources: list[str], extra_args: list[str] = ()) -> str:
    """Resolve the lock's inputs with uv; returns the requirements text (exits on failure)."""
    build = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    build_in = HERE / ".build-system.in"
    build_in.write_text("".join(f"{req}\n" for req in build), encoding="utf-8")
    locked, locked_alone = ("", "") if extra_args else locked_text()  # --lowest: no preferences
    try:
        together = compile_requirements(
            uv, ["pyproject.toml", str(PINS.relative_to(ROOT)), str(build_in.relative_to(ROOT))],
            ["--extra", EXTRA, *sources, *extra_args], prefer=locked)
    finally:
        build_in.unlink(missing_ok=True)
    alone = compile_requirements(uv, [str(NO_DEPS.relative_to(ROOT))], ["--no-deps"], prefer=locked_alone)
    return ("# Made by `make lock` (requirements/lock.py with uv); install with pip --no-deps --require-hashes.\n"
            + together + f"# {NO_DEPS.name}: locked without their declared dependencies\n" + alone)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")


def make(uv: str, sources: list[str]) -> int:
    write(LOCK, f"{DIGEST_PREFIX}{inputs_digest()}\n{resolve(uv, sources)}")
    return 0


def lowest(uv: str, sources: list[str], out: Path) -> int:
    """The lowest versions pyproject.toml's bounds allow for the direct dependencies (make test-lowest),
    with the pins kept: this is how the lower bounds are known to hold."""
    write(out, resolve(uv, sources, ["--resolution", "lowest-direct"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the lock matches its inputs")
    parser.add_argument("--pin", metavar="NAME", help="print the locked `NAME==VERSION`")
    parser.add_argument("--drift", metavar="FREEZE", help="compare a `pip freeze` output with the lock")
    parser.add_argument("--lowest", metavar="OUT", type=Path,
                        help="write the lowest-direct resolution of the same inputs to OUT (make test-lowest)")
    parser.add_argument("--uv", default="uv", help="the uv executable (make lock installs a pinned one)")
    parser.add_argument("--source", action="append", default=[],
                        help="extra uv option for finding torch's CPU build, e.g. '--find-links=/opt/wheels'")
    args = parser.parse_args(argv)
    if args.pin:
        version = locked().get(normalize(args.pin))
        if version is None:
            print(f"{args.pin} is not in {LOCK.relative_to(ROOT)}", file=sys.stderr)
            return 1
        print(f"{args.pin}=={version}")
        return 0
    if args.drift:
        return drift(Path(args.drift))
    if args.lowest:
        return lowest(args.uv, args.source, args.lowest)
    return check() if args.check else make(args.uv, args.source)


if __name__ == "__main__":
    sys.exit(main())
