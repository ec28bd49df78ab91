/*
 * N-API argument checks and errors, shared by every call: each call's
 * prologue is get_args plus these getters, so a wrong type or size becomes a
 * TypeError/RangeError before any syscall, and a failing syscall becomes an
 * Error carrying its errno name, errno, syscall and a hint.
 */
#include "flannel_native.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *errno_name(int e, char *tmp, size_t tmplen) {
  switch (e) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(EBADF)
    E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(ENODEV)
    E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(ENOSPC)
    E(EPIPE) E(ERANGE) E(ENAMETOOLONG) E(ENOSYS) E(EBADFD) E(ENOTSOCK)
    E(EDESTADDRREQ) E(EMSGSIZE) E(EPROTOTYPE) E(ENOPROTOOPT)
    E(EPROTONOSUPPORT) E(EOPNOTSUPP) E(EAFNOSUPPORT) E(EADDRINUSE)
    E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ECONNRESET) E(ENOBUFS)
    E(EISCONN) E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTDOWN)
    E(EHOSTUNREACH) E(EALREADY) E(EINPROGRESS) E(ENOMEDIUM)
#undef E
    default:
      snprintf(tmp, tmplen, "E%d", e);
      return tmp;
  }
}

/* Throws Error{code: "EXXX", errno: -e, syscall} with message
 * "<what>: EXXX (<hint>)"; the hint falls back to strerror so every message
 * says something a human can act on. Mirrors Node's SystemError shape
 * (negative errno) so callers can treat both alike. */
void throw_sys(napi_env env, int e, const char *syscall, const char *hint, const char *fmt, ...) {
  char what[256], msg[768], tmp[16], serr[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (!hint) hint = strerror_r(e, serr, sizeof serr); /* GNU variant: returns the string */
  const char *name = errno_name(e, tmp, sizeof tmp);
  snprintf(msg, sizeof msg, "%s: %s (%s)", what, name, hint);

  napi_value code, message, err, num, sc;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &err) != napi_ok) {
    napi_throw_error(env, name, msg);
    return;
  }
  if (napi_create_int32(env, -e, &num) == napi_ok) napi_set_named_property(env, err, "errno", num);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc) == napi_ok)
    napi_set_named_property(env, err, "syscall", sc);
  napi_throw(env, err);
}

typedef napi_status (*error_thrower)(napi_env, const char *code, const char *msg);

static void throw_formatted(napi_env env, error_thrower thrower, const char *code, const char *fmt, va_list ap) {
  char msg[256];
  vsnprintf(msg, sizeof msg, fmt, ap);
  thrower(env, code, msg);
}

void throw_type(napi_env env, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  throw_formatted(env, napi_throw_type_error, "ERR_INVALID_ARG_TYPE", fmt, ap);
  va_end(ap);
}

void throw_range(napi_env env, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  throw_formatted(env, napi_throw_range_error, "ERR_OUT_OF_RANGE", fmt, ap);
  va_end(ap);
}

/* A failing napi_* call normally leaves an exception pending; make sure
 * one is, so JS never sees a silent `undefined`. */
void throw_napi_failure(napi_env env) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "ERR_NAPI", "flannel_native: internal N-API call failed");
}

/* fd-level errors: retrying or skipping a packet cannot help, the caller
 * must learn about them (closed fd, deleted TUN device, wrong fd type). */
bool is_fd_error(int e) {
  return e == EBADF || e == EBADFD || e == ENOTSOCK || e == EFAULT || e == ENOTTY || e == EISDIR;
}

const char *fd_error_hint(int e) {
  switch (e) {
    case EBADF: return "fd is not open: it was closed or never opened";
    case EBADFD: return "the TUN device behind this fd was deleted; reopen it";
    case ENOTSOCK: return "fd is not a socket";
    default: return NULL;
  }
}

bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return throw_napi_failure(env), false;
  return true;
}

/* Strict integer: rejects NaN, fractions and out-of-range values rather than
 * letting napi_get_value_int32 silently truncate them into a wrong fd or
 * length. */
bool get_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok) return throw_napi_failure(env), false;
  if (t != napi_number) return throw_type(env, "%s must be a number", name), false;
  if (napi_get_value_double(env, v, &d) != napi_ok) return throw_napi_failure(env), false;
  if (!(d >= (double)min && d <= (double)max) || (double)(int64_t)d != d) {
    throw_range(env, "%s must be an integer in [%lld, %lld], got %g", name, (long long)min, (long long)max, d);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

bool get_fd(napi_env env, napi_value v, int *fd) {
  int64_t x;
  if (!get_int(env, v, "fd", 0, INT_MAX, &x)) return false;
  *fd = (int)x;
  return true;
}

/* undefined counts as false so optional flags may be omitted. */
bool get_bool(napi_env env, napi_value v, const char *name, bool *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return throw_napi_failure(env), false;
  if (t == napi_undefined) return *out = false, true;
  if (t != napi_boolean) return throw_type(env, "%s must be a boolean", name), false;
  if (napi_get_value_bool(env, v, out) != napi_ok) return throw_napi_failure(env), false;
  return true;
}

/* A typed array of exactly `want` type. `data` already includes the view's
 * byteOffset; `len` is in elements. Works for SharedArrayBuffer views too,
 * which workers may use to share slot memory. */
bool get_typed(napi_env env, napi_value v, const char *name, napi_typedarray_type want, const char *want_name,
                      void **data, size_t *len) {
  bool is = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_is_typedarray(env, v, &is) != napi_ok) return throw_napi_failure(env), false;
  if (!is) return throw_type(env, "%s must be a %s", name, want_name), false;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) != napi_ok)
    return throw_napi_failure(env), false;
  if (type != want) return throw_type(env, "%s must be a %s", name, want_name), false;
  if (*len > 0 && *data == NULL) return throw_type(env, "%s is detached", name), false;
  return true;
}

