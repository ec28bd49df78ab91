/**
 * Nodes in the API server's protobuf encoding (application/vnd.kubernetes.protobuf),
 * read for only the fields the daemon keeps: name, resourceVersion,
 * creationTimestamp, the annotations under our prefix, podCIDR(s).
 *
 * Why: a kubelet's node status (images, addresses, conditions) is most of
 * a Node, and the daemon needs none of it. In JSON every byte of it is
 * parsed into objects that are thrown away at once: 5,000 nodes are about
 * 24 MB of JSON and most of the daemon's start-up CPU and garbage (see
 * bench/kube-nodes.ts). In protobuf the status is one length-prefixed field
 * that is skipped without being looked at, as is every annotation that is
 * not ours.
 *
 * Field numbers are those of k8s.io/api/core/v1 and
 * k8s.io/apimachinery/pkg/apis/meta/v1 generated.proto (stable: protobuf
 * field numbers never change). Anything not understood is skipped by wire
 * type; anything malformed throws ProtoError and the caller treats the
 * reply as broken.
 */
import type { NodeObject } from './node-lease.js';

export class ProtoError extends Error {
  constructor(what: string) {
    super(`protobuf: ${what}`);
    this.name = 'ProtoError';
  }
}

/** The 4 bytes that start an encoded object ("k8s\0"). */
const MAGIC = [0x6b, 0x38, 0x73, 0x00];

class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  get more(): boolean {
    return this.pos < this.end;
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new ProtoError('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw new ProtoError('varint too long');
  }

  /** A length-delimited field's [start, end). */
  span(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    if (start + len > this.end) throw new ProtoError('field runs past its message');
    this.pos = start + len;
    return [start, this.pos];
  }

  string(): string {
    const [s, e] = this.span();
    return this.buf.toString('utf8', s, e);
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 2) this.span();
    else if (wire === 1) this.pos += 8;
    else if (wire === 5) this.pos += 4;
    else throw new ProtoError(`wire type ${wire}`);
    if (this.pos > this.end) throw new ProtoError('field runs past its message');
  }
}

/** Each field of the message in [start, end): its number, wire type and a reader positioned on its value. */
function fields(buf: Buffer, start: number, end: number, on: (field: number, wire: number, r: Reader) => void): void {
  const r = new Reader(buf, start, end);
  while (r.more) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    const before = r.pos;
    on(field, wire, r);
    // A field the handler did not read is skipped.
    if (r.pos === before) r.skip(wire);
  }
}

/** The object inside the "k8s\0" envelope (runtime.Unknown): its kind and the span of its bytes. */
export function unwrap(buf: Buffer, start = 0, end = buf.length): { kind: string; start: number; end: number } {
  for (let i = 0; i < 4; i++) if (buf[start + i] !== MAGIC[i]) throw new ProtoError('not a Kubernetes protobuf object');
  const found: { kind: string; raw?: [number, number] } = { kind: '' };
  fields(buf, start + 4, end, (f, w, r) => {
    if (f === 1 && w === 2) {
      const [s, e] = r.span();
      fields(buf, s, e, (tf, tw, tr) => {
        if (tf === 2 && tw === 2) found.kind = tr.string();
      });
    } else if (f === 2 && w === 2) found.raw = r.span();
  });
  if (!found.raw) throw new ProtoError('envelope without an object');
  const [s, e] = found.raw;
  return { kind: found.kind, start: s, end: e };
}

/** A Node message: the fields the daemon keeps; annotations only those `wanted` names. */
export function decodeNode(buf: Buffer, start: number, end: number, wanted: ReadonlySet<string>): NodeObject {
  const metadata: NonNullable<NodeObject['metadata']> = {};
  const spec: { podCIDR?: string; podCIDRs?: string[] } = {};
  fields(buf, start, end, (f, w, r) => {
    if (f === 1 && w === 2) {
      const [s, e] = r.span();
      const annotations: Record<string, string> = {};
      fields(buf, s, e, (mf, mw, mr) => {
        if (mw !== 2) return;
        if (mf === 1) metadata.name = mr.string();
        else if (mf === 6) metadata.resourceVersion = mr.string();
        else if (mf === 8) {
          const [ts, te] = mr.span();
          let seconds = 0;
          fields(buf, ts, te, (tf, tw, tr) => {
            if (tf === 1 && tw === 0) seconds = tr.varint();
          });
          metadata.creationTimestamp = new Date(seconds * 1000).toISOString();
        } else if (mf === 12) {
          const [as, ae] = mr.span();
          const entry: { key: string; value?: [number, number] } = { key: '' };
          fields(buf, as, ae, (af, aw, ar) => {
            if (af === 1 && aw === 2) entry.key = ar.string();
            else if (af === 2 && aw === 2) entry.value = ar.span();
          });
          if (entry.value && wanted.has(entry.key)) annotations[entry.key] = buf.toString('utf8', entry.value[0], entry.value[1]);
        }
      });
      metadata.annotations = annotations;
    } else if (f === 2 && w === 2) {
      const [s, e] = r.span();
      fields(buf, s, e, (sf, sw, sr) => {
        if (sw !== 2) return;
        if (sf === 1) spec.podCIDR = sr.string();
        else if (sf === 7) (spec.podCIDRs ??= []).push(sr.string());
      });
    }
    // 3 (status) and anything else: skipped unread.
  });
  return { metadata, spec };
}

/** A NodeList reply (envelope included). */
export function decodeNodeList(buf: Buffer, wanted: ReadonlySet<string>): { resourceVersion: string; continue: string; items: NodeObject[] } {
  const obj = unwrap(buf);
  if (obj.kind !== 'NodeList') throw new ProtoError(`expected a NodeList, got ${JSON.stringify(obj.kind)}`);
  let resourceVersion = '';
  let cont = '';
  const items: NodeObject[] = [];
  fields(buf, obj.start, obj.end, (f, w, r) => {
    if (w !== 2) return;
    if (f === 1) {
      const [s, e] = r.span();
      fields(buf, s, e, (lf, lw, lr) => {
        if (lw !== 2) return;
        if (lf === 2) resourceVersion = lr.string();
        else if (lf === 3) cont = lr.string();
      });
    } else if (f === 2) {
      const [s, e] = r.span();
      items.push(decodeNode(buf, s, e, wanted));
    }
  });
  return { resourceVersion, continue: cont, items };
}

/** One watch frame (a WatchEvent without envelope): its type and its object, a Node or a Status. */
export function decodeWatchEvent(buf: Buffer, wanted: ReadonlySet<string>): { type: string; object: NodeObject & { code?: number; reason?: string } } {
  const ev: { type: string; raw?: [number, number] } = { type: '' };
  fields(buf, 0, buf.length, (f, w, r) => {
    if (f === 1 && w === 2) ev.type = r.string();
    else if (f === 2 && w === 2) {
      const [s, e] = r.span();
      fields(buf, s, e, (rf, rw, rr) => {
        if (rf === 1 && rw === 2) ev.raw = rr.span();
      });
    }
  });
  if (!ev.raw) throw new ProtoError('watch event without an object');
  const type = ev.type;
  const obj = unwrap(buf, ev.raw[0], ev.raw[1]);
  if (obj.kind === 'Status') {
    const status = { code: 0, reason: '' };
    fields(buf, obj.start, obj.end, (f, w, r) => {
      if (f === 6 && w === 0) status.code = r.varint();
      else if (f === 4 && w === 2) status.reason = r.string();
    });
    return { type, object: status };
  }
  return { type, object: decodeNode(buf, obj.start, obj.end, wanted) };
}
