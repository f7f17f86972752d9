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
# TRAIN_SHARDS TEST_SHARDS DAYS_SCALE PART_SIZE SCHEDULER FORMAT META LAYOUT FORCE=1 QUIET=1

# --flag='value': one argument even with spaces (PART_SIZE='128 MB') or a leading dash
# (PART_SIZE=-5MB), and never shell syntax.
opt = $(if $($(1)),$(2)='$($(1))')
PREP_ARGS = $(call opt,MIN_CUSTOMER_RATINGS,--min-customer-ratings) \
            $(call opt,MIN_PRODUCT_RATINGS,--min-product-ratings) \
            $(call opt,FILTER_MODE,--filter-mode) $(call opt,TRAIN_SHARDS,--train-shards) \
            $(call opt,TEST_SHARDS,--test-shards) $(call opt,DAYS_SCALE,--days-scale) \
            $(call opt,PART_SIZE,--part-size) $(call opt,SCHEDULER,--scheduler) \
            $(call opt,FORMAT,--format) $(if $(META),--meta '$(META)') \
            $(if $(FORCE),--force) $(if $(QUIET),--quiet)

# VERBOSE=1: the libraries' log lines too (botocore's credentials and retries, Dask's), for
# fmprep and scripts/train_deploy.py alike (they read FMPREP_VERBOSE).
export FMPREP_VERBOSE := $(VERBOSE)
# Errors and warnings name a setting as the make variable you set (PART_SIZE=lots), not as the
# command-line flag make passed it to (--part-size); fmprep and train_deploy.py read this.
export FMPREP_SPELLING := make

.PHONY: help env sample data report test bench bench-fm clean

help: ## list every target with one line each
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: SOURCE WORK OUTPUT MIN_CUSTOMER_RATINGS MIN_PRODUCT_RATINGS FILTER_MODE"
	@echo "             TRAIN_SHARDS TEST_SHARDS DAYS_SCALE PART_SIZE SCHEDULER FORMAT META FORCE QUIET VERBOSE"
	@echo "             ROWS SEED LAYOUT"
	@echo "  bench:      BENCH_SIZES BENCH_TOOLS BENCH_REPEAT SKIP_REFERENCE_ABOVE BENCH_FM_ROWS"
	@echo "  train/serve: BACKEND ROLE REGION INSTANCE_TYPE INSTANCE_COUNT IMAGE_URI EPOCHS NUM_FACTORS"
	@echo "             PREDICTOR_TYPE MINI_BATCH_SIZE HP PORT CUSTOMER PRODUCT DATE K ARTIFACT"
	@echo "             INPUT SCORES INPUT_FORMAT MODEL_DIR"
	@echo "examples:"
	@echo "  make data SOURCE='s3://bucket/reviews/*.tsv.gz' WORK=s3://bucket/work OUTPUT=s3://bucket/fm"
	@echo "  make data MIN_CUSTOMER_RATINGS=3 FILTER_MODE=kcore DAYS_SCALE=years TRAIN_SHARDS=40"
	@echo "  make data SCHEDULER=tcp://10.0.0.5:8786"
	@echo "  make train EPOCHS=10 NUM_FACTORS=64 HP='linear_lr=0.01 factors_lr=0.001'"
	@echo "  make deploy && make predict CUSTOMER=10001 PRODUCT=B00ABC1234 DATE=2015-08-31 && make undeploy"

env: $(STAMP) ## create .venv with fmprep and its test tools (pinned by constraints.txt)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	@touch $@

$(SAMPLE): | $(STAMP)
	$(PY) -m fmprep sample --out $@ --rows $(ROWS) --seed $(SEED)

sample: $(STAMP) ## write a generated review file: make sample ROWS=2000000 OUT=data/bench/2m.tsv.gz
	$(PY) -m fmprep sample --out $(or $(OUT),$(SAMPLE)) --rows $(ROWS) --seed $(SEED) $(call opt,LAYOUT,--layout)

data: $(STAMP) $(if $(filter $(SAMPLE),$(SOURCE)),$(SAMPLE)) ## SOURCE → WORK (Parquet, id maps) → OUTPUT (RecordIO shards, manifest.json)
	$(PY) -m fmprep data --source '$(SOURCE)' --work '$(WORK)' --output '$(OUTPUT)' $(PREP_ARGS)

report: $(STAMP) ## OUTPUT/report/index.html: rows funnel, rating distributions, cold start, learning curve
	$(PY) -m fmprep report --output '$(OUTPUT)' $(if $(filter command line environment,$(origin WORK)),--work '$(WORK)') $(call opt,SCHEDULER,--scheduler) $(if $(QUIET),--quiet)

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q

# --- train / serve: scripts/train_deploy.py (defaults in fmprep/config.py) ----------------------
# Passed on only when set: BACKEND=local|sagemaker REGION ROLE INSTANCE_TYPE INSTANCE_COUNT
# IMAGE_URI EPOCHS NUM_FACTORS PREDICTOR_TYPE MINI_BATCH_SIZE HP="name=value …" PORT DATE;
# predict needs CUSTOMER= and PRODUCT=. WORK is passed to predict only when you set it (the
# manifest remembers the WORK that make data used).
TD := $(PY) scripts/train_deploy.py
TD_ARGS = --output '$(OUTPUT)' $(call opt,BACKEND,--backend) $(call opt,REGION,--region) \
          $(if $(QUIET),--quiet)
AWS_ARGS = $(call opt,ROLE,--role) $(call opt,INSTANCE_TYPE,--instance-type) \
           $(call opt,INSTANCE_COUNT,--instance-count) $(call opt,IMAGE_URI,--image-uri)