bool check_len(napi_env env, size_t have, int64_t n, const char *aname, const char *nname) {
  if ((uint64_t)have < (uint64_t)n) {
    throw_range(env, "%s has %zu entries, fewer than %s=%lld", aname, have, nname, (long long)n);
    return false;
  }
  return true;
}

/* Outgoing lengths must fit their slot, or the kernel would read the next
 * slot (or past the buffer for the last one). */
bool check_out_lens(napi_env env, const uint32_t *lens, int64_t n, int64_t slot) {
  for (int64_t i = 0; i < n; i++) {
    if ((int64_t)lens[i] > slot) {
      throw_range(env, "lens[%lld]=%u exceeds slotSize=%lld", (long long)i, lens[i], (long long)slot);
      return false;
    }
  }
  return true;
}

bool get_optional_typed(napi_env env, napi_value v, const char *name, napi_typedarray_type want, const char *want_name,
                        size_t min_len, void **data) {
  napi_valuetype t;
  *data = NULL;
  if (v == NULL) return true;
  if (napi_typeof(env, v, &t) != napi_ok) return throw_napi_failure(env), false;
  if (t == napi_undefined || t == napi_null) return true;
  size_t len;
  if (!get_typed(env, v, name, want, want_name, data, &len)) return false;
  if (len < min_len) {
    throw_range(env, "%s has %zu entries, fewer than the %zu needed", name, len, min_len);
    return false;
  }
  return true;
}

bool get_slots(napi_env env, napi_value vbuf, napi_value vslot, napi_value vlens, napi_value vn, const char *nname,
               int64_t nmax, slots_t *s) {
  size_t buflen, nlens;
  if (!get_typed(env, vbuf, "buf", napi_uint8_array, "Buffer or Uint8Array", (void **)&s->buf, &buflen) ||
      !get_int(env, vslot, "slotSize", 1, INT32_MAX - 1, &s->slot) ||
      !get_typed(env, vlens, "lens", napi_uint32_array, "Uint32Array", (void **)&s->lens, &nlens) ||
      !get_int(env, vn, nname, 0, nmax, &s->n))
    return false;
  if ((uint64_t)s->slot * (uint64_t)s->n > (uint64_t)buflen) {
    throw_range(env, "buf (%zu bytes) is too small for %s=%lld slots of slotSize=%lld bytes", buflen, nname,
                (long long)s->n, (long long)s->slot);
    return false;
  }
  return check_len(env, nlens, s->n, "lens", nname);
}

bool get_peers(napi_env env, napi_value vaddrs, napi_value vports, int64_t n, const char *nname, uint32_t **addrs,
               uint16_t **ports) {
  size_t naddrs, nports;
  return get_typed(env, vaddrs, "addrs", napi_uint32_array, "Uint32Array", (void **)addrs, &naddrs) &&
         get_typed(env, vports, "ports", napi_uint16_array, "Uint16Array", (void **)ports, &nports) &&
         check_len(env, naddrs, n, "addrs", nname) && check_len(env, nports, n, "ports", nname);
}

napi_value return_count(napi_env env, int64_t n) {
  napi_value ret;
  if (napi_create_int64(env, n, &ret) != napi_ok) return throw_napi_failure(env), NULL;
  return ret;
}

napi_value return_bool(napi_env env, bool b) {
  napi_value ret;
  if (napi_get_boolean(env, b, &ret) != napi_ok) return throw_napi_failure(env), NULL;
  return ret;
}

bool get_prop(napi_env env, napi_value obj, const char *name, napi_value *out) {
  if (napi_get_named_property(env, obj, name, out) != napi_ok) return throw_napi_failure(env), false;
  return true;
}

bool get_prop_int(napi_env env, napi_value obj, const char *name, int64_t min, int64_t max, int64_t *out) {
  napi_value v;
  return get_prop(env, obj, name, &v) && get_int(env, v, name, min, max, out);
}

bool get_prop_number(napi_env env, napi_value obj, const char *name, double *out) {
  napi_value v;
  if (!get_prop(env, obj, name, &v)) return false;
  if (napi_get_value_double(env, v, out) != napi_ok) return throw_type(env, "%s must be a number", name), false;
  return true;
}

bool get_prop_typed(napi_env env, napi_value obj, const char *name, napi_typedarray_type want, const char *want_name,
                    bool optional, void **data, size_t *len) {
  napi_value v;
  napi_valuetype t;
  if (!get_prop(env, obj, name, &v)) return false;
  if (napi_typeof(env, v, &t) != napi_ok) return throw_napi_failure(env), false;
  if (optional && (t == napi_undefined || t == napi_null)) {
    *data = NULL;
    *len = 0;
    return true;
  }
  return get_typed(env, v, name, want, want_name, data, len);
}
