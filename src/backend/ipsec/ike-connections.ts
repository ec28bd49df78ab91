/**
 * Keeps charon's configuration equal to the leases: one shared key per
 * PublicIP (ours and each peer's) and one connection per remote lease,
 * loaded over VICI. Each round asks charon what it holds (get-conns,
 * get-shared) and loads or unloads only the difference, so a round after
 * charon restarted reloads everything and a quiet round changes nothing.
 * It also reads the SAs (list-sas) for /metrics and logs when a peer's IKE
 * SA or CHILD_SA comes up or goes away.
 */
import type { Logger } from '../../log.js';
import { BackendOptionError } from '../errors.js';
import type { ViciClient } from '../../vici/client.js';
import type { ViciMessage } from '../../vici/codec.js';
import { childName, connectionDefinition, connectionName, sharedKeyId, sharedKeyMessage, type TunnelEnd } from './connection.js';
import type { EspMode, IpsecOptions } from './options.js';

export interface SaCounts {
  /** IKE SAs by state (ESTABLISHED, CONNECTING, ...). */
  ike: Map<string, number>;
  /** CHILD_SAs by state (INSTALLED, ...). */
  child: Map<string, number>;
}

export interface PeerSa {
  ike: string;
  children: string[];
}

export class IkeConnections {
  /** The definition last loaded per connection name (JSON), to load only what changed. */
  private readonly loaded = new Map<string, string>();
  private sas = new Map<string, PeerSa>();

  constructor(
    private readonly opts: IpsecOptions,
    private readonly esp: EspMode,
    private readonly client: () => Promise<ViciClient>,
    private readonly log: Logger,
  ) {}

  /**
   * Check the ESP proposal with charon before anything depends on it: a
   * connection that is only configured (never started) with the proposal,
   * loaded and unloaded again. charon refuses a proposal it cannot parse.
   */
  async checkProposal(local: TunnelEnd): Promise<void> {
    const def = connectionDefinition(local, { publicIP: '%any', subnet: local.subnet }, this.opts, this.esp, 'none');
    const name = Object.keys(def)[0]!;
    const c = await this.client();
    try {
      await c.request('load-conn', def);
    } catch (err) {
      throw BackendOptionError.saying('ipsec', 'ESPProposal', `"${this.opts.espProposal}" refused by charon: ${(err as Error).message}`);
    } finally {
      await c.request('unload-conn', { name }).catch(() => {});
      c.close();
    }
  }

  /** Load the shared key for one PublicIP (replaces an entry of the same id). */
  async loadSharedKey(publicIP: string): Promise<void> {
    const c = await this.client();
    try {
      await c.request('load-shared', sharedKeyMessage(publicIP, this.opts.psk));
    } finally {
      c.close();
    }
  }

  /** Make charon hold exactly these peers' keys and connections (and our own key). Returns the number of changes. */
  async apply(local: TunnelEnd, peers: Iterable<TunnelEnd>): Promise<number> {
    const wantConns = new Map<string, ViciMessage>();
    const wantKeys = new Set([local.publicIP]);
    for (const remote of peers) {
      wantConns.set(connectionName(local, remote), connectionDefinition(local, remote, this.opts, this.esp));
      wantKeys.add(remote.publicIP);
    }
    const c = await this.client();
    let changes = 0;
    try {
      const haveConns = new Set(stringList((await c.request('get-conns', {})).conns));
      const haveKeys = new Set(stringList((await c.request('get-shared', {})).keys));
      for (const name of haveConns) if (!wantConns.has(name)) this.loaded.delete(name);
      for (const name of [...this.loaded.keys()]) if (!haveConns.has(name)) this.loaded.delete(name);

      // Keys before connections: a connection starts at once and needs the key for IKE_AUTH.
      for (const ip of wantKeys) {
        if (haveKeys.has(sharedKeyId(ip))) continue;
        await c.request('load-shared', sharedKeyMessage(ip, this.opts.psk));
        changes++;
      }
      for (const [name, def] of wantConns) {
        const json = JSON.stringify(def);
        if (this.loaded.get(name) === json) continue;
        await c.request('load-conn', def);
        this.loaded.set(name, json);
        this.log.info('loaded IKE connection', { connection: name });
        changes++;
      }
      for (const name of haveConns) {
        if (wantConns.has(name)) continue;
        // Tear the SAs down too: unload-conn alone leaves an established IKE SA running.
        await c.request('unload-conn', { name });
        await c.streamed('terminate', 'control-log', { ike: name, force: 'yes', timeout: '-1' }).catch(() => {});
        this.log.info('unloaded IKE connection', { connection: name });
        changes++;
      }
      for (const id of haveKeys) {
        if (!id.startsWith('flannel-') || wantKeys.has(id.slice('flannel-'.length))) continue;
        await c.request('unload-shared', { id });
        changes++;
      }
    } finally {
      c.close();
    }
    return changes;
  }

