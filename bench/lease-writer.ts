/**
 * Writes lease keys into etcd as many flanneld daemons would (one etcd
 * lease with a 24 h TTL per key, create-if-absent), for bench/leases.ts.
 * Runs inside the namespace that holds etcd:
 *   node dist/bench/lease-writer.js ENDPOINT PREFIX FIRST COUNT [BACKEND]
 * Lease i is 10.(i >> 8).(i & 255).0/24 with PublicIP 198.18.(i >> 8).(i & 255);
 * with BACKEND vxlan it carries BackendType vxlan and a VtepMAC made from i.
 */
import { EtcdStore } from '../src/subnet/etcd-store.js';

const [endpoint, prefix, firstText, countText, backend] = process.argv.slice(2);
const first = Number(firstText);
const count = Number(countText);
if (!endpoint || !prefix || !Number.isInteger(first) || !Number.isInteger(count)) {
  process.stderr.write('usage: lease-writer ENDPOINT PREFIX FIRST COUNT\n');
  process.exit(2);
}
const store = new EtcdStore({ endpoints: [endpoint] });
let next = first;
const end = first + count;
const CONCURRENCY = 32;
async function worker(): Promise<void> {
  while (next < end) {
    const i = next++;
    const a = i >> 8;
    const b = i & 255;
    const hex = (v: number) => v.toString(16).padStart(2, '0');
    const extra = backend === 'vxlan' ? `,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:42:00:00:${hex(a)}:${hex(b)}"}` : '';
    await store.create(`${prefix}/subnets/10.${a}.${b}.0-24`, `{"PublicIP":"198.18.${a}.${b}","PublicIPv6":null${extra}}`, 86400);
  }
}
await Promise.all(Array.from({ length: CONCURRENCY }, worker));
await store.close();
