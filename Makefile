# Every target sets up .venv first (python3 -m venv + pip install -e .[dev,export]),
# again whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,export]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q -n 2 --durations=15

demo: $(STAMP)
	$(BIN)/python -m pointrend demo

bench: $(STAMP)
	$(BIN)/python -m pointrend bench

clean:
	rm -rf $(VENV) outputs
