/*
 * hop_wg.c: WireGuard's transport for hop.c's lone packets, the same
 * decisions src/wireguard/transport.ts makes for a batch, on the same
 * shared peer table (src/wireguard/peer-table.ts, whose layout comes from
 * TypeScript in hopCreate's spec.wg.layout) and the same replay windows
 * (replay.ts's ReplayWindows, one per keypair slot, in this rx worker's
 * memory: TypeScript and this file accept each counter once between them).
 *
 * Why C: the same round-trip measurement as hop.c's (a userspace WireGuard
 * ping through two daemons was 0.76 ms against wireguard-go's 0.70 in
 * paired rounds, most of the difference cold JS between syscalls).
 *
 * Before anything is changed, a packet this file cannot take (no usable
 * keypair, a handshake message, a stale session, an IPv6 endpoint) is handed
 * to TypeScript untouched. Once opening has started the datagram is
 * consumed here whatever happens, and counted as transport.ts counts it.
 */
#include "flannel_native.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WG_TRANSPORT_OVERHEAD 32
#define REPLAY_WORDS 64 /* replay.ts: REPLAY_WINDOW 2048 bits */
#define MAX_COUNTER 9007199254740991ull /* replay.ts: 2^53 - 1 */

/* spec.wg.layout (peer-table.ts nativeLayout), in this order. */
enum {
  L_K_WORDS,
  L_K_STATE,
  L_K_FLAGS,
  L_K_PEER,
  L_K_LOCAL,
  L_K_REMOTE,
  L_K_GEN,
  L_P_WORDS,
  L_P_ADDR,
  L_P_PORT,
  L_P_CURRENT,
  L_P_NEXT,
  L_P_WANT_HANDSHAKE,
  L_P_ACTIVE,
  L_T_WORDS,
  L_T_SENT,
  L_T_DATA_SENT,
  L_T_RECV,
  L_T_DATA_RECV,
  L_T_RX_BYTES,
  L_T_SENT_BYTES, /* this worker's own sent-bytes word (SentBytesBy) */
  L_COUNT
};

/* spec.wg.counterIndexes (WgCounter), in this order. */
enum { W_SEALED, W_OPENED, W_KEEPALIVES, W_BAD_MAC, W_KEYPAIR_GONE, W_REPLAY, W_ROAMED, W_TOO_BIG, W_COUNT };

#define FLAG_INITIATOR 1
#define FLAG_CONFIRMED 2

struct wg_hop {
  int32_t l[L_COUNT];
  int32_t *keypairs;
  double *created;
  uint32_t *send_counters;
  const uint8_t *send_keys;
  const uint8_t *recv_keys;
  int32_t *peers;
  double *times;
  size_t nkeypairs, npeers;
  double *stats;
  int32_t stat[W_COUNT];
  uint32_t *replay_bits;
  double *replay_top;
  int32_t *replay_gen;
  uint32_t mtu;
  double rekey_after_ms, reject_after_ms, clock_offset_ms;
  uint32_t counter_limit;
};

static inline int32_t ld(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

static double now_ms(const wg_hop_t *w) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); /* process.hrtime's clock (clock.ts) */
  return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6 + w->clock_offset_ms;
}

static void stat(wg_hop_t *w, int which) {
  if (w->stat[which] >= 0) w->stats[w->stat[which]] += 1;
}

static int32_t *kp(wg_hop_t *w, int32_t k, int field) { return &w->keypairs[(size_t)k * w->l[L_K_WORDS] + w->l[field]]; }
static int32_t *peer_word(wg_hop_t *w, uint32_t p, int field) { return &w->peers[(size_t)p * w->l[L_P_WORDS] + w->l[field]]; }
static double *peer_time(wg_hop_t *w, uint32_t p, int field) { return &w->times[(size_t)p * w->l[L_T_WORDS] + w->l[field]]; }

static bool keypair_valid(wg_hop_t *w, int32_t k) { return k >= 0 && (size_t)k < w->nkeypairs && ld(kp(w, k, L_K_STATE)) == 1; }

/* PeerTable.usable */
static int32_t usable(wg_hop_t *w, int32_t k, double now) {
  if (k < 0 || !keypair_valid(w, k)) return -1;
  if (!(ld(kp(w, k, L_K_FLAGS)) & (FLAG_INITIATOR | FLAG_CONFIRMED))) return -1;
  if (now - w->created[k] >= w->reject_after_ms || __atomic_load_n(&w->send_counters[k], __ATOMIC_SEQ_CST) >= w->counter_limit)
    return -1;
  return k;
}

