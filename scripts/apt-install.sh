#!/usr/bin/env bash
# apt-install.sh PACKAGE [COMMAND]: Debian's PACKAGE, installed when missing, for the scripts and the tests
# that need a real server or tool (redis-server, postgresql, chromium, prometheus).
# Idempotent: nothing happens when COMMAND is on the PATH or dpkg knows PACKAGE as installed. Installs as
# root, or through sudo; runs `apt-get update` only when the package lists do not know the package yet;
# waits for another apt run's lock (up to 5 minutes) instead of failing. Prints COMMAND's path when given.
set -euo pipefail
package=${1:?usage: apt-install.sh PACKAGE [COMMAND]}
command=${2:-}
installed() {
  if [ -n "$command" ]; then command -v "$command" >/dev/null 2>&1; else dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed'; fi
}
if ! installed; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "apt-install: not root and no sudo: cannot apt-get install $package" >&2; exit 1; }
    SUDO="sudo -n"
  fi
  APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -qq)
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    "${APT[@]}" update >&2
  fi
  "${APT[@]}" install --no-install-recommends "$package" >&2
  installed || { echo "apt-install: $package installed but ${command:-it} is still missing" >&2; exit 1; }
fi
[ -z "$command" ] || command -v "$command"
