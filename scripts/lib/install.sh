# Sourced by scripts/test.sh and scripts/bench.sh: installs what they need when it is missing,
# the same way for both. `INSTALL_BY` names the caller in its messages.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PKG...: installs these Debian packages (nothing when none are given).
apt_install() {
  [ $# -gt 0 ] || return 0
  echo "${INSTALL_BY:-install}: installing $*" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_ansible: ansible-core from PyPI when ansible-playbook is missing, and on the PATH.
ensure_ansible() {
  command -v ansible-playbook >/dev/null 2>&1 && return 0
  echo "${INSTALL_BY:-install}: installing ansible-core" >&2
  python3 -m pip install --quiet ansible-core 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages ansible-core
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  PATH="$PATH:$(python3 -m site --user-base)/bin"
  export PATH
  command -v ansible-playbook >/dev/null 2>&1 && return 0
  echo "${INSTALL_BY:-install}: ansible-playbook not on PATH after install" >&2
  return 1
}

# ensure_mitogen: Mitogen for Ansible (PyPI, pinned), the strategy plugin that users put in
# front of ansible-playbook to make it faster, for B2's comparison; sets MITOGEN_STRATEGIES to
# its strategy plugins' folder (ANSIBLE_STRATEGY_PLUGINS).
MITOGEN_VERSION="${MITOGEN_VERSION:-0.3.54}"
mitogen_dir() {
  python3 -c 'import ansible_mitogen, os; print(os.path.join(os.path.dirname(ansible_mitogen.__file__), "plugins", "strategy"))' 2>/dev/null
}
ensure_mitogen() {
  if ! MITOGEN_STRATEGIES=$(mitogen_dir); then
    echo "${INSTALL_BY:-install}: installing mitogen $MITOGEN_VERSION" >&2
    python3 -m pip install --quiet "mitogen==$MITOGEN_VERSION" 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages "mitogen==$MITOGEN_VERSION"
    MITOGEN_STRATEGIES=$(mitogen_dir) || {
      echo "${INSTALL_BY:-install}: mitogen not importable after install" >&2
      return 1
    }
  fi
  export MITOGEN_STRATEGIES
}

# ensure_schemathesis: schemathesis (PyPI, pinned) for the API fuzz test, which runs it
# against `serve`'s own OpenAPI document.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
ensure_schemathesis() {
  command -v schemathesis >/dev/null 2>&1 && return 0
  echo "${INSTALL_BY:-install}: installing schemathesis $SCHEMATHESIS_VERSION" >&2
  python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  PATH="$PATH:$(python3 -m site --user-base)/bin"
  export PATH
  command -v schemathesis >/dev/null 2>&1 && return 0
  echo "${INSTALL_BY:-install}: schemathesis not on PATH after install" >&2
  return 1
}

# ensure_kafka_broker: the Kafka-protocol broker `tansu` (crates.io, pinned) for the Kafka
# event step tests, installed into a cache directory when missing; exports STEPSYNC_TANSU
# (the tests run it) and puts it on the PATH. tansu's default features have no storage
# engine (records are accepted and never returned), so `dynostore` (memory://) is required;
# `tansu --help` ends with the engines it has. A first build takes minutes.
TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
TANSU_FEATURES="${TANSU_FEATURES:-dynostore}"
TANSU_ROOT="${TANSU_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/stepsync/tansu-$TANSU_VERSION}"

# tansu_usable BIN: BIN is tansu $TANSU_VERSION with the dynostore storage engine.
tansu_usable() {
  [ -x "$1" ] || return 1
  "$1" --version 2>/dev/null | grep -qF "$TANSU_VERSION" || return 1
  "$1" --help 2>/dev/null | grep '^Storage engines:' | grep -q dynostore
}

ensure_kafka_broker() {
  local bin
  for bin in "${STEPSYNC_TANSU:-}" "$(command -v tansu 2>/dev/null || true)" "$TANSU_ROOT/bin/tansu"; do
    [ -n "$bin" ] && tansu_usable "$bin" && break
    bin=
  done
  if [ -z "$bin" ]; then
    command -v cc >/dev/null 2>&1 || apt_install build-essential
    echo "${INSTALL_BY:-install}: installing tansu $TANSU_VERSION into $TANSU_ROOT" >&2
    cargo install --locked --quiet tansu --version "$TANSU_VERSION" \
      --features "$TANSU_FEATURES" --root "$TANSU_ROOT" >&2
    bin="$TANSU_ROOT/bin/tansu"
    if ! tansu_usable "$bin"; then
      echo "${INSTALL_BY:-install}: $bin is not tansu $TANSU_VERSION with dynostore" >&2
      return 1
    fi
  fi
  STEPSYNC_TANSU="$bin"
  PATH="$(dirname "$bin"):$PATH"
  export STEPSYNC_TANSU PATH
}

# ensure_nats_server: nats-server with JetStream on 127.0.0.1:4222 (the NATS event step
# tests use it), installed and started when nothing listens there.
ensure_nats_server() {
  (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && return 0
  [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || apt_install nats-server
  local bin i
  bin="$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)"
  echo "${INSTALL_BY:-install}: starting nats-server on 127.0.0.1:4222" >&2
  as_root mkdir -p /var/lib/nats-server
  as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  for i in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "${INSTALL_BY:-install}: nats-server did not start (see /var/log/nats-server.log)" >&2
  return 1
}

# ensure_postgres: PostgreSQL on 127.0.0.1:5432 for the PostgreSQL store's tests (the store
# suite, src/store/suite.rs: user postgres, trust auth on loopback, as this project's
# machines have it), started when nothing listens there and installed when missing. The
# suite reads STEPSYNC_TEST_POSTGRES for another server.
pg_listening() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
ensure_postgres() {
  [ -n "${STEPSYNC_TEST_POSTGRES:-}" ] && return 0
  pg_listening && return 0
  local fresh= version hba i
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
    fresh=1
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Debian's own cluster asks for passwords over TCP; the tests connect as postgres without
  # one. Only a cluster installed here is changed.
  if [ -n "$fresh" ] && ! grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
  fi
  echo "${INSTALL_BY:-install}: starting PostgreSQL $version on 127.0.0.1:5432" >&2
  # An install may have started it already (then the trust line needs a reload).
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for i in $(seq 1 100); do
    pg_listening && return 0
    sleep 0.1
  done
  echo "${INSTALL_BY:-install}: PostgreSQL did not start (see /var/log/postgresql/)" >&2
  return 1
}
