# Two commands do all the set-up on a fresh machine:
#   make demo   -- creates .venv on first use, then runs the demo campaign on the embedded EMT data
#   make test   -- creates .venv on first use, then runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test smoke bench install

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel of torch (a plain `torch` would pull a multi-GB CUDA build); see README for GPUs
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/al-lightning fit -c configs/demo.yaml

smoke: $(VENV)/.installed
	$(VENV)/bin/al-lightning fit -c configs/smoke.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider tests
