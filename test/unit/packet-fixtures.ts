/** Crafted IPv4 packets for the dataplane unit tests. */
import { checksum, writeU16, writeU32 } from '../../src/packet/ipv4.js';
import { parseIP4 } from '../../src/net/ipaddr.js';

export interface PacketSpec {
  src: string;
  dst: string;
  ttl?: number;
  proto?: number;
  payloadLen?: number;
  df?: boolean;
  fragOffset?: number;
  /** First payload byte (e.g. ICMP type). */
  firstPayloadByte?: number;
  ihlWords?: number;
}

/** A well-formed IPv4 packet with a correct header checksum and a patterned payload. */
export function makePacket(spec: PacketSpec): Buffer {
  const ihl = (spec.ihlWords ?? 5) * 4;
  const len = ihl + (spec.payloadLen ?? 32);
  const b = Buffer.alloc(len);
  b[0] = 0x40 | (ihl / 4);
  writeU16(b, 2, len);
  writeU16(b, 4, 0x1234);
  writeU16(b, 6, (spec.df ? 0x4000 : 0) | (spec.fragOffset ?? 0));
  b[8] = spec.ttl ?? 64;
  b[9] = spec.proto ?? 17;
  writeU32(b, 12, parseIP4(spec.src));
  writeU32(b, 16, parseIP4(spec.dst));
  for (let i = 20; i < ihl; i++) b[i] = 1; // NOP options
  for (let i = ihl; i < len; i++) b[i] = (i * 7) & 255;
  if (spec.firstPayloadByte !== undefined && len > ihl) b[ihl] = spec.firstPayloadByte;
  writeU16(b, 10, checksum(b, 0, ihl));
  return b;
}
