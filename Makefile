# Quick start: `make repro` then `make test`. Both create .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# dvc.yaml's `python` must be the venv's, for dvc and for every stage it runs
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv repro test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

repro: venv
	dvc repro

test: venv
	python -m pytest -q tests

bench: venv
	python bench/extract.py

clean:
	rm -rf data/features-partial
