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

.PHONY: install test lint sandbox demo airflow distributed-test lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -r $(LOCK)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Re-pin after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --extra dev --extra postgres --extra bench \
		--python-version 3.11 -o $(LOCK)

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

# The distributed topology (CeleryExecutor, PostgreSQL, Redis) as processes on this machine.
distributed-test: install
	$(BIN)/python scripts/distributed_test.py

clean:
	rm -rf $(VENV) airflow_home data .pytest_cache
