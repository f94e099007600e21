# Two commands on a fresh machine: `make run` (the whole system) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test check bench install install-dev clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "mailqueue needs Python >= 3.11 (found: $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) \
		|| { rm -rf $(VENV); echo "Cannot create a virtualenv: on Debian/Ubuntu run 'sudo apt-get install python3-venv'"; exit 1; }

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --editable .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet --editable '.[dev]'
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Redis (embedded when none runs), the SMTP sink, a worker and the dashboard on :3000
run: $(VENV)/.installed
	$(BIN)/mailqueue run

## The whole test suite against a Redis it starts itself
test: $(VENV)/.installed-dev
	$(BIN)/pytest $(PYTEST_ARGS)

## Lint and type-check
check: $(VENV)/.installed-dev
	$(BIN)/ruff check mailqueue dashboard tests examples bench
	$(BIN)/mypy

## E-mail throughput, the newsletter, workers vs Node, e-mails/s vs Node BullMQ + nodemailer
## (the goal table of issue 12), our dashboard vs Bull Board on a
## million jobs (BENCH_SCALE=0.1 shrinks the fill); writes docs/performance.md
bench: $(VENV)/.installed-dev
	cd bench/node && npm ci --no-audit --no-fund --silent
	$(BIN)/python bench/run.py --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
