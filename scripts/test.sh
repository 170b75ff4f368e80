#!/usr/bin/env bash
# The one test command (README quick start, and what .ci/run calls): installs what the tests
# need when it is missing, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages the SSH and Ansible tests use; installed only when missing.
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# become (sudo) in the playbook tests, on both runners.
command -v sudo >/dev/null 2>&1 || missing+=(sudo)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ansible-core from PyPI, for the compatibility tests.
if ! command -v ansible-playbook >/dev/null 2>&1; then
  echo "test.sh: installing ansible-core"
  python3 -m pip install --quiet ansible-core 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages ansible-core
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  PATH="$PATH:$(python3 -m site --user-base)/bin"
  export PATH
  command -v ansible-playbook >/dev/null 2>&1 || { echo "test.sh: ansible-playbook not on PATH after install" >&2; exit 1; }
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
