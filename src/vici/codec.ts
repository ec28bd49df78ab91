/**
 * strongSwan's VICI wire format (the "Versatile IKE Configuration
 * Interface" charon serves on a Unix socket), written from its protocol
 * description:
 *
 * - a packet is a 32-bit big-endian length, then one byte of packet type,
 *   then (for named types) a one-byte name length and the name, then a message;
 * - a message is a sequence of elements: section start (named) and end,
 *   key/value (one-byte key length, two-byte value length), list start
 *   (named), list item (two-byte length), list end.
 *
 * Messages are plain objects here: a value is a string, a list of strings,
 * or a nested section; key order is kept. Decoding rejects anything
 * malformed with a ViciError saying where.
 */

export type ViciValue = string | string[] | ViciMessage;
export interface ViciMessage {
  [key: string]: ViciValue;
}

export const enum PacketType {
  CmdRequest = 0,
  CmdResponse = 1,
  CmdUnknown = 2,
  EventRegister = 3,
  EventUnregister = 4,
  EventConfirm = 5,
  EventUnknown = 6,
  Event = 7,
}

const enum Element {
  SectionStart = 1,
  SectionEnd = 2,
  KeyValue = 3,
  ListStart = 4,
  ListItem = 5,
  ListEnd = 6,
}

/** charon refuses packets over 512 KiB; so do we, both ways. */
export const MAX_PACKET = 512 * 1024;

export class ViciError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ViciError';
  }
}

const NAMED = new Set([PacketType.CmdRequest, PacketType.EventRegister, PacketType.EventUnregister, PacketType.Event]);

export interface Packet {
  type: PacketType;
  name?: string;
  message: ViciMessage;
}

export function encodeMessage(msg: ViciMessage): Buffer {
  const out: Buffer[] = [];
  const name = (s: string, what: string) => {
    const b = Buffer.from(s, 'utf8');
    if (b.length === 0 || b.length > 255) throw new ViciError(`${what} "${s}" must be 1..255 bytes`);
    out.push(Buffer.from([b.length]), b);
  };
  const value = (s: string, what: string) => {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 0xffff) throw new ViciError(`value of ${what} is longer than 65535 bytes`);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    out.push(len, b);
  };
  const walk = (m: ViciMessage) => {
    for (const [k, v] of Object.entries(m)) {
      if (typeof v === 'string') {
        out.push(Buffer.from([Element.KeyValue]));
        name(k, 'key');
        value(v, k);
      } else if (Array.isArray(v)) {
        out.push(Buffer.from([Element.ListStart]));
        name(k, 'list name');
        for (const item of v) {
          out.push(Buffer.from([Element.ListItem]));
          value(item, `${k}[]`);
        }
        out.push(Buffer.from([Element.ListEnd]));
      } else {
        out.push(Buffer.from([Element.SectionStart]));
        name(k, 'section name');
        walk(v);
        out.push(Buffer.from([Element.SectionEnd]));
      }
    }
  };
  walk(msg);
  return Buffer.concat(out);
}

export function decodeMessage(buf: Buffer): ViciMessage {
  let pos = 0;
  const need = (n: number, what: string) => {
    if (pos + n > buf.length) throw new ViciError(`truncated message: ${what} at byte ${pos} needs ${n} bytes, ${buf.length - pos} left`);
  };
  const readName = (what: string) => {
    need(1, what);
    const len = buf[pos++]!;
    need(len, what);
    const s = buf.toString('utf8', pos, pos + len);
    pos += len;
    return s;
  };
  const readValue = (what: string) => {
    need(2, what);
    const len = buf.readUInt16BE(pos);
    pos += 2;
    need(len, what);
    const s = buf.toString('utf8', pos, pos + len);
    pos += len;
    return s;
  };
  const root: ViciMessage = {};
  const stack: ViciMessage[] = [root];
  let list: string[] | null = null;
  while (pos < buf.length) {
    const type = buf[pos++]!;
    const top = stack[stack.length - 1]!;
    if (list && type !== Element.ListItem && type !== Element.ListEnd) throw new ViciError(`element ${type} inside a list at byte ${pos - 1}`);
    switch (type) {
      case Element.SectionStart: {
        const section: ViciMessage = {};
        top[readName('section name')] = section;
        stack.push(section);
        break;
      }
      case Element.SectionEnd:
        if (stack.length === 1) throw new ViciError(`section end without a section at byte ${pos - 1}`);
        stack.pop();
        break;
      case Element.KeyValue: {
        const key = readName('key');
        top[key] = readValue(key);
        break;
      }
      case Element.ListStart:
        list = [];
        top[readName('list name')] = list;
        break;
      case Element.ListItem:
        if (!list) throw new ViciError(`list item outside a list at byte ${pos - 1}`);
        list.push(readValue('list item'));
        break;
      case Element.ListEnd:
        if (!list) throw new ViciError(`list end outside a list at byte ${pos - 1}`);
        list = null;
        break;
      default:
        throw new ViciError(`unknown element type ${type} at byte ${pos - 1}`);
    }
  }
  if (list) throw new ViciError('message ends inside a list');
  if (stack.length !== 1) throw new ViciError('message ends inside a section');
  return root;
}

/** A whole packet with its length prefix. */
export function encodePacket(p: Packet): Buffer {
  const head: Buffer[] = [Buffer.from([p.type])];
  if (NAMED.has(p.type)) {
    const n = Buffer.from(p.name ?? '', 'utf8');
    if (n.length === 0 || n.length > 255) throw new ViciError(`packet name "${p.name ?? ''}" must be 1..255 bytes`);
    head.push(Buffer.from([n.length]), n);
  }
  const body = Buffer.concat([...head, encodeMessage(p.message)]);
  if (body.length > MAX_PACKET) throw new ViciError(`packet of ${body.length} bytes exceeds ${MAX_PACKET}`);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/** One packet's content (without its length prefix). */
export function decodePacket(body: Buffer): Packet {
  if (body.length < 1) throw new ViciError('empty packet');
  const type = body[0] as PacketType;
  if (type > PacketType.Event) throw new ViciError(`unknown packet type ${type}`);
  let pos = 1;
  let name: string | undefined;
  if (NAMED.has(type)) {
    if (body.length < 2) throw new ViciError('truncated packet name');
    const len = body[1]!;
    if (body.length < 2 + len) throw new ViciError('truncated packet name');
    name = body.toString('utf8', 2, 2 + len);
    pos = 2 + len;
  }
  return { type, name, message: decodeMessage(body.subarray(pos)) };
}

/** Splits a byte stream into packets; feed it chunks as they arrive. */
export class PacketReader {
  private pending: Buffer = Buffer.alloc(0);

  /** The packets completed by this chunk. Throws ViciError on a length beyond MAX_PACKET. */
  push(chunk: Buffer): Packet[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Packet[] = [];
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32BE(0);
      if (len > MAX_PACKET) throw new ViciError(`peer announced a packet of ${len} bytes (limit ${MAX_PACKET})`);
      if (this.pending.length < 4 + len) break;
      out.push(decodePacket(this.pending.subarray(4, 4 + len)));
      this.pending = this.pending.subarray(4 + len);
    }
    return out;
  }
}
