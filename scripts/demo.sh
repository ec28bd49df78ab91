#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs a
# working udp overlay between network namespaces on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: installs what is missing (apt-get, npm ci), builds, then runs a udp overlay between 3 network namespaces and pings across it; 1-3 minutes on a fresh machine, about 20 s after that"
bash scripts/install-system-deps.sh
if [ ! -f native/build/Release/flannel_native.node ] || [ ! -d node_modules ]; then npm ci --no-audit --no-fund --loglevel=error; fi
npx tsc -p tsconfig.json
exec node dist/scripts/demo.js "$@"
