#!/usr/bin/env bash
# Installs the system packages flannel-ts and its tests use, with apt-get,
# only when something is missing. Needs root (it is what flanneld needs too).
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v bridge >/dev/null 2>&1 || need+=(iproute2)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v make >/dev/null 2>&1 || need+=(make)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
# wireguard backend: wg (the kernel path's tool, and `wg show` on our userspace
# device) and wireguard-go (the userspace WireGuard the tests and the bench
# interoperate with).
command -v wg >/dev/null 2>&1 || need+=(wireguard-tools)
command -v wireguard-go >/dev/null 2>&1 || need+=(wireguard-go)
# ipsec backend: charon (strongSwan's IKE daemon), swanctl for troubleshooting,
# the openssl/gcm plugins for flannel's default ESP proposal, and libipsec
# (userspace ESP, in the extra plugins) for kernels without ESP.
charon_dir=/usr/lib/ipsec
[ -x "$charon_dir/charon" ] || need+=(strongswan-charon)
command -v swanctl >/dev/null 2>&1 || need+=(strongswan-swanctl)
[ -e "$charon_dir/plugins/libstrongswan-openssl.so" ] || need+=(libstrongswan-standard-plugins)
[ -e "$charon_dir/plugins/libstrongswan-kernel-libipsec.so" ] || need+=(libcharon-extra-plugins)
# Kubernetes e2e: the CNI plugins flannel's CNI plugin delegates to (bridge,
# host-local, portmap), and curl for the test API server's readiness check.
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -eq 0 ]; then
  echo "install-system-deps: everything present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: missing ${need[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# A freshly booted machine often has apt running already (cloud-init, unattended-upgrades):
# wait for its locks, saying so once, instead of failing at once.
lock_held() {
  local f ino
  for f in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock; do
    [ -e "$f" ] || continue
    ino=$(stat -c %i "$f")
    # /proc/locks names locked files as MAJOR:MINOR:INODE.
    grep -q ":$ino " /proc/locks && return 0
  done
  return 1
}
if lock_held; then
  echo "install-system-deps: another apt or dpkg is running; waiting for it (up to 10 minutes)"
  for _ in $(seq 1 600); do lock_held || break; sleep 1; done
fi
APT=(apt-get -o DPkg::Lock::Timeout=600)
"${APT[@]}" update -qq
# iperf3's package asks whether to start a daemon; never.
echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
if ! out=$("${APT[@]}" install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) 2>&1 >/dev/null); then
  echo "install-system-deps: cannot install ${need[*]}: $(printf '%s\n' "$out" | grep -E '^E:' | head -3 | tr '\n' ' ')" >&2
  exit 1
fi
# Debian starts etcd as a service on install; tests start their own on other ports.
systemctl disable --now etcd >/dev/null 2>&1 || true
# Our charon is flanneld's child; a system-wide IKE daemon would hold UDP 500/4500.
systemctl disable --now strongswan strongswan-starter >/dev/null 2>&1 || true
echo "install-system-deps: done"
