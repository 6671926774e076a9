#!/usr/bin/env bash
# Build llama.cpp for this machine's CPU, once, into a cache outside the repository (`make llama-cpp` in a checkout,
# `python -m deploy.llamacpp` for an installed pocket-adapt, run this).
#
# Source: the llama.cpp tree vendored in llama-cpp-python's source distribution on PyPI (fetch.py: from the
# find-links folder or index pip's settings name, checked against a pinned SHA-256 before anything in it is
# unpacked or run), built with CMake (Release, -DGGML_NATIVE=ON) together with pocket-llama, our driver over
# llama.cpp's own libraries. No binaries are downloaded. Only the targets pocket-adapt uses are built:
# pocket-llama, llama-mtmd-cli (the stock multimodal CLI) and llama-quantize (for q4_k_m).
#
# Result: $CACHE/bin/{pocket-llama,llama-mtmd-cli,llama-quantize} and $CACHE/bin/BUILD (the stamp
# deploy/llamacpp checks: llama.cpp version + a hash of our driver's sources). Re-running is a no-op while the
# stamp matches; a changed driver source rebuilds only the driver.
#
# Environment: PYTHON (runs fetch.py, and pip for pip's settings; default the checkout's .venv/bin/python, else
# python3 on PATH), POCKET_LLAMA_CPP (the cache folder; default ${XDG_CACHE_HOME:-~/.cache}/pocket-adapt/
# llama.cpp-<version>), JOBS (parallel jobs; default: CPU count).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
if [ -z "${PYTHON:-}" ]; then  # a checkout's .venv, else the python on PATH (an installed pocket-adapt)
    PYTHON="$HERE/../../.venv/bin/python"
    [ -x "$PYTHON" ] || PYTHON="$(command -v python3 || command -v python)"
fi
CACHE="${POCKET_LLAMA_CPP:-${XDG_CACHE_HOME:-$HOME/.cache}/pocket-adapt/llama.cpp-$VERSION}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
STAMP="llama-cpp-python $VERSION; driver $(cat "$HERE/CMakeLists.txt" "$HERE/pocket_llama.cpp" | sha256sum | cut -c1-16)"

if [ -f "$CACHE/bin/BUILD" ] && [ "$(cat "$CACHE/bin/BUILD")" = "$STAMP" ]; then
    echo "llama.cpp is built: $CACHE/bin ($STAMP)"
    exit 0
fi
mkdir -p "$CACHE"
if [ ! -f "$CACHE/src/CMakeLists.txt" ]; then
    tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # not `pip download`: it runs the sdist's build backend (metadata) before its hash can be checked
    "$PYTHON" "$HERE/fetch.py" "$VERSION" "$SHA256" "$tmp"
    rm -rf "$CACHE/src"
    rm -f "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp/.git"  # a submodule link to nowhere
    mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$CACHE/src"
fi
start=$(date +%s)
cmake -S "$HERE" -B "$CACHE/build" -DLLAMA_CPP_SRC="$CACHE/src" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF > "$CACHE/configure.log"
cmake --build "$CACHE/build" -j "$JOBS" --target pocket-llama llama-mtmd-cli llama-quantize
mkdir -p "$CACHE/bin"
for exe in pocket-llama llama-mtmd-cli llama-quantize; do
    cp "$CACHE/build/bin/$exe" "$CACHE/bin/$exe.tmp" && mv "$CACHE/bin/$exe.tmp" "$CACHE/bin/$exe"
done
echo "$STAMP" > "$CACHE/bin/BUILD"
echo "built llama.cpp ($VERSION) in $(( $(date +%s) - start )) s: $CACHE/bin"
