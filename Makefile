# Quick start: `make repro` then `make test`. Both create .venv from requirements.lock first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# dvc.yaml's `python` must be the venv's, for dvc and for every stage it runs
export PATH := $(abspath $(BIN)):$(PATH)
# pytest-xdist: a worker per core, each module's tests in one worker, in order (the shared pipeline
# is built once for all of them: tests/conftest.py). Not --dist loadgroup: with pytest 9 it ignores its groups.
PARALLEL := -n auto --dist loadfile

.PHONY: help venv lock repro verify test test-fast test-tools report review plots push bench compare ucf101 gc clean
.DEFAULT_GOAL := help

help:  ## list every target with what it does (this list)
	@awk -F ':.*## ' '/^[a-z0-9-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.installed  ## create .venv and install requirements.lock (every package pinned, hash-checked)

# Installs exactly requirements.lock (docs/install.md): every package pinned and hash-checked,
# --no-deps so nothing unlisted comes in. The venv's own pip installs the lock's uv and setuptools
# (bin/uv); uv installs the rest from its download cache (seconds when warm, where pip downloads
# 6 GB again), building the lock's one sdist (antlr4-python3-runtime) with the locked setuptools.
# --compile-bytecode, as pip does: else every process compiles torch's modules again where
# PYTHONDONTWRITEBYTECODE is set (imports 2.5x slower, measured)
$(VENV)/.installed: requirements.lock requirements.txt pyproject.toml | $(BIN)/uv
	@$(BIN)/python -m actionrec.lock check
	@echo "make venv: installing requirements.lock into $(VENV): about 6 GB on Linux (PyPI's torch is the CUDA build), minutes on a first install"
	$(BIN)/uv pip install --python $(BIN)/python --require-hashes --no-deps --no-build-isolation --compile-bytecode \
	  -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m actionrec.lock select uv setuptools > $(VENV)/bootstrap.lock
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/bootstrap.lock

# Re-resolve requirements.txt into requirements.lock for the platforms in pyproject.toml
# ([tool.uv] environments), keeping the pins it already has; `make lock UPGRADE=1` moves every
# package not pinned in requirements.txt to its newest version. --python-version is the lower
# bound of pyproject's requires-python (the environments narrow it to 3.11), so that every
# entry's marker names the Python version; the venv's Python reads any sdist's metadata (uv
# would otherwise try to download a Python 3.10 for that).
lock: | $(BIN)/uv  ## re-resolve requirements.txt into requirements.lock (UPGRADE=1: newest versions)
	$(BIN)/uv pip compile requirements.txt --output-file requirements.lock --universal \
	  --python-version 3.10 --generate-hashes --custom-compile-command "make lock" --quiet \
	  --python $(BIN)/python --no-python-downloads $(if $(UPGRADE),--upgrade)
	@$(BIN)/python -m actionrec.lock check

repro: venv  ## run the pipeline (dvc repro) on the embedded demo dataset, or what params.yaml says
	@python -m actionrec.folder  # data.source folder: a class folder without videos, which DVC cannot see, is an error
	dvc repro

# After `make repro`, on any machine: data stages identical to the committed dvc.lock, reference
# features within the measured tolerance, headline metrics within one test video (exit 1 beyond)
verify: venv  ## after make repro: how close this machine came to the commit (exit 1 beyond tolerance)
	python -m actionrec.verify

test: venv test-tools  ## the test suite (pytest), after installing what the tests need
	python -m pytest -q $(PARALLEL) tests

# The tests marked `pipeline` (pyproject.toml) run DVC, a whole stage, Ray or a compiler; those of DVC
# share one pipeline run per session (tests/conftest.py). test-fast runs the rest.
test-fast: venv  ## the quick tests: all but those that run DVC or whole stages (pytest -m "not pipeline")
	python -m pytest -q $(PARALLEL) -m "not pipeline" tests

# Tools that only tests need, best-effort (root on Debian/Ubuntu), never by `make venv`:
# chromium for the offline plots test, unar for the UCF-101 extraction test, FFmpeg's shared
# libraries for torchcodec's decoder tests. Without them those tests skip and say why (and
# fail under CI=true).
test-tools:  ## install chromium, unar and FFmpeg best-effort (Debian/Ubuntu, as root)
	@$(call apt_best_effort,chromium,chromium)
	@$(call apt_best_effort,unar,unar)
	@$(call apt_best_effort,ffmpeg,ffmpeg)

# $(call apt_best_effort,COMMAND,PACKAGE): install PACKAGE unless COMMAND exists; never fail
define apt_best_effort
command -v $(1) >/dev/null || \
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) >/dev/null 2>&1 || \
    { apt-get update -q >/dev/null 2>&1 && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) >/dev/null 2>&1; }; } || \
  echo "note: $(2) not installed (no root?): the tests that need it skip"
endef

# Share every run with the team: dvc push --run-cache, plus the metrics/plots of runs not in
# the workspace (README: Share runs with a team)
push: venv  ## share every run with the team: dvc push --run-cache + the metrics/plots of every run
	python -m actionrec.share

# PR review, offline: report/report.md + PNGs (params, metrics and plots: workspace vs BASE),
# and report/plots.html, every plot on one self-contained page (`make plots BASE=rev` overlays rev)
BASE ?=
OUT ?= report
report: venv  ## report/report.md + PNGs: the workspace against BASE (default main), as committed
	python -m actionrec.report report --base $(or $(BASE),main) --out $(OUT)

# The report against BASE reproduced on this machine (in a temporary worktree on the same DVC
# cache), so that it shows what the change did, not what the machine did: the PR workflow's step
review: venv  ## the same report against BASE reproduced on this machine (the PR workflow's step)
	python -m actionrec.report review --base $(or $(BASE),main) --out $(OUT)

plots: venv  ## report/plots.html: every plot on one page, offline (BASE=rev overlays rev)
	python -m actionrec.report plots $(if $(BASE),--base $(BASE)) --out $(OUT)

bench: venv  ## benchmarks: decoders, feature extraction, training (prints tables)
	python bench/decode.py
	python bench/extract.py --whole
	@# both cores, as the 2-minutes-a-run target is stated (runtime.train_threads: 1 is for shared cores)
	python bench/train.py --heads lstm,gru,transformer,mean -S runtime.train_threads=0

# heads x seeds through `dvc exp run --queue` + `dvc queue start` -> metrics/compare.md
compare: venv  ## every head x 3 seeds through DVC's queue -> metrics/compare.md
	python -m actionrec.compare --heads lstm,gru,transformer,mean --seeds 0,1,2 --out metrics/compare.md

# Real UCF-101 (6.5 GB): download (resumable), check, extract to data/UCF-101, version with DVC.
# Only this target needs unar (to extract the RAR): installed best-effort, never by `make venv`.
ucf101: venv  ## download (or RAR=your UCF101.rar) and extract real UCF-101 into data/UCF-101, dvc add it
	@$(call apt_best_effort,unar,unar) || true
	@command -v unar >/dev/null || echo "note: install unar to extract UCF101.rar (macOS: brew install unar)"
	python -m actionrec.download --dest data $(if $(RAR),--rar $(RAR)) $(if $(SHA256),--sha256 $(SHA256))
	dvc add data/UCF-101

# The per-video feature store (stages/features.py) is only ever reused for identical inputs, and grows by a
# full copy for each change of a features param or of the features stage's code: nothing else frees it
gc: venv  ## free the feature store's entries that neither the params nor any branch's dvc.lock can use
	python -m actionrec.store

clean: venv  ## delete every entry of the per-video feature store (beside the features output: data/features-store)
	python -m actionrec.store --all
