# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/skillgraft demo
	$(VENV)/bin/skillgraft lab knowledge --fast

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# mergekit, the graft benchmark's comparison, lives in its own virtualenv (its pins differ from ours)
BENCH_WORK ?= /work/bench-work
MERGEKIT_VENV := $(BENCH_WORK)/mergekit-venv

$(MERGEKIT_VENV)/bin/mergekit-yaml:
	$(PYTHON) -m venv $(MERGEKIT_VENV)
	$(MERGEKIT_VENV)/bin/pip install --quiet -c constraints.txt mergekit

bench: $(STAMP) $(MERGEKIT_VENV)/bin/mergekit-yaml
	$(PY) benchmarks/generation_bench.py
	$(PY) benchmarks/train_bench.py
	$(PY) benchmarks/graft_bench.py --work $(BENCH_WORK) --mergekit-python $(MERGEKIT_VENV)/bin/python

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
