# waprov — see README.md. Every target works on a fresh Debian 12 machine as root.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
# Debian packages `make demo` uses (installed only when missing): the sandboxed
# provisioning run (useradd, sudo's visudo, sshd and ssh for the login, openssl), the
# resource disk on a loop device (parted, sfdisk, mkfs.ext4) and WALinuxAgent's own pass
# (python3-distro and python3-pkg-resources: what its code, unpacked, not installed, imports).
APT_DEMO := python3-venv util-linux mount passwd login sudo openssh-server openssh-client iproute2 procps \
	parted fdisk e2fsprogs openssl python3-distro python3-pkg-resources
# What the tests use besides: xfsprogs (the resource disk's xfs cases).
APT_TEST := $(APT_DEMO) xfsprogs
# What tools/build-packages (make deb/rpm) and the package tests use: the Debian build
# tools, rpm and the linters, and mmdebstrap for the bookworm chroot test.
APT_PKG := build-essential dpkg-dev debhelper dh-python python3-all python3-setuptools \
	pybuild-plugin-pyproject lintian rpm rpmlint mmdebstrap systemd
# What `make e2e` (tools/e2e, tests/e2e) uses besides mmdebstrap: qemu (TCG), qemu-img,
# socat for guestfwd, genisoimage for the UDF DVD; debugfs (e2fsprogs) reads the guest's disk.
APT_E2E := qemu-system-x86 qemu-utils socat genisoimage e2fsprogs mmdebstrap openssh-client
WAAGENT := .cache/waagent

# pytest-xdist's workers for the unit and sandbox tests (the machine's cores; 1: serial)
JOBS ?= $(shell nproc)

.PHONY: all demo test lint unit e2e e2e-race e2e-if-possible e2e-deps bench deps demo-deps pkg-deps venv \
	demo-venv deb rpm packages clean clean-cache

all: test

# What the demo needs only: no package build tools, linters, rpm or mmdebstrap.
demo-deps:
	@sh tools/install-deps $(APT_DEMO)
	@sh tools/fetch-waagent $(WAAGENT)

deps: pkg-deps demo-deps
	@sh tools/install-deps $(APT_TEST)

# The venv in two steps: waprov and its runtime dependencies (the demo's), then the test
# and lint tools (requirements-test.txt) on top, for everything else.
$(VENV)/.stamp-run: setup.py pyproject.toml | demo-deps
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.stamp: $(VENV)/.stamp-run requirements-test.txt | deps
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

demo-venv: demo-deps $(VENV)/.stamp-run

venv: deps $(VENV)/.stamp

demo: demo-venv
	@$(VPY) tools/demo.py

lint: venv
	$(VENV)/bin/ruff check waprov tests tools bin/waprov
	$(VENV)/bin/ruff format --check waprov tests tools bin/waprov
	$(VENV)/bin/mypy

# In parallel (pytest-xdist, JOBS workers; --dist worksteal: a worker with nothing left
# takes tests queued for the other), the slowest ten listed at the end.
unit: venv
	$(VPY) -m pytest -q -n $(JOBS) --dist worksteal --durations=10

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

# The checkout's files only: the tests' machine-level cache ($WAPROV_TEST_CACHE, by
# default /var/cache/waprov-tests: chroot bases, e2e image bases) stays; `make clean-cache`
# deletes it (the next `make test` builds it again from the Debian mirror, about 8 minutes).
clean:
	rm -rf $(VENV) .cache build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

clean-cache:
	rm -rf "$${WAPROV_TEST_CACHE:-/var/cache/waprov-tests}"
