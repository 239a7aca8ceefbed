# Every target works on a fresh machine and can be run again: `make install` is a no-op when the
# virtualenv is already up to date with the lock file and pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
export AIRFLOW_HOME ?= $(CURDIR)/airflow_home
export CONNECT_DATA_DIR ?= $(CURDIR)/data

.PHONY: install test lint sandbox demo airflow distributed-test lock clean help

install: $(STAMP)

help:
	@echo "make install           .venv from requirements/lock.txt (a no-op when up to date)"
	@echo "make test              the test suite, without the distributed test; PYTEST_ARGS='...' to select"
	@echo "make distributed-test  tests/distributed: CeleryExecutor, PostgreSQL, Redis, 2 workers (~100 s, ~2 GB)"
	@echo "make demo              the sandbox, every DAG once, a summary of what each did"
	@echo "make airflow           the Airflow UI on SQLite with the sandbox behind the default connection"
	@echo "make sandbox           the Connect sandbox in the foreground on 127.0.0.1:8765 (demo seed)"
	@echo "make lint              ruff"
	@echo "make lock              re-pin requirements/lock.txt after a dependency change"
	@echo "make clean             remove .venv, airflow_home and data"

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -r $(LOCK)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Re-pin after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --extra dev --extra postgres --extra sandbox --extra duckdb --extra lineage --extra bench \
		--python-version 3.11 -o $(LOCK)

# The distributed test (marker `distributed`) is left out here, whatever PYTEST_ARGS select: it runs
# only when named (tests/conftest.py), by `make distributed-test`.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

sandbox: install
	$(BIN)/connect-sandbox --seed demo --host 127.0.0.1 --port 8765

demo: install
	$(BIN)/python scripts/demo.py

# Airflow standalone (SQLite, local data folder) with the sandbox behind the default connection.
airflow: install
	$(BIN)/python scripts/airflow_local.py

# The distributed topology (CeleryExecutor, PostgreSQL, Redis) as processes on this machine:
# tests/distributed, marker `distributed` (left out of `make test`). About 100 s and 2 GB; progress
# is logged live, the peak memory (PSS) per component is printed at the end.
distributed-test: install
	$(BIN)/python -m pytest -m distributed tests/distributed -p no:cacheprovider \
		-o log_cli=true --log-cli-level=INFO --log-cli-format='[%(asctime)s] %(message)s' \
		--log-cli-date-format=%H:%M:%S $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) airflow_home data .pytest_cache
