/**
 * Writes lease keys into etcd as many flanneld daemons would (one etcd
 * lease with a 24 h TTL per key, create-if-absent), for bench/leases.ts.
 * Runs inside the namespace that holds etcd:
 *   node dist/bench/lease-writer.js ENDPOINT PREFIX FIRST COUNT [BACKEND [dual-stack]]
 * Lease i as bench/lease-names.ts names it.
 */
import { EtcdStore } from '../src/subnet/etcd-store.js';
import { leaseKeyName, leaseValue } from './lease-names.js';

const [endpoint, prefix, firstText, countText, backend, stack] = process.argv.slice(2);
const dualStack = stack === 'dual-stack';
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
    await store.create(`${prefix}/subnets/${leaseKeyName(i, dualStack)}`, leaseValue(i, backend, dualStack), 86400);
  }
}
await Promise.all(Array.from({ length: CONCURRENCY }, worker));
await store.close();
