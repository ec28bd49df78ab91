/*
 * hop.c: the userspace dataplane's lone-packet hops in C (IPv4 pods over
 * IPv4 peers), with flannel's plain encapsulation or WireGuard's
 * (hop_wg.c, behind the same seam as dataplane/encapsulation.ts).
 *
 * Why C: a round trip through two udp daemons (a ping, a request and its
 * answer) is four hops of one packet each, every one after 20-50 ms of
 * sleep. Traced (bench/PROFILE.md, 2026-12-06), each hop spent 26-70 us of
 * compiled-but-cold JS between its syscalls (the loop, the lock, the read's
 * setup, route and checks, the send's arguments): about 220 us of a 0.61 ms
 * round trip, where flannel's own C proxy (0.42 ms in the same rounds) spends
 * a few microseconds per hop. Forwarding one packet takes 0.2 us of JS back
 * to back and 8 us after 50 ms of sleep on this VM; a hop here touches a few
 * cache lines of C instead. Measured with it (npm run bench:rtt, 5 paired
 * rounds): udp RTT p50 0.396 ms against 0.599 without it and 0.464 for
 * flannel's own udp; the userspace WireGuard 0.483 against 0.711 and
 * wireguard-go's 0.729.
 *
 * What it does: wait, read, and when exactly one packet came after a quiet
 * spell (after_quiet) and the TypeScript path would forward it untouched
 * but for its TTL (and a
 * checksum the kernel left to us), do that here: route, checks, send, and
 * the same counters. Anything else (two packets or more, a super-packet, a
 * drop, an ICMP error to write, a packet of another family) is handed to
 * TypeScript exactly as the plain read calls would have: the packets stay
 * in the caller's read buffers, and TypeScript's pipeline (pipeline.ts) is
 * the one that decides about them. So this file only ever agrees with it:
 * every check below is a condition under which pipeline.ts forwards.
 *
 * The route table is read live from its SharedArrayBuffer under its
 * sequence counter (src/dataplane/seqlock.ts, layout in routes.ts), by a
 * linear scan: this path only serves lone packets, and 1,000 routes scan in
 * about a microsecond. The queue's read lock and its tx worker's idle word
 * are the words movers.ts's QueueReadLock uses, taken with the same atomic
 * operations.
 */
#include "flannel_native.h"

#include <poll.h>
#include <stdlib.h>
#include <sched.h>
#include <time.h>

/* routes.ts: header words, then per entry net, prefix length, peer, port. */
#define RT_GEN 0
#define RT_COUNT 1
#define RT_OWN 2
#define RT_OWN_LEN 3
#define RT_HEADER 8
#define RT_ENTRY 4

/* Counter slots, in the order of hopCreate's counterIndexes (native-hop.ts). */
enum {
  C_TUN_READ,
  C_TX_BATCHES,
  C_SENT,
  C_TX_BYTES,
  C_TX_UDP_SEND,
  C_RX_BATCHES,
  C_RECEIVED,
  C_RX_BYTES,
  C_DELIVERED,
  C_RX_TUN_WRITE,
  C_TX_BY_RX_WORKER,
  C_RX_OVERFLOW,
  C_RX_MALFORMED,
  C_RX_UNKNOWN_PEER,
  C_RX_SPOOFED,
  C_RX_NOT_LOCAL,
  C_COUNT
};

/* Where a TUN read lands: the slots TunDevice reads into (with their
 * virtio_net_hdrs when the fd has offloads). */
typedef struct {
  uint8_t *buf;
  int64_t slot;
  uint32_t *lens;
  int64_t cap;
  uint8_t *hdrs;
} tun_slots_t;

typedef struct {
  int tun_fd, udp_fd;
  /* The TUN fd has IFF_VNET_HDR: every write starts with a virtio_net_hdr. */
  bool vnet;
  uint32_t path_mtu;
  /* The largest packet TypeScript's slots take (the worker's slotSize). */
  uint32_t max_len;
  /* Only a packet after this long without one is a lone packet for C (quiet_ns, from the spec). */
  int64_t quiet_ns;
  /* When this worker last saw a packet (monotonic ns). */
  int64_t last_ns;
  const uint32_t *rt;
  size_t rt_words;
  double *ctr;
  size_t nctr;
  int32_t idx[C_COUNT];
  double overflow_base;
  /* The queue's read lock and its tx worker's idle word; NULL when the queue's reads are not shared. */
  int32_t *lock;
  int32_t *idle;
  bool has_tx;
  tun_slots_t tx;
  bool has_reply;
  tun_slots_t reply;
  bool has_rx;
  /* The rx worker's receive slots: UdpSocket's (its GRO staging when gso is set). */
  recv_slots_t rx;
  /* WireGuard's transport (hop_wg.c); NULL: flannel's plain one. */
  wg_hop_t *wg;
} hop_t;

