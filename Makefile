# fmprep — every target runs inside .venv, which the first target that needs it creates.
# Prep defaults live in fmprep/config.py; a variable below is passed on only when you set it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SAMPLE := data/sample/reviews_us_sample.tsv.gz
SOURCE ?= $(SAMPLE)
WORK ?= data/work
OUTPUT ?= data/output
ROWS ?= 20000
SEED ?= 42
# Optional, passed through when set: MIN_CUSTOMER_RATINGS MIN_PRODUCT_RATINGS FILTER_MODE
# TRAIN_SHARDS TEST_SHARDS DAYS_SCALE PART_SIZE SCHEDULER FORCE=1 QUIET=1

opt = $(if $($(1)),$(2) $($(1)))
PREP_ARGS = $(call opt,MIN_CUSTOMER_RATINGS,--min-customer-ratings) \
            $(call opt,MIN_PRODUCT_RATINGS,--min-product-ratings) \
            $(call opt,FILTER_MODE,--filter-mode) $(call opt,TRAIN_SHARDS,--train-shards) \
            $(call opt,TEST_SHARDS,--test-shards) $(call opt,DAYS_SCALE,--days-scale) \
            $(call opt,PART_SIZE,--part-size) $(call opt,SCHEDULER,--scheduler) \
            $(if $(FORCE),--force) $(if $(QUIET),--quiet)

.PHONY: help env sample data test bench clean

help: ## list every target with one line each
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: SOURCE WORK OUTPUT MIN_CUSTOMER_RATINGS MIN_PRODUCT_RATINGS FILTER_MODE"
	@echo "             TRAIN_SHARDS TEST_SHARDS DAYS_SCALE PART_SIZE SCHEDULER FORCE QUIET ROWS SEED"

env: $(STAMP) ## create .venv with fmprep and its test tools (pinned by constraints.txt)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	@touch $@

$(SAMPLE): | $(STAMP)
	$(PY) -m fmprep sample --out $@ --rows $(ROWS) --seed $(SEED)

sample: $(STAMP) ## write a generated review file: make sample ROWS=2000000 OUT=data/bench/2m.tsv.gz
	$(PY) -m fmprep sample --out $(or $(OUT),$(SAMPLE)) --rows $(ROWS) --seed $(SEED)

data: $(STAMP) $(if $(filter $(SAMPLE),$(SOURCE)),$(SAMPLE)) ## SOURCE → WORK (Parquet, id maps) → OUTPUT (RecordIO shards, manifest.json)
	$(PY) -m fmprep data --source '$(SOURCE)' --work '$(WORK)' --output '$(OUTPUT)' $(PREP_ARGS)

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q

BENCH_ROWS ?= 2000000
bench: $(STAMP) ## encoder vs the SageMaker SDK writer; make data on BENCH_ROWS generated rows
	$(PY) benchmarks/bench_encoder.py
	$(PY) benchmarks/bench_data.py --rows $(BENCH_ROWS) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

clean: ## remove data/work and data/output (keeps the sample and .venv)
	rm -rf data/work data/output
