/*
 * Batched UDP: recvmmsg()/sendmmsg() over slot buffers, so one JS->C
 * crossing moves up to 1024 datagrams instead of one (node:dgram pays an
 * event-loop turn and an allocation per datagram), and UDP GSO sends
 * (UDP_SEGMENT): one sendmsg carries a run of equal-size datagrams.
 */
#include "flannel_native.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <linux/filter.h>
#include <linux/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Socket buffer size we ask for: big enough to absorb bursts while a
 * worker is busy with the previous batch. */
#define SOCK_BUF_BYTES (4 * 1024 * 1024)

/* ---- Per-env scratch space for mmsghdr arrays ---- */

/* One per napi_env, i.e. per worker thread, so concurrent workers never
 * share it; allocated once instead of per call (calls run in tight loops)
 * and kept off the stack (worker stacks are small). */
/* Datagrams one UDP GSO send may carry. The kernel's UDP_MAX_SEGMENTS is
 * 64 on older kernels (128 since 5.x); the lower value works everywhere. */
#define GSO_MAX_SEGS 64
/* Payload limit of one UDP send (IP total length is 16 bits). */
#define GSO_MAX_BYTES 65000

#ifndef UDP_GRO
#define UDP_GRO 104 /* linux/udp.h since 5.0; older headers lack it */
#endif
#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

/* Receive control space per message: the UDP_GRO segment size (an int)
 * and the socket's drop counter (SO_RXQ_OVFL, a u32). */
#define RECV_CTL_BYTES (CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint32_t)))

typedef struct {
  struct mmsghdr msgs[MAX_UDP_BATCH];
  struct iovec iov[MAX_UDP_BATCH];
  /* Peer addresses: sockaddr_in on IPv4 sockets, sockaddr_in6 on IPv6 ones. */
  union {
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } sa[MAX_UDP_BATCH];
  /* One UDP_SEGMENT control message per GSO send. */
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctl[MAX_UDP_BATCH];
  /* Per-message segment counts of a GSO batch, and the fallback for a GSO
   * send the kernel refuses: its segments resent one datagram each. */
  int segs[MAX_UDP_BATCH];
  struct mmsghdr fb_msgs[GSO_MAX_SEGS];
  union {
    char buf[RECV_CTL_BYTES];
    struct cmsghdr align;
  } rctl[MAX_UDP_BATCH];
} scratch_t;

void *udp_scratch_new(void) { return calloc(1, sizeof(scratch_t)); }

void udp_scratch_free(napi_env env, void *data, void *hint) { free(data); }

static scratch_t *get_scratch(napi_env env) {
  void *p = NULL;
  if (napi_get_instance_data(env, &p) != napi_ok || p == NULL) {
    napi_throw_error(env, "ERR_NAPI", "flannel_native: per-thread scratch memory missing");
    return NULL;
  }
  return p;
}

/* Prefer the *FORCE variant (needs CAP_NET_ADMIN, which flanneld has) since
 * plain SO_RCVBUF/SO_SNDBUF are silently capped by net.core.[rw]mem_max,
 * often just 208 KiB. Failing both is not fatal: the socket still works. */