static const uint8_t ZERO_VNET_HDR[VNET_HDR_LEN];

static void hop_free(napi_env env, void *data, void *hint) {
  hop_t *h = data;
  if (!h) return;
  wg_hop_free(h->wg);
  free(h);
}

static void count(hop_t *h, int which, double by) {
  int32_t i = h->idx[which];
  if (i >= 0) h->ctr[i] += by;
}

/* ---- the route table, under its sequence counter ---- */

static inline uint32_t word(const hop_t *h, size_t i) { return __atomic_load_n(&h->rt[i], __ATOMIC_RELAXED); }

static inline uint32_t mask4(uint32_t len) { return len == 0 ? 0 : len >= 32 ? 0xffffffffu : 0xffffffffu << (32 - len); }

static bool rt_begin(const hop_t *h, uint32_t *gen) {
  /* The writer holds it odd for the microseconds a publish takes; past that, TypeScript decides. */
  for (int tries = 0; tries < 1000; tries++) {
    uint32_t g = __atomic_load_n(&h->rt[RT_GEN], __ATOMIC_ACQUIRE);
    if (!(g & 1)) {
      *gen = g;
      return true;
    }
  }
  return false;
}

static bool rt_unchanged(const hop_t *h, uint32_t gen) {
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return __atomic_load_n(&h->rt[RT_GEN], __ATOMIC_RELAXED) == gen;
}

static size_t rt_count(const hop_t *h) {
  size_t n = word(h, RT_COUNT);
  size_t cap = (h->rt_words - RT_HEADER) / RT_ENTRY;
  return n < cap ? n : cap;
}

static bool rt_own(const hop_t *h, uint32_t addr) { return (addr & mask4(word(h, RT_OWN_LEN))) == word(h, RT_OWN); }

/* The peer and port of dst's longest-prefix route, outside our own subnet (RouteTableReader.isOwn/lookup). */
static bool route_of(const hop_t *h, uint32_t dst, uint32_t *peer, uint16_t *port) {
  for (int attempt = 0; attempt < 4; attempt++) {
    uint32_t gen;
    if (!rt_begin(h, &gen)) return false;
    bool own = rt_own(h, dst);
    int best = -1;
    uint32_t p = 0, pt = 0;
    size_t n = rt_count(h);
    for (size_t i = 0; i < n; i++) {
      const size_t e = RT_HEADER + i * RT_ENTRY;
      uint32_t len = word(h, e + 1);
      if (len > 32) len = 32;
      uint32_t m = mask4(len);
      if ((dst & m) == (word(h, e) & m) && (int)len > best) {
        best = (int)len;
        p = word(h, e + 2);
        pt = word(h, e + 3);
      }
    }
    if (!rt_unchanged(h, gen)) continue;
    if (own || best < 0) return false;
    *peer = p;
    *port = (uint16_t)pt;
    return true;
  }
  return false;
}

enum { SOURCE_ALLOWED, SOURCE_UNKNOWN_PEER, SOURCE_SPOOFED, SOURCE_NOT_LOCAL, SOURCE_BUSY };

/* May a datagram of peer `from` (an address, or WireGuard's peer slot) bring a packet from src to dst?
 * RouteTableReader.checkSource, then isOwn, as acceptFromUdp asks them. */
static int source_check(const hop_t *h, uint32_t from, uint32_t src, uint32_t dst) {
  for (int attempt = 0; attempt < 4; attempt++) {
    uint32_t gen;
    if (!rt_begin(h, &gen)) return SOURCE_BUSY;
    bool own = rt_own(h, dst);
    bool known = false, allowed = false;
    size_t n = rt_count(h);
    for (size_t i = 0; !allowed && i < n; i++) {
      const size_t e = RT_HEADER + i * RT_ENTRY;
      if (word(h, e + 2) != from) continue;
      known = true;
      uint32_t len = word(h, e + 1);
      uint32_t m = mask4(len > 32 ? 32 : len);
      allowed = (src & m) == word(h, e);
    }
    if (!rt_unchanged(h, gen)) continue;
    return !known ? SOURCE_UNKNOWN_PEER : !allowed ? SOURCE_SPOOFED : !own ? SOURCE_NOT_LOCAL : SOURCE_ALLOWED;
  }
  return SOURCE_BUSY;
}

