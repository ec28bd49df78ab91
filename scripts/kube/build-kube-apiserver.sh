#!/usr/bin/env bash
# (Kept in flannel-ts so the Kubernetes tests and the bench run without ../shared: the same
# steps as ../shared/tools/kube. tests look for binaries in KUBE_BIN_DIR, then ../shared/tools/kube.)
# Reproducible offline build of kube-apiserver (and kubectl) with the system Go.
#
#   build-kube-apiserver.sh SRC OUTDIR [TAG]
#
# SRC is one of:
#   /path/to/bare-or-normal.git   a kubernetes git dir (e.g. the search tool's fetch
#                                 mirror); TAG (e.g. v1.26.15) is `git archive`d
#   /path/to/kubernetes-*.tar.gz  a source tarball with vendor/ (e.g. Debian's
#                                 kubernetes_1.20.5+really1.20.2.orig.tar.gz)
#   /path/to/source-dir           an already unpacked kubernetes tree with vendor/
#   debian                        download Debian bookworm's `kubernetes` source
#                                 package (1.20.2, vendored, builds with Go 1.19)
#                                 with a private deb-src apt config (no system change)
# TAG defaults to the version found in the source (CHANGELOG / debian version).
#
# Builds in GOPATH mode (GO111MODULE=off) exactly like kubernetes' own
# hack/lib/golang.sh did up to 1.29: vendor/k8s.io/* are symlinks into staging/
# and Go 1.19 refuses -mod=vendor module mode on 1.20's go.mod ("updates to go.mod
# needed"). No network is used (GOPROXY=off). Heavy steps run under nice -n 19.
# Env: WHAT="kube-apiserver kubectl" (default), GOCACHE (default OUTDIR/.gocache),
#      WORK (default OUTDIR/.work: unpacked source + GOPATH).
set -euo pipefail

SRC=${1:?usage: $0 SRC OUTDIR [TAG]}
OUT=${2:?usage: $0 SRC OUTDIR [TAG]}
TAG=${3:-}
WHAT=${WHAT:-"kube-apiserver kubectl"}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$OUT/.work}
export GOCACHE=${GOCACHE:-$OUT/.gocache}
mkdir -p "$WORK" "$GOCACHE"

echo "== go: $(go version)"
TREE=$WORK/src-tree
rm -rf "$TREE"; mkdir -p "$TREE"

