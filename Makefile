# daytwo: two commands do all the set-up on a fresh machine.
#   make demo   - the whole pipeline on the embedded broker, with a real workload in a real cgroup
#   make test   - ruff, mypy --strict and pytest (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest venv clean

$(BIN)/daytwo: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(BIN)/daytwo

demo: venv
	$(BIN)/daytwo demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .daytwo-demo