static void set_sockbuf(int fd, int force_opt, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return;
  (void)setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

/* udpOpen(bindAddr, port, reusePort, dualStack?) -> fd
 * dualStack (with an IPv6 bindAddr such as "::"): the socket also carries
 * IPv4, its peers then appearing as ::ffff:a.b.c.d (a WireGuard device whose
 * peers are reached over either family, Mode auto). */
napi_value udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;

  napi_valuetype t;
  if (napi_typeof(env, argv[0], &t) != napi_ok) return throw_napi_failure(env), NULL;
  if (t != napi_string) return throw_type(env, "bindAddr must be a string"), NULL;
  char addr[64];
  size_t alen = 0;
  if (napi_get_value_string_utf8(env, argv[0], addr, sizeof addr, &alen) != napi_ok)
    return throw_napi_failure(env), NULL;
  int64_t port;
  bool reuse = false, dual = false;
  if (!get_int(env, argv[1], "port", 0, 65535, &port) || !get_bool(env, argv[2], "reusePort", &reuse) ||
      !get_bool(env, argv[3], "dualStack", &dual))
    return NULL;

  /* An address with a colon binds an IPv6 socket (the wireguard backend's
   * flannel-wg-v6 on ListenPortV6); IPV6_V6ONLY keeps it off IPv4, whose
   * port may be another device's, unless asked for both. */
  bool v6 = memchr(addr, ':', alen) != NULL;
  if (dual && !v6) return throw_range(env, "dualStack needs an IPv6 bindAddr such as ::, got \"%s\"", addr), NULL;
  union {
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } sa;
  memset(&sa, 0, sizeof sa);
  socklen_t salen;
  if (v6) {
    sa.v6.sin6_family = AF_INET6;
    sa.v6.sin6_port = htons((uint16_t)port);
    salen = sizeof sa.v6;
    if (alen >= sizeof addr - 1 || inet_pton(AF_INET6, addr, &sa.v6.sin6_addr) != 1)
      return throw_range(env, "bindAddr must be an IPv4 or IPv6 address like 0.0.0.0 or ::, got \"%s\"", addr), NULL;
  } else {
    sa.v4.sin_family = AF_INET;
    sa.v4.sin_port = htons((uint16_t)port);
    salen = sizeof sa.v4;
    if (alen == 0) {
      sa.v4.sin_addr.s_addr = htonl(INADDR_ANY); /* "" = all addresses, like node:dgram */
    } else if (alen >= sizeof addr - 1 || inet_pton(AF_INET, addr, &sa.v4.sin_addr) != 1) {
      return throw_range(env, "bindAddr must be an IPv4 or IPv6 address like 0.0.0.0 or ::, got \"%s\"", addr), NULL;
    }
  }

  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    throw_sys(env, e, "socket",
              (e == EMFILE || e == ENFILE) ? "too many open files: raise the limit (ulimit -n / LimitNOFILE)" : NULL,
              "cannot create UDP socket");
    return NULL;
  }
  int one = 1;
  int v6only = dual ? 0 : 1;
  if (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) {
    int e = errno;
    close(fd);
    throw_sys(env, e, "setsockopt", NULL, "IPV6_V6ONLY on [%s]:%lld", addr, (long long)port);
    return NULL;
  }
  /* Deliberately no SO_REUSEADDR: UDP has no TIME_WAIT, so it would not
   * speed up restarts, but on Linux it lets a second socket bind the same
   * port silently (and steal its datagrams), hiding a second flanneld
   * instead of failing with EADDRINUSE. */
  /* SO_REUSEPORT lets each worker own a socket on the same port, with the
   * kernel spreading incoming flows across them. */
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    throw_sys(env, e, "setsockopt", "this kernel lacks SO_REUSEPORT; use a single UDP worker",
              "SO_REUSEPORT on %s:%lld", alen ? addr : "0.0.0.0", (long long)port);
    return NULL;
  }
  set_sockbuf(fd, SO_RCVBUFFORCE, SO_RCVBUF, SOCK_BUF_BYTES);
  set_sockbuf(fd, SO_SNDBUFFORCE, SO_SNDBUF, SOCK_BUF_BYTES);
  /* Every datagram then carries the socket's count of datagrams dropped for
   * want of buffer space, so overload shows where it happens (udpRecv's
   * drops). Without it the count stays 0; the socket works the same. */
  (void)setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);

  if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
    int e = errno;
    close(fd);
    char hint[256];
    const char *h = NULL;
    if (e == EADDRINUSE) {
      snprintf(hint, sizeof hint,
               "UDP port %lld is already used by another process, maybe another flanneld "
               "(find it with: ss -ulpn 'sport = :%lld'), or by a socket opened without reusePort",
               (long long)port, (long long)port);
      h = hint;
    } else if (e == EADDRNOTAVAIL) {
      h = "the address is not assigned to any interface of this host";
    } else if (e == EACCES || e == EPERM) {
      h = "ports below 1024 need root / CAP_NET_BIND_SERVICE";
    }
    throw_sys(env, e, "bind", h, "bind UDP %s:%lld", alen ? addr : "0.0.0.0", (long long)port);
    return NULL;
  }
  napi_value ret;
  if (napi_create_int32(env, fd, &ret) != napi_ok) {
    close(fd);
    throw_napi_failure(env);
    return NULL;
  }
  return ret;
}