if [[ $SRC == debian ]]; then
  A=$WORK/apt; mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/parts" "$WORK/debsrc"
  # deb-src twins of the host's own apt sources (whatever mirror the host uses)
  : > "$A/sources.list"
  [[ -f /etc/apt/sources.list ]] && sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list >> "$A/sources.list"
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$A/parts/${f##*/}"
  done
  for f in /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] && sed -n 's/^deb \(.*\)/deb-src \1/p' "$f" > "$A/parts/${f##*/}"
  done
  APTO=(-o "Dir::Etc::SourceList=$A/sources.list" -o "Dir::Etc::SourceParts=$A/parts" -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache")
  apt-get "${APTO[@]}" update >/dev/null
  (cd "$WORK/debsrc" && apt-get "${APTO[@]}" source --download-only kubernetes 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  SRC=$(ls "$WORK"/debsrc/kubernetes_*.orig.tar.gz | head -1)
  DEBVER=$(basename "$(ls "$WORK"/debsrc/kubernetes_*.dsc | head -1)" .dsc)
  echo "== Debian source: $DEBVER"
fi

if [[ -d $SRC && ( -f $SRC/HEAD || -d $SRC/.git ) && ! -f $SRC/go.mod ]]; then
  [[ -n $TAG ]] || { echo "TAG required for a git dir; tags there:"; git -C "$SRC" tag -l 'v1.2*' | sort -V | tail -20; exit 1; }
  echo "== git archive $TAG from $SRC ($(git -C "$SRC" log -1 --format='%H %cI' "$TAG"))"
  git -C "$SRC" archive "$TAG" | tar -x -C "$TREE"
  KSRC=$TREE
elif [[ -f $SRC && $SRC == *.tar.* || $SRC == *.tgz ]]; then
  echo "== unpack $SRC"
  nice -n 19 tar -xf "$SRC" -C "$TREE"
  KSRC=$(find "$TREE" -mindepth 1 -maxdepth 2 -name go.mod -printf '%h\n' | head -1)
elif [[ -d $SRC && -f $SRC/go.mod ]]; then
  KSRC=$(cd "$SRC" && pwd)
else
  echo "cannot use SRC=$SRC" >&2; exit 1
fi
[[ -d $KSRC/vendor ]] || { echo "no vendor/ in $KSRC: cannot build offline" >&2; exit 1; }
echo "== go.mod: $(grep -m1 '^go ' "$KSRC/go.mod")"

if [[ -z $TAG ]]; then
  # CHANGELOG/CHANGELOG-1.20.md's newest "# v1.20.x" heading, else debian version
  TAG=$(grep -hm1 -oE '^# v1\.[0-9]+\.[0-9]+$' "$KSRC"/CHANGELOG/CHANGELOG-1.*.md 2>/dev/null | sort -V | tail -1 | tr -d '# ' || true)
  if [[ -n ${DEBVER:-} ]]; then TAG=v$(sed -E 's/.*really([0-9.]+).*/\1/' <<<"$DEBVER"); fi
  TAG=${TAG:-v0.0.0-unknown}
fi
MAJOR=$(cut -d. -f1 <<<"${TAG#v}"); MINOR=$(cut -d. -f2 <<<"${TAG#v}")
echo "== version $TAG"

# GOPATH mode: $GOPATH/src/k8s.io/kubernetes -> source tree
GP=$WORK/gopath
mkdir -p "$GP/src/k8s.io"
ln -sfn "$KSRC" "$GP/src/k8s.io/kubernetes"
BD=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LD="-s -w"
for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=$TAG -X $p.gitMajor=$MAJOR -X $p.gitMinor=$MINOR -X $p.gitTreeState=archive -X $p.buildDate=$BD"
done

cd "$GP/src/k8s.io/kubernetes"
export GOPATH=$GP GO111MODULE=off GOFLAGS= CGO_ENABLED=0 GOPROXY=off

# --- fix 1: pkg/generated/openapi/zz_generated.openapi.go is not in release
# tarballs / git (upstream `make` generates it via Makefile.generated_files).
# Same inputs and flags as the Makefile's KUBE openapi target.
if [[ ! -f pkg/generated/openapi/zz_generated.openapi.go ]]; then
  echo "== generating pkg/generated/openapi/zz_generated.openapi.go"
  nice -n 19 go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  find -H . \( -not \( \( -path ./_\* -o -path ./.\* -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
    | xargs grep -l -E '^// *\+k8s:' \
    | sed 's|^\./||; s|^staging/src/|vendor/|' \
    | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' \
    | while read -r f; do rf=$(sed 's|^vendor/k8s.io/|staging/src/k8s.io/|' <<<"$f"); if grep -q '+k8s:openapi-gen=' "$rf"; then dirname "$f"; fi; done \
    | LC_ALL=C sort -u > "$WORK/openapi_dirs.txt"
  IN=$(sed 's|^|k8s.io/kubernetes/|' "$WORK/openapi_dirs.txt" | paste -sd,)
  nice -n 19 "$WORK/openapi-gen" --logtostderr -i "$IN" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$WORK/KUBE_violations.report" 2> "$WORK/openapi-gen.log"
  if diff -q "$WORK/KUBE_violations.report" api/api-rules/violation_exceptions.list >/dev/null; then
    echo "   $(wc -l < "$WORK/openapi_dirs.txt") input packages; API-rule report matches upstream's list"
  else
    echo "   WARNING: API-rule violation report differs from api/api-rules/violation_exceptions.list"
  fi
fi

# --- fix 2: github.com/modern-go/reflect2 v1.0.1 (vendored by k8s <= 1.22.x)
# crashes on Go >= 1.18 ("fatal error: fault ... reflect2.(*UnsafeMapType).
# UnsafeIterate" from json-iterator's sortKeysMapEncoder, e.g. on a node status
# PATCH or ?pretty=true). Swap in v1.0.2 from Debian's
# golang-github-modern-go-reflect2-dev (downloaded and unpacked, not installed).
GOMINOR=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [[ $GOMINOR -ge 18 ]] && grep -q '^# github.com/modern-go/reflect2 v1.0.1' vendor/modules.txt && [[ ! -f vendor/github.com/modern-go/reflect2/go_above_118.go ]]; then
  echo "== replacing vendored reflect2 v1.0.1 with Debian's v1.0.2 (Go 1.$GOMINOR)"
  R=$WORK/reflect2; rm -rf "$R"; mkdir -p "$R"
  (cd "$R" && apt-get download golang-github-modern-go-reflect2-dev 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  dpkg-deb -x "$R"/golang-github-modern-go-reflect2-dev_*.deb "$R/x"
  RS=$R/x/usr/share/gocode/src/github.com/modern-go/reflect2
  grep -q 'go1.18' "$RS/go_above_118.go" || { echo "unexpected reflect2 package content" >&2; exit 1; }
  rm -f vendor/github.com/modern-go/reflect2/*.go vendor/github.com/modern-go/reflect2/*.s
  cp "$RS"/*.go "$RS"/*.s vendor/github.com/modern-go/reflect2/
fi
for w in $WHAT; do
  echo "== building $w"
  s=$(date +%s)
  nice -n 19 go build -ldflags "$LD" -o "$OUT/$w" "./cmd/$w"
  echo "== $w built in $(( $(date +%s) - s ))s: $(stat -c %s "$OUT/$w") bytes, gzip -9: $(gzip -9c "$OUT/$w" | wc -c) bytes"
done
[[ -x $OUT/kube-apiserver ]] && "$OUT/kube-apiserver" --version
[[ -x $OUT/kubectl ]] && "$OUT/kubectl" version --client --short 2>/dev/null || true
