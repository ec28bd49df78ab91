/*
 * flannel_native: the few syscalls Node cannot make itself, one file per job:
 *
 *   args.c      N-API argument checks and errors (every call's prologue)
 *   fd.c        poll() with a timeout, close(), flock() for the embedded store
 *   tun.c       TUN devices: open /dev/net/tun + ioctl(TUNSETIFF), batched
 *               read()/write() of whole IP packets, TUNSETOFFLOAD, the
 *               queue-steering eBPF program (TUNSETSTEERINGEBPF)
 *   udp.c       batched UDP: recvmmsg()/sendmmsg() (one JS->C crossing moves
 *               up to 1024 datagrams), UDP GSO sends (UDP_SEGMENT)
 *   checksum.c  RFC 1071 sums over slots, for receive-side TCP coalescing
 *   hop.c       the userspace dataplane's lone-packet hops (wait, read,
 *               route, check, send) for round trips, where cold JS per hop
 *               cost more than the hop (measured there); TypeScript's
 *               pipeline takes every packet it does not forward
 *   hop_wg.c    WireGuard's seal/open for those hops, on the shared peer
 *               table and replay windows
 *   crypto.c    WireGuard transport seal/open over slots (ChaCha20-Poly1305
 *               via the OpenSSL node runs on), for the speed measured there
 *   module.c    registration and per-thread scratch memory
 *
 * Offloads: with IFF_VNET_HDR + TUNSETOFFLOAD the kernel hands over TCP
 * super-packets (one read per ~64 KB instead of per ~1.4 KB); the addon only
 * moves the 10-byte virtio_net_hdr and groups slots into GSO sends.
 * Segmentation and coalescing are TypeScript's (src/tun/offload.ts,
 * src/tun/gro.ts); only the checksum sums moved to C, for the speed measured
 * in checksum.c.
 *
 * Every call is synchronous and meant for worker_threads running tight
 * loops. The only place a call may block is poll(), and only for the
 * caller's timeoutMs (or ~10 ms when a send queue is full), so a worker can
 * check a stop flag between calls. Routing, validation and encapsulation
 * are TypeScript's job, but for hop.c's lone packets, which it forwards only
 * where TypeScript's pipeline would (and hands everything else over).
 *
 * (flock is here because Node has none: the embedded store's lock must be a
 * kernel lock, released when its holder dies, whatever its pid namespace.)
 *
 * Data layout shared with src/native/addon.ts: packets live in one
 * Uint8Array split into fixed-size slots (packet i at i * slotSize); the
 * per-packet lengths / addresses / ports travel in typed arrays beside it.
 * All arguments are validated before any syscall, so a bad call throws a
 * TypeError/RangeError instead of scribbling over memory.
 */
#ifndef FLANNEL_NATIVE_H
#define FLANNEL_NATIVE_H

#include <node_api.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* recvmmsg/sendmmsg silently clamp vlen to UIO_MAXIOV (1024); we refuse
 * larger batches instead so "returned < requested" always means "no more
 * data" / "dropped", never "the kernel ignored part of the request". */
#define MAX_UDP_BATCH 1024

/* How long a send may wait for room in a full socket/TUN queue before the
 * rest of the batch is dropped. Short, because a stalled worker is worse
 * than a dropped packet (the inner protocols retransmit). */
#define SEND_STALL_MS 10

#define VNET_HDR_LEN 10 /* sizeof(struct virtio_net_hdr) */

#define ROOT_HINT "flanneld must run as root / with CAP_NET_ADMIN"

