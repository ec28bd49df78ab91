/*
 * WireGuard transport sealing and opening over slots (whitepaper 5.4.6):
 * ChaCha20-Poly1305 through OpenSSL's EVP (the OpenSSL node itself runs on,
 * so no library of our own), one JS->C crossing per batch. Only the AEAD
 * and the byte moves are here; which key, which counter, replay checks and
 * every decision are TypeScript's (src/wireguard/transport.ts).
 *
 * Why C (node dist/bench/wireguard-crypto.js, node 20, this 2-core machine):
 * node:crypto 9.9-12.4 us per 1420-byte packet and 8.0-8.7 us per 64-byte
 * one (createCipheriv + update + final + getAuthTag), about 1 Gbit/s per
 * core before any I/O; this batch call 1.4 us and 0.7 us (8 Gbit/s per core
 * sealing 1420-byte packets), opening the same. The cipher is fetched and
 * the context made once per thread: per batch they cost a one-packet call
 * (a ping) 5.6 us instead of 2.6 us, per packet 3x the whole seal.
 * wg_seal_one/wg_open_one are the per-packet halves, which hop_wg.c's
 * lone-packet hops call too.
 */
#include "flannel_native.h"

#include <openssl/evp.h>
#include <limits.h>
#include <string.h>

#define WG_HEADER 16
#define WG_TAG 16
#define WG_TRANSPORT 4

/* One cipher context and one fetched cipher per thread (each packet worker
 * is one thread), kept for the thread's life: creating a context and
 * looking the algorithm up in OpenSSL's provider on every call cost a
 * single-packet call (a ping) several microseconds cold. */
static __thread EVP_CIPHER_CTX *thread_ctx;
static __thread EVP_CIPHER *thread_cipher;

static EVP_CIPHER_CTX *cipher_ctx(napi_env env, const char *who) {
  if (!thread_cipher) thread_cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  if (!thread_ctx) thread_ctx = EVP_CIPHER_CTX_new();
  if (!thread_ctx || !thread_cipher) {
    napi_throw_error(env, "ENOMEM", who);
    return NULL;
  }
  return thread_ctx;
}

static void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static void nonce_of(uint8_t nonce[12], uint64_t counter) {
  memset(nonce, 0, 4);
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

EVP_CIPHER_CTX *wg_cipher_ctx(void) {
  if (!thread_cipher) thread_cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  if (!thread_ctx) thread_ctx = EVP_CIPHER_CTX_new();
  return thread_ctx && thread_cipher ? thread_ctx : NULL;
}

bool wg_cipher_begin(EVP_CIPHER_CTX *ctx, bool seal) {
  return (seal ? EVP_EncryptInit_ex2(ctx, thread_cipher, NULL, NULL, NULL) : EVP_DecryptInit_ex2(ctx, thread_cipher, NULL, NULL, NULL)) == 1;
}

uint32_t wg_seal_one(EVP_CIPHER_CTX *ctx, uint8_t *p, uint32_t len, uint64_t slot, const uint8_t *key, uint32_t receiver,
                     uint64_t counter, uint32_t mtu) {
  uint32_t padded = (len + 15u) & ~15u;
  /* wireguard-go's calculatePaddingSize: never pad past the MTU (a packet over it, which only a
   * mis-set MTU lets through, pads as its remainder would). */
  if (mtu > 0) {
    uint32_t unit = len > mtu ? len % mtu : len;
    uint32_t unit_padded = (unit + 15u) & ~15u;
    if (unit_padded > mtu) unit_padded = mtu;
    padded = len + (unit_padded - unit);
  }
  if (len > slot || WG_HEADER + (uint64_t)padded + WG_TAG > slot) return 0;
  memmove(p + WG_HEADER, p, len);
  memset(p + WG_HEADER + len, 0, padded - len);
  uint8_t nonce[12];
  nonce_of(nonce, counter);
  int outl = 0, finl = 0;
  if (EVP_EncryptInit_ex2(ctx, NULL, key, nonce, NULL) != 1 ||
      EVP_EncryptUpdate(ctx, p + WG_HEADER, &outl, p + WG_HEADER, (int)padded) != 1 ||
      EVP_EncryptFinal_ex(ctx, p + WG_HEADER + outl, &finl) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG, p + WG_HEADER + padded) != 1)
    return 0;
  p[0] = WG_TRANSPORT;
  p[1] = p[2] = p[3] = 0;
  put_le32(p + 4, receiver);
  for (int k = 0; k < 8; k++) p[8 + k] = (uint8_t)(counter >> (8 * k));
  return WG_HEADER + padded + WG_TAG;
}

uint32_t wg_open_one(EVP_CIPHER_CTX *ctx, uint8_t *p, uint32_t len, uint64_t slot, const uint8_t *key) {
  if (len > slot || len < WG_HEADER + WG_TAG) return UINT32_MAX;
  uint64_t counter = 0;
  for (int k = 0; k < 8; k++) counter |= (uint64_t)p[8 + k] << (8 * k);
  uint8_t nonce[12];
  nonce_of(nonce, counter);
  uint32_t body = len - WG_HEADER - WG_TAG;
  int outl = 0, finl = 0;
  if (EVP_DecryptInit_ex2(ctx, NULL, key, nonce, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, WG_TAG, p + WG_HEADER + body) != 1 ||
      EVP_DecryptUpdate(ctx, p + WG_HEADER, &outl, p + WG_HEADER, (int)body) != 1 ||
      EVP_DecryptFinal_ex(ctx, p + WG_HEADER + outl, &finl) != 1)
    return UINT32_MAX;
  memmove(p, p + WG_HEADER, body);
  return body;
}