int32_t wg_hop_pick(wg_hop_t *w, uint32_t p) {
  if (p >= w->npeers || ld(peer_word(w, p, L_P_ACTIVE)) != 1) return -1;
  double now = now_ms(w);
  /* PeerTable.sendKeypair: the newer usable one of next and current. */
  int32_t next = usable(w, ld(peer_word(w, p, L_P_NEXT)), now);
  int32_t current = usable(w, ld(peer_word(w, p, L_P_CURRENT)), now);
  int32_t k = next < 0 ? current : current < 0 ? next : (w->created[next] > w->created[current] ? next : current);
  if (k < 0) return -1; /* transport.ts counts no_session and asks for a handshake */
  bool old = (ld(kp(w, k, L_K_FLAGS)) & FLAG_INITIATOR) && now - w->created[k] >= w->rekey_after_ms;
  if (old || __atomic_load_n(&w->send_counters[k], __ATOMIC_SEQ_CST) >= w->counter_limit / 2)
    __atomic_store_n(peer_word(w, p, L_P_WANT_HANDSHAKE), 1, __ATOMIC_SEQ_CST);
  return k;
}

int wg_hop_seal(wg_hop_t *w, int32_t k, uint32_t p, uint8_t *pkt, uint32_t *len, uint64_t slot, uint32_t *addr, uint16_t *port) {
  EVP_CIPHER_CTX *ctx = wg_cipher_ctx();
  int32_t gen = ld(kp(w, k, L_K_GEN));
  uint32_t counter = __atomic_fetch_add(&w->send_counters[k], 1, __ATOMIC_SEQ_CST);
  uint32_t receiver = (uint32_t)*kp(w, k, L_K_REMOTE);
  uint32_t sealed = ctx && wg_cipher_begin(ctx, true)
                        ? wg_seal_one(ctx, pkt, *len, slot, w->send_keys + 32 * (size_t)k, receiver, counter, w->mtu)
                        : 0;
  if (sealed == 0) {
    stat(w, W_TOO_BIG);
    return WG_HOP_DONE;
  }
  /* Freed while we sealed: its keys may be erased or reused; what was sealed must not leave. */
  if (ld(kp(w, k, L_K_GEN)) != gen || !keypair_valid(w, k)) {
    stat(w, W_KEYPAIR_GONE);
    return WG_HOP_DONE;
  }
  double now = now_ms(w);
  *peer_time(w, p, L_T_SENT) = now;
  *peer_time(w, p, L_T_DATA_SENT) = now;
  *peer_time(w, p, L_T_SENT_BYTES) += sealed;
  stat(w, W_SEALED);
  *len = sealed;
  *addr = (uint32_t)ld(peer_word(w, p, L_P_ADDR));
  *port = (uint16_t)ld(peer_word(w, p, L_P_PORT));
  return WG_HOP_READY;
}

/* ReplayWindows.accept (replay.ts), on the same arrays. */
static bool replay_accept(wg_hop_t *w, int32_t k, int32_t gen, uint64_t c) {
  uint32_t *b = w->replay_bits + (size_t)k * REPLAY_WORDS;
  if (w->replay_gen[k] != gen) {
    memset(b, 0, REPLAY_WORDS * sizeof *b);
    w->replay_top[k] = 0;
    w->replay_gen[k] = gen;
  }
  if (c >= MAX_COUNTER) return false;
  uint64_t top = (uint64_t)w->replay_top[k];
  if (c >= top) {
    int64_t old_word = top == 0 ? -1 : (int64_t)((top - 1) / 32);
    int64_t new_word = (int64_t)(c / 32);
    int64_t clear = new_word - old_word < REPLAY_WORDS ? new_word - old_word : REPLAY_WORDS;
    for (int64_t i = 1; i <= clear; i++) b[(old_word + i) % REPLAY_WORDS] = 0;
    w->replay_top[k] = (double)(c + 1);
  } else if (top - c > REPLAY_WORDS * 32 - 32) {
    return false;
  }
  uint32_t word = (uint32_t)((c / 32) % REPLAY_WORDS);
  uint32_t bit = 1u << (c % 32);
  if (b[word] & bit) return false;
  b[word] |= bit;
  return true;
}

static inline uint32_t rd_le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

