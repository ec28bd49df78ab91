/*
 * TUN devices: open /dev/net/tun + ioctl(TUNSETIFF), batched read()/write()
 * of whole IP packets (each behind a virtio_net_hdr when opened with
 * IFF_VNET_HDR), and TUNSETOFFLOAD.
 */
#include "flannel_native.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

/* tunOpen(name, multiQueue, vnetHdr) -> { fd, name } */
napi_value tun_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;

  napi_valuetype t;
  if (napi_typeof(env, argv[0], &t) != napi_ok) return throw_napi_failure(env), NULL;
  if (t != napi_string) return throw_type(env, "name must be a string"), NULL;
  char name[IFNAMSIZ + 1];
  size_t nlen = 0;
  /* Ask for one byte more than fits so an over-long name is detected
   * rather than silently truncated into some other device's name. */
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nlen) != napi_ok)
    return throw_napi_failure(env), NULL;
  if (nlen >= IFNAMSIZ) return throw_range(env, "interface name must be at most %d bytes", IFNAMSIZ - 1), NULL;
  if (strlen(name) != nlen) return throw_range(env, "interface name must not contain NUL"), NULL;
  for (size_t i = 0; i < nlen; i++) {
    /* The kernel rejects these with a bare EINVAL; say why up front. */
    if (name[i] == '/' || name[i] == ':' || name[i] == ' ' || name[i] == '\t' || name[i] == '\n')
      return throw_range(env, "invalid interface name \"%s\" (no '/', ':' or whitespace)", name), NULL;
  }
  bool mq = false, vnet = false;
  if (!get_bool(env, argv[1], "multiQueue", &mq)) return NULL;
  if (!get_bool(env, argv[2], "vnetHdr", &vnet)) return NULL;

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    const char *hint = NULL;
    if (e == ENOENT || e == ENODEV || e == ENXIO)
      hint = "load the tun module: modprobe tun; if /dev/net/tun is still missing: "
             "mkdir -p /dev/net && mknod /dev/net/tun c 10 200";
    else if (e == EPERM || e == EACCES)
      hint = ROOT_HINT;
    else if (e == EMFILE || e == ENFILE)
      hint = "too many open files: raise the limit (ulimit -n / LimitNOFILE)";
    throw_sys(env, e, "open", hint, "cannot open /dev/net/tun");
    return NULL;
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  /* IFF_NO_PI: packets are bare IP, no 4-byte protocol header to strip. */
  /* IFF_VNET_HDR: every packet read or written is preceded by a 10-byte
   * struct virtio_net_hdr (needed for offloads, see tunSetOffload). */
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (mq ? IFF_MULTI_QUEUE : 0) | (vnet ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, nlen); /* nlen < IFNAMSIZ, rest already NUL */
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    char hint[256];
    const char *h = NULL;
    const char *shown = nlen ? name : "(kernel-chosen name)";
    if (e == EBUSY) {
      h = "device already in use by another process, or exists with different flags";
    } else if (e == EINVAL) {
      snprintf(hint, sizeof hint,
               "a non-TUN device with this name exists, or the TUN device exists %s IFF_MULTI_QUEUE; "
               "delete it with: ip link del %s",
               mq ? "without" : "with", shown);
      h = hint;
    } else if (e == EPERM || e == EACCES) {
      h = ROOT_HINT;
    }
    throw_sys(env, e, "ioctl", h, "TUNSETIFF %s", shown);
    return NULL;
  }

  napi_value obj, vfd, vname;
  if (napi_create_object(env, &obj) != napi_ok || napi_create_int32(env, fd, &vfd) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &vname) != napi_ok ||
      napi_set_named_property(env, obj, "fd", vfd) != napi_ok ||
      napi_set_named_property(env, obj, "name", vname) != napi_ok) {
    close(fd); /* don't leak the device attachment when JS never gets the fd */
    throw_napi_failure(env);
    return NULL;
  }
  return obj;
}

