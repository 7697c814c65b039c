# waprov — see README.md. Every target works on a fresh Debian 12 machine as root.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
# Debian packages the tests use (installed only when missing). python3-distro and
# python3-pkg-resources: what WALinuxAgent's code (unpacked, not installed) imports.
APT_TEST := python3-venv util-linux mount passwd login sudo openssh-server openssh-client iproute2 procps \
	parted fdisk e2fsprogs xfsprogs python3-distro python3-pkg-resources
# What tools/build-packages (make deb/rpm) and the package tests use: the Debian build
# tools, rpm and the linters, and mmdebstrap for the bookworm chroot test.
APT_PKG := build-essential dpkg-dev debhelper dh-python python3-all python3-setuptools \
	pybuild-plugin-pyproject lintian rpm rpmlint mmdebstrap systemd
# What `make e2e` (tools/e2e, tests/e2e) uses besides mmdebstrap: qemu (TCG), qemu-img,
# socat for guestfwd, genisoimage for the UDF DVD; debugfs (e2fsprogs) reads the guest's disk.
APT_E2E := qemu-system-x86 qemu-utils socat genisoimage e2fsprogs mmdebstrap openssh-client
WAAGENT := .cache/waagent

.PHONY: all demo test lint unit e2e e2e-race e2e-if-possible e2e-deps bench deps pkg-deps venv deb rpm packages clean

all: test

deps: pkg-deps
	@sh tools/install-deps $(APT_TEST)
	@sh tools/fetch-waagent $(WAAGENT)

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

pkg-deps:
	@sh tools/install-deps $(APT_PKG)

# Packages from the working tree, into dist/ (tools/build-packages: lintian, rpmlint).
deb: pkg-deps
	tools/build-packages deb

rpm: pkg-deps
	tools/build-packages rpm

packages: pkg-deps
	tools/build-packages deb rpm

e2e-deps:
	@sh tools/install-deps $(APT_E2E)

# Real boots under qemu (tests/e2e, about 10 minutes): fails where qemu cannot run.
e2e: venv pkg-deps e2e-deps
	tools/e2e

# waprov's and cloud-init's time to Ready over 5 boots each (about 10 minutes).
e2e-race: venv pkg-deps e2e-deps
	tools/e2e --race 5

# The same from `make test`: a machine that cannot run qemu is skipped, loudly.
e2e-if-possible: venv pkg-deps e2e-deps
	tools/e2e --if-possible

# packages first: tests/test_packages.py and test_chroot.py use dist/ (and rebuild it
# only when it is missing or older than the tree).
test: lint packages unit e2e-if-possible

# waprov/ byte-compiled first, as the packages install it: the sandboxes' read-only file
# system cannot store bytecode, so without it each sandboxed run would compile from source.
bench: venv
	$(VPY) -m compileall -q waprov
	$(VPY) tools/bench.py
	$(VPY) tools/bench_fabric.py
	$(VPY) tools/bench_provision.py
	$(VPY) tools/bench_resourcedisk.py
	$(VPY) tools/bench_boot.py

clean:
	rm -rf $(VENV) .cache build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