/* ---- packets ---- */

static inline uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* checkIPv4 (packet/ipv4.ts) is Ok: version, header length, total length (exactly len, or at most). */
static bool ipv4_ok(const uint8_t *p, uint32_t len, bool exact, bool verify_sum) {
  if (len < 20 || p[0] >> 4 != 4) return false;
  uint32_t ihl = (uint32_t)(p[0] & 0x0f) * 4;
  if (ihl < 20 || ihl > len) return false;
  uint32_t total = be16(p + 2);
  if (exact ? total != len : (total > len || total < ihl)) return false;
  return !verify_sum || ones_sum(p, ihl) == 0xffff;
}

/* decrementTtl (packet/ipv4.ts): RFC 1624's incremental header checksum. */
static void decrement_ttl(uint8_t *p) {
  uint32_t old_word = be16(p + 8);
  p[8]--;
  uint32_t new_word = be16(p + 8);
  uint32_t sum = (~(uint32_t)be16(p + 10) & 0xffff) + (~old_word & 0xffff) + new_word;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  uint16_t c = (uint16_t)~sum;
  p[10] = (uint8_t)(c >> 8);
  p[11] = (uint8_t)c;
}

/* tunRead's reads into t's slots, without waiting. */
static int64_t read_slots(int fd, tun_slots_t *t) { return tun_read_slots(fd, t->buf, t->slot, t->lens, t->cap, t->hdrs); }

/*
 * Forward slot 0 of `t` when it is a packet forwardFromTun (pipeline.ts)
 * sends: IPv4, routed to a peer, TTL above 1, not too big with DF; with
 * offloads also no GSO and a partial checksum that fits. Returns false,
 * with the packet untouched, for TypeScript to take it.
 */
