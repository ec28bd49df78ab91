/*
 * fd helpers: a poll() with a timeout (the only place a call may wait),
 * close(), and flock() for the embedded store's lock file (Node has no
 * flock; a kernel lock is released when its holder dies, in whatever pid
 * namespace it ran).
 */
#include "flannel_native.h"

#include <errno.h>
#include <poll.h>
#include <sys/file.h>
#include <unistd.h>

/* 1 = ready (including error/hangup conditions, which the following
 * read/write reports precisely), 0 = timed out or interrupted by a signal
 * (callers treat both as "nothing yet" and simply return to JS), -errno on
 * failure. */
int wait_fd(int fd, short events, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = events, .revents = 0};
  int r = poll(&p, 1, timeout_ms);
  if (r < 0) return errno == EINTR ? 0 : -errno;
  if (r == 0) return 0;
  if (p.revents & POLLNVAL) return -EBADF;
  return 1;
}

/* close(fd) */
napi_value close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  /* On Linux the fd is released even when close() reports EINTR, so never
   * retry (that could close an fd another thread just got). EBADF is worth
   * reporting: it means a double close somewhere. */
  if (close(fd) < 0 && errno != EINTR) {
    int e = errno;
    throw_sys(env, e, "close", fd_error_hint(e), "close fd %d", fd);
  }
  return NULL;
}

/* tryLockExclusive(fd) -> true when flock(LOCK_EX | LOCK_NB) took the lock,
 * false when another open file description holds it. Released by close(). */
napi_value try_lock_exclusive(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EWOULDBLOCK) {
    int e = errno;
    throw_sys(env, e, "flock", fd_error_hint(e), "flock fd %d", fd);
    return NULL;
  }
  return return_bool(env, r == 0);
}

/* waitReadable(fd, timeoutMs) -> boolean: poll() for POLLIN without reading,
 * for a loop that must take a lock before it reads (the udp tx worker, whose
 * TUN queue the rx worker may also drain). */
napi_value wait_readable(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int fd;
  int64_t timeout;
  if (!get_fd(env, argv[0], &fd) || !get_int(env, argv[1], "timeoutMs", 0, INT32_MAX, &timeout)) return NULL;
  int r = wait_fd(fd, POLLIN, (int)timeout);
  if (r < 0) {
    throw_sys(env, -r, "poll", fd_error_hint(-r), "waitReadable fd %d", fd);
    return NULL;
  }
  return return_bool(env, r > 0);
}
