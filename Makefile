# One-command set-up and checks. `make help` lists the targets; docs/SETUP.md explains them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
BOOTSTRAP := scripts/bootstrap.sh
export PYTHON VENV

# Stamps: a second `make` skips work whose inputs have not changed.
VENV_STAMP := $(VENV)/.installed
TRITON_STAMP := .cache/tritonserver/.extracted

# mypy fails on a folder without Python files, so only name the ones that have some.
MYPY_DIRS = $(strip $(foreach d,plugin streams tests,\
	$(if $(shell find $(d) -name '*.py' 2>/dev/null | head -n1),$(d))))

.PHONY: help venv system-deps triton demo test lint lock clean

help:
	@echo "make venv         create $(VENV): uv, requirements.lock, recbole (data), -e ."
	@echo "make system-deps  install redis-server with apt-get when it is missing"
	@echo "make triton       unpack tritonserver from the nvidia-pytriton wheel into .cache/"
	@echo "make demo         run the embedded end-to-end demo (explore demo)"
	@echo "make demo STACK=1 the same through tansu, redis, Triton and the Faust worker"
	@echo "make test         ruff, mypy and pytest (starts real redis, tansu and tritonserver)"
	@echo "make lint         ruff (check, format), mypy and the import contract (lint-imports)"
	@echo "make lock         recompile requirements.lock from requirements.in"
	@echo "make clean        remove var/ and .cache/ (keeps $(VENV))"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.lock pyproject.toml $(BOOTSTRAP)
	$(BOOTSTRAP) venv
	@touch $@

system-deps:
	@$(BOOTSTRAP) system-deps

triton: $(TRITON_STAMP)

$(TRITON_STAMP): | $(VENV_STAMP)
	$(BOOTSTRAP) triton
	@touch $@

# STACK=1: through real Kafka (tansu), redis-server and tritonserver (explore demo --stack).
demo: venv system-deps $(if $(STACK),triton)
	$(BIN)/explore demo $(if $(STACK),--stack)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(MYPY_DIRS)
	$(BIN)/lint-imports

test: venv system-deps triton lint
	@rc=0; $(BIN)/pytest || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

FIND_LINKS := $(or $(PIP_FIND_LINKS),$(wildcard /opt/wheels))

lock: | $(VENV_STAMP)
	$(UV) pip compile $(foreach d,$(FIND_LINKS),--find-links $(d)) --python-version 3.11 \
		requirements.in -o requirements.lock --no-header

clean:
	rm -rf var .cache
