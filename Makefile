# Two commands do everything on a fresh machine:  make demo   and   make test
# Each creates the virtual environment (.venv) on first use, with CPU torch pinned.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c requirements/constraints-cpu.txt

.PHONY: demo test test-quick venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0 -e '.[all,dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import toolkit, torch, polars, faiss, sentence_transformers, trl"
	touch $(STAMP)

## The main job on the bundled demo data with the embedded default models.
demo: $(STAMP)
	$(BIN)/toolkit ingest demo/pairs.jsonl -o $(OUT)/pairs
	$(BIN)/toolkit split $(OUT)/pairs -o $(OUT)/splits --fractions train=0.6,dev=0.2,test=0.2 --seed 0
	@echo "demo outputs are under $(OUT)/"

## The whole test suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## The fast subset for iteration: no models, no servers.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf out
