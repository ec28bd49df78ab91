/**
 * A stand-in for charon's VICI side, for unit tests: a Unix socket speaking
 * the VICI packet format with the state the ipsec backend uses (connections
 * and shared keys by name/id, SAs set by the test), answering as charon
 * 5.9 does: get-conns {conns}, get-shared {keys}, load-conn/unload-conn,
 * load-shared/unload-shared, terminate (control-log events), list-sas
 * (list-sa events). A proposal containing "bogus" is refused with charon's
 * words.
 */
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { encodePacket, PacketReader, PacketType, type Packet, type ViciMessage } from '../../src/vici/codec.js';

export interface FakeCharon {
  path: string;
  conns: Map<string, ViciMessage>;
  keys: Map<string, ViciMessage>;
  /** What list-sas reports: connection name -> IKE state and its CHILD_SA states. */
  sas: Map<string, { state: string; children: string[] }>;
  /** More IKE SAs of an already listed connection (both ends initiated at once): listed after `sas`. */
  duplicateSas: { name: string; state: string; children: string[] }[];
  /** Every command received, in order ("load-conn a", "unload-shared flannel-1.2.3.4"). */
  log: string[];
  close(): Promise<void>;
}

export async function startFakeCharon(dir: string, name = 'charon.vici'): Promise<FakeCharon> {
  const path = join(dir, name);
  const fake: FakeCharon = { path, conns: new Map(), keys: new Map(), sas: new Map(), duplicateSas: [], log: [], close: async () => {} };
  const registered = new Set<string>();
  const ok = (message: ViciMessage = { success: 'yes' }): Packet => ({ type: PacketType.CmdResponse, message });
  const fail = (errmsg: string): Packet => ({ type: PacketType.CmdResponse, message: { success: 'no', errmsg } });

  const answer = (p: Packet): Packet[] => {
    const m = p.message ?? {};
    if (p.type === PacketType.EventRegister) {
      registered.add(p.name!);
      return [{ type: PacketType.EventConfirm, message: {} }];
    }
    if (p.type === PacketType.EventUnregister) {
      registered.delete(p.name!);
      return [{ type: PacketType.EventConfirm, message: {} }];
    }
    switch (p.name) {
      case 'version':
        return [ok({ daemon: 'charon', version: '5.9.8' })];
      case 'get-conns':
        return [ok({ conns: [...fake.conns.keys()] })];
      case 'get-shared':
        return [ok({ keys: [...fake.keys.keys()] })];
      case 'load-conn': {
        const [name, def] = Object.entries(m)[0] ?? [];
        fake.log.push(`load-conn ${name}`);
        if (JSON.stringify(def).includes('bogus')) return [fail('invalid value for: esp_proposals, config discarded')];
        fake.conns.set(name!, def as ViciMessage);
        return [ok()];
      }
      case 'unload-conn': {
        fake.log.push(`unload-conn ${m.name}`);
        return fake.conns.delete(String(m.name)) ? [ok()] : [fail(`unloading connection '${m.name}' failed`)];
      }
      case 'load-shared':
        fake.log.push(`load-shared ${m.id}`);
        fake.keys.set(String(m.id), m);
        return [ok()];
      case 'unload-shared':
        fake.log.push(`unload-shared ${m.id}`);
        return fake.keys.delete(String(m.id)) ? [ok()] : [fail(`shared key with id '${m.id}' not found`)];
      case 'terminate': {
        fake.log.push(`terminate ${m.ike}`);
        const had = fake.sas.delete(String(m.ike));
        const events: Packet[] = registered.has('control-log') ? [{ type: PacketType.Event, name: 'control-log', message: { group: 'IKE', level: '1', msg: 'deleting IKE_SA' } }] : [];
        return [...events, had ? ok({ success: 'yes', matches: '1', terminated: '1' }) : fail('no matching SAs to terminate found')];
      }
      case 'list-sas': {
        const events: Packet[] = [];
        if (registered.has('list-sa')) {
          for (const [name, sa] of [...fake.sas, ...fake.duplicateSas.map((d) => [d.name, d] as const)]) {
            const children: ViciMessage = {};
            sa.children.forEach((st, i) => (children[`child-${i}`] = { state: st }));
            events.push({ type: PacketType.Event, name: 'list-sa', message: { [name]: { state: sa.state, 'child-sas': children } } });
          }
        }
        return [...events, ok({})];
      }
      default:
        return [{ type: PacketType.CmdUnknown, message: {} }];
    }
  };

  const server: Server = createServer((s) => {
    const reader = new PacketReader();
    s.on('data', (chunk) => {
      for (const p of reader.push(chunk)) for (const out of answer(p)) s.write(encodePacket(out));
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(path, r));
  fake.close = () => new Promise((r) => server.close(() => r()));
  return fake;
}
