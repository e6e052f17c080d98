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

.PHONY: bootstrap lab lab-up lab-deploy lab-verify lab-down test test-unit test-service \
        test-lab test-times lint lock

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
	$(PYTEST) tests/unit tests/infra tests/policies

test-service: bootstrap
	$(PYTEST) app_image/tests

# The lab suite: the lifecycle test takes the lab down and up (a fresh lab), then the
# roles are deployed, verified over SSH, and deployed again to prove nothing changes.
test-lab: bootstrap
	$(PYTEST) tests/lifecycle
	$(BIN)/pyinfra -y hosts/lab.py deploy.py
	$(PYTEST) tests/hosts tests/e2e tests/lab

test: lint test-unit test-service test-lab

# The lab part of test-lab (not the lifecycle test, not the deploy) against the running
# lab, with a table of seconds per file. Refuses, naming `make lab`, without a lab.
test-times: bootstrap
	$(BIN)/python scripts/test_times.py

lint: bootstrap
	$(BIN)/ruff check .

lock: bootstrap
	$(BIN)/uv pip compile -q pyproject.toml --extra dev app_image/requirements.txt \
	  app_image/requirements-test.txt --python-version 3.11 -o requirements.lock