/* ---- args.c: errors ---- */
void throw_sys(napi_env env, int e, const char *syscall, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void throw_type(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void throw_range(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void throw_napi_failure(napi_env env);
bool is_fd_error(int e);
const char *fd_error_hint(int e);

/* ---- args.c: argument checks ---- */
/* The prologue of every call: its first n arguments (missing ones are undefined). */
bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv);
bool get_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out);
bool get_fd(napi_env env, napi_value v, int *fd);
bool get_bool(napi_env env, napi_value v, const char *name, bool *out);
bool get_typed(napi_env env, napi_value v, const char *name, napi_typedarray_type want, const char *want_name,
               void **data, size_t *len);
/* A typed array that may be undefined/null (then *data = NULL) of at least min_len elements. */
bool get_optional_typed(napi_env env, napi_value v, const char *name, napi_typedarray_type want, const char *want_name,
                        size_t min_len, void **data);
bool check_len(napi_env env, size_t have, int64_t n, const char *aname, const char *nname);
bool check_out_lens(napi_env env, const uint32_t *lens, int64_t n, int64_t slot);

/* A slot buffer, its slot size, the lengths array and a packet count, checked
 * to fit each other: the check that keeps the kernel from writing past the
 * end of a JS buffer. */
typedef struct {
  uint8_t *buf;
  int64_t slot;
  uint32_t *lens;
  int64_t n;
} slots_t;
bool get_slots(napi_env env, napi_value vbuf, napi_value vslot, napi_value vlens, napi_value vn, const char *nname,
               int64_t nmax, slots_t *s);
/* addrs (Uint32Array) and ports (Uint16Array) with at least n entries. */
bool get_peers(napi_env env, napi_value vaddrs, napi_value vports, int64_t n, const char *nname, uint32_t **addrs,
               uint16_t **ports);
/* Properties of an options object (a call taking one object, e.g. hopCreate's spec): obj[name] as they are,
 * as an integer in [min, max], as a number, or as a typed array (optional: undefined or null give NULL, 0). */
bool get_prop(napi_env env, napi_value obj, const char *name, napi_value *out);
bool get_prop_int(napi_env env, napi_value obj, const char *name, int64_t min, int64_t max, int64_t *out);
bool get_prop_number(napi_env env, napi_value obj, const char *name, double *out);
bool get_prop_typed(napi_env env, napi_value obj, const char *name, napi_typedarray_type want, const char *want_name,
                    bool optional, void **data, size_t *len);
/* The epilogue of calls returning a count. */
napi_value return_count(napi_env env, int64_t n);
/* The epilogue of calls returning a boolean. */
napi_value return_bool(napi_env env, bool b);

/* ---- fd.c ---- */
int wait_fd(int fd, short events, int timeout_ms);
napi_value close_fd(napi_env env, napi_callback_info info);
napi_value wait_readable(napi_env env, napi_callback_info info);
napi_value try_lock_exclusive(napi_env env, napi_callback_info info);

/* ---- tun.c ---- */
/* tunRead's reads without waiting (a packet too long for its slot comes back as slot + 1): the count, or
 * -errno for an fd-level error before anything was read. */
int64_t tun_read_slots(int fd, uint8_t *buf, int64_t slot, uint32_t *lens, int64_t max, uint8_t *hdrs);
/* tunWrite's write of one packet (hdr: its virtio_net_hdr, or NULL): 1 written, 0 dropped, -errno for an
 * error of the fd itself; *stalled carries "the queue did not drain" from one packet to the next. */
int tun_write_one(int fd, const uint8_t *hdr, const uint8_t *p, uint32_t len, bool *stalled);
napi_value tun_open(napi_env env, napi_callback_info info);
napi_value tun_read(napi_env env, napi_callback_info info);
napi_value tun_write(napi_env env, napi_callback_info info);
napi_value tun_set_offload(napi_env env, napi_callback_info info);
napi_value tun_steer_by_inner_flow(napi_env env, napi_callback_info info);

/* ---- udp.c ---- */
/* Where a receive lands: slots, and per datagram its source and, optionally, its UDP_GRO segment size and
 * IPv6 source; drops gets the socket's overflow count (as udpRecv documents them). */
typedef struct {
  uint8_t *buf;
  int64_t slot;
  uint32_t *lens;
  uint32_t *addrs;
  uint16_t *ports;
  int64_t max;
  uint16_t *gso;
  uint32_t *drops;
  uint8_t *sources6;
} recv_slots_t;
/* udpRecv's receive (max <= MAX_UDP_BATCH): the count, -errno, or UDP_SCRATCH_MISSING with an exception pending. */
#define UDP_SCRATCH_MISSING (-0x7fffffff)
int udp_recv_slots(napi_env env, int fd, const recv_slots_t *r, int timeout_ms);
/* One IPv4 datagram through udpSend's sendmmsg path (its stall budget): 1 sent, 0 dropped, -errno for an
 * error of the fd itself. */
int udp_send_one(int fd, const void *p, size_t len, uint32_t addr, uint16_t port);
void *udp_scratch_new(void);
void udp_scratch_free(napi_env env, void *data, void *hint);
napi_value udp_open(napi_env env, napi_callback_info info);
napi_value udp_recv(napi_env env, napi_callback_info info);
napi_value udp_send(napi_env env, napi_callback_info info);
napi_value udp_local_port(napi_env env, napi_callback_info info);
napi_value udp_set_gro(napi_env env, napi_callback_info info);
napi_value udp_steer_by_inner_flow(napi_env env, napi_callback_info info);

/* ---- checksum.c ---- */
/* RFC 1071 one's-complement sum of len bytes, folded to 16 bits, not inverted (JS's onesSum). */
uint16_t ones_sum(const uint8_t *p, size_t len);
napi_value sum_slots(napi_env env, napi_callback_info info);

/* ---- crypto.c ---- */
napi_value wg_seal(napi_env env, napi_callback_info info);
napi_value wg_open(napi_env env, napi_callback_info info);

/* ---- crypto.c: one packet at a time (hop_wg.c) ---- */
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
/* The thread's ChaCha20-Poly1305 context (NULL when OpenSSL cannot give one). */
EVP_CIPHER_CTX *wg_cipher_ctx(void);
/* Set the context up for sealing or opening; then any number of *_one calls of that kind. */
bool wg_cipher_begin(EVP_CIPHER_CTX *ctx, bool seal);
/* Seal the inner packet p[0..len) in place into a transport message (as wgSeal); its length, 0 when it
 * does not fit `slot` bytes or the cipher failed. */
uint32_t wg_seal_one(EVP_CIPHER_CTX *ctx, uint8_t *p, uint32_t len, uint64_t slot, const uint8_t *key, uint32_t receiver,
                     uint64_t counter, uint32_t mtu);
/* Open the transport message p[0..len) in place (as wgOpen); the plaintext's length, UINT32_MAX when it does
 * not authenticate or is too short. */
uint32_t wg_open_one(EVP_CIPHER_CTX *ctx, uint8_t *p, uint32_t len, uint64_t slot, const uint8_t *key);

/* ---- hop_wg.c: WireGuard's transport for hop.c ---- */
typedef struct wg_hop wg_hop_t;
enum { WG_HOP_HAND_OVER, WG_HOP_DONE, WG_HOP_READY };
/* From spec.wg; *out = NULL when it is absent (flannel's plain encapsulation). A hop that never opens (no rx
 * slots) may have empty replay windows. */
bool wg_hop_create(napi_env env, napi_value spec, bool opens, wg_hop_t **out);
void wg_hop_free(wg_hop_t *w);
/* The keypair to seal for peer slot p with, or -1: TypeScript's (no usable keypair, no such peer). */
int32_t wg_hop_pick(wg_hop_t *w, uint32_t p);
/* Seal pkt[0..*len) for p under keypair k: WG_HOP_READY with the datagram's *len and the peer's endpoint, or
 * WG_HOP_DONE (dropped and counted). */
int wg_hop_seal(wg_hop_t *w, int32_t k, uint32_t p, uint8_t *pkt, uint32_t *len, uint64_t slot, uint32_t *addr, uint16_t *port);
/* Open datagram pkt[0..*len) from addr:port: WG_HOP_READY with the inner packet in pkt[0..*len) and its peer slot;
 * WG_HOP_HAND_OVER untouched; WG_HOP_DONE consumed (a keepalive, or dropped and counted). */
int wg_hop_open(wg_hop_t *w, uint8_t *pkt, uint32_t *len, uint64_t slot, uint32_t addr, uint16_t port, uint32_t *peer);

/* ---- hop.c ---- */
napi_value hop_create(napi_env env, napi_callback_info info);
napi_value hop_tx(napi_env env, napi_callback_info info);
napi_value hop_rx(napi_env env, napi_callback_info info);

#endif
