# Every target sets up .venv first (python3 -m venv + pip install -e .[dev,export,viz,cityscapes]),
# again whenever pyproject.toml changes. The benchmarks (benchmarks/, not installed with the
# package) run from this checkout: `make bench`, `make bench-quick`, `make bench ARGS=...`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: test lint demo bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,export,viz,cityscapes]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q -n 2 --durations=15

demo: $(STAMP)
	$(BIN)/python -m pointrend demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

bench-quick:
	$(MAKE) bench ARGS=--quick

clean:
	rm -rf $(VENV) outputs
