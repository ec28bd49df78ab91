#!/usr/bin/env bash
# (Kept in flannel-ts so the Kubernetes tests and the bench run without ../shared: the same
# steps as ../shared/tools/kube. tests look for binaries in KUBE_BIN_DIR, then ../shared/tools/kube.)
# Start a throw-away etcd + real kube-apiserver on loopback for tests.
#
#   run-kube-apiserver.sh DIR          start (default); prints pids + kubeconfig path
#   run-kube-apiserver.sh DIR stop     stop what a previous start in DIR started (by pid files)
#   run-kube-apiserver.sh DIR status   show whether the pids in DIR are alive
#
# Everything lives in DIR: pki/ (CA, serving cert, SA keys), tokens.csv,
# admin.token, flannel.token, kubeconfig, etcd data, logs, *.pid, env.
# Environment overrides (defaults in brackets):
#   KUBE_BIN_DIR [dir of this script]   where kube-apiserver (or kube-apiserver.gz) lives;
#                 gzipped binaries are unpacked once into KUBE_CACHE_DIR [/var/cache/kube-test-bin]
#   API_ADDR [127.0.0.1]   address the API server binds to and advertises (e.g. a
#                 network namespace's address, with this script run under ip netns exec)
#   ETCD_BIN [etcd from PATH]
#   ETCD_PORT [23790] ETCD_PEER_PORT [23800] API_PORT [16443]
#   AUTHZ_MODE [RBAC]  (RBAC: admin token is in system:masters; AlwaysAllow also works)
#   SERVICE_CIDR [10.96.0.0/12]   READY_TIMEOUT [180] seconds
#   APISERVER_EXTRA_ARGS [""]     extra flags appended to kube-apiserver
# Only processes whose pids were written to DIR are ever signalled.
set -euo pipefail

DIR=${1:?usage: $0 DIR [start|stop|status]}
ACTION=${2:-start}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBE_BIN_DIR=${KUBE_BIN_DIR:-$HERE}
KUBE_CACHE_DIR=${KUBE_CACHE_DIR:-/var/cache/kube-test-bin}
API_ADDR=${API_ADDR:-127.0.0.1}
unpacked() { # NAME: path of an executable NAME, unpacking NAME.gz into the cache when needed
  if [[ -x $KUBE_BIN_DIR/$1 ]]; then echo "$KUBE_BIN_DIR/$1"; return; fi
  if [[ -f $KUBE_BIN_DIR/$1.gz ]]; then
    if [[ ! -x $KUBE_CACHE_DIR/$1 ]]; then
      mkdir -p "$KUBE_CACHE_DIR"
      gunzip -c "$KUBE_BIN_DIR/$1.gz" > "$KUBE_CACHE_DIR/$1.tmp.$$" && chmod 755 "$KUBE_CACHE_DIR/$1.tmp.$$" \
        && mv -f "$KUBE_CACHE_DIR/$1.tmp.$$" "$KUBE_CACHE_DIR/$1"
    fi
    echo "$KUBE_CACHE_DIR/$1"; return
  fi
  echo "$KUBE_BIN_DIR/$1"
}
APISERVER=$(unpacked kube-apiserver)
KUBECTL=$(unpacked kubectl)
ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
API_PORT=${API_PORT:-16443}
AUTHZ_MODE=${AUTHZ_MODE:-RBAC}
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/12}
READY_TIMEOUT=${READY_TIMEOUT:-180}

stop_pidfile() { # $1 = pid file, $2 = expected command name
  local pf=$1 name=$2 pid i
  [[ -f $pf ]] || return 0
  pid=$(cat "$pf")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    # only signal it if it still is the program we started
    if [[ "$(cat /proc/$pid/comm 2>/dev/null)" == "$name"* ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      echo "stopped $name pid $pid"
    else
      echo "pid $pid from $pf is no longer $name; not signalled" >&2
    fi
  fi
  rm -f "$pf"
}

case $ACTION in
  stop)
    stop_pidfile "$DIR/kube-apiserver.pid" kube-apiserver
    stop_pidfile "$DIR/etcd.pid" etcd
    exit 0 ;;
  status)
    for n in kube-apiserver etcd; do
      if [[ -f $DIR/$n.pid ]] && kill -0 "$(cat "$DIR/$n.pid")" 2>/dev/null; then
        echo "$n running pid $(cat "$DIR/$n.pid")"; else echo "$n not running"; fi
    done
    exit 0 ;;
  start) ;;
  *) echo "unknown action $ACTION" >&2; exit 2 ;;
esac

