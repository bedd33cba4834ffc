# The two commands of the quick start are `make run` and `make test`.
# Everything they need is installed here, on a fresh Debian 12 machine with Python 3.11, as root.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config/gateway.yaml

# Debian packages the test suite drives as real peers and servers.
DEBIAN_TEST_PACKAGES := python3-venv sip-tester sipsak redis-server mosquitto baresip kamailio \
	espeak-ng sox iproute2 procps chromium postgresql sipvicious redis-sentinel openssl nftables
# Debian packages `make run` needs: only a Python able to make a virtualenv.
DEBIAN_RUN_PACKAGES := python3-venv

.PHONY: run test lint typecheck unit bench deps-run deps-test venv clean

run: deps-run venv
	$(PY) -m gateway run --config $(CONFIG)

test: deps-test venv lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: venv
	$(VENV)/bin/ruff check gateway edge_agent tests bench
	$(VENV)/bin/hadolint Dockerfile

typecheck: venv
	$(VENV)/bin/mypy --strict gateway edge_agent

bench: deps-test venv
	$(PY) -m bench.run_all

# apt-get runs only when a package is missing, so repeated runs stay fast; `apt-get update` comes first.
deps-run:
	@missing=$$(for p in $(DEBIAN_RUN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

deps-test:
	@missing=$$(for p in $(DEBIAN_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis var test-artifacts
