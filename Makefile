# Two commands on a fresh machine (see README):  make quickstart   |   make test
# TORCH pins the CPU build that lies on this project's machines; override it elsewhere, e.g.
#   make TORCH="torch --index-url https://download.pytorch.org/whl/cpu" quickstart
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
EXTRAS ?= dev
# nuscenes-devkit pins numpy<2 in its metadata but runs on numpy 2: installed without its pin (see pyproject.toml)
NUSCENES ?= nuscenes-devkit==1.2.0
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup browser quickstart test
setup: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps "$(NUSCENES)"
	touch $@

# Debian's chromium for the demo's browser test (Playwright drives it; it never downloads a browser)
browser:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }

quickstart: setup
	$(VENV)/bin/adapt quickstart

test: setup browser
	$(PY) -m pytest -q
