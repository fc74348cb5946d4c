# Two commands from a fresh clone: `make train` and `make test`.
# Each creates .venv when missing, installs visionlab with its pinned torch (`make train`: what
# training needs; `make test`: every extra and the test tools, on top), makes sure
# Fashion-MNIST is on the machine, then trains or tests. ARGS passes Hydra overrides.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.installed-dev-stamp
FMNIST_SYSTEM := /usr/share/datasets/fashion-mnist

.PHONY: install install-dev data browser train test lint gpu-check docs docs-serve docs-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(STAMP)

# the extras and the test tools, added to the training install
install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

# Debian's package is the offline source of the official files; elsewhere the first run
# downloads them (see docs/how-to/data.md).
data:
	@if [ ! -f $(FMNIST_SYSTEM)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "note: apt-get could not install dataset-fashion-mnist; training will try the official download"; \
	fi

# Headless Chromium and its driver for the serve page's browser test (which skips without them).
browser:
	@if ! command -v chromedriver >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) || \
		echo "note: apt-get could not install chromium; the browser test will be skipped"; \
	fi

train: install data
	$(PY) scripts/train.py $(ARGS)

test: install-dev data browser
	$(PY) -m pytest -q -n 2 --dist loadfile $(ARGS)

# Style and types (configured in pyproject.toml): ruff (lint, import order, format) on the whole
# tree, mypy on src/ and scripts/.
lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The documentation site (mkdocs.yml; sources in docs/): built strictly into site/, so a broken
# link, a page missing from the nav or a bad reference fails; docs-check then opens the home
# page and a tutorial page in headless Chromium and saves screenshots in outputs/docs-check/.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs
docs: install-dev
	$(MKDOCS) build --strict --site-dir site

docs-serve: install-dev
	$(MKDOCS) serve

docs-check: docs browser
	$(PY) scripts/docs_check.py site --out outputs/docs-check

# visionlab on one CUDA GPU in at most 5 minutes (scripts/gpu_check.py): GPU tests, the default
# run, every entry point with device=cuda, a serve request, fast_93, the benchmark cases; one
# summary file, outputs/gpu_check/summary.md. Installs nothing: the venv's Python when there is
# one, else python3 with its own torch (e.g. after `source .device-pack/setup.sh`).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	$(GPU_PY) scripts/gpu_check.py $(ARGS)
