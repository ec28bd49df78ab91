/*
 * TUN devices: open /dev/net/tun + ioctl(TUNSETIFF), batched read()/write()
 * of whole IP packets (each behind a virtio_net_hdr when opened with
 * IFF_VNET_HDR), TUNSETOFFLOAD, and the queue-steering program of a
 * multi-queue device.
 */
#include "flannel_native.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
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

int64_t tun_read_slots(int fd, uint8_t *buf, int64_t slot, uint32_t *lens, int64_t max, uint8_t *hdrs) {
  int64_t n = 0;
  uint8_t spare;
  while (n < max) {
    /* A TUN read silently truncates a packet that does not fit, so one
     * spare byte after the slot detects that: such a packet comes back as
     * slotSize + 1 (like a truncated UDP datagram in udpRecv) and TS can
     * count and drop it. */
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
    /* Drained; or packets already read are handed over, and a persistent
     * error will be reported by the next call. */
    if (e == EAGAIN || e == EWOULDBLOCK || n > 0) break;
    return -e;
  }
  return n;
}

int tun_write_one(int fd, const uint8_t *hdr, const uint8_t *p, uint32_t len, bool *stalled) {
  bool retried = false;
  for (;;) {
    struct iovec iov[2] = {{(void *)hdr, VNET_HDR_LEN}, {(void *)p, len}};
    ssize_t r = hdr ? writev(fd, iov, 2) : write(fd, p, len);
    if (r >= 0) return 1;
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
      if (retried || *stalled) return 0; /* drop */
      retried = true;
      int pr = wait_fd(fd, POLLOUT, SEND_STALL_MS);
      if (pr < 0) e = -pr;
      else {
        if (pr == 0) *stalled = true;
        continue;
      }
    }
    if (is_fd_error(e)) return -e;
    /* Per-packet rejection (e.g. EINVAL for a malformed packet): drop just this one. */
    return 0;
  }
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

  /* Try the read first: under load a packet is usually queued already,
   * which saves the poll() syscall. */
  int64_t n = tun_read_slots(fd, buf, slot, lens, max, hdrs);
  if (n == 0 && timeout > 0) {
    int pr = wait_fd(fd, POLLIN, (int)timeout);
    if (pr < 0) {
      throw_sys(env, -pr, "poll", fd_error_hint(-pr), "tunRead fd %d", fd);
      return NULL;
    }
    if (pr > 0) n = tun_read_slots(fd, buf, slot, lens, max, hdrs);
  }
  if (n < 0) {
    throw_sys(env, (int)-n, "read", fd_error_hint((int)-n), "tunRead fd %d", fd);
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
    int r = tun_write_one(fd, hdrs ? hdrs + i * VNET_HDR_LEN : NULL, buf + i * slot, lens[i], &stalled);
    if (r > 0) written += segs ? segs[i] : 1;
    if (r >= 0) continue;
    if (written > 0) break; /* report what went out; the next call throws */
    throw_sys(env, -r, "write", fd_error_hint(-r), "tunWrite fd %d", fd);
    return NULL;
  }
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

/* tunSteerByInnerFlow(fd): attach an eBPF program (TUNSETSTEERINGEBPF) that
 * picks the queue of every packet the kernel sends into the multi-queue
 * device from a hash of its IPv4 addresses, protocol and (unless a
 * fragment) ports, the same inputs as udpSteerByInnerFlow. Without it the
 * kernel's automatic choice learns a flow's queue from the queue that last
 * wrote a packet of the reverse flow, so a flow can change queue (and
 * worker) after it started, and packets still queued on the old one may
 * leave after newer ones. Non-IPv4 packets go to queue 0. */
