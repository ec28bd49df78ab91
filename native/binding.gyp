{
  # Minimal N-API addon: only the syscalls Node lacks (TUN ioctl, batched
  # UDP via recvmmsg/sendmmsg), one C file per job (see flannel_native.h).
  # Headers come from --nodedir (the Debian nodejs package ships them in
  # /usr/include/node), so nothing is downloaded.
  "targets": [
    {
      "target_name": "flannel_native",
      "sources": ["args.c", "fd.c", "tun.c", "udp.c", "checksum.c", "crypto.c", "hop.c", "hop_wg.c", "module.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wshadow", "-Wno-unused-parameter", "-Wformat=2"],
      "configurations": {
        # node's common.gypi uses -O3 for Release; -O2 is plenty for a thin
        # syscall wrapper and keeps code size and compile surprises down.
        "Release": {
          "cflags!": ["-O3"],
          "cflags": ["-O2"]
        }
      }
    }
  ]
}
