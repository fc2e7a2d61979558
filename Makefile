# The two README commands: `make run` and `make test` (plus `make dev`, `make bench`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.curation/dagster

.PHONY: install run test dev bench clean

$(VENV)/.installed: pyproject.toml
	@echo "installing curation and its dependencies into $(VENV) (a few minutes the first time)"
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

# the UI's runs share the instance's embedded Ray cluster; it is stopped (by its own PIDs) when the UI exits
dev: install
	$(VENV)/bin/dagster dev -w workspace.yaml; status=$$?; $(VENV)/bin/curation ray-stop; exit $$status

bench: install
	$(PY) benchmarks/run.py
	$(PY) benchmarks/bench_read.py
	$(PY) benchmarks/bench_html.py
	$(PY) benchmarks/bench_synthetic.py
	$(PY) benchmarks/bench_tokenize.py
	$(PY) benchmarks/bench_graph.py

clean:
	rm -rf .curation