  /**
   * Ask charon to negotiate the CHILD_SA of a connection again (without
   * waiting for it). A CHILD_SA proposed before the peer knew our lease is
   * refused (NO_PROPOSAL_CHOSEN) and charon does not try again by itself,
   * leaving an IKE SA that carries nothing.
   */
  async initiateChild(local: TunnelEnd, remote: TunnelEnd): Promise<void> {
    const c = await this.client();
    try {
      await c.streamed('initiate', 'control-log', { ike: connectionName(local, remote), child: childName(local, remote), timeout: '-1' });
    } finally {
      c.close();
    }
  }

  /** Read charon's SAs; logs each peer's IKE and CHILD_SA state changes. */
  async refreshSas(): Promise<SaCounts> {
    const c = await this.client();
    let events: ViciMessage[];
    try {
      events = (await c.streamed('list-sas', 'list-sa', {})).events;
    } finally {
      c.close();
    }
    const now = new Map<string, PeerSa>();
    for (const ev of events) {
      for (const [name, v] of Object.entries(ev)) {
        const sa = v as ViciMessage;
        const children = Object.values((sa['child-sas'] as ViciMessage | undefined) ?? {}).map((ch) => String((ch as ViciMessage).state ?? ''));
        const prev = now.get(name);
        // Several IKE SAs of one connection (both hosts initiated at once, or a rekey in flight):
        // the connection is up if any is, and carries the CHILD_SAs of all.
        if (prev) {
          now.set(name, { ike: prev.ike === 'ESTABLISHED' ? prev.ike : String(sa.state ?? ''), children: [...prev.children, ...children] });
          continue;
        }
        now.set(name, { ike: String(sa.state ?? ''), children });
      }
    }
    for (const [name, sa] of now) {
      const before = this.sas.get(name);
      if (before?.ike !== sa.ike) this.log.info('IKE SA state', { connection: name, state: sa.ike });
      const installed = sa.children.includes('INSTALLED');
      if (installed !== (before?.children.includes('INSTALLED') ?? false)) this.log.info(installed ? 'CHILD_SA installed' : 'no CHILD_SA installed', { connection: name });
    }
    for (const name of this.sas.keys()) if (!now.has(name)) this.log.info('IKE SA gone', { connection: name });
    this.sas = now;
    return this.counts();
  }

  counts(): SaCounts {
    const ike = new Map<string, number>();
    const child = new Map<string, number>();
    for (const sa of this.sas.values()) {
      ike.set(sa.ike, (ike.get(sa.ike) ?? 0) + 1);
      for (const st of sa.children) child.set(st, (child.get(st) ?? 0) + 1);
    }
    return { ike, child };
  }

  /** What charon said of each connection's SAs at the last refresh. */
  peerSas(): ReadonlyMap<string, PeerSa> {
    return this.sas;
  }

  /** Connections loaded by this process. */
  get connectionCount(): number {
    return this.loaded.size;
  }

  /** Forget what was loaded (charon restarted: it holds nothing). */
  forget(): void {
    this.loaded.clear();
    this.sas.clear();
  }
}

function stringList(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  return [];
}
