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