/* udpRecv(fd, buf, slotSize, lens, addrs, ports, max, timeoutMs, gsoSizes?, drops?, sources6?) -> count
 * gsoSizes (Uint16Array, >= max): per slot, the segment size of a UDP_GRO
 * super-datagram (0 for a single datagram). drops (Uint32Array, >= 1): set to
 * the socket's cumulative overflow count when a datagram carried it.
 * sources6 (Uint8Array, >= 16 * max): on an IPv6 socket, each datagram's
 * source address (addrs[i] is then 0: a u32 cannot hold it; the caller
 * names endpoints by id, see udpSend). */
napi_value udp_recv(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  if (!get_args(env, info, 11, argv)) return NULL;
  int fd;
  slots_t b;
  int64_t timeout;
  uint32_t *addrs;
  uint16_t *ports;
  uint16_t *gso;
  uint32_t *drops;
  uint8_t *sources6;
  if (!get_fd(env, argv[0], &fd) || !get_slots(env, argv[1], argv[2], argv[3], argv[6], "max", MAX_UDP_BATCH, &b) ||
      !get_peers(env, argv[4], argv[5], b.n, "max", &addrs, &ports) ||
      !get_int(env, argv[7], "timeoutMs", 0, INT32_MAX, &timeout) ||
      !get_optional_typed(env, argv[8], "gsoSizes", napi_uint16_array, "Uint16Array", (size_t)b.n, (void **)&gso) ||
      !get_optional_typed(env, argv[9], "drops", napi_uint32_array, "Uint32Array", 1, (void **)&drops) ||
      !get_optional_typed(env, argv[10], "sources6", napi_uint8_array, "Uint8Array", (size_t)b.n * 16, (void **)&sources6))
    return NULL;
  recv_slots_t r = {b.buf, b.slot, b.lens, addrs, ports, b.n, gso, drops, sources6};
  int got = udp_recv_slots(env, fd, &r, (int)timeout);
  if (got == UDP_SCRATCH_MISSING) return NULL;
  if (got < 0) {
    throw_sys(env, -got, "recvmmsg", fd_error_hint(-got), "udpRecv fd %d", fd);
    return NULL;
  }
  return return_count(env, got);
}

/* recvmmsg of up to max messages without blocking; when nothing is queued, one poll of up to timeout_ms and
 * one more try. Returns the count, or -errno (of recvmmsg or poll). */
static int recv_waiting(int fd, struct mmsghdr *msgs, int max, int timeout_ms) {
  bool waited = false;
  for (;;) {
    /* Non-blocking first (see tunRead); MSG_DONTWAIT also makes the
     * kernel return what is queued instead of waiting to fill `max`. */
    int r = recvmmsg(fd, msgs, (unsigned)max, MSG_DONTWAIT, NULL);
    if (r >= 0) return r;
    int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) return -e;
    if (waited || timeout_ms == 0) return 0;
    int pr = wait_fd(fd, POLLIN, timeout_ms);
    waited = true;
    if (pr < 0) return pr;
    if (pr == 0) return 0;
  }
}

/* A received message's control data: *gso = its UDP_GRO segment size (0: a single datagram), *drops = the
 * socket's overflow count when it came along (either may be NULL). */
static void read_recv_cmsgs(const struct msghdr *h, uint16_t *gso, uint32_t *drops) {
  if (gso) *gso = 0;
  if (h->msg_flags & MSG_CTRUNC) return;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR((struct msghdr *)h, c)) {
    if (gso && c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) {
      int g;
      memcpy(&g, CMSG_DATA(c), sizeof g);
      *gso = (uint16_t)(g > 0 && g <= 0xffff ? g : 0);
    } else if (drops && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
      memcpy(drops, CMSG_DATA(c), sizeof *drops);
    }
  }
}