[[ -x $APISERVER ]] || { echo "no kube-apiserver at $APISERVER (set KUBE_BIN_DIR)" >&2; exit 1; }
[[ -n $ETCD_BIN && -x $ETCD_BIN ]] || { echo "etcd not found (apt-get install -y etcd-server)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl missing" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl missing" >&2; exit 1; }
for pf in "$DIR/etcd.pid" "$DIR/kube-apiserver.pid"; do
  if [[ -f $pf ]] && kill -0 "$(cat "$pf")" 2>/dev/null; then
    echo "already running ($pf); run: $0 $DIR stop" >&2; exit 1
  fi
done
for a in "127.0.0.1:$ETCD_PORT" "127.0.0.1:$ETCD_PEER_PORT" "$API_ADDR:$API_PORT"; do
  if (exec 3<>"/dev/tcp/${a%:*}/${a##*:}") 2>/dev/null; then
    echo "$a is already in use; pick other ETCD_PORT/ETCD_PEER_PORT/API_PORT" >&2; exit 1
  fi
done

T0=$(date +%s.%N)
# ---------- PKI ----------
PKI=$DIR/pki
mkdir -p "$PKI"
if [[ ! -f $PKI/apiserver.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=test-kube-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
  cat > "$PKI/apiserver.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:${API_ADDR},IP:${SERVICE_CIDR%%.0/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
  # ${SERVICE_CIDR%%.0/*}.1 gives 10.96.0.1 for 10.96.0.0/12
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
if [[ ! -f $DIR/tokens.csv ]]; then
  ADMIN_TOKEN=$(openssl rand -hex 16)
  FLANNEL_TOKEN=$(openssl rand -hex 16)
  # token,user,uid,"groups"
  printf '%s,admin,uid-admin,"system:masters"\n%s,flannel,uid-flannel\n' \
    "$ADMIN_TOKEN" "$FLANNEL_TOKEN" > "$DIR/tokens.csv"
  echo "$ADMIN_TOKEN" > "$DIR/admin.token"
  echo "$FLANNEL_TOKEN" > "$DIR/flannel.token"
  chmod 600 "$DIR/tokens.csv" "$DIR/admin.token" "$DIR/flannel.token"
fi
ADMIN_TOKEN=$(cat "$DIR/admin.token")
FLANNEL_TOKEN=$(cat "$DIR/flannel.token")
SERVER=https://$API_ADDR:$API_PORT
CA_DATA=$(base64 -w0 < "$PKI/ca.crt")
write_kubeconfig() { # $1 file, $2 user, $3 token
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: $SERVER
    certificate-authority-data: $CA_DATA
users:
- name: $2
  user:
    token: $3
contexts:
- name: test
  context:
    cluster: test
    user: $2
current-context: test
EOF
  chmod 600 "$1"
}
write_kubeconfig "$DIR/kubeconfig" admin "$ADMIN_TOKEN"
write_kubeconfig "$DIR/kubeconfig-flannel" flannel "$FLANNEL_TOKEN"

# ---------- etcd ----------
mkdir -p "$DIR/etcd"
"$ETCD_BIN" --name kt --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "kt=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --logger zap --log-level warn >"$DIR/etcd.log" 2>&1 &
echo $! > "$DIR/etcd.pid"
for i in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' && break
  kill -0 "$(cat "$DIR/etcd.pid")" 2>/dev/null || { echo "etcd died, see $DIR/etcd.log" >&2; tail -20 "$DIR/etcd.log" >&2; exit 1; }
  sleep 0.1
done

# ---------- kube-apiserver ----------
T1=$(date +%s.%N)
# shellcheck disable=SC2086
"$APISERVER" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address="$API_ADDR" --secure-port="$API_PORT" --advertise-address="$API_ADDR" \
  --insecure-port=0 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --token-auth-file="$DIR/tokens.csv" \
  --authorization-mode="$AUTHZ_MODE" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --endpoint-reconciler-type=none \
  --allow-privileged=true \
  --cert-dir="$PKI" \
  ${APISERVER_EXTRA_ARGS:-} \
  >"$DIR/kube-apiserver.log" 2>&1 &
echo $! > "$DIR/kube-apiserver.pid"

deadline=$(( $(date +%s) + READY_TIMEOUT ))
until curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$SERVER/readyz" 2>/dev/null | grep -q '^ok'; do
  if ! kill -0 "$(cat "$DIR/kube-apiserver.pid")" 2>/dev/null; then
    echo "kube-apiserver died, see $DIR/kube-apiserver.log" >&2; tail -30 "$DIR/kube-apiserver.log" >&2
    "$0" "$DIR" stop >&2 || true; exit 1
  fi
  if (( $(date +%s) > deadline )); then
    echo "kube-apiserver not ready after ${READY_TIMEOUT}s, see $DIR/kube-apiserver.log" >&2
    curl -sS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$SERVER/readyz?verbose" >&2 || true
    "$0" "$DIR" stop >&2 || true; exit 1
  fi
  sleep 0.1
done
T2=$(date +%s.%N)

cat > "$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBE_SERVER=$SERVER
KUBE_CA=$PKI/ca.crt
KUBE_ADMIN_TOKEN=$ADMIN_TOKEN
KUBE_FLANNEL_TOKEN=$FLANNEL_TOKEN
KUBECTL=$KUBECTL
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
ETCD_PID=$(cat "$DIR/etcd.pid")
APISERVER_PID=$(cat "$DIR/kube-apiserver.pid")
EOF
echo "etcd pid $(cat "$DIR/etcd.pid") (http://127.0.0.1:$ETCD_PORT)"
echo "kube-apiserver pid $(cat "$DIR/kube-apiserver.pid") ($SERVER)"
echo "kubeconfig $DIR/kubeconfig (kubectl: $KUBECTL)"
echo "flannel-user kubeconfig $DIR/kubeconfig-flannel (user 'flannel', no RBAC bindings yet)"
echo "env file $DIR/env"
awk -v a="$T0" -v b="$T1" -v c="$T2" 'BEGIN{printf "ready: %.2fs total, %.2fs from kube-apiserver exec to /readyz ok\n", c-a, c-b}'
echo "stop with: $0 $DIR stop"
