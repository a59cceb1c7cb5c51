# auditchain — every target installs or starts what it needs, so any of them works on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PGPORT   ?= 54329
PGHOST   ?= 127.0.0.1
PGUSER   ?= postgres
DB       ?= auditchain
VENV     := .venv
PY       := $(VENV)/bin/python
BIN      := $(VENV)/bin
PGBIN    := /usr/lib/postgresql/15/bin
APT_PKGS := postgresql-15 postgresql-contrib postgresql-15-cron postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl golang-go golang-golang-x-mod-dev prometheus
SUDO     := $(if $(filter 0,$(shell id -u)),,sudo)
export PGHOST PGPORT PGUSER

.PHONY: help setup db-up db-down migrate dist test test-pgtap test-py lint bench bench-smoke demo demo-down soak clean

help:
	@echo "make demo        run auditchain end to end on this machine (installs what is missing)"
	@echo "make demo-down   stop what the demo started (KEEP_DATA=0 also removes the data folder)"
	@echo "make test        lint, pgTAP and pytest suites against a project-local cluster"
	@echo "make setup       install Debian packages and the virtualenv"
	@echo "make db-up       start the project-local PostgreSQL 15 cluster on $(PGHOST):$(PGPORT)"
	@echo "make db-down     stop it"
	@echo "make migrate     install or upgrade the schema in database $(DB)"
	@echo "make dist        build dist/auditchain.sql, a plain-psql installer"
	@echo "make bench       full benchmark suite (minutes; not part of CI)"
	@echo "make soak        long-running soak (not part of CI)"

setup: .run/apt.stamp .run/venv.stamp

.run/apt.stamp:
	@mkdir -p .run
	@missing=""; for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

.run/venv.stamp: pyproject.toml
	@mkdir -p .run
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

db-up: .run/apt.stamp
	@scripts/pg-cluster up

db-down:
	@scripts/pg-cluster down

migrate: setup db-up
	@$(BIN)/auditchain migrate --dsn "postgresql://$(PGUSER)@$(PGHOST):$(PGPORT)/$(DB)" --create-database

dist: .run/venv.stamp
	@mkdir -p dist
	@$(BIN)/auditchain dist --output dist/auditchain.sql
	@echo "wrote dist/auditchain.sql"

lint: .run/venv.stamp
	@$(BIN)/ruff check python tests/py bench
	@$(BIN)/ruff format --check python tests/py bench
	@$(BIN)/sqlfluff lint sql migrations

test-pgtap: setup db-up
	@$(PGBIN)/dropdb --if-exists auditchain_pgtap
	@$(PGBIN)/createdb auditchain_pgtap
	@$(BIN)/auditchain migrate --dsn "postgresql://$(PGUSER)@$(PGHOST):$(PGPORT)/auditchain_pgtap" --quiet
	@$(PGBIN)/psql -qAt -d auditchain_pgtap -c "CREATE EXTENSION IF NOT EXISTS pgtap"
	@pg_prove -h $(PGHOST) -p $(PGPORT) -U $(PGUSER) -d auditchain_pgtap tests/pgtap/*.sql

test-py: setup db-up
	@$(BIN)/pytest

test: lint test-pgtap test-py

bench: setup db-up
	@$(PY) bench/run.py --full

bench-smoke: setup db-up
	@$(PY) bench/run.py --smoke

demo: setup db-up
	@$(PY) -m auditchain.demo

demo-down:
	@if [ -x $(PY) ]; then $(PY) -m auditchain.demo --down || true; fi
	@scripts/pg-cluster down
	@if [ "$(KEEP_DATA)" = 0 ]; then rm -rf .pgdata .run/moto; echo "removed the data folder"; fi

soak: setup db-up
	@$(PY) bench/soak.py

clean: db-down
	rm -rf .pgdata .run dist
