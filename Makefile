# Two commands on a fresh machine (see README):  make quickstart   |   make test
# TORCH pins the CPU build that lies on this project's machines; override it elsewhere, e.g.
#   make TORCH="torch --index-url https://download.pytorch.org/whl/cpu" quickstart
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
EXTRAS ?= dev

.PHONY: setup quickstart test
setup: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

quickstart: setup
	$(VENV)/bin/adapt quickstart

test: setup
	$(PY) -m pytest -q
