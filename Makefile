# Two commands do all the set-up on a fresh machine:
#   make demo   -- creates .venv on first use, then runs the demo campaign on the embedded EMT data
#   make test   -- creates .venv on first use, then runs the test suite
# Another torch build: make install TORCH_INDEX=<wheel index URL> (see README "Install").
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test smoke bench install pretrain

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned (a range would let pip pick a newer, larger build); TORCH_INDEX picks another index
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) '$(TORCH)'
	$(PY) -m pip install -q -e '.[dev]'
	# bmdal_reg: the tests' reference for PV conventions. Its acquisition modules need only torch,
	# numpy and dill; --no-deps skips its experiment suite's requirements (openml, seaborn, ...)
	$(PY) -m pip install -q --no-deps 'bmdal_reg==3.0.2' 'dill>=0.3'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/al-lightning fit -c configs/demo.yaml

smoke: $(VENV)/.installed
	$(VENV)/bin/al-lightning fit -c configs/smoke.yaml

pretrain: $(VENV)/.installed
	$(VENV)/bin/al-lightning pretrain -c configs/pretrain_emt.yaml

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_features.py --quick
	$(PY) benchmarks/bench_acquisition.py --quick

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests
