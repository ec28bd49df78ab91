/**
 * EtcdStore: the KvStore contract on etcd v3, with the same primitives
 * flannel's Go registry uses:
 *  - create(): grant a lease with the TTL, then
 *      Txn If(CreateRevision(key) == 0) Then(Put(key, value, lease))
 *  - update(): grant a fresh lease and put with it, guarded by
 *      If(ModRevision(key) == expected) when a revision is given
 *  - list()/get(): range reads; expiry comes from the key's lease TTL
 *  - watch(): an etcd watch with start_revision
 *
 * We talk to etcd through the raw KV/Lease RPC clients of the `etcd3`
 * package rather than its builders, so every request is exactly the one
 * above. The package's own fault handling (a retry policy plus a circuit
 * breaker per host, and a watch manager that reconnects forever) is
 * replaced: every unary call carries a gRPC deadline and is additionally
 * raced against a timer, and a watch that loses its stream is reported
 * through onError and cancelled. The subnet manager owns retries and
 * backoff, so it must see failures quickly.
 */
import * as fs from 'node:fs';
import { Etcd3, isRecoverableError, type IOptions, type IKeyValue, type IWatchResponse, type Watcher } from 'etcd3';
import { createLogger } from '../log.js';
import {
  StoreUnavailableError,
  type KvEntry,
  type KvEvent,
  type KvListResult,
  type KvStore,
  type KvWatcher,
  type KvWatchHandlers,
} from './kv.js';

const log = createLogger('etcd-store');

export interface EtcdStoreOptions {
  /** Client URLs, e.g. ["https://127.0.0.1:2379"]. All http or all https. */
  endpoints: string[];
  /** CA bundle used to verify the etcd server (PEM file). */
  caFile?: string;
  /** Client certificate (PEM) for etcd --client-cert-auth; needs keyFile. */
  certFile?: string;
  /** Client private key (PEM); needs certFile. */
  keyFile?: string;
  username?: string;
  password?: string;
  /**
   * Upper bound for one call to etcd, in ms (default 5000). A call that cannot
   * complete in time (etcd down, partitioned, TLS handshake stuck) fails with
   * StoreUnavailableError. With several endpoints each one may take this long
   * before the next is tried.
   */
  dialTimeoutMs?: number;
}

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type Policy = ReturnType<NonNullable<FaultHandling['host']>>;

/**
 * Minimal stand-ins for cockatiel policies (etcd3's own dependency), so we
 * don't have to depend on cockatiel directly. `passThrough` disables the
 * per-host circuit breaker: after etcd comes back we want the very next call
 * to go through, not one after the breaker's 5 s half-open delay.
 * `failover(n)` retries a recoverable error on the next host, n hosts in all.
 */
function passThrough(): Policy {
  return {
    execute: (fn: (ctx: unknown) => unknown) => Promise.resolve().then(() => fn({ signal: new AbortController().signal, attempt: 0 })),
  } as unknown as Policy;
}

function failover(hosts: number): Policy {
  return {
    execute: async (fn: (ctx: unknown) => Promise<unknown>) => {
      let lastErr: unknown;
      for (let attempt = 0; attempt < hosts; attempt++) {
        try {
          return await fn({ signal: new AbortController().signal, attempt });
        } catch (err) {
          lastErr = err;
          if (!(err instanceof Error) || !isRecoverableError(err)) throw err;
        }
      }
      throw lastErr;
    },
  } as unknown as Policy;
}

function readPem(what: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read etcd ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** First key after every key that starts with prefix (etcd's range_end for a prefix). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]! += 1;
      return end;
    }
  }
  return Buffer.from([0]); // all 0xff (or empty): to the end of the keyspace
}

/** Strips user:password@ from a URL for display. */
function displayEndpoint(e: string): string {
  return e.replace(/^(\w+:\/\/)[^@/]*@/, '$1');
}

const LEASE_CACHE_MAX = 10_000;

export class EtcdStore implements KvStore {
  readonly description: string;
  private readonly endpoints: string[];
  private readonly client: Etcd3;
  private readonly timeoutMs: number;
  private readonly password: string | undefined;
  /** etcd lease id -> absolute expiry (ms). Leases are never kept alive here, so expiry is fixed at grant time. */
  private readonly leaseExpiry = new Map<string, number>();
  private readonly watchers = new Set<EtcdWatcher>();
  private closed = false;

  constructor(opts: EtcdStoreOptions) {
    if (!opts.endpoints || opts.endpoints.length === 0) throw new Error('etcd: no endpoints given');
    for (const e of opts.endpoints) {
      // grpc-js prints the URL in its errors, so a password there would reach the log: refuse it.
      if (/^\w+:\/\/[^/]*@/.test(e)) {
        throw new Error(`etcd: endpoint ${displayEndpoint(e)} has credentials in its URL; give them with --etcd-username and --etcd-password (FLANNELD_ETCD_USERNAME, FLANNELD_ETCD_PASSWORD) instead`);
      }
      if (!/^https?:\/\/[^/]+\/?$/.test(e)) throw new Error(`etcd: invalid endpoint ${displayEndpoint(e)} (expected http://host:port or https://host:port)`);
    }
    const secure = opts.endpoints.filter((e) => e.startsWith('https://')).length;
    if (secure !== 0 && secure !== opts.endpoints.length) throw new Error('etcd: endpoints mix http and https');
    if (!!opts.certFile !== !!opts.keyFile) throw new Error('etcd: --etcd-certfile and --etcd-keyfile must be given together');
    if (!!opts.username !== !!opts.password && opts.username) throw new Error('etcd: a username needs a password');

    this.endpoints = opts.endpoints.map((e) => e.replace(/\/$/, ''));
    this.description = `etcd ${this.endpoints.map(displayEndpoint).join(',')}`;
    this.timeoutMs = opts.dialTimeoutMs ?? 5000;
    this.password = opts.password;

    const options: IOptions = {
      hosts: this.endpoints,
      // Applies to the unary calls and to the auth token exchange; streams
      // (watch) must not get a deadline or they would end after timeoutMs.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.timeoutMs }),
      faultHandling: { host: () => passThrough(), global: failover(this.endpoints.length) },
      grpcOptions: {
        // Notice a silently dead connection (no RST, e.g. a partition). etcd
        // accepts pings every 5 s or slower by default.
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        'grpc.keepalive_permit_without_calls': 1,
        // Retry connecting soon after etcd comes back.
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 2_000,
      },
    };
    if (opts.caFile || opts.certFile) {
      const credentials: NonNullable<IOptions['credentials']> = {
        // Without a CA file, grpc falls back to the system roots.
        rootCertificate: opts.caFile ? readPem('CA', opts.caFile) : (undefined as unknown as Buffer),
      };
      if (opts.certFile && opts.keyFile) {
        credentials.certChain = readPem('certificate', opts.certFile);
        credentials.privateKey = readPem('key', opts.keyFile);
      }
      options.credentials = credentials;
    }
    if (opts.username) options.auth = { username: opts.username, password: opts.password ?? '' };
    this.client = new Etcd3(options);
  }

  /** Error text safe for logs: never contains the password. */
  private scrub(msg: string): string {
    return this.password ? msg.split(this.password).join('<redacted>') : msg;
  }

  private unavailable(op: string, err: unknown): StoreUnavailableError {
    const reason = (err instanceof Error ? err.message : String(err)).replace(/[\s.]*Resolution note:\s*$/, '').trim();
    return new StoreUnavailableError(this.scrub(`${this.description}: ${op} failed: ${reason}`), { cause: err });
  }