int wg_hop_open(wg_hop_t *w, uint8_t *pkt, uint32_t *len, uint64_t slot, uint32_t addr, uint16_t port, uint32_t *peer) {
  /* transport.ts open: a transport message under a live keypair of ours; anything else is TypeScript's. */
  if (*len < WG_TRANSPORT_OVERHEAD || *len > slot || rd_le32(pkt) != 4) return WG_HOP_HAND_OVER;
  uint32_t receiver = rd_le32(pkt + 4);
  int32_t k = (int32_t)(receiver & 0xffff);
  if ((size_t)k >= w->nkeypairs || !keypair_valid(w, k) || (uint32_t)*kp(w, k, L_K_LOCAL) != receiver) return WG_HOP_HAND_OVER;
  double now = now_ms(w);
  if (now - w->created[k] >= w->reject_after_ms) return WG_HOP_HAND_OVER;
  int32_t gen = ld(kp(w, k, L_K_GEN));
  uint64_t counter = (uint64_t)rd_le32(pkt + 12) << 32 | rd_le32(pkt + 8);
  EVP_CIPHER_CTX *ctx = wg_cipher_ctx();
  if (!ctx || !wg_cipher_begin(ctx, false)) return WG_HOP_HAND_OVER;
  uint32_t body = wg_open_one(ctx, pkt, *len, slot, w->recv_keys + 32 * (size_t)k);
  if (body == UINT32_MAX) {
    stat(w, W_BAD_MAC);
    return WG_HOP_DONE;
  }
  /* Freed while we opened (its keys may be erased or reused): nothing it opened is trusted. */
  if (ld(kp(w, k, L_K_GEN)) != gen || !keypair_valid(w, k)) {
    stat(w, W_KEYPAIR_GONE);
    return WG_HOP_DONE;
  }
  if (!replay_accept(w, k, gen, counter)) {
    stat(w, W_REPLAY);
    return WG_HOP_DONE;
  }
  uint32_t p = (uint32_t)*kp(w, k, L_K_PEER);
  if (!(ld(kp(w, k, L_K_FLAGS)) & (FLAG_INITIATOR | FLAG_CONFIRMED)))
    __atomic_fetch_or(kp(w, k, L_K_FLAGS), FLAG_CONFIRMED, __ATOMIC_SEQ_CST);
  if (p < w->npeers) {
    /* Roaming (IPv4 endpoints): the peer is now reached where its last authenticated packet came from. */
    if ((uint32_t)ld(peer_word(w, p, L_P_ADDR)) != addr || (uint32_t)ld(peer_word(w, p, L_P_PORT)) != port) {
      __atomic_store_n(peer_word(w, p, L_P_ADDR), (int32_t)addr, __ATOMIC_SEQ_CST);
      __atomic_store_n(peer_word(w, p, L_P_PORT), (int32_t)port, __ATOMIC_SEQ_CST);
      stat(w, W_ROAMED);
    }
    *peer_time(w, p, L_T_RECV) = now;
    if (body > 0) *peer_time(w, p, L_T_DATA_RECV) = now;
    *peer_time(w, p, L_T_RX_BYTES) += (double)body + WG_TRANSPORT_OVERHEAD;
  }
  if (body == 0) {
    stat(w, W_KEEPALIVES);
    return WG_HOP_DONE;
  }
  stat(w, W_OPENED);
  /* The inner packet's own length, without WireGuard's padding. */
  uint32_t inner = body;
  if (pkt[0] >> 4 == 4 && body >= 20) {
    uint32_t total = (uint32_t)pkt[2] << 8 | pkt[3];
    if (total < inner) inner = total;
  } else if (pkt[0] >> 4 == 6 && body >= 40) {
    uint32_t total = 40 + ((uint32_t)pkt[4] << 8 | pkt[5]);
    if (total < inner) inner = total;
  }
  *len = inner;
  *peer = p;
  return WG_HOP_READY;
}

void wg_hop_free(wg_hop_t *w) { free(w); }

