#!/usr/bin/env bash
# Debian's `chromium`, for the browser tests (tests/e2e/test_browser.py): what a user reads in the monitoring
# report, the service's /docs and the MLflow version page is checked in a real headless browser.
# Idempotent: nothing happens when `chromium` is already on the PATH. Installs as root, or through sudo;
# runs `apt-get update` only when the package lists do not know the package yet. Prints the binary's path.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  command -v chromium
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-chromium: not root and no sudo: cannot apt-get install chromium" >&2; exit 1; }
  SUDO="sudo -n"
fi
APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -qq)
if ! apt-cache show chromium >/dev/null 2>&1; then
  "${APT[@]}" update
fi
"${APT[@]}" install --no-install-recommends chromium >&2
command -v chromium
