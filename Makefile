# Two entry points: `make demo` and `make test`. Both create the virtual environment when missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.instkit-installed

.PHONY: demo test lint bench fuzz clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/instkit demo

test: $(STAMP)
	$(BIN)/python tests/setup_browser.py || true
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check instkit tests benchmarks examples
	$(BIN)/mypy instkit

bench: $(STAMP)
	$(BIN)/instkit bench

# The long fuzz run of issue 12 (one worker process, about 30 min on 2 cores): FUZZ_DOCUMENTS=N.
FUZZ_DOCUMENTS ?= 20000
fuzz: $(STAMP)
	nice -n 10 $(BIN)/python -m tests.fuzz.run --documents $(FUZZ_DOCUMENTS) --out fuzz-results/summary.json

clean-venv:
	rm -rf $(VENV)