typedef struct {
  slots_t b;
  uint8_t *keys;
  size_t nkeys;
  uint32_t *key_idx;
  size_t nidx;
} crypt_args_t;

static bool get_crypt_args(napi_env env, napi_value *argv, crypt_args_t *a) {
  size_t key_bytes;
  if (!get_slots(env, argv[0], argv[1], argv[2], argv[3], "count", INT32_MAX, &a->b) ||
      !get_typed(env, argv[4], "keys", napi_uint8_array, "Uint8Array", (void **)&a->keys, &key_bytes) ||
      !get_typed(env, argv[5], "keyIdx", napi_uint32_array, "Uint32Array", (void **)&a->key_idx, &a->nidx) ||
      !check_len(env, a->nidx, a->b.n, "keyIdx", "count"))
    return false;
  a->nkeys = key_bytes / 32;
  return true;
}

/* wgSeal(buf, slotSize, lens, count, keys, keyIdx, receivers, counters, mtu?):
 * slot i holds an inner packet of lens[i] bytes; it becomes the transport
 * message [type 4 | receivers[i] | counters[i] | ChaCha20-Poly1305 of the
 * packet zero-padded to 16 bytes, but not beyond the device's mtu (as the
 * kernel's WireGuard and wireguard-go pad: a full-size packet then still
 * fits the link; with IPv6 endpoints, whose overhead is 80 bytes, 16-byte
 * padding of a 1420-byte packet would fragment every outer datagram) | tag]
 * under keys[keyIdx[i]], in place; lens[i] is its new length, or 0 when it
 * does not fit the slot or the key index is out of range. mtu 0 or absent:
 * no cap. */
napi_value wg_seal(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (!get_args(env, info, 9, argv)) return NULL;
  crypt_args_t a;
  uint32_t *receivers;
  uint64_t *counters;
  size_t nrecv, nctr;
  if (!get_crypt_args(env, argv, &a) ||
      !get_typed(env, argv[6], "receivers", napi_uint32_array, "Uint32Array", (void **)&receivers, &nrecv) ||
      !get_typed(env, argv[7], "counters", napi_biguint64_array, "BigUint64Array", (void **)&counters, &nctr) ||
      !check_len(env, nrecv, a.b.n, "receivers", "count") || !check_len(env, nctr, a.b.n, "counters", "count"))
    return NULL;
  int64_t mtu = 0;
  napi_valuetype mt;
  if (napi_typeof(env, argv[8], &mt) != napi_ok) return throw_napi_failure(env), NULL;
  if (mt != napi_undefined && !get_int(env, argv[8], "mtu", 0, 65535, &mtu)) return NULL;
  EVP_CIPHER_CTX *ctx = cipher_ctx(env, "wgSeal: cannot set up ChaCha20-Poly1305");
  if (!ctx) return NULL;
  int64_t sealed = 0;
  /* The cipher once per batch; per packet only key and nonce change (a
   * full init per packet cost 3x more). */
  if (EVP_EncryptInit_ex2(ctx, thread_cipher, NULL, NULL, NULL) != 1) a.b.n = 0;
  for (int64_t i = 0; i < a.b.n; i++) {
    uint8_t *p = a.b.buf + i * a.b.slot;
    uint32_t len = a.b.lens[i];
    a.b.lens[i] = 0;
    if (a.key_idx[i] >= a.nkeys) continue;
    a.b.lens[i] = wg_seal_one(ctx, p, len, (uint64_t)a.b.slot, a.keys + 32 * (size_t)a.key_idx[i], receivers[i], counters[i], (uint32_t)mtu);
    if (a.b.lens[i] > 0) sealed++;
  }
  return return_count(env, sealed);
}

/* wgOpen(buf, slotSize, lens, count, keys, keyIdx): slot i holds a
 * transport message of lens[i] bytes (header already read by the caller);
 * with keyIdx[i] < the number of keys it is authenticated and decrypted
 * under keys[keyIdx[i]] with the counter in its header, and the plaintext
 * moved to the start of the slot: lens[i] = its length (padding included,
 * possibly 0 for a keepalive). A message that does not authenticate, is
 * shorter than header + tag, or has keyIdx out of range gets lens[i] =
 * 0xffffffff. Returns how many opened. */
napi_value wg_open(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!get_args(env, info, 6, argv)) return NULL;
  crypt_args_t a;
  if (!get_crypt_args(env, argv, &a)) return NULL;
  EVP_CIPHER_CTX *ctx = cipher_ctx(env, "wgOpen: cannot set up ChaCha20-Poly1305");
  if (!ctx) return NULL;
  int64_t opened = 0;
  if (EVP_DecryptInit_ex2(ctx, thread_cipher, NULL, NULL, NULL) != 1) a.b.n = 0;
  for (int64_t i = 0; i < a.b.n; i++) {
    uint32_t len = a.b.lens[i];
    a.b.lens[i] = UINT32_MAX;
    if (a.key_idx[i] >= a.nkeys) continue;
    a.b.lens[i] = wg_open_one(ctx, a.b.buf + i * a.b.slot, len, (uint64_t)a.b.slot, a.keys + 32 * (size_t)a.key_idx[i]);
    if (a.b.lens[i] != UINT32_MAX) opened++;
  }
  return return_count(env, opened);
}
