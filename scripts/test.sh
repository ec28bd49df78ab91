#!/usr/bin/env bash
# The test command (README, CI): system packages, project install, whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
npm ci --no-audit --no-fund
npm test
