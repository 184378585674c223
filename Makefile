# rayscale — every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROVIDER ?= local
WORKERS ?= 2
# Passed to the job after `--`; override e.g. make submit JOB_ARGS="--data synthetic:rows=20000"
JOB_ARGS ?= --data synthetic:rows=5000,features=20,noise=1.0,seed=0 --num-samples 8 --max-rounds 200
DEMO_ARGS ?= --data synthetic:rows=40000,features=30,noise=1.0,seed=0 --num-samples 16 --max-rounds 300 --scheduler fifo --mode both --storage-path $(CURDIR)/results
STAMP := $(VENV)/.installed

.PHONY: install cluster-up cluster-down submit demo test lint bench clean

install: $(STAMP)

# Reinstall only when the pins change; a second `make install` is a no-op.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

cluster-up: install
	$(BIN)/rayscale cluster up --provider $(PROVIDER) --workers $(WORKERS)

cluster-down: install
	$(BIN)/rayscale cluster down

submit: install
	$(BIN)/rayscale job submit -- $(JOB_ARGS)

# The main job: a 2-worker local cluster, the search with Ray and without, results in results/.
demo: install
	@mkdir -p results
	$(BIN)/rayscale cluster up --provider local --workers 2
	$(BIN)/rayscale job submit --save results/demo.json -- $(DEMO_ARGS); rc=$$?; \
	  $(BIN)/rayscale cluster down; exit $$rc

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check rayscale job tests

clean:
	rm -rf $(VENV) .rayscale results/*.json

# The standard study (synthetic 50k x 40, 16 configs, workers 1,2, FIFO, 3 repeats) and the
# seven figures; writes results/bench/{bench.json,study.json,points.csv,scaling.png}.
bench: install
	$(BIN)/python -m rayscale.bench --out results/bench
