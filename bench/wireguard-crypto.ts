/**
 * What sealing a WireGuard transport packet costs, per packet, by the two
 * ways the dataplane could do it: node:crypto (createCipheriv per packet)
 * and the addon's batched wgSeal/wgOpen (one call per 64 packets). The
 * figures in native/crypto.c come from this: node dist/bench/wireguard-crypto.js
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { loadNative } from '../src/native/addon.js';
import { PacketBatch } from '../src/tun/packet-batch.js';

const ROUNDS = 3000;
const BATCH = 64;

function nodeCrypto(size: number): number {
  const key = randomBytes(32);
  const pt = randomBytes(size);
  const nonce = Buffer.alloc(12);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ROUNDS * BATCH; i++) {
    nonce.writeUInt32LE(i, 4);
    const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    c.update(pt);
    c.final();
    c.getAuthTag();
  }
  return Number(process.hrtime.bigint() - t0) / (ROUNDS * BATCH);
}

function addon(size: number): { seal: number; open: number } {
  const native = loadNative();
  const b = new PacketBatch(BATCH, 2048);
  const keys = randomBytes(32);
  const keyIdx = new Uint32Array(BATCH);
  const receivers = new Uint32Array(BATCH).fill(7);
  const counters = new BigUint64Array(BATCH);
  let seal = 0n;
  let open = 0n;
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < BATCH; i++) {
      b.lens[i] = size;
      counters[i] = BigInt(r * BATCH + i);
    }
    const t0 = process.hrtime.bigint();
    native.wgSeal(b.buf, b.slotSize, b.lens, BATCH, keys, keyIdx, receivers, counters);
    const t1 = process.hrtime.bigint();
    if (native.wgOpen(b.buf, b.slotSize, b.lens, BATCH, keys, keyIdx) !== BATCH) throw new Error('open failed');
    open += process.hrtime.bigint() - t1;
    seal += t1 - t0;
  }
  return { seal: Number(seal) / (ROUNDS * BATCH), open: Number(open) / (ROUNDS * BATCH) };
}

for (const size of [1420, 64]) {
  const n = nodeCrypto(size);
  const a = addon(size);
  console.log(`${size} B: node:crypto seal ${(n / 1000).toFixed(2)} us/packet; addon seal ${(a.seal / 1000).toFixed(2)} us, open ${(a.open / 1000).toFixed(2)} us (${((size * 8) / a.seal).toFixed(2)} Gbit/s per core sealing)`);
}
