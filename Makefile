# People type `make demo` and `make test`; .ci/run calls `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench bench-brand clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/segments demo-data --out .demo/input --users 3000 --seed 7
	$(BIN)/segments run --input .demo/input --out .demo/out

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# 2M people, ~119M input rows (5.3 GB generated once into benchmarks/data/); about 35 minutes
bench-brand: $(STAMP)
	$(BIN)/python benchmarks/run.py --users 2000000 --brand

clean:
	rm -rf .demo .pytest_cache build