bool wg_hop_create(napi_env env, napi_value spec, bool opens, wg_hop_t **out) {
  *out = NULL;
  napi_value o;
  napi_valuetype t;
  if (!get_prop(env, spec, "wg", &o)) return false;
  if (napi_typeof(env, o, &t) != napi_ok) return throw_napi_failure(env), false;
  if (t == napi_undefined || t == napi_null) return true;
  wg_hop_t *w = calloc(1, sizeof *w);
  if (!w) return napi_throw_error(env, "ENOMEM", "hopCreate: out of memory"), false;
  void *layout, *idx, *kps, *created, *ctrs, *skeys, *rkeys, *peers, *times, *stats, *bits, *top, *gen;
  size_t nlayout, nidx, nkps, ncreated, nctrs, nskeys, nrkeys, npeers, ntimes, nstats, nbits, ntop, ngen;
  double mtu, rekey, reject, offset, limit;
  if (!get_prop_typed(env, o, "layout", napi_int32_array, "Int32Array", false, &layout, &nlayout) ||
      !get_prop_typed(env, o, "counterIndexes", napi_int32_array, "Int32Array", false, &idx, &nidx) ||
      !get_prop_typed(env, o, "keypairs", napi_int32_array, "Int32Array", false, &kps, &nkps) ||
      !get_prop_typed(env, o, "created", napi_float64_array, "Float64Array", false, &created, &ncreated) ||
      !get_prop_typed(env, o, "sendCounters", napi_uint32_array, "Uint32Array", false, &ctrs, &nctrs) ||
      !get_prop_typed(env, o, "sendKeys", napi_uint8_array, "Uint8Array", false, &skeys, &nskeys) ||
      !get_prop_typed(env, o, "recvKeys", napi_uint8_array, "Uint8Array", false, &rkeys, &nrkeys) ||
      !get_prop_typed(env, o, "peers", napi_int32_array, "Int32Array", false, &peers, &npeers) ||
      !get_prop_typed(env, o, "times", napi_float64_array, "Float64Array", false, &times, &ntimes) ||
      !get_prop_typed(env, o, "stats", napi_float64_array, "Float64Array", false, &stats, &nstats) ||
      !get_prop_typed(env, o, "replayBits", napi_uint32_array, "Uint32Array", false, &bits, &nbits) ||
      !get_prop_typed(env, o, "replayTop", napi_float64_array, "Float64Array", false, &top, &ntop) ||
      !get_prop_typed(env, o, "replayGen", napi_int32_array, "Int32Array", false, &gen, &ngen) || !get_prop_number(env, o, "mtu", &mtu) ||
      !get_prop_number(env, o, "rekeyAfterMs", &rekey) || !get_prop_number(env, o, "rejectAfterMs", &reject) ||
      !get_prop_number(env, o, "clockOffsetMs", &offset) || !get_prop_number(env, o, "counterLimit", &limit))
    goto fail;
  if (nlayout != L_COUNT || nidx != W_COUNT) {
    throw_range(env, "wg.layout must have %d entries and wg.counterIndexes %d", L_COUNT, W_COUNT);
    goto fail;
  }
  memcpy(w->l, layout, sizeof w->l);
  for (int i = 0; i < L_COUNT; i++) {
    int32_t words = i < L_P_WORDS ? w->l[L_K_WORDS] : i < L_T_WORDS ? w->l[L_P_WORDS] : w->l[L_T_WORDS];
    if (w->l[i] < 0 || w->l[i] > 64 || ((i != L_K_WORDS && i != L_P_WORDS && i != L_T_WORDS) && w->l[i] >= words)) {
      throw_range(env, "wg.layout[%d] = %d does not fit its record", i, w->l[i]);
      goto fail;
    }
  }
  if (w->l[L_K_WORDS] == 0 || w->l[L_P_WORDS] == 0 || w->l[L_T_WORDS] == 0) {
    throw_range(env, "wg.layout: a record of 0 words");
    goto fail;
  }
  w->nkeypairs = nkps / (size_t)w->l[L_K_WORDS];
  w->npeers = npeers / (size_t)w->l[L_P_WORDS];
  if (ncreated < w->nkeypairs || nctrs < w->nkeypairs || nskeys < 32 * w->nkeypairs || nrkeys < 32 * w->nkeypairs ||
      ntimes < w->npeers * (size_t)w->l[L_T_WORDS] ||
      (opens && (nbits < REPLAY_WORDS * w->nkeypairs || ntop < w->nkeypairs || ngen < w->nkeypairs))) {
    throw_range(env, "wg: the peer table's arrays (and, for a hop that opens, the replay windows) must hold every keypair and peer");
    goto fail;
  }
  for (int i = 0; i < W_COUNT; i++) {
    int32_t k = ((int32_t *)idx)[i];
    if (k >= (int64_t)nstats) {
      throw_range(env, "wg.counterIndexes[%d] = %d is beyond the counters", i, k);
      goto fail;
    }
    w->stat[i] = k;
  }
  w->keypairs = kps;
  w->created = created;
  w->send_counters = ctrs;
  w->send_keys = skeys;
  w->recv_keys = rkeys;
  w->peers = peers;
  w->times = times;
  w->stats = stats;
  w->replay_bits = bits;
  w->replay_top = top;
  w->replay_gen = gen;
  w->mtu = mtu > 0 && mtu < 65536 ? (uint32_t)mtu : 0;
  w->rekey_after_ms = rekey;
  w->reject_after_ms = reject;
  w->clock_offset_ms = offset;
  w->counter_limit = limit > 0 && limit < 4294967296.0 ? (uint32_t)limit : 0;
  *out = w;
  return true;
fail:
  free(w);
  return false;
}
