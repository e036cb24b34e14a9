#!/usr/bin/env bash
# Debian's `chromium`, for the browser tests (tests/e2e/test_browser.py): what a user reads in the monitoring
# report, the service's /docs and the MLflow version page is checked in a real headless browser.
# Idempotent (scripts/apt-install.sh); prints the binary's path.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" chromium chromium