static bool forward_lone(hop_t *h, tun_slots_t *t, bool by_rx_worker, int *fd_err) {
  uint8_t *p = t->buf;
  uint32_t len = t->lens[0];
  if (len > h->max_len || len > t->slot || !ipv4_ok(p, len, false, false)) return false;
  uint32_t csum_start = 0, csum_offset = 0;
  bool needs_csum = false;
  if (t->hdrs) {
    if ((t->hdrs[1] & 0x7f) != 0) return false; /* a super-packet (VIRTIO_NET_HDR_GSO_*, ECN bit aside) */
    if (t->hdrs[0] & 1) {                        /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
      needs_csum = true;
      csum_start = le16(t->hdrs + 6);
      csum_offset = le16(t->hdrs + 8);
      if (csum_start + csum_offset + 2 > len) return false;
    }
  }
  uint32_t total = be16(p + 2);
  if (p[8] <= 1 || (total > h->path_mtu && (p[6] & 0x40))) return false;
  uint32_t peer;
  uint16_t port;
  if (!route_of(h, be32(p + 16), &peer, &port)) return false;
  int32_t keypair = -1;
  if (h->wg && (keypair = wg_hop_pick(h->wg, peer)) < 0) return false;
  if (needs_csum) {
    /* completeChecksum (tun/offload.ts): the kernel left the pseudo-header sum in the field. */
    uint16_t c = (uint16_t)~ones_sum(p + csum_start, len - csum_start);
    p[csum_start + csum_offset] = (uint8_t)(c >> 8);
    p[csum_start + csum_offset + 1] = (uint8_t)c;
  }
  decrement_ttl(p);
  count(h, C_TX_BATCHES, 1);
  count(h, C_TUN_READ, 1);
  if (by_rx_worker) count(h, C_TX_BY_RX_WORKER, 1);
  uint32_t out = total;
  /* Sealed within the worker's slotSize, as transport.ts seals in the segment slots. */
  uint64_t room = (uint64_t)t->slot < h->max_len ? (uint64_t)t->slot : h->max_len;
  if (h->wg && wg_hop_seal(h->wg, keypair, peer, p, &out, room, &peer, &port) != WG_HOP_READY) return true;
  int sent = udp_send_one(h->udp_fd, p, out, peer, port);
  if (sent > 0) {
    count(h, C_SENT, 1);
    count(h, C_TX_BYTES, out);
  } else {
    count(h, C_TX_UDP_SEND, 1);
    if (sent < 0) *fd_err = -sent;
  }
  return true;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Whether a packet that came alone came after quiet: only then is it
 * hopped here. The cold code this file replaces is cold because the worker
 * slept; in a stream TypeScript is hot, and its slower turns let packets
 * gather into batches. Taking every lone packet here (the ACKs of a
 * WireGuard TCP stream) made the sender's TCP send smaller bursts more
 * often, twice the reads, and one stream lost a fifth of its throughput.
 */
static bool after_quiet(hop_t *h) {
  int64_t now = mono_ns(), last = h->last_ns;
  h->last_ns = now;
  return now - last >= h->quiet_ns;
}

static bool try_lock(hop_t *h) {
  int32_t free_word = 0;
  return __atomic_compare_exchange_n(h->lock, &free_word, 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/*
 * The tx worker's wait for a lock the rx worker holds. A store from C
 * cannot wake a waiter in JS's Atomics.wait (V8 keeps its own waiter
 * lists), which would sleep out its 1 ms step after a release here; and
 * the holds here are short (one answer read and sent). So the tx side
 * spins for them, yielding the CPU between tries, and waits for longer
 * holds (TypeScript sending a batch of answers, released with
 * Atomics.notify) in QueueReadLock.acquire: spinning through those took
 * the CPU the holder needed (two vCPUs: one stream lost a third).
 */
#define LOCK_SPIN_NS 50000

static bool lock_waiting(hop_t *h) {
  int64_t start = mono_ns();
  for (;;) {
    if (try_lock(h)) return true;
    sched_yield();
    if (mono_ns() - start > LOCK_SPIN_NS) return false;
  }
}

/* A waiter in JS (Atomics.wait with a 1 ms step, movers.ts) sees the store at its next step at the latest. */
static void unlock(hop_t *h) {
  if (h->lock) __atomic_store_n(h->lock, 0, __ATOMIC_SEQ_CST);
}

/* The prologue of hopTx and hopRx: (hop, timeoutMs). */
static hop_t *hop_call(napi_env env, napi_callback_info info, int64_t *timeout) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, argv[0], &t) != napi_ok) return throw_napi_failure(env), NULL;
  if (t != napi_external) return throw_type(env, "hop must be a hopCreate handle"), NULL;
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) return throw_napi_failure(env), NULL;
  if (!get_int(env, argv[1], "timeoutMs", 0, INT32_MAX, timeout)) return NULL;
  return p;
}

/*
 * hopTx(hop, timeoutMs) -> n
 *   0: nothing came within timeoutMs, or one packet came and went out here;
 *   n > 0: n packets were read into the tx slots for TypeScript, and the
 *          queue's read lock (when shared) is held: the caller sends them
 *          and releases it;
 *  -1: the queue is readable but the rx worker held its lock for longer
 *      than LOCK_SPIN_NS (a held lock alone does not make it return early).
 * While it waits, the queue's idle word says so (QueueReadLock.setTxIdle).
 */
napi_value hop_tx(napi_env env, napi_callback_info info) {
  int64_t timeout;
  hop_t *h = hop_call(env, info, &timeout);
  if (!h) return NULL;
  if (!h->has_tx) return throw_type(env, "hopTx needs a hop created with tx slots"), NULL;
  bool waited = false;
  for (;;) {
    /* Before the wait a held lock means the rx worker is reading: wait for the queue instead. After it, the
     * queue is readable: wait for the lock. */
    bool locked_out = h->lock && !(waited ? lock_waiting(h) : try_lock(h));
    if (!locked_out) {
      int64_t n = read_slots(h->tun_fd, &h->tx);
      if (n < 0) {
        unlock(h);
        throw_sys(env, (int)-n, "read", fd_error_hint((int)-n), "hopTx fd %d", h->tun_fd);
        return NULL;
      }
      if (n > 0) {
        int fd_err = 0;
        if (!after_quiet(h) || n > 1 || !forward_lone(h, &h->tx, false, &fd_err)) return return_count(env, n);
        unlock(h);
        if (fd_err) {
          throw_sys(env, fd_err, "sendto", fd_error_hint(fd_err), "hopTx fd %d", h->udp_fd);
          return NULL;
        }
        return return_count(env, 0);
      }
      unlock(h);
    }
    /* Locked out after the wait: the queue is readable and the rx worker is reading it; TypeScript waits
     * for the lock (QueueReadLock.acquire) and moves what is left. */
    if (waited || timeout == 0) return return_count(env, locked_out ? -1 : 0);
    if (h->idle) __atomic_store_n(h->idle, 1, __ATOMIC_SEQ_CST);
    int pr = wait_fd(h->tun_fd, POLLIN, (int)timeout);
    if (h->idle) __atomic_store_n(h->idle, 0, __ATOMIC_SEQ_CST);
    waited = true;
    if (pr < 0) {
      throw_sys(env, -pr, "poll", fd_error_hint(-pr), "hopTx fd %d", h->tun_fd);
      return NULL;
    }
    if (pr == 0) return return_count(env, 0);
  }
}

