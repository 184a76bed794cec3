# Two entry points: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
# PyTorch goes in before the package. A machine without an NVIDIA driver (no nvidia-smi) takes the CPU build from
# PyTorch's CPU index (no CUDA libraries) where that index is reachable; elsewhere the default index's build (a
# local CPU wheel, or the CUDA build). Either is said before it is installed; override TORCH or TORCH_INDEX.
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(shell command -v nvidia-smi >/dev/null 2>&1 || echo $(TORCH_CPU_INDEX))
REACHABLE := import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)
CORES ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system demo test lint format clean gpu-bundle gpu-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ] && $(BIN)/python -c "$(REACHABLE)" "$(TORCH_INDEX)/" 2>/dev/null; then \
		echo "Installing $(TORCH): the CPU build from $(TORCH_INDEX) (no NVIDIA driver found)"; \
		$(BIN)/python -m pip install --quiet $(TORCH) --extra-index-url "$(TORCH_INDEX)"; \
	else \
		echo "Installing $(TORCH) from the default index ($(if $(TORCH_INDEX),$(TORCH_INDEX) unreachable,an NVIDIA driver found))"; \
		$(BIN)/python -m pip install --quiet $(TORCH); \
	fi
	@$(BIN)/python -c "import torch; print('Installed torch', torch.__version__, '(CUDA ' + torch.version.cuda + ')' if torch.version.cuda else '(CPU build)')"
	$(BIN)/python -m pip install --quiet -e ".[workflow,dev,engines]"
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

# Tests that start OpenVINO (marker openvino) run in a pytest process of their own: its native thread pools stay
# in a process once started, and training or torch.compile after them in the same process crashed there (the
# pipeline never mixes them: each stage is a process of its own).
test: $(STAMP) system
	$(BIN)/python -m pytest -m "not openvino"
	$(BIN)/python -m pytest -m openvino

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/snakefmt Snakefile workflow

# The prepared GPU check (benchmarks/gpu_check.py) for a lent device machine, whose image has PyTorch, numpy, scipy,
# pandas and tifffile but not the packages below: `make gpu-bundle` here fetches their Python 3.12 wheels into .whl/
# and copies the ISBI TIFFs into .gpu_data/ (both ignored); `make gpu-check` there, carrying both, runs the check.
ISBI ?= ../shared/data/isbi2012
GPU_WHEELS := zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 dask==2026.8.0 partd==1.4.2 \
	locket==1.0.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

gpu-bundle:
	rm -rf .whl && mkdir -p .whl .gpu_data
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(PLATFORMS) -d .whl $(GPU_WHEELS)
	cp "$(ISBI)/train-volume.tif" "$(ISBI)/train-labels.tif" .gpu_data/
	@du -sh .whl .gpu_data

gpu-check:
	python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
	PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --isbi .gpu_data --out "$${OUT:-.}/gpu_check.md"

clean:
	rm -rf results .snakemake