int udp_recv_slots(napi_env env, int fd, const recv_slots_t *r, int timeout_ms) {
  if (r->max <= 0) return 0;
  scratch_t *s = get_scratch(env);
  if (!s) return UDP_SCRATCH_MISSING;
  bool ctl = r->gso || r->drops;
  for (int i = 0; i < r->max; i++) {
    s->iov[i].iov_base = r->buf + i * r->slot;
    s->iov[i].iov_len = (size_t)r->slot;
    memset(&s->msgs[i], 0, sizeof s->msgs[i]);
    s->msgs[i].msg_hdr.msg_name = &s->sa[i];
    s->msgs[i].msg_hdr.msg_namelen = sizeof s->sa[i];
    s->msgs[i].msg_hdr.msg_iov = &s->iov[i];
    s->msgs[i].msg_hdr.msg_iovlen = 1;
    if (ctl) {
      s->msgs[i].msg_hdr.msg_control = s->rctl[i].buf;
      s->msgs[i].msg_hdr.msg_controllen = sizeof s->rctl[i].buf;
    }
  }
  int got = recv_waiting(fd, s->msgs, (int)r->max, timeout_ms);
  for (int i = 0; i < got; i++) {
    const struct msghdr *h = &s->msgs[i].msg_hdr;
    /* MSG_TRUNC: the datagram did not fit and its tail is lost; a length
     * that cannot fit a slot lets TS spot and drop it. */
    r->lens[i] = (h->msg_flags & MSG_TRUNC) ? (uint32_t)r->slot + 1 : s->msgs[i].msg_len;
    if (h->msg_namelen >= sizeof(struct sockaddr_in) && s->sa[i].v4.sin_family == AF_INET) {
      r->addrs[i] = ntohl(s->sa[i].v4.sin_addr.s_addr);
      r->ports[i] = ntohs(s->sa[i].v4.sin_port);
    } else if (h->msg_namelen >= sizeof(struct sockaddr_in6) && s->sa[i].v6.sin6_family == AF_INET6) {
      r->addrs[i] = 0;
      r->ports[i] = ntohs(s->sa[i].v6.sin6_port);
      if (r->sources6) memcpy(r->sources6 + 16 * i, &s->sa[i].v6.sin6_addr, 16);
    } else {
      r->addrs[i] = 0;
      r->ports[i] = 0;
      if (r->sources6) memset(r->sources6 + 16 * i, 0, 16);
    }
    if (ctl) read_recv_cmsgs(h, r->gso ? &r->gso[i] : NULL, r->drops);
  }
  return got;
}

/* sendmmsg over msgs[0..nmsg): returns datagrams sent (segs[m] per message,
 * 1 each when segs is NULL), or -errno for an fd-level error before anything
 * went out. A message the kernel rejects is dropped alone; a rejected GSO
 * message (no checksum offload on the route's device -> EIO, a segment
 * larger than the path MTU -> EINVAL, ...) is resent as plain datagrams
 * through `fb` so the datagrams still go out (fragmented by the kernel if
 * they must be, as on the plain path). */
static int send_msgs(int fd, struct mmsghdr *msgs, int nmsg, const int *segs, struct mmsghdr *fb) {
  int next = 0, sent = 0;
  /* Bounded retries when the send queue is full: ENOBUFS (qdisc full) does
   * not make poll() wait, so without a budget this could spin. */
  int retries = 4;
  while (next < nmsg) {
    int r = sendmmsg(fd, msgs + next, (unsigned)(nmsg - next), MSG_DONTWAIT);
    if (r > 0) {
      for (int k = 0; k < r; k++) sent += segs ? segs[next + k] : 1;
      next += r;
      continue;
    }
    int e = r == 0 ? EAGAIN : errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
      if (retries-- <= 0) break; /* drop the rest of the batch */
      int pr = wait_fd(fd, POLLOUT, SEND_STALL_MS);
      if (pr == 0 && e != ENOBUFS) break; /* still full after the stall budget: drop the rest */
      if (pr >= 0) continue;
      e = -pr;
    }
    if (is_fd_error(e)) {
      if (sent > 0) break; /* report what went out; the next call throws */
      return -e;
    }
    /* sendmmsg stops at the first datagram the kernel rejects (EMSGSIZE,
     * ENETUNREACH, EPERM from a firewall, EINVAL for port 0, ...). Drop that
     * one and carry on with the rest of the batch. */
    if (segs && segs[next] > 1 && fb) {
      const struct msghdr *h = &msgs[next].msg_hdr;
      int n = (int)h->msg_iovlen;
      for (int k = 0; k < n; k++) {
        memset(&fb[k], 0, sizeof fb[k]);
        fb[k].msg_hdr.msg_name = h->msg_name;
        fb[k].msg_hdr.msg_namelen = h->msg_namelen;
        fb[k].msg_hdr.msg_iov = &h->msg_iov[k];
        fb[k].msg_hdr.msg_iovlen = 1;
      }
      int r2 = send_msgs(fd, fb, n, NULL, NULL);
      if (r2 > 0) sent += r2;
    }
    next++;
  }
  return sent;
}

