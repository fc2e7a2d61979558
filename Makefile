# The two README commands: `make run` and `make test` (plus `make dev`, `make bench`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.curation/dagster

.PHONY: install run test dev bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: deploy/local/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

install: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

run: install
	$(VENV)/bin/curation run

test: install
	$(PY) -m pytest

dev: install
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: install
	$(PY) benchmarks/run.py
	$(PY) benchmarks/bench_tokenize.py

clean:
	rm -rf .curation
