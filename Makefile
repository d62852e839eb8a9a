# Quick start: `make repro` then `make test`. Both create .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# dvc.yaml's `python` must be the venv's, for dvc and for every stage it runs
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv repro test test-tools report plots push bench compare ucf101 clean

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

test: venv test-tools
	python -m pytest -q tests

# Tools that only tests need, best-effort (root on Debian/Ubuntu), never by `make venv`:
# chromium for the offline plots test, unar for the UCF-101 extraction test, FFmpeg's shared
# libraries for torchcodec's decoder tests. Without them those tests skip and say why (and
# fail under CI=true).
test-tools:
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
push: venv
	python -m actionrec.share

# PR review, offline: report/report.md + PNGs (params, metrics and plots: workspace vs BASE),
# and report/plots.html, every plot on one self-contained page (`make plots BASE=rev` overlays rev)
BASE ?=
OUT ?= report
report: venv
	python -m actionrec.report report --base $(or $(BASE),main) --out $(OUT)

plots: venv
	python -m actionrec.report plots $(if $(BASE),--base $(BASE)) --out $(OUT)

bench: venv
	python bench/decode.py
	python bench/extract.py --whole
	@# both cores, as the 2-minutes-a-run target is stated (train.threads: 1 is for shared cores)
	python bench/train.py --heads lstm,gru,transformer,mean -S threads=0

# heads x seeds through `dvc exp run --queue` + `dvc queue start` -> metrics/compare.md
compare: venv
	python -m actionrec.compare --heads lstm,gru,transformer,mean --seeds 0,1,2 --out metrics/compare.md

# Real UCF-101 (6.5 GB): download (resumable), check, extract to data/UCF-101, version with DVC.
# Only this target needs unar (to extract the RAR): installed best-effort, never by `make venv`.
ucf101: venv
	@$(call apt_best_effort,unar,unar) || true
	@command -v unar >/dev/null || echo "note: install unar to extract UCF101.rar (macOS: brew install unar)"
	python -m actionrec.download --dest data
	dvc add data/UCF-101

clean:
	rm -rf data/features-partial
