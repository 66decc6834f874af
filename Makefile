# attnlab: the two quick-start commands live here (see README.md).
#   make train   set up .venv, build the data, train the default Multi30K config, evaluate, print BLEU
#   make test    set up .venv and run the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Data and build directories: the code's defaults (train/data/paths.py: ../shared/data when it
# exists, else download; builds under .cache/attnlab), or ATTNLAB_DATA_DIR / ATTNLAB_BUILD_DIR from
# the environment, which make passes on unchanged. Same answer inside and outside make.
CONFIG ?= configs/multi30k.py
WORKDIR ?= workdirs/multi30k_default
TEST_ARGS ?=
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install train test data clean
install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

data: install
	$(PY) -m train.data.prepare --config=$(CONFIG)

train: data
	$(PY) -m train.main --config=$(CONFIG) --workdir=$(WORKDIR)
	$(PY) -m train.evaluate --workdir=$(WORKDIR) --checkpoint=latest --split=test_2016_flickr --show=5

test: install
	$(VENV)/bin/ruff format --check --quiet . || { echo 'style: run .venv/bin/ruff format . (pyproject.toml [tool.ruff])'; exit 1; }
	$(VENV)/bin/ruff check --quiet .
	$(PY) -m pytest -q -n 2 --durations=15 $(TEST_ARGS)

clean:
	rm -rf $(VENV) .cache workdirs