int udp_send_one(int fd, const void *p, size_t len, uint32_t addr, uint16_t port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(addr);
  sa.sin_port = htons(port);
  struct iovec iov = {(void *)p, len};
  struct mmsghdr m;
  memset(&m, 0, sizeof m);
  m.msg_hdr.msg_name = &sa;
  m.msg_hdr.msg_namelen = sizeof sa;
  m.msg_hdr.msg_iov = &iov;
  m.msg_hdr.msg_iovlen = 1;
  return send_msgs(fd, &m, 1, NULL, NULL);
}

/* Whether two inner IPv4 packets belong to one flow as the receivers'
 * steering sees it (udpSteerByInnerFlow: protocol, addresses, and the first
 * transport word, i.e. the ports). A GSO run stays one skb up to a GRO
 * receiver, which steers it by its first packet: mixing flows in one run
 * could put a flow's packets on two receive workers and reorder them. */
static bool steered_by_ports(const uint8_t *p, uint32_t len) {
  return (p[9] == 6 || p[9] == 17) && (((p[6] << 8) | p[7]) & 0x3fff) == 0 && len >= (uint32_t)(p[0] & 0x0f) * 4 + 4;
}

static bool same_inner_flow(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen) {
  if (alen < 20 || blen < 20 || a[9] != b[9] || memcmp(a + 12, b + 12, 8) != 0) return false;
  bool pa = steered_by_ports(a, alen), pb = steered_by_ports(b, blen);
  if (pa != pb) return false;
  return !pa || memcmp(a + (a[0] & 0x0f) * 4, b + (b[0] & 0x0f) * 4, 4) == 0;
}

/* udpSend(fd, buf, slotSize, lens, addrs, ports, count, gso?, flowRuns?, endpoints6?) -> sent
 * endpoints6 (Uint8Array, 16 bytes per endpoint): the socket is IPv6 and
 * addrs[i] is an endpoint id, the index of its address in this table (the
 * packet path keeps one u32 per destination whatever the family).
 * flowRuns: the datagrams are bare inner IPv4 packets (the udp backend's
 * wire format) and a run also keeps to one inner flow (same_inner_flow).
 * With gso, runs of consecutive datagrams to the same address and port whose
 * lengths are equal (the last of a run may be shorter) go out as one
 * sendmsg with UDP_SEGMENT: on the wire they are still separate, ordinary
 * datagrams, but the socket, routing and qdisc work is paid once per run. */
