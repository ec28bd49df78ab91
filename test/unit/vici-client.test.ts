/**
 * The VICI client against a small in-process VICI server on a Unix socket:
 * commands, charon's success=no, unknown commands, streamed events, a
 * connection that drops and one that never answers.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePacket, PacketReader, PacketType, type Packet } from '../../src/vici/codec.js';
import { ViciClient, ViciCommandError } from '../../src/vici/client.js';

const dir = mkdtempSync(join(tmpdir(), 'fts-vici-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** A server answering each packet with handler's packets. */
async function server(handler: (p: Packet, s: Socket) => Packet[] | 'silent' | 'close'): Promise<{ path: string; received: Packet[]; close(): void }> {
  const path = join(dir, `s${++n}.vici`);
  const received: Packet[] = [];
  const srv = createServer((s) => {
    const r = new PacketReader();
    s.on('data', (c) => {
      for (const p of r.push(c)) {
        received.push(p);
        const out = handler(p, s);
        if (out === 'close') s.destroy();
        else if (out !== 'silent') for (const o of out) s.write(encodePacket(o));
      }
    });
  });
  await new Promise<void>((res) => srv.listen(path, res));
  return { path, received, close: () => srv.close() };
}

test('a command and its response; requests are sent one at a time, in order', async () => {
  const s = await server((p) => [{ type: PacketType.CmdResponse, message: { daemon: 'charon', version: p.name === 'version' ? '5.9.8' : '?' } }]);
  const c = await ViciClient.connect(s.path);
  const [a, b] = await Promise.all([c.request('version'), c.request('stats')]);
  assert.equal(a.version, '5.9.8');
  assert.equal(b.version, '?');
  assert.deepEqual(s.received.map((p) => [p.type, p.name]), [[PacketType.CmdRequest, 'version'], [PacketType.CmdRequest, 'stats']]);
  c.close();
  s.close();
});

test('success=no carries charon\'s errmsg; an unknown command is named', async () => {
  const s = await server((p) =>
    p.name === 'load-conn' ? [{ type: PacketType.CmdResponse, message: { success: 'no', errmsg: "invalid value for: esp_proposals, config discarded" } }] : [{ type: PacketType.CmdUnknown, message: {} }],
  );
  const c = await ViciClient.connect(s.path);
  await assert.rejects(c.request('load-conn', { x: { version: '2' } }), (e: Error) => e instanceof ViciCommandError && /esp_proposals/.test(e.message));
  await assert.rejects(c.request('frobnicate'), /does not know the VICI command frobnicate/);
  assert.equal((await c.request('load-conn').catch((e: Error) => e.name)), 'ViciCommandError', 'the connection stays usable');
  c.close();
  s.close();
});

test('a streamed command: events between register and the response, then unregister', async () => {
  const s = await server((p): Packet[] => {
    if (p.type === PacketType.EventRegister || p.type === PacketType.EventUnregister) return [{ type: PacketType.EventConfirm, message: {} }];
    return [
      { type: PacketType.Event, name: 'list-sa', message: { 'conn-a': { state: 'ESTABLISHED' } } },
      { type: PacketType.Event, name: 'list-sa', message: { 'conn-b': { state: 'CONNECTING' } } },
      { type: PacketType.CmdResponse, message: {} },
    ];
  });
  const c = await ViciClient.connect(s.path);
  const { events } = await c.streamed('list-sas', 'list-sa');
  assert.deepEqual(events, [{ 'conn-a': { state: 'ESTABLISHED' } }, { 'conn-b': { state: 'CONNECTING' } }]);
  assert.deepEqual(s.received.map((p) => p.type), [PacketType.EventRegister, PacketType.CmdRequest, PacketType.EventUnregister]);
  c.close();
  s.close();
});

test('charon going away or never answering: a clear error, not a hang', async () => {
  const dropper = await server(() => 'close');
  const c = await ViciClient.connect(dropper.path);
  await assert.rejects(c.request('version'), /closed by charon|socket error/);
  await assert.rejects(c.request('version'), /closed|socket error/, 'later requests fail at once');
  dropper.close();
  const silent = await server(() => 'silent');
  const c2 = await ViciClient.connect(silent.path, 300);
  await assert.rejects(c2.request('version'), /did not answer version within 300 ms/);
  silent.close();
  await assert.rejects(ViciClient.connect(join(dir, 'nobody.vici')), /ENOENT/);
});
