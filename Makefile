# Entry points. The two a new user needs (see README.md):
#   make local-install   the main job on the embedded local control plane
#   make test            every test (what CI runs)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
COLLECTION_LINK := .build/collections/ansible_collections/langfuse_ops/platform
LINT_COPY := $(HOME)/.ansible/collections/ansible_collections/langfuse_ops
LOCALENV := tests/localenv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: venv binaries cluster-up cluster-down services-up services-down localenv-up localenv-down \
        local-install lint syntax sanity unit integration integration-full molecule crash crash-ci test test-full upstream-check clean

venv: $(VENV)/.installed $(COLLECTION_LINK)

$(VENV)/.installed: requirements/runtime.txt requirements/test.txt requirements/constraints.txt requirements/awscli.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is needed ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/test.txt -c requirements/constraints.txt
	$(PYTHON) -m venv .build/awscli
	.build/awscli/bin/pip install -q -r requirements/awscli.txt
	ln -sfn $(CURDIR)/.build/awscli/bin/aws $(VENV)/bin/aws
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(CURDIR) $@

binaries:
	$(LOCALENV)/build-binaries.sh

cluster-up: venv
	$(LOCALENV)/cluster.sh up

cluster-down:
	$(LOCALENV)/cluster.sh down

services-up: venv
	$(LOCALENV)/services.sh up

services-down:
	$(LOCALENV)/services.sh down

localenv-up: cluster-up services-up

localenv-down: cluster-down services-down

# The main job: install Langfuse onto the local control plane.
local-install: localenv-up
	source <($(LOCALENV)/cluster.sh env) && source <($(LOCALENV)/services.sh env) && \
	  ansible-playbook playbooks/install.yml -i inventories/local

lint: venv
	yamllint -s .
	# ansible-lint installs this collection into ~/.ansible/collections and
	# would keep using that copy once its version is there (and so would the
	# playbooks run after it): start afresh and leave nothing behind.
	rm -rf $(LINT_COPY)
	rc=0; ansible-lint || rc=$$?; rm -rf $(LINT_COPY); exit $$rc

syntax: venv
	for p in playbooks/*.yml; do ansible-playbook --syntax-check -i inventories/local "$$p"; done

sanity: venv
	$(LOCALENV)/system-packages.sh
	tests/run-sanity.sh

# The fast tier, no cluster: the unit tests on every core and, beside them, the tests that need only the local data
# services (tests/run-unit.sh says why there).
unit: services-up
	tests/run-unit.sh

# CI's tier of the integration tests; integration-full adds the ones tests/integration/groups.py keeps for it.
integration: localenv-up
	source <($(LOCALENV)/cluster.sh env) && source <($(LOCALENV)/services.sh env) && tests/run-integration.sh

integration-full: localenv-up
	source <($(LOCALENV)/cluster.sh env) && source <($(LOCALENV)/services.sh env) && INTEGRATION_TIER=full tests/run-integration.sh

molecule: localenv-up
	source <($(LOCALENV)/cluster.sh env) && source <($(LOCALENV)/services.sh env) && \
	  molecule test -s local

# The crash-consistency suite (tests/crash/suite.py): every playbook killed at points spread over its run, then run
# again; prints its table. CRASH_ARGS narrows it (e.g. "--points 3 --scenarios restore").
crash: localenv-up
	source <($(LOCALENV)/cluster.sh env) && source <($(LOCALENV)/services.sh env) && \
	  python tests/crash/suite.py $(CRASH_ARGS)

# Its bounded form, which `make test` runs: backup.yml killed at one point, then run again, with its table. The
# integration tier kills the upgrade's Helm step and the restore between its steps (test_maintenance_window.py,
# test_restore.py); the whole suite is for a developer's machine (about 10 minutes a playbook per point count).
crash-ci: localenv-up
	source <($(LOCALENV)/cluster.sh env) && source <($(LOCALENV)/services.sh env) && \
	  python tests/crash/suite.py --points 1 --scenarios backup --no-named

test: venv
	tests/run-all.sh

# Every test, the integration tests' full tier included: before a release, or after a change to what that tier covers.
test-full: venv
	INTEGRATION_TIER=full tests/run-all.sh

# The collection against the official charts (a langfuse-k8s git repository at UPSTREAM, never
# committed here): not part of `make test`, since CI has no copy of them. See tests/upstream/check.py.
upstream-check: localenv-up
	@[ -n "$(UPSTREAM)" ] || { echo "usage: make upstream-check UPSTREAM=<a langfuse-k8s git repository>"; exit 2; }
	source <($(LOCALENV)/cluster.sh env) && source <($(LOCALENV)/services.sh env) && \
	  python tests/upstream/check.py "$(UPSTREAM)" $(UPSTREAM_ARGS)

clean: localenv-down
	rm -rf .build