/* tunRead(fd, buf, slotSize, lens, max, timeoutMs, hdrs?) -> count */
napi_value tun_read(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv)) return NULL;
  int fd;
  slots_t s;
  int64_t timeout;
  uint8_t *hdrs;
  if (!get_fd(env, argv[0], &fd) || !get_slots(env, argv[1], argv[2], argv[3], argv[4], "max", INT32_MAX, &s) ||
      !get_int(env, argv[5], "timeoutMs", 0, INT32_MAX, &timeout) ||
      !get_optional_typed(env, argv[6], "hdrs", napi_uint8_array, "Uint8Array", (size_t)s.n * VNET_HDR_LEN,
                          (void **)&hdrs))
    return NULL;
  uint8_t *buf = s.buf;
  uint32_t *lens = s.lens;
  int64_t slot = s.slot, max = s.n;

  int64_t n = 0;
  bool waited = false;
  uint8_t spare;
  while (n < max) {
    /* Try the read first: under load a packet is usually queued already,
     * which saves the poll() syscall. A TUN read silently truncates a packet
     * that does not fit, so one spare byte after the slot detects that:
     * such a packet comes back as slotSize + 1 (like a truncated UDP
     * datagram in udpRecv) and TS can count and drop it. */
    struct iovec iov[3] = {{buf + n * slot, (size_t)slot}, {&spare, 1}, {NULL, 0}};
    int niov = 2;
    if (hdrs) {
      /* With IFF_VNET_HDR the header comes first; read it into its own
       * array so the slot still starts with the IP packet. */
      iov[2] = iov[1];
      iov[1] = iov[0];
      iov[0] = (struct iovec){hdrs + n * VNET_HDR_LEN, VNET_HDR_LEN};
      niov = 3;
    }
    ssize_t r = readv(fd, iov, niov);
    if (r >= 0) {
      if (hdrs) r = r >= VNET_HDR_LEN ? r - VNET_HDR_LEN : 0; /* 0 = too short: TS drops it */
      lens[n++] = (uint32_t)r;
      continue;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if (n > 0 || waited || timeout == 0) break; /* drained, or nothing came in time */
      int pr = wait_fd(fd, POLLIN, (int)timeout);
      waited = true;
      if (pr < 0) {
        throw_sys(env, -pr, "poll", fd_error_hint(-pr), "tunRead fd %d", fd);
        return NULL;
      }
      if (pr == 0) break;
      continue;
    }
    /* Packets already read are handed over; a persistent error will be
     * reported by the next call. */
    if (n > 0) break;
    throw_sys(env, e, "read", fd_error_hint(e), "tunRead fd %d", fd);
    return NULL;
  }
  return return_count(env, n);
}

/* tunWrite(fd, buf, slotSize, lens, count, hdrs?, segs?) -> written.
 * segs (Uint32Array, >= count): weight of each slot in the return value,
 * for a coalesced super-packet that carries segs[i] received packets, so the
 * caller learns how many packets went in without knowing which slot failed. */
napi_value tun_write(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv)) return NULL;
  int fd;
  slots_t s;
  uint8_t *hdrs;
  uint32_t *segs;
  if (!get_fd(env, argv[0], &fd) || !get_slots(env, argv[1], argv[2], argv[3], argv[4], "count", INT32_MAX, &s) ||
      !check_out_lens(env, s.lens, s.n, s.slot) ||
      !get_optional_typed(env, argv[5], "hdrs", napi_uint8_array, "Uint8Array", (size_t)s.n * VNET_HDR_LEN,
                          (void **)&hdrs) ||
      !get_optional_typed(env, argv[6], "segs", napi_uint32_array, "Uint32Array", (size_t)s.n, (void **)&segs))
    return NULL;
  uint8_t *buf = s.buf;
  uint32_t *lens = s.lens;
  int64_t slot = s.slot, count = s.n;

  int64_t written = 0;
  bool stalled = false; /* a full queue didn't drain in SEND_STALL_MS: drop the rest without waiting again */
  for (int64_t i = 0; i < count; i++) {
    bool retried = false;
    for (;;) {
      struct iovec iov[2] = {{hdrs + i * VNET_HDR_LEN, VNET_HDR_LEN}, {buf + i * slot, lens[i]}};
      ssize_t r = hdrs ? writev(fd, iov, 2) : write(fd, buf + i * slot, lens[i]);
      if (r >= 0) {
        written += segs ? segs[i] : 1;
        break;
      }
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
        if (retried || stalled) break; /* drop */
        retried = true;
        int pr = wait_fd(fd, POLLOUT, SEND_STALL_MS);
        if (pr < 0) e = -pr;
        else {
          if (pr == 0) stalled = true;
          continue;
        }
      }
      if (is_fd_error(e)) {
        if (written > 0) goto out; /* report what went out; the next call throws */
        throw_sys(env, e, "write", fd_error_hint(e), "tunWrite fd %d", fd);
        return NULL;
      }
      /* Per-packet rejection (e.g. EINVAL for a malformed packet): drop
       * just this one; the return value tells the caller how many went. */
      break;
    }
  }
out:
  return return_count(env, written);
}

/* tunSetOffload(fd, flags): ioctl(TUNSETOFFLOAD) with TUN_F_* flags; the
 * fd must have been opened with vnetHdr. EINVAL means the kernel refuses
 * (the caller falls back to the plain path). */
napi_value tun_set_offload(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int fd;
  int64_t flags;
  if (!get_fd(env, argv[0], &fd) || !get_int(env, argv[1], "flags", 0, 0xff, &flags)) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) {
    int e = errno;
    throw_sys(env, e, "ioctl", e == EINVAL ? "the kernel does not support these TUN offloads" : fd_error_hint(e),
              "TUNSETOFFLOAD 0x%llx on fd %d", (long long)flags, fd);
  }
  return NULL;
}
