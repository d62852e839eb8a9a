# Quick start: `make repro` then `make test`. Both create .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# dvc.yaml's `python` must be the venv's, for dvc and for every stage it runs
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv repro test bench compare ucf101 clean

venv: $(VENV)/.installed

# requirements.txt pins every package; actionrec itself is installed editable (pyproject.toml)
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

repro: venv
	dvc repro

test: venv
	python -m pytest -q tests

bench: venv
	python bench/extract.py --whole
	python bench/train.py --heads lstm,gru,transformer,mean

# heads x seeds through `dvc exp run --queue` + `dvc queue start` -> metrics/compare.md
compare: venv
	python -m actionrec.compare --heads lstm,gru,transformer,mean --seeds 0,1,2 --out metrics/compare.md

# Real UCF-101 (6.5 GB): download (resumable), check, extract to data/UCF-101, version with DVC.
# Only this target needs unar (to extract the RAR): installed best-effort, never by `make venv`.
ucf101: venv
	@command -v unar >/dev/null || { apt-get install -y -q unar >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q unar >/dev/null 2>&1; }; } || \
	  echo "note: install unar to extract UCF101.rar (Debian/Ubuntu: apt-get install unar; macOS: brew install unar)"
	python -m actionrec.download --dest data
	dvc add data/UCF-101

clean:
	rm -rf data/features-partial