  /**
   * Runs one etcd interaction with a hard time bound. gRPC deadlines already
   * bound each RPC; the timer also covers the client's own queuing (auth
   * token exchange, failover across several endpoints).
   */
  private async call<T>(op: string, fn: () => Promise<T>, budgetMs = this.timeoutMs * this.endpoints.length + 1000): Promise<T> {
    if (this.closed) throw new Error(`${this.description}: store is closed`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${budgetMs} ms`)), budgetMs);
    });
    try {
      return await Promise.race([fn(), timeout]);
    } catch (err) {
      // Everything the client throws means etcd could not serve us (down,
      // unreachable, TLS/auth refused, overloaded); the caller backs off and
      // retries, so one error type is the useful contract.
      throw this.unavailable(op, err);
    } finally {
      clearTimeout(timer);
    }
  }

  private rememberLease(id: string, ttlSeconds: number): void {
    if (this.leaseExpiry.size >= LEASE_CACHE_MAX) {
      const now = Date.now();
      for (const [k, exp] of this.leaseExpiry) if (exp < now) this.leaseExpiry.delete(k);
      if (this.leaseExpiry.size >= LEASE_CACHE_MAX) this.leaseExpiry.clear();
    }
    this.leaseExpiry.set(id, Date.now() + ttlSeconds * 1000);
  }

  /** Expiry of the given leases, asking etcd for the ones not cached yet. */
  private async leaseExpiries(ids: Iterable<string>): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => id !== '0' && !this.leaseExpiry.has(id));
    await Promise.all(
      missing.map(async (id) => {
        const res = await this.client.leaseClient.leaseTimeToLive({ ID: id });
        // TTL -1: the lease is gone, its keys are being deleted right now.
        this.rememberLease(id, Math.max(0, Number(res.TTL)));
      }),
    );
  }

  private toEntry(kv: IKeyValue): KvEntry {
    const expires = !!kv.lease && kv.lease !== '0';
    const e: KvEntry = { key: kv.key.toString(), value: kv.value.toString(), modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision), expires };
    const exp = kv.lease && kv.lease !== '0' ? this.leaseExpiry.get(kv.lease) : undefined;
    if (exp !== undefined) e.expiresAt = exp;
    return e;
  }

  private async grant(ttlSeconds: number): Promise<string> {
    const res = await this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlSeconds)) });
    // etcd may raise the TTL to its minimum (about 2 s with default timings).
    this.rememberLease(res.ID, Number(res.TTL));
    return res.ID;
  }

  /** Best effort: a lease left over by a lost race just expires on its own. */
  private revokeQuietly(id: string): void {
    this.leaseExpiry.delete(id);
    this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
  }

  async get(key: string): Promise<KvEntry | null> {
    return this.call('get', async () => {
      const res = await this.client.kv.range({ key: Buffer.from(key) });
      const kv = res.kvs[0];
      if (!kv) return null;
      await this.leaseExpiries([kv.lease]);
      return this.toEntry(kv);
    });
  }

  async list(prefix: string): Promise<KvListResult> {
    return this.call('list', async () => {
      const res = await this.client.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix) });
      // No per-lease expiry lookups here (one round trip each: 10,000 leases cost seconds); see KvEntry.expiresAt.
      return { entries: res.kvs.map((kv) => this.toEntry(kv)), revision: Number(res.header.revision) };
    });
  }

  async create(key: string, value: string, ttlSeconds?: number): Promise<number | null> {
    return this.call('create', async () => {
      const lease = ttlSeconds !== undefined && ttlSeconds > 0 ? await this.grant(ttlSeconds) : undefined;
      const k = Buffer.from(key);
      const res = await this.client.kv.txn({
        compare: [{ key: k, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [{ request_put: { key: k, value: Buffer.from(value), ...(lease ? { lease } : {}) } }],
      });
      if (!res.succeeded && lease) this.revokeQuietly(lease);
      return res.succeeded ? Number(res.header.revision) : null;
    });
  }

  async update(key: string, value: string, ttlSeconds: number | undefined, expectedModRevision?: number): Promise<number | null> {
    return this.call('update', async () => {
      const lease = ttlSeconds !== undefined && ttlSeconds > 0 ? await this.grant(ttlSeconds) : undefined;
      const k = Buffer.from(key);
      const put = { key: k, value: Buffer.from(value), ...(lease ? { lease } : {}) };
      if (expectedModRevision === undefined) {
        const r = await this.client.kv.put(put);
        return Number(r.header.revision);
      }
      const res = await this.client.kv.txn({
        compare: [{ key: k, target: 'Mod', result: 'Equal', mod_revision: expectedModRevision }],
        success: [{ request_put: put }],
      });
      if (!res.succeeded && lease) this.revokeQuietly(lease);
      return res.succeeded ? Number(res.header.revision) : null;
    });
  }

  async put(key: string, value: string): Promise<void> {
    await this.call('put', async () => {
      await this.client.kv.put({ key: Buffer.from(key), value: Buffer.from(value) });
    });
  }

  async delete(key: string): Promise<void> {
    await this.call('delete', async () => {
      await this.client.kv.deleteRange({ key: Buffer.from(key) });
    });
  }

  async watch(prefix: string, fromRevision: number, handlers: KvWatchHandlers): Promise<KvWatcher> {
    if (this.closed) throw new Error(`${this.description}: store is closed`);
    const builder = this.client.watch().prefix(prefix);
    if (fromRevision > 0) builder.startRevision(String(fromRevision));
    // watcher() (unlike create()) hands us the emitter before it connects,
    // so 'error' and 'disconnected' listeners exist from the first moment.
    const raw = builder.watcher();
    const w = new EtcdWatcher(this, raw, handlers, fromRevision);
    this.watchers.add(w);
    try {
      await w.connected(this.timeoutMs * this.endpoints.length + 1000);
    } catch (err) {
      this.watchers.delete(w);
      throw this.unavailable('watch', err);
    }
    return w;
  }

  /** @internal */
  _forget(w: EtcdWatcher): void {
    this.watchers.delete(w);
  }

  /** @internal converts one watch response, in order. */
  _convert(res: IWatchResponse): KvEvent[] {
    return res.events.map((e): KvEvent => {
      const key = e.kv.key.toString();
      const revision = Number(e.kv.mod_revision);
      if (e.type === 'Delete') return { type: 'delete', key, revision };
      const entry = this.toEntry(e.kv);
      const ev: KvEvent = { type: 'put', key, value: entry.value, revision, createRevision: entry.createRevision, expires: entry.expires };
      if (entry.expiresAt !== undefined) ev.expiresAt = entry.expiresAt;
      return ev;
    });
  }

  /** @internal */
  _unavailable(op: string, err: unknown): StoreUnavailableError {
    return this.unavailable(op, err);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.all([...this.watchers].map((w) => w.close()));
    this.closed = true;
    this.client.close();
  }
}

class EtcdWatcher implements KvWatcher {
  /** No further data is accepted (broken or closed). */
  private dead = false;
  /** close() was called: drop even events already queued. */
  private closedByUser = false;
  private isConnected = false;
  /** Serialises conversion (which may await lease lookups) so events stay in order. */
  private chain: Promise<void> = Promise.resolve();
  private onConnect: (() => void) | null = null;
  private onConnectFail: ((err: Error) => void) | null = null;

  constructor(
    private readonly store: EtcdStore,
    private readonly raw: Watcher,
    private readonly handlers: KvWatchHandlers,
    fromRevision: number,
  ) {
    raw.on('connected', () => {
      this.isConnected = true;
      this.onConnect?.();
    });
    raw.on('data', (res: IWatchResponse) => {
      // Converted synchronously, in arrival order (no lookups: see KvEntry.expiresAt).
      if (this.dead || this.closedByUser || res.events.length === 0) return;
      this.handlers.onEvents(this.store._convert(res));
    });
    // The client would reconnect and silently resume; we can't promise that
    // nothing was missed across a reconnect (its resume revision logic is
    // not reliable), so the watch ends here and the caller re-lists.
    raw.on('disconnected', (err: Error) => this.fail(this.store._unavailable('watch', err ?? new Error('stream lost'))));
    // Cancellation by the server: compacted start revision, permissions...
    raw.on('error', (err: Error) => {
      // etcd cancels a watch whose start revision was compacted with an empty
      // cancel_reason (the compact revision is not passed on by etcd3).
      const msg = /^Watcher canceled:\s*$/.test(err.message)
        ? `watch canceled by etcd (start revision ${fromRevision} compacted?); re-list`
        : err.message;
      this.fail(this.store._unavailable('watch', new Error(msg, { cause: err })));
    });
    raw.on('end', () => this.fail(this.store._unavailable('watch', new Error('watch ended by server'))));
  }

  connected(timeoutMs: number): Promise<void> {
    if (this.isConnected) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`watch not established within ${timeoutMs} ms`)), timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        this.onConnect = this.onConnectFail = null;
        this.dead = true;
        this.raw.cancel().catch(() => undefined);
        reject(err);
      };
      this.onConnect = () => {
        clearTimeout(timer);
        this.onConnect = this.onConnectFail = null;
        resolve();
      };
      this.onConnectFail = fail;
    });
  }

  private fail(err: Error): void {
    if (this.onConnectFail) {
      this.onConnectFail(err);
      return;
    }
    if (this.dead) return;
    this.dead = true;
    this.store._forget(this);
    // Let already queued events go out first, then report.
    this.chain = this.chain.then(() => {
      log.debug('watch broke', { error: err });
      if (!this.closedByUser) this.handlers.onError(err);
    });
    void this.cancelRaw();
  }

  private async cancelRaw(): Promise<void> {
    // cancel() waits for etcd's confirmation, which never comes if etcd is
    // gone; don't let close() hang on it.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.raw.cancel().catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 2000);
      }),
    ]);
    clearTimeout(timer);
  }

  async close(): Promise<void> {
    this.closedByUser = true;
    if (this.dead) return;
    this.dead = true;
    this.store._forget(this);
    await this.cancelRaw();
  }
}