HP_ARGS = $(call opt,EPOCHS,--epochs) $(call opt,NUM_FACTORS,--num-factors) \
          $(call opt,PREDICTOR_TYPE,--predictor-type) \
          $(call opt,MINI_BATCH_SIZE,--mini-batch-size) $(foreach h,$(HP),--hp '$(h)')

.PHONY: train deploy predict undeploy evaluate recommend import-model score

train: $(STAMP) ## train FM: BACKEND=local (default) | sagemaker (ROLE=arn:…, OUTPUT=s3://…)
	$(TD) train $(TD_ARGS) $(AWS_ARGS) $(HP_ARGS)

deploy: $(STAMP) ## serve the model: local server on 127.0.0.1 (PORT=8080) or a SageMaker endpoint
	$(TD) deploy $(TD_ARGS) $(AWS_ARGS) $(call opt,PORT,--port)

predict: $(STAMP) ## predict one rating: make predict CUSTOMER=… PRODUCT=… [DATE=YYYY-MM-DD]
	$(TD) predict $(TD_ARGS) $(if $(CUSTOMER),--customer '$(CUSTOMER)') \
	    $(if $(PRODUCT),--product '$(PRODUCT)') $(call opt,DATE,--date) \
	    $(if $(filter command line environment,$(origin WORK)),--work '$(WORK)')

undeploy: $(STAMP) ## stop the local server, or delete the SageMaker endpoint, its config and model
	$(TD) undeploy $(TD_ARGS)

evaluate: $(STAMP) ## the model vs train mean, biases and popularity: OUTPUT/model/evaluation.json
	$(TD) evaluate $(TD_ARGS)

recommend: $(STAMP) ## top K (K=10) products per customer → OUTPUT/recommendations/; CUSTOMER=… prints one list
	$(TD) recommend $(TD_ARGS) $(call opt,K,--k) $(if $(CUSTOMER),--customer '$(CUSTOMER)') \
	    $(if $(filter command line environment,$(origin WORK)),--work '$(WORK)') \
	    $(call opt,SCHEDULER,--scheduler)

import-model: $(STAMP) ## SageMaker FM model.tar.gz → OUTPUT/model: ARTIFACT=s3://… (default: the SageMaker job's)
	$(TD) import-model $(TD_ARGS) $(call opt,ARTIFACT,--artifact) \
	    $(call opt,PREDICTOR_TYPE,--predictor-type)

score: $(STAMP) ## a score per row: make score INPUT=pairs.csv (customer_id,product_id[,review_date]) → OUTPUT/scores/
	$(TD) score $(TD_ARGS) $(AWS_ARGS) $(if $(INPUT),--input '$(INPUT)') \
	    $(call opt,SCORES,--scores) $(call opt,INPUT_FORMAT,--input-format) \
	    $(call opt,PART_SIZE,--part-size) $(call opt,SCHEDULER,--scheduler) \
	    $(call opt,MODEL_DIR,--model-dir) \
	    $(if $(filter command line environment,$(origin WORK)),--work '$(WORK)')

# The curve of issue 15: 1 M to 40 M rows (sizes above 5 M come as files of 5 M rows), on
# threads and on 2 workers of 1 GiB; DuckDB, the pandas reference (up to 4 M) and the floor
# side by side, best of BENCH_REPEAT runs up to 4 M rows. 40 M rows take ~15 minutes.
BENCH_SIZES ?= 1000000,4000000,10000000,40000000
BENCH_TOOLS ?= floor,reference,duckdb,threads,dask-1w,dask-2w
BENCH_REPEAT ?= 2
SKIP_REFERENCE_ABOVE ?= 4000000
# One 1 GiB worker is measured up to 10 M rows (2 files: the 1 → 2 worker speed-up), which
# keeps make bench near 20 minutes.
BENCH_ONE_WORKER_MAX ?= 10000000
bench: $(STAMP) ## encoder vs SDK writer; make data vs a DuckDB SQL prep, the pandas reference and the machine floor at BENCH_SIZES rows, on threads and 2 workers of 1 GiB; plots docs/performance_*.svg
	@$(PY) -c 'import duckdb' 2>/dev/null || $(PY) -m pip install -q -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/bench_encoder.py
	$(PY) benchmarks/bench_scale.py --rows $(BENCH_SIZES) --tools $(BENCH_TOOLS) --memory-limit 1GiB --repeat $(BENCH_REPEAT) --skip-reference-above $(SKIP_REFERENCE_ABOVE) --max-rows dask-1w=$(BENCH_ONE_WORKER_MAX) --out data/bench/results.json
	$(PY) benchmarks/plot_scale.py data/bench/results.json docs/performance

BENCH_FM_ROWS ?= 20000,1000000
bench-fm: $(STAMP) ## make train's defaults vs surprise SVD / SVD++ and myFM: test RMSE and fit time (× SVD) on generated data (BENCH_FM_ROWS) and MovieLens 100K
	@$(PY) -c 'import surprise, myfm' 2>/dev/null || $(PY) -m pip install -q -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/bench_fm.py --rows $(BENCH_FM_ROWS) --out data/bench/fm.json $(BENCH_FM_ARGS)

clean: $(STAMP) ## stop a local server, remove only the files fmprep wrote to WORK and OUTPUT (keeps yours, the sample and .venv)
	@if [ -f '$(OUTPUT)/endpoint.json' ]; then $(PY) scripts/train_deploy.py undeploy --output '$(OUTPUT)'; fi
	$(PY) -m fmprep clean --work '$(WORK)' --output '$(OUTPUT)' $(if $(QUIET),--quiet)