/*
 * hopRx(hop, timeoutMs) -> n
 *   0: nothing came, or one datagram came and its packet went into TUN
 *      here (and what the kernel answered into TUN meanwhile went out);
 *   n > 0: n datagrams were received into the rx slots for TypeScript;
 *   n < 0: one went into TUN here, and -n packets the kernel answered were
 *          read into the reply slots with the queue's read lock held: the
 *          caller sends them and releases it.
 */
napi_value hop_rx(napi_env env, napi_callback_info info) {
  int64_t timeout;
  hop_t *h = hop_call(env, info, &timeout);
  if (!h) return NULL;
  if (!h->has_rx) return throw_type(env, "hopRx needs a hop created with rx slots"), NULL;
  int64_t n = udp_recv_slots(env, h->udp_fd, &h->rx, (int)timeout);
  if (n == UDP_SCRATCH_MISSING) return NULL;
  if (n < 0) {
    throw_sys(env, (int)-n, "recvmmsg", fd_error_hint((int)-n), "hopRx fd %d", h->udp_fd);
    return NULL;
  }
  if (n == 0) return return_count(env, 0);
  if (!after_quiet(h) || n != 1) return return_count(env, n);
  uint8_t *p = h->rx.buf;
  uint32_t len = h->rx.lens[0];
  if ((h->rx.gso && h->rx.gso[0] > 0 && len > h->rx.gso[0]) || len > h->rx.slot || len > h->max_len) return return_count(env, 1);
  int32_t oi = h->idx[C_RX_OVERFLOW];
  if (oi >= 0) h->ctr[oi] = h->overflow_base + h->rx.drops[0];
  if (h->wg) {
    /* WireGuard: once opened, the datagram is consumed here, and every check after it counted as
     * acceptFromUdp counts it (TypeScript cannot open it twice). */
    uint32_t peer;
    int r = wg_hop_open(h->wg, p, &len, (uint64_t)h->rx.slot, h->rx.addrs[0], h->rx.ports[0], &peer);
    if (r == WG_HOP_HAND_OVER) return return_count(env, 1);
    count(h, C_RX_BATCHES, 1);
    if (r == WG_HOP_DONE) return return_count(env, 0);
    count(h, C_RECEIVED, 1);
    count(h, C_RX_BYTES, len);
    int reason = !ipv4_ok(p, len, true, true) ? -1 : source_check(h, peer, be32(p + 12), be32(p + 16));
    if (reason == SOURCE_ALLOWED && be32(p + 16) >> 28 >= 0xe) reason = SOURCE_NOT_LOCAL;
    if (reason != SOURCE_ALLOWED) {
      count(h, reason == -1                       ? C_RX_MALFORMED
               : reason == SOURCE_UNKNOWN_PEER ? C_RX_UNKNOWN_PEER
               : reason == SOURCE_SPOOFED      ? C_RX_SPOOFED
                                               : C_RX_NOT_LOCAL,
            1);
      return return_count(env, 0);
    }
  } else {
    /* acceptFromUdp (pipeline.ts) keeps it: exactly an IPv4 packet with a good header checksum, from a source
     * the sending peer owns, to our subnet and not multi/broadcast. Otherwise it is TypeScript's. */
    if (len > h->max_len || !ipv4_ok(p, len, true, true)) return return_count(env, 1);
    uint32_t dst = be32(p + 16);
    if (dst >> 28 >= 0xe || source_check(h, h->rx.addrs[0], be32(p + 12), dst) != SOURCE_ALLOWED) return return_count(env, 1);
    count(h, C_RX_BATCHES, 1);
    count(h, C_RECEIVED, 1);
    count(h, C_RX_BYTES, len);
  }
  bool stalled = false;
  int written = tun_write_one(h->tun_fd, h->vnet ? ZERO_VNET_HDR : NULL, p, len, &stalled);
  count(h, written > 0 ? C_DELIVERED : C_RX_TUN_WRITE, 1);
  int fd_err = written < 0 ? -written : 0;
  if (fd_err) {
    throw_sys(env, fd_err, "write", fd_error_hint(fd_err), "hopRx fd %d", h->tun_fd);
    return NULL;
  }
  /* What the kernel answered during the write (an echo reply, an ACK) is on the queue now; while the tx
   * worker sleeps, sending it from here saves waking it (UdpToTun in movers.ts does the same). */
  if (!h->has_reply || !h->lock || __atomic_load_n(h->idle, __ATOMIC_SEQ_CST) != 1 || !try_lock(h))
    return return_count(env, 0);
  int64_t k = read_slots(h->tun_fd, &h->reply);
  if (k < 0) {
    unlock(h);
    throw_sys(env, (int)-k, "read", fd_error_hint((int)-k), "hopRx fd %d", h->tun_fd);
    return NULL;
  }
  if (k == 0 || (k == 1 && forward_lone(h, &h->reply, true, &fd_err))) {
    unlock(h);
    if (fd_err) {
      throw_sys(env, fd_err, "sendto", fd_error_hint(fd_err), "hopRx fd %d", h->udp_fd);
      return NULL;
    }
    return return_count(env, 0);
  }
  return return_count(env, -k);
}

