# intentlake: `make demo` and `make test` each set up everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
JARS := .cache/jars/.resolved

.DEFAULT_GOAL := help
.PHONY: help setup jars demo test test-fast lint bench clean kafka-up kafka-down redis-up redis-down serve airflow cluster-up cluster-down

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	@scripts/check_java.sh
	@command -v $(PYTHON) >/dev/null || { echo "intentlake needs Python 3.11 ($(PYTHON) not found); set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[platform,dev]"
	@touch $@

$(JARS): jvm/pom.xml jvm/settings.xml $(INSTALLED)
	$(PY) scripts/resolve_jars.py

setup: $(INSTALLED) $(JARS) ## create .venv, install the project, check Java 17, resolve the JVM jars once

jars: $(JARS) ## resolve Delta and the Kafka connector from Maven Central into .cache/jars

demo: setup ## simulate ~200k events and run bronze -> silver -> gold into ./lakehouse
	$(VENV)/bin/intentlake demo

TEST_WORKERS ?= 2
test: setup ## the whole suite (unit, spark, integration, e2e), a test module per worker, TEST_WORKERS at once
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: setup ## the inner loop: pure unit tests only (seconds)
	$(VENV)/bin/pytest -m unit -q

FLINK_VENV := .venv-flink
FLINK_INSTALLED := $(FLINK_VENV)/.installed
.PHONY: bench-flink

BENCH_ARGS ?=
bench: setup $(FLINK_INSTALLED) ## pipeline vs pandas, DuckDB and PyFlink on ~200k events, then freshness, then one 1,000-event batch's phases (bench/README.md; BENCH_ARGS="--scales 1,4,16" ...); results in bench/results/
	$(PY) bench/pipeline.py $(BENCH_ARGS)
	$(PY) bench/batch_phases.py

$(FLINK_INSTALLED): bench/requirements-flink.txt
	@scripts/check_java.sh
	@command -v $(PYTHON) >/dev/null || { echo "PyFlink needs Python 3.11 ($(PYTHON) not found); set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(FLINK_VENV)/bin/python || $(PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLINK_VENV)/bin/python -m pip install --quiet -r bench/requirements-flink.txt
	@touch $@

bench-flink: $(FLINK_INSTALLED) ## create .venv-flink (PyFlink, apart from .venv's py4j pin); `make bench` does it first

lint: setup ## ruff check and format check
	$(VENV)/bin/ruff check spark_jobs tests scripts dags bench
	$(VENV)/bin/ruff format --check spark_jobs tests scripts dags bench

kafka-up: setup ## start a local Kafka broker (KRaft, loopback, port 19092) from Maven Central jars
	scripts/kafka.sh up

airflow: setup ## start Airflow 3.3 on loopback (AIRFLOW_PORT, default 8080) with dags/; prints the UI address and login
	scripts/airflow.sh

kafka-down: ## stop the local Kafka broker
	scripts/kafka.sh down

serve: setup ## Redis, the collector (:8701), the decision API (:8700) and the streaming jobs feeding them; Ctrl-C stops all
	scripts/serve.sh

redis-up: ## start a local Redis for the online store (loopback, port 16379; redis-server from PATH or Debian's packages)
	scripts/redis.sh up

redis-down: ## stop the local Redis
	scripts/redis.sh down

cluster-up: setup ## start a Spark standalone cluster on loopback (a master and two workers); README "Beyond one machine"
	scripts/spark_cluster.sh up

cluster-down: ## stop the local Spark standalone cluster
	scripts/spark_cluster.sh down

clean: ## remove generated data (lakehouse/); keeps .venv and the jar cache
	rm -rf lakehouse spark-warehouse