napi_value udp_send(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  if (!get_args(env, info, 10, argv)) return NULL;
  int fd;
  slots_t b;
  uint32_t *addrs;
  uint16_t *ports;
  bool gso = false, flow_runs = false;
  uint8_t *endpoints6 = NULL;
  size_t nendpoints = 0;
  if (!get_fd(env, argv[0], &fd) || !get_slots(env, argv[1], argv[2], argv[3], argv[6], "count", MAX_UDP_BATCH, &b) ||
      !get_peers(env, argv[4], argv[5], b.n, "count", &addrs, &ports) || !check_out_lens(env, b.lens, b.n, b.slot) ||
      !get_bool(env, argv[7], "gso", &gso) || !get_bool(env, argv[8], "flowRuns", &flow_runs))
    return NULL;
  napi_valuetype et;
  if (napi_typeof(env, argv[9], &et) != napi_ok) return throw_napi_failure(env), NULL;
  if (et != napi_undefined && et != napi_null) {
    size_t bytes = 0;
    if (!get_typed(env, argv[9], "endpoints6", napi_uint8_array, "Uint8Array", (void **)&endpoints6, &bytes)) return NULL;
    nendpoints = bytes / 16;
    /* Ids come from our own tables: one beyond the table is a bug, not a packet to drop. */
    for (int64_t i = 0; i < b.n; i++)
      if (addrs[i] >= nendpoints)
        return throw_range(env, "addrs[%lld] = %u names no endpoint (the table holds %zu)", (long long)i, addrs[i], nendpoints), NULL;
  }
  uint8_t *buf = b.buf;
  uint32_t *lens = b.lens;
  int64_t slot = b.slot, count = b.n;
  scratch_t *s = get_scratch(env);
  if (!s) return NULL;

  int nmsg = 0;
  for (int i = 0; i < count;) {
    int j = i + 1;
    if (gso && lens[i] > 0) {
      uint32_t total = lens[i];
      while (j < count && j - i < GSO_MAX_SEGS && addrs[j] == addrs[i] && ports[j] == ports[i] &&
             lens[j - 1] == lens[i] && lens[j] > 0 && lens[j] <= lens[i] && total + lens[j] <= GSO_MAX_BYTES &&
             (!flow_runs || same_inner_flow(buf + i * slot, lens[i], buf + j * slot, lens[j]))) {
        total += lens[j];
        j++;
      }
    }
    for (int k = i; k < j; k++) {
      s->iov[k].iov_base = buf + k * slot;
      s->iov[k].iov_len = lens[k];
    }
    struct mmsghdr *m = &s->msgs[nmsg];
    memset(m, 0, sizeof *m);
    m->msg_hdr.msg_name = &s->sa[nmsg];
    if (endpoints6) {
      struct sockaddr_in6 *sa = &s->sa[nmsg].v6;
      memset(sa, 0, sizeof *sa);
      sa->sin6_family = AF_INET6;
      memcpy(&sa->sin6_addr, endpoints6 + 16 * (size_t)addrs[i], 16);
      sa->sin6_port = htons(ports[i]);
      m->msg_hdr.msg_namelen = sizeof *sa;
    } else {
      struct sockaddr_in *sa = &s->sa[nmsg].v4;
      memset(sa, 0, sizeof *sa);
      sa->sin_family = AF_INET;
      sa->sin_addr.s_addr = htonl(addrs[i]);
      sa->sin_port = htons(ports[i]);
      m->msg_hdr.msg_namelen = sizeof *sa;
    }
    m->msg_hdr.msg_iov = &s->iov[i];
    m->msg_hdr.msg_iovlen = (size_t)(j - i);
    if (j - i > 1) {
      m->msg_hdr.msg_control = s->ctl[nmsg].buf;
      m->msg_hdr.msg_controllen = sizeof s->ctl[nmsg].buf;
      struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg_hdr);
      c->cmsg_level = IPPROTO_UDP; /* = SOL_UDP */
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t seg = (uint16_t)lens[i];
      memcpy(CMSG_DATA(c), &seg, sizeof seg);
    }
    s->segs[nmsg] = j - i;
    nmsg++;
    i = j;
  }

  int sent = send_msgs(fd, s->msgs, nmsg, s->segs, s->fb_msgs);
  if (sent < 0) {
    throw_sys(env, -sent, "sendmmsg", fd_error_hint(-sent), "udpSend fd %d", fd);
    return NULL;
  }
  return return_count(env, sent);
}

