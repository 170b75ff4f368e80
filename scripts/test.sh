#!/usr/bin/env bash
# The one test command (README quick start, and what .ci/run calls): installs what the tests
# need when it is missing, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/install.sh
INSTALL_BY=test.sh

# System packages the SSH and Ansible tests use; installed only when missing.
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# become (sudo) in the playbook tests, on both runners.
command -v sudo >/dev/null 2>&1 || missing+=(sudo)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
# The dashboard's browser tests: Debian's Chromium, driven through chromedriver.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
apt_install "${missing[@]}"

# ansible-core from PyPI, for the compatibility tests.
ensure_ansible

# The event step tests' brokers: NATS JetStream on 127.0.0.1:4222 (started when nothing
# listens there) and tansu, a Kafka-protocol broker each Kafka test starts on its own port.
ensure_nats_server
ensure_kafka_broker
# The PostgreSQL store's half of the store suite: a server on 127.0.0.1:5432.
ensure_postgres
# The API fuzz test (tests/serve.rs) runs schemathesis against serve's OpenAPI document.
ensure_schemathesis

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
