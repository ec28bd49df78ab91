/*
 * Registration of the addon's calls (src/native/addon.ts types them).
 */
#include "flannel_native.h"

#include <stdlib.h>

/* NAPI_MODULE_INIT makes the addon context-aware: it runs once per
 * napi_env (main thread and each worker), so it must not keep global state. */
NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  void *s = udp_scratch_new();
  if (!s) {
    napi_throw_error(env, "ENOMEM", "flannel_native: out of memory");
    return NULL;
  }
  if (napi_set_instance_data(env, s, udp_scratch_free, NULL) != napi_ok) {
    free(s);
    throw_napi_failure(env);
    return NULL;
  }
  napi_property_descriptor props[] = {
      {"tunOpen", NULL, tun_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunRead", NULL, tun_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunWrite", NULL, tun_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunSetOffload", NULL, tun_set_offload, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunSteerByInnerFlow", NULL, tun_steer_by_inner_flow, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpOpen", NULL, udp_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpRecv", NULL, udp_recv, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSend", NULL, udp_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpLocalPort", NULL, udp_local_port, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSetGro", NULL, udp_set_gro, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSteerByInnerFlow", NULL, udp_steer_by_inner_flow, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitReadable", NULL, wait_readable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sumSlots", NULL, sum_slots, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgSeal", NULL, wg_seal, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgOpen", NULL, wg_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hopCreate", NULL, hop_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hopTx", NULL, hop_tx, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hopRx", NULL, hop_rx, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tryLockExclusive", NULL, try_lock_exclusive, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) {
    throw_napi_failure(env);
    return NULL;
  }
  return exports;
}
