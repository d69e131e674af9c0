# Entry points for a lab admin and for CI. Every target installs what it needs.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv host box wheelhouse cluster lint role-vars settings-tables test test-service test-molecule bench bench-cluster bench-load clean

venv: $(VENV)/.done
$(VENV)/.done: requirements-dev.txt service/pyproject.toml
	scripts/venv.sh
	touch $@

host:            ## install and start Vagrant, libvirt and qemu on this machine
	scripts/setup-host.sh

box: host wheelhouse ## build the local Debian 12 Vagrant box (once)
	scripts/build-box.sh

wheelhouse: venv ## wheels of the service and all its dependencies, for the hosts
	scripts/build-wheelhouse.sh

cluster: venv host box wheelhouse ## local cluster up, configured, and a real job run on it (QUEUE=slurm: on Slurm)
	$(if $(QUEUE),JOBQUEUE_QUEUE=$(QUEUE)) scripts/cluster.sh

lint: venv
	ruff check service tests molecule scripts plugins fabfile
	python scripts/role-vars.py --check
	python scripts/settings-tables.py --check
	yamllint -s .
	# The project's Ansible content by name: left to find it, ansible-lint walks
	# .venv's 48,000 files, excluded or not (15 minutes here instead of 30 s). The
	# cluster scenario's test-only vault password lets it read that vault file too.
	ANSIBLE_VAULT_PASSWORD_FILE=molecule/cluster/vault-password ansible-lint --profile production site.yml playbooks roles molecule inventories .config

role-vars: venv  ## defaults/main.yml and README tables from each role's argument specs
	python scripts/role-vars.py

settings-tables: venv  ## service/README.md's settings tables from the settings dataclasses
	python scripts/settings-tables.py

test-service: venv
	scripts/test-service.sh

test-molecule: venv host box wheelhouse
	scripts/test-molecule.sh

# What CI runs: lint, the service's tests, then the Molecule scenarios on VMs
# (cluster and slurm; the others on demand: see scripts/test-molecule.sh).
test: lint test-service test-molecule

bench: venv  ## throughput and latency: dispatcher, then slurm backend beside plain sbatch
	python service/bench/bench_throughput.py
	SLURM_CONF=$$(scripts/test-slurm.sh)/slurm.conf python service/bench/bench_slurm.py

bench-cluster: venv  ## what confinement costs per job, on make cluster's VMs (confined beside unconfined)
	python scripts/bench-confinement.py

bench-load: venv  ## status reads by 5 users beside 500 idle workers waiting, on make cluster's controller
	python scripts/bench-controller-load.py

clean:
	rm -rf build $(VENV)
