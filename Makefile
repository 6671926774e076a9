# Two commands on a fresh machine (see README):  make quickstart   |   make test
#
# Both install requirements/dev.lock: every package at the exact version and hash the suite passed with
# (torch's CPU build and nuscenes-devkit included), into a fresh .venv whenever the lock changes; an edit of
# pyproject.toml that leaves the lock as it is installs only pocket-adapt again.
#   make lock          resolve again (uv, pinned) after editing pyproject.toml or requirements/*.in
#   make test-latest   the newest releases pyproject.toml's bounds allow, in .venv-latest, then the suite
#   make test-lowest   the oldest releases they allow (direct dependencies), in .venv-lowest, then the suite
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements/dev.lock
# Where pip (and uv, for make lock) find torch's CPU build. This project's machines keep it in /opt/wheels;
# elsewhere: make TORCH_SOURCE=--extra-index-url=https://download.pytorch.org/whl/cpu ...
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels),--find-links=/opt/wheels,--extra-index-url=https://download.pytorch.org/whl/cpu)
UV_VERSION := 0.13.9
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: setup browser quickstart test lock test-latest test-lowest uv reproduce llama-cpp
setup: $(VENV)/.editable

# A stamp older than the lock means the environment may hold other versions: start again from nothing.
$(VENV)/.installed: $(LOCK) requirements/lock.py
	python3 requirements/lock.py --check
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-deps --require-hashes $(TORCH_SOURCE) -r $(LOCK)
	touch $@

# pocket-adapt itself, editable: any edit of pyproject.toml installs it again (its entry points and metadata come
# from there) and leaves the locked packages as they are; an edit of its dependencies fails the check until `make lock`.
$(VENV)/.editable: $(VENV)/.installed pyproject.toml
	python3 requirements/lock.py --check
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Debian's chromium for the demo's browser test (Playwright drives it; it never downloads a browser)
browser:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }

quickstart: setup
	$(VENV)/bin/adapt quickstart

test: setup browser llama-cpp
	$(PY) -m pytest -q $(PYTEST_ARGS)

# build.sh run with venv $(1)'s python (fetch.py and pip's settings); test-latest / test-lowest pass their own venv
build_llama_cpp = PYTHON=$(1)/bin/python deploy/llamacpp/build.sh

# llama.cpp for this machine's CPU, built once from source (the tree vendored in llama-cpp-python's sdist on PyPI,
# SHA-256 pinned) into a cache outside the repository: ${XDG_CACHE_HOME:-~/.cache}/pocket-adapt/llama.cpp-<version>
# (or $$POCKET_LLAMA_CPP). The GGUF tests, `adapt chat/eval --runtime llamacpp` and bench/ run it. No-op once built.
llama-cpp: setup
	$(call build_llama_cpp,$(VENV))

uv:
	test -x .venv-lock/bin/uv || { python3 -m venv .venv-lock && .venv-lock/bin/python -m pip install -q uv==$(UV_VERSION); }

# The quick-start tables and pocket-tiny's rebuild (README.md) and the tiling table, rewritten in place. Every other
# generated section of README.md / BENCHMARKS.md names the `python bench/X.py --write` that writes it
# (tests/test_reproduce.py checks that each does).
reproduce: setup
	$(PY) bench/reproduce.py all --write
	$(PY) bench/bench_tiling.py --write

lock: uv
	python3 requirements/lock.py --uv .venv-lock/bin/uv --source=$(TORCH_SOURCE)

# The newest releases within pyproject.toml's bounds (torch stays on the locked CPU build: a newer torch
# from PyPI is a CUDA build), so upstream drift shows here before users meet it. Never touches .venv.
# CI=true: a dependency that is missing or fails to import is a failure here, never a skip; so is a missing
# llama.cpp build (the GGUF tests run it), which is built first, as `make llama-cpp` does, with this venv's python.
test-latest: browser
	rm -rf .venv-latest
	python3 -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q $(TORCH_SOURCE) "$$(python3 requirements/lock.py --pin torch)" -e ".[dev]"
	.venv-latest/bin/python -m pip install -q --no-deps nuscenes-devkit "$$(python3 requirements/lock.py --pin executorch)"  # its compiled runtime is built for one torch
	.venv-latest/bin/python -m pip freeze --all --exclude-editable > .venv-latest/freeze.txt
	python3 requirements/lock.py --drift .venv-latest/freeze.txt
	$(call build_llama_cpp,.venv-latest)
	CI=true .venv-latest/bin/python -m pytest -q -p no:cacheprovider --deselect tests/test_lock.py::test_installed_environment_is_the_lock $(PYTEST_ARGS)

# The oldest releases within the bounds for every direct dependency (pins kept), so the lower bounds are
# known to hold, not hoped to. llama.cpp is built first, as for test-latest.
test-lowest: uv browser
	rm -rf .venv-lowest
	python3 requirements/lock.py --uv .venv-lock/bin/uv --source=$(TORCH_SOURCE) --lowest .venv-lowest/requirements.txt
	python3 -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install -q --no-deps --require-hashes $(TORCH_SOURCE) -r .venv-lowest/requirements.txt
	.venv-lowest/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	.venv-lowest/bin/python -m pip freeze --all --exclude-editable > .venv-lowest/freeze.txt
	python3 requirements/lock.py --drift .venv-lowest/freeze.txt
	$(call build_llama_cpp,.venv-lowest)
	CI=true .venv-lowest/bin/python -m pytest -q -p no:cacheprovider --deselect tests/test_lock.py::test_installed_environment_is_the_lock $(PYTEST_ARGS)
