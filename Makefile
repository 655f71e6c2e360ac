# daytwo: two commands do all the set-up on a fresh machine.
#   make demo   - the whole pipeline on the embedded broker, with a real workload in a real cgroup
#   make test   - ruff, mypy --strict and pytest (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest venv tools clean \
        bench-throughput bench-state-size bench-drift-latency bench-quality bench-backfill

# npm tools the tests use: the Compose schema (deploy/tools), GitHub's OpenAPI
# description served by Prism for the forge contract tests (tests/contract), and
# Mermaid's parser for the PR charts (tests/tools/mermaid).
NPM_TOOLS := deploy/tools/node_modules/.installed tests/contract/node_modules/.installed \
             tests/tools/mermaid/node_modules/.installed

$(BIN)/daytwo: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@touch $@

venv: $(BIN)/daytwo

%/node_modules/.installed: %/package.json %/package-lock.json
	npm ci --prefix $* --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

tools: $(NPM_TOOLS)

demo: venv
	$(BIN)/daytwo demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv tools
	$(BIN)/pytest

test: lint typecheck pytest

# One command per benchmark (docs/benchmarks.md); each records its result block there.
# ARGS passes options, e.g. make bench-throughput ARGS='--quick --no-record'.
bench-throughput: venv
	$(BIN)/python -m bench.throughput $(ARGS)

bench-state-size: venv
	$(BIN)/python -m bench.state_size $(ARGS)

bench-drift-latency: venv
	$(BIN)/python -m bench.drift_latency $(ARGS)

bench-quality: venv
	$(BIN)/python -m bench.quality $(ARGS)

bench-backfill: venv
	@command -v promtool >/dev/null || { echo "bench-backfill needs Debian's prometheus package (apt-get install prometheus)"; exit 2; }
	$(BIN)/python -m bench.backfill $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .daytwo-demo \
	  tests/contract/node_modules deploy/tools/node_modules tests/tools/mermaid/node_modules
