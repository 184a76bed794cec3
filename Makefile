# Two entry points: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
# Installed before the package so that a CPU machine never downloads CUDA wheels; override for GPU builds.
TORCH ?= torch==2.13.0
CORES ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system demo test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[workflow,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	@echo ""
	@echo "Report: results/report/metrics.csv (per slice) and results/report/summary.csv (per volume)"
	@cat results/report/summary.csv | cut -d, -f1-4

# The SLURM test (tests/test_slurm.py) brings up a one-node cluster and the report test opens the HTML report in
# Chromium; as root on Debian their packages are installed here, elsewhere those tests are skipped and say why.
SYSTEM_PACKAGES := slurm-wlm munge chromium
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES)

system:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/bin/chromium ]; }; then \
		$(APT) >/dev/null || (apt-get update -q >/dev/null && $(APT) >/dev/null); fi

test: $(STAMP) system
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/snakefmt Snakefile workflow

clean:
	rm -rf results .snakemake