/* udpLocalPort(fd) -> port */
napi_value udp_local_port(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  struct sockaddr_in6 sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    int e = errno;
    throw_sys(env, e, "getsockname", fd_error_hint(e), "udpLocalPort fd %d", fd);
    return NULL;
  }
  if (sa.sin6_family != AF_INET && sa.sin6_family != AF_INET6) return throw_type(env, "fd %d is not an IP socket", fd), NULL;
  /* sin_port and sin6_port sit at the same offset. */
  napi_value ret;
  if (napi_create_uint32(env, ntohs(sa.sin6_port), &ret) != napi_ok) return throw_napi_failure(env), NULL;
  return ret;
}

/* udpSetGro(fd) -> boolean: ask the kernel to hand over runs of datagrams of
 * one flow as one super-datagram (UDP_GRO; one recvmmsg slot then holds up
 * to 64 KB, cut by udpRecv's gsoSizes). false when the kernel lacks it. */
napi_value udp_set_gro(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  int one = 1;
  bool ok = setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0;
  if (!ok && is_fd_error(errno)) {
    int e = errno;
    throw_sys(env, e, "setsockopt", fd_error_hint(e), "UDP_GRO on fd %d", fd);
    return NULL;
  }
  return return_bool(env, ok);
}

/* udpSteerByInnerFlow(fd, groupSize): a classic BPF program for the
 * SO_REUSEPORT group fd belongs to, picking the socket for each datagram by
 * a hash of the inner IPv4 packet it carries (protocol, addresses and, for
 * unfragmented packets, the ports), so every inner flow is read by one
 * worker and stays in order. The kernel's own choice hashes the outer
 * addresses and ports, which are the same for all traffic of one peer host
 * (both ends use port 8285), so it would put a whole peer on one worker.
 * The program sees the UDP payload from offset 0; a datagram too short for
 * a load makes it return 0 (the first socket). */
napi_value udp_steer_by_inner_flow(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int fd;
  int64_t n;
  if (!get_fd(env, argv[0], &fd) || !get_int(env, argv[1], "groupSize", 1, 1024, &n)) return NULL;
  struct sock_filter code[] = {
      /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 12),        /* A = inner source address */
      /* 1 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),               /* X = A */
      /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 16),        /* A = inner destination */
      /* 3 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),        /* A ^= X */
      /* 4 */ BPF_STMT(BPF_ST, 0),                           /* M[0] = A */
      /* 5 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),         /* A = protocol */
      /* 6 */ BPF_STMT(BPF_ALU | BPF_LSH | BPF_K, 8),
      /* 7 */ BPF_STMT(BPF_LDX | BPF_MEM, 0),
      /* 8 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),        /* A = M[0] ^ (protocol << 8) */
      /* 9 */ BPF_STMT(BPF_ST, 0),
      /* 10 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
      /* 11 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0), /* TCP -> ports */
      /* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 17, 1, 0), /* UDP -> ports */
      /* 13 */ BPF_JUMP(BPF_JMP | BPF_JA, 7, 0, 0),          /* else -> fold */
      /* 14 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 6),        /* fragment word */
      /* 15 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 5, 0), /* a fragment: no ports -> fold */
      /* 16 */ BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),       /* X = 4 * IHL */
      /* 17 */ BPF_STMT(BPF_LD | BPF_W | BPF_IND, 0),        /* A = ports */
      /* 18 */ BPF_STMT(BPF_LDX | BPF_MEM, 0),
      /* 19 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
      /* 20 */ BPF_STMT(BPF_ST, 0),
      /* 21 */ BPF_STMT(BPF_LD | BPF_MEM, 0),                /* fold: A ^= A >> 16 ^ A >> 8 */
      /* 22 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
      /* 23 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
      /* 24 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
      /* 25 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
      /* 26 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 8),
      /* 27 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
      /* 28 */ BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)n),
      /* 29 */ BPF_STMT(BPF_RET | BPF_A, 0),
  };
  struct sock_fprog prog = {sizeof code / sizeof code[0], code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) < 0) {
    int e = errno;
    throw_sys(env, e, "setsockopt", "this kernel cannot steer SO_REUSEPORT groups by BPF (SO_ATTACH_REUSEPORT_CBPF)",
              "SO_ATTACH_REUSEPORT_CBPF on fd %d", fd);
  }
  return NULL;
}
