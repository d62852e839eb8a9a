# Quick start: `make repro` then `make test`. Both create .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# dvc.yaml's `python` must be the venv's, for dvc and for every stage it runs
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv repro test bench ucf101 clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@# unar extracts UCF101.rar (Debian package; no PyPI wheel writes or reads RAR alone)
	@command -v unar >/dev/null || { apt-get install -y -q unar >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q unar >/dev/null; }; } || \
	  echo "note: install unar (apt-get install unar) to extract UCF101.rar"
	@touch $@

repro: venv
	dvc repro

test: venv
	python -m pytest -q tests

bench: venv
	python bench/extract.py --whole

# Real UCF-101 (6.5 GB): download (resumable), check, extract to data/UCF-101, version with DVC
ucf101: venv
	python -m actionrec.download --dest data
	dvc add data/UCF-101

clean:
	rm -rf data/features-partial
