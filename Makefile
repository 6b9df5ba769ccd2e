# Each target sets up what it needs itself (idempotent, fast when nothing changed).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
PYTEST_ARGS ?=
TIER ?=

.PHONY: venv system-deps controlplane controlplane-core setup-demo setup-test node-binaries demo test test-cluster-demo lint format bench typecheck-tree clean-venv lock images

venv:
	@scripts/bootstrap-venv.sh

system-deps:
	@scripts/install-system-deps.sh

# The control plane, then the real node's kubelet, kube-proxy and pause, then CoreDNS:
# each script is a no-op when its stamp in the bin directory matches. None of them needs the
# Python environment, so a first run builds them beside it (`setup-demo`, `setup-test`).
controlplane: controlplane-core
	@if [ -x platform/build-node.sh ]; then platform/build-node.sh; fi
	@if [ -x platform/build-coredns.sh ]; then platform/build-coredns.sh; fi

# Only the kwok control plane: what the local demo runs on (a containerd node builds its own
# binaries when `loopline cluster up --runtime containerd` first needs them).
controlplane-core:
	@if [ -x platform/build.sh ]; then platform/build.sh; fi

# The Python environment, the Debian packages and the Go builds do not depend on one another:
# on a fresh machine they run side by side, which is most of the first run's wait.
setup-demo:
	@$(MAKE) --no-print-directory -j3 venv system-deps controlplane-core
setup-test:
	@$(MAKE) --no-print-directory -j3 venv system-deps controlplane

# Only the node's binaries (`loopline cluster up --runtime containerd` needs them).
node-binaries:
	@platform/build-node.sh
	@platform/build-coredns.sh

demo: setup-demo
	$(PY) -m loopline.cli.main demo $(DEMO_ARGS)

# `make test` runs every tier; `make test TIER=unit` (or integration, e2e) selects one.
test: setup-test
	@rc=0; $(PY) -m pytest $(if $(TIER),-m $(TIER)) $(PYTEST_ARGS) || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# The closed loop on real pods alone (`loopline demo --cluster --quick` on the session's
# containerd node, operator restarted twice); `make test` runs it after the other real-node tests.
test-cluster-demo: setup-test
	$(PY) -m pytest tests/realnode/test_demo_on_node.py $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) scripts/typecheck_tree.py build/typecheck
	$(PY) -m mypy build/typecheck/loopline
	$(PY) scripts/lint_imports.py build/typecheck
	$(PY) scripts/check_sizes.py

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The runtime and training images (docker/loopline.Dockerfile, docker/torch-layer.Dockerfile) with
# mmdebstrap and podman into podman's store under ~/.cache/loopline, cached by content hash;
# `IMAGES_ARGS=--only runtime` builds one.
images: venv system-deps
	$(PY) -m loopline.cli.main images build $(IMAGES_ARGS)

bench: venv system-deps controlplane
	$(PY) -m benchmarks $(BENCH_ARGS)

# Regenerate requirements/lock.txt from requirements/*.in (needs the registries).
lock:
	scripts/lock.sh