/* ---- hopCreate(spec) -> handle ---- */

/* spec[name] = { buf, slotSize, lens, hdrs? } or null (*present = false): cap = lens.length, the buffer and
 * headers checked to hold them. */
static bool get_tun_slots(napi_env env, napi_value spec, const char *name, tun_slots_t *t, bool *present) {
  napi_value o;
  napi_valuetype ot;
  void *buf, *lens, *hdrs;
  size_t nbuf, nlens, nhdrs;
  int64_t slot;
  *present = false;
  if (!get_prop(env, spec, name, &o)) return false;
  if (napi_typeof(env, o, &ot) != napi_ok) return throw_napi_failure(env), false;
  if (ot == napi_undefined || ot == napi_null) return true;
  if (!get_prop_typed(env, o, "buf", napi_uint8_array, "Uint8Array", false, &buf, &nbuf) ||
      !get_prop_int(env, o, "slotSize", 1, 1 << 20, &slot) ||
      !get_prop_typed(env, o, "lens", napi_uint32_array, "Uint32Array", false, &lens, &nlens) ||
      !get_prop_typed(env, o, "hdrs", napi_uint8_array, "Uint8Array", true, &hdrs, &nhdrs))
    return false;
  if (nlens == 0 || nbuf < nlens * (size_t)slot) return throw_range(env, "%s: buf must hold lens.length slots", name), false;
  if (hdrs && nhdrs < nlens * VNET_HDR_LEN) return throw_range(env, "%s: hdrs must hold lens.length headers", name), false;
  *t = (tun_slots_t){buf, slot, lens, (int64_t)nlens, hdrs};
  *present = true;
  return true;
}

