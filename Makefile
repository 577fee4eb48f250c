# BackSplit: every target sets itself up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.backsplit-installed
DEMO_OUT ?= demo-output
BENCH_OUT ?= bench-output
SERVE_DATA ?= backsplit-server

.PHONY: install demo test bench serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -e ".[test,web]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/backsplit demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q Testing

bench: $(STAMP)
	$(BIN)/backsplit bench quality --out $(BENCH_OUT) --profile quick

serve: $(STAMP)
	$(BIN)/backsplit serve --data $(SERVE_DATA)

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(BENCH_OUT) build *.egg-info
