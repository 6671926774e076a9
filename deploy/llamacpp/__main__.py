"""``python -m deploy.llamacpp``: build llama.cpp for this machine (what `make llama-cpp` runs in a checkout).

Runs build.sh with this interpreter (fetch.py, pip's settings), so an installed pocket-adapt needs no checkout. The
tools the build needs are looked for first; a missing one is named with how to get it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from deploy.llamacpp import HERE, VERSION, LlamaCppError, binary, cache_dir

TOOLS = {  # tool -> how to get it
    "cmake": "pip install cmake",
    "c++": "a C++17 compiler, e.g. apt install g++ (or set CXX)",
    "sha256sum": "apt install coreutils",
}


def main(argv: list[str] | None = None) -> int:
    # parsed first, so that --help (or a mistyped flag) is answered and never starts a 20-40 minute build
    argparse.ArgumentParser(prog="python -m deploy.llamacpp", description=(
        f"Build llama.cpp {VERSION} and pocket-llama from source into {cache_dir()} (about 20-40 minutes on 2 "
        "cores, once); does nothing when that build is already there. Takes no arguments.")).parse_args(argv)
    try:
        print(f"llama.cpp is built: {binary().parent}")
        return 0
    except LlamaCppError:
        pass
    missing = [f"{tool} ({how})" for tool, how in TOOLS.items()
               if shutil.which(tool) is None and not (tool == "c++" and os.environ.get("CXX"))]
    if missing:
        print(f"python -m deploy.llamacpp: error: building llama.cpp {VERSION} needs: " + "; ".join(missing),
              file=sys.stderr)
        return 1
    print(f"building llama.cpp {VERSION} from source into {cache_dir()} (about 20-40 minutes on 2 cores, once)",
          flush=True)
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON") or sys.executable}
    return subprocess.call(["bash", str(HERE / "build.sh")], env=env)


if __name__ == "__main__":
    raise SystemExit(main())