napi_value hop_create(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  napi_value spec = argv[0];
  hop_t *h = calloc(1, sizeof *h);
  if (!h) return napi_throw_error(env, "ENOMEM", "hopCreate: out of memory"), NULL;
  int64_t tun_fd, udp_fd, mtu, max_len, queue, quiet_ns;
  void *rt, *ctr, *idx, *locks;
  size_t nrt, nidx, nlocks;
  napi_value v;
  double base = 0;
  if (!get_prop_int(env, spec, "tunFd", 0, INT32_MAX, &tun_fd) || !get_prop_int(env, spec, "udpFd", 0, INT32_MAX, &udp_fd) ||
      !get_prop_int(env, spec, "pathMtu", 68, 65535, &mtu) || !get_prop_int(env, spec, "maxLen", 20, 65535, &max_len) ||
      !get_prop_int(env, spec, "quietNs", 0, INT64_C(1000000000000), &quiet_ns) ||
      !get_prop_typed(env, spec, "routes", napi_uint32_array, "Uint32Array", false, &rt, &nrt) ||
      !get_prop_typed(env, spec, "counters", napi_float64_array, "Float64Array", false, &ctr, &h->nctr) ||
      !get_prop_typed(env, spec, "counterIndexes", napi_int32_array, "Int32Array", false, &idx, &nidx) ||
      !get_prop_typed(env, spec, "locks", napi_int32_array, "Int32Array", true, &locks, &nlocks) ||
      !get_prop_int(env, spec, "queue", 0, 1 << 20, &queue) || !get_prop(env, spec, "vnetHdr", &v) ||
      !get_bool(env, v, "vnetHdr", &h->vnet) || !get_tun_slots(env, spec, "tx", &h->tx, &h->has_tx) ||
      !get_tun_slots(env, spec, "reply", &h->reply, &h->has_reply))
    goto fail;
  if (nrt < RT_HEADER) {
    throw_range(env, "routes must hold the table's header");
    goto fail;
  }
  if (nidx != C_COUNT) {
    throw_range(env, "counterIndexes must have %d entries", C_COUNT);
    goto fail;
  }
  for (size_t i = 0; i < nidx; i++) {
    int32_t k = ((int32_t *)idx)[i];
    if (k >= (int64_t)h->nctr) {
      throw_range(env, "counterIndexes[%zu] = %d is beyond the counters", i, k);
      goto fail;
    }
    h->idx[i] = k;
  }
  if (locks && (size_t)queue >= nlocks / 2) {
    throw_range(env, "queue %lld has no read lock", (long long)queue);
    goto fail;
  }
  h->tun_fd = (int)tun_fd;
  h->udp_fd = (int)udp_fd;
  h->path_mtu = (uint32_t)mtu;
  h->max_len = (uint32_t)max_len;
  h->quiet_ns = quiet_ns;
  h->rt = rt;
  h->rt_words = nrt;
  h->ctr = ctr;
  h->lock = locks ? (int32_t *)locks + queue : NULL;
  h->idle = locks ? (int32_t *)locks + nlocks / 2 + queue : NULL;
  napi_valuetype t;
  if (!get_prop(env, spec, "rx", &v)) goto fail;
  if (napi_typeof(env, v, &t) != napi_ok) {
    throw_napi_failure(env);
    goto fail;
  }
  if (t != napi_undefined && t != napi_null) {
    void *buf, *lens, *addrs, *ports, *gso, *drops;
    size_t nbuf, nlens, naddrs, nports, ngso, ndrops;
    int64_t slot;
    if (!get_prop_typed(env, v, "buf", napi_uint8_array, "Uint8Array", false, &buf, &nbuf) ||
        !get_prop_int(env, v, "slotSize", 1, 1 << 20, &slot) ||
        !get_prop_typed(env, v, "lens", napi_uint32_array, "Uint32Array", false, &lens, &nlens) ||
        !get_prop_typed(env, v, "addrs", napi_uint32_array, "Uint32Array", false, &addrs, &naddrs) ||
        !get_prop_typed(env, v, "ports", napi_uint16_array, "Uint16Array", false, &ports, &nports) ||
        !get_prop_typed(env, v, "gsoSizes", napi_uint16_array, "Uint16Array", true, &gso, &ngso) ||
        !get_prop_typed(env, v, "drops", napi_uint32_array, "Uint32Array", false, &drops, &ndrops))
      goto fail;
    if (nlens == 0 || nlens > MAX_UDP_BATCH || nbuf < nlens * (size_t)slot || naddrs < nlens || nports < nlens ||
        (gso && ngso < nlens) || ndrops < 1) {
      throw_range(env, "rx: slots, addrs, ports, gsoSizes and drops must hold lens.length (at most %d) datagrams", MAX_UDP_BATCH);
      goto fail;
    }
    h->rx = (recv_slots_t){buf, slot, lens, addrs, ports, (int64_t)nlens, gso, drops, NULL};
    if (!get_prop_number(env, spec, "overflowBase", &base)) goto fail;
    h->overflow_base = base;
    h->has_rx = true;
  }
  if (!wg_hop_create(env, spec, h->has_rx, &h->wg)) goto fail;
  napi_value ext;
  if (napi_create_external(env, h, hop_free, NULL, &ext) != napi_ok) {
    throw_napi_failure(env);
    goto fail;
  }
  return ext;
fail:
  hop_free(env, h, NULL);
  return NULL;
}
