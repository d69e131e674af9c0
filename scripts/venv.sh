#!/usr/bin/env bash
# Create (or update) the control machine's virtualenv in .venv: Ansible, Molecule,
# linters, test tools and the service itself (editable, with the server and its
# test extras).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r requirements-dev.txt -e 'service[server,test]'
