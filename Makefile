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
# What the Slicer extension's install step would put into Slicer's Python (requirements generated from
# pyproject, no pip-installed project): the Local-mode test runs the bundled engine with it.
LOCAL_VENV ?= .venv-local
LOCAL_STAMP := $(LOCAL_VENV)/.backsplit-local-installed
LOCAL_REQUIREMENTS := build/requirements-local.txt

.PHONY: install local-venv demo test bench bench-add-case serve screenshot clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -e ".[test,web]"
	touch $(STAMP)

install: $(STAMP)

$(LOCAL_STAMP): pyproject.toml BackSplit/BackSplitSlicer/install.py
	$(PYTHON) BackSplit/BackSplitSlicer/install.py --requirements pyproject.toml $(LOCAL_REQUIREMENTS)
	$(PYTHON) -m venv $(LOCAL_VENV)
	echo "$(TORCH_SPEC)" > $(LOCAL_VENV)/constraints.txt
	$(LOCAL_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCAL_VENV)/bin/python -m pip install --quiet -r $(LOCAL_REQUIREMENTS) -c $(LOCAL_VENV)/constraints.txt \
		$(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
	touch $(LOCAL_STAMP)

local-venv: $(LOCAL_STAMP)

demo: $(STAMP)
	$(BIN)/backsplit demo --out $(DEMO_OUT)

test: $(STAMP) $(LOCAL_STAMP)
	BACKSPLIT_LOCAL_VENV=$(abspath $(LOCAL_VENV)) $(BIN)/python -m pytest -q --durations=25 Testing

bench: $(STAMP)
	$(BIN)/backsplit bench quality --out $(BENCH_OUT) --profile quick

# The Slicer panel's Add case on 512x512x300 voxels and 100 segments (slicer-core MRML): a printed number.
bench-add-case: $(STAMP)
	$(BIN)/python Testing/slicer_module/bench_add_case.py --before-segments 10

serve: $(STAMP)
	$(BIN)/backsplit serve --data $(SERVE_DATA)

screenshot: $(STAMP)
	$(BIN)/python -m BackSplitWeb.screenshot --out Resources/Figures/backsplit-web.png

clean:
	rm -rf $(VENV) $(LOCAL_VENV) $(DEMO_OUT) $(BENCH_OUT) build *.egg-info
