# Conveyor — the two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Parallel pytest workers; each gets its own database and namespace.
TEST_WORKERS ?= 4
# `make bench`: runs of each section (medians are reported), the sections (any of
# noop,email,images,reports,metrics, plus crypto and web, which run only when named), and the sizes
# per measurement: no-op jobs, emails, thumbnails, job rows in the report, job rows behind the
# dashboard. A quick look: make bench BENCH_RUNS=1 BENCH_ONLY=email BENCH_EMAILS=200
BENCH_RUNS ?= 3
BENCH_ONLY ?= noop,email,images,reports,metrics
BENCH_JOBS ?= 20000
BENCH_EMAILS ?= 2000
BENCH_IMAGES ?= 200
BENCH_REPORT_ROWS ?= 100000
BENCH_WEB_ROWS ?= 1000000

.PHONY: demo test lint format services install clean chaos bench docs dist screenshots

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Conveyor needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@bash scripts/ensure-system-packages.sh
	$(BIN)/python -m pip install --quiet -e '.[test,dev,docs]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/conveyor demo

services:
	@bash scripts/ensure-services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/actionlint .github/workflows/*.yml

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The docs site, strict: a broken link or anchor, or a page naming a setting, test or command that
# does not exist, fails the build. Its output is shown only then (--quiet cannot be used: it
# drops the warnings that --strict counts, and a broken link passed).
docs: install
	@echo "mkdocs build --strict → build/site"
	@out=$$(NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict 2>&1) || \
	  { printf '%s\n' "$$out" >&2; exit 1; }

# The release artefacts: an sdist and a wheel in dist/ (the version is pyproject.toml's).
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# The suite in parallel, then the fault-injection suite alone (it stops the shared services).
test: install services lint docs
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup
	$(BIN)/pytest tests/chaos -n 0 -m chaos

# The dashboard's pictures in the docs: the browser tests, saving each page to docs/assets/screenshots.
screenshots: install services
	SCREENSHOTS=1 $(BIN)/pytest -q -n 0 tests/integration/test_web_browser.py

# Fault injection: stops RabbitMQ, PostgreSQL and Redis in turn, so it runs alone and serially.
chaos: install services
	$(BIN)/pytest tests/chaos -n 0 -m chaos

# Conveyor side by side, on the same services: no-op jobs against raw pika, Dramatiq and Celery;
# emails, thumbnails and a report against the same work done without it. Results: bench/results/.
bench: install services
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/compare.py --only $(BENCH_ONLY) --runs $(BENCH_RUNS) --jobs $(BENCH_JOBS) \
	  --emails $(BENCH_EMAILS) --images $(BENCH_IMAGES) --report-rows $(BENCH_REPORT_ROWS) \
	  --web-rows $(BENCH_WEB_ROWS)

clean:
	rm -rf $(VENV) .conveyor outbox .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