#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
napi_value tun_steer_by_inner_flow(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  /* LD_ABS/LD_IND read the packet from its IP header (a TUN device has no
   * link header) and end the program with 0 when out of bounds; they need
   * the context in r6 and clobber r0-r5, so the hash lives in r7. tun takes
   * the low 16 bits of the result modulo the number of queues. */
  const struct bpf_insn code[] = {
      /* 0 */ INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),  /* r6 = ctx */
      /* 1 */ INSN(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 0),     /* r0 = version/IHL */
      /* 2 */ INSN(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 0, 4),
      /* 3 */ INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 26, 4),   /* not IPv4 -> 30 */
      /* 4 */ INSN(BPF_LD | BPF_ABS | BPF_W, 0, 0, 0, 12),    /* source address */
      /* 5 */ INSN(BPF_ALU64 | BPF_MOV | BPF_X, 7, 0, 0, 0),
      /* 6 */ INSN(BPF_LD | BPF_ABS | BPF_W, 0, 0, 0, 16),    /* destination */
      /* 7 */ INSN(BPF_ALU | BPF_XOR | BPF_X, 7, 0, 0, 0),
      /* 8 */ INSN(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 9),     /* protocol */
      /* 9 */ INSN(BPF_ALU64 | BPF_MOV | BPF_X, 8, 0, 0, 0),
      /* 10 */ INSN(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 0, 8),
      /* 11 */ INSN(BPF_ALU | BPF_XOR | BPF_X, 7, 0, 0, 0),
      /* 12 */ INSN(BPF_JMP | BPF_JEQ | BPF_K, 8, 0, 1, 6),   /* TCP -> 14 */
      /* 13 */ INSN(BPF_JMP | BPF_JNE | BPF_K, 8, 0, 8, 17),  /* not UDP -> 22 */
      /* 14 */ INSN(BPF_LD | BPF_ABS | BPF_H, 0, 0, 0, 6),    /* fragment word */
      /* 15 */ INSN(BPF_JMP | BPF_JSET | BPF_K, 0, 0, 6, 0x3fff), /* a fragment: no ports -> 22 */
      /* 16 */ INSN(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 0),
      /* 17 */ INSN(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0, 0xf),
      /* 18 */ INSN(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 0, 2),   /* header length */
      /* 19 */ INSN(BPF_ALU64 | BPF_MOV | BPF_X, 9, 0, 0, 0),
      /* 20 */ INSN(BPF_LD | BPF_IND | BPF_W, 0, 9, 0, 0),    /* both ports */
      /* 21 */ INSN(BPF_ALU | BPF_XOR | BPF_X, 7, 0, 0, 0),
      /* 22 */ INSN(BPF_ALU64 | BPF_MOV | BPF_X, 0, 7, 0, 0), /* fold: h ^= h >> 16; h ^= h >> 8 */
      /* 23 */ INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 0, 0, 0),
      /* 24 */ INSN(BPF_ALU | BPF_RSH | BPF_K, 1, 0, 0, 16),
      /* 25 */ INSN(BPF_ALU | BPF_XOR | BPF_X, 0, 1, 0, 0),
      /* 26 */ INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 0, 0, 0),
      /* 27 */ INSN(BPF_ALU | BPF_RSH | BPF_K, 1, 0, 0, 8),
      /* 28 */ INSN(BPF_ALU | BPF_XOR | BPF_X, 0, 1, 0, 0),
      /* 29 */ INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
      /* 30 */ INSN(BPF_ALU | BPF_MOV | BPF_K, 0, 0, 0, 0),
      /* 31 */ INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  static const char license[] = "GPL";
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insn_cnt = sizeof code / sizeof code[0];
  attr.insns = (uint64_t)(uintptr_t)code;
  attr.license = (uint64_t)(uintptr_t)license;
  int prog = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
  if (prog < 0) {
    int e = errno;
    /* Load again with the verifier's log, only to say why (its tail holds the reason). */
    char verifier_log[4096] = "";
    attr.log_buf = (uint64_t)(uintptr_t)verifier_log;
    attr.log_size = sizeof verifier_log;
    attr.log_level = 1;
    int again = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (again >= 0) close(again);
    size_t l = strlen(verifier_log);
    throw_sys(env, e, "bpf", e == EPERM ? ROOT_HINT : "the kernel refused the steering program", "BPF_PROG_LOAD: %.300s", l > 300 ? verifier_log + l - 300 : verifier_log);
    return NULL;
  }
  int rc = ioctl(fd, TUNSETSTEERINGEBPF, &prog);
  int e = errno;
  /* The device holds its own reference to the program. */
  close(prog);
  if (rc < 0) throw_sys(env, e, "ioctl", e == EINVAL ? "this kernel cannot steer TUN queues by eBPF (TUNSETSTEERINGEBPF)" : fd_error_hint(e), "TUNSETSTEERINGEBPF on fd %d", fd);
  return NULL;
}
