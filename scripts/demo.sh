#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs a
# working udp overlay between network namespaces on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
if [ ! -f native/build/Release/flannel_native.node ] || [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
npx tsc -p tsconfig.json
exec node dist/scripts/demo.js "$@"
