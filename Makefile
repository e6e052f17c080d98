# mcpdeploy — run as root on Debian 12. Everything installs into .venv/.
#   make lab        the local lab: up, deploy every role, verify; prints URL, CA, API key
#   make test       every test: unit, service, lab (deploy, verify, idempotence)
#   make test-unit  no Docker, seconds
#   make test-times where the lab suite's time goes, per file (needs a deployed lab)
#   make lab-down   remove the lab's containers, network and volumes
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/pytest
LAB_SSH := /var/lib/mcpdeploy/lab/ssh_config
UNIT_TESTS := tests/unit tests/infra tests/policies
SERVICE_TESTS := app_image/tests
LAB_TESTS := tests/hosts tests/e2e tests/lab

.PHONY: bootstrap lab lab-up lab-deploy lab-verify lab-down lab-fresh test test-unit \
        test-service test-offline test-lab test-times lint lock

bootstrap:
	scripts/bootstrap

lab: lab-up lab-deploy lab-verify

lab-up: bootstrap
	$(BIN)/mcpdeploy lab up

lab-deploy: bootstrap
	$(BIN)/pyinfra -y hosts/lab.py deploy.py

lab-verify: bootstrap
	$(PYTEST) tests/hosts tests/e2e
	$(BIN)/mcpdeploy lab status

lab-down: bootstrap
	$(BIN)/mcpdeploy lab down

test-unit: bootstrap
	$(PYTEST) $(UNIT_TESTS)

test-service: bootstrap
	$(PYTEST) $(SERVICE_TESTS)

# A fresh lab, deployed: the lifecycle test takes the lab down and up, then every role
# is deployed.
lab-fresh: bootstrap
	$(PYTEST) tests/lifecycle
	$(BIN)/pyinfra -y hosts/lab.py deploy.py

# The lab suite: a fresh lab, its roles verified over SSH and deployed again to prove
# nothing changes, releases, switches, faults.
test-lab: lab-fresh
	$(PYTEST) $(LAB_TESTS)

# The unit and service tests, one after the other.
test-offline: bootstrap
	$(PYTEST) $(UNIT_TESTS)
	$(PYTEST) $(SERVICE_TESTS)

# Everything. The unit and service tests run beside the fresh lab's setup (two jobs, the
# deploy mostly waits on its hosts; -O prints each job's output whole once it ends), then
# the lab suite runs alone: its load and timing tests do not share the CPU.
test: lint
	$(MAKE) --no-print-directory -j2 -O test-offline lab-fresh
	$(PYTEST) $(LAB_TESTS)

# The lab part of test-lab (not the lifecycle test, not the deploy) against the running
# lab, with a table of seconds per file. Refuses, naming `make lab`, without a lab.
test-times: bootstrap
	$(BIN)/python scripts/test_times.py

lint: bootstrap
	$(BIN)/ruff check .

lock: bootstrap
	$(BIN)/uv pip compile -q pyproject.toml --extra dev app_image/requirements.txt \
	  app_image/requirements-test.txt --python-version 3.11 -o requirements.lock
