# The two commands of the README: `make demo` (the main job) and `make test`.
# Both start from a fresh clone with nothing but Python: they build .venv here,
# installing torch first (a local CPU wheel) so that pip never pulls CUDA torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# The corpora: ../shared/data beside the clone when it is there; otherwise train.py loads Multi30k from the Hub.
GLAT_DATA_DIR ?= $(if $(wildcard ../shared/data/multi30k),$(abspath ../shared/data))
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_UPDATE_DOWNLOAD_COUNTS=0 HF_HUB_DISABLE_TELEMETRY=1
# Offline whenever the data is local; the Hub is reached only to fetch Multi30k.
RUN_ENV := $(if $(GLAT_DATA_DIR),$(OFFLINE) GLAT_DATA_DIR=$(GLAT_DATA_DIR))

.PHONY: install test demo lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -e ".[dev,bench,onnx]"
	touch $@

test: install
	$(OFFLINE) $(if $(GLAT_DATA_DIR),GLAT_DATA_DIR=$(GLAT_DATA_DIR)) $(BIN)/python -m pytest

demo: install
	$(RUN_ENV) $(BIN)/python training/train.py training/recipes/demo.json

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs
