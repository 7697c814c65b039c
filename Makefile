# waprov — see README.md. Every target works on a fresh Debian 12 machine as root.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
# Debian packages the tests use (installed only when missing).
APT_TEST := python3-venv util-linux mount passwd login sudo openssh-server openssh-client iproute2 procps

.PHONY: all demo test lint unit bench deps venv clean

all: test

deps:
	@sh tools/install-deps $(APT_TEST)

$(VENV)/.stamp: setup.py pyproject.toml requirements-test.txt | deps
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -e . -r requirements-test.txt
	touch $@

venv: deps $(VENV)/.stamp

demo: venv
	@$(VPY) tools/demo.py

lint: venv
	$(VENV)/bin/ruff check waprov tests tools bin/waprov
	$(VENV)/bin/ruff format --check waprov tests tools bin/waprov
	$(VENV)/bin/mypy

unit: venv
	$(VPY) -m pytest -q

test: lint unit

bench: venv
	$(VPY) tools/bench.py
	$(VPY) tools/bench_fabric.py
	$(VPY) tools/bench_provision.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
